"""The a_mu^HLO master integral for any hadronic vacuum-polarization model.

    a_mu^HLO = (alpha/pi) int_0^1 dx (1 - x) Dalpha_had(t(x)),   t(x) = -x^2 m_mu^2 / (1 - x)

(Lautrup, Peterman, de Rafael, Phys. Rep. 3 (1972) 193; Carloni Calame et al., Phys. Lett. B 746
(2015) 325). MUonE measures Dalpha_had at t >= t_min of its beam energy, i.e. for x below
`x_max(beam_energy_gev)`; `fraction_in_range` is the share of the integral from there.

The integral is done in w = ln(x / (1 - x)), which spreads the structure at x ~ m_e/m_mu, x -> 0
and x -> 1 over a few units of w, with composite 16-point Gauss-Legendre panels doubled until
two results agree to 1e-12 (x and 1 - x are both computed from w, so t(x) keeps its precision
as x -> 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastsim.physics.kinematics import ElasticKinematics
from fastsim.physics.vacuum_polarization import HadronicModel, TabulatedModel
from fastsim.units import ALPHA0, MUON_MASS_GEV

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
_W_LOWEST = -40.0  # the integrand falls like e^(3w) below: e^-120 is far below any precision
_W_HIGHEST = 40.0  # and like w e^(-2w) above


def t_from_x(x):
    """t(x) = -x^2 m_mu^2 / (1 - x) (GeV^2) for 0 <= x < 1."""
    x = np.asarray(x, dtype=np.float64)
    return -(x * x) * MUON_MASS_GEV**2 / (1.0 - x)


def x_from_t(t_gev2):
    """Inverse of t(x): the root in [0, 1) of m^2 x^2 + tau x - tau = 0, tau = -t."""
    tau = -np.asarray(t_gev2, dtype=np.float64)
    m2 = MUON_MASS_GEV**2
    # x = (-tau + sqrt(tau^2 + 4 m^2 tau)) / (2 m^2), written without cancellation.
    return 2.0 * tau / (tau + np.sqrt(tau * tau + 4.0 * m2 * tau))


def x_max(beam_energy_gev) -> float:
    """Largest x reached by MUonE at this beam energy: x(t_min), t_min = -lambda/s."""
    return float(x_from_t(ElasticKinematics(beam_energy_gev).t_min_gev2))


def _w_from_t(t_gev2):
    x = x_from_t(t_gev2)
    return np.log(x / (1.0 - x))


def _integrate_in_w(integrand_of_t, w_high, breakpoints_gev2=(), rtol=1e-12, max_doublings=10):
    """(alpha/pi) int dx (1 - x) f(t(x)) over x in [0, x(w_high)] for vector-valued f.

    Panel edges also go at `breakpoints_gev2`, where f is not smooth (the nodes of a table).
    """
    n_panels = max(8, int(math.ceil((w_high - _W_LOWEST) / 1.0)))
    kinks = _w_from_t(np.asarray(breakpoints_gev2, dtype=np.float64))
    kinks = kinks[(kinks > _W_LOWEST) & (kinks < w_high)]
    previous = None
    for _ in range(max_doublings):
        edges = np.union1d(np.linspace(_W_LOWEST, w_high, n_panels + 1), kinks)
        half = 0.5 * np.diff(edges)
        mid = 0.5 * (edges[1:] + edges[:-1])
        w = (mid[:, None] + half[:, None] * _GL_NODES[None, :]).reshape(-1)
        weights = (half[:, None] * _GL_WEIGHTS[None, :]).reshape(-1)
        x = 1.0 / (1.0 + np.exp(-w))
        one_minus_x = 1.0 / (1.0 + np.exp(w))
        t = -(x * x) * MUON_MASS_GEV**2 / one_minus_x
        # dx = x (1 - x) dw
        value = ALPHA0 / math.pi * np.sum(weights * x * one_minus_x**2 * integrand_of_t(t), axis=-1)
        if previous is not None and np.all(np.abs(value - previous) <= rtol * np.abs(value) + 1e-300):
            return value
        previous = value
        n_panels *= 2
    raise RuntimeError(f"the a_mu integral did not converge to {rtol}")


def _w_upper(model: HadronicModel, x_upper: float) -> float:
    if not 0.0 < x_upper <= 1.0:
        raise ValueError(f"x_upper = {x_upper!r} is outside the allowed range (0, 1]")
    if isinstance(model, TabulatedModel):
        x_upper = min(x_upper, float(x_from_t(model.t_min_gev2)))
    if x_upper >= 1.0:
        return _W_HIGHEST
    return min(_W_HIGHEST, math.log(x_upper / (1.0 - x_upper)))


def integration_limit(model: HadronicModel) -> float:
    """Upper x of the a_mu integral for this model: 1, or x(t) of a table's most negative t."""
    w = _w_upper(model, 1.0)
    return 1.0 if w >= _W_HIGHEST else 1.0 / (1.0 + math.exp(-w))


def amu_hlo(model: HadronicModel, x_upper: float = 1.0) -> float:
    """a_mu^HLO of `model`, integrated over x in [0, x_upper].

    A tabulated model is integrated only up to x(t) of its most negative t (see
    `integration_limit`): the table defines its own range and nothing is extrapolated.
    """
    return float(_integrate_in_w(model.dalpha, _w_upper(model, x_upper), model.breakpoints_gev2()))


def amu_hlo_gradient(model: HadronicModel) -> np.ndarray:
    """d a_mu^HLO / d parameter, in the order of `model.parameter_names`."""
    if not model.parameter_names:
        return np.zeros(0)
    return np.atleast_1d(_integrate_in_w(model.gradient, _w_upper(model, 1.0), model.breakpoints_gev2()))


def amu_hlo_error(model: HadronicModel, covariance) -> float:
    """Linear error propagation sqrt(g^T C g) with g = amu_hlo_gradient(model)."""
    gradient = amu_hlo_gradient(model)
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (gradient.size, gradient.size):
        raise ValueError(
            f"covariance has shape {cov.shape}, expected {(gradient.size, gradient.size)} for parameters {list(model.parameter_names)}"
        )
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=0.0):
        raise ValueError("covariance must be symmetric")
    variance = float(gradient @ cov @ gradient)
    if variance < 0:
        raise ValueError(f"covariance is not positive semi-definite: g^T C g = {variance!r}")
    return math.sqrt(variance)


@dataclass(frozen=True)
class AmuSummary:
    """a_mu^HLO of a model and the share of it inside the x range of a beam energy."""

    amu: float
    x_upper: float
    beam_energy_gev: float
    x_max: float
    fraction_in_range: float

    @property
    def amu_1e10(self) -> float:
        return self.amu * 1e10


def amu_summary(model: HadronicModel, beam_energy_gev: float = 160.0) -> AmuSummary:
    """a_mu^HLO, the integral's upper x, and the fraction from x <= x_max(beam_energy_gev)."""
    total = amu_hlo(model)
    reach = x_max(beam_energy_gev)
    inside = amu_hlo(model, x_upper=reach)
    return AmuSummary(
        amu=total,
        x_upper=integration_limit(model),
        beam_energy_gev=float(beam_energy_gev),
        x_max=reach,
        fraction_in_range=inside / total if total != 0 else math.nan,
    )
