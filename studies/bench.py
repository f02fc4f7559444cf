"""Throughput benchmarks of each stage (used by `muone bench` and benchmarks/).

Each benchmark compiles first (one warm-up call), then times the best of three repetitions on
`threads` numba threads; figures are events per second.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numba

from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import GeneratorConfig, Generator


def _best_rate(function, n_events, repeats=3):
    function(min(n_events, 10_000))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function(n_events)
        best = min(best, time.perf_counter() - start)
    return n_events / best


def _generation_case(config, seed=1):
    generator = Generator(config, seed)
    return lambda n: generator.chunk(0, n)


def benchmark_cases():
    """(stage name, configuration) of every generation benchmark."""
    nominal = GeneratorConfig()
    spread = replace(nominal, beam=BeamModel(energy_gev=160.0, energy_spread_rel=0.03,
                                             divergence_x_rad=3e-4, divergence_y_rad=3e-4, spot_x_cm=1.5, spot_y_cm=1.5))
    return [
        ("elastic, weighted, monochromatic beam", nominal),
        ("elastic, weighted, beam spread+divergence+spot", spread),
    ]


def run_benchmarks(n_events: int = 2_000_000, threads: int = 1) -> list[dict]:
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        results = []
        for stage, config in benchmark_cases():
            rate = _best_rate(_generation_case(config), n_events)
            results.append({"stage": stage, "events_per_s": rate, "threads": threads, "events": n_events})
        return results
    finally:
        numba.set_num_threads(previous)
