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
    ]
    if summary.mean_energy_loss_gev is not None:
        lines.append(f"mean energy loss = {summary.mean_energy_loss_gev:.5g} GeV "
                     f"(E (1 - exp(-x/X0)) = {args.energy_gev * (1 - math.exp(-summary.x_over_x0)):.5g} GeV)")
    print_result(args, result, lines)


# --- bench ------------------------------------------------------------------------------------


@command("bench", "measure the throughput (events/s per core) of each stage")
def _configure_bench(parser):
    parser.add_argument("--events", type=int, default=2_000_000, help="events per measurement (default 2e6)")
    parser.add_argument("--threads", type=int, default=1, help="numba threads (default 1: per core)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    return _run_bench


def _run_bench(args):
    from studies.bench import run_benchmarks

    results = run_benchmarks(args.events, args.threads)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"muone {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
