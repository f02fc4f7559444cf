"""Elastic kinematics against REFERENCE.md and independent closed forms."""

import math

import mpmath as mp
import numpy as np
import pytest

from fastsim.physics.kinematics import THETA_MU_MAX_RAD, ElasticKinematics, angles_from_t_kernel, elastic_curve_kernel
from fastsim.units import ELECTRON_MASS_GEV as ME
from fastsim.units import MUON_MASS_GEV as MMU


def electron_energy_textbook(beam_energy, theta_e):
    """E_e = m_e (1 + r^2 cos^2) / (1 - r^2 cos^2), r = p / (E + m_e), in mpmath."""
    mp.mp.dps = 40
    e = mp.mpf(beam_energy)
    r = mp.sqrt(e**2 - mp.mpf(MMU) ** 2) / (e + mp.mpf(ME))
    c2 = mp.cos(mp.mpf(theta_e)) ** 2
    return ME * (1 + r**2 * c2) / (1 - r**2 * c2)


def muon_angle_from_conservation(beam_energy, electron_energy, theta_e):
    """theta_mu from momentum conservation, in mpmath."""
    mp.mp.dps = 40
    p = mp.sqrt(mp.mpf(beam_energy) ** 2 - mp.mpf(MMU) ** 2)
    pe = mp.sqrt(mp.mpf(electron_energy) ** 2 - mp.mpf(ME) ** 2)
    return mp.atan2(pe * mp.sin(theta_e), p - pe * mp.cos(theta_e))


@pytest.mark.parametrize(
    "theta_e, energy, theta_mu",
    [(1e-3, 130.63082, 4.447854e-3), (2e-3, 94.42344, 2.879776e-3), (10e-3, 9.56701, 0.635952e-3)],
)
def test_reference_elastic_curve_160gev(theta_e, energy, theta_mu):
    kin = ElasticKinematics(160.0)
    t = kin.t_from_theta_e(theta_e)
    assert kin.electron_energy_gev(t) == pytest.approx(energy, abs=6e-6)
    assert kin.theta_mu_from_theta_e(theta_e) == pytest.approx(theta_mu, abs=6e-10)


@pytest.mark.parametrize("beam_energy", [150.0, 160.0])
@pytest.mark.parametrize("theta_e", [1e-4, 1e-3, 5e-3, 0.02, 0.1, 1.0])
def test_against_textbook_formulas(beam_energy, theta_e):
    kin = ElasticKinematics(beam_energy)
    t = kin.t_from_theta_e(theta_e)
    energy = electron_energy_textbook(beam_energy, theta_e)
    assert float(kin.electron_energy_gev(t)) == pytest.approx(float(energy), rel=1e-12)
    theta_mu = muon_angle_from_conservation(beam_energy, energy, theta_e)
    assert float(kin.angles_from_t(t)[1]) == pytest.approx(float(theta_mu), rel=1e-10)


@pytest.mark.parametrize("beam_energy", [20.0, 150.0, 160.0])
@pytest.mark.parametrize("theta_e", [1e-5, 1e-3, 2.5e-3, 0.01, 0.03, 0.3, 1.5])
def test_closed_form_curve_against_textbook_formulas(beam_energy, theta_e):
    """elastic_curve_kernel's theta_mu, slope and E_e against mpmath (the slope: a central
    difference at 40 digits, step 1e-15: truncation and rounding errors below 1e-24)."""
    energy = electron_energy_textbook(beam_energy, theta_e)
    theta_mu, slope, electron_energy = elastic_curve_kernel(beam_energy, theta_e)
    assert theta_mu == pytest.approx(float(muon_angle_from_conservation(beam_energy, energy, theta_e)), rel=1e-14)
    curve = lambda x: muon_angle_from_conservation(beam_energy, electron_energy_textbook(beam_energy, x), x)
    step = mp.mpf("1e-15")
    expected_slope = (curve(mp.mpf(theta_e) + step) - curve(mp.mpf(theta_e) - step)) / (2 * step)
    assert slope == pytest.approx(float(expected_slope), rel=1e-12, abs=1e-15)
    assert electron_energy == pytest.approx(float(energy), rel=1e-14)


def test_closed_form_curve_outside_its_domain_is_nan():
    assert all(math.isnan(x) for x in elastic_curve_kernel(160.0, -1e-3))
    assert all(math.isnan(x) for x in elastic_curve_kernel(160.0, math.pi / 2))
    assert all(math.isnan(x) for x in elastic_curve_kernel(160.0, math.nan))


def test_muon_angle_never_exceeds_limit():
    assert THETA_MU_MAX_RAD == pytest.approx(4.8364e-3, abs=1e-7)
    kin = ElasticKinematics(150.0)
    t = -np.geomspace(1e-9, -kin.t_min_gev2, 20001)
    theta_mu = kin.angles_from_t(t)[1]
    assert theta_mu.max() <= THETA_MU_MAX_RAD
    assert theta_mu.max() == pytest.approx(THETA_MU_MAX_RAD, rel=1e-6)


def test_round_trips():
    kin = ElasticKinematics(150.0)
    t = -np.geomspace(1e-8, -kin.t_min_gev2 * (1 - 1e-9), 1001)
    theta_e, theta_mu = kin.angles_from_t(t)
    np.testing.assert_allclose(kin.t_from_theta_e(theta_e), t, rtol=1e-12)
    np.testing.assert_allclose(kin.t_from_electron_energy(kin.electron_energy_gev(t)), t, rtol=1e-10)
    # theta_mu is double-valued: the branch is fixed by which side of the maximum t lies on.
    t_peak = kin.t_from_theta_mu(THETA_MU_MAX_RAD, "hard")
    hard = t < t_peak
    far_from_peak = np.abs(theta_mu - THETA_MU_MAX_RAD) > 1e-5
    np.testing.assert_allclose(kin.t_from_theta_mu(theta_mu[hard & far_from_peak], "hard"), t[hard & far_from_peak], rtol=1e-10)
    np.testing.assert_allclose(kin.t_from_theta_mu(theta_mu[~hard & far_from_peak], "soft"), t[~hard & far_from_peak], rtol=1e-10)
    assert np.all(kin.theta_e_from_theta_mu(2e-3, "hard") < kin.theta_e_from_theta_mu(2e-3, "soft"))


def test_t_range():
    kin = ElasticKinematics(150.0)
    s = MMU**2 + ME**2 + 2 * ME * 150.0
    lam = s**2 + MMU**4 + ME**4 - 2 * (s * MMU**2 + s * ME**2 + MMU**2 * ME**2)
    assert kin.s_gev2 == pytest.approx(s, rel=1e-15)
    assert kin.lambda_gev4 == pytest.approx(lam, rel=1e-9)
    assert kin.t_min_gev2 == pytest.approx(-lam / s, rel=1e-9)
    theta_e, theta_mu = kin.angles_from_t(kin.t_min_gev2)
    assert theta_e == 0.0 and theta_mu == pytest.approx(0.0, abs=1e-12)


def test_kernel_matches_array_interface():
    kin = ElasticKinematics(160.0)
    assert angles_from_t_kernel(160.0, -0.05) == tuple(float(v) for v in kin.angles_from_t(-0.05))


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: ElasticKinematics(0.1), "beam_energy_gev = 0.1"),
        (lambda: ElasticKinematics(-5.0), "beam_energy_gev = -5.0"),
        (lambda: ElasticKinematics(150.0).t_from_theta_e(math.pi / 2), "theta_e_rad"),
        (lambda: ElasticKinematics(150.0).angles_from_t(0.01), "t_gev2 = 0.01"),
        (lambda: ElasticKinematics(150.0).t_from_theta_mu(5e-3), "theta_mu_rad = 0.005"),
        (lambda: ElasticKinematics(150.0).t_from_theta_mu(1e-3, branch="left"), "branch = 'left'"),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises(ValueError, match="allowed") as info:
        call()
    assert fragment in str(info.value)
