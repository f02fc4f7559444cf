"""Events imported from external generators (MESMER, any LHE file), as one structure of arrays.

What to use when
----------------
- `fastsim.io.mesmer.read_mesmer` reads MESMER's ASCII event files (NLO/NNLO mu e -> mu e (gamma)).
- `fastsim.io.lhe.read_lhe` reads any Les Houches Event file (needs ``pip install muone-toolkit[lhe]``).
- Both return an `ExternalEvents`: per-event arrays (weight, incoming beam particle) and the
  outgoing particles in CSR form (``offsets`` into flat ``pdg``, ``px``, ``py``, ``pz``, ``e``).
- `ExternalEvents.truth_columns` gives the per-event truth the rest of the chain uses
  (energies and angles of the outgoing muon and electron, relative to the incoming muon).

Conventions
-----------
Kinematics in GeV (float64), in the laboratory frame. The target electron is at rest and is not
stored: 4-momentum conservation reads ``p_beam + (m_e, 0, 0, 0) = sum of outgoing``.
``weight_ub`` is in microbarn and normalized such that ``weight_ub.sum() / n_events`` estimates
the cross section of the sample (within the generator's cuts) in ub; the readers document how the
generator's own weights map onto this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from particle import InvalidParticle, Particle, ParticleNotFound

from fastsim.units import MEV_TO_GEV

_PER_EVENT = ("event_id", "weight_ub", "beam_pdg", "beam_px", "beam_py", "beam_pz", "beam_e")
_PER_PARTICLE = ("pdg", "px", "py", "pz", "e")
_INT_FIELDS = {"event_id": np.int64, "beam_pdg": np.int32, "pdg": np.int32, "offsets": np.int64}

_mass_cache_gev: dict[int, float] = {}


def mass_gev(pdg: int) -> float:
    """Rest mass of the particle with PDG id `pdg` in GeV (PDG value from the `particle` package).

    Raises
    ------
    ValueError
        If `pdg` is not a known particle or has no mass value.
    """
    pdg = int(pdg)
    if pdg not in _mass_cache_gev:
        try:
            mass_mev = Particle.from_pdgid(pdg).mass
        except (ParticleNotFound, InvalidParticle, ValueError) as exc:
            raise ValueError(f"unknown PDG id {pdg}: {exc}") from None
        if mass_mev is None:
            raise ValueError(f"PDG id {pdg} has no mass in the particle package")
        _mass_cache_gev[pdg] = mass_mev * MEV_TO_GEV
    return _mass_cache_gev[pdg]


def energy_from_mass_gev(pdg: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """Energies sqrt(p^2 + m^2) in GeV for particles given by PDG id and 3-momentum in GeV."""
    pdg = np.asarray(pdg)
    uniq, inverse = np.unique(pdg, return_inverse=True)
    masses = np.array([mass_gev(p) for p in uniq], dtype=np.float64)[inverse.reshape(-1)]
    px, py, pz = (np.asarray(a, dtype=np.float64) for a in (px, py, pz))
    return np.sqrt(px * px + py * py + pz * pz + masses * masses)


def _angles_about_axis(px, py, pz, nx, ny, nz):
    """Polar and azimuthal angles (rad) of momenta p about unit axes n (all arrays, same shape).

    The polar angle is atan2(|p x n|, p . n), accurate at small angles. The azimuth is measured
    in the frame obtained from the laboratory one by the minimal rotation taking z onto n
    (rotation about z x n), so it equals atan2(py, px) for a beam along z.
    """
    cx = py * nz - pz * ny
    cy = pz * nx - px * nz
    cz = px * ny - py * nx
    theta = np.arctan2(np.sqrt(cx * cx + cy * cy + cz * cz), px * nx + py * ny + pz * nz)
    # Transverse axes u = R x, v = R y of the minimal rotation R (Rodrigues, k = z x n).
    # 1 + nz > 0 for any beam going forward; a beam along -z has no unique minimal rotation.
    a = 1.0 / (1.0 + nz)
    ux, uy, uz = 1.0 - nx * nx * a, -nx * ny * a, -nx
    vx, vy, vz = -nx * ny * a, 1.0 - ny * ny * a, -ny
    phi = np.arctan2(px * vx + py * vy + pz * vz, px * ux + py * uy + pz * uz)
    return theta, phi


@dataclass(frozen=True, eq=False)
class ExternalEvents:
    """Weighted events from an external generator, as a structure of arrays (GeV, ub).

    Parameters
    ----------
    event_id : ndarray of int64, shape (n,)
        Event number as given by the generator.
    weight_ub : ndarray of float64, shape (n,)
        Event weight in ub; ``weight_ub.sum() / n`` estimates the sample's cross section.
    beam_pdg : ndarray of int32, shape (n,)
        PDG id of the incoming beam particle (the muon). The target electron is at rest.
    beam_px, beam_py, beam_pz, beam_e : ndarray of float64, shape (n,)
        4-momentum of the incoming beam particle in GeV.
    offsets : ndarray of int64, shape (n + 1,)
        Outgoing particles of event i are ``offsets[i]:offsets[i + 1]`` of the flat arrays.
    pdg : ndarray of int32
        PDG ids of the outgoing particles.
    px, py, pz, e : ndarray of float64
        4-momenta of the outgoing particles in GeV.
    extra : dict of str to ndarray
        More per-event arrays (first dimension n), e.g. other weights of the record.
    metadata : dict
        Generator name and version, beam energy, cuts, cross section, source path, ...
    """

    event_id: np.ndarray
    weight_ub: np.ndarray
    beam_pdg: np.ndarray
    beam_px: np.ndarray
    beam_py: np.ndarray
    beam_pz: np.ndarray
    beam_e: np.ndarray
    offsets: np.ndarray
    pdg: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in (*_PER_EVENT, "offsets", *_PER_PARTICLE):
            arr = np.ascontiguousarray(getattr(self, name), dtype=_INT_FIELDS.get(name, np.float64))
            if arr.ndim != 1:
                raise ValueError(f"ExternalEvents.{name} must be 1-dimensional, got shape {arr.shape}")
            object.__setattr__(self, name, arr)
        n = self.event_id.size
        for name in _PER_EVENT:
            if getattr(self, name).size != n:
                raise ValueError(f"ExternalEvents.{name} has length {getattr(self, name).size}, expected n_events = {n}")
        if self.offsets.size != n + 1:
            raise ValueError(f"ExternalEvents.offsets has length {self.offsets.size}, expected n_events + 1 = {n + 1}")
        n_particles = self.pdg.size
        if self.offsets[0] != 0 or self.offsets[-1] != n_particles:
            raise ValueError(
                f"ExternalEvents.offsets must start at 0 and end at the number of particles {n_particles}, "
                f"got {self.offsets[0]} ... {self.offsets[-1]}"
            )
        if np.any(np.diff(self.offsets) < 0):
            raise ValueError("ExternalEvents.offsets must be non-decreasing")
        for name in _PER_PARTICLE:
            if getattr(self, name).size != n_particles:
                raise ValueError(f"ExternalEvents.{name} has length {getattr(self, name).size}, expected {n_particles}")
        extra = {key: np.asarray(value) for key, value in self.extra.items()}
        for key, value in extra.items():
            if value.ndim == 0 or value.shape[0] != n:
                raise ValueError(f"ExternalEvents.extra[{key!r}] has shape {value.shape}, expected first dimension {n}")
        object.__setattr__(self, "extra", extra)
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def n_events(self) -> int:
        """Number of events."""
        return int(self.event_id.size)

    def __len__(self) -> int:
        return self.n_events

    @property
    def n_particles(self) -> np.ndarray:
        """Number of outgoing particles per event, int64 array of shape (n,)."""
        return np.diff(self.offsets)

    def select(self, mask) -> ExternalEvents:
        """Events picked by a boolean mask of shape (n,) or by an array of event indices.

        The metadata is copied unchanged: its cross section refers to the full sample, while
        ``weight_ub`` of the selected events keeps its meaning (sum / n_full = cross section of
        the selection).
        """
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (self.n_events,):
                raise ValueError(f"boolean mask has shape {mask.shape}, expected ({self.n_events},)")
            index = np.flatnonzero(mask)
        elif np.issubdtype(mask.dtype, np.integer) or mask.size == 0:
            index = mask.astype(np.int64).reshape(-1)
        else:
            raise ValueError(f"select() takes a boolean mask or integer indices, got dtype {mask.dtype}")
        counts = np.diff(self.offsets)[index]
        offsets = np.zeros(index.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        particle_index = np.repeat(self.offsets[:-1][index] - offsets[:-1], counts) + np.arange(offsets[-1])
        return ExternalEvents(
            **{name: getattr(self, name)[index] for name in _PER_EVENT},
            offsets=offsets,
            **{name: getattr(self, name)[particle_index] for name in _PER_PARTICLE},
            extra={key: value[index] for key, value in self.extra.items()},
            metadata=self.metadata,
        )

    def _first_of(self, particle_mask: np.ndarray) -> np.ndarray:
        """Flat index of the first outgoing particle in each event passing `particle_mask`, -1 if none."""
        event_of = np.repeat(np.arange(self.n_events), np.diff(self.offsets))
        hits = np.flatnonzero(particle_mask)
        first = np.full(self.n_events, -1, dtype=np.int64)
        events, where = np.unique(event_of[hits], return_index=True)
        first[events] = hits[where]
        return first

    def truth_columns(self) -> dict[str, np.ndarray]:
        """Per-event truth of the outgoing muon, electron and photons (GeV, rad).

        Returns
        -------
        dict of str to ndarray, each of shape (n,)
            ``event_id``, ``weight`` (ub), ``e_energy_gev``, ``e_theta_rad``, ``e_phi_rad``,
            ``mu_energy_gev``, ``mu_theta_rad``, ``mu_phi_rad``, ``photon_energy_gev`` (sum over
            photons, 0 if none) and ``n_photons``.

        Notes
        -----
        The muon is the first outgoing particle with |pdg| = 13, the electron the first with
        pdg = 11 (MESMER and LHE files list the scattered electron before any pair). Missing
        particles give NaN. Polar angles are measured from the incoming muon direction n with
        atan2(|p x n|, p . n); azimuths in the frame obtained by the minimal rotation of z onto
        n (equal to atan2(py, px) for a beam along z).
        """
        n = self.n_events
        p_beam = np.sqrt(self.beam_px**2 + self.beam_py**2 + self.beam_pz**2)
        with np.errstate(invalid="ignore", divide="ignore"):
            nx, ny, nz = self.beam_px / p_beam, self.beam_py / p_beam, self.beam_pz / p_beam
        columns: dict[str, np.ndarray] = {
            "event_id": self.event_id.copy(),
            "weight": self.weight_ub.copy(),
        }
        for prefix, particle_mask in (("e", self.pdg == 11), ("mu", np.abs(self.pdg) == 13)):
            first = self._first_of(particle_mask)
            found = first >= 0
            energy = np.full(n, np.nan)
            theta = np.full(n, np.nan)
            phi = np.full(n, np.nan)
            k = first[found]
            energy[found] = self.e[k]
            theta[found], phi[found] = _angles_about_axis(
                self.px[k], self.py[k], self.pz[k], nx[found], ny[found], nz[found]
            )
            columns[f"{prefix}_energy_gev"] = energy
            columns[f"{prefix}_theta_rad"] = theta
            columns[f"{prefix}_phi_rad"] = phi
        event_of = np.repeat(np.arange(n), np.diff(self.offsets))
        photons = self.pdg == 22
        columns["photon_energy_gev"] = np.bincount(event_of[photons], weights=self.e[photons], minlength=n)
        columns["n_photons"] = np.bincount(event_of[photons], minlength=n).astype(np.int64)
        order = (
            "event_id", "weight", "e_energy_gev", "e_theta_rad", "e_phi_rad",
            "mu_energy_gev", "mu_theta_rad", "mu_phi_rad", "photon_energy_gev", "n_photons",
        )  # fmt: skip
        return {key: columns[key] for key in order}
