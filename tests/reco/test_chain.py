"""The chain on a geometry with an upstream telescope: a station without a target in front of the
first target measures the incoming muon of the events in that target."""

import copy
import math

import numpy as np
import pytest

from fastsim.detector.geometry import geometry_table
from reco import parametric
from reco.chain import Chain, ChainConfig, calibrate_chain

N_EVENTS = 20_000


def with_telescope(name):
    """The geometry table of preset `name` with a copy of its first station, without target,
    1 m upstream."""
    table = geometry_table(name)
    telescope = copy.deepcopy(table["stations"][0])
    telescope.pop("target")
    telescope.update(name="telescope", z_origin_cm=table["stations"][0]["z_origin_cm"] - 100.0)
    table["stations"].insert(0, telescope)
    table["name"] = f"{name}_telescope"
    return table


def core_width(values):
    low, high = np.quantile(values, [0.16, 0.84])
    return 0.5 * (high - low)


@pytest.fixture(scope="module")
def runs():
    return {label: next(Chain(ChainConfig.from_dict({"geometry": geometry}), 11).run(N_EVENTS, N_EVENTS))
            for label, geometry in (("plain", "run2025"), ("telescope", with_telescope("run2025")))}


def test_first_target_has_an_incoming_muon_only_with_a_telescope(runs):
    plain, telescope = runs["plain"], runs["telescope"]
    in_first = plain["true_vertex_z_cm"] < 50.0  # run2025: targets at z = 0, 100, 200 cm
    assert in_first.sum() > N_EVENTS / 4
    assert not np.any(plain["has_incoming"][in_first])
    assert np.array_equal(telescope["true_vertex_z_cm"], plain["true_vertex_z_cm"])  # same events
    assert np.mean(telescope["has_incoming"][in_first]) > 0.99
    assert np.mean(telescope["has_incoming"][~in_first]) > 0.99
    # the telescope's station holds no vertex: the interaction stations are the targets' (1, 2, 3)
    assert set(np.unique(telescope["station"][telescope["station"] >= 0])) <= {1, 2, 3}


def test_telescope_measures_the_muon_angle_like_an_upstream_station(runs):
    # theta_mu resolution of the first target (incoming from the telescope) against the second
    # (incoming from the first station, whose target adds scattering upstream): same to 15 %
    events = runs["telescope"]
    usable = events["has_incoming"] & (events["n_tracks_out"] >= 2) & (events["true_theta_e_rad"] > 0.01)
    residual = events["theta_mu_rad"] - events["true_theta_mu_rad"]
    first = usable & (events["true_vertex_z_cm"] < 50.0)
    second = usable & (events["true_vertex_z_cm"] > 50.0) & (events["true_vertex_z_cm"] < 150.0)
    assert first.sum() > 1000 and second.sum() > 1000
    # measured 0.959 +- 0.018 (statistical, ~6000 events each): the 15 % is the claim, not a
    # statistical bound; the target in front of the second station's muon is a physical difference
    assert core_width(residual[first]) / core_width(residual[second]) == pytest.approx(1.0, abs=0.15)
    selected = [np.mean(events["selected"][rows]) for rows in (first, second)]  # measured 0.323 and 0.327
    binomial = math.sqrt(sum(p * (1 - p) / rows.sum() for p, rows in zip(selected, (first, second))))
    assert selected[0] == pytest.approx(selected[1], abs=5 * binomial)


@pytest.fixture(scope="module")
def response_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("response") / "run2025.npz"
    calibrate_chain(ChainConfig.from_dict({"geometry": "run2025"}), N_EVENTS, 3, path)
    return path


EDGES_E, EDGES_MU = np.linspace(0.0, 0.032, 17), np.linspace(0.0002, 0.005, 13)


def test_parametric_histogram_goes_straight_from_the_generation_kernel(response_file):
    config = ChainConfig.from_dict({"geometry": "run2025", "mode": "parametric", "calibration": str(response_file)})
    chain = Chain(config, 4)
    sum_w, sum_w2 = chain.histogram(30_000, EDGES_E, EDGES_MU, chunk_size=7_000, first_event=5)
    truth = chain.generator.chunk(5, 30_000)
    expected = parametric.histogram(truth, chain.response, 4, config.selection, EDGES_E, EDGES_MU)
    assert sum_w.sum() > 0
    np.testing.assert_allclose(sum_w, expected[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(sum_w2, expected[1], rtol=1e-12, atol=0)
    # radiative events (a photon in the final state, a second t segment) go through the same kernel
    radiative = config.data | {"generator": config.data["generator"] | {"elastic": {"radiation": "nlo", "ee_min_gev": 1.0}}}
    chain = Chain(ChainConfig.from_dict(radiative), 4)
    sum_w, sum_w2 = chain.histogram(20_000, EDGES_E, EDGES_MU, chunk_size=6_000, first_event=3)
    truth = chain.generator.chunk(3, 20_000)
    assert np.count_nonzero(truth["photon_energy_gev"] > 0.0) > 1000
    expected = parametric.histogram(truth, chain.response, 4, config.selection, EDGES_E, EDGES_MU)
    np.testing.assert_allclose(sum_w, expected[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(sum_w2, expected[1], rtol=1e-12, atol=0)
    mixed = config.data | {"generator": config.data["generator"] | {"process": "all"}}
    with pytest.raises(ValueError, match="generator.process = 'all': the parametric response is calibrated on elastic"):
        Chain(ChainConfig.from_dict(mixed), 4).histogram(10, EDGES_E, EDGES_MU)
    with pytest.raises(ValueError, match=r"(?s)theta_mu_edges_rad = .* must be at least two finite, increasing edges"):
        chain.histogram(10, EDGES_E, EDGES_MU[::-1])


def test_a_response_serves_only_the_detector_and_reconstruction_it_was_measured_with(response_file, monkeypatch):
    """The chain refuses a calibration made for another geometry (misalignment included),
    simulation, reconstruction, identification or toolkit version, naming the key; the
    generator's settings may differ (they change the truth the response smears)."""
    import fastsim

    nominal = ChainConfig.from_dict({"geometry": "run2025", "mode": "parametric", "calibration": str(response_file)})
    Chain(nominal, 1)
    for key, change, message in (
            ("simulation.ms_scale", lambda v: 1.5 * v, r"simulation.ms_scale = 1.0, this chain has simulation.ms_scale = 1.5"),
            ("pid.muon_resolution_rad", lambda v: 3 * v, r"pid.muon_resolution_rad = "),
            ("reconstruction.tracking.ms_scale", lambda v: 0.0, r"reconstruction.tracking.ms_scale = 1.0, .* = 0.0"),
            ("generator.beam.energy_gev", lambda v: 150.0, r"pid.beam_energy_gev = 160.0, this chain has pid.beam_energy_gev = 150.0"),
            ("geometry.stations.1.modules.2.misalignment", lambda v: {"dx_cm": 0.01},
             r"geometry.stations.1.modules.2.misalignment.dx_cm = 0.0, this chain has .*dx_cm = 0.01")):
        changed = nominal.with_change(key, change, create=True)
        with pytest.raises(ValueError, match=rf"calibration = '.*run2025.npz' was measured with {message}"):
            Chain(changed, 1)
    for key, change in (("generator.elastic.K", lambda v: 1.1 * v), ("generator.beam.energy_shift_gev", lambda v: 0.003)):
        Chain(nominal.with_change(key, change, create=True), 1)
    assert Chain(nominal.with_change("geometry.stations.1.modules.2.misalignment", lambda v: {"dx_cm": 0.0}, create=True), 1)
    monkeypatch.setattr(fastsim, "__version__", "0.0.1")
    with pytest.raises(ValueError, match=r"measured with version .* this is 0.0.1, whose events differ: calibrate again"):
        Chain(nominal, 1)


def test_parametric_cut_flow_is_comparable_with_the_full_one(response_file):
    """Same truth in both modes: the "all" rows are the same generated cross section, the first
    folded cut's row carries the folded efficiency (the other folded rows 1), and the selected
    cross sections agree within their errors."""
    chains = {mode: Chain(ChainConfig.from_dict({"geometry": "run2025", **extra}), 5) for mode, extra in
              (("full", {}), ("parametric", {"mode": "parametric", "calibration": str(response_file)}))}
    flows = {}
    for mode, chain in chains.items():
        for _ in chain.run(N_EVENTS, N_EVENTS):
            pass
        flows[mode] = chain.cutflow.table()
    full, fast = flows["full"], flows["parametric"]
    assert fast[0]["weighted_count"] == pytest.approx(full[0]["weighted_count"], rel=1e-12)
    folded = [spec["name"] for spec in ChainConfig.from_dict({"geometry": "run2025"}).selection.non_kinematic_specs()]
    rows = {row["cut"]: row for row in fast}
    assert rows[folded[0]]["efficiency"] < 0.9  # the golden muon's 2/3 and the rest, measured together
    assert all(rows[name]["efficiency"] == 1.0 for name in folded[1:])
    error = math.hypot(full[-1]["weighted_count_error"], fast[-1]["weighted_count_error"])
    assert abs(fast[-1]["weighted_count"] - full[-1]["weighted_count"]) < 5 * error


def test_full_histogram_is_that_of_the_selected_events():
    config = ChainConfig.from_dict({"geometry": "run2025"})
    sum_w, sum_w2 = Chain(config, 6).histogram(4_000, EDGES_E, EDGES_MU, chunk_size=1_500)
    events = next(Chain(config, 6).run(4_000, 4_000))
    s = events["selected"]
    w = events["weight"][s]
    coordinates = (events["theta_e_rad"][s], events["theta_mu_rad"][s])
    assert sum_w.sum() > 0
    np.testing.assert_allclose(sum_w, np.histogram2d(*coordinates, bins=(EDGES_E, EDGES_MU), weights=w)[0],
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(sum_w2, np.histogram2d(*coordinates, bins=(EDGES_E, EDGES_MU), weights=w * w)[0],
                               rtol=1e-12, atol=0)
