"""Calorimeter response: energy deposits of electrons, photons and muons in the crystal array.

What to use when:

- `CalorimeterResponse(calorimeter)` holds the response parameters of a
  `fastsim.detector.geometry.Calorimeter` as kernel arrays; `response.deposit(seed, event_ids,
  impacts)` turns the particles arriving at its front face (`DetectorSimulation` fills the
  impacts) into crystal energies (GeV), shape (n_events, n_x * n_y), crystal c = iy * n_x + ix.
- `lateral_fraction(dx1, dx2, dy1, dy2, r)` is the fraction of a shower's energy inside a
  rectangle (cm, relative to the shower axis); `mip_most_probable_gev(material, thickness_cm)` and
  `landau_width_gev(...)` the muon's deposit in a crystal.

The model (a parametrized shower, in the spirit of GFlash / Delphes):

- electrons and photons shower; the energy of an electron's bremsstrahlung photons, emitted within
  ~1/gamma of its direction, arrives with it, so the shower energy is the particle's energy at the
  vertex and its axis the electron's position at the front face (after multiple scattering);
- lateral profile: the GFlash radial form f(r) = 2 r R^2 / (r^2 + R^2)^2 (Grindhammer & Peters,
  hep-ex/0001020) integrated over depth, with R = R_M / 3: it holds 90 % of the energy within one
  Moliere radius and 99.1 % within 3.5 R_M, as the PDG review states for electromagnetic showers
  (Passage of particles through matter, sec. "Lateral distribution"). Its rectangle integral is
  closed-form; the central 2.85 cm crystal of PbWO4 (R_M = 1.959 cm) holds 85.4 % of a
  centred shower. Energy outside the array is lost; longitudinal leakage (22 cm = 24.7 X0) is neglected;
- energy resolution: the contained energy E is smeared once per shower with
  sigma^2 = a^2 E + (c E)^2 (stochastic and constant terms) and shared among the crystals in the
  profile's proportions; every crystal adds Gaussian noise of `noise_per_crystal_gev`. The
  defaults are the CMS PbWO4 test-beam figures a = 2.8 % sqrt(GeV), c = 0.3 %, 40 MeV a crystal
  (CMS ECAL, JINST 2 (2007) P04004: 12 % / E in a 3x3 array = 3 x 40 MeV);
- a muon deposits in the crystal it enters (straight through its length) a Landau-like energy:
  the most probable value of the PDG's Landau-Vavilov-Bichsel formula in the high-energy limit,
  Delta_p = xi [ln(2 m_e c^2 xi / (hbar omega_p)^2) + 0.2], xi = (K/2) <Z/A> rho x, plus xi times a
  Moyal variate (-ln z^2, z normal; Moyal's distribution approximates Landau's with a lighter
  tail). 259 MeV for 22 cm of PbWO4. Radiative losses of the muon (rare hard deposits) are not
  modelled.

Random numbers: `fastsim.rng.STREAM_CALORIMETER` keyed by (seed, event_id): normal k < n_crystals
is crystal k's noise, normal n_crystals + j the smearing of impact j (`normal4` blocks and
`normal` give the same numbers).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from fastsim import rng
from fastsim.materials import material

# Impact kinds (`impacts[..., 3]`)
IMPACT_NONE = 0
IMPACT_SHOWER = 1  # electron or photon
IMPACT_MUON = 2

_K_MEV_CM2_G = 0.307075  # 4 pi N_A r_e^2 m_e c^2 (PDG)
_ELECTRON_REST_ENERGY_EV = 0.51099895e6
_PLASMA_EV = 28.816  # hbar omega_p = 28.816 sqrt(rho <Z/A>) eV (PDG)
_LANDAU_J = 0.200  # j of the Landau-Vavilov-Bichsel most probable value (PDG)
PROFILE_RADIUS_PER_MOLIERE = 1.0 / 3.0  # R / R_M of the lateral profile: 90 % within R_M


def landau_width_gev(material_name: str, thickness_cm: float) -> float:
    """xi = (K/2) <Z/A> rho x (GeV), the width of the energy-loss distribution of a beta = 1 particle."""
    m = material(material_name)
    return 0.5 * _K_MEV_CM2_G * m.z_over_a * m.density_g_cm3 * thickness_cm * 1e-3


def mip_most_probable_gev(material_name: str, thickness_cm: float) -> float:
    """Most probable ionization loss (GeV) of a highly relativistic muon crossing `thickness_cm`
    (PDG, Landau-Vavilov-Bichsel in the limit where the density effect saturates)."""
    m = material(material_name)
    xi_ev = landau_width_gev(material_name, thickness_cm) * 1e9
    plasma_ev = _PLASMA_EV * math.sqrt(m.density_g_cm3 * m.z_over_a)
    return xi_ev * (math.log(2.0 * _ELECTRON_REST_ENERGY_EV * xi_ev / plasma_ev ** 2) + _LANDAU_J) * 1e-9


@njit(cache=True, nogil=True, inline="always")
def _corner(a, b, r):
    """Fraction of the profile in [0, a] x [0, b] (signed: odd in a and in b)."""
    ra = math.sqrt(a * a + r * r)
    rb = math.sqrt(b * b + r * r)
    return (a / ra * math.atan(b / ra) + b / rb * math.atan(a / rb)) / (2.0 * math.pi)


@njit(cache=True, nogil=True)
def lateral_fraction(dx1, dx2, dy1, dy2, r):
    """Fraction of a shower's energy in the rectangle [dx1, dx2] x [dy1, dy2] (cm, relative to its
    axis) for the profile f(r) = 2 r R^2 / (r^2 + R^2)^2 with R = r (cm)."""
    return _corner(dx2, dy2, r) - _corner(dx1, dy2, r) - _corner(dx2, dy1, r) + _corner(dx1, dy1, r)


@njit(parallel=True, cache=True)
def _deposit(seed, event_ids, impacts, n_x, n_y, size, profile_r, stochastic, constant, noise, mip_mpv, mip_xi,
             energies):
    n_crystals = n_x * n_y
    half_x, half_y = 0.5 * n_x * size, 0.5 * n_y * size
    for i in prange(event_ids.size):
        event = event_ids[i]
        for block in range((n_crystals + 3) // 4):
            z4 = rng.normal4(seed, event, rng.STREAM_CALORIMETER, block)
            for k in range(4):
                c = 4 * block + k
                if c < n_crystals:
                    energies[i, c] = noise * z4[k]
        corners = np.empty((n_y + 1, n_x + 1))
        for j in range(impacts.shape[1]):
            kind = impacts[i, j, 3]
            x, y, energy = impacts[i, j, 0], impacts[i, j, 1], impacts[i, j, 2]
            if kind == IMPACT_NONE:
                continue
            z = rng.normal(seed, event, rng.STREAM_CALORIMETER, n_crystals + j)
            if kind == IMPACT_MUON:
                if abs(x) < half_x and abs(y) < half_y:
                    ix = min(int((x + half_x) / size), n_x - 1)
                    iy = min(int((y + half_y) / size), n_y - 1)
                    energies[i, iy * n_x + ix] += mip_mpv - mip_xi * math.log(z * z)
            else:
                # the profile's integral up to each crystal corner, once: a crystal's fraction is
                # the difference of its four corners
                for iy in range(n_y + 1):
                    for ix in range(n_x + 1):
                        corners[iy, ix] = _corner(ix * size - half_x - x, iy * size - half_y - y, profile_r)
                contained = energy * (corners[n_y, n_x] - corners[0, n_x] - corners[n_y, 0] + corners[0, 0])
                if contained <= 0.0:
                    continue
                sigma = math.sqrt(stochastic * stochastic * contained + (constant * contained) ** 2)
                scale = max(contained + sigma * z, 0.0) / contained * energy
                for iy in range(n_y):
                    for ix in range(n_x):
                        fraction = corners[iy + 1, ix + 1] - corners[iy, ix + 1] - corners[iy + 1, ix] + corners[iy, ix]
                        energies[i, iy * n_x + ix] += scale * fraction


class CalorimeterResponse:
    """The response of a `Calorimeter` (module docstring): `deposit` gives the crystal energies."""

    def __init__(self, calorimeter):
        c = calorimeter
        self.calorimeter = c
        self.profile_radius_cm = PROFILE_RADIUS_PER_MOLIERE * c.moliere_radius_cm
        self.mip_most_probable_gev = mip_most_probable_gev(c.material, c.crystal_length_cm)
        self.mip_width_gev = landau_width_gev(c.material, c.crystal_length_cm)

    @property
    def n_crystals(self) -> int:
        return self.calorimeter.n_x * self.calorimeter.n_y

    def deposit(self, seed, event_ids, impacts) -> np.ndarray:
        """Crystal energies (GeV), shape (n, n_x * n_y), of the impacts (n, m, 4): x and y (cm,
        relative to the array's centre), energy (GeV, of a shower) and kind (IMPACT_*)."""
        c = self.calorimeter
        impacts = np.ascontiguousarray(impacts, dtype=np.float64)
        event_ids = np.asarray(event_ids, dtype=np.int64)
        if impacts.ndim != 3 or impacts.shape[0] != event_ids.size or impacts.shape[2] != 4:
            raise ValueError(f"impacts of shape {impacts.shape} must be (n_events = {event_ids.size}, m, 4)")
        energies = np.empty((event_ids.size, self.n_crystals))
        _deposit(np.uint64(rng.validate_seed(seed)), event_ids, impacts, c.n_x, c.n_y, c.crystal_size_cm,
                 self.profile_radius_cm, c.stochastic_term_gev_sqrt, c.constant_term, c.noise_per_crystal_gev,
                 self.mip_most_probable_gev, self.mip_width_gev, energies)
        return energies
