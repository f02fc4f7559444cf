"""The `muone` command line: thin subcommands that parse arguments, call the library and print.

Every subcommand accepts `--json` for one machine-readable JSON object on stdout. Bad input
(a ValueError from the library, an unreadable file) becomes one line on stderr and exit status
2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import fastsim
from fastsim.runtime import retain_freed_memory

COMMANDS = {}


def command(name, help_text):
    """Register `function(args)` as subcommand `name`; `configure(parser)` adds its options."""

    def register(configure):
        COMMANDS[name] = (help_text, configure)
        return configure

    return register


class UsageError(ValueError):
    """A bad command-line input found after argument parsing."""


def add_hadronic_options(parser):
    group = parser.add_argument_group("hadronic running")
    group.add_argument("--had-model", choices=["ll", "pol2", "none"], default=None,
                       help="hadronic model: lepton-like K M B(t;M) (default), pol2 c1 t + c2 t^2, or none")
    group.add_argument("--K", type=float, default=None, help="lepton-like K (default 0.13724)")
    group.add_argument("--M", type=float, default=None, help="lepton-like M in GeV^2 (default 0.0525)")
    group.add_argument("--c1", type=float, default=None, help="pol2 c1 in GeV^-2 (default -0.009057)")
    group.add_argument("--c2", type=float, default=None, help="pol2 c2 in GeV^-4 (default -0.01364)")
    group.add_argument("--had-table", metavar="FILE", default=None,
                       help="two-column file (t_gev2, dalpha_had), interpolated in ln(-t)")


def hadronic_model_from_args(args):
    """The HadronicModel named by --had-model/--had-table and its parameter options."""
    from fastsim.physics.vacuum_polarization import LeptonLikeModel, NoHadronicModel, Pol2Model, TabulatedModel

    ll_given = args.K is not None or args.M is not None
    pol2_given = args.c1 is not None or args.c2 is not None
    if args.had_table is not None:
        if args.had_model not in (None,) or ll_given or pol2_given:
            raise UsageError("--had-table cannot be combined with --had-model, --K, --M, --c1 or --c2")
        return TabulatedModel.from_file(args.had_table)
    model = args.had_model or ("pol2" if pol2_given and not ll_given else "ll")
    if model == "ll":
        if pol2_given:
            raise UsageError("--c1/--c2 belong to --had-model pol2, not to the lepton-like model")
        reference = LeptonLikeModel()
        return LeptonLikeModel(K=reference.K if args.K is None else args.K,
                               M_gev2=reference.M_gev2 if args.M is None else args.M)
    if ll_given:
        raise UsageError(f"--K/--M belong to --had-model ll, not to --had-model {model}")
    if model == "pol2":
        reference = Pol2Model()
        return Pol2Model(c1_per_gev2=reference.c1_per_gev2 if args.c1 is None else args.c1,
                         c2_per_gev4=reference.c2_per_gev4 if args.c2 is None else args.c2)
    return NoHadronicModel()


def print_result(args, payload, lines):
    """Print `payload` as JSON with --json, else the human-readable `lines`."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=_json_default))
    else:
        print("\n".join(lines))


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- xsec -------------------------------------------------------------------------------------


@command("xsec", "integrated LO mu e -> mu e cross section with cuts and running alpha")
def _configure_xsec(parser):
    parser.add_argument("--beam-energy-gev", type=float, required=True, help="muon beam energy (GeV)")
    parser.add_argument("--ee-min-gev", type=float, help="minimum electron energy (GeV)")
    parser.add_argument("--ee-max-gev", type=float, help="maximum electron energy (GeV)")
    parser.add_argument("--theta-e-min-rad", type=float, help="minimum electron angle (rad)")
    parser.add_argument("--theta-e-max-rad", type=float, help="maximum electron angle (rad)")
    parser.add_argument("--theta-mu-min-rad", type=float, help="minimum muon angle (rad)")
    parser.add_argument("--theta-mu-max-rad", type=float, help="maximum muon angle (rad)")
    parser.add_argument("--running", choices=["none", "lep", "lep+had"], default="lep+had",
                        help="running of alpha (default lep+had)")
    add_hadronic_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return _run_xsec


def _run_xsec(args):
    from fastsim.physics.cross_section import ElasticCrossSection, ElasticCuts
    from fastsim.physics.vacuum_polarization import RunningCoupling

    cuts = ElasticCuts(
        ee_min_gev=args.ee_min_gev, ee_max_gev=args.ee_max_gev,
        theta_e_min_rad=args.theta_e_min_rad, theta_e_max_rad=args.theta_e_max_rad,
        theta_mu_min_rad=args.theta_mu_min_rad, theta_mu_max_rad=args.theta_mu_max_rad,
    )
    running = RunningCoupling(args.running, hadronic_model_from_args(args))
    xsec = ElasticCrossSection(args.beam_energy_gev, running)
    sigma = xsec.sigma_ub(cuts)
    payload = {
        "sigma_ub": sigma,
        "beam_energy_gev": xsec.kinematics.beam_energy_gev,
        "cuts": cuts.describe(),
        **running.describe(),
        "version": fastsim.__version__,
    }
    print_result(args, payload, [f"sigma = {sigma:.9g} ub  (beam {args.beam_energy_gev} GeV, "
                                 f"cuts {cuts.describe()}, running {args.running})"])


# --- amu --------------------------------------------------------------------------------------


@command("amu", "a_mu^HLO from a hadronic running model, and the share MUonE's x range covers")
def _configure_amu(parser):
    add_hadronic_options(parser)
    parser.add_argument("--beam-energy-gev", type=float, default=160.0,
                        help="beam energy that sets the measured x range (default 160)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return _run_amu


def _run_amu(args):
    from fastsim.physics.amu import amu_summary

    model = hadronic_model_from_args(args)
    summary = amu_summary(model, args.beam_energy_gev)
    payload = {
        "amu": summary.amu,
        "amu_1e10": summary.amu_1e10,
        "fraction_in_range": summary.fraction_in_range,
        "x_max": summary.x_max,
        "x_upper": summary.x_upper,
        "beam_energy_gev": summary.beam_energy_gev,
        "hadronic": model.describe(),
        "version": fastsim.__version__,
    }
    lines = [f"a_mu^HLO = {summary.amu_1e10:.4f} x 1e-10  ({model.describe()})",
             f"fraction from x < x_max = {summary.x_max:.5f} ({summary.beam_energy_gev} GeV): {summary.fraction_in_range:.4f}"]
    if summary.x_upper < 1.0:
        lines.append(f"note: the table reaches x = {summary.x_upper:.5f}; the integral stops there")
    if not 0.0 <= summary.fraction_in_range <= 1.0:
        lines.append("note: the part beyond x_max, where the model is extrapolated past the measured t range, "
                     "outweighs the measured part: the model does not describe Dalpha_had there")
    print_result(args, payload, lines)


# --- generate ---------------------------------------------------------------------------------


@command("generate", "generate truth events (mu e -> mu e (gamma), mu N -> mu N e+ e-) into a Parquet file")
def _configure_generate(parser):
    parser.add_argument("--config", metavar="FILE.toml", help="generator configuration ([beam], [[targets]], [elastic], ...)")
    parser.add_argument("--beam-energy-gev", type=float, help="beam energy (GeV); default 160 or the config's")
    parser.add_argument("--beam-energy-spread-rel", type=float, help="relative Gaussian beam-energy spread")
    parser.add_argument("--ee-min-gev", type=float, help="generation cut: minimum electron energy (GeV)")
    parser.add_argument("--running", choices=["none", "lep", "lep+had"], help="running of alpha")
    parser.add_argument("--radiation", choices=["none", "nlo"], help="QED radiation beyond LO")
    parser.add_argument("--process", choices=["elastic", "pair", "all"],
                        help="elastic, pair production, or all (mixed in proportion to cross sections)")
    parser.add_argument("--unweighted", action="store_true", help="unweighted events (accept-reject)")
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument("--seed", type=int, required=True, help="random seed, a non-negative integer")
    parser.add_argument("--chunk-size", type=int, default=100_000, help="events per chunk (memory), default 1e5")
    parser.add_argument("--output", required=True, metavar="FILE.parquet", help="output Parquet file")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_generate


def generator_config_from_args(args):
    """The GeneratorConfig of --config with the command-line options applied on top."""
    import dataclasses

    from fastsim.generator.generate import GeneratorConfig

    config = GeneratorConfig.from_toml(args.config) if args.config else GeneratorConfig()
    beam = config.beam
    if args.beam_energy_gev is not None:
        beam = dataclasses.replace(beam, energy_gev=args.beam_energy_gev)
    if args.beam_energy_spread_rel is not None:
        beam = dataclasses.replace(beam, energy_spread_rel=args.beam_energy_spread_rel)
    elastic = config.elastic
    for option, key in (("ee_min_gev", "ee_min_gev"), ("running", "running"), ("radiation", "radiation")):
        if getattr(args, option) is not None:
            elastic = dataclasses.replace(elastic, **{key: getattr(args, option)})
    changes = {"beam": beam, "elastic": elastic}
    if args.process is not None:
        changes["process"] = args.process
    if args.unweighted:
        changes["unweighted"] = True
    return dataclasses.replace(config, **changes)


def _run_generate(args):
    from tqdm import tqdm

    from fastsim.generator.generate import Generator, check_event_count, write_events

    check_event_count(args.events)
    config = generator_config_from_args(args)
    generator = Generator(config, args.seed)
    with tqdm(total=args.events, unit="ev", desc="generate", file=sys.stderr, disable=None) as bar:
        summary = write_events(generator, args.events, args.output, args.chunk_size, progress=bar.update)
    summary["seed"] = generator.seed
    summary["config_hash"] = generator.metadata()["config_hash"]
    print_result(args, summary, [
        f"{summary['events']} events -> {summary['output']}",
        f"sigma = {summary['sigma_ub']:.6g} +- {summary['sigma_err_ub']:.2g} ub (MC estimate)",
    ])


# --- import -----------------------------------------------------------------------------------


@command("import", "convert MESMER or LHE events into the toolkit's truth Parquet format")
def _configure_import(parser):
    parser.add_argument("input", metavar="FILE", help="MESMER ASCII (.dat, .xz, .gz, .bz2) or LHE (.lhe, .lhe.gz) file")
    parser.add_argument("--format", choices=["auto", "mesmer", "lhe"], default="auto", help="file format (default: from the name)")
    parser.add_argument("--config", metavar="FILE.toml", help="configuration whose [[targets]] receive the vertices")
    parser.add_argument("--seed", type=int, default=0, help="seed of the vertex positions (default 0)")
    parser.add_argument("--output", required=True, metavar="FILE.parquet", help="output Parquet file")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_import


def _run_import(args):
    from fastsim.events import TruthWriter
    from fastsim.generator.external import read_external, truth_from_external
    from fastsim.generator.generate import GeneratorConfig

    targets = GeneratorConfig.from_toml(args.config).targets if args.config else GeneratorConfig().targets
    events = read_external(args.input, args.format)
    truth = truth_from_external(events, targets, args.seed)
    weights = truth["weight"]
    metadata = {**truth.metadata, "import_format": args.format, "version": fastsim.__version__}
    with TruthWriter(args.output, metadata) as writer:
        writer.write(truth)
    summary = {
        "events": len(truth), "sigma_ub": float(weights.mean()),
        "sigma_err_ub": float(weights.std() / math.sqrt(len(truth))),
        "file_sigma_ub": events.metadata.get("cross_section_ub"), "output": args.output,
    }
    print_result(args, summary, [f"{summary['events']} events -> {args.output}",
                                 f"sigma = {summary['sigma_ub']:.6g} +- {summary['sigma_err_ub']:.2g} ub (from the weights)"])


# --- scatter ----------------------------------------------------------------------------------


@command("scatter", "multiple scattering and energy loss of muons or electrons through a slab of material")
def _configure_scatter(parser):
    parser.add_argument("--particle", choices=["mu", "e"], required=True, help="mu or e")
    parser.add_argument("--energy-gev", type=float, required=True, help="particle energy (GeV)")
    parser.add_argument("--material", required=True, help="material name (Be, C, graphite, Si, Al, Cu, W, PbWO4)")
    parser.add_argument("--thickness-cm", type=float, required=True, help="slab thickness (cm)")
    parser.add_argument("--events", type=int, default=1_000_000, help="particles to simulate (default 1e6)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--ms-scale", type=float, default=1.0, help="multiple-scattering scale factor")
    parser.add_argument("--ms-model", choices=["gaussian", "mixture"], default="gaussian",
                        help="Gaussian core, or core plus single-scattering tail")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_scatter


def _run_scatter(args):
    from fastsim.detector.slab import scatter_through_slab
    from fastsim.detector.transport import SimulationSettings

    settings = SimulationSettings(ms_scale=args.ms_scale, ms_model=args.ms_model)
    _, summary = scatter_through_slab(args.particle, args.energy_gev, args.material, args.thickness_cm,
                                      args.events, args.seed, settings)
    result = summary.to_dict()
    lines = [
        f"{args.particle} {args.energy_gev} GeV through {args.thickness_cm} cm {args.material} (x/X0 = {summary.x_over_x0:.4g})",
        f"theta0 Highland   = {summary.theta0_highland_rad:.5g} rad",
        f"theta0 simulated  = {summary.theta0_sim_rad:.5g} +- {summary.theta0_sim_error_rad:.2g} rad ({summary.theta0_definition})",
        f"position-angle correlation = {summary.pos_angle_correlation:.4f} (sqrt(3)/2 = 0.8660)",
        f"position RMS at the exit = {summary.position_rms_cm:.5g} cm",
    ]
    if summary.mean_energy_loss_gev is not None:
        lines.append(f"mean energy loss = {summary.mean_energy_loss_gev:.5g} +- {summary.mean_energy_loss_error_gev:.2g} GeV "
                     f"(E (1 - exp(-x/X0)) = {args.energy_gev * (1 - math.exp(-summary.x_over_x0)):.5g} GeV)")
    print_result(args, result, lines)


# --- simulate / calibrate ---------------------------------------------------------------------


def add_chain_options(parser, required=True):
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE.toml", help="chain configuration (see reco.chain), or a study file with [chain]")
    source.add_argument("--preset", metavar="NAME", help="a study preset (studies/presets) or a geometry preset name")
    parser.add_argument("--events", type=int, required=required, help="number of generated events")
    parser.add_argument("--seed", type=int, required=required, help="random seed, a non-negative integer")
    parser.add_argument("--chunk-size", type=int, default=100_000, help="events per chunk (memory), default 1e5")


def chain_config_from_args(args, mode=None, calibration=None):
    from reco.chain import ChainConfig
    from studies.configs import chain_table

    table = chain_table(args.config, args.preset)
    if mode is not None:
        table["mode"] = mode
    if calibration is not None:
        table["calibration"] = calibration
    return ChainConfig.from_dict(table, where=args.config or (f"preset {args.preset}" if args.preset else "config"))


@command("simulate", "generate, simulate, reconstruct and select events into a Parquet file and a cut flow")
def _configure_simulate(parser):
    add_chain_options(parser)
    parser.add_argument("--mode", choices=["full", "parametric"], help="full reconstruction or the parametric mode")
    parser.add_argument("--calibration", metavar="FILE.npz", help="parametric response from `muone calibrate`")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (events.parquet, cutflow.json)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_simulate


def _run_simulate(args):
    from tqdm import tqdm

    from reco import precompile
    from reco.chain import Chain, write_chain

    config = chain_config_from_args(args, args.mode, args.calibration)
    precompile.start(config)
    chain = Chain(config, args.seed)
    with tqdm(total=args.events, unit="ev", desc="simulate", file=sys.stderr, disable=None) as bar:
        summary = write_chain(chain, args.events, args.output, args.chunk_size, progress=bar.update)
    lines = [f"{summary['events']} events ({summary['mode']} mode) -> {summary['output']}",
             f"{'cut':<16s} {'weighted':>14s} {'events':>9s} {'efficiency':>10s}"]
    lines += [f"{row['cut']:<16s} {row['weighted_count']:14.6g} {row['count']:9d} {row['efficiency']:10.4f}"
              for row in summary["cutflow"]]
    lines.append(f"selected cross section: {summary['sigma_selected_ub']:.5g} +- {summary['sigma_selected_err_ub']:.2g} ub")
    print_result(args, summary, lines)


@command("calibrate", "measure the parametric-mode response from the full reconstruction")
def _configure_calibrate(parser):
    add_chain_options(parser)
    parser.add_argument("--output", required=True, metavar="FILE.npz", help="response file for --mode parametric")
    parser.add_argument("--neighbours", type=int, metavar="K",
                        help="draw each event's residual from the K calibration events nearest in true theta_e "
                             "(default 256)")
    parser.add_argument("--max-vectors-per-bin", type=int, metavar="N",
                        help="keep at most N residual vectors per 1 mrad theta_e bin (smaller file, less precise); "
                             "default all")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_calibrate


def _run_calibrate(args):
    from tqdm import tqdm

    from reco import precompile
    from reco.chain import calibrate_chain

    config = chain_config_from_args(args, mode="full")
    precompile.start(config)
    with tqdm(total=args.events, unit="ev", desc="calibrate", file=sys.stderr, disable=None) as bar:
        summary = calibrate_chain(config, args.events, args.seed, args.output, args.chunk_size, progress=bar.update,
                                  neighbours=args.neighbours, max_vectors_per_bin=args.max_vectors_per_bin)
    print_result(args, summary, [f"response of {summary['events']} events ({summary['bins']} theta_e bins, "
                                 f"{summary['vectors']} residual vectors, {summary['file_bytes'] / 1e6:.1f} MB) "
                                 f"-> {summary['output']}"])


# --- histogram / fit / toys -------------------------------------------------------------------


def add_binning_options(parser):
    parser.add_argument("--theta-e-bins", type=float, nargs=3, metavar=("N", "LOW", "HIGH"),
                        help="theta_e binning (rad); default 64 bins in [0, 0.032]")
    parser.add_argument("--theta-mu-bins", type=float, nargs=3, metavar=("N", "LOW", "HIGH"),
                        help="theta_mu binning (rad); default 48 bins in [0.0002, 0.005]")
    parser.add_argument("--one-d", action="store_true", help="fit theta_e only (1D templates)")


def add_fix_option(parser):
    parser.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                        help="hold a fit parameter at a value, e.g. --fix M_gev2=0.0525 to fit K alone (a short run "
                             "constrains M hardly at all); repeatable")


def fixed_parameters(args) -> dict:
    """{name: value} of the --fix options."""
    fixed = {}
    for item in args.fix:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            number = float(value) if sep and name else None
        except ValueError:
            number = None
        if number is None:
            raise UsageError(f"--fix {item!r} is not NAME=VALUE with a number (e.g. --fix M_gev2=0.0525)")
        if name in fixed:
            raise UsageError(f"--fix gives {name!r} twice")
        fixed[name] = number
    return fixed


def _fit_failure_hint(result) -> str:
    """What to try after a failed fit of several hadronic parameters."""
    free = [n for n in result.hadronic_names if n not in result.details.get("fixed", {})]
    if len(free) < 2:
        return ""
    return (f"; a small sample may not constrain all of {free}: fit fewer parameters with --method minuit --fix "
            "(for the lepton-like model --fix M_gev2=0.0525 fits K alone), or use more luminosity")


def binning_from_args(args):
    from systematics.bias import binning_from_dict

    spec = {"theta_e_rad": args.theta_e_bins or [64, 0.0, 0.032]}
    if not args.one_d:
        spec["theta_mu_rad"] = args.theta_mu_bins or [48, 0.0002, 0.005]
    return binning_from_dict({name: [int(v[0]), v[1], v[2]] if v[0] == int(v[0]) else v for name, v in spec.items()})


def template_sample_path(path):
    """A sample given as a `muone simulate` directory or a Parquet file."""
    from pathlib import Path

    path = Path(path)
    return path / "events.parquet" if path.is_dir() else path


@command("histogram", "expected (Asimov) or Poisson pseudo-data histogram of a simulated sample")
def _configure_histogram(parser):
    parser.add_argument("sample", metavar="SAMPLE", help="a `muone simulate` directory or its events.parquet")
    parser.add_argument("--luminosity-inv-nb", type=float, required=True, help="integrated luminosity (nb^-1)")
    parser.add_argument("--seed", type=int, help="draw Poisson counts with this seed (default: the expectation)")
    add_binning_options(parser)
    parser.add_argument("--output", required=True, metavar="HIST.json", help="histogram file for `muone fit --data`")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_histogram


def _run_histogram(args):
    import numpy as np

    from fastsim.rng import derive_seed, validate_seed
    from systematics.histogram import Histogram
    from systematics.templates import TemplateSample

    sample = TemplateSample.from_parquet(template_sample_path(args.sample))
    histogram = sample.reweighted_histogram(binning_from_args(args), None, args.luminosity_inv_nb)
    if args.seed is not None:
        generator = np.random.default_rng(derive_seed(validate_seed(args.seed), 0))
        counts = generator.poisson(histogram.values).astype(np.float64)
        histogram = Histogram(histogram.binning, counts, counts, luminosity_inv_nb=args.luminosity_inv_nb,
                              metadata={"seed": args.seed, "sample": str(args.sample)})
    histogram.save(args.output)
    payload = {"output": args.output, "total": histogram.total, "bins": int(histogram.values.size),
               "luminosity_inv_nb": args.luminosity_inv_nb, "poisson": args.seed is not None}
    print_result(args, payload, [f"{histogram.total:.6g} events in {histogram.values.size} bins -> {args.output}"])


@command("fit", "fit the hadronic running (K, M) to a histogram with templates, and extract a_mu^HLO")
def _configure_fit(parser):
    parser.add_argument("--data", required=True, metavar="HIST.json", help="data histogram (`muone histogram`)")
    parser.add_argument("--templates", required=True, metavar="SAMPLE",
                        help="template sample: a `muone simulate` directory or Parquet file with true t")
    parser.add_argument("--method", choices=["minuit", "grid", "mcmc"], default="minuit", help="fit method (default minuit)")
    parser.add_argument("--normalization", choices=["free", "constrained", "fixed"], default="free",
                        help="normalization: free (default), constrained by --luminosity-error-rel, or fixed")
    parser.add_argument("--luminosity-error-rel", type=float, help="relative luminosity error (constrained normalization)")
    parser.add_argument("--luminosity-inv-nb", type=float, help="luminosity of the data (default: the histogram's)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the MCMC walkers (default 1)")
    add_fix_option(parser)
    parser.add_argument("--json", action="store_true", help="print the fit result as JSON")
    return _run_fit


def _run_fit(args):
    from systematics.fit import fit_histogram
    from systematics.histogram import Histogram
    from systematics.templates import Template, TemplateSample

    data = Histogram.load(args.data)
    sample = TemplateSample.from_parquet(template_sample_path(args.templates))
    fixed = fixed_parameters(args)
    if fixed and args.method != "minuit":
        raise UsageError(f"--fix needs --method minuit (the {args.method} method fits every parameter)")
    template = Template(sample, data.binning)
    options = {"seed": args.seed} if args.method == "mcmc" else {}
    if fixed:
        options["fixed"] = fixed
    result = fit_histogram(data, template, args.method, args.luminosity_inv_nb, args.normalization,
                           args.luminosity_error_rel, strict=False, **options)
    payload = result.to_dict()
    if not result.valid:
        print_result(args, payload, [f"fit failed: {result.status}"])
        raise ValueError(f"the {args.method} fit did not converge: {result.status}{_fit_failure_hint(result)}")
    amu = result.amu
    lines = [f"{name:>8s} = {value:.6g} " + ("(fixed)" if name in fixed else f"+- {error:.2g}") for name, value, error in
             zip(result.names, result.values, result.errors)]
    lines.append(f"a_mu^HLO = ({amu.value * 1e10:.2f} +- {amu.error * 1e10:.2f}) 1e-10, "
                 f"{amu.fraction_in_range * 100:.1f} % inside the measured range")
    print_result(args, payload, lines)


@command("toys", "pseudo-experiments: Asimov closure, pulls and coverage of K, M and a_mu^HLO")
def _configure_toys(parser):
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE.toml", help="chain configuration (see reco.chain)")
    source.add_argument("--preset", metavar="NAME", help="a study preset or a geometry preset name")
    parser.add_argument("--templates", metavar="SAMPLE", help="use this simulated sample instead of simulating one")
    parser.add_argument("--events", type=int, default=200_000, help="events simulated for the templates (default 2e5)")
    parser.add_argument("--luminosity-inv-nb", type=float, required=True, help="luminosity of each toy (nb^-1)")
    parser.add_argument("--toys", type=int, required=True, help="number of pseudo-experiments")
    parser.add_argument("--seed", type=int, required=True, help="random seed")
    parser.add_argument("--normalization", choices=["free", "constrained", "fixed"], default="free")
    parser.add_argument("--luminosity-error-rel", type=float, help="relative luminosity error (constrained normalization)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the toy fits (default 1)")
    add_binning_options(parser)
    add_fix_option(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_toys


def _run_toys(args):
    from systematics.templates import Template, TemplateSample
    from systematics.toys import run_toys

    if args.templates is not None:
        if args.config or args.preset:
            raise UsageError("--templates replaces --config/--preset: give one of them")
        sample = TemplateSample.from_parquet(template_sample_path(args.templates))
    else:
        from reco.chain import Chain

        args.chunk_size = 100_000
        config = chain_config_from_args(args)
        sample = simulated_template_sample(Chain(config, args.seed), args.events)
    fixed = fixed_parameters(args)
    template = Template(sample, binning_from_args(args))
    result = run_toys(template, args.luminosity_inv_nb, args.toys, args.seed, normalization=args.normalization,
                      luminosity_error_rel=args.luminosity_error_rel, workers=args.workers, fixed=fixed)
    payload = result.to_dict()
    lines = [f"{key:>22s} = {payload[key]:.6g}" for key in
             ("amu_true", "asimov_amu", "amu_mean", "amu_std", "amu_stat_error_mean", "pull_mean", "pull_std", "coverage_68",
              "n_failed", "n_mass_undetermined")]
    print_result(args, payload, lines)


def simulated_template_sample(chain, n_events, chunk_size=100_000):
    """The selected events of n_events events of `chain` as a TemplateSample."""
    import numpy as np

    from systematics.templates import TemplateSample

    keep = {name: [] for name in ("theta_e_rad", "theta_mu_rad", "weight", "true_t_gev2")}
    for events in chain.run(n_events, chunk_size):
        selected = events["selected"]
        for name in keep:
            keep[name].append(events[name][selected])
    columns = {name: np.concatenate(parts) for name, parts in keep.items()}
    elastic = chain.config.generator.elastic
    return TemplateSample.from_columns(columns, n_events, elastic.running_coupling,
                                       chain.config.generator.beam.mean_energy_gev, chain.metadata())


# --- systematics --------------------------------------------------------------------------------


def add_executor_options(parser, shards=True):
    """--scheduler / --dask-local (and --workers, --shards): where a campaign's shards run."""
    group = parser.add_argument_group("where the shards run")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address, e.g. tcp://HOST:8786")
    where.add_argument("--dask-local", type=int, metavar="N", help="start a local Dask cluster of N workers")
    if shards:
        where.add_argument("--workers", type=int, metavar="N",
                           help="local processes (default: all cores; 0 = in this process)")
        group.add_argument("--shards", type=int, default=4, help="shards the events are split into (default 4)")


@command("systematics", "bias of each systematic on a_mu^HLO with common random numbers, and the bias budget")
def _configure_systematics(parser):
    add_chain_options(parser, required=False)
    parser.add_argument("--only", metavar="NAME,...", help="systematics to run (default: the whole catalogue); "
                                                           "see `muone systematics --list`")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--luminosity-inv-nb", type=float, default=1.5e7,
                        help="luminosity of the statistical error the biases are compared with (default 1.5e7)")
    parser.add_argument("--normalization", choices=["free", "fixed"], default="free", help="normalization in the fit")
    parser.add_argument("--fix", action="append", default=[], metavar="NAME",
                        help="hold a hadronic parameter at its generated value in the bias fits, e.g. --fix M_gev2 "
                             "(as a study with fixed = {M_gev2 = ...}); repeatable")
    parser.add_argument("--threshold", type=float, default=1.0 / 3.0,
                        help="allowed bias as a fraction of the statistical error (default 1/3)")
    parser.add_argument("--no-linearity", action="store_true", help="only +1 sigma (no check at -2, -1, +2 sigma)")
    add_executor_options(parser)
    parser.add_argument("--output", metavar="DIR", help="output directory (shards, systematics.json/.md, bias_budget.png)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return _run_systematics


def _run_systematics(args):
    from fastsim.config import load_toml
    from studies.budget import run_systematics
    from studies.configs import chain_table, preset_path, available_presets
    from studies.report import fixed_suffix
    from systematics import catalogue

    if args.list:
        rows = [s.to_dict() for s in catalogue.select(None)]
        print_result(args, {"systematics": rows},
                     [f"{r['name']:<22s} {r['mode']:<6s} {r['sigma']!s:<10s} {', '.join(r['keys']) or ' '.join(r['description'].split())}"
                      for r in rows])
        return
    for option in ("events", "seed", "output"):
        if getattr(args, option) is None:
            raise UsageError(f"--{option} is required (unless --list)")
    custom = []
    source = args.config or (preset_path(args.preset) if args.preset in available_presets() else None)
    if source is not None:
        custom = load_toml(source).get("systematics", [])
    summary = run_systematics(chain_table(args.config, args.preset), args.events, args.seed, args.output,
                              only=args.only, custom_tables=custom, luminosity_inv_nb=args.luminosity_inv_nb,
                              n_shards=args.shards, normalization=args.normalization, threshold=args.threshold,
                              linearity=not args.no_linearity, n_workers=args.workers, scheduler=args.scheduler,
                              dask_local=args.dask_local, chunk_size=args.chunk_size, fixed=tuple(args.fix))
    lines = [f"stat. error on a_mu^HLO: {summary['stat_error_amu'] * 1e10:.4g}e-10 at {args.luminosity_inv_nb:.3g} nb^-1"
             + fixed_suffix(summary["fixed"])]
    lines += [f"{r['name']:<22s} {r['shift']:<12s} delta a_mu = {r['delta_amu'] * 1e10:+.4g} +- "
              f"{r['delta_amu_mc_error'] * 1e10:.2g} e-10   required precision {r['required_precision']:.3g}"
              + ("" if r["resolved"] else "   (not resolved by the MC: more events)")
              + ("" if r["linear_regime"] else "   (outside the linear regime: see systematics.md)")
              for r in summary["biases"]]
    lines += [f"{r['name']:<22s} not run: {r['reason']}" for r in summary["not_applicable"]]
    lines.append(f"report: {args.output}/systematics.md, {args.output}/bias_budget.png")
    print_result(args, summary, lines)


# --- study / project ----------------------------------------------------------------------------


@command("study", "run a study preset end to end and write its report (summary.json, tables, plots, report.md)")
def _configure_study(parser):
    parser.add_argument("preset", metavar="PRESET", help="a study preset (quickstart, tr2023, phase1_2025, full, "
                                                          "layout_scan, systematics_budget) or a study TOML file")
    parser.add_argument("--events", type=int, help="events to simulate (default: the preset's)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--output", metavar="DIR", help="output directory (default muone-PRESET)")
    add_executor_options(parser, shards=False)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return _run_study


def _run_study(args):
    from pathlib import Path

    from studies.report import fixed_suffix
    from studies.study import run_study

    output = args.output or f"muone-{Path(args.preset).stem}"
    summary = run_study(args.preset, events=args.events, seed=args.seed, output_dir=output,
                        scheduler=args.scheduler, dask_local=args.dask_local, progress=None)
    lines = [f"report: {output}/report.md"]
    fit = summary.get("fit") or {}
    if "amu_1e10" in fit:
        lines.append(f"a_mu^HLO = ({fit['amu_1e10']:.2f} +- {fit.get('amu_error_1e10', float('nan')):.2f}) 1e-10"
                     + fixed_suffix(summary["study"]["settings"].get("fixed") or {}))
    for key in ("amu_stat_error_rel", "dalpha_had_stat_error_rel"):
        if key in summary:
            lines.append(f"{key} = {summary[key]:.4g}")
    print_result(args, summary, lines)


@command("project", "precision projection: statistical error on Dalpha_had and a_mu^HLO against luminosity")
def _configure_project(parser):
    parser.add_argument("--preset", required=True, metavar="NAME", help="a study preset or a study TOML file")
    parser.add_argument("--luminosity-inv-nb", type=float, help="integrated luminosity (default: the preset's)")
    parser.add_argument("--events", type=int, help="events simulated for the templates (default: the preset's)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--output", metavar="DIR", help="write the projection plots here")
    add_executor_options(parser, shards=False)
    parser.add_argument("--json", action="store_true", help="print the projection as JSON")
    return _run_project


def _run_project(args):
    from studies.projection import project

    result = project(args.preset, luminosity_inv_nb=args.luminosity_inv_nb, events=args.events, seed=args.seed,
                     output_dir=args.output, scheduler=args.scheduler, dask_local=args.dask_local, progress=None)
    lines = [f"luminosity {result['luminosity_inv_nb']:.4g} nb^-1:",
             f"  a_mu^HLO stat. error      {result['amu_stat_error_rel'] * 100:.3f} %",
             f"  Dalpha_had(t = {result['t_ref_gev2']:.4g} GeV^2) stat. error {result['dalpha_had_stat_error_rel'] * 100:.2f} %"]
    for name, goal in result.get("goals", {}).items():
        lines.append(f"  goal {name}: {goal}")
    print_result(args, result, lines)


# --- bench ------------------------------------------------------------------------------------


@command("bench", "measure the throughput (events/s per core) of each stage")
def _configure_bench(parser):
    parser.add_argument("--events", type=int, default=2_000_000, help="events per measurement (default 2e6)")
    parser.add_argument("--threads", type=int, default=1, help="numba threads (default 1: per core)")
    parser.add_argument("--chain", action="store_true", help="also the full and the parametric chain (slower)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_bench


def _run_bench(args):
    from studies.bench import run_benchmarks, run_chain_benchmarks

    results = run_benchmarks(args.events, args.threads)
    if args.chain:
        results += run_chain_benchmarks(max(args.events // 10, 20_000), args.threads)
    lines = [f"{r['stage']:<40s} {r['events_per_s']:12.4g} events/s  ({r['threads']} thread(s))" for r in results]
    print_result(args, {"benchmarks": results}, lines)


# --- entry point ------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        prog="muone",
        description="MUonE fast simulation and systematics toolkit. Units: GeV, rad, cm, ub.",
    )
    parser.add_argument("--version", action="version", version=f"muone {fastsim.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, configure) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=configure(sub))
    return parser


def main(argv=None):
    retain_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"muone {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
