"""`muone generate`: output file, JSON summary, and bad input (exit 2, no partial file)."""

import json
import os

import numpy as np
import pytest

from fastsim.events import read_truth
from studies.cli import main


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_generate_writes_parquet_and_summary(capsys, tmp_path):
    output = tmp_path / "events.parquet"
    status, out, _ = run(capsys, "generate", "--events", "20000", "--seed", "3", "--ee-min-gev", "1",
                         "--beam-energy-gev", "150", "--running", "none", "--output", str(output), "--json")
    assert status == 0
    summary = json.loads(out)
    assert summary["events"] == 20000
    assert summary["sigma_ub"] == pytest.approx(245.038905, abs=5 * summary["sigma_err_ub"])
    events = read_truth(output)
    assert len(events) == 20000
    for column in ("event_id", "process", "weight", "e_energy_gev", "e_theta_rad", "mu_energy_gev", "mu_theta_rad"):
        assert column in events.columns
    assert set(events.process_names) == {"elastic"}
    assert events.metadata["seed"] == 3 and events.metadata["config_hash"] == summary["config_hash"]
    assert [name for name in os.listdir(tmp_path) if name != "events.parquet"] == []


def test_generate_with_config_file(capsys, tmp_path):
    config = tmp_path / "gen.toml"
    config.write_text("""
process = "elastic"
[beam]
energy_gev = 150.0
energy_spread_rel = 0.03
[[targets]]
material = "graphite"
thickness_cm = 3.0
[elastic]
running = "lep"
ee_min_gev = 0.2
""")
    output = tmp_path / "events.parquet"
    status, out, _ = run(capsys, "generate", "--config", str(config), "--events", "5000", "--seed", "1", "--output", str(output), "--json")
    assert status == 0
    events = read_truth(output)
    assert events["beam_energy_gev"].std() == pytest.approx(4.5, rel=0.1)
    assert np.all(events["vertex_z_cm"] <= 3.0)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--events", "0"], "events = 0"),
        (["--events", "-5"], "events = -5"),
        (["--seed", "-1"], "seed"),
        (["--config", "/nonexistent/config.toml"], "cannot be read"),
        (["--output", "/nonexistent-dir/out.parquet"], "cannot be written"),
    ],
)
def test_generate_bad_input(capsys, tmp_path, argv, fragment):
    base = {"--events": "100", "--seed": "1", "--output": str(tmp_path / "out.parquet")}
    for key, value in zip(argv[::2], argv[1::2]):
        base[key] = value
    args = ["generate"] + [item for pair in base.items() for item in pair]
    status, out, err = run(capsys, *args)
    assert status == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("[beam]\nenergy_gev = 'high'\n", "config.toml.beam.energy_gev = 'high' has the wrong type"),
        ("[beam]\nenergie_gev = 150.0\n", "unknown key"),
        ("[elastic]\nee_min_gev = 500.0\n", "ee_min_gev = 500.0"),
        ("[beam\n", "is not valid TOML"),
        ("[[targets]]\nmaterial = 'Be'\nthickness_cm = 0.0\n", "thickness_cm = 0.0"),
    ],
)
def test_generate_malformed_config(capsys, tmp_path, content, fragment):
    config = tmp_path / "config.toml"
    config.write_text(content)
    status, _, err = run(capsys, "generate", "--config", str(config), "--events", "10", "--seed", "1",
                         "--output", str(tmp_path / "out.parquet"))
    assert status == 2 and fragment in err
    assert sorted(os.listdir(tmp_path)) == ["config.toml"]


def test_bench_reports_every_generation_stage(capsys):
    # the structure and the units of `muone bench`; its figures are measured by hand (README)
    status, out, _ = run(capsys, "bench", "--events", "20000", "--json")
    assert status == 0
    results = json.loads(out)["benchmarks"]
    stages = [r["stage"] for r in results]
    for process in ("elastic, weighted, monochromatic", "NLO-like radiation", "pair production", "mixed",
                    "simulation of one station"):
        assert any(process in stage for stage in stages), process
    assert all(r["events_per_s"] > 0 and r["threads"] == 1 for r in results)
