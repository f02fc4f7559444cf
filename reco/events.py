"""Reconstructed events: one row per event, a structure of numpy arrays (the reco data model).

`RecoEvents` is what the reconstruction of one chunk returns and what the selection, the
parametric mode, the templates and the `muone simulate` Parquet files use. Columns are grouped by
the stage that fills them; a stage that does not apply leaves NaN (floats), -1 (ints) or False.

Event and truth (copied from the truth, `fastsim.events.TruthEvents`):
    event_id, process (0 elastic, 1 pair, 2 external), weight (ub; sum(weight)/N is the cross
    section per target electron), true_weight (the generator's weight: weight itself in full mode;
    in parametric mode weight is true_weight times the efficiency of the folded cuts), true_t_gev2
    (Born t of the electron line, NaN for pairs), true_theta_e_rad, true_theta_mu_rad,
    true_phi_e_rad, true_phi_mu_rad (with respect to the incoming muon), true_vertex_z_cm,
    beam_energy_gev.

Tracking (`reco.tracking`), all in the nominal geometry:
    station (int: index of the station whose target holds the reconstructed interaction, -1 if
    none), n_hits_in (stubs in the station that measures the incoming muon), n_hits_out (stubs in
    the station after the target), has_incoming (bool), n_tracks_out (int),
    in_x_cm, in_y_cm, in_tx, in_ty (incoming muon at the target centre, slopes dx/dz, dy/dz),
    in_chi2, in_ndf; the two outgoing tracks kept, ordered by their polar angle w.r.t. the
    incoming muon (track 1 the larger): theta_1_rad, phi_1_rad, theta_2_rad, phi_2_rad, chi2_1,
    chi2_2, ndf_1, ndf_2, truth_pdg_1, truth_pdg_2 (pdg of the particle that made most of the
    track's hits, 0 if noise).

Vertex (`reco.vertex`): vertex_x_cm, vertex_y_cm, vertex_z_cm, vertex_chi2, vertex_ndf.

Calorimeter (`reco.calorimeter`, NaN without one): calo_energy_gev, calo_x_cm, calo_y_cm (the 3x3
cluster around the most energetic crystal), calo_x_1_cm, calo_y_1_cm, calo_x_2_cm, calo_y_2_cm
(outgoing tracks 1 and 2 extrapolated to the front face), global coordinates; calo_term, the
calorimeter's chi2 of "track 1 is the muon" minus that of "track 2 is the muon" (`reco.pid`,
filled by the identification with the calorimeter or by the parametric mode).

Elastic kinematic fit (`reco.kinematic`, with ``VertexSettings(elastic_fit=True)``, else NaN):
elastic_chi2_mu_k, elastic_theta_e_mu_k_rad, elastic_theta_mu_mu_k_rad for track k (1, 2) the
muon (chi2 with 2 degrees of freedom, fitted angles); elastic_chi2, elastic_theta_e_rad,
elastic_theta_mu_rad of the hypothesis the identification chose.

Identification and observables (`reco.pid`, `reco.observables`): theta_e_rad, theta_mu_rad,
phi_e_rad, phi_mu_rad, acoplanarity_rad (pi - |phi_e - phi_mu| folded to [-pi, pi]),
elasticity_rad (theta_mu - theta_mu_elastic(theta_e) at the nominal beam energy), muon_is_1 (bool).

Selection (`reco.selection`): selected (bool).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLUMNS = {
    # event and truth
    "event_id": np.int64, "process": np.int8, "weight": np.float64, "true_weight": np.float64,
    "true_t_gev2": np.float64,
    "true_theta_e_rad": np.float64, "true_theta_mu_rad": np.float64, "true_phi_e_rad": np.float64,
    "true_phi_mu_rad": np.float64, "true_vertex_z_cm": np.float64, "beam_energy_gev": np.float64,
    # tracking
    "station": np.int16, "n_hits_in": np.int32, "n_hits_out": np.int32, "has_incoming": np.bool_,
    "n_tracks_out": np.int16, "in_x_cm": np.float64, "in_y_cm": np.float64, "in_tx": np.float64,
    "in_ty": np.float64, "in_chi2": np.float64, "in_ndf": np.int16,
    "theta_1_rad": np.float64, "phi_1_rad": np.float64, "theta_2_rad": np.float64, "phi_2_rad": np.float64,
    "chi2_1": np.float64, "chi2_2": np.float64, "ndf_1": np.int16, "ndf_2": np.int16,
    "truth_pdg_1": np.int32, "truth_pdg_2": np.int32,
    # vertex
    "vertex_x_cm": np.float64, "vertex_y_cm": np.float64, "vertex_z_cm": np.float64,
    "vertex_chi2": np.float64, "vertex_ndf": np.int16,
    # calorimeter: the cluster and the outgoing tracks extrapolated to the front face
    "calo_energy_gev": np.float64, "calo_x_cm": np.float64, "calo_y_cm": np.float64,
    "calo_x_1_cm": np.float64, "calo_y_1_cm": np.float64, "calo_x_2_cm": np.float64, "calo_y_2_cm": np.float64,
    "calo_term": np.float64,
    # elastic kinematic fit: both hypotheses (track k the muon) and the identified one
    "elastic_chi2_mu_1": np.float64, "elastic_theta_e_mu_1_rad": np.float64, "elastic_theta_mu_mu_1_rad": np.float64,
    "elastic_chi2_mu_2": np.float64, "elastic_theta_e_mu_2_rad": np.float64, "elastic_theta_mu_mu_2_rad": np.float64,
    "elastic_chi2": np.float64, "elastic_theta_e_rad": np.float64, "elastic_theta_mu_rad": np.float64,
    # identification and observables
    "theta_e_rad": np.float64, "theta_mu_rad": np.float64, "phi_e_rad": np.float64, "phi_mu_rad": np.float64,
    "acoplanarity_rad": np.float64, "elasticity_rad": np.float64, "muon_is_1": np.bool_,
    # selection
    "selected": np.bool_,
}


def _missing(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    return -1


def _column(name, values, n) -> np.ndarray:
    """`values` as column `name` of n events: its dtype, and contiguous (a strided column, such as
    a column of a 2D array, would make numba compile every kernel that reads it a second time)."""
    values = np.asarray(values, dtype=COLUMNS[name])
    if values.shape != (n,):
        raise ValueError(f"RecoEvents: column {name} has shape {values.shape}, expected ({n},)")
    return np.ascontiguousarray(values)


@dataclass
class RecoEvents:
    """Reconstructed events of one chunk: `columns` maps each name of `COLUMNS` to an array of
    one entry per event; `metadata` carries the configuration, its hash and the seed."""

    columns: dict
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if "event_id" not in self.columns:
            raise ValueError("RecoEvents: column event_id is required")
        n = np.asarray(self.columns["event_id"]).size
        unknown = sorted(set(self.columns) - set(COLUMNS))
        if unknown:
            raise ValueError(f"RecoEvents: unknown columns {unknown}; the columns are those of reco.events.COLUMNS")
        for name, dtype in COLUMNS.items():
            if name in self.columns:
                self.columns[name] = _column(name, self.columns[name], n)
            else:
                self.columns[name] = np.full(n, _missing(dtype), dtype=dtype)

    @classmethod
    def empty(cls, n_events: int, metadata: dict | None = None) -> "RecoEvents":
        """n_events rows, every column at its missing value (event_id -1)."""
        return cls({"event_id": np.full(n_events, -1, dtype=np.int64)}, metadata or {})

    def __len__(self) -> int:
        return int(self.columns["event_id"].size)

    def __getitem__(self, name) -> np.ndarray:
        return self.columns[name]

    def __setitem__(self, name, values):
        if name not in COLUMNS:
            raise KeyError(f"RecoEvents: unknown column {name!r}")
        self.columns[name] = _column(name, values, len(self))

    def select(self, mask) -> "RecoEvents":
        """The rows where `mask` is true."""
        mask = np.asarray(mask, dtype=bool)
        return RecoEvents({k: v[mask] for k, v in self.columns.items()}, dict(self.metadata))

    @staticmethod
    def concatenate(parts) -> "RecoEvents":
        """Rows of several chunks, in order; the metadata of the first."""
        parts = list(parts)
        if not parts:
            raise ValueError("RecoEvents.concatenate: nothing to concatenate")
        return RecoEvents({k: np.concatenate([p.columns[k] for p in parts]) for k in COLUMNS}, dict(parts[0].metadata))

    def to_arrow(self):
        """The columns as a pyarrow Table (for `fastsim.events.TruthWriter`, which writes any
        events with a `to_arrow`)."""
        import pyarrow as pa

        return pa.table(self.columns)

    def to_frame(self):
        """The columns as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.columns)
