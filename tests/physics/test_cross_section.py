"""LO cross sections against REFERENCE.md and an independent mpmath integration in the test."""

import math

import mpmath as mp
import numpy as np
import pytest

from fastsim.physics.cross_section import ElasticCrossSection, ElasticCuts, t_intervals
from fastsim.physics.kinematics import ElasticKinematics
from fastsim.physics.vacuum_polarization import LeptonLikeModel, RunningCoupling
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, GEV2_TO_UB, MUON_MASS_GEV, TAU_MASS_GEV

mp.mp.dps = 30
ME, MMU = mp.mpf(ELECTRON_MASS_GEV), mp.mpf(MUON_MASS_GEV)


@pytest.mark.parametrize(
    "running, ee_min, expected",
    [
        ("none", 0.2, 1265.060300),
        ("none", 1.0, 245.038905),
        ("none", 5.0, 43.86256),
        ("lep", 0.2, 1276.876554),
        ("lep", 1.0, 247.946478),
    ],
)
def test_reference_cross_sections_150gev(running, ee_min, expected):
    sigma = ElasticCrossSection(150.0, RunningCoupling(running)).sigma_ub(ElasticCuts(ee_min_gev=ee_min))
    digits = len(f"{expected}".split(".")[1])
    assert sigma == pytest.approx(expected, abs=0.6 * 10**-digits, rel=1e-7)


# --- an independent implementation in mpmath ---------------------------------------------------


def mp_bracket(t, mass2):
    beta = mp.sqrt(1 - 4 * mass2 / t)
    return (-mp.mpf(5) / 9 - 4 * mass2 / (3 * t)
            + (4 * mass2**2 / (3 * t**2) + mass2 / (3 * t) - mp.mpf(1) / 6) * (2 / beta) * mp.log(abs((1 - beta) / (1 + beta))))


def mp_dalpha(t, running):
    if running == "none":
        return 0
    total = ALPHA0 / mp.pi * sum(mp_bracket(t, mp.mpf(m) ** 2) for m in (ELECTRON_MASS_GEV, MUON_MASS_GEV, TAU_MASS_GEV))
    if running == "lep+had":
        model = LeptonLikeModel()
        total += model.K * model.M_gev2 * mp_bracket(t, mp.mpf(model.M_gev2))
    return total


def mp_dsigma_dt(t, energy, running):
    s = MMU**2 + ME**2 + 2 * ME * energy
    lam = (s - (MMU + ME) ** 2) * (s - (MMU - ME) ** 2)
    born = 4 * mp.pi * ALPHA0**2 / lam * ((s - MMU**2 - ME**2) ** 2 / t**2 + s / t + mp.mpf(1) / 2)
    return born / (1 - mp_dalpha(t, running)) ** 2 * GEV2_TO_UB


def mp_angles(t, energy):
    """(theta_e, theta_mu) from E_e = m_e - t/2m_e and the textbook cos(theta_e) relation."""
    energy = mp.mpf(energy)
    p = mp.sqrt(energy**2 - MMU**2)
    ee = ME - t / (2 * ME)
    pe = mp.sqrt(ee**2 - ME**2)
    r = p / (energy + ME)
    cos_e = min(mp.sqrt((ee - ME) / (ee + ME)) / r, mp.mpf(1))  # rounding at t_min
    theta_e = mp.acos(cos_e)
    return theta_e, mp.atan2(pe * mp.sin(theta_e), p - pe * cos_e)


def mp_bisect(function, lo, hi, iterations=120):
    """Root of a function that changes sign on [lo, hi], by bisection (robust, independent)."""
    f_lo = function(lo)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if (function(mid) > 0) == (f_lo > 0):
            lo, f_lo = mid, function(mid)
        else:
            hi = mid
    return (lo + hi) / 2


def mp_sigma(energy, running, ee_range, theta_e_range, theta_mu_range):
    """Integrate dsigma/dt over the t where all cuts hold, boundaries found by root finding."""
    energy = mp.mpf(energy)
    s = MMU**2 + ME**2 + 2 * ME * energy
    lam = (s - (MMU + ME) ** 2) * (s - (MMU - ME) ** 2)
    t_min = -lam / s
    edges = {t_min * (1 - mp.mpf(10) ** -25), -mp.mpf(10) ** -12}
    edges |= {2 * ME * (ME - e) for e in ee_range}
    inner = (t_min * (1 - mp.mpf(10) ** -20), -mp.mpf(10) ** -12)
    for th in theta_e_range:
        if 0 < th < mp.pi / 2:
            edges.add(mp_bisect(lambda t: mp_angles(t, energy)[0] - th, *inner))
    t_peak = mp_bisect(lambda t: mp.diff(lambda u: mp_angles(u, energy)[1], t), inner[0], -1e-4)
    for th in theta_mu_range:
        if 0 < th < mp_angles(t_peak, energy)[1]:
            edges.add(mp_bisect(lambda t: mp_angles(t, energy)[1] - th, inner[0], t_peak))
            edges.add(mp_bisect(lambda t: mp_angles(t, energy)[1] - th, t_peak, inner[1]))
    edges = sorted(e for e in edges if t_min <= e < 0)

    def inside(t):
        ee = ME - t / (2 * ME)
        theta_e, theta_mu = mp_angles(t, energy)
        return (ee_range[0] <= ee <= ee_range[1] and theta_e_range[0] <= theta_e <= theta_e_range[1]
                and theta_mu_range[0] <= theta_mu <= theta_mu_range[1])

    total = mp.mpf(0)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if inside((lo + hi) / 2):
            total += mp.quad(lambda t: mp_dsigma_dt(t, energy, running), [lo, hi])
    return float(total)


@pytest.mark.parametrize(
    "energy, running, cuts",
    [
        (160.0, "lep+had", dict(ee_min_gev=1.0, ee_max_gev=120.0, theta_mu_min_rad=2e-4)),
        (160.0, "lep+had", dict(ee_min_gev=1.0, theta_e_min_rad=5e-3, theta_e_max_rad=20e-3, theta_mu_min_rad=2e-4)),
        (150.0, "lep", dict(ee_min_gev=0.5, theta_mu_min_rad=1e-3, theta_mu_max_rad=4e-3)),
        (150.0, "none", dict(theta_e_max_rad=0.03, theta_mu_max_rad=3e-3)),
    ],
)
def test_integrated_cross_section_against_mpmath(energy, running, cuts):
    ee = (cuts.get("ee_min_gev", 0.0), cuts.get("ee_max_gev", 1e9))
    theta_e = (cuts.get("theta_e_min_rad", 0.0), cuts.get("theta_e_max_rad", math.pi / 2))
    theta_mu = (cuts.get("theta_mu_min_rad", 0.0), cuts.get("theta_mu_max_rad", 1.0))
    expected = mp_sigma(energy, running, ee, theta_e, theta_mu)
    sigma = ElasticCrossSection(energy, RunningCoupling(running)).sigma_ub(ElasticCuts(**cuts))
    assert sigma == pytest.approx(expected, rel=1e-9)


def test_theta_mu_max_cut_gives_two_intervals():
    intervals = t_intervals(ElasticKinematics(150.0), ElasticCuts(theta_e_max_rad=0.03, theta_mu_max_rad=3e-3))
    assert len(intervals) == 2


def test_dsigma_dtheta_e_integrates_to_sigma():
    xsec = ElasticCrossSection(160.0)
    theta = np.linspace(5e-3, 20e-3, 20001)
    values = xsec.dsigma_dtheta_e_ub(theta)
    integral = np.sum((values[1:] + values[:-1]) / 2 * np.diff(theta))
    assert integral == pytest.approx(xsec.sigma_ub(ElasticCuts(theta_e_min_rad=5e-3, theta_e_max_rad=20e-3)), rel=1e-7)


@pytest.mark.parametrize(
    "cuts, fragment",
    [
        (dict(ee_min_gev=5.0, ee_max_gev=2.0), "empty cut window: ee_min_gev = 5.0"),
        (dict(ee_min_gev=200.0), "ee_min_gev = 200.0 is outside the allowed range"),
        (dict(ee_min_gev=1e-4), "ee_min_gev = 0.0001 is outside the allowed range"),
        (dict(theta_e_max_rad=math.pi / 2), "theta_e_max_rad = 1.57"),
        (dict(theta_e_min_rad=2.0, ee_min_gev=1.0), "theta_e_min_rad = 2.0"),
        (dict(theta_mu_min_rad=6e-3, ee_min_gev=1.0), "theta_mu_min_rad = 0.006"),
        (dict(theta_e_min_rad=0.5, ee_min_gev=100.0), "select no elastic events"),
        (dict(theta_mu_max_rad=1e-3), "diverges at t -> 0"),
        (dict(ee_min_gev="one"), "ee_min_gev = 'one'"),
    ],
)
def test_bad_cuts(cuts, fragment):
    with pytest.raises(ValueError) as info:
        ElasticCrossSection(150.0).sigma_ub(ElasticCuts(**cuts))
    assert fragment in str(info.value)
