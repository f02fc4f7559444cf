"""Truth events: one structure of arrays per chunk, written to Parquet.

`TruthEvents` holds one row per event (the columns below) and the outgoing particles in CSR form
(`particle_offsets` and flat arrays). In Parquet the particles are one list-of-struct column,
`particles`, with pdg id, 4-momentum (GeV) and production vertex (cm) in the lab frame.

Per-event columns: event_id, process ("elastic", "pair", "external"), weight (ub: sum(weight)/N
estimates the cross section per target electron), beam_energy_gev, beam_theta_x_rad,
beam_theta_y_rad, vertex_x_cm, vertex_y_cm, vertex_z_cm, target_index, t_gev2 (the Born-level
momentum transfer on the electron line; NaN where it does not apply), and the polar angles
(with respect to the incoming muon), azimuths and energies of the outgoing electron and muon:
e_energy_gev, e_theta_rad, e_phi_rad, mu_energy_gev, mu_theta_rad, mu_phi_rad, and
photon_energy_gev (0 without a photon). For pair events "e" is the pair's electron.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fastsim.io.files import temporary_beside

PROCESS_NAMES = ("elastic", "pair", "external")
PROCESS_CODES = {name: code for code, name in enumerate(PROCESS_NAMES)}

EVENT_COLUMNS = {
    "event_id": np.int64, "process": np.int8, "weight": np.float64, "beam_energy_gev": np.float64,
    "beam_theta_x_rad": np.float64, "beam_theta_y_rad": np.float64, "vertex_x_cm": np.float64,
    "vertex_y_cm": np.float64, "vertex_z_cm": np.float64, "target_index": np.int16, "t_gev2": np.float64,
    "e_energy_gev": np.float64, "e_theta_rad": np.float64, "e_phi_rad": np.float64,
    "mu_energy_gev": np.float64, "mu_theta_rad": np.float64, "mu_phi_rad": np.float64,
    "photon_energy_gev": np.float64,
}
PARTICLE_COLUMNS = {"pdg": np.int32, "px_gev": np.float64, "py_gev": np.float64, "pz_gev": np.float64, "e_gev": np.float64}


@dataclass
class TruthEvents:
    """Truth-level events of one chunk (see the module docstring for the columns)."""

    columns: dict
    particle_offsets: np.ndarray
    particles: dict
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        n = self.columns["event_id"].size
        for name, dtype in EVENT_COLUMNS.items():
            if name not in self.columns or self.columns[name].shape != (n,):
                raise ValueError(f"TruthEvents: column {name} missing or not of length {n}")
            self.columns[name] = np.asarray(self.columns[name], dtype=dtype)
        if self.particle_offsets.shape != (n + 1,) or self.particle_offsets[0] != 0 or np.any(np.diff(self.particle_offsets) < 0):
            raise ValueError("TruthEvents: particle_offsets must be non-decreasing, start at 0 and have n + 1 entries")
        m = int(self.particle_offsets[-1])
        for name, dtype in PARTICLE_COLUMNS.items():
            if self.particles[name].shape != (m,):
                raise ValueError(f"TruthEvents: particle column {name} must have {m} entries")
            self.particles[name] = np.asarray(self.particles[name], dtype=dtype)

    def __len__(self) -> int:
        return int(self.columns["event_id"].size)

    def __getitem__(self, name) -> np.ndarray:
        return self.columns[name]

    @property
    def process_names(self) -> np.ndarray:
        return np.asarray(PROCESS_NAMES)[self.columns["process"]]

    def select(self, mask) -> "TruthEvents":
        """The events where `mask` is true, with their particles."""
        mask = np.asarray(mask, dtype=bool)
        counts = np.diff(self.particle_offsets)
        keep_particles = np.repeat(mask, counts)
        offsets = np.concatenate([[0], np.cumsum(counts[mask])])
        return TruthEvents(
            {k: v[mask] for k, v in self.columns.items()}, offsets,
            {k: v[keep_particles] for k, v in self.particles.items()}, dict(self.metadata),
        )

    @staticmethod
    def concatenate(chunks) -> "TruthEvents":
        chunks = list(chunks)
        offsets = [np.zeros(1, dtype=np.int64)]
        total = 0
        for chunk in chunks:
            offsets.append(chunk.particle_offsets[1:] + total)
            total += int(chunk.particle_offsets[-1])
        return TruthEvents(
            {k: np.concatenate([c.columns[k] for c in chunks]) for k in EVENT_COLUMNS},
            np.concatenate(offsets),
            {k: np.concatenate([c.particles[k] for c in chunks]) for k in PARTICLE_COLUMNS},
            dict(chunks[0].metadata) if chunks else {},
        )

    def to_arrow(self) -> pa.Table:
        arrays = {name: pa.array(values) for name, values in self.columns.items()}
        arrays["process"] = pa.DictionaryArray.from_arrays(pa.array(self.columns["process"]), pa.array(PROCESS_NAMES))
        particles = pa.StructArray.from_arrays([pa.array(v) for v in self.particles.values()], names=list(self.particles))
        arrays["particles"] = pa.ListArray.from_arrays(pa.array(self.particle_offsets.astype(np.int32)), particles)
        return pa.table(arrays)

    @classmethod
    def from_arrow(cls, table: pa.Table, metadata=None) -> "TruthEvents":
        columns = {}
        for name in EVENT_COLUMNS:
            if name not in table.column_names:
                raise ValueError(f"truth table: missing column {name!r}")
            column = table.column(name).combine_chunks()
            if name == "process":
                names = np.asarray(column.dictionary.to_pylist()) if pa.types.is_dictionary(column.type) else None
                values = np.asarray(column.indices if names is not None else column)
                columns[name] = np.array([PROCESS_CODES[n] for n in names])[values] if names is not None else values
            else:
                columns[name] = column.to_numpy(zero_copy_only=False)
        particles = table.column("particles").combine_chunks()
        flat = particles.flatten()
        return cls(
            columns, np.asarray(particles.offsets).astype(np.int64),
            {name: flat.field(name).to_numpy(zero_copy_only=False) for name in PARTICLE_COLUMNS},
            dict(metadata or {}),
        )


class TruthWriter:
    """Write events chunk by chunk to one Parquet file, atomically: TruthEvents, or any chunk
    with a `to_arrow()` table such as `reco.events.RecoEvents`.

    The file appears under its final name only when `close()` succeeds (it is written to a
    temporary name in the same directory, then renamed); on an error nothing is left behind.
    `metadata` (configuration, seed, version, hash) is stored in the file's key-value metadata
    under b"muone".
    """

    def __init__(self, path, metadata: dict):
        self.path = Path(path)
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if not directory.is_dir():
            raise ValueError(f"output = {str(self.path)!r} cannot be written: directory {str(directory)!r} does not exist")
        if not os.access(directory, os.W_OK):
            raise ValueError(f"output = {str(self.path)!r} cannot be written: directory {str(directory)!r} is not writable")
        if self.path.is_dir():
            raise ValueError(f"output = {str(self.path)!r} is a directory, not a file name")
        self._temporary = temporary_beside(self.path)
        self._metadata = metadata
        self._writer = None

    def write(self, events):
        table = self.to_table(events)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._temporary, table.schema)
        self._writer.write_table(table)

    def to_table(self, events):
        table = events.to_arrow()
        return table.replace_schema_metadata({b"muone": json.dumps(self._metadata, default=str).encode()})

    def close(self):
        if self._writer is None:
            raise ValueError("no events were written")
        self._writer.close()
        os.replace(self._temporary, self.path)

    def abort(self):
        if self._writer is not None:
            self._writer.close()
        self._temporary.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.abort()
        return False


def read_truth(path) -> TruthEvents:
    """Read a truth Parquet file written by `TruthWriter` (metadata in `.metadata`)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise ValueError(f"truth file {str(path)!r} cannot be read: {error}") from None
    raw = (table.schema.metadata or {}).get(b"muone")
    return TruthEvents.from_arrow(table, json.loads(raw) if raw else {})
