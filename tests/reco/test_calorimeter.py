"""Calorimeter reconstruction and the calorimeter-assisted identification, full and parametric."""

from dataclasses import replace

import numpy as np
import pytest

from fastsim.detector.calorimeter import IMPACT_SHOWER
from fastsim.detector.geometry import Calorimeter
from reco.calorimeter import calorimeter_columns
from reco.chain import Chain, ChainConfig
from reco.parametric import CalibrationSample, apply, calibrate, histogram
from reco.pid import PidSettings, calorimeter_term_kernel, identify, misid_table
from reco.selection import Selection

N_EVENTS = 100_000
AMBIGUOUS_RAD = (1e-3, 5e-3)  # reconstructed electron angle where theta_e ~ theta_mu


def _config(calorimeter: bool) -> ChainConfig:
    return ChainConfig.from_dict({"geometry": "run2025", "pid": {"calorimeter": calorimeter}})


@pytest.fixture(scope="module")
def run():
    """run2025 with the calorimeter in the identification: events and simulated chunk."""
    return Chain(_config(True), 21).reconstructed(0, N_EVENTS)


def _misidentified(events, window=AMBIGUOUS_RAD):
    """(misidentified, events) with the true electron's track in `window`."""
    table = misid_table(events, np.array(window))
    return int(table["misidentified"].iloc[0]), int(table["events"].iloc[0])


def _weighted_misidentified(events, window=AMBIGUOUS_RAD):
    """(sum of weights, its statistical error) of the misidentified events in `window`."""
    pdg_1, pdg_2 = np.abs(events["truth_pdg_1"]), np.abs(events["truth_pdg_2"])
    muon_is_1 = (pdg_1 == 13) & (pdg_2 == 11)
    electron_angle = np.where(muon_is_1, events["theta_2_rad"], events["theta_1_rad"])
    wrong = ((pdg_1 + pdg_2 == 24) & (events["muon_is_1"] != muon_is_1)
             & (electron_angle > window[0]) & (electron_angle < window[1]))
    w = events["weight"][wrong]
    return w.sum(), np.sqrt(np.sum(w * w))


def test_cluster_position_and_energy_of_electron_showers(run):
    events, chunk = run
    impacts = chunk.calorimeter_impacts
    electron = np.argmax(impacts[:, :, 3] == IMPACT_SHOWER, axis=1)
    rows = np.arange(len(events))
    x, y, energy = (impacts[rows, electron, k] for k in range(3))
    inner = 1.5 * 2.85  # the impact in the central 3x3 crystals: the whole cluster inside the array
    use = (impacts[rows, electron, 3] == IMPACT_SHOWER) & (abs(x) < inner) & (abs(y) < inner) & (energy > 10.0)
    assert use.sum() > 2000
    dx = events["calo_x_cm"][use] - x[use]
    dy = events["calo_y_cm"][use] - y[use]
    for d in (dx, dy):  # log-weighted centroid of 2.85 cm crystals: 0.9 mm, no bias (5 standard errors)
        assert abs(d.mean()) < 5 * d.std() / np.sqrt(d.size)
        assert 0.03 < d.std() < 0.15
    ratio = events["calo_energy_gev"][use] / energy[use]
    assert 0.90 < np.median(ratio) < 1.0  # the 3x3 block holds ~99 % of a shower above 10 GeV (median 0.992)


def test_columns_of_a_constructed_event():
    calo = Calorimeter(z_cm=300.0, x_cm=0.5, n_x=3, n_y=3, crystal_size_cm=2.0)
    energies = np.zeros((2, 9))
    energies[0, 5] = 10.0  # column 2, row 1: centre (2.0, 0.0) + the array's offset
    tracks = np.full((2, 2, 4), np.nan)
    tracks[0, 0] = (0.1, 0.2, 1e-3, -2e-3)
    tracks[0, 1] = (0.0, 0.0, 0.0, 5e-3)
    columns = calorimeter_columns(energies, calo, tracks, np.array([200.0, np.nan]))
    assert columns["calo_energy_gev"][0] == 10.0
    assert (columns["calo_x_cm"][0], columns["calo_y_cm"][0]) == (2.5, 0.0)
    assert columns["calo_x_1_cm"][0] == pytest.approx(0.2) and columns["calo_y_1_cm"][0] == pytest.approx(0.0)
    assert columns["calo_y_2_cm"][0] == pytest.approx(0.5)
    assert np.isnan(columns["calo_energy_gev"][1]) and np.isnan(columns["calo_x_1_cm"][1])
    with pytest.raises(ValueError, match="do not match the calorimeter's 3 x 3 crystals"):
        calorimeter_columns(np.zeros((2, 25)), calo, tracks, np.zeros(2))


def test_calorimeter_term():
    args = (1.0, 0.1, 0.9, 5.0)  # min energy, resolution, noise term, gate
    # cluster on track 2: "track 1 is the muon" is favoured by d_1^2 / sigma^2
    sigma2 = 0.1 ** 2 + (0.9 / 20.0) ** 2
    assert calorimeter_term_kernel(20.0, 1.0, 0.0, 1.5, 0.0, 1.0, 0.0, *args) == pytest.approx(-0.25 / sigma2)
    assert calorimeter_term_kernel(0.3, 1.0, 0.0, 1.5, 0.0, 1.0, 0.0, *args) == 0.0  # a MIP
    assert calorimeter_term_kernel(20.0, 9.0, 0.0, 1.5, 0.0, 1.0, 0.0, *args) == 0.0  # far from both tracks
    assert calorimeter_term_kernel(np.nan, 1.0, 0.0, 1.5, 0.0, 1.0, 0.0, *args) == 0.0


def test_calorimeter_resolves_the_ambiguous_region(run):
    events, _ = run
    with_calo = _misidentified(events)
    without = _misidentified(identify(events.select(np.ones(len(events), bool)), PidSettings()))
    assert with_calo[1] == without[1] > 500
    assert without[0] / without[1] > 0.08  # kinematics alone: ~11 %
    assert with_calo[0] / with_calo[1] < 0.04  # the calorimeter's position: ~2 %
    # the residual smearing swaps the tracks' order with their calorimeter extrapolations
    smeared = Selection(residual_smearing_rad=23e-6).smear(events, 5, _config(True).pid)
    assert abs(_misidentified(smeared)[0] - with_calo[0]) < 4 * np.sqrt(with_calo[0]) + 2


def test_parametric_mode_carries_the_calorimeter_decision(run):
    events, _ = run
    config = _config(True)
    selection = Selection()
    calibration, _ = Chain(config, 22).reconstructed(0, 2 * N_EVENTS)
    sample = CalibrationSample.from_events(calibration, config.geometry, selection, config.pid)
    response = calibrate(sample, config.geometry, selection, config.pid)
    elastic = events.select(events["process"] == 0)
    # the parametric events stand for the full-mode events passing the non-kinematic cuts
    non_kinematic = Selection(tuple((name, cut) for name, cut in selection.cuts if not cut.kinematic))
    passing = np.logical_and.reduce(non_kinematic.masks(elastic, config.geometry))
    full, full_error = _weighted_misidentified(elastic.select(passing))
    parametric_events = apply(elastic, response, 23)
    parametric, parametric_error = _weighted_misidentified(parametric_events)
    error = np.hypot(full_error, parametric_error)
    assert abs(full - parametric) < 4 * error
    # the residual (data/MC) smearing identifies again: the calorimeter's term goes with the tracks
    smeared = Selection(residual_smearing_rad=23e-6).smear(parametric_events, 5, config.pid)
    assert abs(_weighted_misidentified(smeared)[0] - parametric) < 4 * error
    # negative control: a response that leaves the calorimeter out misidentifies several times more
    kinematic_pid = replace(config.pid, calorimeter=False)
    kinematic = calibrate(CalibrationSample.from_events(calibration, config.geometry, selection, kinematic_pid),
                          config.geometry, selection, kinematic_pid)
    assert _weighted_misidentified(apply(elastic, kinematic, 23))[0] > full + 8 * error
    with pytest.raises(ValueError, match="pid_settings.calorimeter = False, but the calibration sample was made with"):
        calibrate(sample, config.geometry, selection, kinematic_pid)
    # the direct histogram takes the same decisions, calorimeter terms included, on both sides of
    # the muon-angle limit (below it the histogram must identify the tracks)
    for theta_e_min_rad in (5e-3, 1e-3):
        window = Selection.from_dict({"theta_e_window": {"min_rad": theta_e_min_rad, "max_rad": 20e-3}})
        edges_e, edges_mu = np.linspace(theta_e_min_rad, 20e-3, 16), np.linspace(2e-4, 5e-3, 25)
        chosen = window.apply(parametric_events, config.geometry)["selected"]
        expected = np.histogram2d(parametric_events["theta_e_rad"][chosen], parametric_events["theta_mu_rad"][chosen],
                                  bins=(edges_e, edges_mu), weights=parametric_events["weight"][chosen])[0]
        sum_w, _ = histogram(elastic, response, 23, window, edges_e, edges_mu)
        assert np.allclose(sum_w, expected, rtol=1e-12, atol=0) and expected.sum() > 0


def test_calorimeter_identification_needs_a_calorimeter():
    with pytest.raises(ValueError, match="pid.calorimeter = true, but geometry 'tb2022_station' has no"):
        ChainConfig.from_dict({"geometry": "tb2022_station", "pid": {"calorimeter": True}})
    with pytest.raises(ValueError, match="calorimeter = 'yes' must be true or false"):
        PidSettings(calorimeter="yes")
    with pytest.raises(ValueError, match="calorimeter_resolution_cm = 0.0 is outside the allowed range"):
        PidSettings(calorimeter_resolution_cm=0.0)
