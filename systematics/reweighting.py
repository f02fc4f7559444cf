"""Template reweighting: from the running used at generation to any hadronic-model parameters.

At leading order the cross section carries |1/(1 - Dalpha(t))|^2, so an event generated with the
reference running Dalpha_ref (t its true Born t) describes the parameters theta with the weight

    w' = w * (1 - Dalpha_ref(t))^2 / (1 - Dalpha_lep(t) - Dalpha_had(t; theta))^2

(REFERENCE.md, "Template reweighting at LO"). What to use when:

- `reweighting_factor(t, reference, model)`: the factor per event, exact (the independent
  reference the fast template path is tested against).
- `HadronicFamily(model)`: a hadronic model seen as a function of its parameter vector theta, in
  the order of `model.parameter_names`; `at(t)` returns a `FamilyAtPoints` that evaluates
  Dalpha_had and d Dalpha_had / d theta at fixed t points for any theta. The lepton-like model
  (K, M) has a numba path on the loop bracket of `fastsim.physics.vacuum_polarization` (a few
  microseconds for a few hundred points); other models go through their own
  `dalpha` / `gradient`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fastsim.physics.vacuum_polarization import (
    _SERIES,
    HadronicModel,
    LeptonLikeModel,
    RunningCoupling,
    _bracket_of_z,
    check_spacelike,
    dalpha_lep,
)


def reweighting_factor(t_gev2, reference: RunningCoupling, model: HadronicModel) -> np.ndarray:
    """(1 - Dalpha_ref(t))^2 / (1 - Dalpha_lep(t) - Dalpha_had(t; model))^2 per event (t < 0)."""
    t = check_spacelike(t_gev2, "true_t_gev2")
    return (1.0 - reference.dalpha(t)) ** 2 / (1.0 - dalpha_lep(t) - model.dalpha(t)) ** 2


@njit(cache=True, nogil=True)
def _lepton_like_kernel(k, m_gev2, t_gev2, series, dalpha, gradient):
    # Dalpha_had = K M B(z), z = -t/M; d/dK = M B, d/dM = K (B - z dB/dz) (as LeptonLikeModel.gradient).
    for i in range(t_gev2.size):
        z = -t_gev2[i] / m_gev2
        b, slope = _bracket_of_z(z, series)
        dalpha[i] = k * m_gev2 * b
        gradient[0, i] = m_gev2 * b
        gradient[1, i] = k * (b - z * slope)


class HadronicFamily:
    """The parametric family of a hadronic model: theta -> model, with its physical range.

    Parameters
    ----------
    model : HadronicModel
        Any model with free parameters; its own values are the family's reference point.
    """

    def __init__(self, model: HadronicModel):
        if not isinstance(model, HadronicModel):
            raise ValueError(f"model = {model!r} is not a HadronicModel")
        if not model.parameter_names:
            raise ValueError(f"hadronic model {model.name!r} has no free parameters to fit")
        self.prototype = model
        self.names = tuple(model.parameter_names)
        self.reference = np.array([model.parameters[n] for n in self.names], dtype=np.float64)
        self.lepton_like = type(model) is LeptonLikeModel

    @property
    def limits(self) -> list[tuple[float, float]]:
        """Physical range of each parameter (M_gev2 > 0 for the lepton-like model)."""
        return [(0.0, math.inf) if n == "M_gev2" else (-math.inf, math.inf) for n in self.names]

    def check(self, theta) -> np.ndarray:
        """theta as a float64 array; ValueError naming a parameter outside its physical range."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (len(self.names),):
            raise ValueError(f"parameters have shape {theta.shape}, expected ({len(self.names)},) for {list(self.names)}")
        for name, value, (low, high) in zip(self.names, theta.tolist(), self.limits):
            if not math.isfinite(value):
                raise ValueError(f"{name} = {value!r} must be a finite number")
            if low == 0.0 and not value > 0.0:
                raise ValueError(f"{name} = {value!r} is outside the allowed range (0.0, inf)")
        return theta

    def model(self, theta) -> HadronicModel:
        theta = self.check(theta)
        return self.prototype.with_parameters(**{n: float(v) for n, v in zip(self.names, theta)})

    def at(self, t_gev2) -> "FamilyAtPoints":
        return FamilyAtPoints(self, t_gev2)


class FamilyAtPoints:
    """Dalpha_had(t; theta) and its theta-gradient at fixed points t (GeV^2, < 0)."""

    def __init__(self, family: HadronicFamily, t_gev2):
        self.family = family
        self.t_gev2 = np.ascontiguousarray(check_spacelike(t_gev2).reshape(-1))
        self._dalpha = np.empty(self.t_gev2.size)
        self._gradient = np.empty((len(family.names), self.t_gev2.size))

    def evaluate(self, theta):
        """(Dalpha_had, gradient) with shapes (n_points,) and (n_parameters, n_points); the
        arrays are reused by the next call (copy them to keep them)."""
        theta = self.family.check(theta)
        if self.family.lepton_like:
            _lepton_like_kernel(theta[0], theta[1], self.t_gev2, _SERIES, self._dalpha, self._gradient)
        else:
            model = self.family.model(theta)
            self._dalpha[:] = model.dalpha(self.t_gev2)
            self._gradient[:] = model.gradient(self.t_gev2)
        return self._dalpha, self._gradient
