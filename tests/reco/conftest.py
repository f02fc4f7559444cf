"""Shared samples for the reconstruction tests."""

import pytest

from fastsim.detector.geometry import load_geometry
from fastsim.detector.transport import geometry_targets
from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import ElasticSettings, Generator, GeneratorConfig
from reco.tracking import TrackingModel


@pytest.fixture(scope="session")
def tr2023_sample():
    """Factory: (geometry, truth, nominal tracking model) for n elastic events in the tr2023 stations,
    with a 1 cm beam spot and 0.2 mrad divergence in both planes; `elastic` (generation cuts) and
    `targets` (a slice of the geometry's targets) narrow the sample."""

    def make(seed: int, n_events: int, elastic: ElasticSettings = ElasticSettings(), targets: slice = slice(None)):
        geometry = load_geometry("tr2023")
        beam = BeamModel(spot_x_cm=1.0, spot_y_cm=1.0, divergence_x_rad=2e-4, divergence_y_rad=2e-4)
        config = GeneratorConfig(beam=beam, targets=geometry_targets(geometry)[targets], elastic=elastic)
        truth = Generator(config, seed=seed).chunk(0, n_events)
        return geometry, truth, TrackingModel.from_geometry(geometry)

    return make
