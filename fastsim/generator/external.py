"""Imported events (MESMER, LHE) as TruthEvents, so they drive the rest of the chain.

The file gives the beam muon's 4-momentum and the outgoing particles; the toolkit adds the vertex:
a target chosen by electron areal density and a uniform depth in it (STREAM_IMPORT numbers of
the event's position in the file), the beam line passing through x = y = 0 at z = 0 with the
file's direction. t_gev2 is the momentum transfer on the electron line, 2 m_e (m_e - E_e), exact
for an electron at rest whatever photons are emitted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit, prange

from fastsim import rng
from fastsim.events import PROCESS_CODES, TruthEvents
from fastsim.generator.targets import Target, check_targets, target_arrays, vertex_kernel
from fastsim.io.external import ExternalEvents
from fastsim.units import ELECTRON_MASS_GEV

IMPORT_FORMATS = ("mesmer", "lhe")


def read_external(path, file_format: str = "auto") -> ExternalEvents:
    """Read a MESMER or LHE file; `file_format="auto"` decides from the name (.lhe, .lhe.gz)."""
    from fastsim.io.lhe import read_lhe
    from fastsim.io.mesmer import read_mesmer

    if file_format == "auto":
        name = Path(path).name.lower()
        file_format = "lhe" if ".lhe" in name else "mesmer"
    if file_format not in IMPORT_FORMATS:
        raise ValueError(f"format = {file_format!r} is not allowed; choose one of {['auto', *IMPORT_FORMATS]}")
    return read_lhe(path) if file_format == "lhe" else read_mesmer(path)


@njit(parallel=True, cache=True)
def _import_vertices(seed, first_event, target_z, target_thickness, target_cumulative, z_out, index_out):
    for i in prange(z_out.size):
        u = rng.uniform4(seed, first_event + i, rng.STREAM_IMPORT, 0)
        z_out[i], index_out[i] = vertex_kernel(u[0], target_z, target_thickness, target_cumulative)


def truth_from_external(events: ExternalEvents, targets=(Target(),), seed: int = 0, first_event: int = 0) -> TruthEvents:
    """TruthEvents of imported events, with vertices drawn in `targets` (see the module doc).

    Event k of the file uses the random numbers of event first_event + k, so a file read in
    pieces gets the same vertices as read whole.
    """
    targets = check_targets(targets)
    n = events.n_events
    z_start, thickness, cumulative = target_arrays(targets, [t.electron_areal_density_per_cm2 for t in targets])
    vertex_z = np.empty(n)
    target_index = np.empty(n, dtype=np.int16)
    _import_vertices(np.uint64(rng.validate_seed(seed)), first_event, z_start, thickness, cumulative, vertex_z, target_index)
    truth = events.truth_columns()
    slope_x = events.beam_px / events.beam_pz
    slope_y = events.beam_py / events.beam_pz
    columns = {
        "event_id": truth["event_id"],
        "process": np.full(n, PROCESS_CODES["external"], dtype=np.int8),
        "weight": truth["weight"],
        "beam_energy_gev": events.beam_e,
        "beam_theta_x_rad": np.arctan(slope_x),
        "beam_theta_y_rad": np.arctan(slope_y),
        "vertex_x_cm": slope_x * vertex_z,
        "vertex_y_cm": slope_y * vertex_z,
        "vertex_z_cm": vertex_z,
        "target_index": target_index,
        "t_gev2": 2.0 * ELECTRON_MASS_GEV * (ELECTRON_MASS_GEV - truth["e_energy_gev"]),
        **{key: truth[key] for key in ("e_energy_gev", "e_theta_rad", "e_phi_rad", "mu_energy_gev", "mu_theta_rad",
                                        "mu_phi_rad", "photon_energy_gev")},
    }
    particles = {"pdg": events.pdg, "px_gev": events.px, "py_gev": events.py, "pz_gev": events.pz, "e_gev": events.e}
    metadata = {"source": events.metadata.get("source_path"), "generator": events.metadata.get("generator"), "seed": seed}
    return TruthEvents(columns, events.offsets.astype(np.int64), particles, metadata)
