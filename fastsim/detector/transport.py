"""Detector simulation: truth events transported through the (true, misaligned) geometry.

`DetectorSimulation(geometry, settings, seed).simulate(truth)` returns the digitized strip hits
of a TruthEvents chunk (CSR, `fastsim.detector.digitization.StripHits`) and the true sensor
crossings. Per event (ACTS Fatras style: straight lines between layers, one kernel per effect,
each with its own random-number stream):

1. the station s of the vertex is the one whose target contains vertex_z_cm; the layers
   simulated are those of station s - 1 (which measures the incoming muon) and of station s;
2. the incoming muon comes along the beam line of the truth, crosses the layers upstream of the
   vertex and the part of the target in front of it, scattering in each; the vertex moves to where
   it arrives, and the outgoing particles are rotated by the muon's deflection, so their angles
   with respect to the incoming muon stay those of the truth;
3. each charged outgoing particle crosses the rest of the target and the sensors behind it;
   electrons lose energy by bremsstrahlung (Bethe-Heitler) before scattering in each layer, so
   the scattering width follows the energy; photons leave no hits;
4. at each sensor the crossing is recorded in the sensor's local frame (u across the strips,
   v along them, incidence slope tan(alpha) = d.u / d.n), then digitized (clusters, efficiency,
   noise, edges of the active area), and the clusters of each module's two sensors are paired
   into stubs (`fastsim.detector.stubs`);
5. with a calorimeter, the outgoing particles go on from the vertex station to its front face,
   each downstream station one scatterer (its whole x/X0 spread over its length: hits are not
   simulated there, the reconstruction does not use them), and deposit their energy in the
   crystals (`fastsim.detector.calorimeter`); photons go straight, without converting.

Multiple scattering: Highland's formula with the logarithm of the whole station's material
(targets and sensors, x/X0 for a track along z), its variance shared among the layers in
proportion to their x/X0: theta0_layer = theta0_Highland(X_station) sqrt(x_layer / X_station).
The per-layer deflections then add up to Highland on the total material with the correct
logarithm (REFERENCE.md: Highland per layer added in quadrature is 6-8 % low). `ms_scale`
multiplies every theta0 (the systematic knob); `ms_model="mixture"` adds the single-scattering
tail of `fastsim.detector.interactions.scatter_mixture`. Position offsets at a layer's exit are
applied along the lab x and y axes (the local frame of a forward track up to O(theta^2)).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from numba import float64, int64, njit, prange, types, uint64

from fastsim import rng
from fastsim.config import check_choice, check_range
from fastsim.detector.calorimeter import IMPACT_MUON, IMPACT_NONE, IMPACT_SHOWER, CalorimeterResponse
from fastsim.detector.digitization import (
    DEFAULT_SIGMA_DIFF_CM,
    DEFAULT_THRESHOLD_FRACTION,
    SensorParameters,
    StripHits,
    digitize_events,
)
from fastsim.detector.geometry import KIND_SENSOR, KIND_TARGET, Geometry
from fastsim.detector.stubs import DEFAULT_WINDOW_STRIPS, ModuleMap, Stubs, build_stubs
from fastsim.detector.interactions import (
    deflect,
    highland_share_theta0_rad,
    nuclear_cutoff_rad,
    sample_bethe_heitler_log,
    scatter_gaussian,
    scatter_mixture,
)
from fastsim.events import TruthEvents
from fastsim.generator.beam import rotate_from_to
from fastsim.generator.targets import Target
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV, PDG_ELECTRON, PDG_MUON, PDG_PHOTON

_PARTICLES_PER_EVENT = 4  # incoming muon + up to three outgoing particles
_OUTGOING_PER_EVENT = _PARTICLES_PER_EVENT - 1


@dataclass(frozen=True)
class SimulationSettings:
    """Detector-simulation options: multiple-scattering scale and model, bremsstrahlung, the
    half-width of the stub window (strips), and the strip-charge model of the digitization
    (`fastsim.detector.digitization`: binary threshold as a fraction of a perpendicular MIP's
    charge, effective diffusion width), which sets the cluster sizes and so the intrinsic hit
    resolution."""

    ms_scale: float = 1.0
    ms_model: str = "gaussian"
    bremsstrahlung: bool = True
    stub_window_strips: float = DEFAULT_WINDOW_STRIPS
    threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION
    diffusion_sigma_cm: float = DEFAULT_SIGMA_DIFF_CM

    def __post_init__(self):
        check_range("ms_scale", self.ms_scale, 0.0, 10.0)
        check_choice("ms_model", self.ms_model, ("gaussian", "mixture"))
        check_range("stub_window_strips", self.stub_window_strips, 0.0, 100.0)
        check_range("threshold_fraction", self.threshold_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_range("diffusion_sigma_cm", self.diffusion_sigma_cm, 0.0, 0.01, low_open=True)

    def kernel_array(self) -> np.ndarray:
        """[ms_scale, mixture (0/1), bremsstrahlung (0/1)] for the transport kernels."""
        return np.array([self.ms_scale, 1.0 if self.ms_model == "mixture" else 0.0, 1.0 if self.bremsstrahlung else 0.0])


def geometry_targets(geometry: Geometry) -> tuple[Target, ...]:
    """The geometry's targets with global z (front face), for the generator's vertices."""
    targets = []
    for station in geometry.stations:
        if station.target is not None:
            t = station.target
            targets.append(Target(t.material, t.thickness_cm, station.global_z_cm(t.z_cm + 0.5 * t.thickness_cm) - 0.5 * t.thickness_cm))
    return tuple(targets)


@njit(cache=True, nogil=True, inline="always")
def _scatter(seed, event, layer, particle, path_cm, x0_cm, atomic_number, mass_number, x_station, log_x_station,
             momentum, energy, mass, ms_scale, mixture, direction, position):
    """Multiple scattering of one particle (momentum and energy in GeV) in one layer of a
    scatterer of x/X0 = x_station (and its logarithm): deflects `direction` and shifts
    `position` in place (see the module docstring for the width)."""
    if path_cm <= 0.0 or x_station <= 0.0 or ms_scale == 0.0:
        return
    theta0 = ms_scale * highland_share_theta0_rad(momentum, energy, mass, path_cm / x0_cm, log_x_station)
    stream = rng.multiple_scattering_stream(layer)
    z1, z2, z3, z4 = rng.normal4(seed, event, stream, particle)
    if mixture:
        dtx, dty, dx, dy = _scatter_with_tail(seed, event, stream, particle, theta0, path_cm, x_station, momentum,
                                              energy, atomic_number, mass_number, z1, z2, z3, z4)
    else:
        dtx, dty, dx, dy = scatter_gaussian(theta0, path_cm, z1, z2, z3, z4)
    position[0] += dx
    position[1] += dy
    direction[0], direction[1], direction[2] = deflect(direction[0], direction[1], direction[2], dtx, dty)


# called, not inlined: `_scatter` is inlined at four sites of the transport, and this branch
# (ms_model = "mixture" only) with its Philox block took compile time at each
@njit(types.UniTuple(float64, 4)(uint64, uint64, int64, int64, *(float64,) * 11), cache=True, nogil=True)
def _scatter_with_tail(seed, event, stream, particle, theta0, path_cm, x_station, momentum, energy, atomic_number,
                       mass_number, z1, z2, z3, z4):
    """`scatter_mixture` of one crossing: its uniforms are block _PARTICLES_PER_EVENT + particle
    of the layer's stream (the normals z1..z4 are block `particle`); the tail rate takes the
    whole scatterer's x/X0 (it enters Highland's logarithm)."""
    u1, u2, u3, u4 = rng.uniform4(seed, event, stream, _PARTICLES_PER_EVENT + particle)
    return scatter_mixture(theta0, path_cm, x_station, momentum / energy, 1.0, atomic_number,
                           nuclear_cutoff_rad(momentum, mass_number), u1, u2, u3, u4, z1, z2, z3, z4)


@njit(cache=True, nogil=True, inline="always")
def _step_to_z(position, direction, z):
    s = (z - position[2]) / direction[2]
    position[0] += s * direction[0]
    position[1] += s * direction[1]
    position[2] = z


@njit(cache=True, nogil=True, inline="always")
def _cross_layer(seed, event, layer, particle, is_electron, energy, mass, position, direction, settings,
                 layer_z, thickness, x0, atomic_number, mass_number, kind, measure, strip, normal, centre, x_station,
                 log_x_station, record, out_u, out_v, out_tan, out_layer, out_particle, count):
    """Move one particle through `layer` (a whole target or a sensor); returns (energy, count)."""
    if kind[layer] == KIND_SENSOR:
        n0, n1, n2 = normal[layer, 0], normal[layer, 1], normal[layer, 2]
        denom = direction[0] * n0 + direction[1] * n1 + direction[2] * n2
        if denom <= 0.0:
            return energy, count
        s = ((centre[layer, 0] - position[0]) * n0 + (centre[layer, 1] - position[1]) * n1
             + (centre[layer, 2] - position[2]) * n2) / denom
        for c in range(3):
            position[c] += s * direction[c]
        if record:
            rel0, rel1, rel2 = position[0] - centre[layer, 0], position[1] - centre[layer, 1], position[2] - centre[layer, 2]
            m0, m1, m2 = measure[layer, 0], measure[layer, 1], measure[layer, 2]
            out_u[count] = rel0 * m0 + rel1 * m1 + rel2 * m2
            out_v[count] = rel0 * strip[layer, 0] + rel1 * strip[layer, 1] + rel2 * strip[layer, 2]
            out_tan[count] = (direction[0] * m0 + direction[1] * m1 + direction[2] * m2) / denom
            out_layer[count] = layer
            out_particle[count] = particle
            count += 1
        path = thickness[layer] / denom
        for c in range(3):  # on to the exit face, where material_step puts the scattering's offset
            position[c] += 0.5 * path * direction[c]
    else:
        _step_to_z(position, direction, layer_z[layer] + 0.5 * thickness[layer])
        path = thickness[layer] / direction[2]
    return material_step(seed, event, layer, particle, is_electron, energy, mass, path, position, direction, settings,
                         x0, atomic_number, mass_number, x_station, log_x_station), count


@njit(cache=True, nogil=True, inline="always")
def material_step(seed, event, layer, particle, is_electron, energy, mass, path, position, direction, settings,
                  x0, atomic_number, mass_number, x_station, log_x_station):
    """Bremsstrahlung (electrons) and multiple scattering over `path` cm of `layer`, part of a
    scatterer of x/X0 = x_station (log_x_station its logarithm); returns the exit energy. The
    particle must already be where the path ends, on the straight line it entered along: the
    scattering adds its exit-plane offset to `position` and turns `direction` there (stepping on
    with the turned direction after scattering at the entry would add path x angle to the offset,
    2.6x its width). An electron scatters with the momentum p_eff = p_in sqrt(2 tau /
    (e^(2 tau) - 1)), tau = ln(E_in / E_out): the mean of 1/p^2 along the path for an
    exponential energy loss."""
    momentum = math.sqrt(energy * energy - mass * mass)
    scatter_energy = energy
    if is_electron and settings[2] != 0.0:
        tau, _ = sample_bethe_heitler_log(seed, event, rng.bremsstrahlung_stream(layer), particle << 20, path / x0[layer])
        fraction = math.exp(-tau)
        if fraction < 1.0:  # most crossings of a thin layer lose less than the float64 resolution
            exit_energy = energy * fraction
            if exit_energy <= mass * (1.0 + 1e-9):  # stopped: the loss is what the electron had
                exit_energy = mass * (1.0 + 1e-9)
                tau = math.log(energy / exit_energy)
            if tau > 0.0:
                momentum *= math.sqrt(2.0 * tau / math.expm1(2.0 * tau))
                scatter_energy = math.sqrt(momentum * momentum + mass * mass)
            energy = exit_energy
    _scatter(seed, event, layer, particle, path, x0[layer], atomic_number[layer], mass_number[layer], x_station,
             log_x_station, momentum, scatter_energy, mass, settings[0], settings[1] != 0.0, direction, position)
    return energy


@njit(parallel=True, cache=True)
def _transport(seed, event_ids, vertex, beam_direction, beam_energy, p_offsets, pdg, momenta,
               layer_z, thickness, x0, atomic_number, mass_number, kind, station, measure, strip, normal, centre,
               station_first, station_last, station_x, station_log_x, settings, capacity,
               out_u, out_v, out_tan, out_layer, out_particle, counts, true_vertex, vertex_station, exit_state):
    for i in prange(event_ids.size):
        event = event_ids[i]
        count = 0
        vertex_station[i] = -1
        exit_state[i, :, _STATE_PDG] = 0.0
        z_v = vertex[i, 2]
        target = -1
        for layer in range(layer_z.size):
            if kind[layer] == KIND_TARGET and abs(z_v - layer_z[layer]) <= 0.5 * thickness[layer] * (1 + 1e-12):
                target = layer
        if target < 0:  # vertex outside every target: no hits
            counts[i] = 0
            true_vertex[i, 0], true_vertex[i, 1], true_vertex[i, 2] = vertex[i, 0], vertex[i, 1], z_v
            continue
        s_v = station[target]
        vertex_station[i] = s_v
        first = station_first[max(s_v - 1, 0)]
        last = station_last[s_v]
        u_row, v_row, tan_row = out_u[i], out_v[i], out_tan[i]
        layer_row, particle_row = out_layer[i], out_particle[i]
        # incoming muon, along the truth's beam line from in front of the first layer
        direction = beam_direction[i].copy()
        start_z = min(layer_z[first] - thickness[first], z_v) - 5.0
        position = np.empty(3)
        position[0] = vertex[i, 0] + direction[0] / direction[2] * (start_z - z_v)
        position[1] = vertex[i, 1] + direction[1] / direction[2] * (start_z - z_v)
        position[2] = start_z
        energy = beam_energy[i]
        for layer in range(first, target):
            energy, count = _cross_layer(seed, event, layer, 0, False, energy, MUON_MASS_GEV, position, direction,
                                         settings, layer_z, thickness, x0, atomic_number, mass_number, kind, measure,
                                         strip, normal, centre, station_x[station[layer]], station_log_x[station[layer]],
                                         count < capacity, u_row, v_row, tan_row, layer_row, particle_row, count)
        front = layer_z[target] - 0.5 * thickness[target]
        _step_to_z(position, direction, front)
        depth = (z_v - front) / direction[2]
        _step_to_z(position, direction, z_v)
        material_step(seed, event, target, 0, False, energy, MUON_MASS_GEV, depth, position, direction, settings,
                      x0, atomic_number, mass_number, station_x[s_v], station_log_x[s_v])
        true_vertex[i, 0], true_vertex[i, 1], true_vertex[i, 2] = position[0], position[1], z_v
        # outgoing particles, rotated by the incoming muon's deflection
        back = layer_z[target] + 0.5 * thickness[target]
        for k in range(p_offsets[i], p_offsets[i + 1]):
            code = abs(pdg[k])
            slot = k - p_offsets[i]
            charged = code == PDG_MUON or code == PDG_ELECTRON
            if not charged and code != PDG_PHOTON:
                continue
            particle = 1 + slot
            mass = MUON_MASS_GEV if code == PDG_MUON else (ELECTRON_MASS_GEV if code == PDG_ELECTRON else 0.0)
            px, py, pz, e_out = momenta[k, 0], momenta[k, 1], momenta[k, 2], momenta[k, 3]
            norm = math.sqrt(px * px + py * py + pz * pz)
            if not (e_out > mass and norm > 0.0):  # no physical final state (a zero-weight trial): no hits
                continue
            d = np.empty(3)
            d[0], d[1], d[2] = rotate_from_to(beam_direction[i, 0], beam_direction[i, 1], beam_direction[i, 2],
                                              direction[0], direction[1], direction[2], px / norm, py / norm, pz / norm)
            if d[2] <= 0.0:
                continue
            r = np.empty(3)
            r[0], r[1], r[2] = position[0], position[1], z_v
            if not charged:  # a photon: straight on, no hits
                if slot < exit_state.shape[1]:
                    _store_state(exit_state[i, slot], r, d, e_out, e_out, code)
                continue
            path = (back - z_v) / d[2]
            _step_to_z(r, d, back)
            e_k = material_step(seed, event, target, particle, code == PDG_ELECTRON, e_out, mass, path, r, d, settings,
                                x0, atomic_number, mass_number, station_x[s_v], station_log_x[s_v])
            for layer in range(target + 1, last + 1):
                if d[2] <= 0.0:
                    break
                e_k, count = _cross_layer(seed, event, layer, particle, code == PDG_ELECTRON, e_k, mass, r, d,
                                          settings, layer_z, thickness, x0, atomic_number, mass_number, kind, measure,
                                          strip, normal, centre, station_x[station[layer]],
                                          station_log_x[station[layer]], count < capacity, u_row, v_row, tan_row,
                                          layer_row, particle_row, count)
            if slot < exit_state.shape[1] and d[2] > 0.0:
                _store_state(exit_state[i, slot], r, d, e_out, e_k, code)
        counts[i] = count


# columns of the state of an outgoing particle after the vertex station (`_transport`'s exit_state)
_STATE_X, _STATE_Y, _STATE_Z, _STATE_DX, _STATE_DY, _STATE_DZ, _STATE_E_VERTEX, _STATE_E, _STATE_PDG = range(9)


@njit(cache=True, nogil=True, inline="always")
def _store_state(row, position, direction, energy_at_vertex, energy, code):
    row[_STATE_X], row[_STATE_Y], row[_STATE_Z] = position[0], position[1], position[2]
    row[_STATE_DX], row[_STATE_DY], row[_STATE_DZ] = direction[0], direction[1], direction[2]
    row[_STATE_E_VERTEX], row[_STATE_E], row[_STATE_PDG] = energy_at_vertex, energy, code


@njit(parallel=True, cache=True)
def _to_calorimeter(seed, event_ids, vertex_station, exit_state, lump_front_z, lump_back_z, x0, atomic_number,
                    mass_number, station_x, station_log_x, n_layers, settings, calo_z, calo_x, calo_y, impacts):
    """Carry the outgoing particles from the end of the vertex station to the calorimeter's front
    face: each downstream station is one scatterer (its whole x/X0 spread over its length, pseudo-
    layer n_layers + station for the random streams and the material arrays). Fills impacts[i, j]
    = (x - calo_x, y - calo_y, energy, kind): a shower (electron or photon, with its energy at the
    vertex: the bremsstrahlung photons travel with the electron) or a muon."""
    n_stations = lump_front_z.size
    for i in prange(event_ids.size):
        event = event_ids[i]
        for j in range(exit_state.shape[1]):
            impacts[i, j, 0], impacts[i, j, 1], impacts[i, j, 2], impacts[i, j, 3] = 0.0, 0.0, 0.0, IMPACT_NONE
            state = exit_state[i, j]
            code = int(state[_STATE_PDG])
            if code == 0 or vertex_station[i] < 0:
                continue
            r = np.empty(3)
            d = np.empty(3)
            r[0], r[1], r[2] = state[_STATE_X], state[_STATE_Y], state[_STATE_Z]
            d[0], d[1], d[2] = state[_STATE_DX], state[_STATE_DY], state[_STATE_DZ]
            energy = state[_STATE_E]
            if code != PDG_PHOTON:
                mass = MUON_MASS_GEV if code == PDG_MUON else ELECTRON_MASS_GEV
                for st in range(vertex_station[i] + 1, n_stations):
                    _step_to_z(r, d, lump_back_z[st])
                    energy = material_step(seed, event, n_layers + st, 1 + j, code == PDG_ELECTRON, energy, mass,
                                           (lump_back_z[st] - lump_front_z[st]) / d[2], r, d, settings, x0,
                                           atomic_number, mass_number, station_x[st], station_log_x[st])
                    if d[2] <= 0.0:
                        break
            if d[2] <= 0.0:
                continue
            _step_to_z(r, d, calo_z)
            impacts[i, j, 0], impacts[i, j, 1] = r[0] - calo_x, r[1] - calo_y
            if code == PDG_MUON:
                impacts[i, j, 2], impacts[i, j, 3] = energy, IMPACT_MUON
            else:
                impacts[i, j, 2], impacts[i, j, 3] = state[_STATE_E_VERTEX], IMPACT_SHOWER


@njit(parallel=True, cache=True)
def _compact_crossings(counts, offsets, event_ids, sensor_of_layer, out_u, out_v, out_tan, out_layer, out_particle,
                       event, layer, sensor, u, v, tan_alpha, particle):
    """The first counts[i] crossings of row i of the padded transport output, into flat arrays
    at offsets[i] (crossings sorted by event, then in transport order)."""
    for i in prange(counts.size):
        start = offsets[i]
        for j in range(counts[i]):
            k = start + j
            event[k] = event_ids[i]
            layer[k] = out_layer[i, j]
            sensor[k] = sensor_of_layer[out_layer[i, j]]
            u[k] = out_u[i, j]
            v[k] = out_v[i, j]
            tan_alpha[k] = out_tan[i, j]
            particle[k] = out_particle[i, j]


@dataclass
class SimulatedChunk:
    """Truth events with their strip hits, stubs, true sensor crossings (for validation), the
    vertex where the scattered incoming muon actually interacted and, with a calorimeter, the
    particles arriving at its front face (`impacts` (n, 3, 4): x, y relative to the array's
    centre in cm, energy in GeV, kind `fastsim.detector.calorimeter.IMPACT_*`, one row per
    outgoing particle) and its crystal energies (n, n_x * n_y) in GeV."""

    truth: TruthEvents
    hits: StripHits
    stubs: Stubs
    crossings: dict
    true_vertex_cm: np.ndarray
    calorimeter_impacts: np.ndarray | None = None
    calorimeter_energy_gev: np.ndarray | None = None


class DetectorSimulation:
    """Transport and digitization of truth events in `geometry` (the true, misaligned one)."""

    def __init__(self, geometry: Geometry, settings: SimulationSettings = SimulationSettings(), seed: int = 0):
        self.geometry = geometry
        self.settings = settings
        self.seed = rng.validate_seed(seed)
        layers = geometry.layers()
        self.layers = layers
        n_stations = len(geometry.stations)
        self.station_first = np.array([np.flatnonzero(layers.station == s).min() for s in range(n_stations)])
        self.station_last = np.array([np.flatnonzero(layers.station == s).max() for s in range(n_stations)])
        self.station_x = np.array([layers.x_over_x0[layers.station == s].sum() for s in range(n_stations)])
        self.station_log_x = np.log(np.where(self.station_x > 0.0, self.station_x, 1.0))  # unused where x = 0
        sensors = np.flatnonzero(layers.kind == KIND_SENSOR)
        self.sensor_layers = sensors
        self.sensor_of_layer = np.full(len(layers.z_cm), -1, dtype=np.int64)
        self.sensor_of_layer[sensors] = np.arange(sensors.size)
        per_two_stations = max(
            np.count_nonzero((layers.kind == KIND_SENSOR) & ((layers.station == s) | (layers.station == s - 1)))
            for s in range(n_stations)
        )
        self.capacity = _PARTICLES_PER_EVENT * per_two_stations
        # the stub window is centred on the bend the chips are programmed with, that of the nominal
        # geometry: a misaligned module's true bend moves within its window
        self.modules = ModuleMap.from_layers(geometry.nominal().layers())
        self.sensor_parameters = SensorParameters.checked(
            pitch_cm=layers.pitch_cm[sensors], n_strips=layers.n_strips[sensors],
            thickness_cm=layers.thickness_cm[sensors], efficiency=layers.efficiency[sensors],
            noise_mean=layers.noise_hits_per_event[sensors], half_length_cm=0.5 * layers.active_length_cm[sensors])
        self._settings_array = settings.kernel_array()
        self._scratch = threading.local()
        self.calorimeter = None if geometry.calorimeter is None else CalorimeterResponse(geometry.calorimeter)
        # each station as one scatterer, for the way from the vertex station to the calorimeter
        front = layers.z_cm - 0.5 * layers.thickness_cm
        back = layers.z_cm + 0.5 * layers.thickness_cm
        self.lump_front_z = np.array([front[self.station_first[s]] for s in range(n_stations)])
        self.lump_back_z = np.array([back[self.station_last[s]] for s in range(n_stations)])
        share = [layers.x_over_x0[layers.station == s] / self.station_x[s] for s in range(n_stations)]
        self.material_x0 = np.concatenate([layers.x0_cm, (self.lump_back_z - self.lump_front_z) / self.station_x])
        self.material_z = np.concatenate([layers.atomic_number, [w @ layers.atomic_number[layers.station == s]
                                                                 for s, w in enumerate(share)]])
        self.material_a = np.concatenate([layers.mass_number, [w @ layers.mass_number[layers.station == s]
                                                               for s, w in enumerate(share)]])

    def simulate(self, truth: TruthEvents, transport: bool = True) -> SimulatedChunk:
        """Transport, digitization and stubs of `truth` (and the calorimeter, if any).

        `transport=False` leaves the particles out: no sensor crossing, nothing reaches the
        calorimeter, and the chunk holds what the detector records without them (noise hits and
        their stubs, calorimeter noise), for a noise-only sample, or to compile everything
        downstream of the transport without its kernels (`reco.precompile`)."""
        n = len(truth)
        event_ids = truth["event_id"].astype(np.int64)
        tx, ty = np.tan(truth["beam_theta_x_rad"]), np.tan(truth["beam_theta_y_rad"])
        norm = np.sqrt(1.0 + tx * tx + ty * ty)
        beam_direction = np.ascontiguousarray(np.column_stack([tx / norm, ty / norm, 1.0 / norm]))
        vertex = np.ascontiguousarray(np.column_stack([truth["vertex_x_cm"], truth["vertex_y_cm"], truth["vertex_z_cm"]]))
        momenta = np.ascontiguousarray(np.column_stack([truth.particles[k] for k in ("px_gev", "py_gev", "pz_gev", "e_gev")]))
        cap = self.capacity
        out_u, out_v, out_tan, out_layer, out_particle = self._crossing_buffers(n)
        counts = np.empty(n, dtype=np.int64)
        true_vertex = np.empty((n, 3))
        vertex_station = np.empty(n, dtype=np.int64)
        exit_state = np.empty((n, _OUTGOING_PER_EVENT, 9))
        L = self.layers
        if transport:
            beam_energy = np.ascontiguousarray(truth["beam_energy_gev"])  # a strided one would compile _transport again
            _transport(np.uint64(self.seed), event_ids, vertex, beam_direction, beam_energy,
                       truth.particle_offsets, truth.particles["pdg"], momenta, L.z_cm, L.thickness_cm, L.x0_cm,
                       L.atomic_number, L.mass_number, L.kind, L.station, L.measure_dir, L.strip_dir, L.normal,
                       L.centre_cm, self.station_first, self.station_last, self.station_x, self.station_log_x, self._settings_array, cap,
                       out_u, out_v, out_tan, out_layer, out_particle, counts, true_vertex, vertex_station, exit_state)
        else:
            counts[:] = 0
            true_vertex[:] = vertex
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        crossings = {"event_id": np.empty(total, np.int64), "layer": np.empty(total, np.int64),
                     "sensor_id": np.empty(total, np.int64), "u_cm": np.empty(total), "v_cm": np.empty(total),
                     "tan_alpha": np.empty(total), "particle_index": np.empty(total, np.int64)}
        _compact_crossings(counts, offsets, event_ids, self.sensor_of_layer, out_u, out_v, out_tan, out_layer,
                           out_particle, *crossings.values())
        hits = self._digitize(truth, offsets, crossings)
        stubs = build_stubs(hits, self.modules, self.settings.stub_window_strips)
        impacts = energies = None
        if self.calorimeter is not None:
            calo = self.geometry.calorimeter
            impacts = np.empty((n, _OUTGOING_PER_EVENT, 4))
            if transport:
                _to_calorimeter(np.uint64(self.seed), event_ids, vertex_station, exit_state, self.lump_front_z,
                                self.lump_back_z, self.material_x0, self.material_z, self.material_a, self.station_x,
                                self.station_log_x, len(L.z_cm), self._settings_array, float(calo.z_cm), float(calo.x_cm),
                                float(calo.y_cm), impacts)
            else:
                impacts[:] = 0.0
                impacts[..., 3] = IMPACT_NONE
            energies = self.calorimeter.deposit(self.seed, event_ids, impacts)
        return SimulatedChunk(truth, hits, stubs, crossings, true_vertex, impacts, energies)

    def _crossing_buffers(self, n):
        """The five (n, capacity) per-event crossing arrays `_transport` fills, reused from chunk
        to chunk (one set per thread): fresh arrays this large (tens of MB) come from mmap and
        would be faulted in page by page at every chunk, which costs as much as the transport."""
        buffers = getattr(self._scratch, "crossings", None)
        if buffers is None or buffers[0].shape[0] < n:
            shape = (n, self.capacity)
            buffers = (np.empty(shape), np.empty(shape), np.empty(shape), np.empty(shape, np.int64),
                       np.empty(shape, np.int64))
            self._scratch.crossings = buffers
        return tuple(b[:n] for b in buffers)

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_scratch"]  # buffers stay with their process and thread
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._scratch = threading.local()

    def _digitize(self, truth, crossing_offsets, crossings) -> StripHits:
        event_ids = truth["event_id"]
        first = int(event_ids[0]) if len(truth) else 0
        if len(truth) and not np.array_equal(event_ids, np.arange(first, first + len(truth))):
            raise ValueError("simulate: the truth chunk must hold consecutive event ids")
        return digitize_events(
            np.uint64(self.seed), first, crossing_offsets, crossings["sensor_id"], crossings["u_cm"],
            crossings["v_cm"], crossings["tan_alpha"], crossings["particle_index"], self.sensor_parameters,
            self.settings.threshold_fraction, self.settings.diffusion_sigma_cm,
        )
