"""Materials of targets and detector layers.

Values from the PDG tables of atomic and nuclear properties (pdg.lbl.gov/AtomicNuclearProperties,
Review of Particle Physics 2024): atomic number Z, atomic mass A (g/mol), density (g/cm^3) and
radiation length X0 (g/cm^2). For a compound, Z and A are the mass-weighted means used only by
the pair-production model, and `z_over_a` is the PDG <Z/A>.

`material("Be")` returns one; `MATERIALS` lists them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastsim.units import AVOGADRO


@dataclass(frozen=True)
class Material:
    """A material: Z, A (g/mol), density (g/cm^3), X0 (g/cm^2) and <Z/A>."""

    name: str
    z: float
    a_g_mol: float
    density_g_cm3: float
    radiation_length_g_cm2: float
    z_over_a: float = math.nan
    description: str = ""

    def __post_init__(self):
        if math.isnan(self.z_over_a):
            object.__setattr__(self, "z_over_a", self.z / self.a_g_mol)

    @property
    def radiation_length_cm(self) -> float:
        return self.radiation_length_g_cm2 / self.density_g_cm3

    @property
    def electron_density_per_cm3(self) -> float:
        """Electrons per cm^3, rho N_A <Z/A>."""
        return self.density_g_cm3 * AVOGADRO * self.z_over_a

    @property
    def atom_density_per_cm3(self) -> float:
        """Atoms per cm^3, rho N_A / A."""
        return self.density_g_cm3 * AVOGADRO / self.a_g_mol


MATERIALS = {
    m.name: m
    for m in (
        Material("Be", 4, 9.012182, 1.848, 65.19, description="beryllium, design-study target (X0 = 35.28 cm)"),
        Material("C", 6, 12.0107, 2.210, 42.70, description="carbon, graphite at 2.21 g/cm^3 (X0 = 19.32 cm)"),
        Material("graphite", 6, 12.0107, 1.83, 42.70, description="graphite at 1.83 g/cm^3, test-run targets (X0 = 23.3 cm)"),
        Material("Si", 14, 28.0855, 2.329, 21.82, description="silicon, strip sensors (X0 = 9.37 cm)"),
        Material("Al", 13, 26.9815385, 2.699, 24.01, description="aluminium (X0 = 8.897 cm)"),
        Material("Cu", 29, 63.546, 8.960, 12.86, description="copper (X0 = 1.436 cm)"),
        Material("W", 74, 183.84, 19.30, 6.76, description="tungsten (X0 = 0.3504 cm)"),
        Material("PbWO4", 62.4, 152.1, 8.300, 7.39, z_over_a=0.41315,
                 description="lead tungstate, calorimeter crystals (X0 = 0.8903 cm); Z, A mass-weighted means"),
    )
}


def material(name: str) -> Material:
    """The material called `name`; ValueError listing the known ones otherwise."""
    try:
        return MATERIALS[name]
    except (KeyError, TypeError):
        raise ValueError(f"material = {name!r} is unknown; known materials: {sorted(MATERIALS)}") from None
