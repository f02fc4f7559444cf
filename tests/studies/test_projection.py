"""Projections: keys, the 1/sqrt(L) scaling, Fisher errors against a MINUIT Asimov fit, t_ref."""

import math

import numpy as np
import pytest

from studies.projection import projection_curves, reference_t_gev2, stat_errors, systematic_error
from studies.study import Study, simulate_templates
from systematics.fit import fit_histogram


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    study = Study.load("quickstart", events=4000, workers=0)
    return study, simulate_templates(study, tmp_path_factory.mktemp("projection"), progress=False)


def test_project_keys_and_scaling(tmp_path):
    from studies.projection import project

    one = project("quickstart", luminosity_inv_nb=1e5, events=4000, output_dir=tmp_path, progress=False)
    for key in ("amu_stat_error_rel", "dalpha_had_stat_error_rel", "amu_stat_error", "dalpha_had_stat_error",
                "t_ref_gev2", "luminosity_inv_nb", "curves", "goals"):
        assert key in one, key
    assert (tmp_path / "projection.png").stat().st_size > 5_000
    assert (tmp_path / "projection.json").exists()
    four = project("quickstart", luminosity_inv_nb=4e5, events=4000, output_dir=tmp_path, progress=False)
    # the same template sample (the campaign resumes), four times the luminosity: half the error
    assert one["amu_stat_error_rel"] / four["amu_stat_error_rel"] == pytest.approx(2.0, rel=1e-9)
    assert one["dalpha_had_stat_error_rel"] / four["dalpha_had_stat_error_rel"] == pytest.approx(2.0, rel=1e-9)
    curve = one["curves"]["luminosity"]
    errors = [row["amu_stat_error_rel"] for row in curve]
    lums = [row["luminosity_inv_nb"] for row in curve]
    np.testing.assert_allclose(np.array(errors) * np.sqrt(lums), errors[0] * math.sqrt(lums[0]), rtol=1e-9)
    stations = one["curves"]["stations"]
    assert [row["stations"] for row in stations] == sorted(row["stations"] for row in stations)
    assert all(a["amu_stat_error_rel"] > b["amu_stat_error_rel"] for a, b in zip(stations, stations[1:]))


def test_fisher_errors_match_an_asimov_minuit_fit(bundle):
    _, b = bundle
    luminosity = 2e5
    expected = stat_errors(b.template, luminosity, "free", b.t_ref_gev2)
    fit = fit_histogram(b.template.histogram(None, luminosity), b.template, luminosity_inv_nb=luminosity,
                        normalization="free", strict=False)
    # HESSE of the Asimov fit is the (numerical) Fisher information: a few per cent at most
    assert fit.errors[0] == pytest.approx(expected["parameter_errors"]["K"], rel=0.05)
    assert fit.amu.error == pytest.approx(expected["amu_stat_error"], rel=0.05)


def test_fixed_mass_errors_are_those_of_k_alone(bundle):
    _, b = bundle
    luminosity = 2e5
    free = stat_errors(b.template, luminosity, "free", b.t_ref_gev2)
    fixed = stat_errors(b.template, luminosity, "free", b.t_ref_gev2, fixed=("M_gev2",))
    assert fixed["parameter_errors"]["M_gev2"] == 0.0
    assert "correlation_K_M" not in fixed and "correlation_K_M" in free
    assert fixed["parameter_errors"]["K"] < free["parameter_errors"]["K"]
    # At fixed M, a_mu^HLO and Dalpha_had(t) are both proportional to K: one relative error.
    k_rel = fixed["parameter_errors"]["K"] / b.template.family.reference[0]
    assert fixed["amu_stat_error_rel"] == pytest.approx(k_rel, rel=1e-9)
    assert fixed["dalpha_had_stat_error_rel"] == pytest.approx(k_rel, rel=1e-9)
    mass = float(b.template.family.reference[1])
    fit = fit_histogram(b.template.histogram(None, luminosity), b.template, luminosity_inv_nb=luminosity,
                        fixed={"M_gev2": mass})
    assert fit.errors[0] == pytest.approx(fixed["parameter_errors"]["K"], rel=0.05)
    assert fit.amu.error == pytest.approx(fixed["amu_stat_error"], rel=0.05)


def test_reference_t_is_the_elastic_t_at_the_lowest_theta_e(bundle):
    study, b = bundle
    # REFERENCE.md: E_e = m_e (1 + r^2 c^2) / (1 - r^2 c^2), r = p / (E + m_e), t = 2 m_e (m_e - E_e)
    m_e, m_mu, energy, theta = 0.51099895e-3, 0.1056583755, 160.0, 5e-3
    r = math.sqrt(energy**2 - m_mu**2) / (energy + m_e)
    c2 = math.cos(theta) ** 2
    e_e = m_e * (1 + r * r * c2) / (1 - r * r * c2)
    # 1e-8: PDG editions differ in m_e at 1e-9 (the toolkit reads the `particle` package)
    assert b.t_ref_gev2 == pytest.approx(2 * m_e * (m_e - e_e), rel=1e-8)
    assert reference_t_gev2(study.chain.selection, 160.0) == b.t_ref_gev2


def test_systematic_error_and_total(bundle):
    _, b = bundle
    rows = [{"name": "a", "n_sigma": 1.0, "delta_amu": 3e-10}, {"name": "b", "n_sigma": 1.0, "delta_amu": -4e-10},
            {"name": "a", "n_sigma": 2.0, "delta_amu": 6e-10}]
    assert systematic_error(rows) == pytest.approx(5e-10, rel=1e-12)
    assert systematic_error([]) is None
    curves = projection_curves(b.template, 1e5, "free", b.t_ref_gev2, [1e5, 1e7], systematic_amu=5e-10)
    low, high = curves["luminosity"]
    assert high["amu_syst_error_rel"] == low["amu_syst_error_rel"]
    assert high["amu_total_error_rel"] == pytest.approx(math.hypot(high["amu_stat_error_rel"], high["amu_syst_error_rel"]))


def test_bad_luminosity(bundle):
    _, b = bundle
    with pytest.raises(ValueError, match="luminosity_inv_nb"):
        stat_errors(b.template, 0.0)
