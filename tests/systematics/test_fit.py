import numpy as np
import pytest

from systematics.fit import fit_histogram
from systematics.histogram import Binning, Histogram
from systematics.result import FitError

FULL_INV_NB = 1.5e7


@pytest.fixture(scope="module")
def asimov(template):
    return template.histogram(None, FULL_INV_NB)


@pytest.mark.parametrize("normalization", ["free", "fixed", "constrained"])
def test_asimov_closure_minuit(template, asimov, normalization):
    kwargs = {"luminosity_error_rel": 0.01} if normalization == "constrained" else {}
    result = fit_histogram(asimov, template, normalization=normalization, **kwargs)
    assert result.valid and result.status.startswith("converged")
    truth = template.reference_parameters
    for i, name in enumerate(template.parameter_names):
        assert abs(result.values[i] - truth[i]) < 1e-3 * result.errors[i], name
    from fastsim.physics.amu import amu_hlo
    from fastsim.physics.vacuum_polarization import LeptonLikeModel

    amu_true = amu_hlo(LeptonLikeModel(*truth))
    assert abs(result.amu.value - amu_true) < 1e-3 * result.amu.error
    assert result.cost < 1e-6  # Asimov data: the deviance vanishes at the truth
    assert -0.99 < result.correlation("K", "M_gev2") < -0.5
    assert 0.85 < result.amu.fraction_in_range < 0.9  # REFERENCE.md: about 87-88 % measured
    document = result.to_dict()
    assert document["valid"] and document["amu"] == result.amu.value


def test_minuit_covariance_matches_fisher_information(template, asimov):
    # on Asimov data the Hessian of -2 ln L is twice the Fisher information J^T W J
    from systematics.fit import expected_covariance
    from systematics.likelihood import BinnedLikelihood

    likelihood = BinnedLikelihood(asimov, template)
    result = fit_histogram(asimov, template)
    np.testing.assert_allclose(result.covariance, expected_covariance(likelihood, result.values), rtol=2e-3)


def test_grid_agrees_with_minuit(template, asimov):
    minuit = fit_histogram(asimov, template)
    grid = fit_histogram(asimov, template, method="grid")
    assert grid.valid
    for i in range(2):
        # the paraboloid of a bent (K, M) surface: agreement to a few % of the error
        assert abs(grid.values[i] - minuit.values[i]) < 0.1 * minuit.errors[i]
        assert grid.errors[i] == pytest.approx(minuit.errors[i], rel=0.1)
    assert abs(grid.amu.value - minuit.amu.value) < 0.1 * minuit.amu.error
    assert grid.amu.error == pytest.approx(minuit.amu.error, rel=0.1)


def test_fit_of_shifted_truth(template):
    data = template.histogram((0.14, 0.05), FULL_INV_NB)
    result = fit_histogram(data, template)
    np.testing.assert_allclose(result.values[:2], [0.14, 0.05], atol=1e-6)


def test_mcmc_posterior(template, asimov):
    result = fit_histogram(asimov, template, method="mcmc", n_walkers=16, n_steps=1000, n_burn=200, seed=4,
                           n_amu_samples=200)
    again = fit_histogram(asimov, template, method="mcmc", n_walkers=16, n_steps=1000, n_burn=200, seed=4,
                          n_amu_samples=200)
    np.testing.assert_array_equal(result.values, again.values)  # seeded
    minuit = fit_histogram(asimov, template)
    for i in range(2):
        # medians within 0.3 sigma of the maximum likelihood (posterior skew + MC error of a short chain)
        assert abs(result.values[i] - minuit.values[i]) < 0.3 * minuit.errors[i]
        assert result.errors[i] == pytest.approx(minuit.errors[i], rel=0.25)
    low, high = result.details["intervals_68"]["K"]
    assert low < minuit.values[0] < high
    assert result.amu.posterior["interval_68"][0] < minuit.amu.value < result.amu.posterior["interval_68"][1]
    assert result.amu.error == pytest.approx(minuit.amu.error, rel=0.25)
    assert -0.99 < result.correlation("K", "M_gev2") < -0.5


def test_bad_inputs(template, binning, asimov):
    with pytest.raises(ValueError, match="data histogram is empty: every bin is zero"):
        fit_histogram(Histogram(binning, np.zeros(binning.shape)), template)
    with pytest.raises(ValueError, match="binning mismatch on axis theta_e_rad: data has 16 bins, templates has 32"):
        fit_histogram(Histogram(Binning.uniform(theta_e_rad=(16, 0.0, 0.032), theta_mu_rad=(20, 0.0, 0.005)),
                                np.ones((16, 20))), template)
    with pytest.raises(ValueError, match=r"data has axes \['theta_e_rad'\], templates has axes"):
        fit_histogram(Histogram(Binning.uniform(theta_e_rad=(32, 0.0, 0.032)), np.ones(32)), template)
    with pytest.raises(ValueError, match="negative bin contents"):
        fit_histogram(Histogram(binning, -np.ones(binning.shape), np.ones(binning.shape)), template)
    with pytest.raises(ValueError, match=r"M_gev2 = -0.05 is outside the allowed range \(0.0, inf\)"):
        fit_histogram(asimov, template, start=(0.1, -0.05))
    with pytest.raises(ValueError, match="luminosity_error_rel is required"):
        fit_histogram(asimov, template, normalization="constrained")
    with pytest.raises(ValueError, match="method = 'simplex' is not allowed"):
        fit_histogram(asimov, template, method="simplex")
    with pytest.raises(ValueError, match="needs the luminosity"):
        fit_histogram(Histogram(binning, asimov.values), template, normalization="fixed")
    stray = asimov.values.copy()
    stray[-1, -1] += 5.0  # theta_e > 31 mrad with theta_mu > 4.75 mrad: no elastic event goes there
    with pytest.raises(ValueError, match="5 events in bins where the templates predict none"):
        fit_histogram(Histogram(binning, stray, luminosity_inv_nb=FULL_INV_NB), template)


def test_non_converged_fit_is_never_silently_used(template, asimov):
    with pytest.raises(FitError, match="call limit reached"):
        fit_histogram(asimov, template, start=(0.3, 0.2), max_calls=5)
    result = fit_histogram(asimov, template, start=(0.3, 0.2), max_calls=5, strict=False)
    assert not result.valid and "call limit" in result.status
    with pytest.raises(FitError):
        result.amu
    assert result.to_dict()["valid"] is False and "amu" not in result.to_dict()


def test_cost_rises_past_the_pole_of_the_running(template):
    # A toy of the 3000-event quickstart study stepped to K = 1436, M = 18.3 GeV^2, far past the
    # running's pole (1 - Dalpha = 0 at K ~ 100 here): the gradient overflowed and the cost fell
    # again towards large K. The continued running (`RUNNING_FLOOR`) makes the cost rise with K.
    from systematics.likelihood import BinnedLikelihood

    data = template.histogram(None, 3000 / template.expected(None, 1.0).sum())
    likelihood = BinnedLikelihood(data, template)
    costs, slopes = [], []
    with np.errstate(all="raise"):
        for k in (0.13724, 50.0, 100.0, 105.0, 300.0, 1436.0, 1e4):
            theta = np.array([k, 18.3])
            cost, gradient = likelihood.value_and_gradient(np.append(theta, likelihood.profile_norm(theta)))
            costs.append(cost)
            slopes.append(gradient[0])
    assert np.all(np.isfinite(costs)) and np.all(np.isfinite(slopes))
    assert np.all(np.diff(costs) > 0) and np.all(np.array(slopes) > 0)


def test_fit_with_the_mass_fixed(template, asimov):
    free = fit_histogram(asimov, template)
    fixed = fit_histogram(asimov, template, fixed={"M_gev2": 0.0525})
    assert fixed.valid and fixed.ndof == free.ndof + 1
    assert fixed.parameters["K"] == pytest.approx(0.13724, abs=1e-3 * fixed.errors[0])
    assert fixed.parameter_errors["M_gev2"] == 0.0 and fixed.details["fixed"] == {"M_gev2": 0.0525}
    # K alone is known far better than with M free (their correlation is about -0.9)
    assert fixed.errors[0] < 0.5 * free.errors[0]
    assert np.isnan(fixed.correlation("K", "M_gev2")) and "correlation_K_M_gev2" not in fixed.to_dict()
    assert fixed.amu.error < free.amu.error
    with pytest.raises(ValueError, match="fixed parameter 'M' is not one of"):
        fit_histogram(asimov, template, fixed={"M": 0.05})


def test_a_mass_far_above_the_measured_t_range_is_flagged(template):
    # data with nearly linear running (M = 1e3 GeV^2 >> |t| <= 0.143): the fit finds it, but M is
    # not determined there, and the status says so
    data = template.histogram((0.13724, 1e3), FULL_INV_NB)
    result = fit_histogram(data, template, start=(0.13724, 1e3))
    assert result.valid and result.details["mass_undetermined"]
    assert "is over 10 times the templates' largest |t| = 0.143 GeV^2" in result.status
    reference = fit_histogram(template.histogram(None, FULL_INV_NB), template)
    assert "mass_undetermined" not in reference.details and "largest |t|" not in reference.status


def test_fit_with_a_nuisance_parameter(sample, binning, template):
    from systematics.likelihood import BinnedLikelihood
    from systematics.templates import Template, TemplateSample, TemplateSet

    def scaled(factor):
        return Template(TemplateSample(sample.theta_e_rad * factor, sample.theta_mu_rad, sample.weight, sample.true_t_gev2,
                                       sample.n_generated, sample.reference, 150.0), binning)

    templates = TemplateSet(template, {"theta_e_scale": (scaled(0.9999), scaled(1.0001))})
    data = templates.nominal.histogram(None, FULL_INV_NB)
    likelihood = BinnedLikelihood(data, templates)
    p = np.array([0.14, 0.05, 1.0, 0.3])
    _, gradient = likelihood.value_and_gradient(p)
    for i in (0, 1, 3):
        step = np.zeros(4)
        step[i] = 1e-5 * abs(p[i])
        numeric = (likelihood(p + step) - likelihood(p - step)) / (2 * step[i])
        assert numeric == pytest.approx(gradient[i], rel=1e-4)
    result = fit_histogram(data, templates)
    assert result.names == ("K", "M_gev2", "norm", "theta_e_scale")
    assert abs(result.parameters["theta_e_scale"]) < 1e-3 * result.parameter_errors["theta_e_scale"] + 1e-9
    assert abs(result.values[0] - 0.13724) < 1e-3 * result.errors[0]
    with pytest.raises(ValueError, match="does not fit nuisance parameters"):
        fit_histogram(data, templates, method="grid")
