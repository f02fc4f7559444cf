"""Where a command's chain configuration comes from: a TOML file, a study preset, or a geometry.

`chain_table(config=FILE)` reads a chain configuration file (the layout of
`reco.chain.ChainConfig`; a study file's [chain] table is used if it has one);
`chain_table(preset=NAME)` takes the [chain] table of the study preset NAME
(`studies/presets/NAME.toml`) or, for a geometry preset name, the chain on that geometry with
every other section at its default. Unknown names are a ValueError listing what exists.
"""

from __future__ import annotations

from importlib import resources

from fastsim.config import load_toml
from fastsim.detector.geometry import available_geometries


def _preset_folder():
    return resources.files("studies").joinpath("presets")


def available_presets() -> list[str]:
    """Names of the study presets shipped in studies/presets."""
    folder = _preset_folder()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_path(name: str):
    """The file of study preset `name`; ValueError listing the presets if there is none."""
    if name not in available_presets():
        raise ValueError(f"preset = {name!r} is unknown; study presets: {available_presets()}, "
                         f"geometry presets: {available_geometries()}")
    return _preset_folder().joinpath(f"{name}.toml")


def chain_table(config=None, preset=None) -> dict:
    """The chain table of --config FILE or --preset NAME (see the module doc); {} if neither."""
    if config is not None and preset is not None:
        raise ValueError("give --config or --preset, not both")
    if config is not None:
        table = load_toml(config)
        return table["chain"] if isinstance(table.get("chain"), dict) else table
    if preset is None:
        return {}
    if preset in available_geometries() and preset not in available_presets():
        return {"geometry": preset}
    table = load_toml(preset_path(preset))
    return dict(table.get("chain", {}))
