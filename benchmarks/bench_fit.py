"""Template, fit and pseudo-experiment speed, and the expected a_mu^HLO error (not part of the tests).

    python benchmarks/bench_fit.py [--events 2000000] [--smearing-mrad 0.05] [--toys 1000] [--workers 2]

Builds truth-level templates at 150 GeV (E_e > 1 GeV, the design study's beam energy) with a
Gaussian smearing of both angles, in a 2D (theta_e, theta_mu) binning of 0.5 mrad x 0.1 mrad
(theta_e < 32 mrad, 0.2 < theta_mu < 5 mrad), and prints: the cost of one template for new
(K, M) (with and without gradient), of one full-luminosity fit, the Asimov a_mu^HLO and its
statistical error at 1.5e7 nb^-1 (normalization free and fixed), and the wall time and pull
summary of `--toys` full-luminosity toy fits on `--workers` processes.
"""

import argparse
import time

import numpy as np

from fastsim import rng
from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import ElasticSettings, Generator, GeneratorConfig
from systematics.fit import fit_histogram
from systematics.histogram import Axis, Binning
from systematics.templates import Template, TemplateSample
from systematics.toys import run_toys

FULL_INV_NB = 1.5e7


def smeared_sample(n_events, smearing_rad, seed=1):
    config = GeneratorConfig(beam=BeamModel(energy_gev=150.0), elastic=ElasticSettings(ee_min_gev=1.0))
    sample = TemplateSample.from_truth(Generator(config, seed).chunk(0, n_events))
    noise = rng.normal_array(seed, 0, n_events, rng.STREAM_BENCHMARK_SMEARING, 2) * smearing_rad
    return TemplateSample(sample.theta_e_rad + noise[:, 0], sample.theta_mu_rad + noise[:, 1], sample.weight,
                          sample.true_t_gev2, sample.n_generated, sample.reference, sample.beam_energy_gev)


def per_call(function, repeat):
    function()
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--smearing-mrad", type=float, default=0.05)
    parser.add_argument("--toys", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    start = time.perf_counter()
    sample = smeared_sample(args.events, args.smearing_mrad * 1e-3)
    binning = Binning((Axis("theta_e_rad", np.linspace(0.0, 0.032, 65)), Axis("theta_mu_rad", np.linspace(0.0002, 0.005, 49))))
    template = Template(sample, binning)
    print(f"sample of {args.events:.2e} events, smearing {args.smearing_mrad} mrad, {binning.shape} bins: "
          f"{time.perf_counter() - start:.2f} s to generate and build ({template._moment.size} moments)")

    theta = np.array([0.14, 0.05])
    print(f"template for new (K, M):           {per_call(lambda: template.expected_flat(theta, FULL_INV_NB), 2000) * 1e6:8.1f} us")
    print(f"template + gradient:               {per_call(lambda: template.expected_flat(theta, FULL_INV_NB, gradient=True), 2000) * 1e6:8.1f} us")

    asimov = template.histogram(None, FULL_INV_NB)
    for normalization in ("free", "fixed"):
        fit_time = per_call(lambda: fit_histogram(asimov, template, normalization=normalization), 20)
        result = fit_histogram(asimov, template, normalization=normalization)
        amu = result.amu
        print(f"fit (minuit, norm {normalization:5s}):          {fit_time * 1e3:8.1f} ms   {result.n_calls} calls; "
              f"a_mu^HLO = ({amu.value * 1e10:.2f} +- {amu.error * 1e10:.2f}) 1e-10 ({amu.error / amu.value * 100:.3f} %), "
              f"K = {result.values[0]:.5f} +- {result.errors[0]:.5f}, M = {result.values[1]:.5f} +- {result.errors[1]:.5f} GeV^2, "
              f"corr(K, M) = {result.correlation('K', 'M_gev2'):.3f}, fraction in range {amu.fraction_in_range:.4f}")
    grid_time = per_call(lambda: fit_histogram(asimov, template, method="grid"), 3)
    grid = fit_histogram(asimov, template, method="grid")
    print(f"fit (grid, norm free):             {grid_time * 1e3:8.1f} ms   a_mu^HLO = ({grid.amu.value * 1e10:.2f} +- "
          f"{grid.amu.error * 1e10:.2f}) 1e-10")

    start = time.perf_counter()
    toys = run_toys(template, FULL_INV_NB, args.toys, seed=1, workers=args.workers)
    elapsed = time.perf_counter() - start
    summary = toys.summary()
    print(f"{args.toys} toy fits on {args.workers} worker(s):    {elapsed:8.1f} s   ({summary['n_failed']} failed)")
    print(f"  a_mu mean {summary['amu_mean'] * 1e10:.2f}, std {summary['amu_std'] * 1e10:.3f}, mean error "
          f"{summary['amu_stat_error_mean'] * 1e10:.3f} (1e-10); pull {summary['pull_mean']:.3f} +- {summary['pull_std']:.3f}; "
          f"coverage {summary['coverage_68']:.3f}")
    for name, values in summary["parameters"].items():
        print(f"  {name:7s} pull {values['pull_mean']:+.3f} width {values['pull_std']:.3f} coverage {values['coverage_68']:.3f}")


if __name__ == "__main__":
    main()
