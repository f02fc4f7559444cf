"""Parametric mode: calibrate -> apply closure against a synthetic 'full mode', reproducibility,
the file and its geometry check, the direct histogram."""

import math

import numpy as np
import pytest
from scipy import stats

from fastsim import rng
from fastsim.config import content_hash
from fastsim.detector.geometry import load_geometry
from fastsim.generator.generate import Generator, GeneratorConfig
from fastsim.physics.kinematics import ElasticKinematics
from reco.events import RecoEvents
from reco.parametric import _TRUTH_KEYS, CalibrationSample, ParametricResponse, apply, calibrate, histogram
from reco.pid import identify
from reco.selection import Selection

GEOMETRY = load_geometry("tb2022_station")
TARGET_CENTRE_CM = 1.0  # tb2022_station: 2 cm graphite, upstream face at z = 0
SEED = 20240611
TEST_STREAM = 7  # streams of the synthetic detector below, with the seed SMEAR_SEED (not the toolkit's)
SMEAR_SEED = 99
# Known resolution of the synthetic 'full mode': incoming direction error (per plane), muon track,
# electron constant term and multiple scattering k / E_e, a 3 % tail with 4x the width.
SIGMA_IN, SIGMA_MU, SIGMA_E0, SCATTERING_RAD_GEV = 2e-5, 2e-5, 2e-5, 3.3e-3
TAIL_FRACTION, TAIL_SCALE = 0.03, 4.0
# A muon polar-angle bias that oscillates with the true theta_mu, finer than the response's 1 mrad
# theta_e bins (~30-300 urad of theta_mu a bin here): the kind of structure a binary strip readout
# gives the full mode (reco.parametric module doc).
STRUCTURE_RAD, STRUCTURE_PERIOD_RAD = 12e-6, 100e-6


def truth_sample(first, n):
    return Generator(GeneratorConfig.from_dict({"elastic": {"ee_min_gev": 1.0}}), SEED).chunk(first, n)


def full_mode(truth, ms_scale=1.0):
    """A synthetic full-mode RecoEvents: track slopes smeared with a known correlated resolution
    (a common incoming-direction error, independent track errors with a tail), a hit-count
    inefficiency rising with theta_e, 1 % events with one track lost, and a muon bias with fine
    structure in the true theta_mu."""
    n = len(truth)
    ids = truth["event_id"]
    z = np.concatenate([rng.normal_array(SMEAR_SEED, int(ids[0]), n, TEST_STREAM, 8)], axis=0)
    u = rng.uniform_array(SMEAR_SEED, int(ids[0]), n, TEST_STREAM + 1, 4)
    energy = ElasticKinematics(160.0).electron_energy_gev(truth["t_gev2"])
    sigma_e = ms_scale * np.hypot(SIGMA_E0, SCATTERING_RAD_GEV / energy)
    sigma_e = np.where(u[:, 0] < TAIL_FRACTION, TAIL_SCALE * sigma_e, sigma_e)
    sigma_mu = np.where(u[:, 1] < TAIL_FRACTION, TAIL_SCALE * SIGMA_MU, SIGMA_MU)
    dx, dy = SIGMA_IN * z[:, 0], SIGMA_IN * z[:, 1]

    def track(theta, phi, sigma, zx, zy, bias=0.0):
        sx = (theta + bias) * np.cos(phi) + sigma * zx - dx
        sy = (theta + bias) * np.sin(phi) + sigma * zy - dy
        return np.hypot(sx, sy), np.arctan2(sy, sx)

    te, pe = track(truth["e_theta_rad"], truth["e_phi_rad"], sigma_e, z[:, 2], z[:, 3])
    structure = STRUCTURE_RAD * np.sin(2 * math.pi * truth["mu_theta_rad"] / STRUCTURE_PERIOD_RAD)
    tm, pm = track(truth["mu_theta_rad"], truth["mu_phi_rad"], sigma_mu, z[:, 4], z[:, 5], structure)
    lost = u[:, 2] < 0.01
    te = np.where(lost, np.nan, te)
    one = ~(tm > te)
    columns = {
        "event_id": ids, "process": truth["process"], "weight": truth["weight"], "true_t_gev2": truth["t_gev2"],
        "true_theta_e_rad": truth["e_theta_rad"], "true_theta_mu_rad": truth["mu_theta_rad"],
        "true_phi_e_rad": truth["e_phi_rad"], "true_phi_mu_rad": truth["mu_phi_rad"],
        "true_vertex_z_cm": np.full(n, TARGET_CENTRE_CM), "beam_energy_gev": truth["beam_energy_gev"],
        "station": np.zeros(n), "n_hits_in": np.full(n, 6), "has_incoming": np.ones(n, dtype=bool),
        "n_hits_out": np.where(u[:, 3] < 0.02 + 2.0 * truth["e_theta_rad"], 20, 12),
        "n_tracks_out": np.where(lost, 1, 2), "in_x_cm": np.zeros(n), "in_y_cm": np.zeros(n), "in_tx": dx,
        "in_ty": dy, "vertex_z_cm": np.full(n, TARGET_CENTRE_CM),
        "theta_1_rad": np.where(one, te, tm), "phi_1_rad": np.where(one, pe, pm),
        "theta_2_rad": np.where(one, tm, te), "phi_2_rad": np.where(one, pm, pe),
        "truth_pdg_1": np.where(one, 11, -13), "truth_pdg_2": np.where(one, -13, 11),
    }
    return identify(RecoEvents(columns, {"seed": SMEAR_SEED}))


N = 500_000
XE = np.linspace(5e-3, 20e-3, 16)
YE = np.linspace(0.2e-3, 1.5e-3, 53)  # 25 urad bins: comparable to the resolution


@pytest.fixture(scope="module")
def samples():
    """Independent events: full-mode validation [N, 2N), parametric [2N, 3N), calibration
    [3N, 7N): four times the validation, so that the response's own statistical error
    (CALIBRATION_RATIO in the chi2) stays small next to the validation's."""
    calibration = full_mode(truth_sample(3 * N, 4 * N))
    return {"calibration": calibration, "response": calibrate(calibration, GEOMETRY),
            "validation": Selection().apply(full_mode(truth_sample(N, N)), GEOMETRY),
            "truth": truth_sample(2 * N, N)}


def selected_histogram(events, theta_e_edges=XE):
    s = events["selected"]
    w = events["weight"][s]
    args = (events["theta_e_rad"][s], events["theta_mu_rad"][s], [theta_e_edges, YE])
    return np.histogram2d(*args, weights=w)[0], np.histogram2d(*args, weights=w * w)[0]


#: Validation over calibration events: the parametric histogram b also carries the calibration
#: sample's fluctuations, at most va * N_validation / N_calibration (b would be the calibration
#: histogram scaled by that ratio if the truth added no noise of its own). Without this term,
#: 24 seeds gave chi2/ndf = 1.071 +- 0.032 (2 of 24 below p = 1e-3); with it 0.95.
CALIBRATION_RATIO = 1.0 / 4.0


def chi2_p_value(a, va, b, vb, min_effective=20):
    """chi2 of the validation histogram a and the parametric histogram b over bins with >=
    min_effective effective events in both (n_eff = sum(w)^2 / sum(w^2)), with the calibration's
    statistical error in b (CALIBRATION_RATIO)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        used = (a * a / va > min_effective) & (b * b / vb > min_effective)
    chi2 = float(np.sum((a - b)[used] ** 2 / (va * (1.0 + CALIBRATION_RATIO) + vb)[used]))
    return stats.chi2.sf(chi2, int(used.sum())), int(used.sum())


def test_closure_parametric_reproduces_the_full_2d_histogram(samples):
    a, va = selected_histogram(samples["validation"])
    b, vb = histogram(samples["truth"], samples["response"], 5, Selection(), XE, YE)
    p, bins = chi2_p_value(a, va, b, vb)
    assert bins > 150
    assert p > 1e-3


def test_closure_test_detects_a_wrong_resolution(samples):
    # negative control: the electron scattering term 25 % too large must be seen
    wrong = calibrate(full_mode(truth_sample(0, N), ms_scale=1.25), GEOMETRY)
    a, va = selected_histogram(samples["validation"])
    b, vb = histogram(samples["truth"], wrong, 5, Selection(), XE, YE)
    assert chi2_p_value(a, va, b, vb)[0] < 1e-3


def test_closure_test_detects_lost_fine_structure(samples):
    # negative control: drawing the residual from all calibration events (an infinitely wide
    # window) loses the muon bias's structure in theta_mu, and the closure test must see it
    wide = calibrate(samples["calibration"], GEOMETRY, neighbours=10 ** 9)
    a, va = selected_histogram(samples["validation"])
    b, vb = histogram(samples["truth"], wide, 5, Selection(), XE, YE)
    assert chi2_p_value(a, va, b, vb)[0] < 1e-6


def test_efficiency_and_resolution_are_measured(samples):
    response, calibration = samples["response"], samples["calibration"]
    # efficiency: 1 % of events lose a track, then n_hits_out fails with probability 0.02 + 2 theta_e
    theta, weight = calibration["true_theta_e_rad"], calibration["weight"]
    for b in (3, 10, 20):
        low, high = response.theta_e_edges_rad[b:b + 2]
        inside = (theta >= low) & (theta < high)
        expected = 0.99 * np.sum(weight[inside] * (0.98 - 2 * theta[inside])) / weight[inside].sum()
        assert abs(response.efficiency[b] - expected) < 5 * response.efficiency_error[b]
    # muon polar-angle width: the track and the incoming direction in quadrature (Gaussian core)
    core = math.hypot(SIGMA_MU, SIGMA_IN)
    assert np.all(np.abs(response.width_rad[5:25, 1] / core - 1) < 0.1)
    # theta_e and theta_mu anti-correlated through the incoming direction where theta_e is small
    assert response.correlation[5, 0, 1] < -0.03


def test_calibration_from_chunks_equals_calibration_from_events(samples):
    # what calibrate_chain does: the compact sample chunk by chunk, then one calibration
    calibration = samples["calibration"]
    rows = np.arange(len(calibration))
    parts = [CalibrationSample.from_events(calibration.select((rows >= a) & (rows < b)), GEOMETRY, Selection())
             for a, b in ((0, 123_457), (123_457, 4 * N))]
    response = calibrate(CalibrationSample.concatenate(parts), GEOMETRY)
    for name in ParametricResponse._ARRAYS:
        assert np.array_equal(getattr(response, name), getattr(samples["response"], name)), name
    with pytest.raises(ValueError, match="made with the non-kinematic cuts"):
        calibrate(parts[0], GEOMETRY, Selection.from_dict({"cuts": ["golden_muon"]}))


@pytest.mark.parametrize("theta_e_min_rad", [5e-3, 1e-3])
def test_histogram_equals_apply_then_selection(samples, theta_e_min_rad):
    """Also with theta_e_min below the muon-angle limit, where the histogram must identify the
    tracks too, and with the events in random order (consecutive events share a Philox block)."""
    selection = Selection.from_dict({"theta_e_window": {"min_rad": theta_e_min_rad, "max_rad": 20e-3}})
    edges_e = np.linspace(theta_e_min_rad, 20e-3, 16)
    truth = samples["truth"].select(np.arange(N) < 100_000)
    events = selection.apply(apply(truth, samples["response"], 5), GEOMETRY)
    a, va = selected_histogram(events, edges_e)
    if theta_e_min_rad < 5e-3:  # some selected events had their smaller angle identified as the electron
        assert np.any(events["selected"] & events["muon_is_1"])
    b, vb = histogram(truth, samples["response"], 5, selection, edges_e, YE, n_blocks=3)
    assert np.allclose(a, b, rtol=1e-12, atol=0) and np.allclose(va, vb, rtol=1e-12, atol=0)
    order = np.random.default_rng(1).permutation(len(truth))
    shuffled = {name: truth[name][order] for name in _TRUTH_KEYS}
    c, vc = histogram(shuffled, samples["response"], 5, selection, edges_e, YE, n_blocks=3)
    assert np.allclose(a, c, rtol=1e-12, atol=0) and np.allclose(va, vc, rtol=1e-12, atol=0)
    assert events.metadata["mode"] == "parametric"
    assert np.allclose(events["vertex_z_cm"], truth["vertex_z_cm"])


def test_smearing_is_independent_of_the_chunking(samples):
    truth = samples["truth"].select(np.arange(N) < 50_000)
    whole = apply(truth, samples["response"], 7)
    parts = RecoEvents.concatenate([apply(truth.select(np.arange(50_000) < 12_345), samples["response"], 7),
                                    apply(truth.select(np.arange(50_000) >= 12_345), samples["response"], 7)])
    for name in ("theta_e_rad", "theta_mu_rad", "phi_e_rad", "acoplanarity_rad", "weight", "muon_is_1"):
        assert np.array_equal(whole[name], parts[name])
    assert not np.array_equal(apply(truth, samples["response"], 8)["theta_e_rad"], whole["theta_e_rad"])


def test_file_round_trip_and_geometry_check(samples, tmp_path):
    response = samples["response"]
    path = response.save(tmp_path / "response.npz")
    loaded = ParametricResponse.load(path, GEOMETRY)
    assert loaded.geometry_hash == content_hash(GEOMETRY) and loaded.settings == response.settings
    assert np.array_equal(loaded.residuals, response.residuals)
    truth = samples["truth"].select(np.arange(N) < 10_000)
    assert np.array_equal(apply(truth, loaded, 1)["theta_e_rad"], apply(truth, response, 1)["theta_e_rad"])
    other = load_geometry("tr2023")
    with pytest.raises(ValueError, match=r"calibrated with geometry 'tb2022_station' \(hash [0-9a-f]+\), "
                                         r"not with geometry 'tr2023'"):
        ParametricResponse.load(path, other)
    (tmp_path / "junk.npz").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="is not a parametric-response file"):
        ParametricResponse.load(tmp_path / "junk.npz")


def test_bad_inputs(samples):
    response = samples["response"]
    truth = {"event_id": np.arange(3), "weight": np.ones(3), "e_theta_rad": np.full(3, 0.01),
             "mu_theta_rad": np.full(3, 6e-4), "e_phi_rad": np.zeros(3), "mu_phi_rad": np.full(3, math.pi),
             "process": np.array([0, 1, 0])}
    with pytest.raises(ValueError, match="1 events are not elastic"):
        apply(truth, response, 1)
    with pytest.raises(ValueError, match=r"missing arrays \['weight'\]"):
        apply({k: v for k, v in truth.items() if k != "weight"}, response, 1)
    with pytest.raises(ValueError, match="seed"):
        apply(truth, response, -1)
    with pytest.raises(ValueError, match="non-kinematic cuts"):
        histogram(truth, response, 1, Selection.from_dict({"hits_out": {"max_hits": 10}}), XE, YE)
    with pytest.raises(ValueError, match="fewer than min_events_per_bin"):
        calibrate(samples["calibration"].select(np.arange(4 * N) < 2000), GEOMETRY, theta_e_edges_rad=[0, 1e-4, 0.04])
    with pytest.raises(ValueError, match="neighbours = 0 is outside"):
        calibrate(samples["calibration"], GEOMETRY, neighbours=0)
    with pytest.raises(ValueError, match="truth: e_theta_rad has 1 values that are not finite"):
        apply({**truth, "process": np.zeros(3), "e_theta_rad": np.array([0.01, np.nan, 0.02])}, response, 1)
