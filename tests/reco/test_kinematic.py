"""Elastic kinematic fit: chi2 law on Gaussian toys, exact events, resolution gain in the chain."""

import math

import numpy as np
import pytest
from scipy import stats

from reco.chain import Chain, ChainConfig
from reco.kinematic import elastic_fit_kernel
from reco.observables import elastic_theta_mu_kernel
from reco.vertex import VertexSettings

BEAM_GEV = 160.0


def _elastic_slopes(theta_e, phi_e):
    """(incoming, muon, electron) slopes of an exact elastic event, incoming muon along z."""
    theta_mu = elastic_theta_mu_kernel(BEAM_GEV, theta_e)
    phi_mu = phi_e + math.pi
    slope = lambda theta, phi: (math.tan(theta) * math.cos(phi), math.tan(theta) * math.sin(phi))
    return np.array([0.0, 0.0, *slope(theta_mu, phi_mu), *slope(theta_e, phi_e)]), theta_mu


def test_exact_event_is_left_alone():
    p0, theta_mu = _elastic_slopes(0.012, 0.7)
    p = np.empty(6)
    chi2, theta_e, fitted_mu = elastic_fit_kernel(p0, np.diag(np.full(6, 1e-10)), True, BEAM_GEV, 3, p)
    assert chi2 < 1e-12
    assert theta_e == pytest.approx(0.012, abs=1e-12) and fitted_mu == pytest.approx(theta_mu, abs=1e-12)
    np.testing.assert_allclose(p, p0, atol=1e-12)


def test_chi2_follows_two_degrees_of_freedom_for_gaussian_errors():
    rng = np.random.default_rng(3)
    sigma = np.array([2e-5, 2e-5, 1e-5, 1e-5, 1e-4, 1e-4])  # incoming, muon, electron slopes
    v = np.diag(sigma ** 2)
    p = np.empty(6)
    chi2 = []
    for _ in range(20_000):
        p0, _ = _elastic_slopes(rng.uniform(0.005, 0.02), rng.uniform(-math.pi, math.pi))
        chi2.append(elastic_fit_kernel(p0 + sigma * rng.standard_normal(6), v, True, BEAM_GEV, 3, p)[0])
    assert stats.kstest(chi2, stats.chi2(2).cdf).pvalue > 1e-3


def test_missing_slope_gives_nan():
    p0, _ = _elastic_slopes(0.01, 0.0)
    p0[4] = np.nan
    assert all(math.isnan(x) for x in elastic_fit_kernel(p0, np.eye(6), True, BEAM_GEV, 3, np.empty(6)))


@pytest.fixture(scope="module")
def fitted():
    config = ChainConfig.from_dict({"geometry": "run2025", "reconstruction": {"vertex": {"elastic_fit": True}}})
    events, _ = Chain(config, 5).reconstructed(0, 30_000)
    return events


def test_chain_fit_has_the_chi2_law_and_improves_theta_mu(fitted):
    events = fitted
    good = (events["process"] == 0) & events["has_incoming"] & np.isfinite(events["elastic_chi2"])
    assert good.sum() > 15_000
    # Gaussian core: the median of chi2(2) is 1.386; the tails from bremsstrahlung and scattering
    # move it up by 1-2.5 % (other seeds), and the sample median has a 1 % standard error: within
    # 6 %, so that a fit covariance 5 % off (chi2 10 % off) fails
    assert np.median(events["elastic_chi2"][good]) == pytest.approx(stats.chi2(2).median(), rel=0.06)
    window = good & (events["true_theta_e_rad"] > 0.005) & (events["true_theta_e_rad"] < 0.02)

    def width(values):
        return 0.5 * np.diff(np.quantile(values, [0.159, 0.841]))[0]

    raw = width(events["theta_mu_rad"][window] - events["true_theta_mu_rad"][window])
    constrained = width(events["elastic_theta_mu_rad"][window] - events["true_theta_mu_rad"][window])
    assert constrained < 0.7 * raw  # 37.8 -> 19.8 urad on 1e5 events
    # the other hypothesis is far from elastic where the angles tell the particles apart
    other = np.where(events["muon_is_1"], events["elastic_chi2_mu_2"], events["elastic_chi2_mu_1"])
    assert np.median(other[window]) > 100.0


def test_fit_is_off_by_default_and_the_flag_is_checked():
    events, _ = Chain(ChainConfig.from_dict({"geometry": "run2025"}), 5).reconstructed(0, 200)
    assert np.all(np.isnan(events["elastic_chi2"]))
    with pytest.raises(ValueError, match="elastic_fit = 'yes' must be true or false"):
        VertexSettings(elastic_fit="yes")


def test_radiative_events_have_larger_chi2(fitted):
    config = ChainConfig.from_dict({"geometry": "run2025", "generator": {"elastic": {"radiation": "nlo"}},
                                    "reconstruction": {"vertex": {"elastic_fit": True}}})
    radiative, _ = Chain(config, 5).reconstructed(0, 30_000)

    def tail(events):  # weighted fraction with chi2 > 20: 1.7 % without radiation, 5.6 % with
        good = (events["process"] == 0) & events["has_incoming"] & np.isfinite(events["elastic_chi2"])
        w = events["weight"][good]
        return np.sum(w * (events["elastic_chi2"][good] > 20.0)) / np.sum(w)

    assert tail(radiative) > 2.0 * tail(fitted)
