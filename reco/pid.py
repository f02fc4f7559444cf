"""Particle identification of the outgoing pair (which track is the muon) and the observables.

What to use when:

- `identify(events, PidSettings(...))` decides, for every event of a `RecoEvents` chunk, which of
  the two outgoing tracks (theta_1 >= theta_2) is the muon and fills theta_e_rad, theta_mu_rad,
  phi_e_rad, phi_mu_rad, acoplanarity_rad, elasticity_rad and muon_is_1.
- `misid_table(events, theta_e_edges_rad)` measures the mis-identification rate against the
  truth (truth_pdg_1/2) in bins of the electron angle.
- `identify` also picks the elastic kinematic fit (`reco.kinematic`) of the chosen hypothesis
  when the reconstruction made it: elastic_chi2, elastic_theta_e_rad, elastic_theta_mu_rad.
- `muon_is_1_kernel` is the decision as a scalar numba function (the parametric mode uses it, so
  both modes identify alike).

The decision. Elastic scattering ties the two angles: theta_mu = theta_mu_elastic(theta_e) at the
nominal beam energy (`fastsim.physics.kinematics`), and the muon never leaves above
arcsin(m_e / m_mu) = 4.8364 mrad. A track above that limit plus `margin_sigmas` muon resolutions
cannot be the muon; since track 1 has the larger angle, the muon is then track 2. Otherwise both
hypotheses are compared by their normalized distance from the elastic curve,

    chi2(mu = a, e = b) = (theta_a - theta_mu_elastic(theta_b))^2 / (sigma_mu^2 + (f'(theta_b) sigma_e(theta_b))^2),

with f' the slope of the elastic curve and sigma_e(theta_e)^2 = sigma_e0^2 + (k / E_e(theta_e))^2,
the constant term plus the multiple scattering of the electron (Highland: theta_0 p is about
constant), E_e the elastic electron energy at theta_e (curve, slope and energy in closed form:
`fastsim.physics.kinematics.elastic_curve_kernel`). The smaller chi2 wins. The ambiguous region
is theta_e ~ theta_mu ~ 2.5 mrad (at 160 GeV), where the two hypotheses meet.

With ``calorimeter = True`` (and a calorimeter in the geometry) the cluster of the crystal array
(`reco.calorimeter`) adds its say where it holds an electron shower: if its energy is at least
`calorimeter_min_energy_gev` (a muon leaves ~0.26 GeV, a MIP) and it lies within
`calorimeter_gate_sigmas` of one of the two tracks' extrapolations, each hypothesis adds the
squared distance between the cluster and the track it takes for the electron,
d^2 / sigma_pos^2 with sigma_pos^2 = b^2 + (a / E_cluster)^2 (`calorimeter_resolution_cm` b,
`calorimeter_noise_term_cm_gev` a; the defaults follow the measured resolution of the 5x5 PbWO4
array, docs/reconstruction.md). Near theta_e ~ theta_mu the two tracks are (theta_e + theta_mu) L
apart at the front face, 5 mm at L = 1 m, against a cluster resolution of ~1 mm for the 10-100 GeV
electrons there: the calorimeter resolves most of the ambiguity of the events in front of it
(docs/reconstruction.md). The parametric mode carries each calibration event's term
(`reco.parametric`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from fastsim.config import check_edges, check_range
from fastsim.physics.kinematics import THETA_MU_MAX_RAD, elastic_curve_kernel
from fastsim.units import PDG_ELECTRON, PDG_MUON
from reco.events import RecoEvents
from reco.observables import acoplanarity_kernel, elastic_theta_mu_kernel

CALORIMETER_COLUMNS = ("calo_energy_gev", "calo_x_cm", "calo_y_cm", "calo_x_1_cm", "calo_y_1_cm", "calo_x_2_cm",
                       "calo_y_2_cm")

_ELASTIC_FIT_COLUMNS = {"elastic_chi2": "elastic_chi2_mu_{}", "elastic_theta_e_rad": "elastic_theta_e_mu_{}_rad",
                        "elastic_theta_mu_rad": "elastic_theta_mu_mu_{}_rad"}


@dataclass(frozen=True)
class PidSettings:
    """Settings of the identification (see the module docstring for the decision).

    Parameters
    ----------
    beam_energy_gev : float
        Nominal beam energy of the elastic curve (GeV), the configured mean (160 GeV default).
    muon_resolution_rad : float
        Polar-angle resolution of the muon track, incoming direction included (rad).
    electron_resolution_rad : float
        Constant term of the electron polar-angle resolution (rad).
    electron_scattering_rad_gev : float
        Multiple-scattering term k of the electron resolution, sigma = k / E_e (rad GeV). The
        default 3.3e-3 rad GeV is Highland's theta_0 p for half a 3 cm graphite target
        (x/X0 = 0.064, 3.1e-3) and the first module (2 x 320 um Si, x/X0 = 0.0068) in quadrature.
    margin_sigmas : float
        A track above arcsin(m_e/m_mu) + margin_sigmas * muon_resolution_rad cannot be the muon.
    calorimeter : bool
        Use the calorimeter's cluster where it holds an electron shower (module docstring).
    calorimeter_min_energy_gev : float
        Least cluster energy (GeV) taken for an electron shower.
    calorimeter_resolution_cm, calorimeter_noise_term_cm_gev : float
        Position resolution of the cluster against the electron track's extrapolation,
        sigma_pos^2 = resolution^2 + (noise_term / E_cluster)^2 (cm, cm GeV).
    calorimeter_gate_sigmas : float
        The cluster counts only within this many sigma_pos of one of the tracks.
    """

    beam_energy_gev: float = 160.0
    muon_resolution_rad: float = 3e-5
    electron_resolution_rad: float = 3e-5
    electron_scattering_rad_gev: float = 3.3e-3
    margin_sigmas: float = 5.0
    calorimeter: bool = False
    calorimeter_min_energy_gev: float = 1.0
    calorimeter_resolution_cm: float = 0.1
    calorimeter_noise_term_cm_gev: float = 0.9
    calorimeter_gate_sigmas: float = 5.0

    def __post_init__(self):
        check_range("beam_energy_gev", self.beam_energy_gev, 1.0, 1e4)
        check_range("muon_resolution_rad", self.muon_resolution_rad, 0.0, 0.01, low_open=True)
        check_range("electron_resolution_rad", self.electron_resolution_rad, 0.0, 0.01, low_open=True)
        check_range("electron_scattering_rad_gev", self.electron_scattering_rad_gev, 0.0, 1.0)
        check_range("margin_sigmas", self.margin_sigmas, 0.0, 100.0)
        if not isinstance(self.calorimeter, (bool, np.bool_)):
            raise ValueError(f"calorimeter = {self.calorimeter!r} must be true or false")
        check_range("calorimeter_min_energy_gev", self.calorimeter_min_energy_gev, 0.0, 1e4)
        check_range("calorimeter_resolution_cm", self.calorimeter_resolution_cm, 0.0, 100.0, low_open=True)
        check_range("calorimeter_noise_term_cm_gev", self.calorimeter_noise_term_cm_gev, 0.0, 100.0)
        check_range("calorimeter_gate_sigmas", self.calorimeter_gate_sigmas, 0.0, 1e3, low_open=True)

    @property
    def muon_angle_limit_rad(self) -> float:
        """Largest angle a track identified as the muon may have: arcsin(m_e/m_mu) + margin."""
        return THETA_MU_MAX_RAD + self.margin_sigmas * self.muon_resolution_rad

    def kernel_args(self):
        """(beam_energy_gev, muon limit, sigma_mu, sigma_e0, k) for `muon_is_1_kernel`."""
        return (float(self.beam_energy_gev), self.muon_angle_limit_rad, float(self.muon_resolution_rad),
                float(self.electron_resolution_rad), float(self.electron_scattering_rad_gev))


@njit(cache=True, nogil=True)
def _hypothesis_chi2(beam_energy_gev, theta_mu, theta_e, sigma_mu, sigma_e0, scattering):
    """Normalized squared distance of (theta_e, theta_mu) from the elastic curve (module doc)."""
    curve, slope, energy = elastic_curve_kernel(beam_energy_gev, theta_e)
    sigma_e2 = sigma_e0 * sigma_e0 + (scattering / energy) ** 2
    residual = theta_mu - curve
    return residual * residual / (sigma_mu * sigma_mu + slope * slope * sigma_e2)


@njit(cache=True, nogil=True)
def muon_is_1_kernel(theta_1, theta_2, beam_energy_gev, muon_limit_rad, sigma_mu, sigma_e0, scattering,
                     calorimeter_term=0.0):
    """True if track 1 (the larger angle) is the muon; False if track 2 is, or an angle is NaN.
    `calorimeter_term` is added to the chi2 of "track 1 is the muon" (`calorimeter_term_kernel`)."""
    if not (theta_1 <= muon_limit_rad and theta_2 >= 0.0):  # NaN fails both comparisons
        return False
    chi2_mu_1 = _hypothesis_chi2(beam_energy_gev, theta_1, theta_2, sigma_mu, sigma_e0, scattering)
    chi2_mu_2 = _hypothesis_chi2(beam_energy_gev, theta_2, theta_1, sigma_mu, sigma_e0, scattering)
    return chi2_mu_1 + calorimeter_term < chi2_mu_2


@njit(cache=True, nogil=True)
def calorimeter_term_kernel(energy, x, y, x_1, y_1, x_2, y_2, min_energy, resolution, noise_term, gate_sigmas):
    """(d_2^2 - d_1^2) / sigma_pos^2: the calorimeter's chi2 of "track 1 is the muon" (track 2
    the electron) minus that of "track 2 is the muon", d_k the distance from the cluster (x, y)
    to track k's extrapolation (cm); 0 without an electron-like cluster near a track."""
    if not energy >= min_energy:  # NaN too
        return 0.0
    d2_1 = (x - x_1) ** 2 + (y - y_1) ** 2
    d2_2 = (x - x_2) ** 2 + (y - y_2) ** 2
    sigma2 = resolution * resolution + (noise_term / energy) ** 2
    if not min(d2_1, d2_2) <= gate_sigmas * gate_sigmas * sigma2:
        return 0.0
    return (d2_2 - d2_1) / sigma2


@njit(cache=True, nogil=True, inline="always")
def identify_kernel(i, theta_1, phi_1, theta_2, phi_2, beam_energy_gev, muon_limit_rad, sigma_mu, sigma_e0,
                    scattering, calorimeter_term, theta_e, theta_mu, phi_e, phi_mu, acoplanarity, elasticity,
                    muon_is_1):
    """Identify event i (`muon_is_1_kernel`) and fill its observables in the output arrays."""
    one = muon_is_1_kernel(theta_1[i], theta_2[i], beam_energy_gev, muon_limit_rad, sigma_mu, sigma_e0, scattering,
                           calorimeter_term)
    muon_is_1[i] = one
    if one:
        theta_mu[i], phi_mu[i], theta_e[i], phi_e[i] = theta_1[i], phi_1[i], theta_2[i], phi_2[i]
    else:
        theta_mu[i], phi_mu[i], theta_e[i], phi_e[i] = theta_2[i], phi_2[i], theta_1[i], phi_1[i]
    acoplanarity[i] = acoplanarity_kernel(phi_e[i], phi_mu[i])
    elasticity[i] = theta_mu[i] - elastic_theta_mu_kernel(beam_energy_gev, theta_e[i])


@njit(parallel=True, cache=True, nogil=True)
def _identify_chunk(theta_1, phi_1, theta_2, phi_2, beam_energy_gev, muon_limit_rad, sigma_mu, sigma_e0,
                    scattering, calorimeter_term, theta_e, theta_mu, phi_e, phi_mu, acoplanarity, elasticity,
                    muon_is_1):
    for i in prange(theta_1.size):
        identify_kernel(i, theta_1, phi_1, theta_2, phi_2, beam_energy_gev, muon_limit_rad, sigma_mu, sigma_e0,
                        scattering, calorimeter_term[i], theta_e, theta_mu, phi_e, phi_mu, acoplanarity, elasticity,
                        muon_is_1)


@njit(parallel=True, cache=True, nogil=True)
def _calorimeter_terms(energy, x, y, x_1, y_1, x_2, y_2, min_energy, resolution, noise_term, gate_sigmas, out):
    for i in prange(energy.size):
        out[i] = calorimeter_term_kernel(energy[i], x[i], y[i], x_1[i], y_1[i], x_2[i], y_2[i], min_energy,
                                         resolution, noise_term, gate_sigmas)


def calorimeter_terms(events: RecoEvents, settings: PidSettings) -> np.ndarray:
    """The calorimeter's term of every event: `calorimeter_term_kernel` where the event has a
    cluster, else its calo_term column (the parametric mode's, NaN counting as 0); zeros unless
    ``settings.calorimeter``."""
    out = np.zeros(len(events))
    if settings.calorimeter:
        _calorimeter_terms(*(events[name] for name in CALORIMETER_COLUMNS), settings.calorimeter_min_energy_gev,
                           settings.calorimeter_resolution_cm, settings.calorimeter_noise_term_cm_gev,
                           settings.calorimeter_gate_sigmas, out)
        without_cluster = np.isnan(events["calo_energy_gev"])
        out[without_cluster] = np.nan_to_num(events["calo_term"][without_cluster])
    return out


def identify(events: RecoEvents, settings: PidSettings | None = None) -> RecoEvents:
    """Identify the muon among the two outgoing tracks and fill the observables, in place.

    Parameters
    ----------
    events : RecoEvents
        With theta_1_rad, phi_1_rad, theta_2_rad, phi_2_rad filled (NaN where a track is missing).
    settings : PidSettings, optional
        Defaults to ``PidSettings()`` (160 GeV).

    Returns
    -------
    RecoEvents
        `events`, with theta_e_rad, theta_mu_rad, phi_e_rad, phi_mu_rad, acoplanarity_rad,
        elasticity_rad and muon_is_1 set; NaN observables (muon_is_1 False) where a track is missing.
    """
    if not isinstance(events, RecoEvents):
        raise ValueError(f"events = {type(events).__name__} must be a reco.events.RecoEvents")
    settings = PidSettings() if settings is None else settings
    n = len(events)
    out = {name: np.empty(n) for name in ("theta_e_rad", "theta_mu_rad", "phi_e_rad", "phi_mu_rad",
                                          "acoplanarity_rad", "elasticity_rad")}
    muon_is_1 = np.empty(n, dtype=np.bool_)
    terms = calorimeter_terms(events, settings)
    _identify_chunk(events["theta_1_rad"], events["phi_1_rad"], events["theta_2_rad"], events["phi_2_rad"],
                    *settings.kernel_args(), terms, *out.values(), muon_is_1)
    for name, values in out.items():
        events[name] = values
    if settings.calorimeter:
        events["calo_term"] = terms
    events["muon_is_1"] = muon_is_1
    for name, of_hypothesis in _ELASTIC_FIT_COLUMNS.items():  # the kinematic fit of the chosen hypothesis
        events[name] = np.where(muon_is_1, events[of_hypothesis.format(1)], events[of_hypothesis.format(2)])
    return events


def misid_table(events: RecoEvents, theta_e_edges_rad):
    """Mis-identification rate in bins of the electron angle, measured against the truth.

    Parameters
    ----------
    events : RecoEvents
        Identified events (`identify`) with truth_pdg_1/2. Only events whose two tracks are one
        electron and one muon by truth (|pdg| 11 and 13) enter.
    theta_e_edges_rad : array_like
        Increasing bin edges of the electron angle. The angle is the reconstructed polar angle of
        the track made by the true electron, so the binning does not depend on the decision.

    Returns
    -------
    pandas.DataFrame
        One row per bin: theta_e_low_rad, theta_e_high_rad, events, misidentified, weighted_events,
        weighted_misidentified, rate (weighted mis-identified / weighted events) and rate_error
        (binomial error with the effective number of events, (sum w)^2 / sum w^2).
    """
    import pandas as pd

    edges = check_edges("theta_e_edges_rad", theta_e_edges_rad)
    pdg_1, pdg_2 = np.abs(events["truth_pdg_1"]), np.abs(events["truth_pdg_2"])
    true_muon_is_1 = (pdg_1 == PDG_MUON) & (pdg_2 == PDG_ELECTRON)
    usable = true_muon_is_1 | ((pdg_1 == PDG_ELECTRON) & (pdg_2 == PDG_MUON))
    electron_angle = np.where(true_muon_is_1, events["theta_2_rad"], events["theta_1_rad"])
    wrong = events["muon_is_1"] != true_muon_is_1
    weight = events["weight"]
    index = np.searchsorted(edges, electron_angle, side="right") - 1
    inside = usable & (index >= 0) & (index < edges.size - 1) & np.isfinite(electron_angle)
    nb = edges.size - 1

    def per_bin(values):
        return np.bincount(index[inside], weights=values[inside], minlength=nb)[:nb]

    n_events = per_bin(np.ones_like(weight))
    n_wrong = per_bin(wrong.astype(np.float64))
    sum_w, sum_w2 = per_bin(weight), per_bin(weight * weight)
    sum_w_wrong = per_bin(np.where(wrong, weight, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = sum_w_wrong / sum_w
        effective = sum_w * sum_w / sum_w2
        error = np.sqrt(rate * (1.0 - rate) / effective)
    return pd.DataFrame({
        "theta_e_low_rad": edges[:-1], "theta_e_high_rad": edges[1:], "events": n_events.astype(np.int64),
        "misidentified": n_wrong.astype(np.int64), "weighted_events": sum_w, "weighted_misidentified": sum_w_wrong,
        "rate": rate, "rate_error": error,
    })
