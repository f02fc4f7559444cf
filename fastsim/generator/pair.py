"""Pair production mu N -> mu N e+ e- in the targets, the main background, as generator events.

A `PairProcess` holds one `fastsim.physics.pair_production.PairSampler` per target, built at the
mean beam energy E0, and the rates that mix pair events with elastic ones. Per event:

- the target k is chosen with probability proportional to n_atoms,k sigma_k(E0) (atoms per cm^2
  times the cross section per atom in the pair-energy window), the depth uniformly (both from
  uniform 5 of STREAM_PAIR, `vertex_kernel`);
- (nu, rho) and the lepton angles come from the tables of target k (STREAM_PAIR uniforms 0-4);
- energies follow the event's beam energy E: E_mu = E (1 - nu), E+- = nu E (1 +- rho) / 2, and
  the weight carries d2sigma(E, nu, rho) / d2sigma(E0, nu, rho), so a beam-energy spread is
  exact wherever the tables' window covers the event's kinematics (the tables are built for
  pair energies from E_min E0 / E_high, so every event above the cut at any beam energy of the
  beam model is reachable; the window in rho at E > E0 is that of E0, a 1e-4 effect);
- the angles are those sampled at E0 (they scale like m/E: a relative change of the order of
  the beam spread, neglected);
- weight = sigma_pair / p_pair in ub per target electron, sigma_pair = sum_k n_atoms,k sigma_k /
  sum_k n_electrons,k, and p_pair the probability of choosing a pair event; zero when the pair
  energy falls outside the configured window at this beam energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from fastsim import rng
from fastsim.config import check_range
from fastsim.generator.beam import BeamModel, beam_kernel, rotate_to_beam, store_beam_and_vertex
from fastsim.generator.targets import target_arrays, vertex_kernel
from fastsim.numerics import tan_small
from fastsim.physics.pair_production import N_UNIFORMS, PairSampler, d2sigma_kernel, sample_pair
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV


@dataclass(frozen=True)
class PairSettings:
    """Pair production: the window of the pair energy E+ + E- (GeV; None = kinematic limit) and
    `rate_scale`, a factor on the pair events' weights (the background-normalization systematic:
    the same events are drawn whatever its value, only their weights change)."""

    pair_energy_min_gev: float = 1.0
    pair_energy_max_gev: float | None = None
    rate_scale: float = 1.0

    def __post_init__(self):
        check_range("rate_scale", self.rate_scale, 0.0, 100.0)
        check_range("pair_energy_min_gev", self.pair_energy_min_gev, 4.0 * ELECTRON_MASS_GEV, 1e4, low_open=True)
        if self.pair_energy_max_gev is not None:
            check_range("pair_energy_max_gev", self.pair_energy_max_gev, self.pair_energy_min_gev, 1e4, low_open=True)


class PairProcess:
    """Sampling tables and rates of pair production in `targets` for `beam`."""

    def __init__(self, settings: PairSettings, beam: BeamModel, targets):
        self.settings = settings
        self.energy_gev = beam.mean_energy_gev
        low, high = beam.energy_envelope_gev()
        self.exact = beam.is_monochromatic
        window_min = settings.pair_energy_min_gev * self.energy_gev / high
        window_max = None if settings.pair_energy_max_gev is None else settings.pair_energy_max_gev * self.energy_gev / low
        by_material = {}  # one table per material: the 40 Be targets of the full experiment share one
        for target in targets:
            medium = target.medium
            if target.material not in by_material:
                try:
                    by_material[target.material] = PairSampler(self.energy_gev, medium.z, medium.a_g_mol, window_min, window_max)
                except ValueError as error:
                    raise ValueError(f"pair: {error}") from None
        samplers = [by_material[t.material] for t in targets]
        self.samplers = samplers
        atoms = np.array([t.atom_areal_density_per_cm2 for t in targets])
        electrons = np.array([t.electron_areal_density_per_cm2 for t in targets])
        sigma_atom = np.array([s.sigma_ub for s in samplers])
        rates = atoms * sigma_atom
        #: cross section per target electron (ub) of pair events in the tables' window
        self.sigma_per_electron_ub = float(rates.sum() / electrons.sum())
        self.target_z_cm, self.target_thickness_cm, self.target_cumulative = target_arrays(targets, rates)
        self.z = np.array([t.medium.z for t in targets])
        # the samplers share their grid sizes: stack their tables for the kernel
        tables = [s.tables for s in samplers]
        self.stacked = tuple(np.ascontiguousarray(np.stack([table[i] for table in tables])) for i in range(1, 7))

    def kernel_arrays(self):
        """Arrays for `pair_chunk`: (params, target z, thickness, cumulative, atomic numbers, tables...)."""
        energy_max = self.settings.pair_energy_max_gev
        params = np.array([self.energy_gev, self.settings.pair_energy_min_gev,
                           np.inf if energy_max is None else energy_max, 1.0 if self.exact else 0.0])
        return (params, self.target_z_cm, self.target_thickness_cm, self.target_cumulative, self.z) + self.stacked


@njit(cache=True, nogil=True)
def _four_momentum(energy, mass, ux, uy, uz):
    p = math.sqrt(max(energy * energy - mass * mass, 0.0))
    return p * ux, p * uy, p * uz, energy


@njit(parallel=True, cache=True)
def pair_chunk(seed, first_event, rows, beam_params, beam_profile, weight_scale,
               params, target_z, target_thickness, target_cumulative, atomic_z,
               s_grid, nu_pdf, nu_cdf, x_grid, x_pdf, x_cdf,
               weight, beam_out, vertex_out, target_out, momenta, angles):
    """Pair events first_event + rows into rows `rows` of the generator's output arrays; momenta
    slots: muon, electron, positron, in the lab frame."""
    energy0, pair_min, pair_max, exact = params[0], params[1], params[2], params[3] != 0.0
    for j in prange(rows.size):
        i = rows[j]
        event = first_event + i
        energy, x0, y0, theta_x, theta_y = beam_kernel(seed, event, beam_params, beam_profile)
        u_local = np.empty(N_UNIFORMS)
        out_local = np.empty(20)
        a = rng.uniform4(seed, event, rng.STREAM_PAIR, 0)
        b = rng.uniform4(seed, event, rng.STREAM_PAIR, 1)
        z, k = vertex_kernel(b[1], target_z, target_thickness, target_cumulative)
        u_local[0], u_local[1], u_local[2], u_local[3], u_local[4] = a[0], a[1], a[2], a[3], b[0]
        sample_pair(energy0, s_grid[k], nu_pdf[k], nu_cdf[k], x_grid[k], x_pdf[k], x_cdf[k], u_local, out_local)
        nu, rho = out_local[0], out_local[1]
        w = weight_scale
        if not exact:
            reference = d2sigma_kernel(energy0, nu, rho, atomic_z[k])
            w = 0.0 if reference <= 0.0 else w * d2sigma_kernel(energy, nu, rho, atomic_z[k]) / reference
        pair_energy = nu * energy
        if not (pair_min <= pair_energy <= pair_max):
            w = 0.0
        e_mu = energy * (1.0 - nu)
        e_minus = 0.5 * pair_energy * (1.0 - rho)
        e_plus = 0.5 * pair_energy * (1.0 + rho)
        tx, ty = tan_small(theta_x), tan_small(theta_y)
        norm = math.sqrt(1.0 + tx * tx + ty * ty)
        for slot, (e_slot, mass) in enumerate(((e_mu, MUON_MASS_GEV), (e_minus, ELECTRON_MASS_GEV), (e_plus, ELECTRON_MASS_GEV))):
            px, py, pz, e_out = _four_momentum(e_slot, mass, out_local[11 + 3 * slot], out_local[12 + 3 * slot],
                                               out_local[13 + 3 * slot])
            px, py, pz = rotate_to_beam(px, py, pz, tx / norm, ty / norm, 1.0 / norm)
            momenta[i, 4 * slot] = px
            momenta[i, 4 * slot + 1] = py
            momenta[i, 4 * slot + 2] = pz
            momenta[i, 4 * slot + 3] = e_out
        weight[i] = w
        store_beam_and_vertex(i, energy, x0, y0, theta_x, theta_y, z, k, beam_params, beam_out, vertex_out,
                              target_out)
        angles[i, 0] = out_local[7]
        angles[i, 1] = out_local[8]
        angles[i, 2] = out_local[5]
        angles[i, 3] = out_local[6]
