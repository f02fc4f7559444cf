"""The a_mu^HLO master integral against known results and mpmath quadrature."""

import math

import mpmath as mp
import numpy as np
import pytest

from fastsim.physics.amu import amu_hlo, amu_hlo_error, amu_hlo_gradient, amu_summary, integration_limit, x_from_t, x_max
from fastsim.physics.vacuum_polarization import HadronicModel, LeptonLikeModel, Pol2Model, TabulatedModel, loop_bracket
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, MUON_MASS_GEV

mp.mp.dps = 30


class ElectronLoop(HadronicModel):
    """The electron loop put in place of the hadrons: gives the two-loop VP term of a_mu."""

    name = "electron-loop"

    def dalpha(self, t):
        return ALPHA0 / math.pi * loop_bracket(t, ELECTRON_MASS_GEV**2)


def test_two_loop_electron_vacuum_polarization():
    # a_mu^(4)(vp, e) = 1.0942583 (alpha/pi)^2 (REFERENCE.md; Laporta, Nuovo Cim. A 106 (1993) 675)
    assert amu_hlo(ElectronLoop()) / (ALPHA0 / math.pi) ** 2 == pytest.approx(1.0942583, abs=6e-8)


@pytest.mark.parametrize("energy, expected", [(150.0, 0.93212), (160.0, 0.93609)])
def test_x_max(energy, expected):
    assert x_max(energy) == pytest.approx(expected, abs=6e-6)


def mp_amu_lepton_like(K, M, x_upper=1):
    """Closed-form bracket in 100-digit arithmetic (it cancels like z^-2 at small x), integrated
    in y = 1 - x so that t keeps its precision as x -> 1; x < 1e-12 adds below 1e-35."""
    mp.mp.dps = 100

    def dalpha(y):
        t = -((1 - y) ** 2) * mp.mpf(MUON_MASS_GEV) ** 2 / y
        beta = mp.sqrt(1 - 4 * M / t)
        bracket = (-mp.mpf(5) / 9 - 4 * M / (3 * t) + (4 * M**2 / (3 * t**2) + M / (3 * t) - mp.mpf(1) / 6)
                   * (2 / beta) * mp.log(-4 * M / t / (beta + 1) ** 2))  # (beta-1)/(beta+1), exact
        return K * M * bracket

    result = ALPHA0 / mp.pi * mp.quad(lambda y: y * dalpha(y), [1 - mp.mpf(x_upper), 0.1, 0.5, 0.9, 1 - mp.mpf(10) ** -12])
    mp.mp.dps = 30
    return float(result)


def test_lepton_like_reference_point():
    model = LeptonLikeModel()
    assert amu_hlo(model) == pytest.approx(mp_amu_lepton_like(mp.mpf(model.K), mp.mpf(model.M_gev2)), rel=1e-10)
    summary = amu_summary(model, 150.0)
    inside = mp_amu_lepton_like(mp.mpf(model.K), mp.mpf(model.M_gev2), x_upper=mp.mpf(summary.x_max))
    assert summary.fraction_in_range == pytest.approx(inside / summary.amu, rel=1e-9)
    assert 0.86 < summary.fraction_in_range < 0.89  # REFERENCE.md: about 87-88 %
    assert summary.amu_1e10 == pytest.approx(688.6, rel=2e-3)  # the design study's input value


def test_gradient_and_error_propagation():
    model = LeptonLikeModel()
    gradient = amu_hlo_gradient(model)
    for index, name in enumerate(model.parameter_names):
        step = 1e-6 * getattr(model, name)
        up = amu_hlo(model.with_parameters(**{name: getattr(model, name) + step}))
        down = amu_hlo(model.with_parameters(**{name: getattr(model, name) - step}))
        assert gradient[index] == pytest.approx((up - down) / (2 * step), rel=1e-7)
    cov = np.array([[4e-4, -1e-6], [-1e-6, 9e-6]])
    assert amu_hlo_error(model, cov) == pytest.approx(math.sqrt(gradient @ cov @ gradient), rel=1e-14)
    # K enters linearly: a_mu = K dA/dK
    assert gradient[0] * model.K == pytest.approx(amu_hlo(model), rel=1e-12)


def test_pol2_closed_form():
    # int_0^1 (1-x) t(x)^n dx diverges for the t^2 term, so test inside a finite range.
    model = Pol2Model(c1_per_gev2=-0.009, c2_per_gev4=0.0)
    m2 = mp.mpf(MUON_MASS_GEV) ** 2
    expected = ALPHA0 / mp.pi * mp.quad(lambda x: (1 - x) * -0.009 * (-(x**2) * m2 / (1 - x)), [0, 0.5])
    assert amu_hlo(model, x_upper=0.5) == pytest.approx(float(expected), rel=1e-11)


def test_table_integrates_up_to_its_reach(tmp_path):
    reference = LeptonLikeModel()
    t = -np.geomspace(1e-6, 50.0, 3000)
    path = tmp_path / "table.txt"
    np.savetxt(path, np.column_stack([t, reference.dalpha(t)]))
    table = TabulatedModel.from_file(path)
    assert integration_limit(table) == pytest.approx(float(x_from_t(-50.0)), rel=1e-12)
    assert amu_hlo(table) == pytest.approx(amu_hlo(reference, x_upper=integration_limit(table)), rel=1e-5)


def test_bad_covariance():
    with pytest.raises(ValueError, match=r"covariance has shape \(3, 3\), expected \(2, 2\)"):
        amu_hlo_error(LeptonLikeModel(), np.eye(3))
    with pytest.raises(ValueError, match="x_upper = 1.5"):
        amu_hlo(LeptonLikeModel(), x_upper=1.5)
