"""Binned likelihood of a histogram given templates: -2 ln L and its analytic gradient.

What to use when:

- `BinnedLikelihood(data, templates, ...)` is the cost function of the fit: call it with the
  parameter vector (hadronic parameters, then `norm` unless the normalization is fixed, then the
  nuisance parameters, in the order of `.names`) for -2 ln L, and `.gradient(p)` for its
  gradient. It is what `systematics.fit` minimizes, samples and scans.
- cost = "poisson" (default): the Poisson deviance of Baker & Cousins, NIM 221 (1984) 437,
  chi2 = 2 sum (mu - n + n ln(n / mu)), right for any number of events per bin (also n = 0);
  cost = "chi2": sum (n - mu)^2 / sigma^2 with sigma^2 the data variances (Neyman), plus the
  templates' own MC variance with template_error=True; bins with sigma^2 = 0 are left out.
- normalization = "free" (the fit uses the shape only), "constrained" (a Gaussian constraint
  ((norm - 1) / luminosity_error_rel)^2 for a luminosity known to that relative error) or
  "fixed" (norm = 1: the luminosity is exact).
- Nuisance parameters of a TemplateSet get unit Gaussian constraints delta^2.

Expected events: mu = norm * templates(theta, delta) at `luminosity_inv_nb` (by default the
data histogram's own luminosity; with free normalization and no luminosity the templates are
scaled to the data's total). Bins where the nominal template predicts nothing are left out;
data events in them are an error (the templates cannot describe them).
"""

from __future__ import annotations

import math

import numpy as np

from fastsim.config import check_choice, check_range
from systematics.histogram import Histogram
from systematics.templates import TemplateSet

NORMALIZATIONS = ("free", "constrained", "fixed")
COSTS = ("poisson", "chi2")
#: Smallest expected count in the Poisson cost: a guard for a trial point that gives mu <= 0.
_TINY = 1e-300


def poisson_deviance(counts, expected):
    """Baker-Cousins chi2 = 2 sum (mu - n + n ln(n/mu)) (the term is mu for n = 0).

    Each term is computed as n (x - ln(1 + x)) with x = (mu - n)/n, so it keeps its relative
    precision however large n is: the plain form subtracts numbers of order n to get a
    difference of order 1, which at 1e9 events per bin leaves noise of order 1e-7 per bin in the
    cost, enough to spoil MINUIT's numerical second derivatives.
    """
    n = np.asarray(counts, dtype=np.float64)
    mu = np.maximum(np.asarray(expected, dtype=np.float64), _TINY)
    positive = n > 0
    safe_n = np.where(positive, n, 1.0)
    x = (mu - n) / safe_n
    return 2.0 * float(np.sum(np.where(positive, safe_n * (x - np.log1p(np.maximum(x, -1.0 + 1e-16))), mu)))


class BinnedLikelihood:
    """-2 ln L of `data` for the templates (see the module doc)."""

    def __init__(self, data: Histogram, templates, luminosity_inv_nb: float | None = None,
                 normalization: str = "free", luminosity_error_rel: float | None = None,
                 cost: str = "poisson", template_error: bool = False):
        if not isinstance(data, Histogram):
            raise ValueError(f"data = {data!r} is not a Histogram")
        self.templates = TemplateSet.wrap(templates)
        data.binning.require_same(self.templates.binning, "data", "templates")
        self.normalization = check_choice("normalization", normalization, NORMALIZATIONS)
        self.cost = check_choice("cost", cost, COSTS)
        self.template_error = bool(template_error)
        if self.template_error and self.cost != "chi2":
            raise ValueError("template_error = True needs cost = 'chi2' (the Poisson cost has no place for the templates' MC variance)")
        if normalization == "constrained":
            if luminosity_error_rel is None:
                raise ValueError("luminosity_error_rel is required with normalization = 'constrained'")
            self.luminosity_error_rel = check_range("luminosity_error_rel", luminosity_error_rel, 0.0, math.inf, low_open=True)
        else:
            self.luminosity_error_rel = None

        counts = np.asarray(data.values, dtype=np.float64).reshape(-1)
        if np.any(counts < 0):
            raise ValueError(f"data histogram has negative bin contents (smallest {counts.min()!r})")
        if not counts.sum() > 0:
            raise ValueError("data histogram is empty: every bin is zero")
        reference = self.templates.nominal.expected_flat(None, 1.0)
        self.used = np.flatnonzero(reference > 0)
        stray = counts[reference <= 0].sum()
        if stray > 0:
            raise ValueError(f"data has {stray:g} events in bins where the templates predict none; "
                             "rebin or use templates that cover the data")

        if luminosity_inv_nb is None:
            luminosity_inv_nb = data.luminosity_inv_nb
        if luminosity_inv_nb is None:
            if normalization != "free":
                raise ValueError(f"normalization = {normalization!r} needs the luminosity: pass luminosity_inv_nb or "
                                 "save it with the data histogram")
            luminosity_inv_nb = counts.sum() / reference.sum()
        self.luminosity_inv_nb = check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True)
        self._reference_used = reference[self.used] * self.luminosity_inv_nb

        self.hadronic_names = self.templates.parameter_names
        self.nuisance_names = self.templates.nuisance_names
        self.has_norm = normalization != "fixed"
        self.names = self.hadronic_names + (("norm",) if self.has_norm else ()) + self.nuisance_names
        self._n_had = len(self.hadronic_names)
        self.set_counts(counts, np.asarray(data.variances, dtype=np.float64).reshape(-1))

    def set_counts(self, counts, variances=None):
        """Replace the data counts (a pseudo-experiment on the same binning), flat or shaped."""
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        if counts.size != self.templates.binning.n_bins:
            raise ValueError(f"counts have {counts.size} bins, the templates {self.templates.binning.n_bins}")
        self.counts = counts[self.used]
        self.total = float(self.counts.sum())
        if self.cost == "chi2":
            variances = counts if variances is None else np.asarray(variances, dtype=np.float64).reshape(-1)
            sigma2 = variances[self.used].copy()
            if self.template_error:
                sigma2 += self.templates.nominal.mc_variance(None, self.luminosity_inv_nb).reshape(-1)[self.used]
            self._chi2_bins = sigma2 > 0
            self._inverse_sigma2 = np.where(self._chi2_bins, 1.0 / np.where(self._chi2_bins, sigma2, 1.0), 0.0)

    # --- parameters --------------------------------------------------------------------------

    def split(self, p):
        """(theta, norm, nuisances) of a parameter vector in the order of `names`."""
        p = np.asarray(p, dtype=np.float64)
        theta = p[: self._n_had]
        norm = p[self._n_had] if self.has_norm else 1.0
        nuisances = p[self._n_had + (1 if self.has_norm else 0):]
        return theta, norm, nuisances

    def start(self, theta=None) -> np.ndarray:
        """A starting point: theta (default the templates' reference), the norm that matches the
        data's total, nuisances at 0."""
        theta = self.templates.nominal.reference_parameters if theta is None else np.asarray(theta, dtype=np.float64)
        p = list(theta)
        if self.has_norm:
            mu = self.templates.nominal.expected_flat(theta, self.luminosity_inv_nb)[self.used]
            p.append(self.total / mu.sum())
        p.extend([0.0] * len(self.nuisance_names))
        return np.array(p)

    def expected(self, p) -> np.ndarray:
        """Expected events in the used bins."""
        theta, norm, nuisances = self.split(p)
        return norm * self.templates.expected_flat(theta, nuisances, self.luminosity_inv_nb)[self.used]

    # --- cost ---------------------------------------------------------------------------------

    def _constraint(self, norm, nuisances) -> float:
        value = float(np.dot(nuisances, nuisances))
        if self.normalization == "constrained":
            value += ((norm - 1.0) / self.luminosity_error_rel) ** 2
        return value

    def _data_term(self, mu) -> float:
        if self.cost == "poisson":
            return poisson_deviance(self.counts, mu)
        residual = self.counts - mu
        return float(np.sum(residual * residual * self._inverse_sigma2))

    def __call__(self, p) -> float:
        theta, norm, nuisances = self.split(p)
        return self._data_term(self.expected(p)) + self._constraint(norm, nuisances)

    def value_and_gradient(self, p):
        theta, norm, nuisances = self.split(p)
        shape, shape_gradient, nuisance_gradient = self.templates.expected_flat(
            theta, nuisances, self.luminosity_inv_nb, gradient=True)
        shape = shape[self.used]
        mu = norm * shape
        if self.cost == "poisson":
            weight = 2.0 * (1.0 - self.counts / np.maximum(mu, _TINY))
        else:
            weight = -2.0 * (self.counts - mu) * self._inverse_sigma2
        gradient = [norm * (shape_gradient[:, self.used] @ weight)]
        if self.has_norm:
            d_norm = float(shape @ weight)
            if self.normalization == "constrained":
                d_norm += 2.0 * (norm - 1.0) / self.luminosity_error_rel**2
            gradient.append([d_norm])
        if len(self.nuisance_names):
            gradient.append(norm * (nuisance_gradient[:, self.used] @ weight) + 2.0 * nuisances)
        return self._data_term(mu) + self._constraint(norm, nuisances), np.concatenate(gradient)

    def gradient(self, p) -> np.ndarray:
        return self.value_and_gradient(p)[1]

    def profile_norm(self, theta, nuisances=()) -> float:
        """The norm minimizing the cost at fixed theta and nuisances (closed forms: Poisson
        sum n / sum mu; chi2 sum n mu / sigma^2 over sum mu^2 / sigma^2; with the luminosity
        constraint, the positive root of the stationarity condition)."""
        shape = self.templates.expected_flat(theta, nuisances, self.luminosity_inv_nb)[self.used]
        if self.normalization == "fixed":
            return 1.0
        if self.cost == "poisson":
            s, n = float(shape.sum()), self.total
            if self.normalization == "free":
                return n / s
            # 2 (s - n/norm) + 2 (norm - 1)/e^2 = 0  ->  norm^2 + (s e^2 - 1) norm - n e^2 = 0
            e2 = self.luminosity_error_rel**2
            b = s * e2 - 1.0
            return 0.5 * (-b + math.sqrt(b * b + 4.0 * n * e2))
        a = float(np.sum(shape * shape * self._inverse_sigma2))
        c = float(np.sum(self.counts * shape * self._inverse_sigma2))
        if self.normalization == "free":
            return c / a
        e2 = self.luminosity_error_rel**2
        return (c + 1.0 / e2) / (a + 1.0 / e2)

    @property
    def n_bins(self) -> int:
        """Bins entering the cost."""
        return int(self._chi2_bins.sum()) if self.cost == "chi2" else int(self.used.size)

    @property
    def ndof(self) -> int:
        free = len(self.names) - len(self.nuisance_names) - (1 if self.normalization == "constrained" else 0)
        return self.n_bins - free
