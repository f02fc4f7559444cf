"""The systematic catalogue: each entry is a change of the chain configuration."""

import pytest

from reco.chain import ChainConfig
from systematics import catalogue


@pytest.fixture(scope="module")
def config():
    return ChainConfig.from_dict({"geometry": "run2025", "generator": {"beam": {"energy_spread_rel": 0.01,
                                                                               "divergence_x_rad": 2e-4, "spot_x_cm": 1.0}}})


@pytest.mark.parametrize("name", catalogue.names())
def test_every_systematic_applies_and_zero_is_identity(config, name):
    systematic = catalogue.get(name)
    assert systematic.apply(config, 0.0) is config
    shifted = systematic.apply(config, 1.0)
    assert isinstance(shifted, ChainConfig)
    assert shifted.hash != config.hash


def test_scale_add_and_one_sided(config):
    ms = catalogue.get("ms_scale").apply(config, 2.0)
    assert ms.simulation.ms_scale == pytest.approx(1.02, rel=1e-15)
    shift = catalogue.get("beam_energy_shift").apply(config, -1.0)
    assert shift.generator.beam.energy_shift_gev == pytest.approx(-0.003)
    assert shift.nominal_beam_energy_gev == config.nominal_beam_energy_gev  # reconstruction keeps the nominal
    efficiency = catalogue.get("hit_efficiency")
    for n in (-1.0, 1.0):
        shifted = efficiency.apply(config, n)
        assert [s.modules[0].hit_efficiency for s in shifted.geometry.stations] == [0.99] * 3
        assert [s.modules[1].hit_efficiency for s in shifted.geometry.stations] == [1.0] * 3
    length = catalogue.get("station_length_scale").apply(config, 1.0)
    assert [s.length_scale for s in length.geometry.stations] == [1.0 + 1e-5] * 3
    module_z = catalogue.get("module_z").apply(config, 1.0)
    assert [m.misalignment.dz_cm for m in module_z.geometry.stations[1].modules] == [0, 0, 0, 0, 1e-3, 1e-3]
    assert module_z.geometry.nominal() == config.geometry.nominal()


def test_discrete_switch(config):
    radiative = catalogue.get("radiative_corrections")
    assert radiative.is_discrete
    assert radiative.apply(config, 1.0).generator.elastic.radiation == "nlo"


def test_custom_toml_systematic(config):
    table = {"name": "target_graphite", "key": "geometry.stations.*.target.thickness_cm", "mode": "add",
             "sigma": 0.01, "reference": "ours"}
    systematic = catalogue.from_table(table)
    catalogue.check_keys(systematic, config)
    shifted = systematic.apply(config, 1.0)
    assert [s.target.thickness_cm for s in shifted.geometry.stations] == [3.01] * 3


def test_custom_systematic_with_a_missing_key_is_refused(config):
    systematic = catalogue.from_table({"name": "typo", "key": "simulation.ms_scael", "sigma": 0.1})
    with pytest.raises(ValueError, match="simulation.ms_scael.*does not exist"):
        catalogue.check_keys(systematic, config)
    with pytest.raises(ValueError, match="unknown key systematics.sigmaa"):
        catalogue.from_table({"name": "x", "key": "simulation.ms_scale", "sigmaa": 1})


def test_unknown_name_lists_the_catalogue():
    with pytest.raises(ValueError, match="systematic = 'nosuch' is unknown; known systematics: .*ms_scale"):
        catalogue.get("nosuch")


def test_register_a_python_systematic(config):
    @catalogue.register("test_double_ms", sigma=1.0, reference="test")
    def double_ms(chain_config, n_sigma):
        return chain_config.with_change("simulation.ms_scale", lambda v: (v or 1.0) * (1 + 0.02 * n_sigma), create=True)

    try:
        assert catalogue.get("test_double_ms").apply(config, 1.0).simulation.ms_scale == pytest.approx(1.02)
        with pytest.raises(ValueError, match="already in the catalogue"):
            catalogue.register("test_double_ms")(double_ms)
    finally:
        catalogue.CATALOGUE.pop("test_double_ms")
