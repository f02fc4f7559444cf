"""The whole chain for one configuration: generate -> simulate -> reconstruct -> identify -> select.

What to use when:

- `ChainConfig.from_toml(path)` / `ChainConfig.from_dict(table)` read and validate a chain
  configuration; `config.with_change("simulation.ms_scale", lambda v: 1.01 * v)` is the same
  configuration with one key changed (how a systematic is applied: `systematics.catalogue`).
- `Chain(config, seed)` runs it: `chain.chunk(first_event, n)` gives the `RecoEvents` of events
  first_event .. first_event + n - 1 (event k is the same whatever the chunking), `chain.run(n)`
  yields chunks, and `chain.cutflow` accumulates the weighted cut flow over them.

TOML layout (every section optional; a study preset adds its own sections on top)::

    geometry = "tr2023"          # a preset name (fastsim.detector.geometry.available_geometries),
                                 # a geometry TOML file, or an inline [geometry] table
    mode = "full"                # "full" reconstruction, or "parametric" (smearing of the truth
    calibration = "file.json"    #  with a response measured by `muone calibrate`)
    [generator]                  # fastsim.generator.generate.GeneratorConfig without [[targets]]:
                                 # the vertices are put in the geometry's targets
    [simulation]                 # fastsim.detector.transport.SimulationSettings
    [reconstruction]             # reco.reconstruct.ReconstructionSettings
    [selection]                  # reco.selection.Selection

The configuration keeps its plain table (`config.data`, the geometry expanded from its preset so
that every key of it can be changed by a dotted path), which is what is hashed and saved with
every output. Simulation uses the geometry as written (misalignment included); reconstruction
its nominal version.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from fastsim.config import check_choice, content_hash, load_toml, path_values, with_path_value
from fastsim.detector.geometry import Geometry, geometry_table
from fastsim.detector.transport import SimulationSettings, geometry_targets
from fastsim.config import from_mapping
from fastsim.generator.generate import GeneratorConfig

SECTIONS = ("geometry", "mode", "calibration", "generator", "simulation", "reconstruction", "selection")
MODES = ("full", "parametric")


@dataclass(frozen=True, eq=False)
class ChainConfig:
    """A validated chain configuration (see the module doc); build it with `from_dict`."""

    data: dict
    geometry: Geometry
    generator: GeneratorConfig
    simulation: SimulationSettings
    reconstruction: object
    selection: object
    mode: str = "full"
    calibration: str | None = None
    hash: str = field(default="")

    @classmethod
    def from_dict(cls, data: dict | None = None, where: str = "config") -> "ChainConfig":
        from reco.reconstruct import ReconstructionSettings
        from reco.selection import Selection

        data = copy.deepcopy(data or {})
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a table, got {data!r}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown key {where}.{unknown[0]}; allowed: {', '.join(SECTIONS)}")
        geometry_value = data.get("geometry", "tb2022_station")
        if isinstance(geometry_value, str):
            data["geometry"] = geometry_table(geometry_value)
        elif not isinstance(geometry_value, dict):
            raise ValueError(f"{where}.geometry = {geometry_value!r} must be a preset name, a file or a table")
        geometry = Geometry.from_dict(data["geometry"], where=f"{where}.geometry")
        mode = check_choice(f"{where}.mode", data.get("mode", "full"), MODES)
        calibration = data.get("calibration")
        if calibration is not None and not isinstance(calibration, str):
            raise ValueError(f"{where}.calibration = {calibration!r} must be a file name")
        if mode == "parametric" and calibration is None:
            raise ValueError(f"{where}.calibration is required with mode = 'parametric' (a file from `muone calibrate`)")
        generator_table = data.get("generator", {})
        if isinstance(generator_table, dict) and "targets" in generator_table:
            raise ValueError(f"{where}.generator.targets: the chain puts the vertices in the geometry's targets; "
                             "change the targets in the geometry")
        generator = GeneratorConfig.from_dict(generator_table, where=f"{where}.generator")
        generator = replace(generator, targets=geometry_targets(geometry))
        simulation = from_mapping(SimulationSettings, data.get("simulation", {}), f"{where}.simulation")
        reconstruction = from_mapping(ReconstructionSettings, data.get("reconstruction", {}), f"{where}.reconstruction")
        selection = Selection.from_dict(data.get("selection", {}), where=f"{where}.selection")
        return cls(data, geometry, generator, simulation, reconstruction, selection, mode, calibration,
                   content_hash(data))

    @classmethod
    def from_toml(cls, path) -> "ChainConfig":
        return cls.from_dict(load_toml(path), where=str(path))

    def value(self, key: str):
        """The value at dotted `key` (a list if the key has a "*")."""
        values = path_values(self.data, key)
        return values if "*" in key.split(".") else values[0]

    def with_change(self, key: str, change, create: bool = False) -> "ChainConfig":
        """The configuration with each value v at dotted `key` replaced by change(v), validated
        again (see `fastsim.config.with_path_value`)."""
        return ChainConfig.from_dict(with_path_value(self.data, key, change, create=create))

    @property
    def nominal_beam_energy_gev(self) -> float:
        """The beam energy reconstruction assumes: the configured mean, without the shift."""
        return self.generator.beam.energy_gev
