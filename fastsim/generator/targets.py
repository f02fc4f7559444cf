"""Targets in which the interactions happen, and the choice of the vertex.

A `Target` is a slab of a material (see `fastsim.materials`) between z_cm and z_cm + thickness_cm,
perpendicular to the beam. For elastic scattering the vertex is drawn uniformly along the
targets with probability proportional to each target's electron areal density
(rho N_A <Z/A> thickness); other processes pass their own per-target rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from fastsim.config import check_range
from fastsim.materials import Material, material


@dataclass(frozen=True)
class Target:
    """A slab of `material` from z_cm to z_cm + thickness_cm (cm)."""

    material: str = "Be"
    thickness_cm: float = 1.5
    z_cm: float = 0.0

    def __post_init__(self):
        material(self.material)
        check_range("thickness_cm", self.thickness_cm, 0.0, 1e3, low_open=True)
        check_range("z_cm", self.z_cm)

    @property
    def medium(self) -> Material:
        return material(self.material)

    @property
    def electron_areal_density_per_cm2(self) -> float:
        return self.medium.electron_density_per_cm3 * self.thickness_cm

    @property
    def atom_areal_density_per_cm2(self) -> float:
        return self.medium.atom_density_per_cm3 * self.thickness_cm


def check_targets(targets) -> tuple[Target, ...]:
    """Targets as a tuple, ordered in z and not overlapping; ValueError otherwise."""
    targets = tuple(targets)
    if not targets:
        raise ValueError("targets: at least one target is needed")
    for index, (first, second) in enumerate(zip(targets[:-1], targets[1:])):
        if second.z_cm < first.z_cm + first.thickness_cm:
            raise ValueError(
                f"targets[{index + 1}].z_cm = {second.z_cm!r} overlaps targets[{index}] "
                f"({first.material} from {first.z_cm} to {first.z_cm + first.thickness_cm} cm); targets must be ordered in z"
            )
    return targets


def target_arrays(targets, rates):
    """(z_start_cm, thickness_cm, cumulative probability) for `vertex_kernel`, the probability of
    each target proportional to `rates` (e.g. electron areal densities)."""
    rates = np.asarray(rates, dtype=np.float64)
    z = np.array([t.z_cm for t in targets])
    thickness = np.array([t.thickness_cm for t in targets])
    cumulative = np.cumsum(rates) / rates.sum()
    cumulative[-1] = 1.0
    return z, thickness, cumulative


@njit(cache=True, nogil=True, inline="always")
def vertex_kernel(u, z_start_cm, thickness_cm, cumulative):
    """(vertex z in cm, target index) from one uniform by inverting the cumulative distribution
    of z: the target by its cumulative probability, then the depth from where u falls inside
    the target's share (uniform there)."""
    index = 0
    for k in range(cumulative.size - 1):  # a count, not a search: no branch on random u
        index += u > cumulative[k]
    lower = cumulative[max(index - 1, 0)] * (index > 0)
    fraction = min(max((u - lower) / (cumulative[index] - lower), 0.0), 1.0)
    return z_start_cm[index] + fraction * thickness_cm[index], index
