"""Systematics campaigns: the bias of each systematic on a_mu^HLO, shard by shard, and its report.

`run_systematics(chain_table, events, seed, output_dir, only=..., luminosity_inv_nb=...)` splits
`events` into shards (`studies.campaign.Campaign`: process pool, or Dask with `scheduler` /
`dask_local`; finished shards are kept and reused), runs `systematics.bias.bias_shard` on each
(nominal and shifted chains with common random numbers), then fits the summed histograms
(`systematics.bias.estimate_biases`) and writes into `output_dir`:

- ``campaign-<hash>/shard-*.parquet``: the shard results (resumable);
- ``systematics.json``: stat_error_amu, `fixed` (the hadronic parameters held at the generated
  point in the fits), the biases (name, shift, delta_amu, delta_amu_mc_error,
  required_precision, linearity, ...), and `not_applicable`: the chosen
  systematics that leave the configuration unchanged (e.g. a scale of a beam divergence that is
  0 in the preset), which are not run;
- ``systematics.md``: the bias table; ``bias_budget.png``: the bias budget plot.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from fastsim.config import check_integer, check_range
from studies.report import fixed_suffix
from systematics import catalogue
from systematics.bias import (LINEARITY_SIGMAS, RESOLVED_MC_ERRORS, bias_shard, check_fixed_names, estimate_biases,
                              reference_family, shifted_configs)

DEFAULT_SHARDS = 4


def planned_shifts(systematics, linearity: bool = True) -> list:
    """(name, n_sigma) pairs to simulate: +1 sigma, and -2, -1, +2 for the linearity check
    (only +1, +2 for a one-sided systematic; a discrete switch once)."""
    shifts = []
    for systematic in systematics:
        if systematic.is_discrete:
            shifts.append((systematic.name, 1.0))
        elif not linearity:
            shifts.append((systematic.name, 1.0))
        else:
            sigmas = [k for k in LINEARITY_SIGMAS if k > 0] if systematic.one_sided else LINEARITY_SIGMAS
            shifts.extend((systematic.name, float(k)) for k in sigmas)
    return shifts


def run_systematics(chain_table: dict, events: int, seed: int, output_dir, only=None, custom_tables=(),
                    luminosity_inv_nb: float = 1.5e7, n_shards: int = DEFAULT_SHARDS, binning=None,
                    normalization: str = "free", threshold: float = 1.0 / 3.0, linearity: bool = True,
                    common_random_numbers: bool = True, n_workers=None, scheduler=None, dask_local=None,
                    progress=None, chunk_size: int = 50_000, fixed=()) -> dict:
    """Run a systematics campaign (see the module doc) and return its summary; `fixed` names
    the hadronic parameters held at the reference point in the fits."""
    from reco.chain import ChainConfig, check_calibration
    from reco.selection import CutFlow
    from studies.campaign import Campaign

    events = check_integer("events", events, 1)
    n_shards = check_integer("shards", n_shards, 1, 100_000)
    if events < n_shards:
        raise ValueError(f"events = {events} is smaller than the number of shards ({n_shards})")
    check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True)
    config = ChainConfig.from_dict(chain_table)
    fixed = check_fixed_names(fixed, reference_family(config))  # before the campaign, not after it
    custom = []
    for i, table in enumerate(custom_tables):
        systematic = catalogue.from_table(table, where=f"systematics[{i}]")
        catalogue.check_keys(systematic, config)
        custom.append(systematic)
    known = {s.name: s for s in custom}
    if only is None:
        chosen = catalogue.select(None) + custom
    else:
        names = [n.strip() for n in only.split(",")] if isinstance(only, str) else list(only)
        chosen = [known[n] if n in known else catalogue.get(n) for n in names if n]
        if not chosen:
            raise ValueError("only = '' names no systematic")
    for systematic in chosen:
        if systematic.name not in known:
            catalogue.check_keys(systematic, config)
    chosen, not_applicable = _split_applicable(chosen, config)
    if not chosen:
        raise ValueError(f"no chosen systematic changes this configuration: {not_applicable}")
    shifts = planned_shifts(chosen, linearity)
    if config.mode == "parametric":  # before the campaign: a shift the response cannot serve is an error
        check_calibration(config)
        for (name, n_sigma), shifted in zip(shifts, shifted_configs(config, shifts, custom_tables)):
            try:
                check_calibration(shifted)
            except ValueError as error:
                raise ValueError(f"systematic {name!r} ({n_sigma:+g} sigma) in parametric mode: {error}") from None
    task_config = {"chain": config.data, "events": events // n_shards, "chunk_size": chunk_size,
                   "binning": binning, "shifts": [[name, k] for name, k in shifts],
                   "systematics": list(custom_tables), "common_random_numbers": common_random_numbers}
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(bias_shard, task_config, seed, n_shards, output, n_workers=n_workers,
                        scheduler=scheduler, dask_local=dask_local, progress=progress)
    run = campaign.run()
    keys = ["nominal", "gradient", "shifted"]
    per_shard = list(campaign.results(keys))
    totals = {key: sum(shard[key] for shard in per_shard) / n_shards for key in keys}
    summary = estimate_biases(totals, per_shard, shifts, config, luminosity_inv_nb, normalization, threshold, custom,
                              fixed)
    flow = campaign.sum(["cutflow_sum_w", "cutflow_sum_w2", "cutflow_count"])
    summary["nominal_cutflow"] = CutFlow(config.selection.new_cutflow().steps, flow["cutflow_sum_w"],
                                         flow["cutflow_sum_w2"], flow["cutflow_count"]).table()
    summary.update({"events": events, "seed": seed, "n_shards": n_shards, "config_hash": config.hash,
                    "campaign": run.to_dict(), "common_random_numbers": common_random_numbers,
                    "not_applicable": not_applicable})
    write_report(summary, output)
    return summary


def _split_applicable(systematics, config) -> tuple[list, list]:
    """(the systematics that change `config`, [{name, reason}] of those that cannot change its
    results: outside their `requires`, a scale of a value that is 0 here, or a value set to the one
    it has). Those are not run: their bias is exactly 0 and their required precision meaningless."""
    applicable, skipped = [], []
    for systematic in systematics:
        reason = systematic.applies_to(config)
        if reason:
            skipped.append({"name": systematic.name, "reason": reason})
            continue
        if systematic.apply(config, 1.0).hash != config.hash:
            applicable.append(systematic)
            continue
        values = []
        for key in systematic.keys:
            try:
                values.append(f"{key} = {config.value(key)!r}")
            except ValueError:
                values.append(f"{key} unset")
        skipped.append({"name": systematic.name,
                        "reason": f"it leaves this configuration unchanged ({', '.join(values) or 'its function changes nothing'})"})
    return applicable, skipped


def _atomic_write(path: Path, text: str):
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(text)
    os.replace(temporary, path)


def bias_table_markdown(summary: dict) -> str:
    """The bias table of a systematics summary as markdown (a_mu in 1e-10)."""
    lines = [f"Statistical error on a_mu^HLO at {summary['luminosity_inv_nb']:.3g} nb^-1: "
             f"{summary['stat_error_amu'] * 1e10:.3f}e-10 (normalization {summary['normalization']}"
             + fixed_suffix(summary.get("fixed")) + "); "
             f"threshold {summary['threshold']:.3g} of it.", "",
             "| systematic | shift | delta a_mu (1e-10) | MC error (1e-10) | bias / stat | required precision | linearity |",
             "|---|---|---|---|---|---|---|"]
    for row in summary["biases"]:
        linearity = ", ".join(f"{k}: {v:.2f}" for k, v in row["linearity"].items() if k != "+1")
        lines.append(f"| {row['name']} | {row['shift']} | {row['delta_amu'] * 1e10:+.4f} | "
                     f"{row['delta_amu_mc_error'] * 1e10:.4f} | {row['delta_amu'] / summary['stat_error_amu']:+.3f} | "
                     f"{row['required_precision']:.3g} | {linearity} |")
    notes = (("resolved", f"Not resolved by this Monte Carlo sample (|delta a_mu| below {RESOLVED_MC_ERRORS:g} MC errors, "
                            "or no MC error): {}. Their bias and required precision are Monte Carlo noise; more events "
                            "(or shards, for the error itself) resolve them."),
             ("linear_regime", "Outside the linear regime (a fitted parameter moves by more than its statistical error, "
                               "so the linearized fit does not hold): {}. Fix the parameter the data do not determine "
                               "(--fix M_gev2 on a short t range) or fit the shifted histogram itself."))
    for flag, text in notes:
        flagged = sorted({f"{row['name']} ({row['shift']})" for row in summary["biases"] if not row[flag]})
        if flagged:
            lines += ["", text.format(", ".join(flagged))]
    if summary.get("not_applicable"):
        lines += ["", "Not run, as they do not change this configuration:", ""]
        lines += [f"- {row['name']}: {row['reason']}" for row in summary["not_applicable"]]
    return "\n".join(lines) + "\n"


def plot_bias_budget(summary: dict, path) -> Path:
    """Horizontal bars: |delta a_mu| at +1 sigma of each systematic with its MC error, against
    the allowed threshold (a fraction of the statistical error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.ROOT)
    rows = [r for r in summary["biases"] if r["n_sigma"] == 1.0]
    names = [r["name"] for r in rows]
    values = np.array([abs(r["delta_amu"]) for r in rows]) * 1e10
    errors = np.nan_to_num(np.array([r["delta_amu_mc_error"] for r in rows]) * 1e10)
    figure, axes = plt.subplots(figsize=(10, 1.5 + 0.5 * max(len(rows), 1)))
    positions = np.arange(len(rows))
    axes.barh(positions, values, xerr=errors, color="tab:blue", alpha=0.8, label="|bias| at +1 sigma")
    limit = summary["threshold"] * summary["stat_error_amu"] * 1e10
    axes.axvline(limit, color="tab:red", linestyle="--", label=f"{summary['threshold']:.2g} x stat. error")
    axes.set_yticks(positions, names)
    axes.set_xlabel(r"$|\Delta a_\mu^{HLO}|$ [$10^{-10}$]")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(summary: dict, output: Path):
    """systematics.json, systematics.md and bias_budget.png in `output`."""
    _atomic_write(output / "systematics.json", json.dumps(summary, indent=2, default=float))
    _atomic_write(output / "systematics.md", bias_table_markdown(summary))
    plot_bias_budget(summary, output / "bias_budget.png")
