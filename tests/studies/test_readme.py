"""The configuration examples of the README are valid."""

import re
import tomllib
from pathlib import Path

from reco.chain import ChainConfig
from systematics import catalogue

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_chain_toml_example_is_a_valid_configuration():
    chain = [b for b in blocks("toml") if 'geometry = "run2025"' in b]
    assert chain
    config = ChainConfig.from_dict(tomllib.loads(chain[0]))
    assert config.selection.cut("theta_e_window").max_rad == 0.020


def test_telescope_example_is_a_valid_geometry(tmp_path):
    from fastsim.detector.geometry import load_geometry

    block = [b for b in blocks("toml") if 'name = "telescope"' in b]
    assert block
    preset = (Path(__file__).resolve().parents[2] / "fastsim/detector/geometries/run2025.toml").read_text()
    header, stations = preset.split("[[stations]]", 1)
    path = tmp_path / "run2025_telescope.toml"
    path.write_text(header + block[0] + "\n[[stations]]" + stations)
    geometry = load_geometry(str(path))
    assert [s.name for s in geometry.stations] == ["telescope", "S0", "S1", "S2"]
    assert geometry.stations[0].target is None and geometry.target_count == 3


def test_systematic_examples_apply():
    config = ChainConfig.from_dict({"geometry": "run2025"})
    table = [b for b in blocks("toml") if "[[systematics]]" in b]
    assert table
    for entry in tomllib.loads(table[0])["systematics"]:
        systematic = catalogue.from_table(entry)
        catalogue.check_keys(systematic, config)
    python = [b for b in blocks("python") if "@register" in b]
    assert python
    try:
        exec(python[0], {})
        shifted = catalogue.get("downstream_length").apply(config, 1.0)
        assert [s.length_scale for s in shifted.geometry.stations] == [1.00002] * 3
    finally:
        catalogue.CATALOGUE.pop("downstream_length", None)
