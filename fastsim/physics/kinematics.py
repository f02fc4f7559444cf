"""Two-body kinematics of mu e -> mu e on an electron at rest.

What to use when:

- `ElasticKinematics(beam_energy_gev)` holds s, lambda and the t range of one beam energy and
  converts between t, the electron energy E_e, the electron angle theta_e and the muon angle
  theta_mu, on numpy arrays.
- The `*_kernel` functions are the same formulas as scalar numba functions, for event kernels;
  they take the beam energy as their first argument.

All conversions go through t < 0 (GeV^2) and the exact, cancellation-free relations

    p_T^2      = -t s (t - t_min) / lambda               (transverse momentum of either particle)
    p_L(e)     = -t (E + m_e) / (2 m_e p)                 (electron's longitudinal momentum)
    p_L(mu)    = p - p_L(e)
    tan^2 th_e = s (t - t_min) / (-t (E + m_e)^2)   =>   t(th_e) = -lambda / (s + (E + m_e)^2 tan^2 th_e)

with lambda = 4 m_e^2 p^2 the Kallen function and t_min = -lambda / s. They follow from energy
and momentum conservation with the target at rest; angles come from atan2(p_T, p_L), so small
angles keep full relative precision. Eliminating t between them gives the elastic curve in closed
form (`elastic_curve_kernel`, for event loops that evaluate it several times an event):

    tan th_mu = 2 m_e a T / (m_mu^2 - m_e^2 + a^2 T^2),   T = tan th_e,  a = E + m_e,

whose maximum, at a T = sqrt(m_mu^2 - m_e^2), is tan th_mu = m_e / sqrt(m_mu^2 - m_e^2).

theta_mu(t) rises from 0 at t = 0 to arcsin(m_e / m_mu) = 4.8364 mrad and falls back to 0 at
t_min, so theta_e(theta_mu) is double-valued. The branch is named by the electron:
``branch="hard"`` is the large-|t| branch (energetic electron, small theta_e: the MUonE signal
region) and ``branch="soft"`` the small-|t| branch (soft electron at large angle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from fastsim.numerics import polar_angle, tan_small
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV

_ME = ELECTRON_MASS_GEV
_MMU = MUON_MASS_GEV
_MASS_GAP_GEV2 = (MUON_MASS_GEV - ELECTRON_MASS_GEV) * (MUON_MASS_GEV + ELECTRON_MASS_GEV)
_HALF_PI = 0.5 * math.pi

#: Largest muon angle in elastic scattering on an electron at rest, arcsin(m_e / m_mu) (rad).
THETA_MU_MAX_RAD = math.asin(ELECTRON_MASS_GEV / MUON_MASS_GEV)


def kallen(a, b, c):
    """Kallen triangle function lambda(a, b, c) = a^2 + b^2 + c^2 - 2ab - 2ac - 2bc."""
    return a * a + b * b + c * c - 2.0 * (a * b + a * c + b * c)


@njit(cache=True, nogil=True, inline="always")
def invariants_kernel(beam_energy_gev):
    """(s, lambda, p_beam) in GeV^2, GeV^4, GeV for a muon of energy E on an electron at rest."""
    p = math.sqrt((beam_energy_gev - _MMU) * (beam_energy_gev + _MMU))
    s = _MMU * _MMU + _ME * _ME + 2.0 * _ME * beam_energy_gev
    lam = 4.0 * _ME * _ME * p * p
    return s, lam, p


@njit(cache=True, nogil=True, inline="always")
def born_momenta_kernel(beam_energy_gev, t_gev2):
    """(pt, pz_e, E_e, p_beam) in GeV of the elastic final state with momentum transfer t
    (GeV^2, t_min <= t < 0), incoming muon along +z: the electron's transverse and longitudinal
    momentum and energy; the muon has -pt, p_beam - pz_e and E_beam + m_e - E_e."""
    s, lam, p = invariants_kernel(beam_energy_gev)
    pt = math.sqrt(max(-t_gev2 * (t_gev2 * s + lam), 0.0) / lam)  # pt^2 = -t s (t - t_min) / lambda
    pz_e = -t_gev2 * (beam_energy_gev + _ME) / (2.0 * _ME * p)
    return pt, pz_e, _ME - t_gev2 * (0.5 / _ME), p


@njit(cache=True, nogil=True, inline="always")
def angles_from_t_kernel(beam_energy_gev, t_gev2):
    """(theta_e, theta_mu) in rad for momentum transfer t (GeV^2, t_min <= t < 0)."""
    pt, pz_e, _, p = born_momenta_kernel(beam_energy_gev, t_gev2)
    return polar_angle(pt, pz_e), polar_angle(pt, p - pz_e)


@njit(cache=True, nogil=True)
def t_from_theta_e_kernel(beam_energy_gev, theta_e_rad):
    """t (GeV^2) of the elastic event whose electron leaves at theta_e (0 <= theta_e < pi/2)."""
    s, lam, p = invariants_kernel(beam_energy_gev)
    tan_th = math.tan(theta_e_rad)
    a = beam_energy_gev + _ME
    return -lam / (s + a * a * tan_th * tan_th)


@njit(cache=True, nogil=True)
def t_from_theta_mu_kernel(beam_energy_gev, theta_mu_rad, hard_branch):
    """t (GeV^2) for muon angle theta_mu on the hard (large |t|) or soft (small |t|) branch.

    Solves p_T^2 = tan^2(theta_mu) p_L(mu)^2 for tau = -t, a quadratic whose discriminant is
    1 - tan^2(theta_mu) (m_mu^2 - m_e^2) / m_e^2; returns nan above THETA_MU_MAX_RAD.
    """
    s, lam, p = invariants_kernel(beam_energy_gev)
    tan2 = math.tan(theta_mu_rad) ** 2
    k = (beam_energy_gev + _ME) / (2.0 * _ME * p)
    a = s / lam + tan2 * k * k
    b = 1.0 + 2.0 * p * k * tan2
    disc = 1.0 - tan2 * (_MMU * _MMU - _ME * _ME) / (_ME * _ME)
    if disc < 0.0:
        return math.nan
    root = math.sqrt(disc)
    if hard_branch:
        return -(b + root) / (2.0 * a)
    # The small root in the form without cancellation.
    return -2.0 * tan2 * p * p / (b + root)


@njit(cache=True, nogil=True)
def elastic_curve_kernel(beam_energy_gev, theta_e_rad):
    """The elastic curve at theta_e (0 <= theta_e < pi/2, NaNs otherwise), in closed form (module
    docstring): (theta_mu (rad), its slope d theta_mu / d theta_e, the electron energy E_e (GeV)).

    With c = 2 m_e a, m = m_mu^2 - m_e^2, D = m + a^2 T^2 and g = c T / D = tan theta_mu:
    d theta_mu / d theta_e = (1 + T^2) c (m - a^2 T^2) / (D^2 (1 + g^2)), and
    E_e = m_e - t / (2 m_e) = m_e + 2 m_e p^2 / (s + a^2 T^2)."""
    if not (0.0 <= theta_e_rad < _HALF_PI):
        return math.nan, math.nan, math.nan
    tan_e = tan_small(theta_e_rad)
    a = beam_energy_gev + _ME
    a2t2 = a * a * tan_e * tan_e
    c = 2.0 * _ME * a
    d = _MASS_GAP_GEV2 + a2t2
    g = c * tan_e / d
    slope = (1.0 + tan_e * tan_e) * c * (_MASS_GAP_GEV2 - a2t2) / (d * d * (1.0 + g * g))
    p2 = (beam_energy_gev - _MMU) * (beam_energy_gev + _MMU)
    s = _MMU * _MMU + _ME * _ME + 2.0 * _ME * beam_energy_gev
    return polar_angle(g, 1.0), slope, _ME + 2.0 * _ME * p2 / (s + a2t2)


@njit(cache=True, nogil=True)
def electron_energy_from_t_kernel(t_gev2):
    """Electron energy E_e = m_e - t / (2 m_e) (GeV)."""
    return _ME - t_gev2 / (2.0 * _ME)


@njit(cache=True)
def _angles_from_t_array(beam_energy_gev, t_gev2, theta_e, theta_mu):
    for i in range(t_gev2.size):
        theta_e[i], theta_mu[i] = angles_from_t_kernel(beam_energy_gev, t_gev2[i])


@njit(cache=True)
def _t_from_theta_e_array(beam_energy_gev, theta_e_rad, out):
    for i in range(theta_e_rad.size):
        out[i] = t_from_theta_e_kernel(beam_energy_gev, theta_e_rad[i])


@njit(cache=True)
def _t_from_theta_mu_array(beam_energy_gev, theta_mu_rad, hard_branch, out):
    for i in range(theta_mu_rad.size):
        out[i] = t_from_theta_mu_kernel(beam_energy_gev, theta_mu_rad[i], hard_branch)


def _flat(values):
    array = np.asarray(values, dtype=np.float64)
    return array, np.ascontiguousarray(array.reshape(-1))


def _check_range(name, values, low, high, low_open=False, high_open=False):
    """Raise ValueError naming `name` if any value lies outside [low, high] (or the open ends)."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    bad |= (values <= low) if low_open else (values < low)
    bad |= (values >= high) if high_open else (values > high)
    if np.any(bad):
        value = float(values.reshape(-1)[np.argmax(bad.reshape(-1))])
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} = {value!r} is outside the allowed range {left}{low!r}, {high!r}{right}")


@dataclass(frozen=True)
class ElasticKinematics:
    """Kinematics of mu e -> mu e for a muon of `beam_energy_gev` on an electron at rest.

    Attributes are the Mandelstam s (GeV^2), lambda = Kallen(s, m_mu^2, m_e^2) (GeV^4), the beam
    momentum (GeV) and the t range [t_min_gev2, 0) with t_min = -lambda / s.
    """

    beam_energy_gev: float

    def __post_init__(self):
        energy = self.beam_energy_gev
        if not isinstance(energy, (int, float, np.floating, np.integer)) or not math.isfinite(energy):
            raise ValueError(f"beam_energy_gev = {energy!r} must be a finite number above the muon mass {_MMU} GeV")
        if energy <= _MMU:
            raise ValueError(
                f"beam_energy_gev = {energy!r} is outside the allowed range ({_MMU!r}, inf): "
                "the beam muon must have positive momentum"
            )
        object.__setattr__(self, "beam_energy_gev", float(energy))

    @property
    def s_gev2(self) -> float:
        return invariants_kernel(self.beam_energy_gev)[0]

    @property
    def lambda_gev4(self) -> float:
        return invariants_kernel(self.beam_energy_gev)[1]

    @property
    def beam_momentum_gev(self) -> float:
        return invariants_kernel(self.beam_energy_gev)[2]

    @property
    def t_min_gev2(self) -> float:
        """Most negative t, -lambda / s (GeV^2): the electron takes the largest energy at theta_e = 0."""
        s, lam, _ = invariants_kernel(self.beam_energy_gev)
        return -lam / s

    @property
    def electron_energy_max_gev(self) -> float:
        return electron_energy_from_t_kernel(self.t_min_gev2)

    # --- conversions ------------------------------------------------------------------------

    def check_t(self, t_gev2, name="t_gev2"):
        _check_range(name, t_gev2, self.t_min_gev2, 0.0, high_open=True)

    def electron_energy_gev(self, t_gev2):
        """E_e = m_e - t / (2 m_e) (GeV)."""
        self.check_t(t_gev2)
        return _ME - np.asarray(t_gev2, dtype=np.float64) / (2.0 * _ME)

    def t_from_electron_energy(self, electron_energy_gev):
        """t = 2 m_e (m_e - E_e) (GeV^2), for m_e < E_e <= E_e,max."""
        _check_range(
            "electron_energy_gev", electron_energy_gev, _ME, self.electron_energy_max_gev, low_open=True
        )
        return 2.0 * _ME * (_ME - np.asarray(electron_energy_gev, dtype=np.float64))

    def angles_from_t(self, t_gev2):
        """(theta_e_rad, theta_mu_rad) of the elastic event with momentum transfer t."""
        self.check_t(t_gev2)
        shaped, flat = _flat(t_gev2)
        theta_e = np.empty_like(flat)
        theta_mu = np.empty_like(flat)
        _angles_from_t_array(self.beam_energy_gev, flat, theta_e, theta_mu)
        return theta_e.reshape(shaped.shape), theta_mu.reshape(shaped.shape)

    def t_from_theta_e(self, theta_e_rad):
        """t (GeV^2) of the elastic event with electron angle theta_e in [0, pi/2)."""
        _check_range("theta_e_rad", theta_e_rad, 0.0, math.pi / 2, high_open=True)
        shaped, flat = _flat(theta_e_rad)
        out = np.empty_like(flat)
        _t_from_theta_e_array(self.beam_energy_gev, flat, out)
        return out.reshape(shaped.shape)

    def t_from_theta_mu(self, theta_mu_rad, branch="hard"):
        """t (GeV^2) for muon angle theta_mu in [0, THETA_MU_MAX_RAD] on the chosen branch.

        ``branch="hard"``: large |t|, energetic electron at small theta_e (the MUonE signal);
        ``branch="soft"``: small |t|, soft electron at large theta_e.
        """
        hard = _branch_flag(branch)
        _check_range("theta_mu_rad", theta_mu_rad, 0.0, THETA_MU_MAX_RAD)
        shaped, flat = _flat(theta_mu_rad)
        out = np.empty_like(flat)
        _t_from_theta_mu_array(self.beam_energy_gev, flat, hard, out)
        return out.reshape(shaped.shape)

    def theta_mu_from_theta_e(self, theta_e_rad):
        """The elastic curve theta_mu(theta_e) (rad)."""
        return self.angles_from_t(self.t_from_theta_e(theta_e_rad))[1]

    def theta_e_from_theta_mu(self, theta_mu_rad, branch="hard"):
        """Inverse of the elastic curve on one branch (see the module docstring)."""
        return self.angles_from_t(self.t_from_theta_mu(theta_mu_rad, branch))[0]


def _branch_flag(branch):
    if branch not in ("hard", "soft"):
        raise ValueError(f"branch = {branch!r} is not allowed; choose 'hard' (large |t|) or 'soft' (small |t|)")
    return branch == "hard"
