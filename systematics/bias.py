"""Bias of each systematic on K, M and a_mu^HLO, with common random numbers.

How it works (the design study's method, made exact and cheap):

1. For every shard of events, the chain (`reco.chain.Chain`) runs once on the nominal
   configuration and once per shifted configuration (`systematics.catalogue`), with the same
   seed: the same events, moved by the shift (common random numbers). Each run is histogrammed
   in the analysis binning as a cross section per bin (ub: sum of selected weights / N).
   The nominal run also gives d(histogram)/d(K, M) by reweighting its events
   (`systematics.reweighting`).
2. The shifted histogram, scaled to the luminosity, is fitted with the nominal templates. The
   fit is done in its linear form (one Gauss-Newton step from the nominal point, exact to
   O(bias^2)): with J = L dh/d(K, M, norm) and W = 1 / (L h_nominal) the Poisson weights,
   delta theta = (J^T W J)^-1 J^T W (L h_shifted - L h_nominal), and delta a_mu = grad a_mu . delta theta.
   The luminosity cancels in the bias; the statistical errors are those of (J^T W J)^-1.
   A zero shift gives the nominal histogram bit for bit, hence exactly zero bias.
3. The Monte Carlo error of a bias is the spread of the per-shard biases (batch means); it is
   small because the shards' differences are correlated (the same events, slightly moved).
   A bias less than RESOLVED_MC_ERRORS Monte Carlo errors from zero is not `resolved`: the
   sample is too small to tell it from noise (events crossing a bin edge or a cut).

`required_precision` is the size the systematic may have (in the unit of its key, or relative
for a "scale" systematic) so that its bias stays below `threshold` (default 1/3) of the
statistical error on a_mu^HLO, assuming linearity; `linearity` is the ratio of the fitted
biases at +2 and -1, -2 sigma to the +1-sigma one (2, -1, -2 for a linear effect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fastsim.config import check_choice, check_integer, check_range
from fastsim.physics.amu import amu_hlo, amu_hlo_gradient
from fastsim.physics.vacuum_polarization import LeptonLikeModel, dalpha_lep
from systematics import catalogue
from systematics.histogram import Binning, Histogram
from systematics.reweighting import HadronicFamily

LINEARITY_SIGMAS = (-2.0, -1.0, 1.0, 2.0)
#: A bias is resolved when it stands this many Monte Carlo errors (shard-to-shard spread) from zero.
RESOLVED_MC_ERRORS = 2.0
DEFAULT_THRESHOLD = 1.0 / 3.0
PARAMETERS = ("K", "M_gev2", "norm")


def default_binning() -> Binning:
    """The analysis binning: theta_e 0-32 mrad in 0.5 mrad, theta_mu 0.2-5 mrad in 0.1 mrad."""
    return Binning.uniform(theta_e_rad=(64, 0.0, 0.032), theta_mu_rad=(48, 0.0002, 0.005))


def binning_from_dict(spec) -> Binning:
    """A Binning from {"theta_e_rad": [n, low, high], ...} (None: `default_binning`)."""
    if spec is None:
        return default_binning()
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"binning = {spec!r} must be a table such as {{theta_e_rad = [64, 0.0, 0.032]}}")
    axes = {}
    for name, value in spec.items():
        if not (isinstance(value, (list, tuple)) and len(value) == 3):
            raise ValueError(f"binning.{name} = {value!r} must be [n_bins, low, high]")
        axes[name] = (check_integer(f"binning.{name}[0]", value[0], 1, 100_000), float(value[1]), float(value[2]))
    return Binning.uniform(**axes)


def reference_family(chain_config) -> HadronicFamily:
    """The (K, M) family fitted: the generation's lepton-like model, or the reference point."""
    settings = chain_config.generator.elastic
    if settings.running == "lep+had" and settings.hadronic_model == "ll":
        return HadronicFamily(LeptonLikeModel(settings.K, settings.M_gev2))
    return HadronicFamily(LeptonLikeModel())


# --- the shard task --------------------------------------------------------------------------


def _histograms(events, binning, n_events):
    """Cross section per bin (ub) and the sum of squared weights of the selected events."""
    selected = events["selected"]
    columns = {name: events[name][selected] for name in binning.names}
    histogram = Histogram.fill(binning, columns, events["weight"][selected] / n_events)
    return histogram.values.reshape(-1), histogram.variances.reshape(-1)


def _gradient_histograms(events, binning, n_events, family, reference_running):
    """d(cross section per bin)/d theta at the family's reference point, by reweighting."""
    selected = events["selected"] & np.isfinite(events["true_t_gev2"])
    t = events["true_t_gev2"][selected]
    index = binning.bin_index({name: events[name][selected] for name in binning.names})
    weight = events["weight"][selected] / n_events
    gradient = np.zeros((len(family.names), binning.n_bins))
    if t.size == 0:
        return gradient
    dalpha_had, dalpha_had_gradient = family.at(t).evaluate(family.reference)
    denominator = 1.0 - dalpha_lep(t) - dalpha_had
    factor = (1.0 - reference_running.dalpha(t)) ** 2 / denominator**2
    inside = index >= 0
    for k in range(len(family.names)):
        # d/d theta_k of (1 - Dref)^2 / (1 - Dlep - Dhad)^2 = 2 factor dDhad/dtheta_k / (1 - Dlep - Dhad)
        derivative = weight * 2.0 * factor * dalpha_had_gradient[k] / denominator
        gradient[k] = np.bincount(index[inside], weights=derivative[inside], minlength=binning.n_bins)
    return gradient


def shifted_configs(chain_config, shifts, custom_tables=()):
    """The chain configurations of (systematic name, n_sigma) pairs, custom TOML systematics
    included; ValueError for an unknown name or a key that does not exist."""
    custom = {}
    for i, table in enumerate(custom_tables):
        systematic = catalogue.from_table(table, where=f"systematics[{i}]")
        catalogue.check_keys(systematic, chain_config)
        custom[systematic.name] = systematic
    configs = []
    for name, n_sigma in shifts:
        systematic = custom[name] if name in custom else catalogue.get(name)
        configs.append(systematic.apply(chain_config, n_sigma))
    return configs


def bias_shard(config: dict, shard_seed: int, shard_index: int) -> dict:
    """Campaign task: nominal and shifted histograms of one shard (see the module doc).

    `config` (plain): chain (the chain table), events (per shard), chunk_size, binning (see
    `binning_from_dict`), shifts ([[name, n_sigma], ...]), systematics (custom tables) and
    common_random_numbers (bool; False draws the shifted samples with another seed, to show what
    common random numbers gain).
    """
    from reco.chain import Chain, ChainConfig

    nominal_config = ChainConfig.from_dict(config["chain"])
    binning = binning_from_dict(config.get("binning"))
    family = reference_family(nominal_config)
    n_events = int(config["events"])
    chunk_size = int(config.get("chunk_size", 100_000))
    crn = bool(config.get("common_random_numbers", True))
    configs = shifted_configs(nominal_config, config.get("shifts", []), config.get("systematics", []))

    nominal = Chain(nominal_config, shard_seed)
    values = np.zeros(binning.n_bins)
    variances = np.zeros(binning.n_bins)
    gradient = np.zeros((len(family.names), binning.n_bins))
    for events in nominal.run(n_events, chunk_size):
        v, w2 = _histograms(events, binning, n_events)
        values += v
        variances += w2
        gradient += _gradient_histograms(events, binning, n_events, family, nominal_config.generator.elastic.running_coupling)
    shifted = np.zeros((len(configs), binning.n_bins))
    shifted_variances = np.zeros((len(configs), binning.n_bins))
    for j, shifted_config in enumerate(configs):
        seed = shard_seed if crn else (shard_seed + 0x9E3779B97F4A7C15) % 2**64
        chain = Chain(shifted_config, seed)
        for events in chain.run(n_events, chunk_size):
            v, w2 = _histograms(events, binning, n_events)
            shifted[j] += v
            shifted_variances[j] += w2
    flow = nominal.cutflow
    return {"nominal": values, "nominal_variances": variances, "gradient": gradient, "shifted": shifted,
            "shifted_variances": shifted_variances, "cutflow_sum_w": flow.sum_w, "cutflow_sum_w2": flow.sum_w2,
            "cutflow_count": flow.count.astype(np.float64)}


# --- the linear fit -----------------------------------------------------------------------------


def check_fixed_names(fixed, family) -> tuple:
    """The names of `fixed` (a list of names, or the fit's {name: value}) as a tuple; ValueError
    for a name that is not a hadronic parameter of `family`, or when none would be left free."""
    names = tuple(fixed or ())
    for name in names:
        if name not in family.names:
            raise ValueError(f"fixed parameter {name!r} is not one of the hadronic parameters {list(family.names)}")
    if names and set(family.names) <= set(names):
        raise ValueError(f"fixed = {list(names)} leaves no hadronic parameter free")
    return names


@dataclass(frozen=True, eq=False)
class LinearFit:
    """The fit of histograms near the nominal one, in linear form (see the module doc).

    Parameters
    ----------
    nominal : array (n_bins,)
        Nominal cross section per bin (ub).
    gradient : array (n_parameters, n_bins)
        d nominal / d theta at the reference point.
    family : HadronicFamily
    luminosity_inv_nb : float
    normalization : "free" or "fixed"
    beam_energy_gev : float
    fixed : tuple of str
        Hadronic parameters held at the reference point (the fit's `fixed`): they get zero
        shift and zero variance, and the others are fitted alone.
    """

    nominal: np.ndarray
    gradient: np.ndarray
    family: HadronicFamily
    luminosity_inv_nb: float
    normalization: str = "free"
    beam_energy_gev: float = 160.0
    fixed: tuple = ()
    _solve: np.ndarray = field(init=False, repr=False)
    covariance: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        check_range("luminosity_inv_nb", self.luminosity_inv_nb, 0.0, math.inf, low_open=True)
        check_choice("normalization", self.normalization, ("free", "fixed"))
        object.__setattr__(self, "fixed", check_fixed_names(self.fixed, self.family))
        used = self.nominal > 0
        if not np.any(used):
            raise ValueError("the nominal histogram is empty: no selected event in the binning")
        scale = self.luminosity_inv_nb * 1e3  # nb^-1 -> ub^-1
        free = [i for i, name in enumerate(self.family.names) if name not in self.fixed]
        columns = [self.gradient[i][used] for i in free]
        if self.normalization == "free":
            free.append(len(self.family.names))
            columns.append(self.nominal[used])
        jacobian = scale * np.array(columns).T
        weights = 1.0 / (scale * self.nominal[used])
        fisher = jacobian.T @ (weights[:, None] * jacobian)
        covariance = np.zeros((len(self.names),) * 2)
        covariance[np.ix_(free, free)] = np.linalg.inv(fisher)
        object.__setattr__(self, "covariance", covariance)
        solve = np.zeros((len(self.names), self.nominal.size))
        solve[np.ix_(free, np.flatnonzero(used))] = covariance[np.ix_(free, free)] @ (jacobian.T * weights) * scale
        object.__setattr__(self, "_solve", solve)

    @property
    def names(self) -> tuple:
        return self.family.names + (("norm",) if self.normalization == "free" else ())

    @property
    def amu_gradient(self) -> np.ndarray:
        """d a_mu / d (theta, norm) at the reference point."""
        gradient = amu_hlo_gradient(self.family.prototype)
        return np.concatenate([gradient, np.zeros(len(self.names) - gradient.size)])

    @property
    def amu(self) -> float:
        return amu_hlo(self.family.prototype)

    @property
    def stat_errors(self) -> dict:
        """Statistical errors of the parameters and of a_mu at this luminosity."""
        errors = dict(zip(self.names, np.sqrt(np.diag(self.covariance)).tolist()))
        g = self.amu_gradient
        errors["amu"] = float(math.sqrt(g @ self.covariance @ g))
        return errors

    def shift(self, difference) -> dict:
        """Parameter and a_mu shifts for a histogram difference (ub per bin, shifted - nominal)."""
        delta = self._solve @ np.asarray(difference, dtype=np.float64)
        out = dict(zip(self.names, delta.tolist()))
        out["amu"] = float(self.amu_gradient @ delta)
        return out


@dataclass(frozen=True)
class BiasRow:
    """The bias of one systematic at one shift, with its Monte Carlo error."""

    name: str
    n_sigma: float
    shift: str
    sigma: float
    delta_K: float
    delta_M_gev2: float
    delta_amu: float
    delta_amu_mc_error: float
    required_precision: float
    linearity: dict
    reference: str
    resolved: bool
    linear_regime: bool

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _batch_error(per_shard) -> float:
    per_shard = np.asarray(per_shard, dtype=np.float64)
    n = per_shard.size
    if n < 2:
        return math.nan
    # The total is the sum over shards; its variance is n times the variance of one shard's share.
    return float(math.sqrt(n * per_shard.var(ddof=1)))


def _resolved(delta_amu: float, mc_error: float, n_sigma: float) -> bool:
    """Whether a bias stands out of its Monte Carlo error (RESOLVED_MC_ERRORS). The exact zero of a
    zero shift counts as resolved; a shift that moves no event of the sample is not (its bias is
    below what the sample can see), nor is a bias without an MC error (one shard)."""
    if delta_amu == 0.0:
        return n_sigma == 0.0
    return bool(math.isfinite(mc_error) and abs(delta_amu) > RESOLVED_MC_ERRORS * mc_error)


def _linear_regime(shift: dict, errors: dict, names) -> bool:
    """Whether every fitted hadronic parameter moves by less than its statistical error: beyond
    it the cost of a parameter the data barely determine (M on a short t range) is no longer the
    paraboloid that the linear fit assumes, and the bias is not what a fit would find."""
    return all(abs(shift[name]) <= errors[name] for name in names if errors.get(name, 0.0) > 0.0)


def estimate_biases(totals: dict, per_shard: list, shifts: list, chain_config, luminosity_inv_nb: float,
                    normalization: str = "free", threshold: float = DEFAULT_THRESHOLD, custom=(), fixed=()) -> dict:
    """The bias table from summed shard results (`totals`: sums over the shards of the task's
    arrays, divided by the number of shards) and the per-shard differences.

    Parameters
    ----------
    totals : dict
        "nominal", "gradient", "shifted": mean over shards of the task's arrays.
    per_shard : list of dict
        Each shard's "nominal" and "shifted" (for the Monte Carlo error), in shard order.
    shifts : list of (name, n_sigma)
    fixed : list of str
        Hadronic parameters held at the reference point in the fits (`LinearFit`).
    """
    threshold = check_range("threshold", threshold, 0.0, 1.0, low_open=True)
    family = reference_family(chain_config)
    fit = LinearFit(totals["nominal"], totals["gradient"], family, luminosity_inv_nb, normalization,
                    chain_config.generator.beam.mean_energy_gev, tuple(fixed))
    errors = fit.stat_errors
    n_shards = len(per_shard)
    systematics = {s.name: s for s in custom}
    by_shift = {}
    for j, (name, n_sigma) in enumerate(shifts):
        total = fit.shift(totals["shifted"][j] - totals["nominal"])
        shard_amu = [fit.shift((s["shifted"][j] - s["nominal"]) / n_shards)["amu"] for s in per_shard]
        by_shift[(name, n_sigma)] = (total, _batch_error(shard_amu))
    rows = []
    for (name, n_sigma), (total, mc_error) in by_shift.items():
        systematic = systematics.get(name) or catalogue.get(name)
        one_sigma = by_shift.get((name, 1.0), (total, mc_error))[0]["amu"]
        allowed = threshold * errors["amu"]
        if systematic.is_discrete:
            required = math.nan
        elif one_sigma == 0.0:
            required = math.inf
        else:
            required = abs(systematic.sigma) * allowed / abs(one_sigma)
        linearity = {f"{k:+g}": by_shift[(name, k)][0]["amu"] / one_sigma
                     for k in LINEARITY_SIGMAS if (name, k) in by_shift and one_sigma != 0.0}
        rows.append(BiasRow(name, n_sigma, systematic.shift_label(n_sigma), systematic.sigma,
                            total.get("K", math.nan), total.get("M_gev2", math.nan), total["amu"], mc_error,
                            required, linearity, systematic.reference,
                            _resolved(total["amu"], mc_error, n_sigma), _linear_regime(total, errors, family.names)))
    return {"luminosity_inv_nb": luminosity_inv_nb, "normalization": normalization, "fixed": list(fit.fixed),
            "amu": fit.amu, "stat_error_amu": errors["amu"], "stat_errors": errors, "threshold": threshold,
            "n_shards": n_shards, "biases": [row.to_dict() for row in rows]}
