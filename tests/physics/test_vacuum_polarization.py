"""Vacuum polarization against mpmath quadrature of the one-loop integral and REFERENCE.md."""

import math

import mpmath as mp
import numpy as np
import pytest

from fastsim.physics.vacuum_polarization import (
    SERIES_SWITCH_Z,
    LeptonLikeModel,
    NoHadronicModel,
    Pol2Model,
    RunningCoupling,
    TabulatedModel,
    dalpha_lep,
    loop_bracket,
)
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, MUON_MASS_GEV, TAU_MASS_GEV

mp.mp.dps = 40


def bracket_mpmath(t, mass2):
    """B(t; M) = int_0^1 2x(1-x) ln(1 + x(1-x) (-t/M)) dx, an independent representation."""
    z = mp.mpf(-t) / mp.mpf(mass2)
    return mp.quad(lambda x: 2 * x * (1 - x) * mp.log(1 + x * (1 - x) * z), [0, 0.5, 1])


@pytest.mark.parametrize("z", [1e-9, 1e-4, 0.1, 0.7, 0.999, 1.001, 3.0, 40.0, 1e4, 1e9])
def test_bracket_against_quadrature(z):
    assert loop_bracket(-z * 0.3, 0.3) == pytest.approx(float(bracket_mpmath(-z * 0.3, 0.3)), rel=2e-15)


def test_series_and_closed_form_are_continuous_at_the_switch():
    below = loop_bracket(-SERIES_SWITCH_Z * (1 - 1e-15), 1.0)
    above = loop_bracket(-SERIES_SWITCH_Z * (1 + 1e-15), 1.0)
    assert above / below - 1 == pytest.approx(0.0, abs=1e-12)
    model = LeptonLikeModel(K=1.0, M_gev2=1.0)
    slopes = model.gradient(np.array([-SERIES_SWITCH_Z * (1 - 1e-15), -SERIES_SWITCH_Z * (1 + 1e-15)]))
    assert slopes[1, 1] / slopes[1, 0] - 1 == pytest.approx(0.0, abs=1e-12)


def test_small_t_series_leading_terms():
    z = 1e-3
    assert loop_bracket(-z, 1.0) == pytest.approx(z / 15 - z**2 / 140 + z**3 / 945, rel=1e-12)


def test_leptonic_reference_value():
    assert dalpha_lep(-0.01) == pytest.approx(7.008085e-3, rel=1e-7)
    expected = sum(ALPHA0 / math.pi * bracket_mpmath(-0.05, m**2) for m in (ELECTRON_MASS_GEV, MUON_MASS_GEV, TAU_MASS_GEV))
    assert dalpha_lep(-0.05) == pytest.approx(float(expected), rel=1e-13)


def test_lepton_like_model_and_its_derivatives():
    model = LeptonLikeModel()
    t = np.array([-1e-4, -0.01, -0.14, -3.0])
    expected = [model.K * model.M_gev2 * float(bracket_mpmath(ti, model.M_gev2)) for ti in t]
    np.testing.assert_allclose(model.dalpha(t), expected, rtol=1e-14)
    # small |t| limit: -K t / 15
    assert model.dalpha(-1e-8) == pytest.approx(-model.K * -1e-8 / 15, rel=1e-6)
    gradient = model.gradient(t)
    for index, name in enumerate(model.parameter_names):
        step = 1e-6 * getattr(model, name)
        up = model.with_parameters(**{name: getattr(model, name) + step}).dalpha(t)
        down = model.with_parameters(**{name: getattr(model, name) - step}).dalpha(t)
        # at t = -1e-4, dDalpha/dM ~ z^2 is tiny and the difference quotient carries rounding noise
        np.testing.assert_allclose(gradient[index], (up - down) / (2 * step), rtol=1e-7, atol=1e-14)


def test_pol2_model():
    model = Pol2Model()
    t = np.array([-0.01, -0.1])
    np.testing.assert_allclose(model.dalpha(t), -0.009057 * t - 0.01364 * t**2, rtol=1e-15)
    np.testing.assert_allclose(model.gradient(t), [t, t**2])
    assert model.parameters == {"c1_per_gev2": -0.009057, "c2_per_gev4": -0.01364}


def test_table_model_interpolates_in_log_t(tmp_path):
    reference = LeptonLikeModel()
    t = -np.geomspace(1e-5, 10.0, 400)
    path = tmp_path / "dalpha.csv"
    path.write_text("t_gev2,dalpha_had\n" + "\n".join(f"{a!r},{b!r}" for a, b in zip(t.tolist(), reference.dalpha(t).tolist())))
    table = TabulatedModel.from_file(path)
    probe = -np.geomspace(2e-5, 9.0, 97)
    np.testing.assert_allclose(table.dalpha(probe), reference.dalpha(probe), rtol=2e-4)
    np.testing.assert_allclose(table.dalpha(t), reference.dalpha(t), rtol=1e-14)
    assert table.dalpha(-5e-6) == pytest.approx(reference.dalpha(t[0]) * 0.5, rel=1e-12)
    with pytest.raises(ValueError, match=r"t_gev2 = -20.0 is outside the range of table"):
        table.dalpha(-20.0)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("-0.1 0.001\n-0.2\n", "line 2 has 1 columns"),
        ("-0.1 0.001\n-0.2 abc\n", "line 2 is not two numbers"),
        ("-0.1 0.001\n", "need at least 2"),
        ("-0.1 0.001\n0.2 0.002\n", "t_gev2 = 0.2 is outside the allowed range"),
    ],
)
def test_malformed_table(tmp_path, content, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        TabulatedModel.from_file(path)
    assert fragment in str(info.value)


def test_missing_table(tmp_path):
    with pytest.raises(ValueError, match="had_table = .*cannot be read"):
        TabulatedModel.from_file(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: LeptonLikeModel(M_gev2=0.0), "M_gev2 = 0.0 is outside the allowed range (0.0, inf)"),
        (lambda: LeptonLikeModel(M_gev2=-1.0), "M_gev2 = -1.0"),
        (lambda: LeptonLikeModel(K=float("nan")), "K = nan"),
        (lambda: dalpha_lep(0.0), "t_gev2 = 0.0 is outside the allowed range (-inf, 0)"),
        (lambda: dalpha_lep(np.array([-1.0, 0.5])), "t_gev2 = 0.5"),
        (lambda: loop_bracket(-1.0, -2.0), "mass2_gev2 = -2.0"),
        (lambda: LeptonLikeModel().dalpha(1e-3), "t_gev2 = 0.001"),
        (lambda: LeptonLikeModel().with_parameters(Q=1.0), "unknown parameter"),
        (lambda: RunningCoupling("had"), "running = 'had'"),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


def test_running_coupling_combinations():
    t = np.array([-0.02, -0.1])
    assert np.all(RunningCoupling("none").factor(t) == 1.0)
    np.testing.assert_allclose(RunningCoupling("lep").dalpha(t), dalpha_lep(t))
    np.testing.assert_allclose(RunningCoupling("lep+had").dalpha(t), dalpha_lep(t) + LeptonLikeModel().dalpha(t))
    np.testing.assert_allclose(RunningCoupling("lep+had", NoHadronicModel()).dalpha(t), dalpha_lep(t))
