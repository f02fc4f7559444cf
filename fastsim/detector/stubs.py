"""Stubs: pairs of clusters in the two sensors of a 2S module that agree within a window.

A stub is what a CMS 2S module's CBC chip reports (Abbas et al., "The CBC3 chip",
JINST 12 (2017) C02035): a seed cluster in sensor 0 and a correlation cluster in sensor 1 whose
bend (centre 1 - centre 0, in strips) lies within `window_strips` of the bend expected for a
track along the beam, offset = spacing tan(alpha) / pitch with tan(alpha) = m_z / n_z of the
module's sensor frame. `build_stubs` pairs the clusters of every module of every event as
`fastsim.detector.digitization.make_stubs` does for one module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from fastsim.config import check_range
from fastsim.detector.digitization import StripHits, make_stub
from fastsim.detector.geometry import KIND_SENSOR, Layers

DEFAULT_WINDOW_STRIPS = 3.0


@dataclass(frozen=True, eq=False)
class Stubs:
    """Stubs of a chunk in CSR form: stubs of event first_event + i are rows offsets[i] ..
    offsets[i + 1] - 1; `module` is the global module index (z order), `hit0`/`hit1` index the
    flat arrays of the StripHits, `u_cm` is the seed cluster's local coordinate, `bend_strips`
    the measured bend."""

    first_event: int
    offsets: np.ndarray
    module: np.ndarray
    hit0: np.ndarray
    hit1: np.ndarray
    u_cm: np.ndarray
    bend_strips: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets[-1])


@dataclass(frozen=True)
class ModuleMap:
    """Sensor-to-module map of a geometry: per sensor id its module and side; per module the
    expected bend of a track along the beam (strips) and the pitch (cm)."""

    module_of_sensor: np.ndarray
    side_of_sensor: np.ndarray
    offset_strips: np.ndarray
    pitch_cm: np.ndarray

    @property
    def partner_of_sensor(self) -> np.ndarray:
        """Per sensor id the sensor id of the other side of its module (-1 if there is none)."""
        partner = np.full(self.module_of_sensor.size, -1, np.int64)
        sensors = np.arange(self.module_of_sensor.size)
        for side in (0, 1):
            this, other = sensors[self.side_of_sensor == side], sensors[self.side_of_sensor == 1 - side]
            other_of_module = np.full(self.offset_strips.size, -1, np.int64)
            other_of_module[self.module_of_sensor[other]] = other
            partner[this] = other_of_module[self.module_of_sensor[this]]
        return partner

    @classmethod
    def from_layers(cls, layers: Layers) -> "ModuleMap":
        sensors = np.flatnonzero(layers.kind == KIND_SENSOR)
        keys = layers.station[sensors] * 10_000 + layers.module[sensors]
        _, module_of_sensor = np.unique(keys, return_inverse=True)
        n_modules = int(module_of_sensor.max()) + 1 if sensors.size else 0
        offset = np.zeros(n_modules)
        pitch = np.zeros(n_modules)
        for m in range(n_modules):
            pair = sensors[module_of_sensor == m]
            first, second = sorted(pair, key=lambda layer: layers.sensor[layer])
            normal, measure = layers.normal[first], layers.measure_dir[first]
            spacing = float(np.dot(layers.centre_cm[second] - layers.centre_cm[first], normal))
            offset[m] = spacing * measure[2] / normal[2] / layers.pitch_cm[first]
            pitch[m] = layers.pitch_cm[first]
        return cls(module_of_sensor.astype(np.int64), layers.sensor[sensors].astype(np.int64), offset, pitch)


@njit(cache=True, nogil=True)
def _match_event_seeds(start, stop, sensor_id, u_cm, module_of_sensor, side_of_sensor, partner_of_sensor,
                       offset_strips, pitch_cm, window_strips, partner_hit, bend_strips, first_of_sensor, next_hit):
    """For each seed cluster (sensor 0) among the hits start .. stop - 1 of one event, the partner
    cluster (sensor 1 of the same module) whose bend is closest to the expected one, within the
    window (`make_stub`; the first of equally close ones): partner_hit[h0] and bend_strips[h0]
    (partner_hit -1 where there is none and for the clusters of sensor 1). Returns the number of
    stubs. The hits of each sensor are chained in increasing order (first_of_sensor, all -1 on
    entry and on return, and next_hit), so a seed looks at its partner sensor's hits only."""
    for h in range(stop - 1, start - 1, -1):
        next_hit[h] = first_of_sensor[sensor_id[h]]
        first_of_sensor[sensor_id[h]] = h
    count = 0
    for h0 in range(start, stop):
        partner_hit[h0] = -1
        if side_of_sensor[sensor_id[h0]] != 0:
            continue
        m = module_of_sensor[sensor_id[h0]]
        partner = partner_of_sensor[sensor_id[h0]]
        position0 = u_cm[h0] / pitch_cm[m]
        best, best_distance, best_bend = -1, np.inf, 0.0
        h1 = first_of_sensor[partner] if partner >= 0 else -1
        while h1 >= 0:
            ok, _, bend = make_stub(position0, u_cm[h1] / pitch_cm[m], offset_strips[m], window_strips)
            if ok and abs(bend - offset_strips[m]) < best_distance:
                best, best_distance, best_bend = h1, abs(bend - offset_strips[m]), bend
            h1 = next_hit[h1]
        if best >= 0:
            partner_hit[h0] = best
            bend_strips[h0] = best_bend
            count += 1
    for h in range(start, stop):
        first_of_sensor[sensor_id[h]] = -1
    return count


@njit(parallel=True, cache=True)
def _match_seeds(offsets, sensor_id, u_cm, module_of_sensor, side_of_sensor, partner_of_sensor, offset_strips, pitch_cm,
                 window, partner_hit, bend_strips, counts, first_of_sensor, next_hit):
    """`_match_event_seeds` of every event; first_of_sensor (n_threads, n_sensors) all -1, a row
    per thread."""
    for i in prange(offsets.size - 1):
        counts[i] = _match_event_seeds(offsets[i], offsets[i + 1], sensor_id, u_cm, module_of_sensor, side_of_sensor,
                                       partner_of_sensor, offset_strips, pitch_cm, window, partner_hit, bend_strips,
                                       first_of_sensor[numba.get_thread_id()], next_hit)


@njit(parallel=True, cache=True)
def _fill_stubs(offsets, sensor_id, u_cm, module_of_sensor, partner_hit, bend_strips, stub_offsets, out_module,
                out_hit0, out_hit1, out_u, out_bend):
    """The stubs of each event in the order of their seed clusters."""
    for i in prange(offsets.size - 1):
        row = stub_offsets[i]
        for h0 in range(offsets[i], offsets[i + 1]):
            if partner_hit[h0] >= 0:
                out_module[row] = module_of_sensor[sensor_id[h0]]
                out_hit0[row] = h0
                out_hit1[row] = partner_hit[h0]
                out_u[row] = u_cm[h0]
                out_bend[row] = bend_strips[h0]
                row += 1


def build_stubs(hits: StripHits, modules: ModuleMap, window_strips: float = DEFAULT_WINDOW_STRIPS) -> Stubs:
    """The stubs of every module of every event of `hits` (see the module docstring)."""
    window = check_range("window_strips", window_strips, 0.0, 100.0)
    n_events = hits.offsets.size - 1
    sensor_id = hits.sensor_id
    args = (hits.offsets, sensor_id, hits.u_cm, modules.module_of_sensor, modules.side_of_sensor,
            modules.partner_of_sensor, modules.offset_strips, modules.pitch_cm, window)
    partner_hit, bend_of_seed = np.empty(sensor_id.size, dtype=np.int64), np.empty(sensor_id.size)
    counts = np.zeros(n_events, dtype=np.int64)
    first_of_sensor = np.full((numba.config.NUMBA_NUM_THREADS, modules.module_of_sensor.size), -1, dtype=np.int64)
    _match_seeds(*args, partner_hit, bend_of_seed, counts, first_of_sensor, np.empty(sensor_id.size, dtype=np.int64))
    offsets = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    module, hit0, hit1 = (np.empty(total, dtype=np.int64) for _ in range(3))
    u, bend = np.empty(total), np.empty(total)
    _fill_stubs(hits.offsets, sensor_id, hits.u_cm, modules.module_of_sensor, partner_hit, bend_of_seed, offsets, module,
                hit0, hit1, u, bend)
    return Stubs(hits.first_event, offsets, module, hit0, hit1, u, bend)
