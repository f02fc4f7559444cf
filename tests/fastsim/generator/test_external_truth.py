"""Imported MESMER events as TruthEvents and through `muone import`."""

import json
from pathlib import Path

import numpy as np
import pytest

from fastsim.events import read_truth
from fastsim.generator.external import read_external, truth_from_external
from fastsim.generator.targets import Target
from fastsim.units import ELECTRON_MASS_GEV
from studies.cli import main

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mesmer" / "mesmer_nlo_160gev_eemin1_3k.dat.xz"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"MESMER sample not found at {SAMPLE}")


def test_mesmer_events_become_truth():
    events = read_external(SAMPLE)
    targets = (Target("Be", 1.5, 0.0), Target("graphite", 3.0, 50.0))
    truth = truth_from_external(events, targets, seed=4)
    assert len(truth) == 3000
    assert set(truth.process_names) == {"external"}
    assert truth["weight"].mean() == pytest.approx(253.18, abs=0.01)
    assert np.all(truth["e_energy_gev"] > 1.0)
    np.testing.assert_allclose(truth["t_gev2"], 2 * ELECTRON_MASS_GEV * (ELECTRON_MASS_GEV - truth["e_energy_gev"]))
    in_first = (truth["vertex_z_cm"] >= 0) & (truth["vertex_z_cm"] <= 1.5)
    in_second = (truth["vertex_z_cm"] >= 50) & (truth["vertex_z_cm"] <= 53)
    assert np.all(in_first | in_second) and np.array_equal(truth["target_index"] == 0, in_first)
    assert np.count_nonzero(truth["photon_energy_gev"] > 0) == 2070
    # a file read in two pieces gets the same vertices as read whole
    head = truth_from_external(events.select(np.arange(3000) < 1000), targets, seed=4)
    tail = truth_from_external(events.select(np.arange(3000) >= 1000), targets, seed=4, first_event=1000)
    np.testing.assert_array_equal(np.concatenate([head["vertex_z_cm"], tail["vertex_z_cm"]]), truth["vertex_z_cm"])


def test_muone_import(capsys, tmp_path):
    output = tmp_path / "mesmer.parquet"
    assert main(["import", str(SAMPLE), "--output", str(output), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 3000
    assert summary["sigma_ub"] == pytest.approx(summary["file_sigma_ub"], rel=1e-12)
    assert len(read_truth(output)) == 3000


def test_muone_import_bad_input(capsys, tmp_path):
    broken = tmp_path / "broken.dat"
    broken.write_text("this is not a MESMER file\n")
    assert main(["import", str(broken), "--output", str(tmp_path / "out.parquet")]) == 2
    err = capsys.readouterr().err
    assert "broken.dat" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.dat"]
