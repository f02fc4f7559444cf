"""Fits of the hadronic running to a histogram: MINUIT, the design study's grid, or MCMC.

What to use when:

- `fit_histogram(data, templates, method=...)` is the entry point: it builds the
  `BinnedLikelihood` and dispatches. It returns a `FitResult` (with `amu`, the a_mu^HLO
  extraction) and raises `FitError` when the fit does not converge (pass strict=False to get
  the invalid result back, flagged, instead).
- method = "minuit" (default): MIGRAD with the analytic gradient of the likelihood, then HESSE;
  the result is valid only if MIGRAD converged (EDM below goal, no call limit), the covariance
  is accurate and positive definite and no parameter sits at a limit. The physical range
  M > 0 is a MINUIT limit.
- method = "grid": the design study's method. -2 ln L on a grid in the two hadronic parameters
  (the normalization profiled in closed form at each point), a paraboloid fitted to the points
  near the minimum gives the minimum and the covariance (Delta chi2 = 1). The grid is centred
  on the start point with a width from the expected (Fisher) errors and re-centred once. No
  nuisance parameters.
- method = "mcmc": emcee posterior sampling (`systematics.mcmc.sample_posterior`), started at
  the MINUIT minimum.
- `fit_minuit(likelihood, ...)` and `fit_grid(likelihood, ...)` work on a likelihood directly
  (pseudo-experiments reuse one likelihood and change its counts).
"""

from __future__ import annotations

import math

import numpy as np
from iminuit import Minuit

from fastsim.config import check_choice, check_integer, check_range
from systematics.likelihood import BinnedLikelihood
from systematics.result import FitError, FitResult

METHODS = ("minuit", "grid", "mcmc")


def fit_histogram(data, templates, method: str = "minuit", luminosity_inv_nb: float | None = None,
                  normalization: str = "free", luminosity_error_rel: float | None = None, cost: str = "poisson",
                  template_error: bool = False, start=None, strict: bool = True, **options) -> FitResult:
    """Fit the hadronic parameters (and norm, nuisances) of `templates` to the histogram `data`.

    Parameters
    ----------
    data : Histogram
        Observed counts; its binning (axis names and edges) must be that of the templates.
    templates : Template or TemplateSet
    method : {"minuit", "grid", "mcmc"}
    luminosity_inv_nb, normalization, luminosity_error_rel, cost, template_error
        See `systematics.likelihood.BinnedLikelihood`.
    start : array or dict, optional
        Starting hadronic parameters (default: the templates' reference point).
    strict : bool
        Raise FitError for an invalid fit (default) instead of returning it flagged.
    **options
        Passed to `fit_minuit`, `fit_grid` or `systematics.mcmc.sample_posterior`.
    """
    method = check_choice("method", method, METHODS)
    likelihood = BinnedLikelihood(data, templates, luminosity_inv_nb, normalization, luminosity_error_rel, cost,
                                  template_error)
    if isinstance(start, dict):
        start = likelihood.templates.nominal._theta(start)
    if method == "minuit":
        return fit_minuit(likelihood, start, strict=strict, **options)
    if method == "grid":
        return fit_grid(likelihood, start, strict=strict, **options)
    from systematics.mcmc import sample_posterior

    return sample_posterior(likelihood, start, strict=strict, **options)


def _result(likelihood, method, values, covariance, cost, valid, status, n_calls, details=None, n_fixed=0) -> FitResult:
    covariance = np.asarray(covariance, dtype=np.float64)
    errors = np.sqrt(np.where(np.diag(covariance) >= 0, np.diag(covariance), np.nan))
    return FitResult(method, likelihood.names, np.asarray(values, dtype=np.float64), errors, covariance, float(cost),
                     likelihood.ndof + n_fixed, bool(valid), status, int(n_calls), likelihood.hadronic_names,
                     likelihood.templates.family, likelihood.templates.beam_energy_gev, details or {})


def _finish(result: FitResult, strict: bool) -> FitResult:
    if strict and not result.valid:
        raise FitError(f"{result.method} fit did not converge: {result.status}")
    return result


def _minuit_status(m: Minuit) -> tuple[bool, str]:
    fmin = m.fmin
    problems = []
    if fmin.is_above_max_edm:
        problems.append(f"EDM {fmin.edm:.3g} above goal {fmin.edm_goal:.3g}")
    if fmin.has_reached_call_limit:
        problems.append("call limit reached")
    if not fmin.has_valid_parameters:
        problems.append("invalid parameters")
    if fmin.hesse_failed:
        problems.append("HESSE failed")
    if not fmin.has_covariance:
        problems.append("no covariance")
    elif not fmin.has_accurate_covar:
        problems.append("covariance not accurate")
    if fmin.has_made_posdef_covar:
        problems.append("covariance forced positive definite")
    notes = []
    for par in m.params:
        if par.is_fixed or (par.lower_limit is None and par.upper_limit is None):
            continue
        distance = min(par.value - (par.lower_limit if par.lower_limit is not None else -math.inf),
                       (par.upper_limit if par.upper_limit is not None else math.inf) - par.value)
        if distance <= 1e-3 * par.error:
            problems.append(f"{par.name} = {par.value:.6g} is at its limit")
        elif distance < par.error:
            notes.append(f"{par.name} is within one error of its limit: its errors are approximate")
    if not np.isfinite(fmin.fval):
        problems.append("cost not finite")
    valid = fmin.is_valid and not problems
    if not valid:
        return False, "; ".join(problems) or "MIGRAD reports an invalid minimum"
    return True, "; ".join(["converged"] + notes)


def fit_minuit(likelihood: BinnedLikelihood, start=None, strict: bool = True, strategy: int = 1,
               tolerance: float = 0.1, max_calls: int = 0, hesse: bool = True, fixed: dict | None = None) -> FitResult:
    """MIGRAD (+ HESSE) of `likelihood` with its analytic gradient; see the module doc.

    `start` is the hadronic part of the starting point (default the templates' reference);
    the norm starts where the totals match, nuisances at 0. `fixed` maps parameter names to
    values held fixed (e.g. {"M_gev2": 0.0525} for a one-parameter fit of a short run); a fixed
    parameter has zero variance in the covariance.
    """
    check_integer("strategy", strategy, 0, 2)
    check_range("tolerance", tolerance, 0.0, math.inf, low_open=True)
    p0 = likelihood.start(start)
    family = likelihood.templates.family
    fixed = dict(fixed or {})
    for name, value in fixed.items():
        if name not in likelihood.names:
            raise ValueError(f"fixed parameter {name!r} is not one of {list(likelihood.names)}")
        p0[likelihood.names.index(name)] = check_range(f"fixed {name}", value)
    family.check(p0[: len(likelihood.hadronic_names)])

    cache = {}

    def value_and_gradient(p):
        key = p.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = likelihood.value_and_gradient(p)
        return cache[key]

    def cost(p):
        return value_and_gradient(np.asarray(p, dtype=np.float64))[0]

    def gradient(p):
        return value_and_gradient(np.asarray(p, dtype=np.float64))[1]

    m = Minuit(cost, p0, grad=gradient, name=list(likelihood.names))
    m.errordef = Minuit.LEAST_SQUARES  # the costs are -2 ln L or chi2
    m.strategy = strategy
    m.tol = tolerance
    m.print_level = 0
    for name, (low, high) in zip(likelihood.hadronic_names, family.limits):
        if low == 0.0:
            m.limits[name] = (0.0, None)
    if likelihood.has_norm:
        m.limits["norm"] = (0.0, None)
    m.errors = _initial_steps(likelihood, p0)
    for name in fixed:
        m.fixed[name] = True
    m.migrad(ncall=max_calls or None)
    if hesse and m.valid:
        m.hesse()
    valid, status = _minuit_status(m)
    details = {"edm": m.fmin.edm, "n_gradient_calls": m.ngrad, **({"fixed": fixed} if fixed else {})}
    undetermined = _undetermined_mass(likelihood, np.array(m.values), fixed)
    if valid and undetermined:
        status += "; " + undetermined
        details["mass_undetermined"] = True
    covariance = np.array(m.covariance) if m.covariance is not None else np.full((len(p0),) * 2, np.nan)
    result = _result(likelihood, "minuit", np.array(m.values), covariance, m.fval, valid, status, m.nfcn, details,
                     n_fixed=len(fixed))
    return _finish(result, strict)


#: Above this multiple of the templates' largest |t| the lepton-like running is linear in t to
#: ~1 % (Dalpha_had = K M B(z), z = -t/M, B = z/15 - z^2/140 + ...: the second term is 0.107 z of
#: the first), and the data no longer determine M.
MASS_LINEAR_RATIO = 10.0


def _undetermined_mass(likelihood, values, fixed) -> str:
    """A note when a lepton-like fit ran to M above MASS_LINEAR_RATIO times the templates' largest
    |t|: along M -> infinity the cost tends to that of linear running, -K t / 15, so a sample
    whose fluctuation prefers less curvature than the truth puts its minimum far out there, and
    the linearized errors of M and a_mu^HLO no longer describe the spread (toys show it)."""
    family = likelihood.templates.family
    if not family.lepton_like or "M_gev2" in fixed:
        return ""
    mass = float(values[likelihood.names.index("M_gev2")])
    largest_t = float(np.max(-likelihood.templates.nominal.node_t_gev2))
    if not mass > MASS_LINEAR_RATIO * largest_t:
        return ""
    return (f"M_gev2 = {mass:.4g} is over {MASS_LINEAR_RATIO:g} times the templates' largest |t| = {largest_t:.3g} GeV^2: "
            "the running is linear in t there and M is not determined; the errors of M and a_mu^HLO are not "
            "reliable (fix M_gev2 to fit K alone)")


def expected_covariance(likelihood: BinnedLikelihood, p) -> np.ndarray:
    """Inverse of the expected (Fisher) information at p: for the Poisson cost
    2 sum dmu dmu^T / mu, for chi2 2 sum dmu dmu^T / sigma^2, plus the constraints; a cheap
    error estimate for step sizes and grid widths."""
    theta, norm, nuisances = likelihood.split(p)
    shape, shape_gradient, nuisance_gradient = likelihood.templates.expected_flat(
        theta, nuisances, likelihood.luminosity_inv_nb, gradient=True)
    used = likelihood.used
    columns = [norm * shape_gradient[:, used]]
    if likelihood.has_norm:
        columns.append(shape[used][None, :])
    if len(likelihood.nuisance_names):
        columns.append(norm * nuisance_gradient[:, used])
    jacobian = np.concatenate(columns)
    if likelihood.cost == "poisson":
        inverse_variance = 1.0 / np.maximum(norm * shape[used], 1e-300)
    else:
        inverse_variance = likelihood._inverse_sigma2
    information = 2.0 * (jacobian * inverse_variance) @ jacobian.T
    k = len(likelihood.hadronic_names)
    if likelihood.normalization == "constrained":
        information[k, k] += 2.0 / likelihood.luminosity_error_rel**2
    for j in range(len(likelihood.nuisance_names)):
        i = len(likelihood.names) - len(likelihood.nuisance_names) + j
        information[i, i] += 2.0
    # -2 ln L: the covariance is 2 H^-1 with H the Hessian of the cost, H = information.
    return 2.0 * np.linalg.inv(information)


def _initial_steps(likelihood, p0) -> np.ndarray:
    try:
        steps = np.sqrt(np.diag(expected_covariance(likelihood, p0)))
    except np.linalg.LinAlgError:
        steps = np.full(p0.size, np.nan)
    fallback = np.maximum(np.abs(p0) * 0.01, 1e-3)
    steps = np.where(np.isfinite(steps) & (steps > 0), steps, fallback)
    return np.minimum(steps, np.where(p0 != 0, np.abs(p0) * 0.5, np.inf))


# --- the design study's grid ------------------------------------------------------------------


def fit_grid(likelihood: BinnedLikelihood, start=None, strict: bool = True, n_points: int = 11,
             n_sigma: float = 1.5, passes: int = 3, fit_window: float = 2.5) -> FitResult:
    """The grid method: -2 ln L on an n_points x n_points grid of the two hadronic parameters
    spanning +-n_sigma expected errors around the start (then around the previous minimum),
    the normalization profiled at each point; a paraboloid fitted by least squares to the points
    within `fit_window` of the lowest gives the minimum (its stationary point) and the
    covariance (the inverse of its quadratic form, Delta chi2 = 1).

    The cost is not a paraboloid in (K, M) (their correlation is about -0.9 and the contours
    are bent), so the grid is kept narrow (+-1.5 sigma, points within Delta chi2 = 2.5): on an
    Asimov data set of the full experiment the minimum then lies within 0.03 sigma of the truth;
    wider grids pull it by up to 0.2 sigma. MINUIT has no such bias."""
    if len(likelihood.nuisance_names):
        raise ValueError(f"method = 'grid' does not fit nuisance parameters ({list(likelihood.nuisance_names)}); use 'minuit'")
    if len(likelihood.hadronic_names) != 2:
        raise ValueError(f"method = 'grid' needs exactly two hadronic parameters, the model has {list(likelihood.hadronic_names)}")
    n_points = check_integer("n_points", n_points, 5, 201)
    n_sigma = check_range("n_sigma", n_sigma, 0.0, math.inf, low_open=True)
    passes = check_integer("passes", passes, 1, 10)
    family = likelihood.templates.family
    p0 = likelihood.start(start)
    centre = family.check(p0[:2])
    width = np.sqrt(np.diag(expected_covariance(likelihood, p0)))[:2] * n_sigma
    status, valid, n_calls = "", False, 0
    for _ in range(passes):
        if family.limits[1][0] == 0.0:  # keep the grid inside the physical range M > 0
            width[1] = min(width[1], 0.9 * centre[1])
        axes = [centre[i] + np.linspace(-width[i], width[i], n_points) for i in range(2)]
        grid_x, grid_y = np.meshgrid(*axes, indexing="ij")
        costs = np.empty(grid_x.shape)
        for i in range(n_points):
            for j in range(n_points):
                theta = np.array([grid_x[i, j], grid_y[i, j]])
                p = np.concatenate([theta, [likelihood.profile_norm(theta)] if likelihood.has_norm else []])
                costs[i, j] = likelihood(p)
        n_calls += costs.size
        minimum, covariance, valid, status = _paraboloid(grid_x, grid_y, costs, fit_window)
        if not valid:
            break
        centre = family.check(minimum) if minimum[1] > 0 else centre
        width = np.sqrt(np.diag(covariance)) * n_sigma
    values = np.concatenate([minimum, [likelihood.profile_norm(minimum)] if likelihood.has_norm and valid else
                             ([math.nan] if likelihood.has_norm else [])])
    full = np.full((values.size, values.size), math.nan)
    full[:2, :2] = covariance
    cost = likelihood(values) if valid else math.nan
    result = _result(likelihood, "grid", values, full, cost, valid, status, n_calls,
                     {"grid_" + likelihood.hadronic_names[0]: axes[0].tolist(),
                      "grid_" + likelihood.hadronic_names[1]: axes[1].tolist(),
                      "grid_cost": costs.tolist(), "norm_error": "not estimated (profiled)"})
    return _finish(result, strict)


def _paraboloid(x, y, costs, window):
    """Least-squares c0 + b.d + d^T A d (d from the lowest point, scaled) to the points within
    `window` of the lowest; returns (minimum, covariance = A^-1, valid, status)."""
    lowest = np.unravel_index(np.argmin(costs), costs.shape)
    x0, y0 = x[lowest], y[lowest]
    sx, sy = np.ptp(x) / 2, np.ptp(y) / 2
    near = costs - costs[lowest] <= window
    u, v, c = (x[near] - x0) / sx, (y[near] - y0) / sy, costs[near]
    if c.size < 6:
        return np.array([x0, y0]), np.full((2, 2), math.nan), False, f"only {c.size} grid points within {window} of the minimum; widen the window or refine the grid"
    design = np.column_stack([np.ones_like(u), u, v, u * u, u * v, v * v])
    coefficients, *_ = np.linalg.lstsq(design, c, rcond=None)
    _, bu, bv, auu, auv, avv = coefficients
    quadratic = np.array([[auu, auv / 2], [auv / 2, avv]])
    if not np.all(np.linalg.eigvalsh(quadratic) > 0):
        return np.array([x0, y0]), np.full((2, 2), math.nan), False, "the fitted paraboloid has no minimum (not positive definite)"
    d = np.linalg.solve(2 * quadratic, -np.array([bu, bv]))
    scale = np.diag([sx, sy])
    minimum = np.array([x0, y0]) + scale @ d
    covariance = scale @ np.linalg.inv(quadratic) @ scale
    inside = x.min() <= minimum[0] <= x.max() and y.min() <= minimum[1] <= y.max()
    if not inside:
        return minimum, covariance, False, "the paraboloid's minimum lies outside the grid"
    return minimum, covariance, True, "converged"
