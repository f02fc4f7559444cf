"""Posterior sampling of the fit parameters with emcee.

What to use when: `sample_posterior(likelihood, ...)` (or `fit_histogram(..., method="mcmc")`)
when the likelihood is not Gaussian in (K, M): short runs, parameters near the physical
boundary M = 0, or a_mu^HLO intervals that should not rely on linear error propagation. The
posterior is exp(-cost/2) times the priors; priors are uniform ranges by default
(`DEFAULT_PRIORS`; nuisance parameters keep their unit Gaussian constraint from the likelihood),
or any `UniformPrior` / `GaussianPrior` per parameter. The walkers start in a small ball around
the MINUIT minimum, which must be valid.

Results: medians and central 68 % intervals of every parameter and of a_mu^HLO (evaluated for a
thinned set of samples), their covariance and the K-M correlation, the acceptance fraction and
the integrated autocorrelation time (Goodman & Weare, Comm. App. Math. Comp. Sci. 5 (2010) 65;
Foreman-Mackey et al., PASP 125 (2013) 306).

Seeding: emcee draws from a numpy RandomState; it is seeded from `seed` (a MT19937 bit generator
through numpy's SeedSequence) and the initial walkers come from `np.random.default_rng(seed)`.
MCMC is not event-indexed, so the counter-based generator of `fastsim.rng` is not needed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fastsim.config import check_integer, check_range
from fastsim.physics.amu import amu_hlo
from fastsim.rng import validate_seed
from systematics.likelihood import BinnedLikelihood
from systematics.result import AmuResult, FitResult, amu_from_parameters


@dataclass(frozen=True)
class UniformPrior:
    low: float
    high: float

    def __post_init__(self):
        check_range("prior low", self.low)
        check_range("prior high", self.high, self.low, math.inf, low_open=True)

    def log_density(self, x: float) -> float:
        return 0.0 if self.low <= x <= self.high else -math.inf


@dataclass(frozen=True)
class GaussianPrior:
    mean: float
    sigma: float

    def __post_init__(self):
        check_range("prior mean", self.mean)
        check_range("prior sigma", self.sigma, 0.0, math.inf, low_open=True)

    def log_density(self, x: float) -> float:
        return -0.5 * ((x - self.mean) / self.sigma) ** 2


#: Default uniform ranges (wide around the MUonE reference point K = 0.137, M = 0.0525 GeV^2).
DEFAULT_PRIORS = {"K": UniformPrior(0.0, 1.0), "M_gev2": UniformPrior(1e-6, 1.0), "norm": UniformPrior(0.5, 1.5),
                  "c1_per_gev2": UniformPrior(-1.0, 1.0), "c2_per_gev4": UniformPrior(-10.0, 10.0)}
_NUISANCE_PRIOR = UniformPrior(-5.0, 5.0)


def _priors(names, nuisance_names, priors):
    priors = dict(priors or {})
    unknown = sorted(set(priors) - set(names))
    if unknown:
        raise ValueError(f"prior for unknown parameter {unknown[0]!r}; the parameters are {list(names)}")
    out = []
    for name in names:
        prior = priors.get(name, _NUISANCE_PRIOR if name in nuisance_names else DEFAULT_PRIORS.get(name))
        if prior is None:
            raise ValueError(f"parameter {name!r} has no default prior; give one in priors")
        if isinstance(prior, (tuple, list)) and len(prior) == 2:
            prior = UniformPrior(*prior)
        if not isinstance(prior, (UniformPrior, GaussianPrior)):
            raise ValueError(f"prior for {name} = {prior!r} must be a UniformPrior, a GaussianPrior or a (low, high) pair")
        out.append(prior)
    return out


def sample_posterior(likelihood: BinnedLikelihood, start=None, strict: bool = True, priors: dict | None = None,
                     n_walkers: int = 32, n_steps: int = 2000, n_burn: int = 500, seed: int = 1,
                     n_amu_samples: int = 2000) -> FitResult:
    """emcee sampling of the posterior; see the module doc. Returns a FitResult with method
    "mcmc": values are the medians, the covariance that of the samples, and `details` holds the
    68 % intervals, the K-M correlation, acceptance and autocorrelation; `amu.posterior` has
    the median and interval of a_mu^HLO."""
    import emcee

    from systematics.fit import fit_minuit

    n_walkers = check_integer("n_walkers", n_walkers, 4, 10_000)
    n_steps = check_integer("n_steps", n_steps, 10, 10**7)
    n_burn = check_integer("n_burn", n_burn, 0, n_steps - 1)
    n_amu_samples = check_integer("n_amu_samples", n_amu_samples, 10, 10**7)
    seed = validate_seed(seed)
    names = likelihood.names
    prior_list = _priors(names, likelihood.nuisance_names, priors)
    family = likelihood.templates.family

    best = fit_minuit(likelihood, start, strict=True)
    ndim = len(names)
    if n_walkers < 2 * ndim:
        raise ValueError(f"n_walkers = {n_walkers} is below 2 x {ndim} parameters (emcee needs at least twice as many)")

    def log_probability(p):
        total = 0.0
        for prior, x in zip(prior_list, p):
            total += prior.log_density(x)
        if not math.isfinite(total):
            return -math.inf
        try:
            family.check(p[: len(likelihood.hadronic_names)])
        except ValueError:
            return -math.inf
        return total - 0.5 * likelihood(p)

    generator = np.random.default_rng(seed)
    spread = np.sqrt(np.diag(best.covariance))
    initial = best.values + 0.1 * spread * generator.standard_normal((n_walkers, ndim))
    for i, prior in enumerate(prior_list):  # the ball must start inside the priors
        if isinstance(prior, UniformPrior):
            initial[:, i] = np.clip(initial[:, i], prior.low + 1e-12 * abs(prior.low), prior.high)
    sampler = emcee.EnsembleSampler(n_walkers, ndim, log_probability)
    state = np.random.RandomState(np.random.MT19937(seed)).get_state()
    sampler.random_state = state
    if sampler.random_state[1].tolist() != state[1].tolist():  # emcee's setter fails silently
        raise RuntimeError("could not seed emcee's random state")
    sampler.run_mcmc(initial, n_steps, progress=False)
    chain = sampler.get_chain(discard=n_burn, flat=True)

    median = np.median(chain, axis=0)
    low, high = np.percentile(chain, [15.865525393145708, 84.1344746068543], axis=0)
    covariance = np.atleast_2d(np.cov(chain, rowvar=False))
    acceptance = float(np.mean(sampler.acceptance_fraction))
    autocorrelation = sampler.get_autocorr_time(discard=n_burn, quiet=True)
    converged = bool(np.all(np.isfinite(autocorrelation)) and (n_steps - n_burn) > 20 * np.max(autocorrelation))

    pick = np.linspace(0, chain.shape[0] - 1, min(n_amu_samples, chain.shape[0])).astype(np.int64)
    k = len(likelihood.hadronic_names)
    amu_samples = np.array([amu_hlo(family.model(chain[i, :k])) for i in pick])
    amu_low, amu_median, amu_high = np.percentile(amu_samples, [15.865525393145708, 50.0, 84.1344746068543])
    linear = amu_from_parameters(family, median[:k], covariance[:k, :k], likelihood.templates.beam_energy_gev)
    amu = AmuResult(float(amu_median), float(np.std(amu_samples, ddof=1)), linear.fraction_in_range, linear.x_max,
                    linear.beam_energy_gev,
                    posterior={"median": float(amu_median), "interval_68": [float(amu_low), float(amu_high)],
                               "error_from_covariance": linear.error, "samples": int(pick.size)})
    details = {
        "intervals_68": {n: [float(a), float(b)] for n, a, b in zip(names, low, high)},
        "acceptance_fraction": acceptance,
        "autocorrelation_steps": autocorrelation.tolist(),
        "n_walkers": n_walkers, "n_steps": n_steps, "n_burn": n_burn, "seed": seed,
        "minuit_values": best.values.tolist(),
    }
    status = "sampled" if converged else "chain shorter than 20 autocorrelation times: intervals unreliable"
    if not 0.1 < acceptance < 0.9:
        status = f"acceptance fraction {acceptance:.3f} outside (0.1, 0.9): the sampler did not mix"
        converged = False
    result = FitResult("mcmc", names, median, np.sqrt(np.diag(covariance)), covariance, likelihood(median),
                       likelihood.ndof, converged, status, n_walkers * n_steps, likelihood.hadronic_names, family,
                       likelihood.templates.beam_energy_gev, details, amu)
    if strict:
        result.require_valid()
    return result
