"""Throughput benchmarks of each stage (used by `muone bench` and benchmarks/).

Each benchmark compiles first (one warm-up call), then times the best of three repetitions on
`threads` numba threads; figures are events per second.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numba
import numpy as np

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
        ("pair production mu Be -> mu Be e+ e- (E_pair > 1 GeV)", replace(nominal, process="pair")),
        ("elastic and pair production mixed by cross section", replace(nominal, process="all")),
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


def _chain_case(mode, calibration=None):
    """The whole chain (generation, simulation, reconstruction, identification, selection) on
    run2025, or its parametric version into a 2D histogram."""
    from reco.chain import Chain, ChainConfig

    if mode == "full":
        chain = Chain(ChainConfig.from_dict({"geometry": "run2025"}), 1)

        def run(n):
            for _ in chain.run(n, min(n, 100_000)):
                pass

        return run
    chain = Chain(ChainConfig.from_dict({"geometry": "run2025", "mode": "parametric", "calibration": str(calibration)}), 1)
    edges_e, edges_mu = np.linspace(0.0, 0.032, 65), np.linspace(0.0002, 0.005, 49)
    return lambda n: chain.histogram(n, edges_e, edges_mu)


def run_chain_benchmarks(n_events: int = 200_000, threads: int = 1, calibration_events: int = 200_000) -> list[dict]:
    """Full chain and parametric chain (generation + smearing + selection into a histogram)."""
    import tempfile

    from reco.chain import ChainConfig, calibrate_chain

    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        results = [{"stage": "full chain run2025 (gen + sim + reco + pid + selection)",
                    "events_per_s": _best_rate(_chain_case("full"), n_events, repeats=2), "threads": threads,
                    "events": n_events}]
        with tempfile.TemporaryDirectory() as folder:
            response = f"{folder}/response.npz"
            calibrate_chain(ChainConfig.from_dict({"geometry": "run2025"}), calibration_events, 1, response)
            fast_events = 20 * n_events
            results.append({"stage": "parametric chain run2025 into a 2D histogram (gen + smear + selection)",
                            "events_per_s": _best_rate(_chain_case("parametric", response), fast_events),
                            "threads": threads, "events": fast_events})
        return results
    finally:
        numba.set_num_threads(previous)


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
