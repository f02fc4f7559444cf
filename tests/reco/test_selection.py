"""Selection: each cut on constructed events, the weighted cut flow by hand, accumulation over
chunks, configuration errors, the residual smearing (reproducible, chunk independent, its width)."""

import math

import numpy as np
import pytest

from fastsim.detector.geometry import load_geometry
from fastsim.physics.kinematics import ElasticKinematics
from reco.events import RecoEvents
from reco.pid import identify
from reco.selection import CUTS, Selection

GEOMETRY = load_geometry("tr2023")  # targets: station 0 z in [0, 2] cm, station 1 z in [100, 103] cm
KINEMATICS = ElasticKinematics(160.0)


def good_events(n, theta_e=10e-3):
    """n events that pass every default cut: elastic pair at theta_e, golden incoming muon."""
    theta_mu = float(KINEMATICS.theta_mu_from_theta_e(theta_e))
    columns = {"event_id": np.arange(n), "weight": np.ones(n), "station": np.zeros(n), "has_incoming": np.ones(n, bool),
               "n_hits_in": np.full(n, 6), "n_hits_out": np.full(n, 12), "in_x_cm": np.zeros(n), "in_y_cm": np.zeros(n),
               "in_tx": np.zeros(n), "in_ty": np.zeros(n), "vertex_z_cm": np.full(n, 1.0),
               "theta_1_rad": np.full(n, theta_e), "theta_2_rad": np.full(n, theta_mu),
               "phi_1_rad": np.full(n, 0.5), "phi_2_rad": np.full(n, 0.5 - math.pi),
               "truth_pdg_1": np.full(n, 11), "truth_pdg_2": np.full(n, -13)}
    return identify(RecoEvents(columns, {"seed": 5}))


# (cut, column, passing value, failing value): each failing value just outside the default window
CASES = [
    ("golden_muon", "n_hits_in", 6, 5), ("golden_muon", "in_x_cm", 1.5, 1.51), ("golden_muon", "in_y_cm", -1.5, -1.51),
    ("golden_muon", "in_tx", 3.99e-3, 4.01e-3), ("golden_muon", "has_incoming", True, False),
    ("hits_out", "n_hits_out", 15, 16), ("vertex_z", "vertex_z_cm", 2.99, 3.01), ("vertex_z", "vertex_z_cm", -0.99, -1.01),
    ("acoplanarity", "phi_2_rad", 0.5 - math.pi + 0.399, 0.5 - math.pi + 0.401),
]


@pytest.mark.parametrize("cut, column, good, bad", CASES)
def test_each_cut_alone(cut, column, good, bad):
    events = good_events(2)
    events[column] = [good, bad]
    events = identify(events)
    masks = dict(zip(Selection().names, Selection().masks(events, GEOMETRY)))
    for name, mask in masks.items():
        expected = [True, False] if name == cut else [True, True]
        assert mask.tolist() == expected, name


def test_kinematic_cuts_and_station_targets():
    theta_e = np.array([4.9e-3, 5.1e-3, 19.9e-3, 20.1e-3])
    events = RecoEvents.concatenate([good_events(1, t) for t in theta_e])
    selection = Selection()
    masks = dict(zip(selection.names, selection.masks(events, GEOMETRY)))
    assert masks["theta_e_window"].tolist() == [False, True, True, False]
    assert masks["theta_mu_min"].tolist() == (KINEMATICS.theta_mu_from_theta_e(theta_e) > 2e-4).tolist()
    events = good_events(4)
    events["theta_2_rad"] = events["theta_2_rad"] + np.array([1.99e-4, 2.01e-4, -1.99e-4, -2.01e-4])
    assert Selection().masks(identify(events), GEOMETRY)[-1].tolist() == [True, False, True, False]
    # station 1: target z in [100, 103] cm; tolerance 1 cm; station -1 (none) fails
    events = good_events(5)
    events["station"] = [1, 1, 1, 0, -1]
    events["vertex_z_cm"] = [103.9, 104.1, 99.5, 101.0, 1.0]
    assert Selection().masks(events, GEOMETRY)[2].tolist() == [True, False, True, False, False]


def test_weighted_cut_flow_by_hand():
    events = good_events(6)
    events["weight"] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    events["n_hits_in"] = [6, 5, 6, 6, 6, 6]  # event 1 fails golden_muon
    events["n_hits_out"] = [12, 12, 30, 12, 12, 12]  # event 2 fails hits_out
    events["theta_1_rad"] = [10e-3, 10e-3, 10e-3, 25e-3, 10e-3, 10e-3]  # event 3 fails theta_e (and elasticity)
    events["phi_2_rad"] = [0.5 - math.pi] * 5 + [0.5 - math.pi + 1.0]  # event 5 fails acoplanarity
    flow = Selection().new_cutflow()
    out = Selection().apply(identify(events), GEOMETRY, cutflow=flow)
    assert out["selected"].tolist() == [True, False, False, False, True, False]
    rows = {row["cut"]: row for row in flow.table()}
    expected = {"all": 21, "golden_muon": 19, "hits_out": 16, "vertex_z": 16, "theta_mu_min": 16,
                "theta_e_window": 12, "acoplanarity": 6, "elasticity": 6}
    assert [row["cut"] for row in flow.table()] == list(expected)
    assert {k: r["weighted_count"] for k, r in rows.items()} == expected
    assert rows["theta_e_window"]["efficiency"] == pytest.approx(12 / 16)
    assert rows["acoplanarity"]["cumulative_efficiency"] == pytest.approx(6 / 21)
    assert rows["hits_out"]["count"] == 4
    assert rows["elasticity"]["weighted_count_error"] == pytest.approx(math.sqrt(1 + 25))


def test_cut_flow_accumulates_over_chunks():
    events = good_events(100)
    events["n_hits_out"] = np.arange(100) % 20
    events["weight"] = np.linspace(0.5, 2.0, 100)
    selection = Selection()
    whole, chunked = selection.new_cutflow(), selection.new_cutflow()
    selection.apply(events, GEOMETRY, cutflow=whole)
    for part in (slice(0, 37), slice(37, 100)):
        selection.apply(events.select(np.isin(np.arange(100), np.arange(100)[part])), GEOMETRY, cutflow=chunked)
    assert np.allclose(whole.sum_w, chunked.sum_w) and np.array_equal(whole.count, chunked.count)
    assert whole.count[2] == 80


def test_residual_smearing_is_reproducible_and_chunk_independent():
    n = 40_000
    events = good_events(n)
    events["event_id"] = np.arange(n) + 1000
    selection = Selection(residual_smearing_rad=23e-6)
    whole = selection.smear(events, seed=9)
    parts = RecoEvents.concatenate([selection.smear(events.select(np.arange(n) < 15_000), seed=9),
                                    selection.smear(events.select(np.arange(n) >= 15_000), seed=9)])
    for name in ("theta_e_rad", "theta_mu_rad", "elasticity_rad", "theta_1_rad"):
        assert np.array_equal(whole[name], parts[name])
    shift = whole["theta_e_rad"] - events["theta_e_rad"]
    # width 23 urad within 5 sigma of its statistical error sigma / sqrt(2 n)
    assert abs(shift.std() - 23e-6) < 5 * 23e-6 / math.sqrt(2 * n)
    assert abs(shift.mean()) < 5 * 23e-6 / math.sqrt(n)
    # observables recomputed: elasticity follows the smeared angles
    expected = whole["theta_mu_rad"] - KINEMATICS.theta_mu_from_theta_e(whole["theta_e_rad"])
    assert np.allclose(whole["elasticity_rad"], expected, rtol=0, atol=1e-12)
    assert not np.array_equal(selection.smear(events, seed=10)["theta_e_rad"], whole["theta_e_rad"])
    # apply uses the seed of the metadata and smears before the cuts
    out = selection.apply(events, GEOMETRY)
    assert np.array_equal(out["theta_e_rad"], selection.smear(events, seed=5)["theta_e_rad"])
    assert np.array_equal(out["selected"], np.abs(out["elasticity_rad"]) < 2e-4)


def test_from_dict_default_and_overrides():
    assert Selection.from_dict({}) == Selection()
    selection = Selection.from_dict({"cuts": ["vertex_z", "elasticity"], "elasticity": {"max_abs_rad": 3e-4},
                                     "vertex_z": {"tolerance_cm": 0.5}, "residual_smearing_rad": 23e-6})
    assert selection.names == ["vertex_z", "elasticity"]
    assert selection.cut("elasticity").max_abs_rad == 3e-4
    assert Selection.from_dict(selection.to_dict()) == selection


@pytest.mark.parametrize("table, message", [
    ({"elastcity": {"max_abs_rad": 1e-4}}, r"unknown cut selection.elastcity; the known cuts are \['golden_muon'"),
    ({"cuts": ["golden_muon", "chi2"]}, r"unknown cut 'chi2' in selection.cuts; the known cuts are"),
    ({"theta_e_window": {"min_rad": 0.02, "max_rad": 0.01}}, r"selection.theta_e_window.max_rad = 0.01 is outside"),
    ({"elasticity": {"max_abs_rad": -1e-4}}, r"selection.elasticity.max_abs_rad = -0.0001 is outside"),
    ({"vertex_z": {"tolerance_cm": -1.0}}, r"selection.vertex_z.tolerance_cm = -1.0 is outside"),
    ({"golden_muon": {"n_hits": 6}}, r"unknown key selection.golden_muon.n_hits"),
    ({"golden_muon": {"n_hits_in": 5.5}}, r"selection.golden_muon.n_hits_in = 5.5 has the wrong type"),
    ({"cuts": ["vertex_z"], "elasticity": {"max_abs_rad": 1e-4}}, r"selection.elasticity sets parameters of a cut"),
    ({"residual_smearing_rad": -2e-5}, r"selection.residual_smearing_rad = -2e-05 is outside"),
    ({"cuts": ["vertex_z", "vertex_z"]}, r"names a cut twice"),
])
def test_bad_configuration(table, message):
    with pytest.raises(ValueError, match=message):
        Selection.from_dict(table)


def test_bad_application():
    with pytest.raises(ValueError, match="geometry is required by the vertex_z cut"):
        Selection().apply(good_events(1))
    events = good_events(1)
    events.metadata["folded_cuts"] = [{"name": "hits_out", "max_hits": 10}]
    with pytest.raises(ValueError, match="efficiency of the cuts"):
        Selection().apply(events, GEOMETRY)
    with pytest.raises(ValueError, match="seed is required"):
        Selection(residual_smearing_rad=1e-5).apply(RecoEvents(dict(good_events(1).columns)), GEOMETRY)
    assert set(CUTS) == {"golden_muon", "hits_out", "vertex_z", "theta_mu_min", "theta_e_window", "acoplanarity",
                         "elasticity"}
