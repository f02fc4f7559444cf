"""Study presets end to end on small samples: report files, summary keys, plots that are images."""

import json
import math

import matplotlib.image
import numpy as np
import pytest

from studies.study import Study, available_presets, luminosity_from_beam, run_study, usable_fraction

PRESETS = ("quickstart", "tr2023", "phase1_2025", "full", "layout_scan", "systematics_budget")
MEASUREMENTS = ("quickstart", "tr2023", "phase1_2025", "full", "systematics_budget")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Tiny samples: the tests check the plumbing and the files, not the precision.
EVENTS = {"quickstart": 3000, "tr2023": 3000, "phase1_2025": 3000, "full": 3000, "systematics_budget": 1000}


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3]) > 0.1, f"{path} is blank"


def test_every_preset_is_shipped_and_loads():
    assert set(PRESETS) <= set(available_presets())
    for name in PRESETS:
        study = Study.load(name)
        assert study.settings.description
        assert study.chain.hash
    # the main job fits K alone (its t range does not determine M); test_measurement_writes_report checks it
    assert Study.load("quickstart").settings.fixed == {"M_gev2": 0.0525}


@pytest.fixture(scope="module", params=MEASUREMENTS)
def measurement(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    summary = run_study(request.param, events=EVENTS[request.param], output_dir=out, progress=False, workers=0)
    return request.param, out, summary


def test_measurement_writes_report(measurement):
    name, out, summary = measurement
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("preset", "amu_stat_error_rel", "dalpha_had_stat_error_rel", "cutflow", "fit", "luminosity",
                "projection", "plots", "tables", "report", "events", "selected_events"):
        assert key in on_disk, key
    assert on_disk["preset"] == name
    assert on_disk["events"] >= EVENTS[name]
    assert 0 < on_disk["selected_events"] < on_disk["events"]
    assert math.isfinite(on_disk["amu_stat_error_rel"]) and on_disk["amu_stat_error_rel"] > 0
    assert [row["cut"] for row in on_disk["cutflow"]][0] == "all"
    counts = [row["count"] for row in on_disk["cutflow"]]
    assert counts == sorted(counts, reverse=True)  # a cut flow only loses events
    assert counts[-1] == on_disk["selected_events"]
    report = (out / "report.md").read_text()
    for table in on_disk["tables"]:
        assert "\n|---|" in (out / table).read_text(), table
    for key in ("angles_2d", "projection"):
        assert key in on_disk["plots"]
    toys = on_disk.get("toys", {}).get("summary")
    if toys:
        assert "| n_toys | n_failed | n_mass_undetermined | amu_true (1e-10) | amu_mean (1e-10) |" in report
        assert f"| {toys['amu_true'] * 1e10:.4g} |" in report  # a_mu^HLO in 1e-10, as in the fit table
        assert (f"{toys['n_mass_undetermined']} of the {toys['n_toys']} toy fits ran to M" in report) == \
            (toys["n_mass_undetermined"] > 0)
    for png in on_disk["plots"].values():
        assert f"]({png})" in report
        check_png(out / png)
    fixed = Study.load(name).settings.fixed
    for parameter, value in fixed.items():
        assert on_disk["fit"]["parameters"][parameter] == value
        assert on_disk["projection"]["parameter_errors"][parameter] == 0.0
        assert f"{parameter} fixed at {value:g}" in report
        if toys:
            assert parameter not in on_disk["toys"]["pulls"]
            assert toys["parameters"][parameter] == {"fixed": value}
        if "biases" in on_disk:
            assert parameter in on_disk["biases"]["fixed"]
            assert all(row[f"delta_{parameter}"] == 0.0 for row in on_disk["biases"]["biases"])
    if Study.load(name).settings.systematics:
        biases = on_disk["biases"]["biases"]
        skipped = {row["name"] for row in on_disk["biases"]["not_applicable"]}
        assert {b["name"] for b in biases} | skipped == set(Study.load(name).settings.systematics)
        assert "bias_budget" in on_disk["plots"]
        for row in biases:
            for key in ("name", "shift", "delta_amu", "delta_amu_mc_error", "required_precision"):
                assert key in row


def test_tr2023_luminosity_and_cross_section(measurement):
    name, out, summary = measurement
    if name != "tr2023":
        pytest.skip("tr2023 only")
    lumi = summary["luminosity"]
    # 5 pb^-1 = 5e3 nb^-1 over the 2 + 3 cm graphite targets, 3/5 of it on the usable one.
    assert lumi["luminosity_inv_nb"] == pytest.approx(5.0e3, rel=1e-3)
    assert lumi["usable_luminosity_inv_nb"] == pytest.approx(0.6 * lumi["luminosity_inv_nb"], rel=1e-12)
    xs = summary["cross_sections"]
    assert xs["reference_sigma_mc_ub"] == 77.75
    # pseudo-data are a Poisson draw of the MC: sigma_data agrees with sigma_MC within 5 sigma
    assert abs(xs["sigma_data_ub"] - xs["sigma_mc_ub"]) < 5 * math.hypot(xs["sigma_data_error_ub"], xs["sigma_mc_error_ub"])


def test_luminosity_from_beam_flux():
    from fastsim.generator.targets import Target

    # L = N_mu d rho (Z/A) N_A (REFERENCE.md), by hand: 3 cm graphite at 1.83 g/cm^3, Z/A = 6/12.0107.
    n_mu = 8.737e8
    by_hand_inv_ub = n_mu * 3.0 * 1.83 * (6.0 / 12.0107) * 6.02214076e23 * 1e-30
    (lum,) = luminosity_from_beam(n_mu, [Target("graphite", 3.0)])
    assert lum * 1e3 == pytest.approx(by_hand_inv_ub, rel=1e-12)
    assert by_hand_inv_ub == pytest.approx(1443.0, rel=0.01)  # REFERENCE.md's run: 1443 +- 8 ub^-1
    from fastsim.detector.geometry import load_geometry

    assert usable_fraction(load_geometry("tr2023")) == pytest.approx(0.6, rel=1e-12)
    assert usable_fraction(load_geometry("full")) == pytest.approx(39 / 40, rel=1e-12)


def test_layout_scan_preset(tmp_path):
    summary = run_study("layout_scan", events=500, output_dir=tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["kind"] == "layout_scan"
    n_points = sum(len(v) if isinstance(v, list) else len(next(iter(v.values())))
                   for v in Study.load("layout_scan").settings.scan.values())
    assert len(on_disk["layouts"]) == n_points
    assert on_disk["best"]["figure_of_merit"] == min(r["figure_of_merit"] for r in on_disk["layouts"])
    report = (tmp_path / "report.md").read_text()
    for png in on_disk["plots"].values():
        assert f"]({png})" in report
        check_png(tmp_path / png)
    assert [r["figure_of_merit"] for r in summary["layouts"]] == [r["figure_of_merit"] for r in on_disk["layouts"]]


def write_preset(tmp_path, study_table: str, chain: str = 'geometry = "tr2023"\n') -> str:
    path = tmp_path / "custom.toml"
    path.write_text(f"[study]\n{study_table}\n[chain]\n{chain}")
    return str(path)


@pytest.mark.parametrize("study_table, message", [
    ('luminosity_inv_nb = 1e3\nbogus_key = 1', "bogus_key"),
    ('luminosity_inv_nb = 1e3\nbeam_muons = 1e9', "exactly one of luminosity_inv_nb"),
    ('description = "no luminosity"', "exactly one of luminosity_inv_nb"),
    ('luminosity_inv_nb = -5.0', "luminosity_inv_nb"),
    ('luminosity_inv_nb = 1e3\nsystematics = ["no_such_effect"]', "no_such_effect"),
    ('luminosity_inv_nb = 1e3\nfit_method = "guess"', "fit_method"),
    ('luminosity_inv_nb = 1e3\nkind = "layout_scan"', "study.scan"),
    ('luminosity_inv_nb = 1e3\nfixed = 0.05', "study.fixed = 0.05 has the wrong type; expected dict"),
    ('luminosity_inv_nb = 1e3\nfixed = { mass = 0.05 }', "'mass' is not one of the hadronic parameters"),
    ('luminosity_inv_nb = 1e3\nfixed = { M_gev2 = -0.05 }', r"M_gev2 = -0.05 is outside the allowed range"),
    ('luminosity_inv_nb = 1e3\nfixed = { M_gev2 = "heavy" }', "fixed.M_gev2"),
    ('luminosity_inv_nb = 1e3\nfixed = { K = 0.1, M_gev2 = 0.05 }', "leaves no hadronic parameter free"),
    ('luminosity_inv_nb = 1e3\nfixed = { M_gev2 = 0.05 }\nfit_method = "grid"', "needs fit_method = 'minuit'"),
])
def test_bad_presets(tmp_path, study_table, message):
    with pytest.raises(ValueError, match=message):
        Study.load(write_preset(tmp_path, study_table))


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(ValueError, match="quickstart"):
        Study.load("no_such_preset")
