"""Elastic kinematic fit: the track slopes constrained to an elastic mu e -> mu e event.

What to use when:

- `ReconstructionSettings(vertex=VertexSettings(elastic_fit=True))` (``[reconstruction.vertex]
  elastic_fit = true``) makes `reco.reconstruct.reconstruct` fill elastic_chi2_mu_1 and
  elastic_chi2_mu_2 (the fit with track 1, respectively track 2, as the muon) and the fitted
  angles; `reco.pid.identify` then sets elastic_chi2, elastic_theta_e_rad and
  elastic_theta_mu_rad of the hypothesis it chose.
- `elastic_fit_kernel` is the fit of one event and one hypothesis, callable from kernels.
- `hypothesis_energies_kernel` gives the electron and muon energies of the elastic hypothesis
  (the reconstruction's refit and this fit's scattering errors use it).

The fit. The measurements are the slopes p = (tx, ty) of the incoming muon and of the two
outgoing tracks at the target (6 numbers, covariance V block-diagonal from the three track fits,
multiple scattering in the stations included) plus, per projection, the scattering angle in the
target between the vertex and the tracker (`reco.vertex.target_scattering_angle_variance`: from
the upstream face to the vertex for the incoming muon at the nominal beam momentum, from the
vertex to the downstream face for the outgoing tracks with the momenta of the hypothesis,
`hypothesis_energies_kernel`). Two constraints make an event elastic at the nominal beam
energy E: coplanarity, h_1 = acoplanarity(phi_e, phi_mu) = 0, and the elastic curve,
h_2 = theta_mu - theta_mu_elastic(theta_e) = 0, the angles taken with respect to the incoming
muon as in the reconstruction. Least squares with Lagrange multipliers, linearized around the
current estimate p_k (P. Avery, "Applied fitting theory VI", CBX 98-37):

    D = dh/dp (p_k),  r = h(p_k) + D (p_0 - p_k),  S = D V D^T,  lambda = S^-1 r,
    p_(k+1) = p_0 - V D^T lambda,  chi2 = r^T S^-1 r,

iterated `iterations` times from the measurement (D by forward differences of 1e-8 in the
slopes). For elastic events with Gaussian errors chi2 follows a chi2 law of 2 degrees of freedom;
radiative events, pairs, a beam-energy shift or a wrong hypothesis make it large. Without an
incoming track the incoming direction is the z axis without error, as in the reconstruction.
On run2025 (1e5 events, tests/reco/test_kinematic.py) the median chi2 of elastic events is 1.43
(1.386 for chi2(2)) and the fitted theta_mu resolution at 5 < theta_e < 20 mrad is 19.8 urad
against 37.8 urad measured; theta_e 0.60 against 0.70 mrad. The parametric mode does not model
the fit (its columns stay NaN there), so no selection cut uses it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from fastsim.generator.beam import rotate_from_to
from fastsim.physics.kinematics import electron_energy_from_t_kernel, t_from_theta_e_kernel
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV
from reco.observables import acoplanarity_kernel, elastic_theta_mu_kernel
from reco.vertex import target_scattering_angle_variance

_STEP = 1e-8  # slope step of the forward differences: curvature over mrad, rounding 1e-16 / 1e-8


@njit(cache=True, nogil=True)
def hypothesis_energies_kernel(beam_energy_gev, theta_e_rad):
    """(E_e, E_mu) in GeV of the elastic event whose electron leaves at theta_e_rad: E_e from the
    elastic relation, E_mu = E + m_e - E_e, each kept just above its mass."""
    e_electron = max(electron_energy_from_t_kernel(t_from_theta_e_kernel(beam_energy_gev, theta_e_rad)),
                     1.001 * ELECTRON_MASS_GEV)
    return e_electron, max(beam_energy_gev + ELECTRON_MASS_GEV - e_electron, 1.001 * MUON_MASS_GEV)


@njit(cache=True, nogil=True, inline="always")
def _angles(in_tx, in_ty, tx, ty):
    """(theta, phi) of the slope (tx, ty) with respect to the direction of slope (in_tx, in_ty)."""
    n_in = math.sqrt(1.0 + in_tx * in_tx + in_ty * in_ty)
    n = math.sqrt(1.0 + tx * tx + ty * ty)
    dx, dy, dz = rotate_from_to(in_tx / n_in, in_ty / n_in, 1.0 / n_in, 0.0, 0.0, 1.0, tx / n, ty / n, 1.0 / n)
    return math.atan2(math.hypot(dx, dy), dz), math.atan2(dy, dx)


@njit(cache=True, nogil=True)
def _constraints(p, muon_is_1, beam_energy_gev):
    theta_1, phi_1 = _angles(p[0], p[1], p[2], p[3])
    theta_2, phi_2 = _angles(p[0], p[1], p[4], p[5])
    if muon_is_1:
        theta_mu, phi_mu, theta_e, phi_e = theta_1, phi_1, theta_2, phi_2
    else:
        theta_mu, phi_mu, theta_e, phi_e = theta_2, phi_2, theta_1, phi_1
    return (acoplanarity_kernel(phi_e, phi_mu), theta_mu - elastic_theta_mu_kernel(beam_energy_gev, theta_e),
            theta_e, theta_mu)


@njit(cache=True, nogil=True)
def elastic_fit_kernel(p0, v, muon_is_1, beam_energy_gev, iterations, p):
    """Fit of one event (module docstring): p0 (6) measured slopes, v (6, 6) their covariance;
    writes the fitted slopes in p (6) and returns (chi2, theta_e, theta_mu) of the fit; NaN if a
    slope is missing or the constraints are singular."""
    for a in range(6):
        p[a] = p0[a]
        if not math.isfinite(p0[a]):
            return math.nan, math.nan, math.nan
    d = np.empty((2, 6))
    vdt = np.empty((6, 2))
    chi2 = math.nan
    for _ in range(iterations):
        h1, h2, _, _ = _constraints(p, muon_is_1, beam_energy_gev)
        for a in range(6):
            saved = p[a]
            p[a] = saved + _STEP
            g1, g2, _, _ = _constraints(p, muon_is_1, beam_energy_gev)
            p[a] = saved
            d[0, a] = (g1 - h1) / _STEP
            d[1, a] = (g2 - h2) / _STEP
        r1, r2 = h1, h2
        for a in range(6):
            r1 += d[0, a] * (p0[a] - p[a])
            r2 += d[1, a] * (p0[a] - p[a])
        for a in range(6):
            for c in range(2):
                total = 0.0
                for b in range(6):
                    total += v[a, b] * d[c, b]
                vdt[a, c] = total
        s00, s01, s11 = 0.0, 0.0, 0.0
        for a in range(6):
            s00 += d[0, a] * vdt[a, 0]
            s01 += d[0, a] * vdt[a, 1]
            s11 += d[1, a] * vdt[a, 1]
        det = s00 * s11 - s01 * s01
        if not det > 0.0:
            return math.nan, math.nan, math.nan
        l1 = (s11 * r1 - s01 * r2) / det
        l2 = (s00 * r2 - s01 * r1) / det
        chi2 = r1 * l1 + r2 * l2
        for a in range(6):
            p[a] = p0[a] - vdt[a, 0] * l1 - vdt[a, 1] * l2
    _, _, theta_e, theta_mu = _constraints(p, muon_is_1, beam_energy_gev)
    return chi2, theta_e, theta_mu


@njit(parallel=True, cache=True)
def _fit_events(tracks, track_cov, station, vertex_z, target_front, target_back, target_x0, station_x, ms_scale,
                beam_energy_gev, iterations, out):
    p_beam = math.sqrt((beam_energy_gev - MUON_MASS_GEV) * (beam_energy_gev + MUON_MASS_GEV))
    for i in prange(tracks.shape[0]):
        for c in range(6):
            out[i, c] = math.nan
        s = station[i]
        if s < 0:
            continue
        front, back, x0, x_st = target_front[s], target_back[s], target_x0[s], station_x[s]
        z_v = vertex_z[i] if front <= vertex_z[i] <= back else 0.5 * (front + back)
        p0 = np.empty(6)
        v = np.zeros((6, 6))
        p = np.empty(6)
        if math.isfinite(tracks[i, 0, 2]):
            p0[0], p0[1] = tracks[i, 0, 2], tracks[i, 0, 3]
            scattering = target_scattering_angle_variance(z_v - front, x0, x_st, p_beam, MUON_MASS_GEV, ms_scale)
            for a in range(2):
                for b in range(2):
                    v[a, b] = track_cov[i, 0, 2 + a, 2 + b]
                v[a, a] += scattering
        else:  # no incoming track: the z axis, without error
            p0[0], p0[1] = 0.0, 0.0
        for k in range(1, 3):
            p0[2 * k], p0[2 * k + 1] = tracks[i, k, 2], tracks[i, k, 3]
        theta_1 = _angles(p0[0], p0[1], p0[2], p0[3])[0]
        theta_2 = _angles(p0[0], p0[1], p0[4], p0[5])[0]
        for h in range(2):  # h = 0: track 1 the muon
            e_electron, e_muon = hypothesis_energies_kernel(beam_energy_gev, theta_2 if h == 0 else theta_1)
            for k in range(1, 3):
                is_muon = (k == 1) == (h == 0)
                mass = MUON_MASS_GEV if is_muon else ELECTRON_MASS_GEV
                energy = e_muon if is_muon else e_electron
                scattering = target_scattering_angle_variance(back - z_v, x0, x_st, math.sqrt(energy * energy - mass * mass),
                                                              mass, ms_scale)
                for a in range(2):
                    for b in range(2):
                        v[2 * k + a, 2 * k + b] = track_cov[i, k, 2 + a, 2 + b]
                    v[2 * k + a, 2 * k + a] += scattering
            chi2, theta_e, theta_mu = elastic_fit_kernel(p0, v, h == 0, beam_energy_gev, iterations, p)
            out[i, 3 * h], out[i, 3 * h + 1], out[i, 3 * h + 2] = chi2, theta_e, theta_mu


def elastic_fit_columns(tracks, track_cov, station, vertex_z_cm, model, ms_scale: float, beam_energy_gev: float,
                        iterations: int = 3) -> dict:
    """The RecoEvents columns of the fit for both hypotheses: elastic_chi2_mu_k,
    elastic_theta_e_mu_k_rad and elastic_theta_mu_mu_k_rad, k = 1, 2 (track k the muon), from
    `reco.reconstruct.reconstruct_details`' tracks (n, 3, 4) and track_cov (n, 3, 4, 4), the
    interaction station and vertex z of each event, the tracking model's targets
    (`reco.tracking.TrackingModel.model`) and the target-scattering scale of the vertex fit."""
    tracks = np.ascontiguousarray(tracks, dtype=np.float64)
    track_cov = np.ascontiguousarray(track_cov, dtype=np.float64)
    out = np.empty((tracks.shape[0], 6))
    if tracks.shape[0]:
        _fit_events(tracks, track_cov, np.asarray(station, dtype=np.int64), np.asarray(vertex_z_cm, dtype=np.float64),
                    model.station_target_front, model.station_target_back, model.station_target_x0, model.station_x,
                    float(ms_scale), float(beam_energy_gev), int(iterations), out)
    columns = {}
    for h, k in enumerate((1, 2)):
        columns[f"elastic_chi2_mu_{k}"] = out[:, 3 * h]
        columns[f"elastic_theta_e_mu_{k}_rad"] = out[:, 3 * h + 1]
        columns[f"elastic_theta_mu_mu_{k}_rad"] = out[:, 3 * h + 2]
    return columns
