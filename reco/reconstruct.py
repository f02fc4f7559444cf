"""Full reconstruction of a simulated chunk: tracks in every station, the interaction station,
the incoming muon, the outgoing tracks, their angles and the vertex.

What to use when:

- `reconstruct(chunk, geometry, settings)` -> `reco.events.RecoEvents` with the event/truth,
  tracking and vertex columns filled (identification, observables and selection are left for
  `reco.pid`, `reco.observables` and `reco.selection`). This is the call of the full chain.
- `reconstruct_details(...)` returns the same plus per-event arrays that RecoEvents does not
  carry (vertex covariance, track parameters and covariances), for validation.
- `ReconstructionSettings` groups `reco.tracking.TrackingSettings` and
  `reco.vertex.VertexSettings`.

Per event (one numba kernel, prange over blocks of events, no Python per event):

1. tracks are found and fitted in every station with at least four stubs (`reco.tracking`);
2. the interaction station s is the first station (in z) with a target and at least two tracks,
   else the last one with a target and one track (only one outgoing particle seen), else -1;
   noise stubs elsewhere rarely make a six-stub track and cannot make two;
3. the incoming muon is the track of station s - 1 that passes closest, at the target centre of s,
   to the mean position of the outgoing tracks; it is refitted with the multiple scattering of its
   station referred to its downstream end and the nominal beam momentum, and its parameters are
   given at the target centre (`in_*`). A station without a target in front of the first target
   is an upstream telescope: it measures the incoming muon of that target like any upstream
   station (tests/reco/test_chain.py). For s = 0 (no upstream station) there is no incoming
   track: has_incoming is False and the angles are measured from the z axis;
4. the two outgoing tracks are the two best of station s (most stubs, then chi2/ndf); they are
   refitted with the momenta of the elastic hypothesis (which is the electron) that matches
   their angles best, so that their scattering errors are those of a muon and an electron; their
   directions are rotated into the frame of the incoming muon (the smallest rotation taking it to
   z, `fastsim.generator.beam.rotate_from_to`, as the generator does inversely), giving
   theta and phi; track 1 has the larger theta;
5. the vertex is fitted from the incoming muon (if any) and the two outgoing tracks
   (`reco.vertex.fit_vertex`);
6. with a calorimeter, its cluster and the outgoing tracks' extrapolations to its front face
   (`reco.calorimeter`), for the identification;
7. with ``vertex.elastic_fit``, the elastic kinematic fit of the slopes for both hypotheses
   (`reco.kinematic`).

truth_pdg_k is the pdg id of the particle that made most of the track's clusters (the incoming
muon, index 0 of `StripHits.particle_index`, has the pdg id of the event's outgoing muon), 0 if
most clusters are noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from fastsim.detector.geometry import Geometry
from fastsim.generator.beam import rotate_from_to
from fastsim.physics.kinematics import angles_from_t_kernel, t_from_theta_e_kernel
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV
from reco import precompile
from reco.calorimeter import calorimeter_columns
from reco.events import RecoEvents
from reco.kinematic import elastic_fit_columns, hypothesis_energies_kernel
from reco.tracking import (
    _BEAM_E,
    _ITER,
    _MAX_CAND,
    _MAX_TRACKS,
    _MS_SCALE,
    TrackingModel,
    TrackingSettings,
    check_hits_match,
    make_workspace,
    find_station_tracks,
    fit_stubs,
    station_stub_count,
    track_truth,
)
from reco.vertex import VertexSettings, fit_vertex


@dataclass(frozen=True)
class ReconstructionSettings:
    """Settings of the full reconstruction: `tracking` (`reco.tracking.TrackingSettings`) and
    `vertex` (`reco.vertex.VertexSettings`)."""

    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    vertex: VertexSettings = field(default_factory=VertexSettings)

    def __post_init__(self):
        if not isinstance(self.tracking, TrackingSettings):
            raise ValueError(f"tracking = {self.tracking!r} must be a TrackingSettings")
        if not isinstance(self.vertex, VertexSettings):
            raise ValueError(f"vertex = {self.vertex!r} must be a VertexSettings")


# columns of the per-event float and int outputs of the kernel
_F = ("in_x_cm", "in_y_cm", "in_tx", "in_ty", "in_chi2", "theta_1_rad", "phi_1_rad", "theta_2_rad", "phi_2_rad",
      "chi2_1", "chi2_2", "vertex_x_cm", "vertex_y_cm", "vertex_z_cm", "vertex_chi2")
_I = ("station", "n_hits_in", "n_hits_out", "has_incoming", "n_tracks_out", "in_ndf", "ndf_1", "ndf_2",
      "truth_pdg_1", "truth_pdg_2", "vertex_ndf")
_FI = {name: k for k, name in enumerate(_F)}
_II = {name: k for k, name in enumerate(_I)}


@njit(cache=True, nogil=True)
def _pdg_of(particle, event_row, particle_offsets, pdg):
    if particle < 0:
        return 0
    first = particle_offsets[event_row]
    return pdg[first + max(particle - 1, 0)]


@njit(parallel=True, cache=True)
def _reconstruct_kernel(model, cfg, vertex_ms_scale, vertex_iterations, max_modules, stub_offsets, stub_module,
                        stub_hit0, stub_hit1, hit_u, hit_particle, particle_offsets, pdg,
                        out_f, out_i, out_vertex_cov, out_tracks, out_track_cov):
    n_events = stub_offsets.size - 1
    n_stations = model.station_seeds.shape[0]
    max_tracks = int(cfg[_MAX_TRACKS])
    capacity = max_tracks * n_stations
    n_blocks = min(n_events, 256)
    for block in prange(n_blocks):
        ws = make_event_workspace(max_modules, int(cfg[_MAX_CAND]), capacity, n_stations)
        out_params, out_cov, out_chi2, out_ndf, out_stubs, out_momentum = ws[9], ws[10], ws[11], ws[12], ws[13], ws[14]
        first_track, n_tracks, n_stubs = ws[26], ws[27], ws[28]
        v_params, v_cov, v_zref, v_in, v_mom, v_mass, vertex, vertex_cov = (ws[29], ws[30], ws[31], ws[32], ws[33],
                                                                            ws[34], ws[35], ws[36])
        in_params, in_cov, vertex_work, angles = ws[37], ws[38], ws[39], ws[40]
        thetas, phis = angles[0], angles[1]
        for i in range(block * n_events // n_blocks, (block + 1) * n_events // n_blocks):
            lo, hi = stub_offsets[i], stub_offsets[i + 1]
            total = 0
            for st in range(n_stations):
                n_stubs[st] = station_stub_count(model, st, lo, hi, stub_module)
                first_track[st] = total
                n_tracks[st] = 0
                if n_stubs[st] >= 4 and total < capacity:
                    n_tracks[st] = find_station_tracks(model, st, cfg, lo, hi, stub_module, stub_hit0, stub_hit1,
                                                       hit_u, ws, total)
                    total += n_tracks[st]
            # interaction station
            s = -1
            for st in range(n_stations):
                if model.station_has_target[st] and n_tracks[st] >= 2:
                    s = st
                    break
            if s < 0:
                for st in range(n_stations):
                    if model.station_has_target[st] and n_tracks[st] >= 1:
                        s = st
            out_i[i, 0] = s
            if s < 0:
                continue
            zs = model.station_zref[s]
            out_i[i, 2] = n_stubs[s]
            n_out = n_tracks[s]
            out_i[i, 4] = n_out
            # mean position of the outgoing tracks at the target centre (their reference z)
            mx = 0.0
            my = 0.0
            for t in range(first_track[s], first_track[s] + n_out):
                mx += out_params[t, 0] / n_out
                my += out_params[t, 1] / n_out
            # incoming muon
            has_in = False
            if s >= 1:
                out_i[i, 1] = n_stubs[s - 1]
                best, best_d = -1, math.inf
                z_prev = model.station_zref[s - 1]
                for t in range(first_track[s - 1], first_track[s - 1] + n_tracks[s - 1]):
                    dz = zs - z_prev
                    d = math.hypot(out_params[t, 0] + out_params[t, 2] * dz - mx,
                                   out_params[t, 1] + out_params[t, 3] * dz - my)
                    if d < best_d:
                        best, best_d = t, d
                if best >= 0:
                    dz = zs - z_prev
                    in_params[0] = out_params[best, 0] + out_params[best, 2] * dz
                    in_params[1] = out_params[best, 1] + out_params[best, 3] * dz
                    in_params[2], in_params[3] = out_params[best, 2], out_params[best, 3]
                    p_beam = math.sqrt((cfg[_BEAM_E] - MUON_MASS_GEV) * (cfg[_BEAM_E] + MUON_MASS_GEV))
                    chi2, ndf = fit_stubs(model, s - 1, out_stubs[best], stub_hit0, stub_hit1, hit_u, in_params, zs,
                                          p_beam, MUON_MASS_GEV, cfg[_MS_SCALE], True, int(cfg[_ITER]), in_cov, ws)
                    if chi2 < math.inf:
                        has_in = True
                        out_f[i, 0], out_f[i, 1], out_f[i, 2], out_f[i, 3] = in_params[0], in_params[1], in_params[2], in_params[3]
                        out_f[i, 4] = chi2
                        out_i[i, 5] = ndf
                        v_params[0, :] = in_params
                        v_cov[0, :, :] = in_cov
                        v_zref[0] = zs
                        v_in[0] = True
                        v_mom[0] = p_beam
                        v_mass[0] = MUON_MASS_GEV
            out_i[i, 3] = has_in
            # outgoing tracks: the two best, ordered by theta w.r.t. the incoming muon
            if has_in:
                norm = math.sqrt(1.0 + in_params[2] ** 2 + in_params[3] ** 2)
                ax, ay, az = in_params[2] / norm, in_params[3] / norm, 1.0 / norm
            else:
                ax, ay, az = 0.0, 0.0, 1.0
            n_keep = min(n_out, 2)
            if n_keep == 2 and cfg[_MS_SCALE] > 0.0:
                _refit_pair(model, s, cfg, first_track[s], out_params, out_cov, out_chi2, out_ndf, out_stubs,
                            out_momentum, stub_hit0, stub_hit1, hit_u, ws)
            for k in range(n_keep):
                t = first_track[s] + k
                norm = math.sqrt(1.0 + out_params[t, 2] ** 2 + out_params[t, 3] ** 2)
                dx, dy, dz = rotate_from_to(ax, ay, az, 0.0, 0.0, 1.0, out_params[t, 2] / norm,
                                            out_params[t, 3] / norm, 1.0 / norm)
                thetas[k] = math.atan2(math.hypot(dx, dy), dz)
                phis[k] = math.atan2(dy, dx)
            first = 0 if n_keep < 2 or thetas[0] >= thetas[1] else 1
            for rank in range(n_keep):
                k = first if rank == 0 else 1 - first
                t = first_track[s] + k
                out_f[i, 5 + 2 * rank] = thetas[k]
                out_f[i, 6 + 2 * rank] = phis[k]
                out_f[i, 9 + rank] = out_chi2[t]
                out_i[i, 6 + rank] = out_ndf[t]
                particle, _ = track_truth(model.station_module_last[s] - model.station_module_first[s], out_stubs[t],
                                          stub_hit0, stub_hit1, hit_particle)
                out_i[i, 8 + rank] = _pdg_of(particle, i, particle_offsets, pdg)
                for a in range(4):
                    out_tracks[i, 1 + rank, a] = out_params[t, a]
                    for b in range(4):
                        out_track_cov[i, 1 + rank, a, b] = out_cov[t, a, b]
                row = 1 + rank if has_in else rank
                v_params[row, :] = out_params[t]
                v_cov[row, :, :] = out_cov[t]
                v_zref[row] = zs
                v_in[row] = False
                v_mom[row] = out_momentum[t]
                v_mass[row] = ELECTRON_MASS_GEV if out_momentum[t] < 0.0 else MUON_MASS_GEV
                if out_momentum[t] < 0.0:
                    v_mom[row] = -out_momentum[t]
            if has_in:
                for a in range(4):
                    out_tracks[i, 0, a] = in_params[a]
                    for b in range(4):
                        out_track_cov[i, 0, a, b] = in_cov[a, b]
            # vertex
            n_vertex = n_keep + (1 if has_in else 0)
            if n_vertex >= 2 and model.station_has_target[s]:
                chi2 = fit_vertex(n_vertex, v_params, v_cov, v_zref, v_in, v_mom, v_mass,
                                  model.station_target_front[s], model.station_target_back[s],
                                  model.station_target_x0[s], model.station_x[s], vertex_ms_scale, vertex_iterations,
                                  vertex, vertex_cov, vertex_work)
                if chi2 == chi2:
                    out_f[i, 11], out_f[i, 12], out_f[i, 13] = vertex[0], vertex[1], vertex[2]
                    out_f[i, 14] = chi2
                    out_i[i, 10] = 2 * n_vertex - 3
                    out_vertex_cov[i, :, :] = vertex_cov


@njit(cache=True, nogil=True, inline="always")
def _refit_pair(model, s, cfg, first, params, cov, chi2, ndf, stubs, momentum, stub_hit0, stub_hit1, hit_u, ws):
    """Refit the two best tracks of station s with the momenta of the elastic hypothesis that fits
    their angles best: track a the electron and b the muon if |theta_mu(theta_a) - theta_b| is the
    smaller of the two assignments (angles w.r.t. z; theta_mu(theta_e) is the elastic curve at
    the nominal beam energy). The electron gets E_e(theta_e), the muon E_beam + m_e - E_e. The
    sign of `momentum` records the hypothesis afterwards: negative for the electron. Inlined
    (one call site; the model and the workspace are not passed through a call)."""
    e_beam = cfg[_BEAM_E]
    theta_0 = math.atan(math.hypot(params[first, 2], params[first, 3]))
    theta_1 = math.atan(math.hypot(params[first + 1, 2], params[first + 1, 3]))
    # distance_k: k the electron candidate
    distance_0 = abs(angles_from_t_kernel(e_beam, t_from_theta_e_kernel(e_beam, theta_0))[1] - theta_1)
    distance_1 = abs(angles_from_t_kernel(e_beam, t_from_theta_e_kernel(e_beam, theta_1))[1] - theta_0)
    electron = 0 if distance_0 <= distance_1 else 1
    e_electron, e_muon = hypothesis_energies_kernel(e_beam, theta_0 if electron == 0 else theta_1)
    for k in range(2):
        row = first + k
        mass = ELECTRON_MASS_GEV if k == electron else MUON_MASS_GEV
        energy = e_electron if k == electron else e_muon
        p = math.sqrt((energy - mass) * (energy + mass))
        c2, n = fit_stubs(model, s, stubs[row], stub_hit0, stub_hit1, hit_u, params[row], model.station_zref[s], p,
                          mass, cfg[_MS_SCALE], False, int(cfg[_ITER]), cov[row], ws)
        chi2[row] = c2
        ndf[row] = n
        momentum[row] = -p if k == electron else p


@njit(cache=True, nogil=True)
def make_event_workspace(max_modules, max_candidates, capacity, n_stations):
    """The tracking workspace (`reco.tracking.make_workspace`) extended with the per-station and
    vertex scratch arrays of `_reconstruct_kernel`."""
    ws = make_workspace(max_modules, max_candidates, capacity)
    return ws + (np.empty(n_stations, np.int64), np.empty(n_stations, np.int64), np.empty(n_stations, np.int64),  # 26-28
                 np.empty((3, 4)), np.empty((3, 4, 4)), np.empty(3), np.empty(3, np.bool_), np.empty(3), np.empty(3),  # 29-34
                 np.empty(3), np.empty((3, 3)), np.empty(4), np.empty((4, 4)),  # 35-38: vertex, its cov, incoming track
                 np.empty((4, 3)), np.empty((2, 2)))  # 39: fit_vertex work, 40: theta and phi of the outgoing tracks


def _truth_columns(truth) -> dict:
    return {
        "event_id": truth["event_id"], "process": truth["process"], "weight": truth["weight"],
        "true_weight": truth["weight"], "true_t_gev2": truth["t_gev2"], "true_theta_e_rad": truth["e_theta_rad"],
        "true_theta_mu_rad": truth["mu_theta_rad"], "true_phi_e_rad": truth["e_phi_rad"],
        "true_phi_mu_rad": truth["mu_phi_rad"], "true_vertex_z_cm": truth["vertex_z_cm"],
        "beam_energy_gev": truth["beam_energy_gev"],
    }


def reconstruct_details(chunk, geometry: Geometry | TrackingModel,
                        settings: ReconstructionSettings = ReconstructionSettings()):
    """`reconstruct` and the per-event arrays it does not put in RecoEvents.

    Returns
    -------
    events : RecoEvents
    details : dict
        ``vertex_cov`` (n, 3, 3) covariance of (x, y, z) of the vertex (NaN without vertex);
        ``tracks`` (n, 3, 4) and ``track_cov`` (n, 3, 4, 4): (x, y, tx, ty) at the target centre of
        the interaction station of the incoming muon (row 0) and outgoing tracks 1 and 2 (rows 1,
        2: track 1 the larger angle), NaN where missing.
    """
    if not isinstance(settings, ReconstructionSettings):
        raise ValueError(f"settings = {settings!r} must be a ReconstructionSettings")
    tm = geometry if isinstance(geometry, TrackingModel) else TrackingModel.from_geometry(geometry, settings.tracking)
    hits, stubs, truth = chunk.hits, chunk.stubs, chunk.truth
    n = len(truth)
    if hits.offsets.size - 1 != n or stubs.offsets.size - 1 != n:
        raise ValueError(f"the chunk's hits ({hits.offsets.size - 1} events) and stubs ({stubs.offsets.size - 1} "
                         f"events) do not match its truth ({n} events)")
    check_hits_match(hits, stubs, tm)
    _check_crossings(chunk, tm)
    cfg = settings.tracking.kernel_array()
    out_f = np.full((n, len(_F)), np.nan)
    out_i = np.full((n, len(_I)), -1, np.int64)
    out_i[:, _II["has_incoming"]] = 0
    vertex_cov = np.full((n, 3, 3), np.nan)
    tracks = np.full((n, 3, 4), np.nan)
    track_cov = np.full((n, 3, 4, 4), np.nan)
    precompile.wait()  # a background compilation of this kernel, if one was started
    _reconstruct_kernel(tm.model, cfg, settings.vertex.ms_scale, settings.vertex.iterations,
                        tm.max_modules_per_station, stubs.offsets, stubs.module, stubs.hit0, stubs.hit1, hits.u_cm,
                        hits.particle_index.astype(np.int64), truth.particle_offsets, truth.particles["pdg"],
                        out_f, out_i, vertex_cov, tracks, track_cov)
    columns = _truth_columns(truth)
    for name, k in _FI.items():
        columns[name] = out_f[:, k]
    for name, k in _II.items():
        columns[name] = out_i[:, k]
    calorimeter = tm.geometry.calorimeter
    energies = getattr(chunk, "calorimeter_energy_gev", None)
    if calorimeter is not None and energies is not None:
        station = out_i[:, _II["station"]]
        track_z = np.where(station >= 0, tm.model.station_zref[np.maximum(station, 0)], np.nan)
        columns.update(calorimeter_columns(energies, calorimeter, tracks[:, 1:], track_z))
    if settings.vertex.elastic_fit:
        columns.update(elastic_fit_columns(tracks, track_cov, out_i[:, _II["station"]], out_f[:, _FI["vertex_z_cm"]],
                                           tm.model, settings.vertex.ms_scale, settings.tracking.beam_energy_gev))
    metadata = dict(truth.metadata)
    metadata["reconstruction"] = {"geometry": tm.geometry.name, "settings": repr(settings)}
    return RecoEvents(columns, metadata), {"vertex_cov": vertex_cov, "tracks": tracks, "track_cov": track_cov}


def reconstruct(chunk, geometry: Geometry | TrackingModel,
                settings: ReconstructionSettings = ReconstructionSettings()) -> RecoEvents:
    """Reconstruct a simulated chunk with the (nominal version of the) geometry.

    Parameters
    ----------
    chunk : fastsim.detector.transport.SimulatedChunk
        Truth, hits and stubs of consecutive events.
    geometry : Geometry or reco.tracking.TrackingModel
        The detector the chunk was simulated in; its misalignments are ignored (`Geometry.nominal`).
        A TrackingModel built once saves the set-up (about a second) per call.
    settings : ReconstructionSettings

    Returns
    -------
    RecoEvents
        Event/truth, tracking and vertex columns (see the module docstring and `reco.events`).

    Raises
    ------
    ValueError
        If the hits cannot come from `geometry` (sensor or module count, stub-module map), naming
        both counts.
    """
    return reconstruct_details(chunk, geometry, settings)[0]


def _check_crossings(chunk, tm: TrackingModel):
    """With the simulation's true crossings at hand, their sensor ids must be the sensors of the
    reconstruction geometry's layers in the same order (a finer check of the geometry)."""
    crossings = getattr(chunk, "crossings", None)
    if not crossings or "layer" not in crossings or not len(crossings["layer"]):
        return
    layers = tm.geometry.layers()
    sensor_layers = np.flatnonzero(layers.kind == 1)
    layer, sensor = np.asarray(crossings["layer"]), np.asarray(crossings["sensor_id"])
    bad = (sensor >= sensor_layers.size) | (layer >= layers.kind.size)
    if not bad.any():
        bad = sensor_layers[np.minimum(sensor, sensor_layers.size - 1)] != layer
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"the chunk was simulated with another geometry: crossing {k} is in layer {layer[k]} "
                         f"(sensor {sensor[k]}), which is not that sensor in the reconstruction geometry "
                         f"{tm.geometry.name!r} ({len(layers.kind)} layers, {tm.n_sensors} sensors, "
                         f"{tm.n_modules} modules)")
