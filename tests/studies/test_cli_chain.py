"""The chain commands: simulate, calibrate, histogram, fit, toys, systematics (small samples)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from studies.cli import main


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    output = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "--preset", "run2025", "--events", "6000", "--seed", "4", "--chunk-size", "2500",
                 "--output", str(output), "--json"]) == 0
    return output


def test_simulate_writes_events_and_cutflow(simulated, capsys):
    table = pq.read_table(simulated / "events.parquet")
    for column in ("event_id", "weight", "process", "selected", "theta_e_rad", "theta_mu_rad", "true_theta_e_rad",
                   "true_theta_mu_rad", "vertex_z_cm", "true_t_gev2"):
        assert column in table.column_names
    assert table.num_rows == 6000
    assert np.array_equal(table.column("event_id").to_numpy(), np.arange(6000))
    flow = json.loads((simulated / "cutflow.json").read_text())["cutflow"]
    assert flow[0]["cut"] == "all" and flow[0]["count"] == 6000
    selected = table.column("selected").to_numpy()
    assert flow[-1]["count"] == selected.sum()
    assert flow[-1]["weighted_count"] == pytest.approx(table.column("weight").to_numpy()[selected].sum())
    counts = [row["count"] for row in flow]
    assert counts == sorted(counts, reverse=True)


def test_simulate_json_summary_and_chunking(simulated, tmp_path, capsys):
    summary = run_json(capsys, ["simulate", "--preset", "run2025", "--events", "3000", "--seed", "4",
                                "--output", str(tmp_path), "--json"])
    assert summary["events"] == 3000
    assert {"cut", "weighted_count", "efficiency"} <= set(summary["cutflow"][0])
    written = pq.read_table(tmp_path / "events.parquet").to_pandas()
    assert written["selected"].sum() == summary["selected"]
    # the first 3000 events of the 6000-event run (other chunks: 2500 + 500) are the same events
    reference = pq.read_table(simulated / "events.parquet").to_pandas().iloc[:3000]
    assert written.equals(reference)
    assert summary["selected"] == reference["selected"].sum() > 0


def test_same_events_whatever_the_chunking(simulated, tmp_path, capsys):
    run_json(capsys, ["simulate", "--preset", "run2025", "--events", "6000", "--seed", "4", "--chunk-size", "6000",
                      "--output", str(tmp_path), "--json"])
    a = pq.read_table(simulated / "events.parquet").to_pandas()
    b = pq.read_table(tmp_path / "events.parquet").to_pandas()
    assert a.equals(b)


def test_histogram_and_fit_closure(simulated, tmp_path, capsys):
    histogram = tmp_path / "asimov.json"
    run_json(capsys, ["histogram", str(simulated), "--luminosity-inv-nb", "1e6", "--theta-e-bins", "8", "0.001", "0.025",
                      "--theta-mu-bins", "6", "0.0003", "0.0047", "--output", str(histogram), "--json"])
    result = run_json(capsys, ["fit", "--data", str(histogram), "--templates", str(simulated), "--json"])
    assert result["valid"]
    assert result["parameters"]["K"] == pytest.approx(0.13724, abs=1e-3 * result["errors"]["K"])
    assert result["amu"] == pytest.approx(688.99e-10, rel=1e-4)


def test_fit_and_toys_with_a_fixed_parameter(simulated, tmp_path, capsys):
    binning = ["--theta-e-bins", "8", "0.001", "0.025", "--theta-mu-bins", "6", "0.0003", "0.0047"]
    histogram = tmp_path / "short_run.json"
    run_json(capsys, ["histogram", str(simulated), "--luminosity-inv-nb", "5000", "--seed", "1", *binning,
                      "--output", str(histogram), "--json"])
    fit = ["fit", "--data", str(histogram), "--templates", str(simulated)]
    result = run_json(capsys, [*fit, "--fix", "M_gev2=0.0525", "--json"])
    assert result["valid"] and result["parameters"]["M_gev2"] == 0.0525 and result["errors"]["M_gev2"] == 0.0
    assert main([*fit, "--fix", "M_gev2=0.0525"]) == 0
    assert "M_gev2 = 0.0525 (fixed)" in capsys.readouterr().out
    for option, message in (("M_gev2", "--fix 'M_gev2' is not NAME=VALUE with a number"),
                            ("M_gev2=abc", "--fix 'M_gev2=abc' is not NAME=VALUE"),
                            ("M=0.05", "fixed parameter 'M' is not one of ['K', 'M_gev2', 'norm']"),
                            ("M_gev2=-1", "M_gev2 = -1.0 is outside the allowed range (0.0, inf)")):
        assert message in error_line(capsys, [*fit, "--fix", option])
    assert "--fix needs --method minuit" in error_line(capsys, [*fit, "--fix", "M_gev2=0.05", "--method", "grid"])
    assert "gives 'K' twice" in error_line(capsys, [*fit, "--fix", "K=0.1", "--fix", "K=0.2"])
    toys = run_json(capsys, ["toys", "--templates", str(simulated), "--luminosity-inv-nb", "5000", "--toys", "5",
                             "--seed", "3", *binning, "--fix", "M_gev2=0.0525", "--json"])
    assert toys["parameters"]["M_gev2"] == {"fixed": 0.0525} and toys["n_failed"] == 0


def test_toys_json_keys(simulated, capsys):
    payload = run_json(capsys, ["toys", "--templates", str(simulated), "--luminosity-inv-nb", "1e6", "--toys", "20",
                                "--seed", "3", "--theta-e-bins", "8", "0.001", "0.025", "--theta-mu-bins", "6", "0.0003",
                                "0.0047", "--json"])
    for key in ("amu_true", "amu_mean", "amu_std", "amu_stat_error_mean", "pull_mean", "pull_std", "coverage_68",
                "asimov_amu"):
        assert np.isfinite(payload[key])
    assert payload["asimov_amu"] == pytest.approx(payload["amu_true"], rel=1e-5)


def test_calibrate_then_parametric_simulate(tmp_path, capsys):
    response = tmp_path / "response.npz"
    summary = run_json(capsys, ["calibrate", "--preset", "run2025", "--events", "20000", "--seed", "8",
                                "--output", str(response), "--json"])
    assert summary["bins"] >= 3 and summary["neighbours"] == 256 and summary["file_bytes"] > 0
    capped = run_json(capsys, ["calibrate", "--preset", "run2025", "--events", "20000", "--seed", "8", "--output",
                               str(tmp_path / "capped.npz"), "--neighbours", "32", "--max-vectors-per-bin", "100", "--json"])
    assert capped["neighbours"] == 32 and capped["vectors"] <= 100 * capped["bins"] < summary["vectors"]
    assert "neighbours = 0 is outside" in error_line(capsys, ["calibrate", "--preset", "run2025", "--events", "20000",
                                                              "--seed", "8", "--output", str(tmp_path / "bad.npz"),
                                                              "--neighbours", "0"])
    nlo = tmp_path / "nlo.toml"
    nlo.write_text('geometry = "run2025"\n[generator.elastic]\nradiation = "nlo"\nee_min_gev = 1.0\n')
    assert "calibrate: generator.elastic.radiation = 'nlo'; the response resamples" in error_line(
        capsys, ["calibrate", "--config", str(nlo), "--events", "100", "--seed", "8", "--output", str(tmp_path / "n.npz")])
    parametric = run_json(capsys, ["simulate", "--preset", "run2025", "--events", "20000", "--seed", "9", "--mode",
                                   "parametric", "--calibration", str(response), "--output", str(tmp_path / "p"), "--json"])
    full = run_json(capsys, ["simulate", "--preset", "run2025", "--events", "20000", "--seed", "9",
                             "--output", str(tmp_path / "f"), "--json"])
    # the selected cross sections of the two modes agree within their MC errors (5 sigma)
    difference = parametric["sigma_selected_ub"] - full["sigma_selected_ub"]
    error = np.hypot(parametric["sigma_selected_err_ub"], full["sigma_selected_err_ub"])
    assert abs(difference) < 5 * error
    err = error_line(capsys, ["simulate", "--preset", "tr2023", "--events", "10", "--seed", "1", "--mode", "parametric",
                              "--calibration", str(response), "--output", str(tmp_path / "x")])
    assert "geometry" in err and "run2025" in err
    # a systematic of the detector needs a response calibrated for its shift: refused before the campaign
    config = tmp_path / "parametric.toml"
    config.write_text(f'geometry = "run2025"\nmode = "parametric"\ncalibration = "{response}"\n')
    err = error_line(capsys, ["systematics", "--config", str(config), "--events", "100", "--seed", "1", "--only",
                              "ms_scale", "--no-linearity", "--output", str(tmp_path / "s")])
    assert ("systematic 'ms_scale' (+1 sigma) in parametric mode: calibration = " in err
            and "was measured with simulation.ms_scale = 1.0, this chain has simulation.ms_scale = 1.01" in err)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_bad_inputs(tmp_path, capsys):
    assert "preset = 'nosuch' is unknown" in error_line(capsys, ["simulate", "--preset", "nosuch", "--events", "10",
                                                                 "--seed", "1", "--output", str(tmp_path)])
    config = tmp_path / "bad.toml"
    config.write_text('geometry = "run2025"\n[selection]\nnot_a_cut = {}\n')
    assert "unknown cut" in error_line(capsys, ["simulate", "--config", str(config), "--events", "10", "--seed", "1",
                                               "--output", str(tmp_path)])
    assert "unknown" in error_line(capsys, ["systematics", "--preset", "run2025", "--events", "10", "--seed", "1",
                                            "--only", "nosuch", "--output", str(tmp_path)])
    # a calibration without the parametric mode, and sections that are not tables
    assert ("calibration = 'response.npz' is only read with mode = 'parametric'"
            in error_line(capsys, ["simulate", "--preset", "run2025", "--events", "10", "--seed", "1",
                                   "--calibration", "response.npz", "--output", str(tmp_path)]))
    for text, message in (("pid = []", "bad.toml.pid = [] must be a table ([pid])"),
                          ("generator = 3", "bad.toml.generator = 3 must be a table ([generator])"),
                          ("[reconstruction]\ntracking = []",
                           "bad.toml.reconstruction.tracking = [] must be a table ([tracking])")):
        config.write_text(f'geometry = "run2025"\n{text}\n')
        assert message in error_line(capsys, ["simulate", "--config", str(config), "--events", "10", "--seed", "1",
                                              "--output", str(tmp_path)])


def test_systematics_command_with_a_fixed_mass(tmp_path, capsys):
    command = ["systematics", "--preset", "run2025", "--events", "600", "--seed", "1", "--only", "ms_scale",
               "--no-linearity", "--workers", "0", "--shards", "2", "--output", str(tmp_path)]
    result = run_json(capsys, command + ["--fix", "M_gev2", "--json"])
    assert result["fixed"] == ["M_gev2"] and result["stat_errors"]["M_gev2"] == 0.0
    assert [row["delta_M_gev2"] for row in result["biases"]] == [0.0]
    assert "M_gev2 fixed" in (tmp_path / "systematics.md").read_text()
    assert "'mass' is not one of the hadronic parameters" in error_line(capsys, command + ["--fix", "mass"])


def test_project_and_study_commands(tmp_path, capsys):
    result = run_json(capsys, ["project", "--preset", "quickstart", "--events", "4000", "--seed", "2", "--json"])
    assert 0 < result["amu_stat_error_rel"] and 0 < result["dalpha_had_stat_error_rel"]
    assert "preset = 'nosuch' is unknown" in error_line(capsys, ["study", "nosuch", "--output", str(tmp_path)])
    assert "preset = 'nosuch' is unknown" in error_line(capsys, ["project", "--preset", "nosuch"])
