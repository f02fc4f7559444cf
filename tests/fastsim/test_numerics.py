"""Tests of fastsim.numerics against mpmath (correctly rounded) and libm, with special cases."""

import math

import mpmath
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from fastsim.numerics import polar_angle, prefetch, sincos_turn, tan_small

ULP_1 = np.spacing(1.0)


@njit(cache=True)
def _sincos_array(u):
    cos, sin = np.empty(u.size), np.empty(u.size)
    for i in range(u.size):
        cos[i], sin[i] = sincos_turn(u[i])
    return cos, sin


@njit(cache=True)
def _polar_array(transverse, longitudinal):
    out = np.empty(transverse.size)
    for i in range(transverse.size):
        out[i] = polar_angle(transverse[i], longitudinal[i])
    return out


@njit(cache=True)
def _tan_array(x):
    out = np.empty(x.size)
    for i in range(x.size):
        out[i] = tan_small(x[i])
    return out


def _exact_sincos(u):
    mpmath.mp.prec = 120
    turn = 2 * mpmath.pi * mpmath.mpf(float(u))
    return float(mpmath.cos(turn)), float(mpmath.sin(turn))


def _exact_atan2(y, x):
    mpmath.mp.prec = 120
    return float(mpmath.atan2(mpmath.mpf(float(y)), mpmath.mpf(float(x))))


def test_sincos_turn_matches_mpmath_to_an_ulp_of_one():
    u = np.random.default_rng(1).random(2000)
    cos, sin = _sincos_array(u)
    exact = np.array([_exact_sincos(x) for x in u])
    # absolute error: the reduction is exact, the polynomials are accurate to ~1 ulp of 1
    assert np.max(np.abs(cos - exact[:, 0])) <= 2 * ULP_1
    assert np.max(np.abs(sin - exact[:, 1])) <= 2 * ULP_1


def test_sincos_turn_agrees_with_numpy_over_a_million_arguments():
    u = np.random.default_rng(2).random(1_000_000)
    cos, sin = _sincos_array(u)
    assert np.max(np.abs(cos - np.cos(2 * np.pi * u))) < 4 * ULP_1
    assert np.max(np.abs(sin - np.sin(2 * np.pi * u))) < 4 * ULP_1
    assert np.max(np.abs(cos * cos + sin * sin - 1.0)) < 4 * ULP_1


@pytest.mark.parametrize("quarter", [0, 1, 2, 3, 4])
def test_sincos_turn_is_exact_at_quarter_turns(quarter):
    cos, sin = sincos_turn(0.25 * quarter)
    assert (cos, sin) == (round(math.cos(0.5 * math.pi * quarter)), round(math.sin(0.5 * math.pi * quarter)))


@pytest.mark.parametrize("u", [1e-300, 1e-12, 0.125, 0.125 + 1e-17, 0.375, 0.625, 0.875, 1.0 - 1e-16])
def test_sincos_turn_near_octant_boundaries_and_tiny_arguments(u):
    cos, sin = sincos_turn(u)
    exact_cos, exact_sin = _exact_sincos(u)
    assert abs(cos - exact_cos) <= 2 * ULP_1
    assert abs(sin - exact_sin) <= 2 * ULP_1


def test_polar_angle_is_within_one_ulp_of_mpmath():
    generator = np.random.default_rng(3)
    # the generator's range (mrad angles) and every reduction interval of the arctangent
    transverse = np.concatenate([generator.random(1000) * 1e-2, generator.random(1000) * 10.0, [0.4375, 0.6875, 1.1875, 2.4375]])
    longitudinal = np.concatenate([generator.random(1000) + 0.5, generator.normal(size=1000) * 3.0, [1.0, 1.0, 1.0, 1.0]])
    angles = _polar_array(transverse, longitudinal)
    exact = np.array([_exact_atan2(y, x) for y, x in zip(transverse, longitudinal)])
    assert np.all(np.abs(angles - exact) <= np.spacing(exact))


def test_polar_angle_agrees_with_numpy_over_a_million_arguments():
    generator = np.random.default_rng(4)
    transverse = np.abs(generator.normal(size=1_000_000)) * np.exp(generator.uniform(-15, 3, 1_000_000))
    longitudinal = generator.normal(size=1_000_000) * np.exp(generator.uniform(-5, 5, 1_000_000))
    angles = _polar_array(transverse, longitudinal)
    expected = np.arctan2(transverse, longitudinal)
    assert np.all(np.abs(angles - expected) <= 2 * np.spacing(expected))


@pytest.mark.parametrize(
    ("transverse", "longitudinal", "expected"),
    [
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 0.0),
        (1.0, 0.0, 0.5 * math.pi),
        (0.0, -1.0, math.pi),
        (1.0, 1.0, 0.25 * math.pi),
        (1.0, -1.0, 0.75 * math.pi),
        (math.inf, 1.0, 0.5 * math.pi),
        (1.0, math.inf, 0.0),
        (5e-324, 1.0, 5e-324),
    ],
)
def test_polar_angle_special_values(transverse, longitudinal, expected):
    assert polar_angle(transverse, longitudinal) == pytest.approx(expected, rel=1e-16, abs=0.0)


def test_polar_angle_propagates_nan():
    assert math.isnan(polar_angle(math.nan, 1.0))
    assert math.isnan(polar_angle(1.0, math.nan))
    assert math.isnan(polar_angle(math.nan, 0.0))


@pytest.mark.parametrize("x", [0.0, -0.0, 1e-300, 1e-9, -3e-4, 0.01, -0.0624999, 0.0625, 0.3, -1.2])
def test_tan_small_within_an_ulp_of_mpmath(x):
    mpmath.mp.prec = 120
    exact = float(mpmath.tan(mpmath.mpf(x)))
    assert abs(tan_small(x) - exact) <= np.spacing(abs(exact)) if exact else tan_small(x) == 0.0


def test_tan_small_over_the_series_range():
    x = np.random.default_rng(5).uniform(-0.0625, 0.0625, 1_000_000)
    assert np.all(np.abs(_tan_array(x) - np.tan(x)) <= np.spacing(np.abs(np.tan(x))))


@njit(cache=True)
def _gather_with_prefetch(table, rows, vectors):
    """Sum of table[rows], vectors[rows, 0] and vectors[rows, 3], every row prefetched first
    (int64 and int32 indices)."""
    total = 0.0
    for i in range(rows.size):
        prefetch(table, rows[i])
        prefetch(vectors, np.int32(rows[i]))
    for i in range(rows.size):
        total += table[rows[i]] + vectors[rows[i], 0] + vectors[rows[i], 3]
    return total


def test_prefetch_leaves_every_value_alone():
    generator = np.random.default_rng(3)
    table, vectors = generator.normal(size=5000), generator.normal(size=(5000, 4)).astype(np.float32)
    rows = generator.integers(0, 5000, 20_000)
    expected = table[rows].sum() + vectors[rows, 0].astype(np.float64).sum() + vectors[rows, 3].astype(np.float64).sum()
    assert _gather_with_prefetch(table, rows, vectors) == pytest.approx(expected, rel=1e-12)


def test_prefetch_takes_one_or_two_dimensional_arrays_only():
    @njit
    def prefetch_cube(cube):
        prefetch(cube, 0)

    with pytest.raises(TypingError):
        prefetch_cube(np.zeros((2, 2, 2)))
