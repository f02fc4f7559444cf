"""Validation of the reconstruction on the full chain (not part of the tests; results in docs/reconstruction.md).

    python benchmarks/reco_validation.py [--geometry run2025] [--events 1000000] [--calibration-events 1000000]

Runs generation, simulation, full reconstruction, identification and selection and measures:

1. the angular resolution (core width: half the central 68 % interval) of theta_e and theta_mu
   and the vertex z resolution, in bins of the true theta_e, for elastic events that pass the
   selection's non-kinematic cuts;
2. the mis-identification rate (the track taken as the muon is the electron) against theta_e;
3. the parametric mode against the full one: a response calibrated on `--calibration-events`
   events (seed 1), then `--events` full-mode events (seed 2) and `--events` parametric events
   (seed 3) histogrammed in (theta_e, theta_mu) after the whole selection in the studies'
   template binning (0.5 mrad x 0.1 mrad), compared bin by bin with a chi2 (bins with more than
   20 events in both), and the largest pulls;
4. with `--control`, the same parametric comparison from a second, independent calibration
   sample (seed 4) and events (seed 5): the chi2 between the two parametric histograms measures
   how much the finite calibration sample alone moves the parametric prediction. Its chi2/ndf,
   lambda, gives the calibration's variance per bin, (lambda - 1) times the parametric sample's
   (the two predictions differ by two calibrations' errors and two samples' errors), and the
   full-against-parametric chi2 is given again with that variance added.

`--save DIR` keeps the histograms (``histograms.npz``) and the response files. Prints markdown tables.
"""

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from reco.chain import Chain, ChainConfig, calibrate_chain
from reco.pid import misid_table

THETA_E_EDGES = np.array([0.0, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.032])
# the template binning of the studies (phase1_2025, quickstart): the selection's theta_e window
# in 0.5 mrad bins, theta_mu in 0.1 mrad bins
BINNING = (np.linspace(0.005, 0.020, 31), np.linspace(0.0002, 0.005, 49))


def core_width(values):
    if values.size < 20:
        return math.nan
    low, high = np.quantile(values, [0.16, 0.84])
    return 0.5 * (high - low)


def resolution_table(events):
    reconstructed = (events["process"] == 0) & events["has_incoming"] & (events["n_tracks_out"] >= 2)
    lines = ["| true theta_e (mrad) | events | sigma theta_e (urad) | sigma theta_mu (urad) | sigma vertex z (cm) |",
             "|---|---|---|---|---|"]
    index = np.digitize(events["true_theta_e_rad"], THETA_E_EDGES) - 1
    for b in range(THETA_E_EDGES.size - 1):
        rows = reconstructed & (index == b)
        d_e = events["theta_e_rad"][rows] - events["true_theta_e_rad"][rows]
        d_mu = events["theta_mu_rad"][rows] - events["true_theta_mu_rad"][rows]
        d_z = events["vertex_z_cm"][rows] - events["true_vertex_z_cm"][rows]
        lines.append(f"| {THETA_E_EDGES[b] * 1e3:.0f}-{THETA_E_EDGES[b + 1] * 1e3:.0f} | {rows.sum()} | "
                     f"{core_width(d_e) * 1e6:.1f} | {core_width(d_mu) * 1e6:.1f} | {core_width(d_z):.3f} |")
    return "\n".join(lines)


def histogram(events):
    selected = events["selected"]
    counts, _, _ = np.histogram2d(events["theta_e_rad"][selected], events["theta_mu_rad"][selected], BINNING,
                                  weights=events["weight"][selected])
    squares, _, _ = np.histogram2d(events["theta_e_rad"][selected], events["theta_mu_rad"][selected], BINNING,
                                   weights=events["weight"][selected] ** 2)
    entries, _, _ = np.histogram2d(events["theta_e_rad"][selected], events["theta_mu_rad"][selected], BINNING)
    return counts, squares, entries


def accumulate(chain, n_events, chunk_size, keep_first=None):
    totals = [np.zeros((BINNING[0].size - 1, BINNING[1].size - 1)) for _ in range(3)]
    kept = None
    for events in chain.run(n_events, chunk_size):
        for total, part in zip(totals, histogram(events)):
            total += part
        if keep_first is not None and kept is None:
            kept = events
    return totals, kept


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", default="run2025")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calibration-events", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=200_000)
    parser.add_argument("--control", action="store_true", help="a second, independent calibration (module doc)")
    parser.add_argument("--save", metavar="DIR", help="keep the histograms and the response files here")
    args = parser.parse_args()

    table = {"geometry": args.geometry}
    config = ChainConfig.from_dict(table)
    start = time.perf_counter()
    (full, full_w2, full_n), first_chunk = accumulate(Chain(config, 2), args.events, args.chunk_size, keep_first=True)
    full_time = time.perf_counter() - start
    print(f"## Full chain, {args.geometry}, {args.events:.2e} events ({full_time:.0f} s wall)\n")
    print(resolution_table(first_chunk))
    print("\n### Mis-identification against the reconstructed electron angle\n")
    print(misid_table(first_chunk, THETA_E_EDGES).to_string(index=False))

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.save) if args.save else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        runs = [(1, 3)] + ([(4, 5)] if args.control else [])
        predictions = []
        for calibration_seed, seed in runs:
            response = folder / f"response_seed{calibration_seed}.npz"
            calibrate_chain(config, args.calibration_events, calibration_seed, response, args.chunk_size)
            parametric = ChainConfig.from_dict({**table, "mode": "parametric", "calibration": str(response)})
            start = time.perf_counter()
            predictions.append(accumulate(Chain(parametric, seed), args.events, args.chunk_size)[0])
            fast_time = time.perf_counter() - start
        if args.save:
            np.savez(folder / "histograms.npz", full=full, full_w2=full_w2, full_n=full_n,
                     **{f"parametric{k}_{name}": array for k, prediction in enumerate(predictions)
                        for name, array in zip(("sum_w", "sum_w2", "entries"), prediction)})
    print(f"\n## Parametric against full mode: {args.events:.2e} events each, response from "
          f"{args.calibration_events:.2e} events (parametric {fast_time:.0f} s wall)\n")
    print(comparison("full", (full, full_w2, full_n), "parametric", predictions[0], args.events))
    if args.control:
        print("\n### Control: two parametric predictions from independent calibration samples\n")
        print(comparison("parametric (calibration seed 1)", predictions[0],
                         "parametric (calibration seed 4)", predictions[1], args.events))
        chi2, ndf = chi2_ndf(predictions[0], predictions[1])
        inflation = max(chi2 / ndf, 1.0)
        print(f"\n### Full against parametric with the calibration's statistical error (lambda = {inflation:.3f})\n")
        print(comparison("full", (full, full_w2, full_n), "parametric", predictions[0], args.events,
                         calibration_inflation=inflation))


def pulls(a, b, calibration_inflation=1.0):
    """Pulls of two weighted 2D histograms (sum_w, sum_w2, entries) over the bins with more than 20
    entries in both (zero elsewhere) and that mask; b's variance is multiplied by
    `calibration_inflation` (b a parametric prediction with its calibration's error)."""
    (sum_a, w2_a, n_a), (sum_b, w2_b, n_b) = a, b
    use = (n_a > 20) & (n_b > 20)
    pull = np.zeros_like(sum_a)
    pull[use] = (sum_a[use] - sum_b[use]) / np.sqrt(w2_a[use] + calibration_inflation * w2_b[use])
    return pull, use


def chi2_ndf(a, b):
    pull, use = pulls(a, b)
    return float(np.sum(pull[use] ** 2)), int(use.sum())


def comparison(name_a, a, name_b, b, n_events, n_pulls=8, calibration_inflation=1.0):
    """chi2 of two weighted 2D histograms (`pulls`) and the largest pulls, as markdown."""
    sum_a, sum_b = a[0], b[0]
    pull, use = pulls(a, b, calibration_inflation)
    chi2, ndf = float(np.sum(pull[use] ** 2)), int(use.sum())
    lines = [f"chi2 / ndf = {chi2:.1f} / {ndf}, p-value = {stats.chi2.sf(chi2, ndf):.3g}; selected cross section "
             f"{name_a} {sum_a.sum() / n_events:.5g} ub, {name_b} {sum_b.sum() / n_events:.5g} ub\n",
             f"| theta_e (mrad) | theta_mu (mrad) | {name_a} (ub) | {name_b} (ub) | relative difference | pull |",
             "|---|---|---|---|---|---|"]
    for flat in np.argsort(-np.abs(pull), axis=None)[:n_pulls]:
        i, j = np.unravel_index(flat, pull.shape)
        lines.append(f"| {BINNING[0][i] * 1e3:.1f}-{BINNING[0][i + 1] * 1e3:.1f} | "
                     f"{BINNING[1][j] * 1e3:.1f}-{BINNING[1][j + 1] * 1e3:.1f} | {sum_a[i, j] / n_events:.5g} | "
                     f"{sum_b[i, j] / n_events:.5g} | {sum_b[i, j] / sum_a[i, j] - 1:+.2e} | {pull[i, j]:+.1f} |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
