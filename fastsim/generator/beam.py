"""The incoming muon beam: energy, position and direction of every beam muon.

A `BeamModel` is either Gaussian (mean energy, relative spread, a separate shift of the mean,
divergence and spot size per plane, an optional position-angle correlation) or a beam-profile
CSV file (columns x_cm, y_cm, theta_x_rad, theta_y_rad, energy_gev) whose rows are drawn by event
index. Positions are given at the plane z = `reference_z_cm` and carried straight to the vertex;
theta_x, theta_y are projected angles, the direction being (tan theta_x, tan theta_y, 1)
normalized. The energy shift is added in both cases: it is the beam-energy-scale systematic knob.

`beam_kernel(seed, event, params, profile)` samples one muon from the STREAM_BEAM numbers of that
event; `BeamModel.kernel_arrays()` packs the model for it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from fastsim.config import check_range
from fastsim.numerics import tan_small
from fastsim.rng import STREAM_BEAM, normal4, uniform
from fastsim.units import MUON_MASS_GEV

# Indices into the packed parameter array.
_ENERGY, _SPREAD, _SHIFT, _DIV_X, _DIV_Y, _SPOT_X, _SPOT_Y, _CORR, _Z_REF = range(9)
PROFILE_COLUMNS = ("x_cm", "y_cm", "theta_x_rad", "theta_y_rad", "energy_gev")


@dataclass(frozen=True)
class BeamModel:
    """Muon beam (GeV, rad, cm); all widths are Gaussian sigmas; charge +1 (mu+) or -1 (mu-)."""

    energy_gev: float = 160.0
    energy_spread_rel: float = 0.0
    energy_shift_gev: float = 0.0
    divergence_x_rad: float = 0.0
    divergence_y_rad: float = 0.0
    spot_x_cm: float = 0.0
    spot_y_cm: float = 0.0
    position_angle_correlation: float = 0.0
    reference_z_cm: float = 0.0
    charge: int = 1
    profile_file: str | None = None
    _profile: np.ndarray = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        check_range("energy_gev", self.energy_gev, 1.0, 1e4)
        check_range("energy_spread_rel", self.energy_spread_rel, 0.0, 0.1)
        check_range("energy_shift_gev", self.energy_shift_gev, -0.5 * self.energy_gev, 0.5 * self.energy_gev)
        for key in ("divergence_x_rad", "divergence_y_rad"):
            check_range(key, getattr(self, key), 0.0, 0.01)
        for key in ("spot_x_cm", "spot_y_cm"):
            check_range(key, getattr(self, key), 0.0, 50.0)
        check_range("position_angle_correlation", self.position_angle_correlation, -1.0, 1.0)
        check_range("reference_z_cm", self.reference_z_cm)
        if self.charge not in (1, -1):
            raise ValueError(f"charge = {self.charge!r} is not allowed; choose 1 (mu+, the M2 beam of MUonE) or -1 (mu-)")
        if self.profile_file is not None:
            object.__setattr__(self, "_profile", read_beam_profile(self.profile_file))

    @property
    def mean_energy_gev(self) -> float:
        """Mean energy including the shift (GeV)."""
        if self._profile is not None:
            return float(self._profile[:, 4].mean()) + self.energy_shift_gev
        return self.energy_gev + self.energy_shift_gev

    def energy_range_gev(self, n_sigma=6.0) -> tuple[float, float]:
        """Range that holds every beam energy this model produces (profile: its min and max)."""
        if self._profile is not None:
            energies = self._profile[:, 4] + self.energy_shift_gev
            return float(energies.min()), float(energies.max())
        mean = self.mean_energy_gev
        half = n_sigma * self.energy_spread_rel * self.energy_gev
        return max(mean - half, 1.1 * MUON_MASS_GEV), mean + half

    @property
    def is_monochromatic(self) -> bool:
        return self._profile is None and self.energy_spread_rel == 0.0

    def energy_envelope_gev(self) -> tuple[float, float]:
        """(lowest, highest) beam energy: the mean twice for a monochromatic beam, else
        `energy_range_gev()`."""
        return (self.mean_energy_gev,) * 2 if self.is_monochromatic else self.energy_range_gev()

    def kernel_arrays(self):
        """(params, profile) arrays for `beam_kernel`; profile has shape (0, 5) without a file."""
        params = np.array([
            self.energy_gev, self.energy_spread_rel, self.energy_shift_gev, self.divergence_x_rad,
            self.divergence_y_rad, self.spot_x_cm, self.spot_y_cm, self.position_angle_correlation,
            self.reference_z_cm,
        ])
        profile = self._profile if self._profile is not None else np.zeros((0, 5))
        return params, np.ascontiguousarray(profile)


def read_beam_profile(path) -> np.ndarray:
    """Read a beam-profile CSV (header with PROFILE_COLUMNS in any order) into an (n, 5) array."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in PROFILE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"beam profile {path}: missing column(s) {missing}; expected header {list(PROFILE_COLUMNS)}")
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append([float(row[c]) for c in PROFILE_COLUMNS])
                except (TypeError, ValueError):
                    raise ValueError(f"beam profile {path}: line {line} has a non-numeric value: {row}") from None
    except OSError as error:
        raise ValueError(f"beam profile_file = {str(path)!r} cannot be read: {error.strerror or error}") from None
    if not rows:
        raise ValueError(f"beam profile {path}: no rows")
    profile = np.array(rows)
    if not np.all(np.isfinite(profile)):
        raise ValueError(f"beam profile {path}: contains non-finite values")
    low = float(profile[:, 4].min())
    if low <= MUON_MASS_GEV:
        raise ValueError(f"beam profile {path}: energy_gev = {low!r} is outside the allowed range ({MUON_MASS_GEV}, inf)")
    return profile


@njit(cache=True, nogil=True, inline="always")
def beam_kernel(seed, event, params, profile):
    """(energy_gev, x_cm, y_cm, theta_x_rad, theta_y_rad) of the beam muon of `event`,
    position at z = reference_z_cm."""
    if profile.shape[0] > 0:
        row = min(int(uniform(seed, event, STREAM_BEAM, 0) * profile.shape[0]), profile.shape[0] - 1)
        return (profile[row, 4] + params[_SHIFT], profile[row, 0], profile[row, 1], profile[row, 2], profile[row, 3])
    # normals 0..4 of STREAM_BEAM; a beam without spread, spot and divergence draws none
    first_block = params[_SPREAD] != 0.0 or params[_SPOT_X] != 0.0 or params[_DIV_X] != 0.0 or params[_SPOT_Y] != 0.0
    if not first_block and params[_DIV_Y] == 0.0:
        return params[_ENERGY] + params[_SHIFT], 0.0, 0.0, 0.0, 0.0
    n0 = n1 = n2 = n3 = n4 = 0.0
    if first_block:
        n0, n1, n2, n3 = normal4(seed, event, STREAM_BEAM, 0)
    if params[_DIV_Y] != 0.0:
        n4 = normal4(seed, event, STREAM_BEAM, 1)[0]
    energy = params[_ENERGY] * (1.0 + params[_SPREAD] * n0) + params[_SHIFT]
    corr = params[_CORR]
    other = math.sqrt(1.0 - corr * corr)
    x = params[_SPOT_X] * n1
    theta_x = params[_DIV_X] * (corr * n1 + other * n2)
    y = params[_SPOT_Y] * n3
    theta_y = params[_DIV_Y] * (corr * n3 + other * n4)
    return energy, x, y, theta_x, theta_y


@njit(cache=True, nogil=True)
def rotate_from_to(ax, ay, az, bx, by, bz, x, y, z):
    """Rotate (x, y, z) by the smallest rotation taking unit vector a to unit vector b:
    Rodrigues' formula with v = a x b, c = a . b, R p = p + v x p + v x (v x p) / (1 + c),
    free of 1 - cos for small angles."""
    vx, vy, vz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    k = 1.0 / (1.0 + ax * bx + ay * by + az * bz)
    cx, cy, cz = vy * z - vz * y, vz * x - vx * z, vx * y - vy * x
    return (x + cx + k * (vy * cz - vz * cy), y + cy + k * (vz * cx - vx * cz), z + cz + k * (vx * cy - vy * cx))


@njit(cache=True, nogil=True)
def rotate_to_beam(px, py, pz, dx, dy, dz):
    """Rotate a vector from the frame where the beam is +z to the lab, where it is (dx, dy, dz)."""
    return rotate_from_to(0.0, 0.0, 1.0, dx, dy, dz, px, py, pz)


@njit(cache=True, nogil=True, inline="always")
def store_beam_and_vertex(row, energy, x0, y0, theta_x, theta_y, z, target, params, beam_out, vertex_out, target_out):
    """Write the beam muon (energy, angles) of `beam_kernel` and the vertex on its straight line
    at z into `row`; `params` are the beam's packed parameters (for the reference plane)."""
    beam_out[row, 0] = energy
    beam_out[row, 1] = theta_x
    beam_out[row, 2] = theta_y
    vertex_out[row, 0] = x0 + (tan_small(theta_x) * (z - params[_Z_REF]) if theta_x != 0.0 else 0.0)
    vertex_out[row, 1] = y0 + (tan_small(theta_y) * (z - params[_Z_REF]) if theta_y != 0.0 else 0.0)
    vertex_out[row, 2] = z
    target_out[row] = target
