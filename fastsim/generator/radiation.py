"""QED radiation beyond leading order for mu e -> mu e (gamma): a switchable, documented approximation.

What to use when:

- `RadiationModel(name="none")` (the default) leaves the LO event alone: weight factor 1, Born
  kinematics. `RadiationModel(name="nlo")` adds one photon per event from the electron line, with
  an exponentiated leading-log (LL) rate and exact momentum conservation, and a constant K-factor
  for the non-logarithmic O(alpha) rest (muon line, mu-e interference, constants).
- `radiate_event(...)` is the numba kernel the elastic generator calls per event; the weight it
  returns multiplies the LO weight of the Born momentum transfer t_born, so the generator stays
  importance-sampled in t_born. It needs `N_RADIATION_UNIFORMS` uniforms per event.
- `generate_events(...)` is a self-contained numpy-seeded helper for tests and validation.
- `min_born_energy_fraction(...)`: how far below an E_e cut the Born electron energy of a
  radiative event can lie (for the generator's sampling window).

For a precise analysis import MESMER events instead (fastsim.io); this model is for studies of
the size and the topology of the radiative tail. Its accuracy is stated in docs/radiation.md.

The approximation (docs/radiation.md has the derivation and the sources)
------------------------------------------------------------------------
The photon exchanged between the lines keeps the Born virtuality, q^2 = t_born. The electron
side is treated like deep-inelastic scattering of the muon on an electron "target" that has its
own QED structure (the parton picture of radiative corrections, Kuraev & Fadin, Sov. J. Nucl.
Phys. 41 (1985) 466; its exponentiated form as in Nicrosini & Trentadue, Phys. Lett. B 196
(1987) 551, and as used in the Babayaga/MESMER family, Balossini et al., Nucl. Phys. B 758
(2006) 227; Alacevich et al., JHEP 02 (2019) 155):

1. the fraction v = 1 - x of the radiating leg's light-cone momentum that goes into the photon
   is drawn from the exponentiated LL structure function of two legs (the target electron and
   the outgoing electron), exponent beta/2 = (alpha/pi) (ln(Q^2/m_e^2) - 1) per leg, Q^2 = -t_born;
2. one leg is chosen with probability 1/2: "initial" (target-side: the muon hits an electron
   carrying the fraction x, Bjorken x_B = x, which at small x is the quasi-real Compton region
   that dominates the correction for a cut on E_e only; its collinear log uses the scale
   Q^2/x = 2 m_e nu, the Compton log ln(W^2/m_e^2) at small x) or "final" (the outgoing
   electron gives the fraction v of its energy to a photon within its own angle);
3. exact kinematics: the muon loses nu = (Q^2 + W^2 - m_e^2) / (2 m_e) at fixed Q^2, the
   electron-photon system X = p_e + q of mass W decays in its rest frame, the photon direction
   drawn from the collinear (1/(p.k)) distribution of the chosen leg;
4. the weight factor is K * D(x)/p(x) * R(x) * L_leg(x)/L, with R the ratio of the Born
   cross section on the reduced target to the Born one (DIS parton formula), and K fitted once
   (see `DEFAULT_K_FACTOR`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from fastsim.generator.elastic import born_final_state_kernel
from fastsim.config import check_range
from fastsim.physics.cross_section import born_dsigma_dt_kernel
from fastsim.physics.kinematics import invariants_kernel
from fastsim.physics.vacuum_polarization import RunningCoupling
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, MUON_MASS_GEV

_ME = ELECTRON_MASS_GEV
_MMU = MUON_MASS_GEV

#: Uniforms per event used by `radiate_event`: [leg choice, momentum fraction, collinear
#: variable, decay azimuth].
N_RADIATION_UNIFORMS = 4

#: Length of `out` filled by `radiate_event`: muon, electron, photon as (px, py, pz, E).
N_RADIATION_OUT = 12

#: Model names.
RADIATION_MODELS = ("none", "nlo")

#: K-factor of the "nlo" model: the part of the O(alpha) correction without a collinear log
#: (muon line, mu-e interference and boxes, constants and the scale of the electron line's
#: logs), fitted ONCE to MESMER's NLO 1335.33 +- 0.10 ub against LO 1276.88 ub at 150 GeV
#: (4.5 GeV Gaussian spread, E_e > 0.2 GeV, mu- beam) with `benchmarks/radiation_validation.py
#: --fit` (8e6 events): the LL part alone gives NLO/LO = 1.0280 +- 0.0004, so K = 1.0173 +-
#: 0.0004. Checked against the 160 GeV MESMER sample there (docs/radiation.md).
DEFAULT_K_FACTOR = 1.0173

_PARAM_MODE, _PARAM_EMIN, _PARAM_K = 0, 1, 2
# Photon momentum fractions below this are not resolved in float64 next to the beam energy.
_V_NEGLIGIBLE = 1e-15
# Fraction of the target-side emissions drawn log-uniformly in x (importance sampling).
_ISR_LOG_FRACTION = 0.5
_N_PARAMS = 3


@dataclass(frozen=True)
class RadiationModel:
    """Switchable QED radiation model.

    Parameters
    ----------
    name : {"none", "nlo"}
        "none": LO only (weight factor 1, Born kinematics). "nlo": one photon per event from the
        exponentiated LL electron-line model described in the module docstring.
    photon_energy_min_gev : float
        Photons below this lab energy (GeV) are not emitted (their rate stays in the
        exponentiated no-emission factor); in (0, 1] GeV. Default 2e-6 GeV as in MESMER runs.
    k_factor : float
        Constant factor on the weight of every event of the "nlo" model, in [0.5, 2].
    """

    name: str = "none"
    photon_energy_min_gev: float = 2e-6
    k_factor: float = DEFAULT_K_FACTOR

    def __post_init__(self):
        if self.name not in RADIATION_MODELS:
            raise ValueError(f"name = {self.name!r} is not allowed; choose one of {list(RADIATION_MODELS)}")
        check_range("photon_energy_min_gev", self.photon_energy_min_gev, 0.0, 1.0, low_open=True)
        check_range("k_factor", self.k_factor, 0.5, 2.0)
        object.__setattr__(self, "photon_energy_min_gev", float(self.photon_energy_min_gev))
        object.__setattr__(self, "k_factor", float(self.k_factor))

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def kernel_params(self) -> np.ndarray:
        """float64 array [mode (0 none, 1 nlo), photon_energy_min_gev, k_factor] for the kernel."""
        params = np.zeros(_N_PARAMS)
        params[_PARAM_MODE] = RADIATION_MODELS.index(self.name)
        params[_PARAM_EMIN] = self.photon_energy_min_gev
        params[_PARAM_K] = self.k_factor
        return params

    def describe(self) -> dict:
        return {"name": self.name, "photon_energy_min_gev": self.photon_energy_min_gev, "k_factor": self.k_factor}


def min_born_energy_fraction(beam_energy_gev: float, ee_min_gev: float) -> float:
    """Smallest E_e(Born) / E_e(final) of an "nlo" event whose final electron passes E_e > ee_min.

    Target-side emission at fraction x gives E_e ~ E_e(Born) / x; muon kinematics (Q^2 >=
    Q^2_min(nu)) bound x from below by m_mu^2 E_cut / (2 m_e E (E - E_cut)). A factor 0.5 of
    margin is included. Use it to widen the generator's t window (`radiation_ee_factor`).
    """
    energy = float(beam_energy_gev)
    cut = min(float(ee_min_gev), 0.5 * energy)
    return 0.5 * _MMU * _MMU * cut / (2.0 * _ME * energy * (energy - cut))


# --- kernel --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _muon_and_system(beam_energy_gev, q2, nu, phi_e, out):
    """Muon after losing nu at virtuality q2 into out[0:4]; returns (valid, X px, py, pz, E).

    The muon azimuth is phi_e + pi (the electron-side system X = p_e + q is at phi_e, as in
    `born_final_state_kernel`). 1 - cos(theta_mu) = (Q^2 - Q^2_min) / (2 p p') with
    Q^2_min = m_mu^2 (nu^2 + (p - p')^2) / (E E' + p p'), free of cancellations.
    """
    p = math.sqrt((beam_energy_gev - _MMU) * (beam_energy_gev + _MMU))
    e_out = beam_energy_gev - nu
    if e_out <= _MMU:
        return False, 0.0, 0.0, 0.0, 0.0
    p_out = math.sqrt((e_out - _MMU) * (e_out + _MMU))
    dp = nu * (beam_energy_gev + e_out) / (p + p_out)
    q2_min = _MMU * _MMU * (nu * nu + dp * dp) / (beam_energy_gev * e_out + p * p_out)
    d = (q2 - q2_min) / (2.0 * p * p_out)
    if d < 0.0 or d > 2.0:
        return False, 0.0, 0.0, 0.0, 0.0
    sin_th = math.sqrt(d * (2.0 - d))
    c, s = math.cos(phi_e), math.sin(phi_e)
    out[0] = -p_out * sin_th * c
    out[1] = -p_out * sin_th * s
    out[2] = p_out * (1.0 - d)
    out[3] = e_out
    return True, -out[0], -out[1], dp + p_out * d, _ME + nu


@njit(cache=True, nogil=True)
def _decay_system(xpx, xpy, xpz, xe, w, cos_star, phi_star, out):
    """X (mass w) -> e gamma: photon at polar angle acos(cos_star) to X's direction in the X rest
    frame, azimuth phi_star; photon into out[8:12], electron = X - photon into out[4:8]."""
    m2 = _ME * _ME
    k_star = (w * w - m2) / (2.0 * w)
    pabs = math.sqrt(xpx * xpx + xpy * xpy + xpz * xpz)
    nx, ny, nz = xpx / pabs, xpy / pabs, xpz / pabs
    # A unit vector orthogonal to n, from the axis least aligned with n.
    if abs(nx) < 0.7:
        ax, ay, az = 1.0, 0.0, 0.0
    else:
        ax, ay, az = 0.0, 1.0, 0.0
    dot = ax * nx + ay * ny + az * nz
    e1x, e1y, e1z = ax - dot * nx, ay - dot * ny, az - dot * nz
    norm = math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
    e1x, e1y, e1z = e1x / norm, e1y / norm, e1z / norm
    e2x, e2y, e2z = ny * e1z - nz * e1y, nz * e1x - nx * e1z, nx * e1y - ny * e1x
    sin_star = math.sqrt(max(0.0, (1.0 - cos_star) * (1.0 + cos_star)))
    k_par = k_star * cos_star
    k_t1 = k_star * sin_star * math.cos(phi_star)
    k_t2 = k_star * sin_star * math.sin(phi_star)
    # Boost along n with gamma = E_X / W, beta gamma = |P_X| / W.
    k_par_lab = (xe * k_par + pabs * k_star) / w
    k_e_lab = (xe * k_star + pabs * k_par) / w
    out[8] = k_par_lab * nx + k_t1 * e1x + k_t2 * e2x
    out[9] = k_par_lab * ny + k_t1 * e1y + k_t2 * e2y
    out[10] = k_par_lab * nz + k_t1 * e1z + k_t2 * e2z
    out[11] = k_e_lab
    out[4] = xpx - out[8]
    out[5] = xpy - out[9]
    out[6] = xpz - out[10]
    out[7] = xe - out[11]


@njit(cache=True, nogil=True)
def _born_ratio(beam_energy_gev, t_gev2, x):
    """dsigma_0/dt on a massless electron parton with momentum x p_e over the same for x = 1:
    4 pi alpha^2 / (S-hat)^2 [S-hat^2 / t^2 + (S-hat + m_mu^2) / t + 1/2], S-hat = x (s - m_mu^2 - m_e^2)."""
    s, _, _ = invariants_kernel(beam_energy_gev)
    c = s - _MMU * _MMU - _ME * _ME
    cx = x * c
    born = 1.0 / (t_gev2 * t_gev2) + (c + _MMU * _MMU) / (t_gev2 * c * c) + 0.5 / (c * c)
    reduced = 1.0 / (t_gev2 * t_gev2) + (cx + _MMU * _MMU) / (t_gev2 * cx * cx) + 0.5 / (cx * cx)
    return max(reduced / born, 0.0)


@njit(cache=True, nogil=True)
def _born_into(beam_energy_gev, t_born_gev2, phi_rad, out):
    """Born final state (muon, electron; photon zero) into out[0:12]."""
    p = born_final_state_kernel(beam_energy_gev, t_born_gev2, math.cos(phi_rad), math.sin(phi_rad))
    for i in range(8):
        out[i] = p[i]
    for i in range(8, 12):
        out[i] = 0.0


@njit(cache=True, nogil=True)
def radiate_event(beam_energy_gev, t_born_gev2, phi_rad, uniforms, params, out):
    """Final state of one event with QED radiation and its weight factor on the LO weight.

    Parameters
    ----------
    beam_energy_gev, t_born_gev2, phi_rad : float
        Muon energy (incoming muon along +z, electron at rest), Born momentum transfer
        (t_min <= t < 0) and the electron's azimuth (muon at phi + pi), as for the Born event.
    uniforms : float64[N_RADIATION_UNIFORMS]
        Uniforms in (0, 1) from the event's radiation stream.
    params : float64 array from `RadiationModel.kernel_params()`.
    out : float64[12]
        Filled with muon, electron, photon (px, py, pz, E); the photon is zero without emission.

    Returns
    -------
    float
        Factor on the LO weight dsigma/dt(t_born) / p(t_born); 0 where the drawn emission is
        kinematically closed (the LL density has no support there).
    """
    mode = params[_PARAM_MODE]
    if mode < 0.5:
        _born_into(beam_energy_gev, t_born_gev2, phi_rad, out)
        return 1.0
    k_factor = params[_PARAM_K]
    q2 = -t_born_gev2
    big_l = math.log(q2 / (_ME * _ME))
    if big_l <= 1.0:  # no collinear log left (E_e within a few m_e of rest): Born
        _born_into(beam_energy_gev, t_born_gev2, phi_rad, out)
        return k_factor
    beta = 2.0 * ALPHA0 / math.pi * (big_l - 1.0)  # both legs together: beta/2 per leg
    # Exponentiated LL structure function of two legs with one photon (the per-leg exponents
    # beta/2 add up; Kuraev-Fadin / Nicrosini-Trentadue form):
    #     D(x) = beta v^(beta-1) (1 + 3 beta/4) - beta/2 (1 + x),   v = 1 - x.
    # One leg is chosen with probability 1/2 (u0 >= 0.5: final-state electron). v is drawn from
    # p(v) = beta v^(beta-1) (v = u1^(1/beta)); for the target-side leg half of the events draw
    # x log-uniformly on [x_floor, 1] instead (x_floor = Q^2 / (2 m_e E), nu <= E), which samples
    # the quasi-real Compton region x << 1 that dominates a cut on E_e. The weight is D / p_mix.
    initial = uniforms[0] < 0.5
    x_floor = q2 / (2.0 * _ME * beam_energy_gev)
    log_floor = -math.log(x_floor)
    f_mix = _ISR_LOG_FRACTION if initial else 0.0
    if initial and uniforms[0] < 0.5 * _ISR_LOG_FRACTION:
        v = -math.expm1(-uniforms[1] * log_floor)
    else:
        v = math.exp(math.log(uniforms[1]) / beta)
    x = 1.0 - v
    if v < _V_NEGLIGIBLE:
        # The photon would carry < 1e-15 of the beam energy: no emission, Born kinematics.
        # D / p_mix in this limit (the log-x density is negligible against v^(beta-1)).
        _born_into(beam_energy_gev, t_born_gev2, phi_rad, out)
        return k_factor * (1.0 + 0.75 * beta) / (1.0 - f_mix)
    if x <= x_floor:
        _born_into(beam_energy_gev, t_born_gev2, phi_rad, out)
        return 0.0
    soft_density = beta * math.exp((beta - 1.0) * math.log(v))
    d_of_x = soft_density * (1.0 + 0.75 * beta) - 0.5 * beta * (1.0 + x)
    w_sf = d_of_x / ((1.0 - f_mix) * soft_density + f_mix / (x * log_floor))
    m2 = _ME * _ME
    weight = k_factor * w_sf
    if initial:
        # Target side: Bjorken x_B = x, W^2 = m^2 + Q^2 v / x; collinear log at scale Q^2 / x.
        nu = q2 / (2.0 * _ME * x)
        w2 = m2 + q2 * v / x
        weight *= _born_ratio(beam_energy_gev, t_born_gev2, x) * (big_l - math.log(x) - 1.0) / (big_l - 1.0)
    else:
        # Final side: p'.k = E' omega (theta^2 + m^2/E'^2) / 2 log-uniform (the collinear
        # d theta^2 / (theta^2 + m^2/E'^2) density) from theta = 0, v m^2 / (2 x), up to the
        # electron's own angle, theta^2 E_e^2 ~ Q^2, i.e. x v Q^2 / 2.
        pk_min = v * m2 / (2.0 * x)
        pk_max = 0.5 * x * v * q2
        pk = pk_min
        if pk_max > pk_min:
            pk = pk_min * math.exp(uniforms[2] * math.log(pk_max / pk_min))
        w2 = m2 + 2.0 * pk
        nu = (2.0 * pk + q2) / (2.0 * _ME)
    if w2 - m2 <= 1e-12 * m2:
        # Emission too soft to resolve in float64: no photon, Born kinematics.
        _born_into(beam_energy_gev, t_born_gev2, phi_rad, out)
        return k_factor * w_sf
    valid, xpx, xpy, xpz, xe = _muon_and_system(beam_energy_gev, q2, nu, phi_rad, out)
    if not valid or weight <= 0.0:
        _born_into(beam_energy_gev, t_born_gev2, phi_rad, out)
        return 0.0
    w = math.sqrt(w2)
    pabs = math.sqrt(xpx * xpx + xpy * xpy + xpz * xpz)
    if initial:
        # p_e.k = (k* m_e / W) (E_X - P cos a), a = angle to p_e (= -n in the X frame):
        # y = E_X - P cos a log-uniform, the 1/(p_e.k) collinear density; cos(theta*) = -cos a.
        lo = w2 / (xe + pabs)
        hi = xe + pabs
        y = lo * math.exp(uniforms[2] * math.log(hi / lo))
        cos_star = (y - xe) / pabs
    else:
        # Lab photon energy v E_X: omega = (E_X k* + P k* cos*) / W.
        k_star = (w2 - m2) / (2.0 * w)
        cos_star = (v * xe * w / k_star - xe) / pabs
    cos_star = min(1.0, max(-1.0, cos_star))
    _decay_system(xpx, xpy, xpz, xe, w, cos_star, 2.0 * math.pi * uniforms[3], out)
    if out[11] < params[_PARAM_EMIN]:
        # Photon below the cut-off: not emitted; its rate stays in the no-emission factor.
        _born_into(beam_energy_gev, t_born_gev2, phi_rad, out)
        return k_factor * w_sf
    return weight


# --- Python helper for tests and validation ------------------------------------------------------

# Share of the helper's events sampled ~1/t^2 above the split (the rest log-uniform below it).
_UPPER_PIECE = 0.7


@njit(cache=True)
def _generate_loop(beam_energy, t_born, phi, uniforms, params, out, factor):
    for i in range(t_born.size):
        factor[i] = radiate_event(beam_energy[i], t_born[i], phi[i], uniforms[i], params, out[i])


@njit(cache=True)
def _born_weights(beam_energy, t_born, out):
    for i in range(t_born.size):
        out[i] = born_dsigma_dt_kernel(beam_energy[i], t_born[i])


def generate_events(
    model: RadiationModel,
    beam_energy_gev: float,
    n_events: int,
    seed: int = 1,
    born_kinetic_min_gev: float = 1e-3,
    born_kinetic_split_gev: float = 0.2,
    beam_energy_spread_gev: float = 0.0,
    running: RunningCoupling | None = None,
) -> dict:
    """N weighted events with numpy uniforms (fixed seed): for tests and validation only.

    t_born is sampled with density ~ 1/t^2 above -2 m_e `born_kinetic_split_gev` (set it to the
    E_e cut; 70 % of the events) and ~ 1/|t| below (30 %), between -2 m_e T_lo (T_lo = `born_kinetic_min_gev`, the Born
    electron's smallest kinetic energy E_e - m_e; take it below `min_born_energy_fraction(E,
    cut) * cut` for an E_e cut) and t_min of each event's beam energy, which is Gaussian with
    sigma `beam_energy_spread_gev` around `beam_energy_gev`; the LO weight is the REFERENCE.md dsigma/dt with the
    running factor (default leptonic running) over that density, times the radiation factor, so
    sum(weight * cut) / N estimates the cross section (ub) inside any cut on the final state.

    Returns a dict of arrays: weight, t_born, beam_energy, muon/electron/photon (N, 4) as
    (px, py, pz, E), and energy_e, theta_e, theta_mu, photon_energy.
    """
    if running is None:
        running = RunningCoupling("lep")
    check_range("born_kinetic_min_gev", born_kinetic_min_gev, 0.0, 0.5 * beam_energy_gev, low_open=True)
    check_range("born_kinetic_split_gev", born_kinetic_split_gev, born_kinetic_min_gev, 0.5 * beam_energy_gev,
                  low_open=True)
    check_range("beam_energy_spread_gev", beam_energy_spread_gev, 0.0, 0.1 * beam_energy_gev)
    rng = np.random.default_rng(seed)
    energy = beam_energy_gev + beam_energy_spread_gev * rng.standard_normal(n_events)
    s = _MMU**2 + _ME**2 + 2.0 * _ME * energy
    p2 = (energy - _MMU) * (energy + _MMU)
    q2_max = 4.0 * _ME**2 * p2 / s
    q2_min = 2.0 * _ME * born_kinetic_min_gev
    # Two-piece density: with probability 0.7 ~1/Q^4 (the LO shape) on [a, Q^2_max], a = 2 m_e
    # T_split, with probability 0.3 log-uniform on [Q^2_lo, a], where only radiative events pass
    # an E_e cut at T_split. The weight carries 1 / p(Q^2).
    a = np.minimum(2.0 * _ME * born_kinetic_split_gev, 0.5 * q2_max)
    upper = rng.random(n_events) < _UPPER_PIECE
    u = rng.random(n_events)
    q2_upper = 1.0 / (1.0 / a - u * (1.0 / a - 1.0 / q2_max))
    q2_lower = q2_min * np.exp(u * np.log(a / q2_min))
    q2 = np.where(upper, q2_upper, q2_lower)
    density = np.where(upper, _UPPER_PIECE / (q2 * q2 * (1.0 / a - 1.0 / q2_max)),
                       (1.0 - _UPPER_PIECE) / (q2 * np.log(a / q2_min)))
    inverse_density = 1.0 / density
    t = -q2
    phi = 2.0 * np.pi * rng.random(n_events)
    uniforms = rng.random((n_events, N_RADIATION_UNIFORMS))
    born = np.empty(n_events)
    _born_weights(energy, t, born)
    lo_weight = born * running.factor(t) * inverse_density
    out = np.empty((n_events, N_RADIATION_OUT))
    factor = np.empty(n_events)
    _generate_loop(energy, t, phi, uniforms, model.kernel_params(), out, factor)
    muon, electron, photon = out[:, 0:4], out[:, 4:8], out[:, 8:12]
    return {
        "weight": lo_weight * factor,
        "t_born": t,
        "beam_energy": energy,
        "muon": muon,
        "electron": electron,
        "photon": photon,
        "energy_e": electron[:, 3],
        "theta_e": polar_angle(electron),
        "theta_mu": polar_angle(muon),
        "photon_energy": photon[:, 3],
    }


def polar_angle(four_momenta):
    """Polar angle (rad) to +z of (N, 4) momenta, from atan2 so that small angles stay exact."""
    pt = np.hypot(four_momenta[:, 0], four_momenta[:, 1])
    return np.arctan2(pt, four_momenta[:, 2])


def cross_section_ub(events: dict, mask) -> tuple[float, float]:
    """(sigma, MC error) in ub of the events inside the boolean `mask`."""
    w = np.where(mask, events["weight"], 0.0)
    n = w.size
    return float(w.sum() / n), float(w.std(ddof=1) / math.sqrt(n))
