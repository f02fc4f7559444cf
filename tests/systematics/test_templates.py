import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastsim.config import to_plain
from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import ElasticSettings, Generator, GeneratorConfig, write_events
from fastsim.physics.vacuum_polarization import LeptonLikeModel, NoHadronicModel, Pol2Model, RunningCoupling
from systematics.histogram import Binning
from fastsim.physics.vacuum_polarization import dalpha_lep
from systematics.templates import RUNNING_FLOOR, Template, TemplateSample, TemplateSet, morphing_coefficients

POINTS = [(0.13724, 0.0525), (0.2, 0.1), (0.05, 0.01), (0.3, 0.5)]


@pytest.mark.parametrize("theta", POINTS)
def test_fast_path_matches_exact_reweighting_2d(sample, binning, template, theta):
    fast = template.expected(theta, 1e3)
    exact = sample.reweighted_histogram(binning, LeptonLikeModel(*theta), 1e3)
    filled = exact.values > 0
    assert np.array_equal(fast > 0, filled)
    assert np.max(np.abs(fast[filled] / exact.values[filled] - 1)) < 1e-7
    variance = template.mc_variance(theta, 1e3)
    assert np.max(np.abs(variance[filled] / exact.variances[filled] - 1)) < 1e-7


def test_fast_path_1d_and_other_reference_running(sample):
    # a sample generated with leptonic running only: the reweighting adds the whole hadronic part
    lep_only = TemplateSample(sample.theta_e_rad, sample.theta_mu_rad, sample.weight, sample.true_t_gev2,
                              sample.n_generated, RunningCoupling("lep", NoHadronicModel()), 150.0)
    binning = Binning.uniform(theta_e_rad=(64, 0.0, 0.032))
    template = Template(lep_only, binning)
    for theta in POINTS:
        exact = lep_only.reweighted_histogram(binning, LeptonLikeModel(*theta)).values
        fast = template.expected(theta)
        assert np.max(np.abs(fast[exact > 0] / exact[exact > 0] - 1)) < 1e-7


def test_pol2_family(sample, binning):
    template = Template(sample, binning, Pol2Model())
    theta = (-0.012, -0.02)
    exact = sample.reweighted_histogram(binning, Pol2Model(*theta)).values
    fast = template.expected(theta)
    assert np.max(np.abs(fast[exact > 0] / exact[exact > 0] - 1)) < 1e-7


def test_gradient_matches_finite_differences(template):
    theta = np.array([0.15, 0.06])
    _, gradient = template.expected_flat(theta, 1e3, gradient=True)
    for i in range(2):
        step = np.zeros(2)
        step[i] = 1e-4 * theta[i]
        numeric = (template.expected_flat(theta + step, 1e3) - template.expected_flat(theta - step, 1e3)) / (2 * step[i])
        scale = np.max(np.abs(gradient[i]))
        # central differences: error ~ step^2 f''' / 6, far below 1e-6 of the largest entry
        assert np.max(np.abs(numeric - gradient[i])) < 1e-6 * scale


def _k_at_running(template, m_gev2, one_minus_dalpha):
    """K at which min over the template's t of 1 - Dalpha_lep(t) - Dalpha_had(t; K, M) equals
    `one_minus_dalpha` (Dalpha_had is linear in K)."""
    per_k = template.family.at(template.node_t_gev2).evaluate(np.array([1.0, m_gev2]))[0]
    return float(np.min((1.0 - dalpha_lep(template.node_t_gev2) - one_minus_dalpha) / per_k))


def test_running_is_continued_before_its_landau_pole(sample, binning, template):
    m_gev2 = 1.0
    k_floor, k_pole = (_k_at_running(template, m_gev2, x) for x in (RUNNING_FLOOR, 0.0))
    assert 40 < k_floor < k_pole < 120  # Dalpha_had ~ -K t / 15 at |t| = 0.142 GeV^2
    # above the floor the template is the exact reweighting, however far from the reference
    theta = (0.95 * k_floor, m_gev2)
    exact = sample.reweighted_histogram(binning, LeptonLikeModel(*theta)).values
    filled = exact > 0
    assert np.max(np.abs(template.expected(theta)[filled] / exact[filled] - 1)) < 1e-7
    # the exact factor has a pole at k_pole and falls again after it; the template keeps growing
    scan = np.linspace(0.5 * k_floor, 3.0 * k_pole, 301)
    with np.errstate(all="raise"):
        expected = np.array([template.expected_flat((k, m_gev2)) for k in scan])
    assert np.all(np.isfinite(expected))
    assert np.all(np.diff(expected, axis=0) >= 0) and np.all(np.diff(expected.sum(axis=1)) > 0)
    # continuous with its gradient: at a point straddling the floor and at one past the pole
    for theta in (np.array([0.5 * (k_floor + k_pole), m_gev2]), np.array([3.0 * k_pole, m_gev2])):
        value, gradient = template.expected_flat(theta, gradient=True)
        step = 1e-6 * theta[0]
        numeric = (template.expected_flat(theta + [step, 0]) - template.expected_flat(theta - [step, 0])) / (2 * step)
        assert np.max(np.abs(numeric - gradient[0])) < 1e-6 * np.max(np.abs(gradient[0]))
    at_floor = [template.expected_flat((k_floor * (1 + s), m_gev2)).sum() for s in (-1e-9, 1e-9)]
    assert at_floor[1] == pytest.approx(at_floor[0], rel=1e-8)


def test_cross_section_normalization(sample, template):
    # sum(weight)/N is the selected cross section (ub); 1 nb^-1 = 1e3 ub^-1
    expected = template.expected(None, 2.0).sum()
    inside = (sample.theta_e_rad >= 0) & (sample.theta_e_rad < 0.032) & (sample.theta_mu_rad >= 0) & (sample.theta_mu_rad < 0.005)
    assert expected == pytest.approx(2.0 * 1e3 * sample.weight[inside].sum() / sample.n_generated, rel=1e-12)


def test_events_without_t_are_not_reweighted(sample, binning):
    t = sample.true_t_gev2.copy()
    t[::3] = np.nan
    mixed = TemplateSample(sample.theta_e_rad, sample.theta_mu_rad, sample.weight, t, sample.n_generated, sample.reference, 150.0)
    template = Template(mixed, binning)
    theta = (0.3, 0.5)
    background = TemplateSample(sample.theta_e_rad[::3], sample.theta_mu_rad[::3], sample.weight[::3],
                                sample.true_t_gev2[::3], sample.n_generated, sample.reference, 150.0)
    keep = np.ones(len(sample), bool)
    keep[::3] = False
    signal = TemplateSample(sample.theta_e_rad[keep], sample.theta_mu_rad[keep], sample.weight[keep],
                            sample.true_t_gev2[keep], sample.n_generated, sample.reference, 150.0)
    exact = background.reweighted_histogram(binning).values + signal.reweighted_histogram(binning, LeptonLikeModel(*theta)).values
    fast = template.expected(theta)
    assert np.max(np.abs(fast[exact > 0] / exact[exact > 0] - 1)) < 1e-7


def _config():
    return GeneratorConfig(beam=BeamModel(energy_gev=150.0), elastic=ElasticSettings(K=0.12, M_gev2=0.04))


def test_from_truth_parquet(tmp_path):
    path = tmp_path / "truth.parquet"
    write_events(Generator(_config(), 5), 20_000, path)
    sample = TemplateSample.from_parquet(path)
    assert sample.n_generated == 20_000 and sample.beam_energy_gev == 150.0
    assert sample.reference.hadronic == LeptonLikeModel(0.12, 0.04)


def test_from_reco_parquet(tmp_path):
    config = _config()
    events = Generator(config, 5).chunk(0, 10_000)
    selected = events["e_theta_rad"] < 0.02
    table = pa.table({"theta_e_rad": events["e_theta_rad"], "theta_mu_rad": events["mu_theta_rad"],
                      "weight": events["weight"], "selected": selected, "true_t_gev2": events["t_gev2"]})
    meta = {"config": to_plain(config), "n_generated": 10_000}
    pq.write_table(table.replace_schema_metadata({b"muone": json.dumps(meta).encode()}), tmp_path / "reco.parquet")
    sample = TemplateSample.from_parquet(tmp_path / "reco.parquet")
    assert len(sample) == selected.sum() and sample.n_generated == 10_000
    assert sample.reference.hadronic == LeptonLikeModel(0.12, 0.04)

    del meta["n_generated"]
    pq.write_table(table.replace_schema_metadata({b"muone": json.dumps(meta).encode()}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no n_generated"):
        TemplateSample.from_parquet(tmp_path / "bad.parquet")
    pq.write_table(table, tmp_path / "nometa.parquet")
    with pytest.raises(ValueError, match="no b'muone' metadata"):
        TemplateSample.from_parquet(tmp_path / "nometa.parquet")
    pq.write_table(table.drop(["true_t_gev2"]).replace_schema_metadata({b"muone": json.dumps(meta).encode()}),
                   tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match=r"missing columns \['true_t_gev2'\]"):
        TemplateSample.from_parquet(tmp_path / "cols.parquet")


def test_bad_sample_and_parameters(sample, binning, template):
    with pytest.raises(ValueError, match="n_generated = 10 is smaller than"):
        TemplateSample(sample.theta_e_rad, sample.theta_mu_rad, sample.weight, sample.true_t_gev2, 10, sample.reference, 150.0)
    with pytest.raises(ValueError, match="true_t_gev2 = 0.1 is outside"):
        TemplateSample([0.01], [0.001], [1.0], [0.1], 1, sample.reference, 150.0)
    with pytest.raises(ValueError, match=r"M_gev2 = 0.0 is outside the allowed range \(0.0, inf\)"):
        template.expected((0.1, 0.0))
    with pytest.raises(ValueError, match=r"M_gev2 = -0.01 is outside"):
        template.expected({"M_gev2": -0.01})
    with pytest.raises(ValueError, match="no event with non-zero weight inside the binning"):
        Template(sample, Binning.uniform(theta_e_rad=(4, 1.0, 2.0)))


def test_morphing_passes_through_the_variations():
    for delta, (a, b) in ((-1.0, (0.0, 1.0)), (0.0, (0.0, 0.0)), (1.0, (1.0, 0.0))):
        assert morphing_coefficients(delta)[:2] == pytest.approx((a, b))
    eps = 1e-7
    for delta in (-1.0, 1.0):  # continuous derivative across +-1
        left = morphing_coefficients(delta - eps)
        right = morphing_coefficients(delta + eps)
        assert left[2:] == pytest.approx(right[2:], abs=1e-6)


def test_template_set_morphing(sample, binning, template):
    up = Template(TemplateSample(sample.theta_e_rad * 1.001, sample.theta_mu_rad, sample.weight, sample.true_t_gev2,
                                 sample.n_generated, sample.reference, 150.0), binning)
    down = Template(TemplateSample(sample.theta_e_rad * 0.999, sample.theta_mu_rad, sample.weight, sample.true_t_gev2,
                                   sample.n_generated, sample.reference, 150.0), binning)
    tset = TemplateSet(template, {"scale": (down, up)})
    theta = np.array([0.14, 0.05])
    np.testing.assert_allclose(tset.expected_flat(theta, [1.0]), up.expected_flat(theta), rtol=1e-12)
    np.testing.assert_allclose(tset.expected_flat(theta, [-1.0]), down.expected_flat(theta), rtol=1e-12)
    mu, gradient, nuisance_gradient = tset.expected_flat(theta, [0.3], gradient=True)
    numeric = (tset.expected_flat(theta, [0.3 + 1e-6]) - tset.expected_flat(theta, [0.3 - 1e-6])) / 2e-6
    assert np.max(np.abs(numeric - nuisance_gradient[0])) < 1e-6 * np.max(np.abs(numeric)) + 1e-9
    with pytest.raises(ValueError, match="binning mismatch"):
        TemplateSet(template, {"scale": (down, Template(sample, Binning.uniform(theta_e_rad=(8, 0.0, 0.032))))})
