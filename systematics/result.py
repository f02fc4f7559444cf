"""Fit results and a_mu^HLO from fitted parameters.

What to use when:

- `FitResult` is what every fit method returns: values, errors and covariance of all
  parameters, the cost at the minimum, a validity flag with a status text, and `amu` (an
  `AmuResult`). `to_dict()` gives JSON-able output. A fit that did not converge is returned only
  on request (`strict=False`) and then has `valid = False`: `require_valid()` raises `FitError`,
  and so does reading `amu` of an invalid result.
- `amu_from_parameters(family, theta, covariance, beam_energy_gev)` is the a_mu^HLO extraction:
  the master integral of the fitted model (`fastsim.physics.amu.amu_hlo`), its error by linear
  propagation of the hadronic-parameter covariance (`amu_hlo_error`), and the fraction of the
  integral from the x range that MUonE measures at this beam energy (`amu_summary`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fastsim.physics.amu import amu_hlo_error, amu_summary
from systematics.reweighting import HadronicFamily


class FitError(RuntimeError):
    """A fit did not converge or gave no valid covariance; the message says why."""


@dataclass(frozen=True)
class AmuResult:
    """a_mu^HLO of the fitted model, its statistical error, and the share of it that is measured."""

    value: float
    error: float
    fraction_in_range: float
    x_max: float
    beam_energy_gev: float
    posterior: dict | None = None

    def to_dict(self) -> dict:
        out = {"amu": self.value, "amu_error": self.error, "amu_1e10": self.value * 1e10,
               "amu_error_1e10": self.error * 1e10, "fraction_in_range": self.fraction_in_range,
               "x_max": self.x_max, "beam_energy_gev": self.beam_energy_gev}
        if self.posterior is not None:
            out["posterior"] = dict(self.posterior)
        return out


def amu_from_parameters(family: HadronicFamily, theta, covariance, beam_energy_gev: float) -> AmuResult:
    """a_mu^HLO, its error from the (hadronic-parameter) covariance and the measured fraction."""
    model = family.model(theta)
    summary = amu_summary(model, beam_energy_gev)
    error = amu_hlo_error(model, np.asarray(covariance, dtype=np.float64))
    return AmuResult(summary.amu, error, summary.fraction_in_range, summary.x_max, summary.beam_energy_gev)


def _plain(value):
    """JSON-able: numpy to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in np.asarray(value, dtype=object).tolist()] if isinstance(value, np.ndarray) else [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True, eq=False)
class FitResult:
    """Outcome of one fit (see the module doc). `covariance` is over all `names`; `cost` is
    -2 ln L (Baker-Cousins chi2) or chi2 at the minimum, with `ndof` degrees of freedom."""

    method: str
    names: tuple
    values: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray
    cost: float
    ndof: int
    valid: bool
    status: str
    n_calls: int
    hadronic_names: tuple
    family: HadronicFamily = field(repr=False)
    beam_energy_gev: float = 160.0
    details: dict = field(default_factory=dict)
    _amu: AmuResult | None = field(default=None, repr=False)

    def require_valid(self) -> "FitResult":
        if not self.valid:
            raise FitError(f"{self.method} fit is not valid: {self.status}")
        return self

    @property
    def parameters(self) -> dict:
        return {n: float(v) for n, v in zip(self.names, self.values)}

    @property
    def parameter_errors(self) -> dict:
        return {n: float(e) for n, e in zip(self.names, self.errors)}

    @property
    def theta(self) -> np.ndarray:
        return self.values[: len(self.hadronic_names)].copy()

    @property
    def theta_covariance(self) -> np.ndarray:
        k = len(self.hadronic_names)
        return self.covariance[:k, :k].copy()

    def correlation(self, a: str, b: str) -> float:
        """Correlation coefficient of parameters a and b; NaN if one was held fixed (no variance)."""
        i, j = self.names.index(a), self.names.index(b)
        variances = self.covariance[i, i] * self.covariance[j, j]
        if not variances > 0:
            return math.nan
        return float(self.covariance[i, j] / math.sqrt(variances))

    @property
    def amu(self) -> AmuResult:
        """a_mu^HLO from the fitted hadronic parameters (FitError for an invalid fit)."""
        self.require_valid()
        if self._amu is None:
            object.__setattr__(self, "_amu", amu_from_parameters(self.family, self.theta, self.theta_covariance,
                                                                 self.beam_energy_gev))
        return self._amu

    def to_dict(self) -> dict:
        out = {
            "method": self.method, "valid": self.valid, "status": self.status,
            "parameters": self.parameters, "errors": self.parameter_errors,
            "names": list(self.names), "covariance": self.covariance.tolist(),
            "cost": self.cost, "ndof": self.ndof, "n_calls": self.n_calls,
            "model": self.family.prototype.name,
        }
        if len(self.hadronic_names) == 2 and math.isfinite(self.correlation(*self.hadronic_names)):
            out["correlation_" + "_".join(self.hadronic_names)] = self.correlation(*self.hadronic_names)
        if self.valid:
            out.update(self.amu.to_dict())
        out["details"] = self.details
        return _plain(out)
