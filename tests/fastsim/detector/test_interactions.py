"""Tests of the material-interaction kernels: Highland, Gaussian and mixture scattering,
deflection, Bethe-Heitler bremsstrahlung.

Statistical tests use fixed seeds and 5-sigma tolerances from the expected statistical error.
"""

import math

import numpy as np
import pytest
from numba import njit
from scipy import integrate, stats
from scipy.spatial.transform import Rotation

from fastsim.detector import interactions as mi
from fastsim.materials import material
from fastsim.rng import STREAM_BREMSSTRAHLUNG, multiple_scattering_stream, normal4, uniform
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV

N_SIGMA = 5.0
SEED = np.uint64(20261125)


def _beta(p, m):
    return p / math.sqrt(p * p + m * m)


# ---------------------------------------------------------------- Highland


def _highland_by_hand(p_gev, mass_gev, x_cm, x0_cm):
    """PDG eq. 34.16 written out for a unit charge."""
    beta = p_gev / math.sqrt(p_gev**2 + mass_gev**2)
    t = x_cm / x0_cm
    return 0.0136 / (beta * p_gev) * math.sqrt(t) * (1 + 0.038 * math.log(t / beta**2))


@pytest.mark.parametrize(
    "p_gev, mass_gev, x_cm, x0_cm, rounded",
    [
        # X0 from REFERENCE.md; the rounded values were computed by hand (calculator).
        (160.0, MUON_MASS_GEV, 1.5, 35.28, 15.42e-6),  # 1.5 cm Be
        (160.0, MUON_MASS_GEV, 3.0, 23.3, 28.1e-6),  # 3 cm graphite at 1.83 g/cm^3
        (160.0, MUON_MASS_GEV, 0.064, 9.37, 5.69e-6),  # two 320 um Si sensors
        (1.0, ELECTRON_MASS_GEV, 0.064, 9.37, 0.911e-3),  # 1 GeV electron, Si
        (10.0, ELECTRON_MASS_GEV, 1.5, 35.28, 0.2468e-3),  # 10 GeV electron, Be
    ],
)
def test_highland_against_hand_computation(p_gev, mass_gev, x_cm, x0_cm, rounded):
    beta = _beta(p_gev, mass_gev)
    theta0 = mi.highland_theta0_rad(p_gev, beta, 1.0, x_cm / x0_cm)
    assert theta0 == pytest.approx(_highland_by_hand(p_gev, mass_gev, x_cm, x0_cm), rel=1e-13)
    assert theta0 == pytest.approx(rounded, rel=2e-3)
    # charge sign is irrelevant; z = 2 enters as z sqrt(t) and inside the logarithm
    assert mi.highland_theta0_rad(p_gev, beta, -1.0, x_cm / x0_cm) == theta0
    t = x_cm / x0_cm
    expected_z2 = 0.0136 / (beta * p_gev) * 2 * math.sqrt(t) * (1 + 0.038 * math.log(4 * t / beta**2))
    assert mi.highland_theta0_rad(p_gev, beta, 2.0, t) == pytest.approx(expected_z2, rel=1e-13)


def test_highland_no_material():
    assert mi.highland_theta0_rad(160.0, 1.0, 1.0, 0.0) == 0.0


def test_highland_materials_module_consistent():
    """The materials module gives the REFERENCE.md radiation lengths."""
    for name, x0 in [("Be", 35.28), ("graphite", 23.3), ("Si", 9.37)]:
        assert material(name).radiation_length_cm == pytest.approx(x0, rel=2e-3)


@pytest.mark.parametrize("mass_gev", [ELECTRON_MASS_GEV, MUON_MASS_GEV])
@pytest.mark.parametrize("p_gev", [0.02, 0.5, 1.0, 3.3, 10.0, 160.0])
def test_highland_share_is_the_layers_part_of_the_scatterers_width(p_gev, mass_gev):
    """theta0_H(X) sqrt(x / X) in the transport's form, on both sides of its series switch."""
    energy = math.hypot(p_gev, mass_gev)
    for x, total in [(0.0034, 0.0034), (0.0034, 0.12), (0.086, 0.13), (0.5, 2.0)]:
        expected = mi.highland_theta0_rad(p_gev, p_gev / energy, 1.0, total) * math.sqrt(x / total)
        share = mi.highland_share_theta0_rad(p_gev, energy, mass_gev, x, math.log(total))
        assert share == pytest.approx(expected, rel=2e-15)


def test_highland_total_thickness_is_not_quadrature_sum():
    """Applied once to the total: 10 thin layers added in quadrature are several % low."""
    p, beta, t = 160.0, _beta(160.0, MUON_MASS_GEV), 0.0068
    total = mi.highland_theta0_rad(p, beta, 1.0, 10 * t)
    quadrature = math.sqrt(10) * mi.highland_theta0_rad(p, beta, 1.0, t)
    log_ratio = (1 + 0.038 * math.log(t)) / (1 + 0.038 * math.log(10 * t))
    assert quadrature / total == pytest.approx(log_ratio, rel=1e-3)
    assert quadrature < 0.93 * total


# ---------------------------------------------------------------- sampling helpers


@njit
def _gaussian_samples(theta0, thickness_cm, z):
    out = np.empty((z.shape[0], 4))
    for i in range(z.shape[0]):
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = mi.scatter_gaussian(
            theta0, thickness_cm, z[i, 0], z[i, 1], z[i, 2], z[i, 3])
    return out


@njit
def _mixture_samples(theta0, thickness_cm, t, beta, charge, atomic_number, theta_max, u, z):
    out = np.empty((z.shape[0], 4))
    for i in range(z.shape[0]):
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = mi.scatter_mixture(
            theta0, thickness_cm, t, beta, charge, atomic_number, theta_max,
            u[i, 0], u[i, 1], u[i, 2], u[i, 3], z[i, 0], z[i, 1], z[i, 2], z[i, 3])
    return out


@njit
def _bethe_heitler_samples(seed, stream, first_event, n, t):
    fraction = np.empty(n)
    draws = np.empty(n, dtype=np.int64)
    for i in range(n):
        fraction[i], draws[i] = mi.sample_bethe_heitler(seed, first_event + i, stream, 0, t)
    return fraction, draws


@njit
def _gamma_samples(seed, stream, n, shape):
    out = np.empty(n)
    for i in range(n):
        out[i], _ = mi.sample_gamma(seed, i, stream, 0, shape)
    return out


def _core_width(angles):
    """Sigma from the RMS of the central 98 % (|angle| below its 98 % quantile), divided by the
    RMS of the central 98 % of a unit Gaussian; and the expected statistical error of it."""
    a2 = angles**2
    q2 = np.quantile(a2, 0.98)
    inside = a2[a2 <= q2]
    c = stats.norm.ppf(0.99)
    factor = stats.truncnorm(-c, c).std()  # = 0.935 (REFERENCE.md)
    width = math.sqrt(inside.mean()) / factor
    # influence function of a trimmed mean of y = angle^2 at its 98 % quantile: the variance is
    # Var(min(y, q)) / (0.98^2 N) (Winsorized variance); relative error of the sqrt is half of it
    winsorized = np.minimum(a2, q2)
    rel_error = 0.5 * winsorized.std() / (0.98 * inside.mean()) / math.sqrt(len(a2))
    return width, rel_error, factor


# ---------------------------------------------------------------- Gaussian scattering


def test_truncated_rms_factor_is_0935():
    _, _, factor = _core_width(np.linspace(-1, 1, 11))
    assert factor == pytest.approx(0.935, abs=1e-3)


def test_scatter_gaussian_width_correlation_and_offsets():
    n = 1_000_000
    theta0, x = 15.4e-6, 1.5
    z = np.random.default_rng(1).standard_normal((n, 4))
    s = _gaussian_samples(theta0, x, z)
    for angle, offset in [(s[:, 0], s[:, 2]), (s[:, 1], s[:, 3])]:
        width, rel_error, _ = _core_width(angle)
        assert abs(width / theta0 - 1) < N_SIGMA * rel_error
        assert rel_error < 2e-3
        rho = np.corrcoef(angle, offset)[0, 1]
        rho_error = (1 - 0.75) / math.sqrt(n)  # sd of a sample correlation coefficient
        assert abs(rho - math.sqrt(3) / 2) < min(0.01, N_SIGMA * rho_error)
        rms = math.sqrt(np.mean(offset**2))
        assert abs(rms / (theta0 * x / math.sqrt(3)) - 1) < N_SIGMA / math.sqrt(2 * n)
    # x and y planes are independent
    assert abs(np.corrcoef(s[:, 0], s[:, 1])[0, 1]) < N_SIGMA / math.sqrt(n)


def test_scatter_gaussian_exact_formula():
    dtx, dty, dx, dy = mi.scatter_gaussian(2e-5, 3.0, 0.3, -1.2, 0.7, 2.1)
    assert (dtx, dty) == (pytest.approx(-1.2 * 2e-5, rel=1e-15), pytest.approx(2.1 * 2e-5, rel=1e-15))
    assert dx == pytest.approx(3.0 * 2e-5 * (0.3 / math.sqrt(12) - 0.6), rel=1e-14)
    assert dy == pytest.approx(3.0 * 2e-5 * (0.7 / math.sqrt(12) + 1.05), rel=1e-14)
    # linear in theta0: the scale factor moves the same event a little (common random numbers)
    scaled = mi.scatter_gaussian(1.01 * 2e-5, 3.0, 0.3, -1.2, 0.7, 2.1)
    assert np.allclose(scaled, 1.01 * np.array([dtx, dty, dx, dy]), rtol=1e-14, atol=0)


# ---------------------------------------------------------------- mixture


BE = material("Be")
P_MU = 160.0
BETA_MU = _beta(P_MU, MUON_MASS_GEV)
T_BE = 1.5 / BE.radiation_length_cm
THETA0_BE = mi.highland_theta0_rad(P_MU, BETA_MU, 1.0, T_BE)
THETA_MAX_BE = mi.nuclear_cutoff_rad(P_MU, BE.a_g_mol)


@pytest.fixture(scope="module")
def mixture_sample():
    n = 1_000_000
    rng = np.random.default_rng(2)
    u = rng.random((n, 4))
    z = rng.standard_normal((n, 4))
    return _mixture_samples(THETA0_BE, 1.5, T_BE, BETA_MU, 1.0, BE.z, THETA_MAX_BE, u, z)


def test_single_scattering_rate_formula():
    """N(>theta) from the Rutherford cross section and the Rossi-Greisen X0, by hand."""
    es = ELECTRON_MASS_GEV * math.sqrt(4 * math.pi * 137.035999084)  # 21.2 MeV
    assert es == pytest.approx(0.0212, rel=3e-3)
    theta_s = es / (BETA_MU * P_MU) * math.sqrt(T_BE)
    theta_cut = 3 * THETA0_BE
    n_expected = theta_s**2 / (4 * math.log(183 * 4 ** (-1 / 3))) * (1 / theta_cut**2 - 1 / THETA_MAX_BE**2)
    p = mi.tail_probability(T_BE, BETA_MU, 1.0, BE.z, THETA0_BE, THETA_MAX_BE)
    assert p == pytest.approx(1 - math.exp(-n_expected), rel=1e-12)
    assert 0.01 < p < 0.03
    # no tail when the cut-off is below the cut, or without material
    assert mi.tail_probability(T_BE, BETA_MU, 1.0, BE.z, THETA0_BE, 2 * THETA0_BE) == 0.0
    # nuclear cut-off: hbar c / (1.2 A^1/3 fm p)
    assert THETA_MAX_BE == pytest.approx(0.1973269804 / (1.2 * 9.012182 ** (1 / 3) * 160), rel=1e-12)


def test_single_scattering_rate_of_a_share():
    """A slab that gets the share theta0_H(X) sqrt(x/X) of a scatterer X (pass X): the tail
    probability is the absolute Rutherford rate of the slab's own thickness x."""
    big_t, small_t = 0.08, 0.0068
    theta0_share = mi.highland_theta0_rad(P_MU, BETA_MU, 1.0, big_t) * math.sqrt(small_t / big_t)
    theta_s = 0.0212 / (BETA_MU * P_MU) * math.sqrt(small_t)  # E_s sqrt(x/X0) / (p beta)
    n_expected = theta_s**2 / (4 * math.log(183 * 14 ** (-1 / 3)) * (3 * theta0_share) ** 2)
    p = mi.tail_probability(big_t, BETA_MU, 1.0, 14.0, theta0_share, np.inf)
    assert p == pytest.approx(1 - math.exp(-n_expected), rel=5e-3)  # E_s = 21.2 MeV to 3 digits


def test_mixture_core_width_within_highland_accuracy(mixture_sample):
    for angle in (mixture_sample[:, 0], mixture_sample[:, 1]):
        width, _, _ = _core_width(angle)
        assert abs(width / THETA0_BE - 1) < 0.11
        assert width > THETA0_BE  # the tail only widens the core


def _tail_fraction_predicted(a):
    """P(|theta_x| > a theta0) of the documented model, by quadrature (units of theta0)."""
    p_tail = mi.tail_probability(T_BE, BETA_MU, 1.0, BE.z, THETA0_BE, THETA_MAX_BE)
    k, kmax = 3.0, THETA_MAX_BE / THETA0_BE
    norm = 1 / k**2 - 1 / kmax**2  # density of the tail angle: 2 / (theta^3 norm)

    def integrand(phi, theta):
        shift = theta * math.cos(phi)
        beyond = stats.norm.sf(a - shift) + stats.norm.cdf(-a - shift)
        return beyond * 2 / (theta**3 * norm) / math.pi  # phi in [0, pi] by symmetry

    tail, _ = integrate.dblquad(integrand, k, kmax, 0, math.pi, epsabs=1e-10, epsrel=1e-8)
    return (1 - p_tail) * 2 * stats.norm.sf(a) + p_tail * tail


@pytest.mark.parametrize("a", [5.0, 10.0])
def test_mixture_tails_match_model(mixture_sample, a):
    n = len(mixture_sample)
    predicted = _tail_fraction_predicted(a)
    assert predicted > 100 * 2 * stats.norm.sf(a) and predicted > 1e-4  # Gaussian 5 sigma: 6e-7
    for angle in (mixture_sample[:, 0], mixture_sample[:, 1]):
        observed = np.mean(np.abs(angle) > a * THETA0_BE)
        error = math.sqrt(predicted * (1 - predicted) / n)
        assert abs(observed - predicted) < N_SIGMA * error


def test_mixture_space_angle_tail_is_rutherford(mixture_sample):
    """Space-angle counts far beyond the core: the Rutherford density 2 / theta^3 on
    [3 theta0, theta_max] folded with the 2D Gaussian core (a Rice distribution), by quadrature."""
    n = len(mixture_sample)
    space = np.hypot(mixture_sample[:, 0], mixture_sample[:, 1]) / THETA0_BE
    p_tail = mi.tail_probability(T_BE, BETA_MU, 1.0, BE.z, THETA0_BE, THETA_MAX_BE)
    k, kmax = 3.0, THETA_MAX_BE / THETA0_BE
    norm = 1 / k**2 - 1 / kmax**2
    for a, b in [(5.0, 8.0), (8.0, 12.0), (12.0, 20.0), (20.0, 40.0)]:
        def integrand(theta):
            return (stats.rice.cdf(b, theta) - stats.rice.cdf(a, theta)) * 2 / (theta**3 * norm)

        folded, _ = integrate.quad(integrand, k, kmax, limit=200, points=[a, b])
        predicted = p_tail * folded + (1 - p_tail) * (stats.rayleigh.cdf(b) - stats.rayleigh.cdf(a))
        observed = np.mean((space > a) & (space <= b))
        assert abs(observed - predicted) < N_SIGMA * math.sqrt(predicted / n)
    # unfolded, the rate is C (theta0/theta)^2: the folding adds 9 % at 8-12 theta0
    rate = mi.single_scattering_rate(T_BE, BETA_MU, 1.0, BE.z)
    assert p_tail / -math.expm1(-rate * norm) == pytest.approx(1.0, rel=1e-12)
    assert np.max(space) < kmax + 8  # cut-off angle plus the core


def test_mixture_offsets_and_scaling():
    # no tail (u1 above the probability): exactly the Gaussian kernel
    args = (THETA0_BE, 1.5, T_BE, BETA_MU, 1.0, BE.z, THETA_MAX_BE)
    normals = (0.3, -1.2, 0.7, 2.1)
    gaussian = mi.scatter_gaussian(THETA0_BE, 1.5, *normals)
    assert mi.scatter_mixture(*args, 0.999, 0.5, 0.5, 0.5, *normals) == gaussian
    # tail: u2 = 1 gives the cut angle, u3 = 0 the x direction, u4 the remaining path fraction
    core = mi.scatter_gaussian(THETA0_BE, 1.5, *normals)
    dtx, dty, dx, dy = mi.scatter_mixture(*args, 1e-9, 1.0, 0.0, 0.25, *normals)
    assert dtx - core[0] == pytest.approx(3 * THETA0_BE, rel=1e-12)
    assert dty == pytest.approx(core[1], rel=1e-12)
    assert dx - core[2] == pytest.approx(0.25 * 1.5 * 3 * THETA0_BE, rel=1e-9)
    # scale factor: with no cut-off, the same random numbers give a scaled event
    free = (1.5, T_BE, BETA_MU, 1.0, BE.z, np.inf)
    uniforms = (1e-3, 0.3, 0.2, 0.6)
    nominal = np.array(mi.scatter_mixture(THETA0_BE, *free, *uniforms, *normals))
    scaled = np.array(mi.scatter_mixture(1.01 * THETA0_BE, *free, *uniforms, *normals))
    assert np.allclose(scaled, 1.01 * nominal, rtol=1e-13, atol=0)
    # no material: no scattering
    empty = mi.scatter_mixture(0.0, 0.0, 0.0, BETA_MU, 1.0, BE.z, THETA_MAX_BE, *uniforms, *normals)
    assert empty == (0.0, 0.0, 0.0, 0.0)


# ---------------------------------------------------------------- deflect


def _frame(d):
    u = np.cross([0.0, 1.0, 0.0], d)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def _random_directions(rng, n, max_polar=0.3):
    cos_polar = rng.uniform(math.cos(max_polar), 1.0, n)
    phi = rng.uniform(0, 2 * math.pi, n)
    sin_polar = np.sqrt(1 - cos_polar**2)
    return np.stack([sin_polar * np.cos(phi), sin_polar * np.sin(phi), cos_polar], axis=1)


ANGLES = [1e-7, -3e-6, 1e-4, -2e-3, 0.05, 0.1]


def test_deflect_unit_norm_and_recovered_plane_angles():
    rng = np.random.default_rng(3)
    for d in _random_directions(rng, 50):
        d = d / np.linalg.norm(d)
        u, v = _frame(d)
        for tx in ANGLES:
            for ty in ANGLES[::-1]:
                n = np.array(mi.deflect(d[0], d[1], d[2], tx, ty))
                assert abs(np.linalg.norm(n) - 1) < 1e-15
                w = n @ d
                assert math.atan2(n @ u, w) == pytest.approx(tx, rel=1e-8, abs=1e-17)
                assert math.atan2(n @ v, w) == pytest.approx(ty, rel=1e-8, abs=1e-17)


def test_deflect_small_angle_limit_along_beam():
    for tx, ty in [(1e-7, -2e-7), (3e-5, 1e-5)]:
        n = mi.deflect(0.0, 0.0, 1.0, tx, ty)
        assert n[0] == pytest.approx(tx, rel=1e-9)
        assert n[1] == pytest.approx(ty, rel=1e-9)
        # dz ~ 1 is stored to 1.1e-16 absolute: 1 - dz is the small-angle value to that precision
        assert 1 - n[2] == pytest.approx(0.5 * (tx * tx + ty * ty), rel=1e-5, abs=2.3e-16)
    assert mi.deflect(0.0, 0.0, 1.0, 0.0, 0.0) == (0.0, 0.0, 1.0)


def test_deflect_equals_exact_rotation():
    """One plane angle: the rotation about v (resp. -u) by that angle (Rodrigues via scipy)."""
    rng = np.random.default_rng(4)
    for d in _random_directions(rng, 30, max_polar=1.0):
        u, v = _frame(d)
        for angle in ANGLES:
            expected_x = Rotation.from_rotvec(angle * v).apply(d)
            expected_y = Rotation.from_rotvec(-angle * u).apply(d)
            # both sides are rounded (scipy to ~3 ulp): agreement to 4.5 ulp of 1
            assert np.allclose(mi.deflect(*d, angle, 0.0), expected_x, rtol=0, atol=5e-16)
            assert np.allclose(mi.deflect(*d, 0.0, angle), expected_y, rtol=0, atol=5e-16)
            # the deflection n - d is exact to a few ulp of 1, i.e. 5e-9 relative at 1e-7 rad
            assert np.allclose(np.array(mi.deflect(*d, angle, 0.0)) - d, expected_x - d,
                               rtol=0, atol=5e-16)
    # both angles: matrix with columns (u, v, d) applied to the local direction (tx, ty, 1)
    d = np.array([0.01, -0.02, 1.0])
    d /= np.linalg.norm(d)
    u, v = _frame(d)
    local = np.array([math.tan(0.003), math.tan(-0.001), 1.0])
    expected = np.column_stack([u, v, d]) @ (local / np.linalg.norm(local))
    assert np.allclose(mi.deflect(*d, 0.003, -0.001), expected, rtol=0, atol=5e-16)


def test_deflect_near_y_axis():
    n = np.array(mi.deflect(0.0, 1.0, 0.0, 1e-3, 2e-3))
    assert abs(np.linalg.norm(n) - 1) < 1e-15
    assert n[1] == pytest.approx(1 / math.sqrt(1 + math.tan(1e-3) ** 2 + math.tan(2e-3) ** 2), rel=1e-15)


# ---------------------------------------------------------------- Bethe-Heitler


B = 1 / math.log(2)


@pytest.mark.parametrize("t", [0.01, 0.05, 0.2])
def test_bethe_heitler_mean_fraction(t):
    n = 2_000_000
    z, draws = _bethe_heitler_samples(SEED, STREAM_BREMSSTRAHLUNG, 0, n, t)
    assert np.all((z > 0) & (z <= 1))
    # exact moments of z = exp(-Y), Y ~ Gamma(b t): <z^k> = (1 + k)^(-b t)
    mean = 2.0 ** (-B * t)
    assert mean == pytest.approx(math.exp(-t), rel=1e-14)
    sd = math.sqrt(3.0 ** (-B * t) - mean**2)
    loss, expected_loss = 1 - z.mean(), 1 - mean
    tolerance = N_SIGMA * sd / math.sqrt(n)
    assert abs(loss - expected_loss) < tolerance
    assert tolerance < 0.03 * expected_loss  # so the mean loss is within 3 % of E (1 - e^-t)
    # b = 4/3 would give a mean loss 7 % lower, well outside the tolerance
    assert abs(loss - (1 - 2 ** (-4 * t / 3))) > 2 * tolerance
    # Ahrens-Dieter GS: trials are geometric with mean (1 + a/e) / Gamma(a + 1), two draws each
    shape = B * t
    trials = (1 + shape / math.e) / math.gamma(shape + 1)
    trials_sd = math.sqrt(trials * (trials - 1))
    assert draws.min() == 2 and np.all(draws % 2 == 0)
    assert abs(draws.mean() / 2 - trials) < N_SIGMA * trials_sd / math.sqrt(n)


@pytest.mark.parametrize("t", [0.01, 0.05, 0.2, 1.0, 3.0])
def test_bethe_heitler_distribution_is_gamma(t):
    """-ln z ~ Gamma(b t). For b t << 1 most losses are below the float64 resolution of z
    (z = 1 exactly for -ln z < 1.1e-16, 59 % of the electrons at t = 0.01), so the test is
    censored at y_c = 1e-6: the fraction below y_c is binomial, and above it a KS test against
    the truncated Gamma CDF (z resolves -ln z > 1e-6 to 1e-10 relative)."""
    n = 200_000
    z, _ = _bethe_heitler_samples(SEED, STREAM_BREMSSTRAHLUNG, 10_000_000, n, t)
    y = -np.log(z)
    gamma = stats.gamma(B * t)
    y_c = 1e-6
    f_c = gamma.cdf(y_c)
    below = np.mean(y < y_c)
    assert abs(below - f_c) < N_SIGMA * math.sqrt(f_c * (1 - f_c) / n) + 1 / n
    result = stats.kstest(y[y >= y_c], lambda v: (gamma.cdf(v) - f_c) / (1 - f_c))
    assert result.pvalue > 1e-3


@pytest.mark.parametrize("shape", [0.02, 0.5, 1.0, 2.5, 30.0])
def test_sample_gamma_ks(shape):
    x = _gamma_samples(SEED, 77, 100_000, shape)
    assert stats.kstest(x, stats.gamma(shape).cdf).pvalue > 1e-3


def test_bethe_heitler_reproducible_and_counter_based():
    seed, stream = np.uint64(99), STREAM_BREMSSTRAHLUNG
    first = mi.sample_bethe_heitler(seed, np.uint64(5), stream, np.uint64(0), 0.3)
    assert mi.sample_bethe_heitler(seed, np.uint64(5), stream, np.uint64(0), 0.3) == first
    assert mi.sample_bethe_heitler(seed, np.uint64(6), stream, np.uint64(0), 0.3) != first
    assert mi.sample_bethe_heitler(np.uint64(100), np.uint64(5), stream, np.uint64(0), 0.3) != first
    # event k alone equals event k of a batch
    batch, _ = _bethe_heitler_samples(seed, stream, 0, 10, 0.3)
    assert batch[5] == first[0]
    # the draws are draw_start, draw_start + 1, ...: the Ahrens-Dieter first trial by hand
    fraction, used = mi.sample_bethe_heitler(seed, np.uint64(5), stream, 7, 0.1)
    shape = B * 0.1
    p = (1 + shape / math.e) * uniform(seed, np.uint64(5), stream, 7)
    u = uniform(seed, np.uint64(5), stream, 8)
    assert used == 2 and p <= 1  # this key: accepted at the first trial, first branch
    assert -math.log(u) >= p ** (1 / shape)
    assert fraction == pytest.approx(math.exp(-(p ** (1 / shape))), rel=1e-14)
    assert mi.sample_bethe_heitler(seed, np.uint64(5), stream, 0, 0.0) == (1.0, 0)


def test_bethe_heitler_log_is_minus_the_log_of_the_fraction():
    seed, stream = np.uint64(99), STREAM_BREMSSTRAHLUNG
    for event in range(50):
        for t in (0.0034, 0.1, 2.0):
            log_loss, used = mi.sample_bethe_heitler_log(seed, np.uint64(event), stream, 3, t)
            assert mi.sample_bethe_heitler(seed, np.uint64(event), stream, 3, t) == (math.exp(-log_loss), used)
    assert mi.sample_bethe_heitler_log(seed, np.uint64(5), stream, 0, 0.0) == (0.0, 0)


def test_electron_slab():
    seed, event = np.uint64(3), np.uint64(11)
    ms_stream = multiple_scattering_stream(4)
    energy, x, x0 = 1.0, 0.064, 9.37
    e_out, dtx, dty, dx, dy, used = mi.electron_slab(seed, event, STREAM_BREMSSTRAHLUNG, 0, ms_stream, 0,
                                                    energy, x, x0, 1.0)
    fraction, used_alone = mi.sample_bethe_heitler(seed, event, STREAM_BREMSSTRAHLUNG, 0, x / x0)
    assert used == used_alone and e_out == pytest.approx(fraction * energy, rel=1e-15)
    p_in = math.sqrt(energy**2 - ELECTRON_MASS_GEV**2)
    p_out = math.sqrt(e_out**2 - ELECTRON_MASS_GEV**2)
    p_mean = 0.5 * (p_in + p_out)
    theta0 = _highland_by_hand(p_mean, ELECTRON_MASS_GEV, x, x0)
    expected = mi.scatter_gaussian(theta0, x, *normal4(seed, event, ms_stream, 0))
    assert np.allclose((dtx, dty, dx, dy), expected, rtol=1e-12, atol=0)
    # the scale factor scales the scattering and leaves the energy alone
    scaled = mi.electron_slab(seed, event, STREAM_BREMSSTRAHLUNG, 0, ms_stream, 0, energy, x, x0, 1.02)
    assert scaled[0] == e_out
    assert np.allclose(scaled[1:5], 1.02 * np.array(expected), rtol=1e-12, atol=0)


def test_electron_slab_mean_loss():
    @njit
    def mean_energy(n, t):
        total = 0.0
        for i in range(n):
            total += mi.electron_slab(SEED, i, STREAM_BREMSSTRAHLUNG, 0, 1000, 0,
                                      10.0, t * 35.28, 35.28, 1.0)[0]
        return total / n

    n, t = 400_000, 0.05
    sd = 10.0 * math.sqrt(3.0 ** (-B * t) - 4.0 ** (-B * t))
    assert abs(mean_energy(n, t) - 10.0 * math.exp(-t)) < N_SIGMA * sd / math.sqrt(n)
