"""Studies: one preset, one command, one report (`muone study PRESET`).

What to use when:

- `run_study(preset, output_dir=...)` runs a preset (a name from `available_presets()`, shipped
  in ``studies/presets/``, or your own TOML file) and writes ``output_dir`` with
  ``summary.json``, markdown tables, PNG plots and a ``report.md`` that links them. It returns
  the summary dict (what ``--json`` prints).
- `Study.load(preset, events=..., seed=...)` reads and validates a preset without running it;
  `simulate_templates(study, output_dir)` runs its template-sample campaign (used by
  `studies.projection.project` too); `luminosity_summary` turns its beam and targets into
  luminosities.

A preset is a TOML file with a ``[study]`` table (`StudySettings`: what to compute), a
``[chain]`` table (a `reco.chain.ChainConfig`: geometry, generator, simulation, reconstruction,
selection) and optional ``[[systematics]]`` tables (custom systematics, see
`systematics.catalogue`). Two kinds:

- ``kind = "measurement"``: the measurement itself. (1) The template sample: `events` events of
  the chain, in `shards` shards of a `studies.campaign.Campaign` (local cores or Dask), the cut
  flow and the selected events. (2) Templates (`systematics.templates.Template`) in the preset's
  binning. (3) Pseudo-data: a Poisson draw of the templates' expectation at the study's
  luminosity (the MC sample sets the shape, the luminosity the counts; the draw uses numpy's
  generator seeded by `fastsim.rng.derive_seed`, as the toys do), fitted with `fit_method` to give
  K, M and a_mu^HLO (`systematics.fit`), holding the ``fixed`` parameters (e.g. M where the
  selected t range cannot determine it: quickstart, tr2023). (4) The projection of the
  statistical errors versus luminosity and stations (`studies.projection`). (5) Optionally `toys` pseudo-experiments
  (pulls) and the bias of each systematic of `systematics` (`systematics.bias`, common random
  numbers, `systematics_events` events per shard).
- ``kind = "layout_scan"``: a detector-layout scan (`studies.layout.scan`) over the ``[study.scan]``
  keys.

Luminosity. ``luminosity_inv_nb`` is the integrated luminosity of the experiment the preset
describes, summed over its targets; or give ``beam_muons`` and it is computed as
L = N_mu * sum over targets of d rho (Z/A) N_A (REFERENCE.md). Events in the first station have no
incoming track (no upstream station) and are never selected, so only the "usable" targets (those
of stations 1, 2, ...) count. When the simulated geometry is a subset of the experiment
(``experiment_stations`` identical stations, e.g. 3 of the 40 of the full experiment, to save
time), the usable fraction differs: the templates are scaled to
L_template = L * f_experiment / f_simulated, with f = (usable electrons) / (all electrons), which
assumes every station but the first selects events as the simulated ones do.

An ``events`` override (for quick checks and tests) also caps ``systematics_events`` and the
layout scan's events per point, and ``shards`` at one shard per 1000 events.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import fastsim
from fastsim.config import check_choice, check_integer, check_range, from_mapping, load_toml
from fastsim.rng import derive_seed
from fastsim.units import INV_NB_TO_INV_UB, UB_TO_CM2
from studies import configs
from studies.configs import available_presets  # noqa: F401  (re-exported: the presets of run_study)

KINDS = ("measurement", "layout_scan")
FIT_METHODS = ("minuit", "grid", "mcmc")
NORMALIZATIONS = ("free", "fixed", "constrained")
#: derive_seed label of the pseudo-data draw (shards use labels 0 .. n_shards - 1 of other seeds).
PSEUDO_DATA_LABEL = 2**32 + 1
#: derive_seed label of the toys' seed.
TOYS_LABEL = 2**32 + 2
#: derive_seed label of the bias campaign's seed.
BIAS_LABEL = 2**32 + 3
PRESET_SECTIONS = ("study", "chain", "systematics")


@dataclass(frozen=True)
class StudySettings:
    """The ``[study]`` table of a preset (see the module doc and the presets' comments).

    Parameters
    ----------
    kind : {"measurement", "layout_scan"}
    description : str
    events, shards, chunk_size, seed : int
        Template sample: events in total, campaign shards, chunk size, campaign seed.
    luminosity_inv_nb : float, optional
        Integrated luminosity of the experiment (all targets), nb^-1.
    beam_muons : float, optional
        Number of beam muons, instead of luminosity_inv_nb (L = N_mu sum_targets n_e).
    experiment_stations : int, optional
        Identical stations of the experiment when the geometry simulates a subset of them.
    binning : dict, optional
        {axis: [n_bins, low, high]} (`systematics.bias.binning_from_dict`).
    fit_method, normalization : str
        `systematics.fit.fit_histogram` options; luminosity_error_rel for "constrained".
    fixed : dict
        {name: value} of hadronic parameters held fixed (MINUIT only), e.g. {M_gev2 = 0.0525}
        where the selected t range does not determine M. The fit and the toys hold them at the
        value; the projection and the bias fits at the generated point, so their errors are
        those of the free parameters alone.
    toys : int
        Pseudo-experiments for the pulls (0: none).
    systematics : tuple of str
        Catalogue (or custom ``[[systematics]]``) names whose bias is estimated at +1 sigma.
    systematics_events, systematics_shards : int
        Events per shard and shards of the bias campaign.
    linearity : bool
        Also estimate the biases at -1 and +-2 sigma (the linearity check).
    projection_luminosities_inv_nb, projection_stations : tuple
        Points of the projection curves.
    goal_amu_stat_error_rel, goal_dalpha_had_stat_error_rel : float, optional
        Goals the projection is compared with.
    compare : dict
        Reference numbers to print next to ours (e.g. sigma_mc_ub = 77.75).
    scan : dict
        Layout scan: {dotted key: [values]} or {dotted key: {scale = [...]}} (layout_scan only).
    scan_luminosity_inv_nb : float, optional
        Luminosity of the layout scan's statistical errors (default luminosity_inv_nb).
    workers : int, optional
        Local process-pool size of the campaigns (default: one per core); 0 runs them in this
        process with numba's threads (fastest for short studies: the numba kernels are compiled
        or loaded once instead of once per worker). Ignored with a Dask scheduler.
    """

    kind: str = "measurement"
    description: str = ""
    events: int = 100_000
    shards: int = 2
    chunk_size: int = 50_000
    seed: int = 1
    luminosity_inv_nb: float | None = None
    beam_muons: float | None = None
    experiment_stations: int | None = None
    binning: dict | None = None
    fit_method: str = "minuit"
    fixed: dict = field(default_factory=dict)
    normalization: str = "free"
    luminosity_error_rel: float | None = None
    toys: int = 0
    systematics: tuple[str, ...] = ()
    systematics_events: int = 20_000
    systematics_shards: int = 2
    linearity: bool = False
    projection_luminosities_inv_nb: tuple[float, ...] = ()
    projection_stations: tuple[int, ...] = ()
    goal_amu_stat_error_rel: float | None = None
    goal_dalpha_had_stat_error_rel: float | None = None
    compare: dict = field(default_factory=dict)
    scan: dict = field(default_factory=dict)
    scan_luminosity_inv_nb: float | None = None
    workers: int | None = None

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        check_integer("events", self.events, 1)
        check_integer("shards", self.shards, 1, 100_000)
        check_integer("chunk_size", self.chunk_size, 1)
        check_integer("seed", self.seed, 0, 2**64 - 1)
        if (self.luminosity_inv_nb is None) == (self.beam_muons is None):
            raise ValueError(f"give exactly one of luminosity_inv_nb = {self.luminosity_inv_nb!r} and "
                             f"beam_muons = {self.beam_muons!r}")
        if self.luminosity_inv_nb is not None:
            check_range("luminosity_inv_nb", self.luminosity_inv_nb, 0.0, math.inf, low_open=True)
        if self.beam_muons is not None:
            check_range("beam_muons", self.beam_muons, 0.0, math.inf, low_open=True)
        if self.experiment_stations is not None:
            check_integer("experiment_stations", self.experiment_stations, 2, 10_000)
        check_choice("fit_method", self.fit_method, FIT_METHODS)
        if not isinstance(self.fixed, dict):
            raise ValueError(f"fixed = {self.fixed!r} must be a table {{name = value}}, e.g. {{M_gev2 = 0.0525}}")
        for name, value in self.fixed.items():
            check_range(f"fixed.{name}", value)
        if self.fixed and self.fit_method != "minuit":
            raise ValueError(f"fixed = {self.fixed!r} needs fit_method = 'minuit' (not {self.fit_method!r})")
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        if self.normalization == "constrained" and self.luminosity_error_rel is None:
            raise ValueError("normalization = 'constrained' needs luminosity_error_rel (e.g. 0.01)")
        check_integer("toys", self.toys, 0, 1_000_000)
        if not all(isinstance(s, str) for s in self.systematics):
            raise ValueError(f"systematics = {list(self.systematics)!r} must be a list of names")
        check_integer("systematics_events", self.systematics_events, 1)
        check_integer("systematics_shards", self.systematics_shards, 2, 100_000)
        for x in self.projection_luminosities_inv_nb:
            check_range("projection_luminosities_inv_nb", x, 0.0, math.inf, low_open=True)
        for n in self.projection_stations:
            check_integer("projection_stations", n, 1, 10_000)
        for key in ("goal_amu_stat_error_rel", "goal_dalpha_had_stat_error_rel", "scan_luminosity_inv_nb"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), 0.0, math.inf, low_open=True)
        if self.workers is not None:
            check_integer("workers", self.workers, 0, 100_000)
        if self.kind == "layout_scan" and not self.scan:
            raise ValueError("kind = 'layout_scan' needs a [study.scan] table of {key: [values]}")


@dataclass(frozen=True, eq=False)
class Study:
    """A loaded preset: its settings, chain configuration and custom systematics."""

    name: str
    source: str
    settings: StudySettings
    chain: object
    custom_systematics: tuple = ()

    @classmethod
    def load(cls, preset, events: int | None = None, seed: int | None = None, workers: int | None = None) -> "Study":
        """Read a preset by name or path; `events`, `seed` and `workers` override the preset's."""
        from reco.chain import ChainConfig

        path = preset_path(preset)
        table = load_toml(path)
        unknown = sorted(set(table) - set(PRESET_SECTIONS))
        if unknown:
            raise ValueError(f"unknown key {path}: {unknown[0]}; allowed: {', '.join(PRESET_SECTIONS)}")
        if "study" not in table:
            raise ValueError(f"missing required key {path}: study (the [study] table)")
        settings = from_mapping(StudySettings, table["study"], f"{path}:study")
        if events is not None:
            events = check_integer("events", events, 1)
            settings = replace(settings, events=events, shards=max(1, min(settings.shards, events // 1000)),
                               chunk_size=min(settings.chunk_size, events),
                               systematics_events=min(settings.systematics_events, events))
        if seed is not None:
            settings = replace(settings, seed=check_integer("seed", seed, 0, 2**64 - 1))
        if workers is not None:
            settings = replace(settings, workers=check_integer("workers", workers, 0, 100_000))
        chain = ChainConfig.from_dict(table.get("chain", {}), where=f"{path}:chain")
        custom = table.get("systematics", [])
        if not isinstance(custom, list):
            raise ValueError(f"{path}: systematics must be an array of tables ([[systematics]])")
        study = cls(Path(path).stem, str(path), settings, chain, tuple(custom))
        study.check_fixed()
        study.check_systematics()
        return study

    def check_fixed(self):
        """ValueError for a fixed name that is not a hadronic parameter of the fitted family, a
        value outside its physical range, or no parameter left free."""
        from systematics.bias import check_fixed_names, reference_family

        family = reference_family(self.chain)
        check_fixed_names(self.settings.fixed, family)
        theta = family.reference.copy()
        for name, value in self.settings.fixed.items():
            theta[family.names.index(name)] = value
        try:
            family.check(theta)
        except ValueError as error:
            raise ValueError(f"{self.source}: study.fixed: {error}") from None

    def check_systematics(self):
        """ValueError for an unknown systematic name or a custom one whose key does not exist."""
        from systematics.bias import shifted_configs

        if self.settings.systematics:
            shifted_configs(self.chain, [(name, 1.0) for name in self.settings.systematics], self.custom_systematics)

    def to_dict(self) -> dict:
        from fastsim.config import to_plain

        return {"name": self.name, "source": self.source, "settings": to_plain(self.settings),
                "chain_hash": self.chain.hash}


def preset_path(preset) -> Path:
    """The TOML file of a preset name, or `preset` itself if it is a file."""
    if isinstance(preset, Path) or (isinstance(preset, str) and (preset.endswith(".toml") or "/" in preset)):
        path = Path(preset)
        if not path.is_file():
            raise ValueError(f"preset = {str(preset)!r}: no such file")
        return path
    if not isinstance(preset, str):
        raise ValueError(f"preset = {preset!r} must be a preset name or a TOML file")
    return Path(str(configs.preset_path(preset)))


# --- luminosity ----------------------------------------------------------------------------------


def luminosity_from_beam(beam_muons: float, targets) -> list[float]:
    """Integrated luminosity (nb^-1) of each target: L = N_mu * d rho (Z/A) N_A (REFERENCE.md)."""
    check_range("beam_muons", beam_muons, 0.0, math.inf, low_open=True)
    return [beam_muons * t.electron_areal_density_per_cm2 * UB_TO_CM2 / INV_NB_TO_INV_UB for t in targets]


def usable_fraction(geometry) -> float:
    """Electron fraction of the targets in stations with an upstream station (index >= 1)."""
    densities = [(i, s.target.electron_areal_density_per_cm2) for i, s in enumerate(geometry.stations)
                 if s.target is not None]
    total = sum(d for _, d in densities)
    return sum(d for i, d in densities if i >= 1) / total if total > 0 else 0.0


def luminosity_summary(study: Study, luminosity_inv_nb: float | None = None) -> dict:
    """The study's luminosity (or `luminosity_inv_nb`), per target when from beam muons, and the
    luminosity the templates are scaled to (see the module doc)."""
    from fastsim.detector.transport import geometry_targets

    settings = study.settings
    geometry = study.chain.geometry
    targets = geometry_targets(geometry)
    out = {}
    if luminosity_inv_nb is not None:
        total = check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True)
    elif settings.luminosity_inv_nb is not None:
        total = settings.luminosity_inv_nb
    else:
        per_target = luminosity_from_beam(settings.beam_muons, targets)
        total = sum(per_target)
        out["beam_muons"] = settings.beam_muons
        out["per_target"] = [{"station": s.name, "material": s.target.material, "thickness_cm": s.target.thickness_cm,
                              "luminosity_inv_nb": lum, "luminosity_inv_ub": lum * INV_NB_TO_INV_UB}
                             for s, lum in zip([s for s in geometry.stations if s.target is not None], per_target)]
    simulated = usable_fraction(geometry)
    if simulated <= 0.0:
        raise ValueError(f"geometry {geometry.name!r}: no target in a station with an upstream station; "
                         "nothing can be selected (events of the first station have no incoming track)")
    n_experiment = settings.experiment_stations or len(geometry.stations)
    experiment = (n_experiment - 1) / n_experiment if settings.experiment_stations else simulated
    out.update(luminosity_inv_nb=total, experiment_stations=n_experiment, simulated_stations=len(geometry.stations),
               usable_fraction_simulated=simulated, usable_fraction_experiment=experiment,
               usable_luminosity_inv_nb=total * experiment,
               template_luminosity_inv_nb=total * experiment / simulated)
    return out


# --- the template sample -------------------------------------------------------------------------

SAMPLE_COLUMNS = ("theta_e_rad", "theta_mu_rad", "weight", "true_t_gev2", "true_theta_e_rad", "true_theta_mu_rad")


def sample_shard(config: dict, shard_seed: int, shard_index: int) -> dict:
    """Campaign task: the selected events (SAMPLE_COLUMNS) and the cut flow of one shard.

    `config` (plain): chain (table), events (of this shard), chunk_size.
    """
    from reco.chain import Chain, ChainConfig

    chain = Chain(ChainConfig.from_dict(config["chain"]), shard_seed)
    parts = {name: [] for name in SAMPLE_COLUMNS}
    for events in chain.run(int(config["events"]), int(config["chunk_size"])):
        selected = events["selected"]
        for name in SAMPLE_COLUMNS:
            parts[name].append(np.asarray(events[name][selected], dtype=np.float64))
    out = {name: np.concatenate(values) for name, values in parts.items()}
    flow = chain.cutflow
    out.update(cutflow_sum_w=flow.sum_w, cutflow_sum_w2=flow.sum_w2, cutflow_count=flow.count,
               n_events=np.int64(config["events"]))
    return out


@dataclass(frozen=True, eq=False)
class TemplateBundle:
    """What the template campaign gives: the Template, the sample's columns, the cut flow."""

    template: object
    columns: dict
    cutflow: object
    n_generated: int
    t_ref_gev2: float
    campaign: dict
    wall_time_s: float

    @property
    def n_selected(self) -> int:
        return int(self.columns["weight"].size)


def _campaign_options(scheduler, dask_local, progress, workers=None) -> dict:
    options = {"progress": progress}
    if scheduler is None and dask_local is None and workers is not None:
        options["n_workers"] = workers
    if scheduler is not None:
        options["scheduler"] = scheduler
    if dask_local is not None:
        options["dask_local"] = dask_local
    return options


def simulate_templates(study: Study, output_dir, scheduler=None, dask_local=None, progress=None) -> TemplateBundle:
    """Run (or resume) the study's template-sample campaign in output_dir/campaigns and build
    the Template (see the module doc)."""
    from reco import precompile
    from studies.campaign import Campaign
    from systematics.bias import binning_from_dict, reference_family
    from systematics.templates import Template, TemplateSample
    from studies.projection import reference_t_gev2

    settings = study.settings
    start = time.perf_counter()
    if settings.workers == 0 and scheduler is None and dask_local is None:
        precompile.start(study.chain)  # the reconstruction compiles on the second core
    per_shard = -(-settings.events // settings.shards)
    campaign = Campaign(sample_shard, {"chain": study.chain.data, "events": per_shard,
                                       "chunk_size": min(settings.chunk_size, per_shard)},
                        settings.seed, settings.shards, Path(output_dir) / "campaigns",
                        **_campaign_options(scheduler, dask_local, progress, settings.workers))
    summary = campaign.run()
    parts = {name: [] for name in SAMPLE_COLUMNS}
    flow = study.chain.selection.new_cutflow()
    n_generated = 0
    for shard in campaign.results():
        for name in SAMPLE_COLUMNS:
            parts[name].append(shard[name])
        flow.sum_w += shard["cutflow_sum_w"]
        flow.sum_w2 += shard["cutflow_sum_w2"]
        flow.count += shard["cutflow_count"]
        n_generated += int(np.asarray(shard["n_events"]).reshape(-1)[0])
    columns = {name: np.concatenate(values) for name, values in parts.items()}
    if columns["weight"].size == 0:
        raise ValueError(f"preset {study.name!r}: no event passed the selection in {n_generated} events; "
                         "increase events")
    chain = study.chain
    sample = TemplateSample.from_columns(columns, n_generated, chain.generator.elastic.running_coupling,
                                         chain.generator.beam.mean_energy_gev, {"preset": study.name})
    binning = binning_from_dict(settings.binning)
    template = Template(sample, binning, reference_family(chain).prototype)
    t_ref = reference_t_gev2(chain.selection, chain.nominal_beam_energy_gev, binning)
    return TemplateBundle(template, columns, flow, n_generated, t_ref, summary.to_dict(), time.perf_counter() - start)


# --- pieces of a measurement ---------------------------------------------------------------------


def pseudo_data(template, luminosity_inv_nb: float, seed: int):
    """A Poisson draw of the template's expectation at the luminosity (a Histogram)."""
    from systematics.histogram import Histogram

    expected = template.expected(None, luminosity_inv_nb)
    counts = np.random.default_rng(derive_seed(seed, PSEUDO_DATA_LABEL)).poisson(expected).astype(np.float64)
    return Histogram(template.binning, counts, counts.copy(), luminosity_inv_nb=luminosity_inv_nb,
                     metadata={"pseudo_data": True, "seed": seed})


def running_ratio(template, data, fit) -> dict:
    """Per theta_e bin: data / prediction without hadronic running (K = 0), its Poisson error,
    and the same ratio for the fitted and the generated models (summed over the other axes)."""
    binning = template.binning
    axis = binning.names.index("theta_e_rad")
    others = tuple(i for i in range(len(binning.names)) if i != axis)
    luminosity = data.luminosity_inv_nb
    reference = template.family.reference
    no_hadronic = reference.copy()
    no_hadronic[template.family.names.index("K")] = 0.0
    project = lambda h: np.asarray(h).sum(axis=others) if others else np.asarray(h)  # noqa: E731
    prediction = project(template.expected(no_hadronic, luminosity))
    norm = fit.parameters.get("norm", 1.0)
    fitted = project(template.expected(fit.theta, luminosity)) * norm
    generated = project(template.expected(reference, luminosity))
    counts = project(data.values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"theta_e_edges_rad": binning.axes[axis].edges.tolist(),
                "ratio": np.where(prediction > 0, counts / prediction, np.nan).tolist(),
                "ratio_error": np.where(prediction > 0, np.sqrt(counts) / prediction, np.nan).tolist(),
                "fitted_ratio": np.where(prediction > 0, fitted / prediction, np.nan).tolist(),
                "generated_ratio": np.where(prediction > 0, generated / prediction, np.nan).tolist()}


def cross_sections(study: Study, bundle: TemplateBundle, data, lumi: dict) -> dict:
    """sigma_MC of the selection per usable target electron (ub) and sigma_data of the
    pseudo-data (N_data / L_usable), with errors (REFERENCE.md's test-run comparison)."""
    f_sim = lumi["usable_fraction_simulated"]
    weights = bundle.columns["weight"]
    n = bundle.n_generated
    sigma_mc = weights.sum() / (n * f_sim)
    # MC error of a weighted mean over n events: sqrt(sum w^2 - (sum w)^2 / n) / n.
    sigma_mc_error = math.sqrt(max(float((weights**2).sum() - weights.sum() ** 2 / n), 0.0)) / (n * f_sim)
    usable = lumi["template_luminosity_inv_nb"] * f_sim * INV_NB_TO_INV_UB
    n_data = data.total
    out = {"sigma_mc_ub": sigma_mc, "sigma_mc_error_ub": sigma_mc_error, "n_data": n_data,
           "usable_luminosity_inv_ub": usable, "sigma_data_ub": n_data / usable,
           "sigma_data_error_ub": math.sqrt(n_data) / usable, "pseudo_data": True}
    flow = bundle.cutflow.table()
    out["selection_efficiency_usable"] = flow[-1]["weighted_count"] / (flow[0]["weighted_count"] * f_sim)
    compare = study.settings.compare
    if "sigma_mc_ub" in compare:
        out["reference_sigma_mc_ub"] = compare["sigma_mc_ub"]
        out["ratio_to_reference"] = sigma_mc / compare["sigma_mc_ub"]
    return out


def run_biases(study: Study, lumi: dict, output_dir, scheduler=None, dask_local=None, progress=None) -> dict:
    """The bias table of the study's systematics: `studies.budget.run_systematics` (common
    random numbers, campaign in output_dir, which also gets systematics.json, systematics.md
    and bias_budget.png), at the templates' luminosity."""
    from studies.budget import run_systematics

    settings = study.settings
    local = scheduler is None and dask_local is None
    return run_systematics(study.chain.data, settings.systematics_events * settings.systematics_shards,
                           derive_seed(settings.seed, BIAS_LABEL), output_dir, only=list(settings.systematics),
                           custom_tables=study.custom_systematics,
                           luminosity_inv_nb=lumi["template_luminosity_inv_nb"], n_shards=settings.systematics_shards,
                           binning=settings.binning, normalization="fixed" if settings.normalization == "fixed" else "free",
                           fixed=tuple(settings.fixed),
                           linearity=settings.linearity, n_workers=settings.workers if local else None,
                           scheduler=scheduler, dask_local=dask_local, progress=progress,
                           chunk_size=min(settings.chunk_size, settings.systematics_events))


# --- the report ----------------------------------------------------------------------------------


def _elastic_curve(beam_energy_gev, theta_e_edges):
    from fastsim.physics.kinematics import ElasticKinematics

    low = max(float(theta_e_edges[0]), 1e-4)
    theta_e = np.linspace(low, float(theta_e_edges[-1]), 300)
    return theta_e, ElasticKinematics(beam_energy_gev).theta_mu_from_theta_e(theta_e)


def _plots(summary, bundle, output_dir) -> dict:
    from studies import plots

    out = {}
    template = bundle.template
    binning = template.binning
    lumi = summary["luminosity"]["template_luminosity_inv_nb"]
    if binning.names[:2] == ("theta_e_rad", "theta_mu_rad"):
        expected = template.expected(None, lumi)
        if expected.ndim == 2:
            curve_e, curve_mu = _elastic_curve(template.beam_energy_gev, binning.axes[0].edges)
            out["angles_2d"] = plots.plot_angles_2d(binning.axes[0].edges, binning.axes[1].edges, expected,
                                                    output_dir / "angles_2d.png", curve_e, curve_mu,
                                                    title=f"{summary['preset']}: selected events (expected)").name
    ratio = summary.get("running_ratio")
    if ratio:
        out["running_ratio"] = plots.plot_running_ratio(ratio["theta_e_edges_rad"], ratio["ratio"], ratio["ratio_error"],
                                                        ratio["fitted_ratio"], output_dir / "running_ratio.png",
                                                        ratio["generated_ratio"],
                                                        title=f"{summary['preset']}: hadronic running").name
    toys = summary.get("toys")
    if toys and toys.get("pulls"):
        out["pulls"] = plots.plot_pulls(toys["pulls"], output_dir / "pulls.png",
                                        title=f"{summary['preset']}: {toys['n_toys']} pseudo-experiments").name
    if summary.get("biases") and (output_dir / "bias_budget.png").exists():
        out["bias_budget"] = "bias_budget.png"  # drawn by studies.budget.run_systematics
    return out


def _report(summary: dict, output_dir: Path) -> Path:
    from studies.report import fixed_suffix, image_link, markdown_table, write_markdown, write_report

    sections = []
    settings = summary["study"]["settings"]
    lumi = summary["luminosity"]
    text = (f"{settings['description']}\n\nPreset `{summary['preset']}` ({summary['study']['source']}), "
            f"seed {settings['seed']}, {summary['events']} events generated, {summary['selected_events']} selected; "
            f"chain hash `{summary['chain_hash']}`, toolkit {summary['version']}; wall time "
            f"{summary['wall_time_s']:.1f} s.\n\n")
    text += (f"Luminosity {lumi['luminosity_inv_nb']:.4g} nb^-1 over {lumi['experiment_stations']} stations "
             f"(usable, with an upstream station: {lumi['usable_luminosity_inv_nb']:.4g} nb^-1); "
             f"{lumi['simulated_stations']} stations simulated, templates scaled to "
             f"{lumi['template_luminosity_inv_nb']:.4g} nb^-1.\n")
    if "per_target" in lumi:
        text += "\nLuminosity from the beam flux, L = N_mu d rho (Z/A) N_A, with N_mu = " \
                f"{lumi['beam_muons']:.4g}:\n\n" + markdown_table(lumi["per_target"])
    sections.append(("Study", text))

    tables = {}
    tables["cutflow.md"] = markdown_table(summary["cutflow"], ["cut", "count", "weighted_count", "weighted_count_error",
                                                               "efficiency", "cumulative_efficiency"])
    sections.append(("Cut flow", "Weights are ub per target electron, summed over the generated events "
                     "(first-station events have no incoming track and fail golden_muon).\n\n" + tables["cutflow.md"]))
    fit = summary["fit"]
    fixed = settings.get("fixed") or {}
    rows = [{"parameter": name, "value": fit["parameters"][name],
             "error": "fixed" if name in fixed else fit["errors"][name], "generated": summary["generated"].get(name)}
            for name in fit["names"]]
    rows.append({"parameter": "a_mu^HLO x 1e10", "value": fit.get("amu_1e10"), "error": fit.get("amu_error_1e10"),
                 "generated": summary["generated"]["amu"] * 1e10})
    tables["fit.md"] = markdown_table(rows)
    proj = summary["projection"]
    fit_text = (f"Fit ({fit['method']}, normalization {settings['normalization']}{fixed_suffix(fixed)}) of the "
                "pseudo-data: "
                f"valid = {fit['valid']} ({fit['status']}); a_mu^HLO = ({fit.get('amu_1e10', math.nan):.2f} +- "
                f"{fit.get('amu_error_1e10', math.nan):.2f}) 1e-10, {fit.get('fraction_in_range', math.nan) * 100:.1f} % of "
                f"the integral inside the measured range.\n\n" + tables["fit.md"]
                + f"\nExpected (Asimov) statistical error: a_mu^HLO {proj['amu_stat_error_rel'] * 100:.3g} %, "
                  f"Dalpha_had(t_ref = {proj['t_ref_gev2']:.4g} GeV^2) {proj['dalpha_had_stat_error_rel'] * 100:.3g} %"
                + (f" ({', '.join(fixed)} held at the generated value: the errors of the free parameters alone, "
                   "conditional on it).\n" if fixed else ".\n"))
    sections.append(("Fit", fit_text))
    if summary.get("cross_sections"):
        xs = summary["cross_sections"]
        text = markdown_table([xs], ["sigma_mc_ub", "sigma_mc_error_ub", "n_data", "sigma_data_ub", "sigma_data_error_ub",
                                     "selection_efficiency_usable", "reference_sigma_mc_ub", "ratio_to_reference"])
        tables["cross_sections.md"] = text
        sections.append(("Cross sections", "sigma_MC: selected weighted cross section per electron of the usable "
                         "targets; sigma_data: pseudo-data count over the usable luminosity (the pseudo-data are a "
                         "Poisson draw of the MC, so this only checks the normalization chain).\n\n" + text))
    goals = proj.get("goals", {})
    if goals:
        text = markdown_table([{"quantity": k, **v} for k, v in goals.items()],
                              ["quantity", "goal", "projected", "ratio", "luminosity_for_goal_inv_nb"])
        tables["goals.md"] = text
        sections.append(("Projection", text))
    if summary.get("biases"):
        from studies.budget import bias_table_markdown

        b = summary["biases"]
        summary.setdefault("extra_tables", []).append("systematics.md")
        sections.append(("Systematics", f"Bias on a_mu^HLO of each systematic with common random numbers "
                         f"({b['n_shards']} shards, {b['events']} events per run; table also in "
                         f"[systematics.md](systematics.md)); `required_precision`: the size that keeps the bias "
                         f"below {b['threshold']:.2g} of the statistical error.\n\n" + bias_table_markdown(b)))
    if summary.get("toys", {}).get("error"):
        sections.append(("Pseudo-experiments", f"Not run: {summary['toys']['error']}\n"))
    elif summary.get("toys"):
        t = summary["toys"]["summary"]
        row = {k: t.get(k) for k in ("n_toys", "n_failed", "n_mass_undetermined")}
        row.update({f"{k} (1e-10)": t[k] * 1e10 for k in ("amu_true", "amu_mean", "amu_std", "amu_stat_error_mean")})
        row.update({k: t.get(k) for k in ("pull_mean", "pull_std", "coverage_68")})
        text = markdown_table([row])
        if t.get("n_mass_undetermined"):
            text += (f"\n{t['n_mass_undetermined']} of the {t['n_toys']} toy fits ran to M far above the template's t "
                     "range, where the running is linear in t and M is not determined: their a_mu^HLO errors are not "
                     "reliable, and with them the pulls and the coverage above (see `systematics.fit.MASS_LINEAR_RATIO`).\n")
        sections.append(("Pseudo-experiments", text))
    figures = "".join(image_link(name, caption) for caption, name in (
        ("2D (theta_e, theta_mu) distribution with the elastic curve", summary["plots"].get("angles_2d")),
        ("ratio to the no-hadronic-running prediction, with the fit", summary["plots"].get("running_ratio")),
        ("pulls of the pseudo-experiments", summary["plots"].get("pulls")),
        ("bias budget", summary["plots"].get("bias_budget")),
        ("projected errors versus luminosity", summary["plots"].get("projection")),
        ("projected errors versus stations", summary["plots"].get("projection_stations")),
    ) if name)
    sections.append(("Plots", figures))
    for name, text in tables.items():
        write_markdown(output_dir / name, text)
    summary["tables"] = sorted(tables) + summary.pop("extra_tables", [])
    return write_report(output_dir / "report.md", f"MUonE study: {summary['preset']}", sections)


# --- entry point ---------------------------------------------------------------------------------


def run_study(preset, events: int | None = None, seed: int | None = None, output_dir="muone-study",
              scheduler: str | None = None, dask_local: int | None = None, progress: bool | None = None,
              workers: int | None = None) -> dict:
    """Run a study preset end to end and write its report (see the module doc).

    Parameters
    ----------
    preset : str or path
        Preset name (`available_presets`) or TOML file.
    events, seed : int, optional
        Override the preset's events (template sample) and seed.
    output_dir : path
        Written: summary.json, report.md, *.md tables, *.png plots, campaigns/ (the shards, so
        a rerun resumes).
    scheduler, dask_local
        Run the campaigns on a Dask cluster (see `studies.campaign.Campaign`).
    progress : bool, optional
        Progress bars on stderr (default: when stderr is a terminal).
    workers : int, optional
        Override the preset's local process-pool size (0: in this process).

    Returns
    -------
    dict
        The summary (also in summary.json).
    """
    study = Study.load(preset, events=events, seed=seed, workers=workers)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if study.settings.kind == "layout_scan":
        from studies.layout import run_layout_study

        return run_layout_study(study, output_dir, scheduler=scheduler, dask_local=dask_local, progress=progress)
    return _run_measurement(study, output_dir, scheduler, dask_local, progress)


def _run_measurement(study: Study, output_dir: Path, scheduler, dask_local, progress) -> dict:
    from fastsim.physics.amu import amu_hlo
    from studies.projection import plot_curves, projection_summary, _goal_lines
    from studies.report import write_json
    from systematics.fit import fit_histogram
    from systematics.result import FitError
    from systematics.toys import run_toys

    start = time.perf_counter()
    settings = study.settings
    bundle = simulate_templates(study, output_dir, scheduler, dask_local, progress)
    lumi = luminosity_summary(study)
    luminosity = lumi["template_luminosity_inv_nb"]
    template = bundle.template
    data = pseudo_data(template, luminosity, settings.seed)
    fixed = {"fixed": dict(settings.fixed)} if settings.fixed else {}
    fit = fit_histogram(data, template, method=settings.fit_method, luminosity_inv_nb=luminosity,
                        normalization=settings.normalization, luminosity_error_rel=settings.luminosity_error_rel,
                        strict=False, **fixed)
    family = template.family
    generated = dict(zip(family.names, family.reference.tolist()))
    generated.update(norm=1.0, amu=amu_hlo(family.prototype))
    summary = {"preset": study.name, "kind": settings.kind, "study": study.to_dict(), "chain_hash": study.chain.hash,
               "version": fastsim.__version__, "seed": settings.seed, "events": bundle.n_generated,
               "selected_events": bundle.n_selected, "luminosity": lumi,
               "cutflow": bundle.cutflow.table(), "fit": fit.to_dict(), "generated": generated,
               "template_campaign": bundle.campaign}
    if fit.valid:
        summary["running_ratio"] = running_ratio(template, data, fit)
    if "per_target" in lumi or "sigma_mc_ub" in settings.compare:
        summary["cross_sections"] = cross_sections(study, bundle, data, lumi)
    if settings.toys:
        try:
            toys = run_toys(template, luminosity, settings.toys, derive_seed(settings.seed, TOYS_LABEL),
                            normalization="fixed" if settings.normalization == "fixed" else "free", **fixed)
        except FitError as error:  # the Asimov fit of a too-small template sample: reported, not used
            summary["toys"] = {"n_toys": settings.toys, "error": str(error)}
        else:
            summary["toys"] = {"n_toys": settings.toys, "summary": toys.summary(),
                               "pulls": {name: toys.pulls(name).tolist() for name in (*family.names, "amu")
                                         if name not in toys.fixed}}
    if settings.systematics:
        summary["biases"] = run_biases(study, lumi, output_dir, scheduler, dask_local, progress)
    summary["projection"] = projection_summary(study, bundle, lumi,
                                               biases=(summary.get("biases") or {}).get("biases"))
    summary["amu_stat_error_rel"] = summary["projection"]["amu_stat_error_rel"]
    summary["dalpha_had_stat_error_rel"] = summary["projection"]["dalpha_had_stat_error_rel"]
    summary["plots"] = _plots(summary, bundle, output_dir)
    paths = plot_curves(summary["projection"]["curves"], output_dir / "projection.png", lumi["luminosity_inv_nb"],
                        _goal_lines(settings), title=f"{study.name}: projection")
    summary["plots"]["projection"] = paths[0].name
    if len(paths) > 1:
        summary["plots"]["projection_stations"] = paths[1].name
    summary["wall_time_s"] = time.perf_counter() - start
    _report(summary, output_dir)
    summary["report"] = "report.md"
    write_json(output_dir / "summary.json", summary)
    return summary
