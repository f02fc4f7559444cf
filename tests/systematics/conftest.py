"""Shared truth-level template samples for the systematics tests (seconds to build)."""

import pytest

from fastsim import rng
from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import ElasticSettings, Generator, GeneratorConfig
from systematics.histogram import Binning
from systematics.templates import Template, TemplateSample

#: Philox stream of the tests' Gaussian angular smearing (the toolkit's streams are < 1000 or
#: 1000 + layer / 100000 + layer; this one is used by nothing else).
TEST_SMEARING_STREAM = 990
SMEARING_RAD = 5e-5


def truth_sample(n_events=300_000, seed=11, smearing_rad=SMEARING_RAD, beam_energy_gev=150.0, **elastic):
    config = GeneratorConfig(beam=BeamModel(energy_gev=beam_energy_gev), elastic=ElasticSettings(**elastic))
    events = Generator(config, seed).chunk(0, n_events)
    sample = TemplateSample.from_truth(events)
    if smearing_rad:
        noise = rng.normal_array(seed, 0, n_events, TEST_SMEARING_STREAM, 2) * smearing_rad
        sample = TemplateSample(sample.theta_e_rad + noise[:, 0], sample.theta_mu_rad + noise[:, 1], sample.weight,
                                sample.true_t_gev2, sample.n_generated, sample.reference, sample.beam_energy_gev)
    return sample


@pytest.fixture(scope="session")
def sample():
    return truth_sample()


@pytest.fixture(scope="session")
def binning():
    return Binning.uniform(theta_e_rad=(32, 0.0, 0.032), theta_mu_rad=(20, 0.0, 0.005))


@pytest.fixture(scope="session")
def template(sample, binning):
    return Template(sample, binning)
