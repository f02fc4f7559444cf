"""Pair production through the generator: rates, spectra, mixing with elastic events, labels."""

import math

import numpy as np
import pytest
from scipy import stats

from fastsim.events import TruthEvents
from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import Generator, GeneratorConfig
from fastsim.generator.pair import PairSettings
from fastsim.generator.targets import Target
from fastsim.physics.pair_production import dsigma_dnu_ub, sigma_ub

TARGETS = (Target("Be", 1.5, 0.0), Target("graphite", 3.0, 100.0))


def per_electron_sigma(energy, targets, e_min):
    atoms = np.array([t.atom_areal_density_per_cm2 for t in targets])
    electrons = np.array([t.electron_areal_density_per_cm2 for t in targets])
    per_atom = np.array([sigma_ub(energy, t.medium.z, t.medium.a_g_mol, e_min) for t in targets])
    return float((atoms * per_atom).sum() / electrons.sum()), atoms * per_atom / (atoms * per_atom).sum()


def test_pair_rate_targets_and_spectrum():
    config = GeneratorConfig(process="pair", targets=TARGETS, pair=PairSettings(pair_energy_min_gev=1.0))
    events = Generator(config, seed=2).chunk(0, 400_000)
    expected, shares = per_electron_sigma(160.0, TARGETS, 1.0)
    assert events["weight"].mean() == pytest.approx(expected, rel=1e-5)  # constant weights, monochromatic
    assert set(events.process_names) == {"pair"}
    n = len(events)
    in_be = np.mean(events["target_index"] == 0)
    assert in_be == pytest.approx(shares[0], abs=5 * math.sqrt(shares[0] * (1 - shares[0]) / n))
    # pair energy spectrum of the Be events against dsigma/dnu of Be
    index = np.repeat(np.arange(n), np.diff(events.particle_offsets))
    leptons = np.abs(events.particles["pdg"]) == 11
    pair_energy = np.bincount(index[leptons], events.particles["e_gev"][leptons], minlength=n)
    nu = pair_energy[events["target_index"] == 0] / 160.0
    edges = np.geomspace(1.0 / 160.0, nu.max() * 1.0001, 26)
    counts = np.histogram(nu, edges)[0]
    be = TARGETS[0].medium
    grid = [np.linspace(lo, hi, 41) for lo, hi in zip(edges[:-1], edges[1:])]
    expected_bins = np.array([np.trapezoid(dsigma_dnu_ub(160.0, g, be.z, be.a_g_mol), g) for g in grid])
    expected_counts = counts.sum() * expected_bins / expected_bins.sum()
    keep = expected_counts > 20
    chi2 = np.sum((counts[keep] - expected_counts[keep]) ** 2 / expected_counts[keep])
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3, chi2
    # energy conservation (the nucleus takes momentum, not energy)
    energy_sum = np.bincount(index, events.particles["e_gev"], minlength=n)
    np.testing.assert_allclose(energy_sum, 160.0, rtol=1e-12)
    assert set(np.unique(events.particles["pdg"])) == {-13, 11, -11}


def test_pair_rate_with_beam_energy_spread():
    beam = BeamModel(energy_gev=150.0, energy_spread_rel=0.03)
    config = GeneratorConfig(process="pair", beam=beam, targets=(Target("Be", 1.5),), pair=PairSettings(pair_energy_min_gev=2.0))
    generator = Generator(config, seed=3)
    for _ in generator.run(500_000):
        pass
    summary = generator.summary()
    nodes, weights = np.polynomial.hermite_e.hermegauss(30)
    be = config.targets[0].medium
    averaged = sum(w * sigma_ub(150.0 * (1 + 0.03 * x), be.z, be.a_g_mol, 2.0) for x, w in zip(nodes, weights))
    averaged /= math.sqrt(2 * math.pi) * be.z
    assert abs(summary["sigma_ub"] - averaged) < 3 * summary["sigma_err_ub"] + 2e-4 * averaged


def test_all_mixes_processes_in_proportion():
    config = GeneratorConfig(process="all", targets=TARGETS)
    generator = Generator(config, seed=4)
    events = TruthEvents.concatenate(generator.run(400_000))
    p = generator.pair_probability
    share = np.mean(events.process_names == "pair")
    assert share == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / len(events)))
    pair_sigma, _ = per_electron_sigma(160.0, TARGETS, 1.0)
    summary = generator.summary()
    expected = pair_sigma + generator.analytic_sigma_ub()
    assert abs(summary["sigma_ub"] - expected) < 3 * summary["sigma_err_ub"]
    pair = events.select(events.process_names == "pair")
    assert np.all(np.isnan(pair["t_gev2"])) and np.all(pair["photon_energy_gev"] == 0)
    elastic = events.select(events.process_names == "elastic")
    assert np.all(np.isfinite(elastic["t_gev2"]))
    # the same events whatever the chunking
    again = TruthEvents.concatenate(Generator(config, seed=4).run(400_000, chunk_size=77_777))
    np.testing.assert_array_equal(again["weight"], events["weight"])
    np.testing.assert_array_equal(again["process"], events["process"])


def test_bad_pair_settings():
    with pytest.raises(ValueError, match="pair_energy_min_gev = 0.001"):
        PairSettings(pair_energy_min_gev=1e-3)
    with pytest.raises(ValueError, match="pair_energy_max_gev = 0.5"):
        PairSettings(pair_energy_min_gev=1.0, pair_energy_max_gev=0.5)
    with pytest.raises(ValueError, match="pair: "):
        Generator(GeneratorConfig(process="pair", pair=PairSettings(pair_energy_min_gev=500.0)), seed=1)
