"""Pseudo-experiments: Poisson toys of the expected histogram, fitted like data.

What to use when: `run_toys(templates, luminosity_inv_nb, n_toys, seed)` answers "what error
on a_mu^HLO does this luminosity give, and are the fit's errors right?". It fits the Asimov
data set (the expected histogram itself: closure, and the expected statistical error), then
`n_toys` Poisson fluctuations of it, and reports pulls (fitted - true) / error of K, M and
a_mu^HLO and the 68 % coverage of the a_mu^HLO error. `n_mass_undetermined` counts the toys whose
lepton-like fit ran to M far above the templates' |t| range, where M is not determined and the
a_mu^HLO error is not reliable (`systematics.fit.MASS_LINEAR_RATIO`); fitting with
fixed={"M_gev2": ...} avoids them. `ToyResult.to_dict()` is the JSON of `muone toys`.

Toy k draws its counts with `np.random.default_rng(fastsim.rng.derive_seed(seed, k))`, so any
toy can be redone alone (`first_toy`), and results do not depend on `workers` (processes, each
fitting a contiguous block of toys). A toy whose fit is invalid is counted in `n_failed` and left
out of the summaries, never silently used.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from fastsim.config import check_integer, check_range
from fastsim.physics.amu import amu_hlo, amu_hlo_gradient
from fastsim.rng import derive_seed, validate_seed
from systematics.fit import fit_minuit
from systematics.histogram import Histogram
from systematics.likelihood import BinnedLikelihood
from systematics.result import FitError, _plain
from systematics.templates import TemplateSet

_COVERAGE_1SIGMA = math.erf(1.0 / math.sqrt(2.0))  # 0.6827


@dataclass(frozen=True, eq=False)
class ToyResult:
    """Per-toy fit outcomes (arrays over toys, NaN where a fit failed) and their summaries."""

    names: tuple
    truth: dict
    amu_true: float
    luminosity_inv_nb: float
    seeds: np.ndarray
    values: np.ndarray
    errors: np.ndarray
    amu: np.ndarray
    amu_error: np.ndarray
    valid: np.ndarray
    asimov: dict
    settings: dict = field(default_factory=dict)
    mass_undetermined: np.ndarray | None = None

    @property
    def n_toys(self) -> int:
        return int(self.valid.size)

    @property
    def n_failed(self) -> int:
        return int(np.count_nonzero(~self.valid))

    @property
    def fixed(self) -> dict:
        """{name: value} of the parameters held fixed in every fit (`fixed` of the fit options)."""
        return dict(self.settings.get("fit_options", {}).get("fixed") or {})

    def pulls(self, name: str) -> np.ndarray:
        """(fitted - true) / fitted error of `name` ("amu" for a_mu^HLO) over the valid toys."""
        if name == "amu":
            return ((self.amu - self.amu_true) / self.amu_error)[self.valid]
        if name in self.fixed:
            raise ValueError(f"{name} was held fixed at {self.fixed[name]!r} in the fits: it has no pulls")
        i = self.names.index(name)
        return ((self.values[:, i] - self.truth[name]) / self.errors[:, i])[self.valid]

    def coverage(self, name: str = "amu") -> float:
        """Fraction of valid toys whose +-1 error interval holds the truth."""
        return float(np.mean(np.abs(self.pulls(name)) <= 1.0))

    def summary(self) -> dict:
        amu = self.amu[self.valid]
        pulls = self.pulls("amu")
        out = {
            "n_toys": self.n_toys, "n_failed": self.n_failed, "luminosity_inv_nb": self.luminosity_inv_nb,
            "amu_true": self.amu_true, "amu_mean": float(np.mean(amu)), "amu_std": float(np.std(amu, ddof=1)),
            "amu_stat_error_mean": float(np.mean(self.amu_error[self.valid])),
            "pull_mean": float(np.mean(pulls)), "pull_std": float(np.std(pulls, ddof=1)),
            "coverage_68": self.coverage("amu"), "coverage_expected": _COVERAGE_1SIGMA,
            "n_mass_undetermined": int(np.count_nonzero(self.mass_undetermined)) if self.mass_undetermined is not None else 0,
            "asimov_amu": self.asimov["amu"], "asimov_amu_error": self.asimov["amu_error"],
            "truth": dict(self.truth),
            "parameters": {},
        }
        for name in self.names:
            if name in self.fixed:
                out["parameters"][name] = {"fixed": self.fixed[name]}
                continue
            p = self.pulls(name)
            out["parameters"][name] = {"pull_mean": float(np.mean(p)), "pull_std": float(np.std(p, ddof=1)),
                                       "coverage_68": float(np.mean(np.abs(p) <= 1.0)),
                                       "asimov": self.asimov["values"][name], "asimov_error": self.asimov["errors"][name]}
        return out

    def to_dict(self) -> dict:
        return _plain({**self.summary(), "settings": self.settings, "asimov": self.asimov})


# --- one worker's share --------------------------------------------------------------------

_WORKER = {}


def _init_worker(likelihood, expected, truth_theta, fit_options):
    _WORKER.update(likelihood=likelihood, expected=expected, truth=truth_theta, options=fit_options)


def _fit_block(seed: int, toys: range):
    likelihood = _WORKER["likelihood"]
    expected, truth, options = _WORKER["expected"], _WORKER["truth"], _WORKER["options"]
    family = likelihood.templates.family
    n_par = len(likelihood.names)
    rows = []
    for toy in toys:
        toy_seed = derive_seed(seed, toy)
        counts = np.random.default_rng(toy_seed).poisson(expected).astype(np.float64)
        row = {"seed": toy_seed, "values": np.full(n_par, np.nan), "errors": np.full(n_par, np.nan),
               "amu": math.nan, "amu_error": math.nan, "valid": False, "mass_undetermined": False}
        if counts.sum() > 0:
            likelihood.set_counts(counts)
            try:
                result = fit_minuit(likelihood, truth, strict=True, **options)
            except (FitError, ValueError):
                result = None
            if result is not None:
                model = family.model(result.theta)
                gradient = amu_hlo_gradient(model)
                row.update(values=result.values, errors=result.errors, amu=amu_hlo(model),
                           amu_error=math.sqrt(float(gradient @ result.theta_covariance @ gradient)), valid=True,
                           mass_undetermined=result.details.get("mass_undetermined", False))
        rows.append(row)
    return rows


def run_toys(templates, luminosity_inv_nb: float, n_toys: int, seed: int, truth=None, normalization: str = "free",
             luminosity_error_rel: float | None = None, cost: str = "poisson", workers: int = 1, first_toy: int = 0,
             **fit_options) -> ToyResult:
    """Asimov fit and `n_toys` Poisson pseudo-experiments at `luminosity_inv_nb` (see the module doc).

    Parameters
    ----------
    templates : Template or TemplateSet
        Generates the toys (at `truth`, nuisances 0, norm 1) and fits them.
    luminosity_inv_nb : float
        Integrated luminosity of each pseudo-experiment (nb^-1).
    n_toys, seed : int
        Toys first_toy .. first_toy + n_toys - 1 of this seed.
    truth : array or dict, optional
        True hadronic parameters (default the templates' reference point).
    normalization, luminosity_error_rel, cost
        As in `systematics.likelihood.BinnedLikelihood`.
    workers : int
        Processes to spread the toys over (results do not depend on it).
    **fit_options
        Passed to `systematics.fit.fit_minuit` (strategy, tolerance, fixed, ...).
    """
    templates = TemplateSet.wrap(templates)
    luminosity = check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True)
    n_toys = check_integer("n_toys", n_toys, 1)
    first_toy = check_integer("first_toy", first_toy, 0)
    workers = check_integer("workers", workers, 1, 1024)
    seed = validate_seed(seed)
    theta = templates.nominal._theta(truth)
    family = templates.family
    expected = templates.expected_flat(theta, np.zeros(len(templates.nuisance_names)), luminosity)
    asimov_data = Histogram(templates.binning, expected.reshape(templates.binning.shape), luminosity_inv_nb=luminosity)
    likelihood = BinnedLikelihood(asimov_data, templates, luminosity, normalization, luminosity_error_rel, cost)
    asimov = fit_minuit(likelihood, theta, strict=True, **fit_options)
    truth_values = dict(zip(likelihood.names, np.concatenate([
        theta, [1.0] if likelihood.has_norm else [], np.zeros(len(templates.nuisance_names))])))
    asimov_summary = {"values": asimov.parameters, "errors": asimov.parameter_errors, "amu": asimov.amu.value,
                      "amu_error": asimov.amu.error, "fraction_in_range": asimov.amu.fraction_in_range,
                      "covariance": asimov.covariance.tolist(), "status": asimov.status}

    toys = range(first_toy, first_toy + n_toys)
    if workers == 1:
        _init_worker(likelihood, expected, theta, fit_options)
        rows = _fit_block(seed, toys)
    else:
        blocks = [toys[i::workers] for i in range(workers)]  # interleaved: fits of equal cost
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(likelihood, expected, theta, fit_options)) as pool:
            parts = list(pool.map(_fit_block, [seed] * workers, blocks))
        rows = [None] * n_toys
        for block, part in zip(blocks, parts):
            for toy, row in zip(block, part):
                rows[toy - first_toy] = row
    return ToyResult(
        names=likelihood.names, truth=truth_values, amu_true=amu_hlo(family.model(theta)), luminosity_inv_nb=luminosity,
        seeds=np.array([r["seed"] for r in rows], dtype=np.uint64),
        values=np.array([r["values"] for r in rows]), errors=np.array([r["errors"] for r in rows]),
        amu=np.array([r["amu"] for r in rows]), amu_error=np.array([r["amu_error"] for r in rows]),
        valid=np.array([r["valid"] for r in rows]), asimov=asimov_summary,
        mass_undetermined=np.array([r["mass_undetermined"] for r in rows]),
        settings={"seed": seed, "first_toy": first_toy, "normalization": normalization,
                  "luminosity_error_rel": luminosity_error_rel, "cost": cost, "workers": workers,
                  "templates": templates.describe(), "fit_options": dict(fit_options)},
    )
