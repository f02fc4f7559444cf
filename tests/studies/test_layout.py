"""Layout scans: closed-form resolutions against Highland by hand, trends, the scan API."""

import math

import pytest

from reco.chain import ChainConfig
from studies.layout import apply_change, hit_resolution_rad, layouts, ms_resolution_rad, objective, scan

THICKNESS = "geometry.stations.*.target.thickness_cm"


@pytest.fixture(scope="module")
def base():
    return ChainConfig.from_dict({"geometry": "tr2023"})


def test_ms_resolution_is_highland_on_half_the_target(base):
    # PDG eq. 34.16 by hand: 10 GeV electron, half of 3 cm graphite (X0 = 42.70 / 1.83 cm)
    x = 1.5 / (42.70 / 1.83)
    e, m = 10.0, 0.51099895e-3
    p = math.sqrt(e * e - m * m)
    beta = p / e
    theta0 = 0.0136 / (beta * p) * math.sqrt(x) * (1 + 0.038 * math.log(x / beta**2))
    assert ms_resolution_rad(base.geometry, 10.0) == pytest.approx(theta0, rel=1e-9)


def test_trends(base):
    thick = [ms_resolution_rad(apply_change(base, THICKNESS, "set", t).geometry) for t in (0.5, 1.0, 2.0, 4.0)]
    assert thick == sorted(thick) and thick[0] < thick[-1]
    # a longer station (every module z scaled by s) shrinks the hit term exactly by 1/s
    nominal = hit_resolution_rad(base.geometry)
    short = hit_resolution_rad(apply_change(base, "geometry.stations.*.modules.*.z_cm", "scale", 0.8).geometry)
    assert short == pytest.approx(nominal / 0.8, rel=1e-9)


def test_layout_enumeration(base):
    spec = {THICKNESS: [1.0, 2.0], "geometry.stations.*.modules.*.z_cm": {"scale": [0.8, 1.0, 0.9]}}
    assert len(list(layouts(base, spec, grid=True))) == 6
    assert len(list(layouts(base, spec, grid=False))) == 5
    values, config = next(iter(layouts(base, {THICKNESS: [2.5]})))
    assert values == {THICKNESS: 2.5}
    assert [s.target.thickness_cm for s in config.geometry.stations] == [2.5, 2.5]
    with pytest.raises(ValueError, match="scan"):
        list(layouts(base, {THICKNESS: {"multiply": [2.0]}}))
    with pytest.raises(ValueError, match="non-empty"):
        list(layouts(base, {THICKNESS: []}))


def test_scan_returns_a_frame_with_sensible_trends(base):
    frame = scan(base, {THICKNESS: [0.5, 3.0]}, events=1500, seed=3, beam_muons=1e13, progress=False)
    assert list(frame[THICKNESS]) == [0.5, 3.0]
    for column in ("amu_stat_error_rel", "ms_resolution_rad", "hit_resolution_rad", "angular_resolution_rad",
                   "delta_amu_per_10um", "delta_amu_per_10um_mc_error", "figure_of_merit", "luminosity_inv_nb"):
        assert column in frame.columns
        assert frame[column].notna().all(), column
    thin, thick = frame.to_dict(orient="records")
    assert thick["ms_resolution_rad"] > thin["ms_resolution_rad"]
    # same beam: six times the target, six times the luminosity
    assert thick["luminosity_inv_nb"] == pytest.approx(6.0 * thin["luminosity_inv_nb"], rel=1e-12)
    assert thick["figure_of_merit"] >= thick["amu_stat_error_rel"]


def test_objective(base):
    value = objective({THICKNESS: 1.0}, base, events=1000, luminosity_inv_nb=1e5)
    assert math.isfinite(value) and value > 0
    # modules pushed beyond the station's length: an invalid layout, +inf for an optimizer
    assert objective({"geometry.stations.*.modules.*.z_cm": 1.5}, base, events=1000, luminosity_inv_nb=1e5,
                     mode="scale") == math.inf


def test_fixed_mass_shrinks_the_errors(base):
    from studies.layout import evaluate_layout

    free = evaluate_layout(base, events=1000, seed=4, luminosity_inv_nb=1e5)
    fixed = evaluate_layout(base, events=1000, seed=4, luminosity_inv_nb=1e5, fixed=("M_gev2",))
    assert fixed["M_stat_error_gev2"] == 0.0 and free["M_stat_error_gev2"] > 0.0
    # holding a parameter at its true value can only shrink the (Gaussian) error of a_mu
    assert fixed["amu_stat_error"] < free["amu_stat_error"]
    assert fixed["K_stat_error"] < free["K_stat_error"]
