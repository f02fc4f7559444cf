"""mu N -> mu N e+ e-: published b_pair, an independent mpmath implementation, quadrature
refinement, sampling (chi2 against the formula) and argument checks."""

import math

import mpmath as mp
import numba
import numpy as np
import pytest
from scipy import integrate, stats

from fastsim.physics.pair_production import (
    N_UNIFORMS,
    PairSampler,
    b_pair_per_g_cm2,
    d2sigma_dnu_drho_ub,
    dsigma_dnu_ub,
    kinematic_limits,
    sigma_ub,
)
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, GEV2_TO_UB, MUON_MASS_GEV

C = (6, 12.0107)
BE = (4, 9.012182)
SI = (14, 28.0855)

# --- published b_pair ----------------------------------------------------------------------------
# PDG muon tables (Groom, Mokhov & Striganov, ADNDT 78 (2001) 183, electronic revision with the
# post-Born correction in pair production), pdg.lbl.gov/AtomicNuclearProperties/MUE/muE_*.txt:
# the "pair" column is the mean loss b_pair * E in MeV cm^2/g at kinetic energy T (MeV).
# - silicon: muE_silicon_Si.txt as distributed verbatim in github.com/lucabaldini/astropart
#   (src/astropart/data/muE_silicon_Si.txt, PDG 2023);
# - standard rock (Z = 11, A = 22) and iron: the PDG 2024 muE_standard_rock.txt and muE_iron_Fe.txt
#   columns as transcribed in a public GitHub muon-transport code (found with the code search;
#   not checked against pdg.lbl.gov itself). No carbon or beryllium table was found.
PDG_PAIR_LOSS_MEV_CM2_G = [
    # (material, Z, A, T [MeV], pair loss [MeV cm^2/g])
    ("Si", 14, 28.0855, 1.0e4, 8.760e-3),
    ("Si", 14, 28.0855, 1.0e5, 0.1874),
    ("Si", 14, 28.0855, 1.4e5, 0.2796),
    ("Si", 14, 28.0855, 1.7e5, 0.3516),
    ("Si", 14, 28.0855, 2.0e5, 0.4256),
    ("Si", 14, 28.0855, 1.0e6, 2.551),
    ("standard rock", 11, 22.0, 1.0e5, 0.1514),
    ("standard rock", 11, 22.0, 1.7e5, 0.2857),
    ("standard rock", 11, 22.0, 2.0e5, 0.3463),
    ("Fe", 26, 55.845, 1.0e5, 0.3068),
    ("Fe", 26, 55.845, 1.7e5, 0.5766),
    ("Fe", 26, 55.845, 2.0e5, 0.6983),
]


@pytest.mark.parametrize("name, z, a, kinetic_mev, pair_loss", PDG_PAIR_LOSS_MEV_CM2_G)
def test_b_pair_against_pdg_muon_tables(name, z, a, kinetic_mev, pair_loss):
    total_energy_mev = kinetic_mev + 1e3 * MUON_MASS_GEV
    published = pair_loss / total_energy_mev  # cm^2/g
    ours = b_pair_per_g_cm2(total_energy_mev * 1e-3, z, a)
    assert ours == pytest.approx(published, rel=0.05)


def test_b_pair_grows_slowly_with_energy_and_z():
    b = [b_pair_per_g_cm2(e, *C) for e in (10.0, 100.0, 1000.0)]
    assert b[0] < b[1] < b[2] < 1.5 * b[1]
    assert b_pair_per_g_cm2(160.0, *BE) < b_pair_per_g_cm2(160.0, *C) < b_pair_per_g_cm2(160.0, *SI)


# --- properties of the formula -------------------------------------------------------------------


def test_positive_inside_zero_outside_and_symmetric():
    energy = 160.0
    nu_min, nu_max = kinematic_limits(energy, C[0])
    nu = np.geomspace(nu_min * 1.01, nu_max * 0.999, 60)[:, None]
    one_minus_rho_max = np.array([_mp_one_minus_rho_max(energy, float(v)) for v in nu.ravel()], dtype=float)[:, None]
    rho = (1.0 - one_minus_rho_max) * np.linspace(-0.999, 0.999, 41)[None, :]
    value = d2sigma_dnu_drho_ub(energy, nu, rho, *C)
    assert np.all(value > 0.0)
    np.testing.assert_array_equal(value, d2sigma_dnu_drho_ub(energy, nu, -rho, *C))
    outside_rho = d2sigma_dnu_drho_ub(energy, nu, (1.0 - one_minus_rho_max) * 1.0001, *C)
    assert np.all(outside_rho == 0.0)
    assert np.all(d2sigma_dnu_drho_ub(energy, [nu_min * 0.99, nu_max * 1.0001, 1.5], 0.0, *C) == 0.0)
    assert np.all(dsigma_dnu_ub(energy, [nu_min * 0.99, nu_max * 1.0001], *C) == 0.0)


def test_kinematic_limits():
    nu_min, nu_max = kinematic_limits(160.0, 6)
    assert nu_min == pytest.approx(4 * ELECTRON_MASS_GEV / 160.0, rel=1e-15)
    assert 1 - nu_max == pytest.approx(0.75 * math.sqrt(math.e) * MUON_MASS_GEV * 6 ** (1 / 3) / 160.0, rel=1e-12)


# --- an independent implementation in mpmath ------------------------------------------------------
# Written from the Kokoulin-Petrukhin / Kelner-Kokoulin-Petrukhin formulas as printed in the Geant4
# Physics Reference Manual ("Positron-electron pair production by muons"), with L_mu kept as the
# difference of its two logarithms, no series branches, and the prefactor from r_e = alpha / m_e.

mp.mp.dps = 30
ME, MMU = mp.mpf(ELECTRON_MASS_GEV), mp.mpf(MUON_MASS_GEV)


def _mp_one_minus_rho_max(energy, nu):
    energy, nu = mp.mpf(energy), mp.mpf(nu)
    return 1 - (1 - 6 * MMU**2 / (energy**2 * (1 - nu))) * mp.sqrt(1 - 4 * ME / (nu * energy))


def _mp_zeta(energy, z):
    g1, g2 = (mp.mpf("4.4e-5"), mp.mpf("4.8e-5")) if z < 1.5 else (mp.mpf("1.95e-5"), mp.mpf("5.3e-5"))
    num = mp.mpf("0.073") * mp.log((energy / MMU) / (1 + g1 * z ** (mp.mpf(2) / 3) * energy / MMU)) - mp.mpf("0.26")
    if num <= 0:
        return mp.mpf(0)
    return num / (mp.mpf("0.058") * mp.log((energy / MMU) / (1 + g2 * z ** (mp.mpf(1) / 3) * energy / MMU)) - mp.mpf("0.14"))


def _mp_d2sigma(energy, nu, rho, z):
    energy, nu, rho, z = mp.mpf(energy), mp.mpf(nu), mp.mpf(rho), mp.mpf(z)
    big_b = mp.mpf("202.4") if z < 1.5 else mp.mpf(183)
    z13 = mp.cbrt(z)
    beta = nu**2 / (2 * (1 - nu))
    xi = (MMU * nu / (2 * ME)) ** 2 * (1 - rho**2) / (1 - nu)
    y_e = (5 - rho**2 + 4 * beta * (1 + rho**2)) / (
        2 * (1 + 3 * beta) * mp.log(3 + 1 / xi) - rho**2 - 2 * beta * (2 - rho**2))
    y_mu = (4 + rho**2 + 3 * beta * (1 + rho**2)) / (
        (1 + rho**2) * (mp.mpf(3) / 2 + 2 * beta) * mp.log(3 + xi) + 1 - mp.mpf(3) / 2 * rho**2)
    screen = 2 * ME * mp.sqrt(mp.e) * big_b / (z13 * energy * nu * (1 - rho**2))
    l_e = (mp.log(big_b / z13 * mp.sqrt((1 + xi) * (1 + y_e)) / (1 + screen * (1 + xi) * (1 + y_e)))
           - mp.log(1 + (3 * ME * z13 / (2 * MMU)) ** 2 * (1 + xi) * (1 + y_e)) / 2)
    l_mu = (mp.log(MMU / ME * big_b / z13 * mp.sqrt((1 + 1 / xi) * (1 + y_mu)) / (1 + screen * (1 + xi) * (1 + y_mu)))
            - mp.log(mp.mpf(3) / 2 * z13 * mp.sqrt((1 + 1 / xi) * (1 + y_mu))))
    phi_e = (((2 + rho**2) * (1 + beta) + xi * (3 + rho**2)) * mp.log(1 + 1 / xi)
             + (1 - rho**2 - beta) / (1 + xi) - (3 + rho**2)) * l_e
    phi_mu = (((1 + rho**2) * (1 + mp.mpf(3) / 2 * beta) - (1 + 2 * beta) * (1 - rho**2) / xi) * mp.log(1 + xi)
              + xi * (1 - rho**2 - beta) / (1 + xi) + (1 + 2 * beta) * (1 - rho**2)) * l_mu
    r_e2 = (mp.mpf(ALPHA0) / ME) ** 2 * mp.mpf(GEV2_TO_UB)  # classical electron radius squared, ub
    prefactor = 2 / (3 * mp.pi) * z * (z + _mp_zeta(energy, z)) * mp.mpf(ALPHA0) ** 2 * r_e2 * (1 - nu) / nu
    return prefactor * (max(phi_e, 0) + max(phi_mu, 0) * (ME / MMU) ** 2)


@pytest.mark.parametrize("energy, z", [(160.0, 6), (160.0, 1), (1000.0, 14)])
@pytest.mark.parametrize("nu_over_nu_min", [1.5, 30.0, 1e3])
def test_dsigma_dnu_against_mpmath(energy, z, nu_over_nu_min):
    nu = nu_over_nu_min * 4 * ELECTRON_MASS_GEV / energy
    rho_max = 1 - _mp_one_minus_rho_max(energy, nu)
    reference = 2 * mp.quad(lambda r: _mp_d2sigma(energy, nu, r, z), [0, rho_max / 2, rho_max])
    assert dsigma_dnu_ub(energy, nu, z, 2.0 * z) == pytest.approx(float(reference), rel=1e-8)


@pytest.mark.parametrize("nu", [0.3, 0.9, 0.99])
def test_d2sigma_against_mpmath_at_large_nu(nu):
    # large xi: the 1/xi expansion of B_e; the small-xi branch of B_mu is covered at nu ~ 1e-4.
    for rho in (0.0, 0.5, 0.99):
        assert d2sigma_dnu_drho_ub(160.0, nu, rho, *C) == pytest.approx(float(_mp_d2sigma(160.0, nu, rho, 6)), rel=1e-9)
    assert d2sigma_dnu_drho_ub(160.0, 2e-4, 0.3, *C) == pytest.approx(float(_mp_d2sigma(160.0, 2e-4, 0.3, 6)), rel=1e-9)


def test_total_cross_section_stable_under_refinement():
    energy, low = 160.0, 1.0
    nu_lo, nu_hi = low / energy, kinematic_limits(energy, C[0])[1]
    sigma = sigma_ub(energy, *C, low)
    assert sigma_ub(energy, *C, low, n_rho_points=64) == pytest.approx(sigma, rel=1e-9)
    # an independent adaptive quadrature in ln(nu) over the rho-integrated cross section
    reference, _ = integrate.quad(lambda y: math.exp(y) * dsigma_dnu_ub(energy, math.exp(y), *C, n_rho_points=64)[()],
                                  math.log(nu_lo), math.log(nu_hi), epsabs=0.0, epsrel=1e-11, limit=400)
    assert sigma == pytest.approx(reference, rel=1e-6)
    # the window from threshold, where rho_max opens like sqrt(nu - nu_min)
    full = sigma_ub(energy, *C, 4 * ELECTRON_MASS_GEV)
    assert sigma_ub(energy, *C, 4 * ELECTRON_MASS_GEV, n_rho_points=64) == pytest.approx(full, rel=1e-6)
    split = 4e-3
    assert sigma_ub(energy, *C, 4 * ELECTRON_MASS_GEV, split) + sigma_ub(energy, *C, split) == pytest.approx(full, rel=1e-9)


# --- sampling --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def carbon_sample():
    sampler = PairSampler(160.0, *C, 1.0)
    u = np.random.default_rng(20260101).random((1_000_000, N_UNIFORMS))
    return sampler, sampler.sample(u)


def _chi2_pvalue(observed, expected):
    chi2 = np.sum((observed - expected) ** 2 / expected)
    return stats.chi2.sf(chi2, observed.size - 1)


def test_sampled_nu_follows_the_cross_section(carbon_sample):
    sampler, out = carbon_sample
    edges = np.geomspace(1.0, sampler.nu_range[1] * 160.0, 41)
    observed, _ = np.histogram(out["nu"] * 160.0, bins=edges)
    expected = np.array([sigma_ub(160.0, *C, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])])
    assert expected.sum() == pytest.approx(sampler.sigma_ub, rel=1e-8)
    assert _chi2_pvalue(observed, observed.sum() * expected / expected.sum()) > 1e-3


def test_sampled_rho_follows_the_cross_section(carbon_sample):
    sampler, out = carbon_sample
    energy = 160.0
    edges = np.linspace(0.0, 1.0, 21)
    # expected |rho| distribution: Gauss-Legendre in ln(nu/(1 - nu)) outside, and in each bin
    # Gauss-Legendre in -ln(1 - rho) up to min(edge, rho_max(nu)) inside
    s_lo, s_hi = (math.log(v / (1 - v)) for v in sampler.nu_range)
    xs, ws = np.polynomial.legendre.leggauss(8)
    panels = np.linspace(s_lo, s_hi, 49)
    s = (0.5 * (panels[1:] - panels[:-1])[:, None] * (xs + 1) + panels[:-1, None]).ravel()
    w_s = (0.5 * (panels[1:] - panels[:-1])[:, None] * ws).ravel()
    nu = 1 / (1 + np.exp(-s))
    rho_max = np.array([1 - float(_mp_one_minus_rho_max(energy, v)) for v in nu])
    xr, wr = np.polynomial.legendre.leggauss(16)
    expected = np.zeros(edges.size - 1)
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        top = np.minimum(hi, rho_max)
        inside = top > lo
        y_lo, y_hi = -np.log1p(-lo), -np.log1p(-top[inside])
        y = 0.5 * (y_hi - y_lo)[:, None] * (xr + 1) + y_lo
        rho = -np.expm1(-y)
        f = d2sigma_dnu_drho_ub(energy, np.broadcast_to(nu[inside, None], rho.shape), rho, *C)
        inner = 0.5 * (y_hi - y_lo) * np.sum(wr * f * (1 - rho), axis=1)
        expected[k] = 2 * np.sum(w_s[inside] * nu[inside] * (1 - nu[inside]) * inner)
    assert expected.sum() == pytest.approx(sampler.sigma_ub, rel=1e-4)
    observed, _ = np.histogram(np.abs(out["rho"]), bins=edges)
    assert _chi2_pvalue(observed, observed.sum() * expected / expected.sum()) > 1e-3
    # symmetry: as many positive as negative asymmetries
    n_pos = np.count_nonzero(out["rho"] > 0)
    assert stats.binomtest(n_pos, out["rho"].size).pvalue > 1e-3


def test_sampled_final_state_conserves_energy_and_momentum(carbon_sample):
    _, out = carbon_sample
    energy = 160.0
    total = out["energy_mu_gev"] + out["energy_minus_gev"] + out["energy_plus_gev"]
    np.testing.assert_allclose(total, energy, rtol=1e-13)
    assert np.all(out["energy_minus_gev"] >= ELECTRON_MASS_GEV) and np.all(out["energy_plus_gev"] >= ELECTRON_MASS_GEV)
    for who in ("mu", "minus", "plus"):
        norm = out[f"ux_{who}"] ** 2 + out[f"uy_{who}"] ** 2 + out[f"uz_{who}"] ** 2
        np.testing.assert_allclose(norm, 1.0, rtol=1e-13)
        np.testing.assert_allclose(np.cos(out[f"theta_{who}_rad"]), out[f"uz_{who}"], rtol=1e-12)
    # momentum balance: the muon goes along p_in - p(e-) - p(e+) (the nucleus takes no transverse
    # momentum in this approximation); the mismatch of |p_in - p(e-) - p(e+)| with the muon momentum
    # is the longitudinal recoil of the nucleus, tiny for the bulk of the events
    p = {who: np.sqrt(out[f"energy_{who}_gev"] ** 2 - m**2)
         for who, m in (("mu", MUON_MASS_GEV), ("minus", ELECTRON_MASS_GEV), ("plus", ELECTRON_MASS_GEV))}
    rest = np.stack([-(p["minus"] * out[f"u{axis}_minus"] + p["plus"] * out[f"u{axis}_plus"]) for axis in "xyz"])
    rest[2] += math.sqrt(energy**2 - MUON_MASS_GEV**2)
    norm = np.linalg.norm(rest, axis=0)
    for k, axis in enumerate("xyz"):
        np.testing.assert_allclose(out[f"u{axis}_mu"], rest[k] / norm, rtol=1e-12, atol=1e-15)
    assert np.median(np.abs(norm / p["mu"] - 1)) < 1e-6
    # angles: r = E theta / m_e has median 1 for f(r) ~ r / (1 + r^2)^2; the muon stays within ~m_e/E
    r = out["energy_minus_gev"] * out["theta_minus_rad"] / ELECTRON_MASS_GEV
    assert np.median(r) == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose((out["phi_plus_rad"] - out["phi_minus_rad"]) % (2 * np.pi), np.pi, rtol=1e-12)
    assert np.median(out["theta_mu_rad"]) < 10 * ELECTRON_MASS_GEV / energy


@pytest.mark.parametrize("threads", [1, 2])
def test_tables_are_finite_up_to_the_kinematic_edge(threads):
    # the last nu nodes of a window open to the kinematic limit have no cross section: their
    # rho tables must still be finite (the sampler interpolates into them), on any thread count
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        sampler = PairSampler(160.0, 4.0, 9.012, 1.0)
    finally:
        numba.set_num_threads(previous)
    _, _, nu_pdf, _, _, x_pdf, x_cdf = sampler.tables
    assert nu_pdf[-1] == 0.0
    assert np.all(np.isfinite(x_pdf)) and np.all(np.isfinite(x_cdf))
    assert np.all(x_cdf[:, -1] == 1.0)


def test_sampling_is_a_pure_function_of_the_uniforms():
    sampler = PairSampler(150.0, *BE, 0.5, 50.0)
    u = np.random.default_rng(3).random((1000, N_UNIFORMS))
    first, again = sampler.sample(u), sampler.sample(u[::-1].copy())
    np.testing.assert_array_equal(first["nu"], again["nu"][::-1])
    assert np.all((first["nu"] * 150.0 >= 0.5 * (1 - 1e-12)) & (first["nu"] * 150.0 <= 50.0 * (1 + 1e-12)))


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sigma_ub(160.0, 0, 12.0, 1.0), r"z = 0 is outside the allowed range \(0.0, inf\]"),
        (lambda: sigma_ub(160.0, -6, 12.0, 1.0), r"z = -6 is outside the allowed range"),
        (lambda: b_pair_per_g_cm2(160.0, 6, 0.0), r"a = 0.0 is outside the allowed range \(0.0, inf\]"),
        (lambda: dsigma_dnu_ub(160.0, 0.1, 6, -1.0), r"a = -1.0 is outside the allowed range"),
        (lambda: b_pair_per_g_cm2(0.5, 6, 12.0), r"energy_gev = 0.5 is outside the allowed range \[1.0, inf\]"),
        (lambda: sigma_ub(160.0, 6, 12.0, 1e-4), r"pair_energy_min_gev = 0.0001 is outside the kinematic range \[0.002043"),
        (lambda: sigma_ub(160.0, 6, 12.0, 1.0, 170.0), r"pair_energy_max_gev = 170.0 is outside the kinematic range .*159.76"),
        (lambda: sigma_ub(160.0, 6, 12.0, 200.0), r"pair_energy_min_gev = 200.0 is outside"),
        (lambda: sigma_ub(160.0, 6, 12.0, float("nan")), r"pair_energy_min_gev = nan must be a finite number"),
        (lambda: sigma_ub(160.0, 6, 12.0, 0.0), r"pair_energy_min_gev = 0.0 is outside the kinematic range"),
        (lambda: sigma_ub(160.0, 6, 12.0, 5.0, 2.0), r"empty window: pair_energy_max_gev = 2.0 is not above pair_energy_min_gev = 5.0"),
        (lambda: PairSampler(160.0, 6, 12.0, 1.0, 1.0), r"empty window"),
        (lambda: PairSampler(160.0, 6, 12.0, 1.0, n_x=2), r"n_x = 2 must be an integer >= 3"),
        (lambda: PairSampler(160.0, 6, 12.0, 1.0).sample(np.full((3, 2), 0.5)), r"u has shape \(3, 2\)"),
        (lambda: PairSampler(160.0, 6, 12.0, 1.0).sample(np.zeros((3, N_UNIFORMS))), r"open interval"),
    ],
)
def test_bad_input_names_argument_value_and_range(call, message):
    with pytest.raises(ValueError, match=message):
        call()
