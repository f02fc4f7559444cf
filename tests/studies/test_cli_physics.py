"""`muone xsec` and `muone amu`: results, JSON keys and bad input (one line, exit 2)."""

import json
import subprocess
import sys

import pytest

from studies.cli import main


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_xsec_reference_value(capsys):
    status, out, _ = run(capsys, "xsec", "--beam-energy-gev", "150", "--ee-min-gev", "1", "--running", "none", "--json")
    assert status == 0
    result = json.loads(out)
    assert result["sigma_ub"] == pytest.approx(245.038905, rel=1e-7)
    assert result["beam_energy_gev"] == 150.0
    assert result["cuts"] == {"ee_min_gev": 1.0}
    assert result["running"] == "none"


def test_xsec_defaults_to_lepton_and_hadron_running(capsys):
    status, out, _ = run(capsys, "xsec", "--beam-energy-gev", "160", "--ee-min-gev", "1", "--theta-mu-min-rad", "2e-4", "--json")
    result = json.loads(out)
    assert status == 0 and result["running"] == "lep+had"
    assert result["hadronic"] == {"model": "ll", "K": 0.13724, "M_gev2": 0.0525}


def test_amu_json(capsys):
    status, out, _ = run(capsys, "amu", "--had-model", "ll", "--K", "0.13724", "--M", "0.0525", "--json")
    result = json.loads(out)
    assert status == 0
    assert result["amu"] == pytest.approx(6.89e-8, rel=2e-3)
    assert result["amu_1e10"] == pytest.approx(result["amu"] * 1e10, rel=1e-15)
    assert 0.86 < result["fraction_in_range"] < 0.89


def test_amu_pol2_and_table(capsys, tmp_path):
    status, out, _ = run(capsys, "amu", "--had-model", "pol2", "--c1", "-0.009", "--c2", "0", "--json")
    assert status == 0 and json.loads(out)["hadronic"]["model"] == "pol2"
    # a quadratic term that takes over beyond the measured range: the integral is dominated by the
    # extrapolation (a_mu^HLO = -714e-10, fraction_in_range = -0.85), and the text output says so
    status, out, _ = run(capsys, "amu", "--had-model", "pol2", "--c1", "-0.009057", "--c2", "-0.01364")
    assert status == 0 and "fraction from x < x_max = 0.93609 (160.0 GeV): -0.8486" in out
    assert "the model does not describe Dalpha_had there" in out
    status, out, _ = run(capsys, "amu", "--had-model", "ll")
    assert status == 0 and "note" not in out
    table = tmp_path / "table.csv"
    table.write_text("t_gev2,dalpha_had\n-0.001,1e-5\n-0.1,8e-4\n-10,1e-2\n")
    status, out, _ = run(capsys, "amu", "--had-table", str(table), "--json")
    result = json.loads(out)
    assert status == 0 and result["x_upper"] < 1.0 and result["hadronic"]["rows"] == 3


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["xsec", "--beam-energy-gev", "-1", "--ee-min-gev", "1"], "beam_energy_gev = -1.0"),
        (["xsec", "--beam-energy-gev", "0.1", "--ee-min-gev", "1"], "beam_energy_gev = 0.1"),
        (["xsec", "--beam-energy-gev", "150", "--ee-min-gev", "500"], "ee_min_gev = 500.0 is outside the allowed range"),
        (["xsec", "--beam-energy-gev", "150", "--ee-min-gev", "5", "--ee-max-gev", "2"], "empty cut window"),
        (["xsec", "--beam-energy-gev", "150", "--ee-min-gev", "1", "--theta-e-max-rad", "1.6"], "theta_e_max_rad = 1.6"),
        (["xsec", "--beam-energy-gev", "150", "--ee-min-gev", "1", "--M", "0"], "M_gev2 = 0.0 is outside the allowed range (0.0, inf)"),
        (["amu", "--M", "-0.1"], "M_gev2 = -0.1"),
        (["amu", "--had-table", "/nonexistent/table.csv"], "cannot be read"),
        (["amu", "--had-model", "pol2", "--K", "0.1"], "--K/--M belong to --had-model ll"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert fragment in err


def test_malformed_table_file(capsys, tmp_path):
    table = tmp_path / "bad.csv"
    table.write_text("-0.1,0.001\n-0.2,zzz\n")
    status, _, err = run(capsys, "amu", "--had-table", str(table))
    assert status == 2 and "line 2" in err and "Traceback" not in err


def test_console_script_help_and_version():
    help_text = subprocess.run([sys.executable, "-m", "studies.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("xsec", "amu"):
        assert name in help_text
    version = subprocess.run([sys.executable, "-m", "studies.cli", "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("muone ")
