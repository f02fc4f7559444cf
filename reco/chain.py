"""The whole chain for one configuration: generate -> simulate -> reconstruct -> identify -> select.

What to use when:

- `ChainConfig.from_toml(path)` / `ChainConfig.from_dict(table)` read and validate a chain
  configuration; `config.with_change("simulation.ms_scale", lambda v: 1.01 * v)` is the same
  configuration with one key changed (how a systematic is applied: `systematics.catalogue`).
- `Chain(config, seed)` runs it: `chain.chunk(first_event, n)` gives the `RecoEvents` of events
  first_event .. first_event + n - 1 (event k is the same whatever the chunking), `chain.run(n)`
  yields chunks, and `chain.cutflow` accumulates the weighted cut flow over them;
  `chain.histogram(n, theta_e_edges_rad, theta_mu_edges_rad)` gives the weighted 2D histogram of
  the selected events (in parametric mode straight from the generation kernel: the template path).

TOML layout (every section optional; a study preset adds its own sections on top)::

    geometry = "tr2023"          # a preset name (fastsim.detector.geometry.available_geometries),
                                 # a geometry TOML file, or an inline [geometry] table
    mode = "full"                # "full" reconstruction, or "parametric" (smearing of the truth
    calibration = "file.json"    #  with a response measured by `muone calibrate`)
    [generator]                  # fastsim.generator.generate.GeneratorConfig without [[targets]]:
                                 # the vertices are put in the geometry's targets
    [simulation]                 # fastsim.detector.transport.SimulationSettings
    [reconstruction.tracking]    # reco.tracking.TrackingSettings
    [reconstruction.vertex]      # reco.vertex.VertexSettings
    [pid]                        # reco.pid.PidSettings
    [selection]                  # reco.selection.Selection

The beam energy that reconstruction and identification assume is the generator's configured
mean (`generator.beam.energy_gev`), not the true one: a beam-energy shift is a systematic.

The configuration keeps its plain table (`config.data`: every section written out with all its
keys, defaults included, and the geometry expanded from its preset, so that any key can be
changed by a dotted path), which is what is hashed and saved with every output. Simulation uses the geometry as written (misalignment included); reconstruction
its nominal version.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace

import numpy as np

from fastsim.config import check_choice, content_hash, load_toml, path_values, to_plain, with_path_value
from fastsim.detector.geometry import Geometry, geometry_table
from fastsim.detector.transport import SimulationSettings, geometry_targets
from fastsim.config import from_mapping
from fastsim.generator.generate import GeneratorConfig

SECTIONS = ("geometry", "mode", "calibration", "generator", "simulation", "reconstruction", "pid", "selection")
MODES = ("full", "parametric")


def _section(table: dict, key: str, where: str) -> dict:
    """table[key] (an empty table if absent); ValueError unless it is a table."""
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}.{key} = {value!r} must be a table ([{key}])")
    return value


@dataclass(frozen=True, eq=False)
class ChainConfig:
    """A validated chain configuration (see the module doc); build it with `from_dict`."""

    data: dict
    geometry: Geometry
    generator: GeneratorConfig
    simulation: SimulationSettings
    reconstruction: object
    pid: object
    selection: object
    mode: str = "full"
    calibration: str | None = None
    hash: str = field(default="")

    @classmethod
    def from_dict(cls, data: dict | None = None, where: str = "config") -> "ChainConfig":
        from reco.pid import PidSettings
        from reco.reconstruct import ReconstructionSettings
        from reco.selection import Selection
        from reco.tracking import TrackingSettings
        from reco.vertex import VertexSettings

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
        if mode == "full" and calibration is not None:
            raise ValueError(f"{where}.calibration = {calibration!r} is only read with mode = 'parametric' "
                             "(mode = 'full' reconstructs the events)")
        generator_table = _section(data, "generator", where)
        if "targets" in generator_table:
            raise ValueError(f"{where}.generator.targets: the chain puts the vertices in the geometry's targets; "
                             "change the targets in the geometry")
        generator = GeneratorConfig.from_dict(generator_table, where=f"{where}.generator")
        generator = replace(generator, targets=geometry_targets(geometry))
        simulation = from_mapping(SimulationSettings, _section(data, "simulation", where), f"{where}.simulation")
        beam_energy = {"beam_energy_gev": generator.beam.energy_gev}
        reco_table = _section(data, "reconstruction", where)
        if set(reco_table) - {"tracking", "vertex"}:
            raise ValueError(f"{where}.reconstruction must be a table with [tracking] and [vertex] tables; "
                             f"got keys {sorted(reco_table)}")
        tracking_input = _section(reco_table, "tracking", f"{where}.reconstruction")
        tracking = from_mapping(TrackingSettings, {**beam_energy, **tracking_input}, f"{where}.reconstruction.tracking")
        vertex = from_mapping(VertexSettings, _section(reco_table, "vertex", f"{where}.reconstruction"),
                              f"{where}.reconstruction.vertex")
        reconstruction = ReconstructionSettings(tracking, vertex)
        pid_input = _section(data, "pid", where)
        pid = from_mapping(PidSettings, {**beam_energy, **pid_input}, f"{where}.pid")
        if pid.calorimeter and geometry.calorimeter is None:
            raise ValueError(f"{where}.pid.calorimeter = true, but geometry {geometry.name!r} has no [calorimeter]")
        selection = Selection.from_dict(data.get("selection", {}), where=f"{where}.selection")
        # every key explicit (a systematic can name any of them); the beam energy assumed by
        # tracking and identification follows the generator's unless set explicitly
        tracking_table = {k: v for k, v in to_plain(tracking).items()
                          if k != "beam_energy_gev" or "beam_energy_gev" in tracking_input}
        pid_table = {k: v for k, v in to_plain(pid).items() if k != "beam_energy_gev" or "beam_energy_gev" in pid_input}
        data.update(mode=mode, generator={k: v for k, v in to_plain(generator).items() if k != "targets"},
                    simulation=to_plain(simulation), reconstruction={"tracking": tracking_table, "vertex": to_plain(vertex)},
                    pid=pid_table, selection=selection.to_dict())
        if calibration is not None:
            data["calibration"] = calibration
        return cls(data, geometry, generator, simulation, reconstruction, pid, selection, mode, calibration,
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


class Chain:
    """Generation, simulation, reconstruction, identification and selection of `config` for
    one `seed` (see the module doc). Event k is the same whatever the chunking."""

    def __init__(self, config: ChainConfig, seed: int):
        from fastsim import rng
        from fastsim.detector.transport import DetectorSimulation
        from fastsim.generator.generate import Generator
        from reco.tracking import TrackingModel

        if not isinstance(config, ChainConfig):
            raise ValueError(f"config = {config!r} must be a ChainConfig")
        self.config = config
        self.seed = rng.validate_seed(seed)
        self.generator = Generator(config.generator, self.seed)
        self.nominal_geometry = config.geometry.nominal()
        self.cutflow = config.selection.new_cutflow()
        self.response = None
        if config.mode == "full":
            self.simulation = DetectorSimulation(config.geometry, config.simulation, self.seed)
            self.tracking_model = TrackingModel.from_geometry(self.nominal_geometry, config.reconstruction.tracking)
        else:
            from reco.parametric import ParametricResponse

            self.response = ParametricResponse.load(config.calibration)
            check_calibration(config, self.response.header)
        self.events_seen = 0
        self._metadata = {"chain": config.data, "config_hash": config.hash, "seed": self.seed}

    def reconstructed(self, first_event: int, n_events: int, transport: bool = True):
        """RecoEvents of events first_event .. first_event + n_events - 1 before the selection,
        and the simulated chunk (None in parametric mode). `transport=False` (full mode): the
        detector without the events' particles (`DetectorSimulation.simulate`)."""
        from reco.parametric import apply as parametric_apply
        from reco.pid import identify
        from reco.reconstruct import reconstruct

        truth = self.generator.chunk(first_event, n_events)
        if self.config.mode == "parametric":
            events = parametric_apply(truth, self.response, self.seed)
            events.metadata.update(self._metadata)
            return events, None
        simulated = self.simulation.simulate(truth, transport)
        events = reconstruct(simulated, self.tracking_model, self.config.reconstruction)
        events.metadata.update(self._metadata)
        return identify(events, self.config.pid), simulated

    def chunk(self, first_event: int, n_events: int, transport: bool = True):
        """Selected-flagged RecoEvents of events first_event .. first_event + n_events - 1; the
        cut flow of these events is added to `self.cutflow` (`transport`: `reconstructed`)."""
        events, _ = self.reconstructed(first_event, n_events, transport)
        events = self.config.selection.apply(events, self.nominal_geometry, self.cutflow, self.seed, self.config.pid)
        self.events_seen += len(events)
        return events

    def run(self, n_events: int, chunk_size: int = 100_000, first_event: int = 0):
        """Yield the RecoEvents of n_events events from first_event, chunk by chunk."""
        from fastsim.config import check_integer

        n_events = check_integer("events", n_events, 1)
        chunk_size = check_integer("chunk_size", chunk_size, 1)
        for first in range(first_event, first_event + n_events, chunk_size):
            yield self.chunk(first, min(chunk_size, first_event + n_events - first))

    def histogram(self, n_events: int, theta_e_edges_rad, theta_mu_edges_rad, chunk_size: int | None = None,
                  first_event: int = 0):
        """Weighted 2D histogram (theta_e, theta_mu) of the selected events among first_event ..
        first_event + n_events - 1: (sum_w, sum_w2), each of shape (theta_e bins, theta_mu bins);
        events outside the edges are not counted.

        Parametric mode: `reco.parametric.generated_histogram`, which generates the events inside
        the histogram kernel (one call per chunk of 1e6 events by default) without making event
        arrays: the fast path for templates; `self.cutflow` is not filled. Full mode: the selected
        events of `run` (chunks of 1e5), histogrammed; the cut flow accumulates as in `run`."""
        from fastsim.config import check_edges, check_integer
        from reco import parametric

        n_events = check_integer("events", n_events, 1)
        first_event = check_integer("first_event", first_event, 0)
        parametric_mode = self.config.mode == "parametric"
        chunk_size = (1_000_000 if parametric_mode else 100_000) if chunk_size is None else chunk_size
        chunk_size = check_integer("chunk_size", chunk_size, 1)
        x_edges = check_edges("theta_e_edges_rad", theta_e_edges_rad)
        y_edges = check_edges("theta_mu_edges_rad", theta_mu_edges_rad)
        sum_w = np.zeros((x_edges.size - 1, y_edges.size - 1))
        sum_w2 = np.zeros_like(sum_w)
        if parametric_mode:
            for first in range(first_event, first_event + n_events, chunk_size):
                w, w2 = parametric.generated_histogram(self.generator, first, min(chunk_size, first_event + n_events - first),
                                                       self.response, self.seed, self.config.selection, x_edges, y_edges)
                sum_w += w
                sum_w2 += w2
            self.events_seen += n_events
            return sum_w, sum_w2
        for events in self.run(n_events, chunk_size, first_event):
            selected = events["selected"]
            w = events["weight"][selected]
            coordinates = (events["theta_e_rad"][selected], events["theta_mu_rad"][selected])
            sum_w += np.histogram2d(*coordinates, bins=(x_edges, y_edges), weights=w)[0]
            sum_w2 += np.histogram2d(*coordinates, bins=(x_edges, y_edges), weights=w * w)[0]
        return sum_w, sum_w2

    def metadata(self) -> dict:
        """Chain table, its hash and the seed (saved with every output)."""
        return dict(self._metadata)


def write_chain(chain: Chain, n_events: int, output_dir, chunk_size: int = 100_000, progress=None) -> dict:
    """Run `chain` on events 0 .. n_events - 1 and write `output_dir`/events.parquet (every
    event, `selected` flagged; metadata: the chain table, its hash, the seed, n_generated and the
    generator configuration, so that `systematics.templates.TemplateSample.from_parquet` can
    reweight it) and `output_dir`/cutflow.json. Returns the summary (cut flow, selected cross
    section in ub with its MC error)."""
    import json
    import math
    import os
    from pathlib import Path

    import fastsim
    from fastsim.config import check_integer, to_plain
    from fastsim.events import TruthWriter

    n_events = check_integer("events", n_events, 1)
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output = {str(output)!r} exists and is not a directory")
    output.mkdir(parents=True, exist_ok=True)
    metadata = {**chain.metadata(), "n_generated": n_events, "version": fastsim.__version__,
                "config": {"generator": to_plain(chain.config.generator)}, "mode": chain.config.mode}
    sum_w = sum_w2 = 0.0
    n_selected = 0
    with TruthWriter(output / "events.parquet", metadata) as writer:
        for events in chain.run(n_events, chunk_size):
            writer.write(events)
            w = events["weight"][events["selected"]]
            sum_w += float(w.sum())
            sum_w2 += float((w * w).sum())
            n_selected += int(events["selected"].sum())
            if progress is not None:
                progress(len(events))
    cutflow = chain.cutflow.table()
    sigma = sum_w / n_events
    # error of the mean of the per-event selected weight (zero for rejected events)
    sigma_error = math.sqrt(max(sum_w2 / n_events - sigma * sigma, 0.0) / n_events)
    summary = {"events": n_events, "selected": n_selected, "sigma_selected_ub": sigma,
               "sigma_selected_err_ub": sigma_error, "cutflow": cutflow, "seed": chain.seed,
               "config_hash": chain.config.hash, "mode": chain.config.mode,
               "output": str(output / "events.parquet")}
    temporary = output / ".cutflow.json.part"
    temporary.write_text(json.dumps({"cutflow": cutflow, "events": n_events, "seed": chain.seed,
                                     "config_hash": chain.config.hash}, indent=2, default=float))
    os.replace(temporary, output / "cutflow.json")
    return summary


def calibration_conditions(config: ChainConfig) -> dict:
    """What a parametric response measured with `config` holds for: the detector and the
    reconstruction, that is the geometry as simulated (misalignment included) and the simulation,
    reconstruction and identification settings, with the beam energy that reconstruction and
    identification assume. The generator's settings (hadronic running, beam energy shift and
    spread, radiation) change the truth that the response smears, not the response: the
    residuals of a true angle are taken as those of the calibration's events at that angle."""
    plain = {"geometry": to_plain(config.geometry), "simulation": to_plain(config.simulation),
             "reconstruction": {"tracking": to_plain(config.reconstruction.tracking),
                                "vertex": to_plain(config.reconstruction.vertex)},
             "pid": to_plain(config.pid)}
    return json.loads(json.dumps(plain))  # as the response file stores it


def _first_difference(calibrated, current, key=""):
    """(dotted key, calibrated value, current value) where two plain tables first differ, or None."""
    if isinstance(calibrated, dict) and isinstance(current, dict):
        for name in sorted(set(calibrated) | set(current), key=str):
            found = _first_difference(calibrated.get(name, "<unset>"), current.get(name, "<unset>"),
                                      f"{key}.{name}" if key else str(name))
            if found:
                return found
        return None
    if isinstance(calibrated, list) and isinstance(current, list) and len(calibrated) == len(current):
        for i, (a, b) in enumerate(zip(calibrated, current)):
            found = _first_difference(a, b, f"{key}.{i}")
            if found:
                return found
        return None
    return None if calibrated == current else (key, calibrated, current)


def check_calibration(config: ChainConfig, header: dict | None = None):
    """ValueError unless `config.calibration` was measured by this version of the toolkit for
    `config`'s nominal geometry and `calibration_conditions`, naming the first key that differs;
    `header`: the file's header (`ParametricResponse.header`) if already read, else the header
    alone is read from the file."""
    import fastsim
    from reco.parametric import ParametricResponse, check_calibrated_geometry

    path = config.calibration
    header = ParametricResponse.read_header(path) if header is None else header
    check_calibrated_geometry(header["geometry_name"], header["geometry_hash"], config.geometry.nominal(),
                              f"calibration = {path!r}")
    version = header.get("package_version")
    if version != fastsim.__version__:
        raise ValueError(f"calibration = {path!r} was measured with version {version} of the toolkit, this is "
                         f"{fastsim.__version__}, whose events differ: calibrate again (`muone calibrate`)")
    conditions = header["settings"].get("conditions")
    if conditions is None:
        raise ValueError(f"calibration = {path!r} does not record the configuration it was measured with; make it with "
                         "`muone calibrate` (reco.chain.calibrate_chain)")
    found = _first_difference(conditions, calibration_conditions(config))
    if found:
        key, calibrated, current = found
        raise ValueError(f"calibration = {path!r} was measured with {key} = {calibrated!r}, this chain has "
                         f"{key} = {current!r}: calibrate for this configuration (`muone calibrate`), or use "
                         "mode = 'full'")


def calibrate_chain(config: ChainConfig, n_events: int, seed: int, output, chunk_size: int = 100_000,
                    progress=None, neighbours: int | None = None, max_vectors_per_bin: int | None = None) -> dict:
    """Measure the parametric response (`reco.parametric.calibrate`) from n_events events of the
    full chain of `config` (elastic events only) and save it to `output` (.npz). What the
    calibration needs of each chunk is kept in memory (`reco.parametric.CalibrationSample`, 49
    bytes an event; `calibrate` on 3e7 events peaks at 4.3 GB, sample included). `neighbours`
    and `max_vectors_per_bin` go to `reco.parametric.calibrate` (defaults there)."""
    from fastsim.config import check_integer
    from reco.parametric import DEFAULT_NEIGHBOURS, CalibrationSample, calibrate

    n_events = check_integer("events", n_events, 1)
    neighbours = DEFAULT_NEIGHBOURS if neighbours is None else check_integer("neighbours", neighbours, 1)
    if max_vectors_per_bin is not None:  # checked before the events are simulated
        max_vectors_per_bin = check_integer("max_vectors_per_bin", max_vectors_per_bin, 1)
    if config.mode != "full":
        raise ValueError("calibrate: the response is measured from the full reconstruction (mode = 'full')")
    if config.generator.elastic.radiation != "none":
        # the response resamples the calibration events without their weights, which at one angle
        # are equal at LO (to 3e-4) but spread by ~70 % with radiation
        raise ValueError(f"calibrate: generator.elastic.radiation = {config.generator.elastic.radiation!r}; the "
                         "response resamples the calibration events without their weights, which radiation spreads "
                         "by ~70 % at one angle: calibrate with radiation = 'none' (the response smears radiative "
                         "truth too)")
    chain = Chain(config, seed)
    parts = []
    for first in range(0, n_events, chunk_size):
        events, _ = chain.reconstructed(first, min(chunk_size, n_events - first))
        parts.append(CalibrationSample.from_events(events, chain.nominal_geometry, config.selection, config.pid))
        if progress is not None:
            progress(len(events))
    sample = CalibrationSample.concatenate(parts)
    del parts
    response = calibrate(sample, chain.nominal_geometry, config.selection, config.pid,
                         max_vectors_per_bin=max_vectors_per_bin, neighbours=neighbours,
                         conditions=calibration_conditions(config))
    path = response.save(output)
    return {"events": n_events, "elastic_events": len(sample.weight), "bins": len(response.table()),
            "vectors": int(response.residuals.shape[0]), "neighbours": response.neighbours,
            "file_bytes": path.stat().st_size, "output": str(path), "config_hash": config.hash, "seed": chain.seed}
