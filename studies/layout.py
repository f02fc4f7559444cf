"""Detector-layout scans: statistical error, resolution and misalignment sensitivity per layout.

What to use when:

- `scan(base_config, {dotted_key: values}, events=..., seed=...)` evaluates every layout of a
  scan and returns a pandas DataFrame, one row per layout. Keys are dotted keys of a
  `reco.chain.ChainConfig` (``"geometry.stations.*.target.thickness_cm"``); values are a list
  (set the key to each value), or ``{"scale": [...]}`` / ``{"add": [...]}`` (change every value
  at the key, e.g. all module z positions scaled: the station length). Several keys separated by
  commas get the same change (``"simulation.diffusion_sigma_cm,reconstruction.tracking.diffusion_sigma_cm"``).
  ``grid=True`` scans the product of the keys; ``grid=False`` each key alone around the base.
- `evaluate_layout(config, ...)` is one row; `objective(values, base_config, ...)` is the figure
  of merit to minimise for an optimizer (scipy.optimize, a grid, a Bayesian optimizer): a float
  for a dict of key -> value.
- `ms_resolution_rad(geometry, ...)` and `hit_resolution_rad(geometry)` are the closed-form
  resolution estimates alone (no simulation).

Columns of a row (per layout):

- ``amu_stat_error`` and ``amu_stat_error_rel``: expected statistical error on a_mu^HLO at the
  scan's luminosity (`systematics.bias.LinearFit`, the fit's Fisher information). Give
  ``beam_muons`` to compare layouts at the same beam exposure (then L = N_mu * sum of the
  targets' electrons per cm^2 changes with the targets), or ``luminosity_inv_nb`` for a fixed L.
- ``ms_resolution_rad``: the multiple-scattering-limited angular resolution of an electron of
  ``electron_energy_gev`` (default 10 GeV, theta_e ~ 10 mrad at 160 GeV) leaving the middle
  of the first usable target: Highland (PDG eq. 34.16) on half the target's x/X0.
  ``hit_resolution_rad``: the measurement term of a straight-line fit of the station's modules
  in the x projection, sigma_hit / sqrt(sum_i c_i^2 (z_i - zbar)^2) with c_i the projection of
  module i's measured direction on x (X: 1, U/V: cos 45 deg, Y: 0) and sigma_hit its cluster
  resolution (pitch / sqrt 12 unless set). ``angular_resolution_rad``: both in quadrature.
- ``delta_amu_per_10um`` and its Monte Carlo error: the bias on a_mu^HLO of the catalogue's
  ``module_z`` systematic (downstream modules of every station moved by 10 um along z), with
  common random numbers (`systematics.bias.bias_shard`, 2 shards).
- ``figure_of_merit``: the total relative error sigma_tot = sqrt(stat_rel^2 + (delta_amu_10um / a_mu)^2),
  statistical error and the bias of a 10 um misalignment in quadrature: smaller is better; the
  objective returns it.

Events: every row runs the full chain twice (nominal and misaligned) on 2 shards of `events`
events each, so a scan of n layouts costs 4 n `events` chain events.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from fastsim.config import check_integer, check_range
from fastsim.rng import derive_seed

CHANGE_MODES = ("scale", "add")
MISALIGNMENT_SYSTEMATIC = "module_z"
#: The systematic "module_z" moves modules by 1e-3 cm = 10 um at one sigma.
DEFAULT_ELECTRON_ENERGY_GEV = 10.0
N_SHARDS = 2


def _changer(mode, value):
    if mode == "set":
        return lambda v: value
    if mode == "scale":
        return lambda v: v * value
    return lambda v: v + value


def apply_change(config, key: str, mode: str, value):
    """`config` with each comma-separated dotted key of `key` set to (mode "set"), multiplied by
    ("scale") or increased by ("add") `value`."""
    for one in key.split(","):
        one = one.strip()
        if mode == "set":
            config = config.with_change(one, _changer(mode, value), create=True)
        else:
            config = config.with_change(one, _changer(mode, value))
    return config


def _scan_axes(spec: dict) -> list[tuple[str, str, list]]:
    """[(key, mode, values)] of a scan specification (ValueError naming a bad entry)."""
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"scan = {spec!r} must be a non-empty table of dotted key -> values")
    axes = []
    for key, values in spec.items():
        mode = "set"
        if isinstance(values, dict):
            if len(values) != 1 or next(iter(values)) not in CHANGE_MODES:
                raise ValueError(f"scan.{key} = {values!r} must be a list of values or one of "
                                 f"{{scale = [...]}}, {{add = [...]}}")
            mode, values = next(iter(values.items()))
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"scan.{key} = {values!r} must be a non-empty list of values")
        axes.append((key, mode, list(values)))
    return axes


def layouts(base_config, spec: dict, grid: bool = True):
    """Yield (values dict, configuration) for each layout of the scan (see `scan`)."""
    axes = _scan_axes(spec)
    if grid:
        for combination in itertools.product(*(values for _, _, values in axes)):
            config = base_config
            for (key, mode, _), value in zip(axes, combination):
                config = apply_change(config, key, mode, value)
            yield {key: value for (key, _, _), value in zip(axes, combination)}, config
    else:
        for key, mode, values in axes:
            for value in values:
                yield {key: value}, apply_change(base_config, key, mode, value)


# --- closed-form resolution ------------------------------------------------------------------


def _first_usable_station(geometry):
    for index, station in enumerate(geometry.stations):
        if index >= 1 and station.target is not None:
            return station
    raise ValueError(f"geometry {geometry.name!r} has no target in a station with an upstream station")


def ms_resolution_rad(geometry, electron_energy_gev: float = DEFAULT_ELECTRON_ENERGY_GEV) -> float:
    """Highland width (PDG eq. 34.16) of an electron of `electron_energy_gev` crossing half the
    first usable target (the mean path from the vertex), in rad."""
    from fastsim.detector.interactions import highland_theta0_rad
    from fastsim.units import ELECTRON_MASS_GEV

    energy = check_range("electron_energy_gev", electron_energy_gev, ELECTRON_MASS_GEV, math.inf, low_open=True)
    target = _first_usable_station(geometry).target
    momentum = math.sqrt(energy * energy - ELECTRON_MASS_GEV**2)
    x_over_x0 = 0.5 * target.thickness_cm / target.medium.radiation_length_cm
    return float(highland_theta0_rad(momentum, momentum / energy, 1.0, x_over_x0))


def hit_resolution_rad(geometry) -> float:
    """Measurement term of the x-projected angle of a straight-line fit through the modules of
    the first usable station: sigma / sqrt(sum c^2 (z - zbar)^2), see the module doc."""
    station = _first_usable_station(geometry)
    z = np.array([station.global_z_cm(m.z_cm) for m in station.modules])
    c = np.array([math.cos(m.angle_rad) for m in station.modules])
    sigma = np.array([m.resolution_cm for m in station.modules])
    w = c * c / (sigma * sigma)
    if w.sum() <= 0.0:
        raise ValueError(f"station {station.name!r} has no module measuring x")
    z_bar = float((w * z).sum() / w.sum())
    return float(1.0 / math.sqrt((w * (z - z_bar) ** 2).sum()))


# --- one layout ------------------------------------------------------------------------------


def evaluate_layout(config, events: int = 20_000, seed: int = 1, luminosity_inv_nb: float | None = None,
                    beam_muons: float | None = None, binning=None, normalization: str = "free",
                    electron_energy_gev: float = DEFAULT_ELECTRON_ENERGY_GEV, chunk_size: int = 50_000,
                    fixed=()) -> dict:
    """The row of one layout (see the module doc).

    Parameters
    ----------
    config : reco.chain.ChainConfig
    events : int
        Events per shard (2 shards, nominal and misaligned each).
    luminosity_inv_nb, beam_muons : float
        Exactly one: a fixed integrated luminosity (nb^-1, all targets), or the beam muons.
    binning : dict, optional
        {axis: [n, low, high]} (`systematics.bias.binning_from_dict`).
    fixed : list of str
        Hadronic parameters held at the generated point in the fits (`systematics.bias.LinearFit`).
    """
    from fastsim.detector.transport import geometry_targets
    from studies.study import luminosity_from_beam
    from systematics.bias import bias_shard, estimate_biases

    events = check_integer("events", events, 1)
    if (luminosity_inv_nb is None) == (beam_muons is None):
        raise ValueError(f"give exactly one of luminosity_inv_nb = {luminosity_inv_nb!r} and beam_muons = {beam_muons!r}")
    luminosity = (sum(luminosity_from_beam(beam_muons, geometry_targets(config.geometry))) if beam_muons is not None
                  else check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True))
    shifts = [(MISALIGNMENT_SYSTEMATIC, 1.0)]
    task = {"chain": config.data, "events": events, "chunk_size": min(chunk_size, events), "binning": binning,
            "shifts": [list(s) for s in shifts]}
    shards = [bias_shard(task, derive_seed(seed, k), k) for k in range(N_SHARDS)]
    totals = {key: sum(s[key] for s in shards) / N_SHARDS for key in ("nominal", "gradient", "shifted")}
    table = estimate_biases(totals, shards, shifts, config, luminosity, normalization, fixed=fixed)
    row = table["biases"][0]
    amu = table["amu"]
    stat_rel = table["stat_error_amu"] / abs(amu)
    bias_rel = row["delta_amu"] / abs(amu)
    ms = ms_resolution_rad(config.geometry, electron_energy_gev)
    hit = hit_resolution_rad(config.geometry)
    return {"luminosity_inv_nb": luminosity, "amu_stat_error": table["stat_error_amu"], "amu_stat_error_rel": stat_rel,
            "K_stat_error": table["stat_errors"].get("K"), "M_stat_error_gev2": table["stat_errors"].get("M_gev2"),
            "ms_resolution_rad": ms, "hit_resolution_rad": hit, "angular_resolution_rad": math.hypot(ms, hit),
            "delta_amu_per_10um": row["delta_amu"], "delta_amu_per_10um_mc_error": row["delta_amu_mc_error"],
            "delta_amu_per_10um_rel": bias_rel, "figure_of_merit": math.hypot(stat_rel, bias_rel),
            "selected_cross_section_ub": float(np.sum(totals["nominal"]))}


def scan(base_config, spec: dict, events: int = 20_000, seed: int = 1, luminosity_inv_nb: float | None = None,
         beam_muons: float | None = None, binning=None, normalization: str = "free", grid: bool = True,
         electron_energy_gev: float = DEFAULT_ELECTRON_ENERGY_GEV, progress: bool | None = None, fixed=()):
    """Evaluate every layout of `spec` (see the module doc); a pandas DataFrame, one row per
    layout: the scanned keys' values, then the columns of `evaluate_layout`. Every layout uses
    the same seed (common random numbers between layouts too)."""
    import sys

    import pandas as pd
    from tqdm import tqdm

    points = list(layouts(base_config, spec, grid))
    show = progress if progress is not None else sys.stderr.isatty()
    rows = []
    keys = [key for key, _, _ in _scan_axes(spec)]
    for values, config in tqdm(points, desc="layouts", unit="layout", disable=not show, file=sys.stderr):
        row = {key: values.get(key, math.nan) for key in keys}
        row.update(evaluate_layout(config, events, seed, luminosity_inv_nb, beam_muons, binning, normalization,
                                   electron_energy_gev, fixed=fixed))
        rows.append(row)
    return pd.DataFrame(rows)


def objective(values: dict, base_config, events: int = 20_000, seed: int = 1, luminosity_inv_nb: float | None = None,
              beam_muons: float | None = None, binning=None, mode: str = "set") -> float:
    """The figure of merit (total relative error on a_mu^HLO, smaller is better) of the layout
    `values` ({dotted key: value}, applied with `mode` "set", "scale" or "add") around
    `base_config`; for optimizers. An invalid layout (e.g. overlapping modules) gives +inf."""
    config = base_config
    try:
        for key, value in values.items():
            config = apply_change(config, key, mode, value)
    except ValueError:
        return math.inf
    return evaluate_layout(config, events, seed, luminosity_inv_nb, beam_muons, binning)["figure_of_merit"]


# --- the layout_scan study -------------------------------------------------------------------

LABELS = {"amu_stat_error_rel": "stat. error a_mu (rel.)", "angular_resolution_rad": "angular res. [rad]",
          "ms_resolution_rad": "MS res. [rad]", "delta_amu_per_10um_rel": "bias / 10 um (rel.)",
          "figure_of_merit": "total rel. error"}


def run_layout_study(study, output_dir, scheduler=None, dask_local=None, progress=None) -> dict:
    """The ``kind = "layout_scan"`` study: each key of [study.scan] scanned alone around the
    preset's chain (``grid = false``), a table, one plot per key and report.md.
    (The layouts run in this process; `scheduler` and `dask_local` are not used by a scan.)"""
    import time

    import fastsim
    from studies.plots import plot_scan
    from studies.report import image_link, markdown_table, write_json, write_markdown, write_report

    if scheduler is not None or dask_local is not None:
        raise ValueError("a layout scan runs in this process; scheduler and dask_local are for measurement studies")
    start = time.perf_counter()
    settings = study.settings
    luminosity = settings.scan_luminosity_inv_nb or settings.luminosity_inv_nb
    beam_muons = None if luminosity is not None else settings.beam_muons
    frame = scan(study.chain, settings.scan, settings.events, settings.seed, luminosity, beam_muons, settings.binning,
                 "fixed" if settings.normalization == "fixed" else "free", grid=False, progress=progress,
                 fixed=tuple(settings.fixed))
    records = frame.to_dict(orient="records")
    plots, sections, columns = {}, [], ["amu_stat_error_rel", "ms_resolution_rad", "hit_resolution_rad",
                                        "angular_resolution_rad", "delta_amu_per_10um", "delta_amu_per_10um_mc_error",
                                        "figure_of_merit"]
    best = None
    for i, (key, _, _) in enumerate(_scan_axes(settings.scan)):
        rows = [r for r in records if isinstance(r[key], str) or not (isinstance(r[key], float) and math.isnan(r[key]))]
        table = markdown_table(rows, [key, *columns])
        x = [r[key] for r in rows]
        name = f"scan_{i}.png"
        plot_scan({key: x, **{c: [r[c] for r in rows] for c in (*columns, "delta_amu_per_10um_rel")}}, key,
                  ["amu_stat_error_rel", "angular_resolution_rad", "delta_amu_per_10um_rel", "figure_of_merit"],
                  output_dir / name, LABELS, title=f"{study.name}: {key.split(',')[0]}")
        plots[key] = name
        sections.append((f"Scan of {key}", table + "\n" + image_link(name, f"scan of {key}")))
        write_markdown(output_dir / f"scan_{i}.md", table)
    for r in records:
        if best is None or r["figure_of_merit"] < best["figure_of_merit"]:
            best = r
    summary = {"preset": study.name, "kind": "layout_scan", "study": study.to_dict(), "chain_hash": study.chain.hash,
               "version": fastsim.__version__, "seed": settings.seed, "events_per_layout": settings.events * N_SHARDS,
               "luminosity_inv_nb": luminosity, "beam_muons": beam_muons, "layouts": records, "best": best,
               "plots": plots, "tables": [f"scan_{i}.md" for i in range(len(plots))],
               "wall_time_s": time.perf_counter() - start, "report": "report.md"}
    intro = (f"{settings.description}\n\nEach key scanned alone around the preset's chain; {settings.events} events "
             f"per shard, 2 shards, nominal and misaligned (`module_z`, 10 um) per layout; "
             + (f"beam muons {beam_muons:.3g} (L follows the targets)." if beam_muons else f"L = {luminosity:.3g} nb^-1.")
             + f"\n\nBest layout (smallest figure of merit): {best}.\n")
    write_report(output_dir / "report.md", f"MUonE layout scan: {study.name}", [("Study", intro), *sections])
    write_json(output_dir / "summary.json", summary)
    return summary
