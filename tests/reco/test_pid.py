"""Particle identification and observables: the decision on synthetic events, the kinematic
limit, the observables' definitions, the mis-identification table on a constructed case."""

import math

import numpy as np
import pytest

from fastsim import rng
from fastsim.generator.generate import Generator, GeneratorConfig
from fastsim.physics.kinematics import THETA_MU_MAX_RAD, ElasticKinematics
from reco.events import RecoEvents
from reco.observables import acoplanarity_rad, elasticity_rad
from reco.pid import PidSettings, identify, misid_table


def two_track_events(theta_e, theta_mu, phi_e, phi_mu, weight=None):
    """RecoEvents with the electron and muon as the two tracks, ordered by angle, with truth pdg."""
    n = theta_e.size
    one = theta_e >= theta_mu
    return RecoEvents({
        "event_id": np.arange(n), "weight": np.ones(n) if weight is None else weight,
        "theta_1_rad": np.where(one, theta_e, theta_mu), "theta_2_rad": np.where(one, theta_mu, theta_e),
        "phi_1_rad": np.where(one, phi_e, phi_mu), "phi_2_rad": np.where(one, phi_mu, phi_e),
        "truth_pdg_1": np.where(one, 11, -13), "truth_pdg_2": np.where(one, -13, 11)})


@pytest.fixture(scope="module")
def truth():
    return Generator(GeneratorConfig.from_dict({"elastic": {"ee_min_gev": 0.2}}), 11).chunk(0, 200_000)


def test_exact_elastic_events_are_all_identified(truth):
    events = identify(two_track_events(truth["e_theta_rad"], truth["mu_theta_rad"], truth["e_phi_rad"],
                                       truth["mu_phi_rad"]))
    true_muon_is_1 = events["truth_pdg_1"] == -13
    assert true_muon_is_1.any() and (~true_muon_is_1).any()  # both orderings occur
    assert np.array_equal(events["muon_is_1"], true_muon_is_1)
    assert np.allclose(events["theta_e_rad"], truth["e_theta_rad"], rtol=0, atol=0)
    assert np.max(np.abs(events["elasticity_rad"])) < 1e-12
    assert np.max(np.abs(events["acoplanarity_rad"])) < 1e-12


def test_smeared_events_misidentified_only_where_ambiguous(truth):
    sigma = 3e-5
    z = rng.normal_array(3, 0, len(truth), 7, 2)
    theta_e = np.abs(truth["e_theta_rad"] + sigma * z[:, 0])
    theta_mu = np.abs(truth["mu_theta_rad"] + sigma * z[:, 1])
    events = identify(two_track_events(theta_e, theta_mu, truth["e_phi_rad"], truth["mu_phi_rad"]))
    wrong = events["muon_is_1"] != (events["truth_pdg_1"] == -13)
    limit = PidSettings().muon_angle_limit_rad
    assert not wrong[theta_e > limit].any()  # above the kinematic limit the muon is never taken
    assert wrong.any()  # near theta_e ~ theta_mu (~2.5 mrad at 160 GeV) the hypotheses meet
    assert np.all(np.abs(theta_e[wrong] - 2.5e-3) < 1.5e-3)


def test_track_above_the_muon_limit_is_never_the_muon():
    kinematics = ElasticKinematics(160.0)
    # theta_2 where the muon angle is largest: hypothesis "muon = track 1 at 5.0 mrad" misses the
    # curve by 0.16 mrad, the other hypothesis by ~1 mrad, so only the limit rejects track 1
    theta_e_grid = np.linspace(1e-4, 5e-3, 49001)
    theta_2 = theta_e_grid[np.argmax(kinematics.theta_mu_from_theta_e(theta_e_grid))]
    events = RecoEvents({"event_id": np.arange(1), "theta_1_rad": [5.0e-3], "theta_2_rad": [theta_2],
                         "phi_1_rad": [0.0], "phi_2_rad": [math.pi]})
    assert THETA_MU_MAX_RAD + 5 * 3e-5 < 5.0e-3 < THETA_MU_MAX_RAD + 10 * 3e-5
    assert not identify(events, PidSettings(margin_sigmas=5.0))["muon_is_1"][0]
    assert identify(events, PidSettings(margin_sigmas=10.0))["muon_is_1"][0]


def test_missing_track_gives_nan_observables():
    events = identify(RecoEvents({"event_id": np.arange(1), "theta_1_rad": [0.01], "phi_1_rad": [0.0]}))
    assert not events["muon_is_1"][0]
    assert math.isnan(events["theta_mu_rad"][0]) and math.isnan(events["elasticity_rad"][0])


def test_observable_definitions():
    # A = pi - |phi_e - phi_mu| with the azimuths in [-pi, pi): signed, 0 when back to back
    assert acoplanarity_rad(0.3, 0.3 - math.pi + 0.1) == pytest.approx(0.1, abs=1e-15)
    assert acoplanarity_rad(0.3 + 4 * math.pi, 0.3 - math.pi + 0.1) == pytest.approx(0.1, abs=1e-12)
    assert acoplanarity_rad(-2.0, 2.0) == pytest.approx(math.pi - 4.0, abs=1e-15)
    assert acoplanarity_rad(1.0, 1.0) == pytest.approx(math.pi, abs=1e-15)
    # REFERENCE.md, 160 GeV elastic curve: theta_e = 10 mrad -> theta_mu = 0.635952 mrad
    assert elasticity_rad(10e-3, 0.635952e-3, 160.0) == pytest.approx(0.0, abs=1e-9)
    assert elasticity_rad(2e-3, 2.879776e-3 + 1e-4, 160.0) == pytest.approx(1e-4, abs=1e-9)
    assert math.isnan(elasticity_rad(-1e-3, 1e-3, 160.0))


def test_misid_table_on_a_constructed_case():
    # bin [0, 2) mrad: 4 events, weights 1, 2, 3, 4, the one of weight 3 wrong;
    # bin [2, 4) mrad: 2 events, both wrong; one event with a noise track (pdg 0) is left out
    theta_e = np.array([1.0, 1.2, 1.5, 1.9, 3.0, 3.5, 1.0]) * 1e-3
    mu_is_1 = np.array([True, True, False, False, True, False, True])  # track 1 is the true muon?
    decided = np.array([True, True, True, False, False, True, True])
    events = RecoEvents({
        "event_id": np.arange(7), "weight": [1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 5.0],
        "theta_1_rad": np.where(mu_is_1, 9e-3, theta_e), "theta_2_rad": np.where(mu_is_1, theta_e, 9e-3),
        "truth_pdg_1": np.where(mu_is_1, 13, 11), "truth_pdg_2": np.where(mu_is_1, 11, 13),
        "muon_is_1": decided})
    events["truth_pdg_2"] = np.where(np.arange(7) == 6, 0, events["truth_pdg_2"])
    table = misid_table(events, [0.0, 2e-3, 4e-3])
    assert table["events"].tolist() == [4, 2]
    assert table["misidentified"].tolist() == [1, 2]
    assert table["rate"].tolist() == pytest.approx([3.0 / 10.0, 1.0])
    assert table["rate_error"][0] == pytest.approx(math.sqrt(0.3 * 0.7 / (100.0 / 30.0)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="muon_resolution_rad = -1"):
        PidSettings(muon_resolution_rad=-1e-5)
    with pytest.raises(ValueError, match="theta_e_edges_rad"):
        misid_table(RecoEvents.empty(1), [1e-3, 1e-3])
    with pytest.raises(ValueError, match="RecoEvents"):
        identify({"theta_1_rad": np.zeros(1)})
