"""Leading-order mu e -> mu e cross section with the running of alpha.

What to use when:

- `ElasticCrossSection(beam_energy_gev, running)` gives dsigma/dt (ub/GeV^2), dsigma/dtheta_e
  (ub/rad) and the integrated cross section `sigma_ub(cuts)` for any combination of cuts on
  E_e, theta_e and theta_mu (`ElasticCuts`).
- `born_dsigma_dt_kernel` is the fixed-alpha formula as a scalar numba function for the
  generator, which multiplies it by the running factor itself; `born_t2_dsigma_dt_kernel` is
  t^2 times it, the form the generator's 1/t^2 importance sampling uses.

The formula (with masses, one-photon exchange; e.g. Abbiendi et al., Eur. Phys. J. C 77 (2017)
139, and REFERENCE.md) is

    dsigma/dt = 4 pi alpha^2 / lambda [ (s - m_mu^2 - m_e^2)^2 / t^2 + s / t + 1/2 ] |1/(1 - Dalpha(t))|^2

Cuts are mapped to intervals in t (a theta_mu cut can give two) and dsigma/dt is integrated in
v = -1/t, where it is nearly constant, with composite Gauss-Legendre on panels uniform in ln v,
doubling the panels until two successive results agree to 1e-12.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

from fastsim.physics.kinematics import THETA_MU_MAX_RAD, ElasticKinematics, invariants_kernel
from fastsim.physics.vacuum_polarization import RunningCoupling
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, GEV2_TO_UB, MUON_MASS_GEV

_ME = ELECTRON_MASS_GEV
_MMU = MUON_MASS_GEV


@njit(cache=True, nogil=True, inline="always")
def born_t2_dsigma_dt_kernel(beam_energy_gev, t_gev2):
    """t^2 dsigma/dt at fixed alpha(0) in ub (finite as t -> 0): the weight of events sampled
    with density ~ 1/t^2 needs no division by t."""
    s, lam, _ = invariants_kernel(beam_energy_gev)
    c = s - _MMU * _MMU - _ME * _ME
    return 4.0 * math.pi * ALPHA0 * ALPHA0 * GEV2_TO_UB / lam * (c * c + t_gev2 * (s + 0.5 * t_gev2))


@njit(cache=True, nogil=True)
def born_dsigma_dt_kernel(beam_energy_gev, t_gev2):
    """dsigma/dt at fixed alpha(0) in ub/GeV^2 (t < 0)."""
    return born_t2_dsigma_dt_kernel(beam_energy_gev, t_gev2) / (t_gev2 * t_gev2)


@njit(cache=True)
def _born_array(beam_energy_gev, t_gev2, out):
    for i in range(t_gev2.size):
        out[i] = born_dsigma_dt_kernel(beam_energy_gev, t_gev2[i])


@dataclass(frozen=True)
class ElasticCuts:
    """Cuts on the elastic final state; None means no cut on that side.

    Energies in GeV, angles in rad with respect to the incoming muon.
    """

    ee_min_gev: float | None = None
    ee_max_gev: float | None = None
    theta_e_min_rad: float | None = None
    theta_e_max_rad: float | None = None
    theta_mu_min_rad: float | None = None
    theta_mu_max_rad: float | None = None

    def __post_init__(self):
        for key, value in asdict(self).items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
                raise ValueError(f"{key} = {value!r} must be a finite number")
            object.__setattr__(self, key, float(value))
        for low, high in (("ee_min_gev", "ee_max_gev"), ("theta_e_min_rad", "theta_e_max_rad"), ("theta_mu_min_rad", "theta_mu_max_rad")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"empty cut window: {low} = {lo!r} is not below {high} = {hi!r}")

    def describe(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


def _out_of_range(key, value, low, high, low_open=False, high_open=False):
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    return ValueError(f"{key} = {value!r} is outside the allowed range {left}{low!r}, {high!r}{right}")


def _intersect(first, second):
    """Intersection of two sorted lists of disjoint closed intervals."""
    result = []
    for a_lo, a_hi in first:
        for b_lo, b_hi in second:
            lo, hi = max(a_lo, b_lo), min(a_hi, b_hi)
            if lo < hi:
                result.append((lo, hi))
    return sorted(result)


def t_intervals(kinematics: ElasticKinematics, cuts: ElasticCuts) -> list[tuple[float, float]]:
    """The disjoint t intervals (GeV^2, ascending) selected by `cuts` at this beam energy.

    Raises ValueError naming the cut when a cut lies outside its kinematic range, and when the
    cuts leave t -> 0 open (the cross section diverges there) or select nothing.
    """
    t_min = kinematics.t_min_gev2
    ee_max_kin = kinematics.electron_energy_max_gev
    intervals = [(t_min, 0.0)]
    if cuts.ee_min_gev is not None:
        if not _ME < cuts.ee_min_gev < ee_max_kin:
            raise _out_of_range("ee_min_gev", cuts.ee_min_gev, _ME, ee_max_kin, low_open=True, high_open=True)
        intervals = _intersect(intervals, [(t_min, float(kinematics.t_from_electron_energy(cuts.ee_min_gev)))])
    if cuts.ee_max_gev is not None:
        if not _ME < cuts.ee_max_gev:
            raise _out_of_range("ee_max_gev", cuts.ee_max_gev, _ME, ee_max_kin, low_open=True)
        if cuts.ee_max_gev < ee_max_kin:
            intervals = _intersect(intervals, [(float(kinematics.t_from_electron_energy(cuts.ee_max_gev)), 0.0)])
    if cuts.theta_e_min_rad is not None:
        if not 0.0 <= cuts.theta_e_min_rad < math.pi / 2:
            raise _out_of_range("theta_e_min_rad", cuts.theta_e_min_rad, 0.0, math.pi / 2, high_open=True)
        intervals = _intersect(intervals, [(float(kinematics.t_from_theta_e(cuts.theta_e_min_rad)), 0.0)])
    if cuts.theta_e_max_rad is not None:
        if not 0.0 < cuts.theta_e_max_rad < math.pi / 2:
            raise _out_of_range("theta_e_max_rad", cuts.theta_e_max_rad, 0.0, math.pi / 2, low_open=True, high_open=True)
        intervals = _intersect(intervals, [(t_min, float(kinematics.t_from_theta_e(cuts.theta_e_max_rad)))])
    if cuts.theta_mu_min_rad is not None:
        if not 0.0 <= cuts.theta_mu_min_rad < THETA_MU_MAX_RAD:
            raise _out_of_range("theta_mu_min_rad", cuts.theta_mu_min_rad, 0.0, THETA_MU_MAX_RAD, high_open=True)
        hard = float(kinematics.t_from_theta_mu(cuts.theta_mu_min_rad, "hard"))
        soft = float(kinematics.t_from_theta_mu(cuts.theta_mu_min_rad, "soft"))
        intervals = _intersect(intervals, [(hard, soft)])
    if cuts.theta_mu_max_rad is not None:
        if not 0.0 < cuts.theta_mu_max_rad:
            raise _out_of_range("theta_mu_max_rad", cuts.theta_mu_max_rad, 0.0, THETA_MU_MAX_RAD, low_open=True)
        if cuts.theta_mu_max_rad < THETA_MU_MAX_RAD:
            hard = float(kinematics.t_from_theta_mu(cuts.theta_mu_max_rad, "hard"))
            soft = float(kinematics.t_from_theta_mu(cuts.theta_mu_max_rad, "soft"))
            intervals = _intersect(intervals, [(t_min, hard), (soft, 0.0)])
    if not intervals:
        raise ValueError(f"the cuts {cuts.describe()} select no elastic events at beam_energy_gev = {kinematics.beam_energy_gev}")
    if intervals[-1][1] == 0.0:
        raise ValueError(
            "the cross section diverges at t -> 0: set ee_min_gev, theta_e_max_rad or theta_mu_min_rad "
            f"(cuts given: {cuts.describe() or 'none'})"
        )
    return intervals


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)


def integrate_over_t(function, t_lo_gev2, t_hi_gev2, rtol=1e-12, max_doublings=8):
    """Integral of a smooth, ~1/t^2 function over [t_lo, t_hi] (both < 0), in v = -1/t.

    Composite 16-point Gauss-Legendre on panels uniform in ln v; the number of panels doubles
    until two successive results agree to `rtol`.
    """
    v_lo, v_hi = -1.0 / t_lo_gev2, -1.0 / t_hi_gev2
    n_panels = max(4, int(math.ceil(math.log(v_hi / v_lo) / 0.5)))
    previous = None
    for _ in range(max_doublings):
        edges = np.exp(np.linspace(math.log(v_lo), math.log(v_hi), n_panels + 1))
        half = 0.5 * np.diff(edges)
        mid = 0.5 * (edges[1:] + edges[:-1])
        v = (mid[:, None] + half[:, None] * _GL_NODES[None, :]).reshape(-1)
        weights = (half[:, None] * _GL_WEIGHTS[None, :]).reshape(-1)
        value = float(np.sum(weights * function(-1.0 / v) / (v * v)))
        if previous is not None and abs(value - previous) <= rtol * abs(value):
            return value
        previous = value
        n_panels *= 2
    raise RuntimeError(f"integral over t in [{t_lo_gev2}, {t_hi_gev2}] did not converge to {rtol}")


@dataclass(frozen=True)
class ElasticCrossSection:
    """LO mu e -> mu e cross section at one beam energy with a given running of alpha."""

    beam_energy_gev: float
    running: RunningCoupling = RunningCoupling()

    def __post_init__(self):
        object.__setattr__(self, "kinematics", ElasticKinematics(self.beam_energy_gev))
        if not isinstance(self.running, RunningCoupling):
            raise ValueError(f"running = {self.running!r} is not a RunningCoupling")

    def born_dsigma_dt_ub(self, t_gev2):
        """dsigma/dt at fixed alpha(0) (ub/GeV^2)."""
        self.kinematics.check_t(t_gev2)
        t = np.asarray(t_gev2, dtype=np.float64)
        flat = np.ascontiguousarray(t.reshape(-1))
        out = np.empty_like(flat)
        _born_array(self.kinematics.beam_energy_gev, flat, out)
        return out.reshape(t.shape)

    def dsigma_dt_ub(self, t_gev2):
        """dsigma/dt with the running of alpha (ub/GeV^2)."""
        return self.born_dsigma_dt_ub(t_gev2) * self.running.factor(t_gev2)

    def dsigma_dtheta_e_ub(self, theta_e_rad):
        """dsigma/dtheta_e (ub/rad) along the elastic curve, |dt/dtheta_e| = 2 t^2 a^2 tan/cos^2 / lambda."""
        theta = np.asarray(theta_e_rad, dtype=np.float64)
        t = self.kinematics.t_from_theta_e(theta)
        a2 = (self.kinematics.beam_energy_gev + _ME) ** 2
        jacobian = 2.0 * t * t * a2 * np.tan(theta) / np.cos(theta) ** 2 / self.kinematics.lambda_gev4
        return self.dsigma_dt_ub(t) * jacobian

    def sigma_ub(self, cuts: ElasticCuts) -> float:
        """Integrated cross section (ub) inside `cuts`, relative accuracy better than 1e-10."""
        return sum(integrate_over_t(self.dsigma_dt_ub, lo, hi) for lo, hi in t_intervals(self.kinematics, cuts))
