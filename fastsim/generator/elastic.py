"""Elastic mu e -> mu e (gamma) events: importance-sampled t, exact LO weight with running alpha.

Per event (all random numbers from the event's own counter-based streams):

1. the beam muon (`beam_kernel`) and the vertex z in a target, chosen by electron areal density;
2. t sampled with density p(t) = 1 / (V t^2) on the sampling intervals, i.e. v = -1/t uniform on
   intervals of total length V (one uniform, by inverting the cumulative distribution), and a
   uniform azimuth;
3. weight = dsigma/dt(E_beam, t) / p(t) in ub, with dsigma/dt the exact LO formula times the
   running factor |1/(1 - Dalpha(t))|^2; so sum(weight)/N estimates the cross section (computed
   as t^2 dsigma/dt times 1/(t^2 p(t)), which is constant on a 1/t^2 segment);
4. optionally QED radiation (`fastsim.generator.radiation`), which returns the radiative final
   state and a weight factor;
5. the generation cuts, applied to the final state of each event (weight 0 outside);
6. momenta rotated from the frame of the incoming muon to the lab.

The running factor is interpolated by cubics on intervals uniform in ln(-t), fine enough that its
relative error is below 1e-10 (checked when the table is built), so any hadronic model, a table
included, costs the same in the kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from fastsim.numerics import float_bits
from fastsim.physics.cross_section import ElasticCuts, born_t2_dsigma_dt_kernel, t_intervals
from fastsim.physics.kinematics import ElasticKinematics, born_momenta_kernel, invariants_kernel
from fastsim.physics.vacuum_polarization import RunningCoupling
from fastsim.units import ELECTRON_MASS_GEV

_ME = ELECTRON_MASS_GEV
RUNNING_TABLE_RTOL = 1e-10


@dataclass(frozen=True)
class RunningTable:
    """The running factor as a piecewise cubic in x = -t (GeV^2) on intervals uniform in log x:
    2^k of them per octave, so that an interval's index is read from the bits of x
    (`fastsim.numerics.float_bits`), with no logarithm in the event loop."""

    shift: int  # 52 - k: bits(x) >> shift counts the intervals
    first_index: int  # bits(x_lo) >> shift, the table's first interval
    coefficients: np.ndarray  # (n_intervals, 5): x_i, then c0..c3 of c0 d^3 + c1 d^2 + c2 d + c3, d = x - x_i

    @classmethod
    def build(cls, running: RunningCoupling, t_lo_gev2: float, t_hi_gev2: float, bits_per_octave: int = 5):
        """Interpolation of running.factor on [t_lo, t_hi] (t_lo < t_hi < 0) at the four Chebyshev
        points of every interval, refined (one more bit per octave) until it is within
        RUNNING_TABLE_RTOL of the exact factor at points between the nodes."""
        x_lo = -t_hi_gev2
        x_hi = max(-t_lo_gev2, x_lo * (1.0 + 1e-6))
        nodes = 0.5 - 0.5 * np.cos(np.pi * (np.arange(4) + 0.5) / 4)  # in [0, 1]
        checks = np.array([0.0, 0.07, 0.29, 0.5, 0.71, 0.93, 1.0])
        vandermonde = np.vander(nodes, 4)
        while True:
            shift = 52 - bits_per_octave
            index = np.arange(_bits(x_lo) >> shift, (_bits(x_hi) >> shift) + 1)
            low = (index << shift).view(np.float64)
            width = ((index + 1) << shift).view(np.float64) - low
            values = running.factor(-(low[:, None] + width[:, None] * nodes))
            in_unit = np.linalg.solve(vandermonde, values.T).T  # coefficients of s = d / width
            coefficients = np.column_stack([low, in_unit / width[:, None] ** np.arange(3, -1, -1)])
            x = low[:, None] + width[:, None] * checks
            d = x - low[:, None]
            c = coefficients
            approximation = ((c[:, 1:2] * d + c[:, 2:3]) * d + c[:, 3:4]) * d + c[:, 4:5]
            error = np.max(np.abs(approximation / running.factor(-x) - 1.0))
            if error < RUNNING_TABLE_RTOL or bits_per_octave >= 14:
                break
            bits_per_octave += 1
        return cls(shift, int(index[0]), np.ascontiguousarray(coefficients))


def _bits(x: float) -> int:
    return int(np.float64(x).view(np.int64))


@njit(cache=True, nogil=True, inline="always")
def running_factor_kernel(t_gev2, shift, first_index, coefficients):
    """The running factor at t from a RunningTable's arrays (the end intervals' cubics beyond the
    table's range)."""
    x = -t_gev2
    i = (float_bits(x) >> shift) - first_index
    c = coefficients[min(max(i, 0), coefficients.shape[0] - 1)]
    d = x - c[0]
    return ((c[1] * d + c[2]) * d + c[3]) * d + c[4]


SHAPE_INVERSE_T2 = 0  # density ~ 1/t^2: v = -1/t uniform
SHAPE_INVERSE_T = 1  # density ~ 1/|t|: ln(-t) uniform


@dataclass(frozen=True)
class TSampling:
    """A density for t made of segments [lo, hi] (GeV^2), each with a shape ~1/t^2 or ~1/|t|
    and a probability; p(t) = share_k p_k(t) on segment k (segments do not overlap)."""

    shape: np.ndarray
    low_gev2: np.ndarray
    high_gev2: np.ndarray
    cumulative: np.ndarray  # cumulative probability of the segments, last = 1

    @classmethod
    def inverse_t2(cls, intervals):
        """~1/t^2 on all `intervals`, the shares making the density one continuous 1/(V t^2)."""
        lengths = np.array([-1.0 / hi + 1.0 / lo for lo, hi in intervals])
        return cls._make([SHAPE_INVERSE_T2] * len(intervals), intervals, lengths / lengths.sum())

    @classmethod
    def with_log_tail(cls, intervals, tail_high_gev2, tail_share):
        """~1/t^2 on `intervals` and, with probability `tail_share`, ~1/|t| on
        [max hi of intervals, tail_high_gev2]: the Born window of radiative events whose
        final-state electron passes a cut that their Born electron did not."""
        upper = max(hi for _, hi in intervals)
        main = cls.inverse_t2(intervals)
        shares = list(np.diff(np.concatenate([[0.0], main.cumulative])) * (1.0 - tail_share)) + [tail_share]
        return cls._make(list(main.shape) + [SHAPE_INVERSE_T], list(intervals) + [(upper, tail_high_gev2)], np.array(shares))

    @classmethod
    def _make(cls, shapes, intervals, shares):
        cumulative = np.cumsum(shares)
        cumulative[-1] = 1.0
        return cls(np.array(shapes, dtype=np.int64), np.array([lo for lo, _ in intervals]),
                   np.array([hi for _, hi in intervals]), cumulative)

    @property
    def t_range_gev2(self) -> tuple[float, float]:
        return float(self.low_gev2.min()), float(self.high_gev2.max())

    def arrays(self):
        """(shape, cumulative, start, jacobian) for `sample_t_kernel`: on segment k, with
        width = its length in v = -1/t (shape ~1/t^2) or in ln(-t) (shape ~1/|t|) and
        jacobian = width / share, that variable is start + (u - cumulative[k - 1]) jacobian,
        and 1/p(t) = t^2 jacobian or |t| jacobian."""
        shares = np.diff(np.concatenate([[0.0], self.cumulative]))
        inverse = self.shape == SHAPE_INVERSE_T2
        start = np.where(inverse, -1.0 / self.low_gev2, np.log(-self.high_gev2))
        width = np.where(inverse, -1.0 / self.high_gev2, np.log(-self.low_gev2)) - start
        return self.shape, self.cumulative, start, width / shares


@njit(cache=True, nogil=True, inline="always")
def sample_t_kernel(u, shape, cumulative, start, jacobian):
    """(t, 1 / (t^2 p(t))): t in GeV^2 from one uniform by inverting the cumulative distribution
    of a TSampling (its `arrays()`), and the inverse density over t^2, finite as t -> 0 (see
    `born_t2_dsigma_dt_kernel`)."""
    k = 0
    for j in range(cumulative.size - 1):  # a count, not a search: no branch on random u
        k += u > cumulative[j]
    variable = start[k] + (u - cumulative[max(k - 1, 0)] * (k > 0)) * jacobian[k]
    if shape[k] == SHAPE_INVERSE_T2:
        return -1.0 / variable, jacobian[k]
    t = -math.exp(variable)
    return t, jacobian[k] / -t


@njit(cache=True, nogil=True, inline="always")
def elastic_weight_kernel(beam_energy_gev, t_gev2, jacobian_over_t2, running_shift, running_first, running_table):
    """dsigma/dt / p(t) in ub for the sampled t (`sample_t_kernel`); 0 where t < t_min at this
    beam energy."""
    s, lam, _ = invariants_kernel(beam_energy_gev)
    if t_gev2 * s < -lam:
        return 0.0
    factor = running_factor_kernel(t_gev2, running_shift, running_first, running_table)
    return born_t2_dsigma_dt_kernel(beam_energy_gev, t_gev2) * factor * jacobian_over_t2


@njit(cache=True, nogil=True, inline="always")
def born_final_state_kernel(beam_energy_gev, t_gev2, cos_phi, sin_phi):
    """(muon px, py, pz, E, electron px, py, pz, E) in GeV in the frame where the incoming muon
    moves along +z: exact two-body kinematics, the electron at azimuth phi (given by its cosine
    and sine)."""
    pt, pl_e, energy_e, p = born_momenta_kernel(beam_energy_gev, t_gev2)
    return (-pt * cos_phi, -pt * sin_phi, p - pl_e, beam_energy_gev + _ME - energy_e, pt * cos_phi, pt * sin_phi,
            pl_e, energy_e)


def sampling_intervals(beam_energy_range_gev, cuts: ElasticCuts, exact: bool):
    """t intervals to sample for beam energies in the given range.

    `exact` (monochromatic beam, Born final state): the cuts' own t intervals. Otherwise the
    hull of the intervals at both ends of the energy range, and the cuts are applied event by
    event to the final state (t_min and the angle cuts move monotonically with the energy).
    """
    low, high = beam_energy_range_gev
    if exact:
        return t_intervals(ElasticKinematics(low), cuts)
    ends = t_intervals(ElasticKinematics(low), cuts) + t_intervals(ElasticKinematics(high), cuts)
    return [(min(lo for lo, _ in ends), max(hi for _, hi in ends))]


def cut_array(cuts: ElasticCuts) -> np.ndarray:
    """[ee_min, ee_max, theta_e_min, theta_e_max, theta_mu_min, theta_mu_max] with open sides at
    -inf/inf, for `passes_cuts_kernel`."""
    def value(x, default):
        return default if x is None else x

    return np.array([
        value(cuts.ee_min_gev, -np.inf), value(cuts.ee_max_gev, np.inf),
        value(cuts.theta_e_min_rad, -np.inf), value(cuts.theta_e_max_rad, np.inf),
        value(cuts.theta_mu_min_rad, -np.inf), value(cuts.theta_mu_max_rad, np.inf),
    ])


@njit(cache=True, nogil=True, inline="always")
def passes_cuts_kernel(cuts, energy_e_gev, theta_e_rad, theta_mu_rad):
    return (cuts[0] <= energy_e_gev <= cuts[1] and cuts[2] <= theta_e_rad <= cuts[3]
            and cuts[4] <= theta_mu_rad <= cuts[5])
