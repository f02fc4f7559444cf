"""Validation of the reconstruction on the full chain (not part of the tests; results in docs/reconstruction.md).

    python benchmarks/reco_validation.py [--geometry run2025] [--events 1000000] [--calibration-events 1000000]

Runs generation, simulation, full reconstruction, identification and selection and measures:

1. the angular resolution (core width: half the central 68 % interval) of theta_e and theta_mu
   and the vertex z resolution, in bins of the true theta_e, for elastic events that pass the
   selection's non-kinematic cuts;
2. the mis-identification rate (the track taken as the muon is the electron) against theta_e;
3. the parametric mode against the full one: a response calibrated on `--calibration-events`
   events (seed 1), then `--events` full-mode events (seed 2) and `--events` parametric events
   (seed 3) histogrammed in (theta_e, theta_mu) after the whole selection, compared bin by bin
   with a chi2 (bins with more than 20 events in both).

Prints markdown tables.
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
BINNING = (np.linspace(0.0, 0.032, 33), np.linspace(0.0002, 0.005, 25))


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
    totals = [np.zeros((32, 24)) for _ in range(3)]
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

    with tempfile.TemporaryDirectory() as folder:
        response = Path(folder) / "response.npz"
        calibrate_chain(config, args.calibration_events, 1, response, args.chunk_size)
        parametric = ChainConfig.from_dict({**table, "mode": "parametric", "calibration": str(response)})
        start = time.perf_counter()
        (fast, fast_w2, fast_n), _ = accumulate(Chain(parametric, 3), args.events, args.chunk_size)
        fast_time = time.perf_counter() - start
    use = (full_n > 20) & (fast_n > 20)
    chi2 = float(np.sum((full[use] - fast[use]) ** 2 / (full_w2[use] + fast_w2[use])))
    ndf = int(use.sum())
    print(f"\n## Parametric against full mode: {args.events:.2e} events each "
          f"(parametric {fast_time:.0f} s wall)\n")
    print(f"chi2 / ndf = {chi2:.1f} / {ndf}, p-value = {stats.chi2.sf(chi2, ndf):.3g}; "
          f"selected cross section full {full.sum() / args.events:.5g} ub, parametric {fast.sum() / args.events:.5g} ub")


if __name__ == "__main__":
    main()
