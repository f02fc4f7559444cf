"""Digitization of CMS 2S strip sensors: clusters, hit efficiency, noise hits and stubs.

What to use when:

- `digitize_hits(seed, first_event, n_events, <crossings>, <per-sensor parameters>)`: the batch
  entry point. It checks its input and turns sensor crossings into CSR hits (`StripHits`):
  cluster of fired strips, efficiency loss and noise clusters, reproducible per event.
- `SensorParameters.checked(...)` and `digitize_events(...)`: the same in two steps, for the
  transport, whose crossings are valid by construction: the sensors are checked once, and each
  chunk's crossings come with their per-event offsets instead of being checked and searched.
- `digitize_crossing(u_cm, tan_alpha, ...)`: the cluster of one crossing (numba kernel).
- `expected_resolution_cm(tan_alpha, ...)`: RMS of (measured - true) u for a crossing position
  uniform over a strip, integrated exactly from the same model; reconstruction uses it as hit error.
- `make_stub` / `make_stubs`: the 2S stub logic (two sensors of one module agree within a window).

Geometry. A sensor has `n_strips` strips of pitch p along the local coordinate u (perpendicular
to the strips, u = 0 at the sensor centre); strip k covers [(k - n/2) p, (k + 1 - n/2) p] and is
centred at (k - (n - 1)/2) p. A crossing outside |u| <= n p / 2 (the outer edge of the outermost
strips) gives no hit; the strip-length direction is checked with the optional `v_cm` and
`half_length_cm` (|v| <= half length), otherwise by the caller.

Charge model. The track crosses the sensor mid-plane at u with slope tan(alpha) in the
measurement plane (track slope and module tilt); it deposits charge uniformly along its path,
whose projection on u is [u - w/2, u + w/2] with w = thickness |tan(alpha)|. The deposit is
smeared by a Gaussian of width `sigma_diff_cm` (diffusion of the drifting carriers, one effective
width for the whole depth). The charge of strip k is the total charge, proportional to the path
length thickness sqrt(1 + tan^2 alpha), times the fraction of the smeared deposit inside the
strip. Binary readout (CBC chip): strip k fires if its charge exceeds `threshold_fraction` times
the charge of a perpendicular track (thickness), i.e. fraction_k sqrt(1 + tan^2 alpha) >
threshold_fraction. The smeared deposit is log-concave, so the strip charges are unimodal and the
fired strips are contiguous: the cluster is (first fired strip, number of fired strips). At
normal incidence a strip boundary closer than b = sigma_diff Phi^-1(1 - threshold_fraction)
gives a 2-strip cluster (band of width 2 b around every boundary), otherwise 1 strip. The
model is deterministic given the crossing (no charge fluctuations: STREAM_DIGITIZATION is not
drawn from). Clusters of different crossings (or noise) in one sensor are not merged.

Measured position: the centre of the fired strips, first + (size - 1)/2 in strip units.

Randomness (counter-based, `fastsim.rng`, so independent of batch split and thread count):

- efficiency: a real cluster of particle i in sensor s of event e survives if
  uniform(seed, e, STREAM_EFFICIENCY, s * 2**32 + i) < efficiency[s] (one crossing per
  particle and sensor is assumed);
- noise: sensor s of event e has N ~ Poisson(noise_mean[s]) one-strip clusters, N by inversion
  of the uniform draw s of STREAM_NOISE (four sensors share one Philox block), the strip of
  cluster j uniform over the sensor from draw (s + 1) * 2**32 + j.

Defaults (assumptions of this model, not measurements): threshold 0.25 of a perpendicular MIP
(CBC threshold ~5-6 ke- against ~24 ke- most probable in 320 um silicon), effective diffusion
width 7 um (carriers drifting through 320 um of fully depleted silicon: 5-10 um).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import float64, int64, njit, prange
from numpy.polynomial import chebyshev
from scipy import special

from fastsim.config import check_integer, check_range
from fastsim.rng import STREAM_EFFICIENCY, STREAM_NOISE, uniform, uniform4, validate_seed

DEFAULT_THRESHOLD_FRACTION = 0.25  # CBC threshold / charge of a perpendicular MIP (see module docstring)
DEFAULT_SIGMA_DIFF_CM = 7e-4  # effective diffusion width (see module docstring)
MAX_NOISE_MEAN = 100.0  # Poisson inversion from one uniform is exact and fast below this mean

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GAUSS_REACH = 8.5  # Phi(-8.5) < 1e-17: strips farther than this many sigma get no charge
_NARROW = 1e-7  # deposit width / sigma below which the deposit is a point (error O(1e-14))
_SENSOR_DRAWS = np.uint64(2**32)  # draw index of (sensor s, item i) is s * 2**32 + i
_MAX_PARTICLE = 2**32


@njit(cache=True, nogil=True)
def _gauss_cdf(z):
    return 0.5 * math.erfc(-z / _SQRT2)


def _mills_ratio_polynomials(interval, degree):
    """Polynomial coefficients (powers of x in [-1, 1]), one row per interval
    [k interval, (k + 1) interval] covering [0, _GAUSS_REACH], of the Mills ratio
    R(t) = Phi(-t) / phi(t) = sqrt(pi/2) erfcx(t / sqrt 2).

    Interpolation at the Chebyshev points of each interval. R is entire and smooth, so degree 9
    on intervals of 0.25 reproduces it to 2e-15 (relative; tests compare with mpmath)."""
    n_intervals = int(math.ceil(_GAUSS_REACH / interval))
    points = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    coefficients = np.zeros((n_intervals, degree + 1))
    for k in range(n_intervals):
        t = (k + 0.5) * interval + 0.5 * interval * points
        values = math.sqrt(0.5 * math.pi) * special.erfcx(t / _SQRT2)
        powers = chebyshev.cheb2poly(chebyshev.chebfit(points, values, degree))  # may drop trailing zeros
        coefficients[k, : powers.size] = powers
    return coefficients


_MILLS_INTERVAL = 0.25
_MILLS_COEFFICIENTS = _mills_ratio_polynomials(_MILLS_INTERVAL, 9)


@njit(cache=True, nogil=True, inline="always")
def _mills_ratio(t):
    """R(t) = Phi(-t) / phi(t) for 0 <= t <= _GAUSS_REACH: the interval's polynomial, by Estrin's
    scheme (independent pairs, then powers of x: a short dependency chain)."""
    k = min(int(t * (1.0 / _MILLS_INTERVAL)), _MILLS_COEFFICIENTS.shape[0] - 1)
    x = 2.0 * (t * (1.0 / _MILLS_INTERVAL) - k) - 1.0
    c = _MILLS_COEFFICIENTS[k]
    x2 = x * x
    x4 = x2 * x2
    low = (c[0] + c[1] * x) + (c[2] + c[3] * x) * x2
    middle = (c[4] + c[5] * x) + (c[6] + c[7] * x) * x2
    return low + (middle + (c[8] + c[9] * x) * x4) * x4


@njit(cache=True, nogil=True, inline="always")
def _gauss_cdf_integral(z):
    """G(z) = Int_-inf^z Phi(x) dx = z Phi(z) + phi(z) = phi(z) (1 + z R(-z)), R the Mills
    ratio (one exp and a polynomial instead of erfc and exp); used for z <= 0 only (no
    cancellation of large terms: G(z) = z + G(-z) moves positive arguments to negative ones)."""
    if z < -_GAUSS_REACH:  # G(-8.5) < 1e-18: nothing to compute where the deposit has no tail
        return 0.0
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z) * (1.0 + z * _mills_ratio(-z))


@njit(cache=True, nogil=True, inline="always")
def _deposit_cdf(x, centre, half_width, sigma):
    """Fraction of the deposit below x: uniform on [centre -+ half_width] convolved with N(0, sigma).
    Inlined with `_gauss_cdf_integral` into the strip loop: as calls they cost a third of the
    digitization (the same values either way)."""
    if sigma <= 0.0:
        if half_width <= 0.0:
            return 1.0 if x > centre else (0.5 if x == centre else 0.0)
        return min(max((x - centre + half_width) / (2.0 * half_width), 0.0), 1.0)
    if half_width < _NARROW * sigma:
        return _gauss_cdf((x - centre) / sigma)
    width = 2.0 * half_width / sigma
    z_hi = (x - centre + half_width) / sigma
    z_lo = (x - centre - half_width) / sigma
    # (G(z_hi) - G(z_lo)) / width with G(z) = z + G(-z) for z > 0
    if z_lo >= 0.0:
        return 1.0 + (_gauss_cdf_integral(-z_hi) - _gauss_cdf_integral(-z_lo)) / width
    if z_hi <= 0.0:
        return (_gauss_cdf_integral(z_hi) - _gauss_cdf_integral(z_lo)) / width
    return (z_hi + _gauss_cdf_integral(-z_hi) - _gauss_cdf_integral(z_lo)) / width


@njit(cache=True, nogil=True, inline="always")
def _reach_log_term(threshold_fraction):
    """2 ln(1 / (2 threshold_fraction)), the part of `_firing_reach` that is the same for every
    crossing."""
    return 2.0 * math.log(0.5 / threshold_fraction)


@njit(cache=True, nogil=True, inline="always")
def _firing_reach(reach_log_term, tan_alpha_squared):
    """z such that strips beyond centre + half_width + z sigma cannot fire, so they are not
    evaluated. A strip there holds less than Phi(-z) <= exp(-z^2/2) / 2 of the deposit, below
    the firing fraction threshold / sqrt(1 + tan^2) when z^2 >= 2 ln(1 / (2 threshold)) +
    ln(1 + tan^2); ln(1 + tan^2) <= tan^2 gives a z without a logarithm per crossing (larger by
    less than 1e-3 for |tan(alpha)| <= 0.25). 0 when z^2 <= 0, at most 8.5 (beyond which no
    charge is counted)."""
    z_squared = reach_log_term + tan_alpha_squared
    if z_squared <= 0.0:
        return 0.0
    return min(math.sqrt(z_squared), _GAUSS_REACH)


@njit(cache=True, nogil=True)
def digitize_crossing(u_cm, tan_alpha, pitch_cm, n_strips, thickness_cm, threshold_fraction, sigma_diff_cm):
    """Cluster of fired strips of one sensor crossing (binary readout).

    Parameters
    ----------
    u_cm : float
        Crossing point at the sensor mid-plane, local coordinate perpendicular to the strips (cm).
    tan_alpha : float
        Tangent of the incidence angle in the measurement plane (non-finite: no hit).
    pitch_cm, thickness_cm : float
        Strip pitch and sensor thickness (cm).
    n_strips : int
        Number of strips.
    threshold_fraction : float
        Threshold in units of the charge of a perpendicular track.
    sigma_diff_cm : float
        Gaussian charge-sharing (diffusion) width (cm).

    Returns
    -------
    first_strip, cluster_size : int, int
        The fired strips are first_strip .. first_strip + cluster_size - 1, all in [0, n_strips);
        (-1, 0) when the crossing is outside the active area (or u is NaN) or no strip fires.

    Notes
    -----
    See the module docstring for the charge model.
    """
    return _cluster(u_cm, tan_alpha, pitch_cm, n_strips, thickness_cm, threshold_fraction, sigma_diff_cm,
                    _reach_log_term(threshold_fraction))


def _ramp_correction_bounds(n):
    """Upper bounds of C(z) = G(-|z|) (`_gauss_cdf_integral`) for floor(|z|) = 0 .. n - 1, C
    decreasing in |z|: G(-k) with a relative margin. Entry k >= 9 bounds the tail that
    `_gauss_cdf_integral` cuts at 8.5 sigma."""
    k = -np.arange(n, dtype=np.float64)
    return (k * special.ndtr(k) + np.exp(-0.5 * k * k) * _INV_SQRT_2PI) * (1.0 + 1e-6)


_CORRECTION_BOUND = _ramp_correction_bounds(10)
_DECISION_MARGIN = 1e-9  # on a strip's charge fraction, whose rounding is ~1e-15 (plus `_cluster`'s z_error term)


@njit(cache=True, nogil=True, inline="always")
def _correction_bound(z):
    """An upper bound of G(-|z|) from `_CORRECTION_BOUND` (no exponential)."""
    return _CORRECTION_BOUND[min(int(abs(z)), _CORRECTION_BOUND.size - 1)]


# not inlined: called for a few strips only, it would double the compile time of its callers
@njit(float64(int64, float64, float64, float64, int64, float64), cache=True, nogil=True)
def _strip_fraction(k, u_cm, half_width, pitch_cm, n_strips, sigma_diff_cm):
    """Charge fraction of strip k, in full: `_deposit_cdf` at its two edges."""
    return (_deposit_cdf((k + 1 - 0.5 * n_strips) * pitch_cm, u_cm, half_width, sigma_diff_cm)
            - _deposit_cdf((k - 0.5 * n_strips) * pitch_cm, u_cm, half_width, sigma_diff_cm))


@njit(cache=True, nogil=True, inline="always")
def _cluster(u_cm, tan_alpha, pitch_cm, n_strips, thickness_cm, threshold_fraction, sigma_diff_cm, reach_log_term):
    """`digitize_crossing` with the threshold's logarithm given (once per batch).

    A strip's charge fraction is (H(z_hi') - H(z_lo') - H(z_hi) + H(z_lo)) / width over its two
    edges (`_deposit_cdf`), H(z) = max(z, 0) + C(z) with 0 <= C(z) = G(-|z|) <= G(-floor|z|).
    The ramps alone, with the tabulated bounds of the four C terms, decide most strips; only a
    fraction within those bounds of the threshold is computed in full. The decision is the full
    computation's either way: the bounds hold a margin far above the rounding of both."""
    half_active = 0.5 * n_strips * pitch_cm
    if not (abs(u_cm) <= half_active and abs(tan_alpha) < math.inf):  # also refuses NaN
        return -1, 0
    half_width = 0.5 * thickness_cm * abs(tan_alpha)
    # path length / thickness; sqrt(1 + tan^2) overflows beyond 1e154, where it equals abs(tan)
    secant = math.sqrt(1.0 + tan_alpha * tan_alpha) if abs(tan_alpha) < 1e100 else abs(tan_alpha)
    reach = half_width + sigma_diff_cm * _firing_reach(reach_log_term, tan_alpha * tan_alpha)
    # strips that can fire; clipped as floats first so that a huge reach cannot overflow int
    k_lo = int(math.floor(max((u_cm - reach) / pitch_cm + 0.5 * n_strips, 0.0)))
    k_hi = int(math.floor(min((u_cm + reach) / pitch_cm + 0.5 * n_strips, n_strips - 1.0)))
    bounded = sigma_diff_cm > 0.0 and half_width >= _NARROW * sigma_diff_cm
    if bounded:
        inv_sigma = 1.0 / sigma_diff_cm
        inv_width = 0.5 * sigma_diff_cm / half_width
        pitch_z = pitch_cm * inv_sigma
        z_hi = ((k_lo - 0.5 * n_strips) * pitch_cm - u_cm + half_width) * inv_sigma
        z_lo = z_hi - 2.0 * half_width * inv_sigma
        # rounding of the z's (positions up to the sensor's half width, stepped strip by strip),
        # with a wide safety factor; where it is not small the strips are computed in full
        z_error = 1e-14 * (half_active + (k_hi - k_lo + 2) * (reach + pitch_cm)) * inv_sigma
        bounded = z_error < 1e-9
        margin = _DECISION_MARGIN + 10.0 * z_error * inv_width * secant
    first = -1
    last = -1
    for k in range(k_lo, k_hi + 1):
        if bounded:
            z_hi_next, z_lo_next = z_hi + pitch_z, z_lo + pitch_z
            ramps = (max(z_hi_next, 0.0) - max(z_lo_next, 0.0) - max(z_hi, 0.0) + max(z_lo, 0.0)) * inv_width
            high = (ramps + (_correction_bound(z_hi_next) + _correction_bound(z_lo)) * inv_width) * secant
            low = (ramps - (_correction_bound(z_lo_next) + _correction_bound(z_hi)) * inv_width) * secant
            z_hi, z_lo = z_hi_next, z_lo_next
            if high < threshold_fraction - margin:
                continue
            fires = low > threshold_fraction + margin
        else:
            fires = False
        if not fires:
            fires = _strip_fraction(k, u_cm, half_width, pitch_cm, n_strips, sigma_diff_cm) * secant > threshold_fraction
        if fires:
            if first < 0:
                first = k
            last = k
    if first < 0:
        return -1, 0
    return first, last - first + 1


@njit(cache=True, nogil=True)
def cluster_u_cm(first_strip, cluster_size, pitch_cm, n_strips):
    """Measured u (cm) of a cluster: the centre of its strips, (first + (size - 1)/2 - (n - 1)/2) pitch."""
    return (first_strip + 0.5 * (cluster_size - 1) - 0.5 * (n_strips - 1)) * pitch_cm


@njit(cache=True, nogil=True)
def _residual_moments(tan_alpha, pitch_cm, thickness_cm, threshold_fraction, sigma_diff_cm, n_grid):
    """Integrals over u in one pitch of [detected, residual, residual^2] (exact up to bisection)."""
    # a sensor wide enough that no deposit reaches its edges; odd so that u = 0 is a strip centre
    reach = 0.5 * thickness_cm * abs(tan_alpha) + _GAUSS_REACH * sigma_diff_cm
    n = 2 * int(reach / pitch_cm) + 7
    lo = -0.5 * pitch_cm
    step = pitch_cm / n_grid
    moments = np.zeros(3)
    start = lo
    first, size = digitize_crossing(start, tan_alpha, pitch_cm, n, thickness_cm, threshold_fraction, sigma_diff_cm)
    for i in range(1, n_grid + 1):
        end = lo + i * step
        f_end, s_end = digitize_crossing(end, tan_alpha, pitch_cm, n, thickness_cm, threshold_fraction, sigma_diff_cm)
        if i < n_grid and f_end == first and s_end == size:
            continue
        if i < n_grid:  # the cluster changes inside (end - step, end]: bisect to the boundary
            a, b = end - step, end
            for _ in range(60):
                mid = 0.5 * (a + b)
                f_mid, s_mid = digitize_crossing(mid, tan_alpha, pitch_cm, n, thickness_cm, threshold_fraction,
                                                 sigma_diff_cm)
                if f_mid == first and s_mid == size:
                    a = mid
                else:
                    b = mid
            end = b
        if size > 0:  # residual m - u on [start, end] with m constant: integrate exactly
            m = cluster_u_cm(first, size, pitch_cm, n)
            moments[0] += end - start
            moments[1] += 0.5 * ((m - start) ** 2 - (m - end) ** 2)
            moments[2] += ((m - start) ** 3 - (m - end) ** 3) / 3.0
        start = end
        first, size = digitize_crossing(end, tan_alpha, pitch_cm, n, thickness_cm, threshold_fraction, sigma_diff_cm)
    return moments / pitch_cm


def expected_resolution_cm(tan_alpha, pitch_cm=0.009, thickness_cm=0.032, threshold_fraction=DEFAULT_THRESHOLD_FRACTION,
                           sigma_diff_cm=DEFAULT_SIGMA_DIFF_CM, n_grid=2000):
    """RMS of (measured - true) u for a crossing position uniform over a strip (cm).

    Parameters
    ----------
    tan_alpha : float
        Tangent of the incidence angle in the measurement plane.
    pitch_cm, thickness_cm, threshold_fraction, sigma_diff_cm : float
        As in `digitize_crossing`; defaults: 2S sensor (90 um pitch, 320 um thick).
    n_grid : int
        Scan points per pitch; every change of cluster between two points is located by bisection
        and the residual integrated exactly on each piece, so the result is exact as long as no
        cluster lasts less than pitch / n_grid.

    Returns
    -------
    float
        sqrt(<(m - u)^2>) over the crossings that give a cluster (m: cluster centre); it is
        pitch / sqrt(12) when every cluster has one strip, smaller with charge sharing.
    """
    _check_sensor_scalars(pitch_cm, thickness_cm, threshold_fraction, sigma_diff_cm)
    check_range("tan_alpha", tan_alpha)
    if isinstance(n_grid, (bool, np.bool_)) or not isinstance(n_grid, (int, np.integer)) or n_grid < 1:
        raise ValueError(f"n_grid = {n_grid!r} must be an integer >= 1")
    detected, _, second = _residual_moments(float(tan_alpha), float(pitch_cm), float(thickness_cm),
                                            float(threshold_fraction), float(sigma_diff_cm), int(n_grid))
    if detected <= 0.0:
        raise ValueError(f"tan_alpha = {tan_alpha!r}: no strip reaches threshold_fraction = {threshold_fraction!r}")
    return math.sqrt(second / detected)


# ---------------------------------------------------------------------------------------------
# Stubs


@njit(cache=True, nogil=True)
def make_stub(position0_strips, position1_strips, offset_strips, window_strips):
    """Stub of one cluster pair of a 2S module.

    Parameters
    ----------
    position0_strips, position1_strips : float
        Cluster centres (strip units, first + (size - 1)/2) in the seed sensor (0) and the
        correlation sensor (1); the two sensors' strips are assumed aligned.
    offset_strips : float
        Expected bend (e.g. sensor spacing * tan(alpha) / pitch for the nominal track direction).
    window_strips : float
        Half-width of the acceptance window.

    Returns
    -------
    is_stub, position_strips, bend_strips : bool, float, float
        is_stub if |bend - offset| <= window; the position is the seed sensor's (CBC convention)
        and the bend is position1 - position0.
    """
    bend = position1_strips - position0_strips
    return abs(bend - offset_strips) <= window_strips, position0_strips, bend


@njit(cache=True, nogil=True)
def make_stubs(positions0_strips, positions1_strips, offset_strips, window_strips):
    """Stubs of one module: each seed cluster with the closest correlation cluster in the window.

    Parameters
    ----------
    positions0_strips, positions1_strips : 1-D float arrays
        Cluster centres (strips) in the seed and the correlation sensor.
    offset_strips, window_strips : float
        As in `make_stub`.

    Returns
    -------
    index0, index1, position_strips, bend_strips : arrays of equal length
        One entry per seed cluster that has a correlation cluster within the window (the one
        closest to the expected offset; a correlation cluster may serve several seeds).
    """
    n0 = positions0_strips.shape[0]
    index0 = np.empty(n0, np.int64)
    index1 = np.empty(n0, np.int64)
    position = np.empty(n0)
    bend = np.empty(n0)
    n_stubs = 0
    for i in range(n0):
        best = -1
        best_distance = np.inf
        for j in range(positions1_strips.shape[0]):
            ok, _, b = make_stub(positions0_strips[i], positions1_strips[j], offset_strips, window_strips)
            if ok and abs(b - offset_strips) < best_distance:
                best, best_distance = j, abs(b - offset_strips)
        if best >= 0:
            index0[n_stubs], index1[n_stubs] = i, best
            position[n_stubs] = positions0_strips[i]
            bend[n_stubs] = positions1_strips[best] - positions0_strips[i]
            n_stubs += 1
    return index0[:n_stubs], index1[:n_stubs], position[:n_stubs], bend[:n_stubs]


# ---------------------------------------------------------------------------------------------
# Batch digitization: CSR hits per event


@dataclass(frozen=True, eq=False)
class StripHits:
    """Digitized hits of events first_event .. first_event + n_events - 1, in CSR form.

    Hits of event first_event + i are rows offsets[i] .. offsets[i + 1] - 1 of the flat arrays:
    the surviving real clusters in the order of the input crossings, then the noise clusters by
    increasing sensor id.

    Attributes
    ----------
    first_event : int
    offsets : int64 array (n_events + 1)
    sensor_id : int32 array
    u_cm : float64 array
        Measured local coordinate (cluster centre), cm.
    cluster_size, first_strip : int32 arrays
    is_noise : bool array
    particle_index : int64 array
        Index of the particle that made the hit (the input's particle_index), -1 for noise.
    """

    first_event: int
    offsets: np.ndarray
    sensor_id: np.ndarray
    u_cm: np.ndarray
    cluster_size: np.ndarray
    first_strip: np.ndarray
    is_noise: np.ndarray
    particle_index: np.ndarray

    FLAT = ("sensor_id", "u_cm", "cluster_size", "first_strip", "is_noise", "particle_index")

    @property
    def n_events(self) -> int:
        return self.offsets.size - 1

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @staticmethod
    def concatenate(parts) -> "StripHits":
        """Hits of consecutive event ranges, joined into one."""
        parts = list(parts)
        if not parts:
            raise ValueError("StripHits.concatenate needs at least one part")
        for before, after in zip(parts, parts[1:]):
            if after.first_event != before.first_event + before.n_events:
                raise ValueError(f"StripHits.concatenate: event ranges not consecutive: "
                                 f"{before.first_event}+{before.n_events} then {after.first_event}")
        shifts = np.cumsum([0] + [len(p) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
        flat = {name: np.concatenate([getattr(p, name) for p in parts]) for name in StripHits.FLAT}
        return StripHits(parts[0].first_event, offsets, **flat)


@njit(cache=True, nogil=True)
def _poisson_inverse(x, mean):
    """Poisson(mean) variate by inversion of the uniform x (sequential search, mean <= 100)."""
    probability = math.exp(-mean)
    cumulative = probability
    k = 0
    limit = int(mean + 40.0 * math.sqrt(mean) + 40.0)  # guards against rounding in the tail
    while x > cumulative and k < limit:
        k += 1
        probability *= mean / k
        cumulative += probability
    return k


@njit(cache=True, nogil=True)
def _noise_count(x, sensor, noise_mean):
    """Noise cluster count of `sensor` from its uniform x (0 for a sensor beyond the last)."""
    if sensor >= noise_mean.shape[0] or noise_mean[sensor] <= 0.0:
        return 0
    return _poisson_inverse(x, noise_mean[sensor])


@njit(cache=True, nogil=True)
def _noise_counts(seed, event, block, noise_mean):
    """Noise cluster counts of sensors 4 block .. 4 block + 3, from the uniform draws
    4 block .. 4 block + 3 of STREAM_NOISE (one Philox block, skipped if none of them is noisy)."""
    first = 4 * block
    noisy = False
    for s in range(first, min(first + 4, noise_mean.shape[0])):
        noisy = noisy or noise_mean[s] > 0.0
    if not noisy:
        return 0, 0, 0, 0
    x0, x1, x2, x3 = uniform4(seed, event, STREAM_NOISE, block)
    return (_noise_count(x0, first, noise_mean), _noise_count(x1, first + 1, noise_mean),
            _noise_count(x2, first + 2, noise_mean), _noise_count(x3, first + 3, noise_mean))


@njit(parallel=True, cache=True, nogil=True)
def _digitize_pass(seed, first_event, crossing_offsets, sensor, u, v, tan_alpha, particle, pitch, n_strips,
                   thickness, half_length, efficiency, noise_mean, threshold, sigma, first_out, size_out, counts):
    """Pass 1: cluster of every crossing (size 0 if lost) and number of hits of every event."""
    reach_log_term = _reach_log_term(threshold)
    for i in prange(crossing_offsets.shape[0] - 1):
        event = np.uint64(first_event + i)
        n_hits = 0
        for c in range(crossing_offsets[i], crossing_offsets[i + 1]):
            s = sensor[c]
            first, size = -1, 0
            if abs(v[c]) <= half_length[s]:
                first, size = _cluster(u[c], tan_alpha[c], pitch[s], n_strips[s], thickness[s], threshold, sigma,
                                       reach_log_term)
            if size > 0 and efficiency[s] < 1.0:
                draw = np.uint64(s) * _SENSOR_DRAWS + np.uint64(particle[c])
                if not uniform(seed, event, STREAM_EFFICIENCY, draw) < efficiency[s]:
                    first, size = -1, 0
            first_out[c], size_out[c] = first, size
            if size > 0:
                n_hits += 1
        for b in range((noise_mean.shape[0] + 3) // 4):
            k0, k1, k2, k3 = _noise_counts(seed, event, b, noise_mean)
            n_hits += k0 + k1 + k2 + k3
        counts[i] = n_hits


@njit(parallel=True, cache=True, nogil=True)
def _fill_pass(seed, first_event, crossing_offsets, sensor, particle, pitch, n_strips, noise_mean, first_in, size_in,
               offsets, sensor_out, u_out, size_out, first_out, noise_out, particle_out):
    """Pass 2: write the hits of every event at its CSR offset."""
    for i in prange(crossing_offsets.shape[0] - 1):
        event = np.uint64(first_event + i)
        h = offsets[i]
        for c in range(crossing_offsets[i], crossing_offsets[i + 1]):
            if size_in[c] > 0:
                s = sensor[c]
                sensor_out[h], first_out[h], size_out[h] = s, first_in[c], size_in[c]
                u_out[h] = cluster_u_cm(first_in[c], size_in[c], pitch[s], n_strips[s])
                noise_out[h], particle_out[h] = False, particle[c]
                h += 1
        for b in range((noise_mean.shape[0] + 3) // 4):
            block_counts = _noise_counts(seed, event, b, noise_mean)
            for w in range(4):
                s = 4 * b + w
                base = np.uint64(s + 1) * _SENSOR_DRAWS
                for j in range(block_counts[w]):
                    x = uniform(seed, event, STREAM_NOISE, base + np.uint64(j))
                    strip = min(int(x * n_strips[s]), n_strips[s] - 1)
                    sensor_out[h], first_out[h], size_out[h] = s, strip, 1
                    u_out[h] = cluster_u_cm(strip, 1, pitch[s], n_strips[s])
                    noise_out[h], particle_out[h] = True, -1
                    h += 1


def _check_sensor_scalars(pitch_cm, thickness_cm, threshold_fraction, sigma_diff_cm):
    check_range("pitch_cm", pitch_cm, 0.0, low_open=True)
    check_range("thickness_cm", thickness_cm, 0.0, low_open=True)
    check_range("threshold_fraction", threshold_fraction, 0.0, 1.0, low_open=True, high_open=True)
    check_range("sigma_diff_cm", sigma_diff_cm, 0.0)


def _per_sensor(name, values, n_sensors, dtype, low, high, low_open=False, high_open=False):
    """`values` as a 1-D array of n_sensors finite entries in the range; ValueError naming the first bad one."""
    array = np.asarray(values)
    if array.ndim != 1 or (n_sensors is not None and array.size != n_sensors):
        raise ValueError(f"{name} must be a 1-D array with one entry per sensor ({n_sensors}), got shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    for i, value in enumerate(array.tolist()):
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            left, right = ("(" if low_open else "["), (")" if high_open else "]")
            raise ValueError(f"{name}[{i}] = {value!r} is outside the allowed range {left}{low!r}, {high!r}{right}")
    if np.issubdtype(dtype, np.integer) and np.any(array != np.round(array)):
        raise ValueError(f"{name} must hold integers, got {array!r}")
    return np.ascontiguousarray(array, dtype=dtype)


def _per_crossing(name, values, n_crossings, dtype):
    array = np.asarray(values)
    if array.shape != (n_crossings,):
        raise ValueError(f"{name} must be a 1-D array of length {n_crossings} (one entry per crossing), "
                         f"got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


@dataclass(frozen=True, eq=False)
class SensorParameters:
    """Per-sensor arrays of the digitization (index = sensor id), checked: pitch and thickness
    (cm, > 0), strips per sensor (>= 1), hit efficiency in [0, 1], mean noise clusters per event in
    [0, MAX_NOISE_MEAN], half length of the strips (cm, > 0; inf: not checked here)."""

    pitch_cm: np.ndarray
    n_strips: np.ndarray
    thickness_cm: np.ndarray
    efficiency: np.ndarray
    noise_mean: np.ndarray
    half_length_cm: np.ndarray

    @classmethod
    def checked(cls, *, pitch_cm, n_strips, thickness_cm, efficiency, noise_mean, half_length_cm=None):
        """The arrays as contiguous numbers; ValueError naming the first bad entry."""
        pitch = _per_sensor("pitch_cm", pitch_cm, None, np.float64, 0.0, math.inf, low_open=True)
        n_sensors = pitch.size
        half_length = (np.full(n_sensors, np.inf) if half_length_cm is None else
                       _per_sensor("half_length_cm", half_length_cm, n_sensors, np.float64, 0.0, math.inf, low_open=True))
        return cls(pitch, _per_sensor("n_strips", n_strips, n_sensors, np.int64, 1, 2**31 - 1),
                   _per_sensor("thickness_cm", thickness_cm, n_sensors, np.float64, 0.0, math.inf, low_open=True),
                   _per_sensor("efficiency", efficiency, n_sensors, np.float64, 0.0, 1.0),
                   _per_sensor("noise_mean", noise_mean, n_sensors, np.float64, 0.0, MAX_NOISE_MEAN), half_length)


def digitize_events(seed, first_event, crossing_offsets, sensor_id, u_cm, v_cm, tan_alpha, particle_index,
                    sensors: SensorParameters, threshold_fraction, sigma_diff_cm) -> StripHits:
    """`digitize_hits` without its checks: the crossings of event first_event + i are rows
    crossing_offsets[i] .. crossing_offsets[i + 1] - 1 of the contiguous crossing arrays
    (finite, sensor ids and particle indices in range), `seed` a valid uint64, the charge model
    checked by the caller (`fastsim.detector.transport.SimulationSettings`)."""
    n_events = crossing_offsets.size - 1
    n_crossings = u_cm.size
    cluster_first = np.empty(n_crossings, np.int64)
    cluster_size = np.empty(n_crossings, np.int64)
    counts = np.empty(n_events, np.int64)
    threshold, sigma = float(threshold_fraction), float(sigma_diff_cm)
    _digitize_pass(seed, first_event, crossing_offsets, sensor_id, u_cm, v_cm, tan_alpha, particle_index,
                   sensors.pitch_cm, sensors.n_strips, sensors.thickness_cm, sensors.half_length_cm, sensors.efficiency,
                   sensors.noise_mean, threshold, sigma, cluster_first, cluster_size, counts)
    offsets = np.zeros(n_events + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    n_hits = int(offsets[-1])
    out = StripHits(first_event, offsets, np.empty(n_hits, np.int32), np.empty(n_hits), np.empty(n_hits, np.int32),
                    np.empty(n_hits, np.int32), np.empty(n_hits, np.bool_), np.empty(n_hits, np.int64))
    _fill_pass(seed, first_event, crossing_offsets, sensor_id, particle_index, sensors.pitch_cm, sensors.n_strips,
               sensors.noise_mean, cluster_first, cluster_size, offsets, out.sensor_id, out.u_cm, out.cluster_size,
               out.first_strip, out.is_noise, out.particle_index)
    return out


def digitize_hits(seed, first_event, n_events, event_index, sensor_id, u_cm, tan_alpha, particle_index, *,
                  pitch_cm, n_strips, thickness_cm, efficiency, noise_mean,
                  threshold_fraction=DEFAULT_THRESHOLD_FRACTION, sigma_diff_cm=DEFAULT_SIGMA_DIFF_CM,
                  v_cm=None, half_length_cm=None) -> StripHits:
    """Digitize the sensor crossings of events first_event .. first_event + n_events - 1.

    Parameters
    ----------
    seed : int
        0 <= seed < 2**64.
    first_event, n_events : int
        The event range; hits depend only on the global event index, not on the range.
    event_index : int array (n_crossings)
        Global event index of every crossing, non-decreasing, inside the range.
    sensor_id : int array (n_crossings)
        Sensor crossed, an index into the per-sensor arrays.
    u_cm, tan_alpha : float arrays (n_crossings)
        Local crossing coordinate (cm) and incidence slope in the measurement plane, finite;
        crossings outside the active area give no hit.
    particle_index : int array (n_crossings)
        Truth link written to the hits; 0 <= particle_index < 2**32, unique per (event, sensor).
    pitch_cm, thickness_cm : float arrays (n_sensors)
        Strip pitch and sensor thickness (cm), > 0.
    n_strips : int array (n_sensors)
        Strips per sensor, >= 1.
    efficiency : float array (n_sensors)
        Probability to keep a real cluster, in [0, 1].
    noise_mean : float array (n_sensors)
        Mean number of noise clusters per sensor and event, in [0, 100].
    threshold_fraction, sigma_diff_cm : float
        Charge model (see the module docstring).
    v_cm : float array (n_crossings), optional
        Coordinate along the strips; with `half_length_cm` (per sensor), crossings with
        |v| > half length give no hit. Without it the caller has already checked this direction.

    Returns
    -------
    StripHits

    Raises
    ------
    ValueError
        Naming the argument and the value, for any input outside its allowed range.
    """
    seed = np.uint64(validate_seed(seed))
    first_event, n_events = check_integer("first_event", first_event), check_integer("n_events", n_events)
    if first_event + n_events > 2**63:
        raise ValueError(f"first_event + n_events must be <= 2**63, got {first_event} + {n_events}")
    _check_sensor_scalars(1.0, 1.0, threshold_fraction, sigma_diff_cm)
    if (v_cm is None) != (half_length_cm is None):
        raise ValueError(f"v_cm and half_length_cm go together; got v_cm {'None' if v_cm is None else 'given'}, "
                         f"half_length_cm {'None' if half_length_cm is None else 'given'}")
    sensors = SensorParameters.checked(pitch_cm=pitch_cm, n_strips=n_strips, thickness_cm=thickness_cm,
                                       efficiency=efficiency, noise_mean=noise_mean, half_length_cm=half_length_cm)
    n_sensors = sensors.pitch_cm.size

    events = np.asarray(event_index)
    n_crossings = events.size
    events = _per_crossing("event_index", events, n_crossings, np.int64)
    sensor_ids = _per_crossing("sensor_id", sensor_id, n_crossings, np.int64)
    u = _per_crossing("u_cm", u_cm, n_crossings, np.float64)
    slope = _per_crossing("tan_alpha", tan_alpha, n_crossings, np.float64)
    particles = _per_crossing("particle_index", particle_index, n_crossings, np.int64)
    v = np.zeros(n_crossings) if v_cm is None else _per_crossing("v_cm", v_cm, n_crossings, np.float64)
    for name, array in (("u_cm", u), ("tan_alpha", slope), ("v_cm", v)):
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} must be finite "
                             "(leave out crossings that did not happen)")
    if n_crossings:
        if np.any(np.diff(events) < 0):
            raise ValueError("event_index must be non-decreasing (crossings sorted by event)")
        if events[0] < first_event or events[-1] >= first_event + n_events:
            raise ValueError(f"event_index must lie in [{first_event}, {first_event + n_events}), "
                             f"got {events[0]} .. {events[-1]}")
        for name, array, high in (("sensor_id", sensor_ids, n_sensors), ("particle_index", particles, _MAX_PARTICLE)):
            bad = np.flatnonzero((array < 0) | (array >= high))
            if bad.size:
                raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} is outside the allowed range [0, {high})")

    crossing_offsets = np.searchsorted(events, first_event + np.arange(n_events + 1, dtype=np.int64)).astype(np.int64)
    return digitize_events(seed, first_event, crossing_offsets, sensor_ids, u, v, slope, particles, sensors,
                           threshold_fraction, sigma_diff_cm)
