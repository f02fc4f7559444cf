"""Throughput benchmarks of each stage (used by `muone bench` and benchmarks/).

Each benchmark compiles first (one warm-up call), then times the best of three repetitions on
`threads` numba threads; figures are events per second.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numba

from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import DEFAULT_CHUNK_SIZE, Generator, GeneratorConfig


def _best_rate(function, n_events, repeats=3):
    function(min(n_events, 10_000))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function(n_events)
        best = min(best, time.perf_counter() - start)
    return n_events / best


def _streamed(generator, n_events):
    for _ in generator.run(n_events):
        pass


def benchmark_cases():
    """(stage name, configuration) of every generation benchmark."""
    nominal = GeneratorConfig()
    radiative = replace(nominal, elastic=replace(nominal.elastic, radiation="nlo"))
    spread = replace(nominal, beam=BeamModel(energy_gev=160.0, energy_spread_rel=0.03,
                                             divergence_x_rad=3e-4, divergence_y_rad=3e-4, spot_x_cm=1.5, spot_y_cm=1.5))
    return [
        ("elastic, weighted, monochromatic beam", nominal),
        ("elastic, weighted, beam spread+divergence+spot", spread),
        ("elastic + NLO-like radiation, weighted", radiative),
    ]


def _station_case(n_events):
    """Generation plus simulation (transport and digitization) of one station, tb2022."""
    from fastsim.detector.geometry import load_geometry
    from fastsim.detector.transport import DetectorSimulation, geometry_targets

    geometry = load_geometry("tb2022_station")
    generator = Generator(GeneratorConfig(targets=geometry_targets(geometry)), seed=1)
    simulation = DetectorSimulation(geometry, seed=1)

    def run(n):
        for truth in generator.run(n):
            simulation.simulate(truth)

    return run


def run_benchmarks(n_events: int = 2_000_000, threads: int = 1) -> list[dict]:
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        results = []
        for stage, config in benchmark_cases():
            generator = Generator(config, seed=1)
            chunk = min(n_events, DEFAULT_CHUNK_SIZE)
            for suffix, function in (
                ("kernel only", lambda n: generator.kernel_arrays(0, min(n, chunk))),
                ("into TruthEvents chunks", lambda n: _streamed(generator, n)),
            ):
                events = chunk if suffix == "kernel only" else n_events
                rate = _best_rate(function, events)
                results.append({"stage": f"{stage}: {suffix}", "events_per_s": rate, "threads": threads, "events": events})
        station_events = max(n_events // 10, 10_000)
        rate = _best_rate(_station_case(station_events), station_events)
        results.append({"stage": "generation + simulation of one station (tb2022)", "events_per_s": rate,
                        "threads": threads, "events": station_events})
        return results
    finally:
        numba.set_num_threads(previous)
