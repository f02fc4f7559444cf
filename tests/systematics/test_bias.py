"""Bias estimation with common random numbers (systematics.bias, studies.budget)."""

import json

import numpy as np
import pytest

from reco.chain import Chain, ChainConfig
from studies.budget import planned_shifts, run_systematics
from systematics import catalogue
from systematics.bias import LinearFit, bias_shard, binning_from_dict, estimate_biases, reference_family
from systematics.fit import fit_histogram
from systematics.histogram import Histogram
from systematics.templates import Template, TemplateSample

CHAIN = {"geometry": "run2025", "selection": {"theta_e_window": {"min_rad": 0.001, "max_rad": 0.032}}}
BINNING = {"theta_e_rad": [16, 0.0, 0.032], "theta_mu_rad": [12, 0.0002, 0.005]}


def _task(shifts, events=1500, crn=True):
    return {"chain": CHAIN, "events": events, "chunk_size": events, "binning": BINNING,
            "shifts": shifts, "systematics": [], "common_random_numbers": crn}


def test_zero_shift_gives_exactly_zero_bias():
    config = ChainConfig.from_dict(CHAIN)
    shard = bias_shard(_task([["ms_scale", 0.0], ["beam_energy_shift", 0.0]]), 11, 0)
    assert np.array_equal(shard["shifted"][0], shard["nominal"])
    summary = estimate_biases(shard, [shard], [("ms_scale", 0.0), ("beam_energy_shift", 0.0)], config, 1e5)
    assert [row["delta_amu"] for row in summary["biases"]] == [0.0, 0.0]
    assert [row["delta_K"] for row in summary["biases"]] == [0.0, 0.0]
    assert [row["resolved"] for row in summary["biases"]] == [True, True]  # an exact zero is no noise
    # a nonzero shift that moves no event of the sample: its bias is below what the sample sees
    moved_nothing = estimate_biases(shard, [shard, shard], [("ms_scale", 1.0), ("beam_energy_shift", 1.0)], config, 1e5)
    assert [row["delta_amu"] for row in moved_nothing["biases"]] == [0.0, 0.0]
    assert [row["resolved"] for row in moved_nothing["biases"]] == [False, False]


def test_a_bias_within_its_mc_error_is_not_resolved():
    config = ChainConfig.from_dict(CHAIN)
    shard = bias_shard(_task([["ms_scale", 0.0]]), 11, 0)
    bump = np.where(np.arange(shard["nominal"].size) % 3 == 0, 1e-3, 0.0) * shard["nominal"]
    for factors, resolved in (((1.0, 1.0), True), ((1.0, -0.8), False)):
        shards = [{**shard, "shifted": (shard["nominal"] + f * bump)[None, :]} for f in factors]
        totals = {key: sum(s[key] for s in shards) / 2 for key in ("nominal", "gradient", "shifted")}
        row = estimate_biases(totals, shards, [("ms_scale", 1.0)], config, 1e5)["biases"][0]
        assert row["delta_amu"] != 0.0
        # per-shard biases b, b: no spread; b, -0.8 b: a spread of 1.8 b around a total of 0.1 b
        assert row["resolved"] is resolved, row


def test_a_shift_beyond_a_parameter_error_is_outside_the_linear_regime():
    """A histogram change along the template gradient of one parameter, by a known multiple of its
    statistical error: the linear fit returns that shift, and the bias is flagged outside the
    linear regime when it exceeds the error (as on run2025, whose t range barely determines M)."""
    config = ChainConfig.from_dict(CHAIN)
    shard = bias_shard(_task([["ms_scale", 0.0]]), 11, 0)
    errors = estimate_biases(shard, [shard, shard], [("ms_scale", 0.0)], config, 1e5)["stat_errors"]
    for index, name in enumerate(("K", "M_gev2")):
        for multiple, linear in ((0.5, True), (3.0, False)):
            change = multiple * errors[name] * shard["gradient"][index]
            shards = [{**shard, "shifted": (shard["nominal"] + change)[None, :]}] * 2
            totals = {key: shards[0][key] for key in ("nominal", "gradient", "shifted")}
            row = estimate_biases(totals, shards, [("ms_scale", 1.0)], config, 1e5)["biases"][0]
            assert row[f"delta_{name}"] == pytest.approx(multiple * errors[name], rel=1e-6)
            assert row["linear_regime"] is linear, (name, multiple, row)
    # with M held, the same M-like change is absorbed by K and the normalization only
    row = estimate_biases(totals, shards, [("ms_scale", 1.0)], config, 1e5, fixed=("M_gev2",))["biases"][0]
    assert row["delta_M_gev2"] == 0.0


def _mc_error(crn, n_shards=6):
    config = ChainConfig.from_dict(CHAIN)
    shards = [bias_shard(_task([["ms_scale", 1.0]], crn=crn), 100 + k, k) for k in range(n_shards)]
    totals = {key: sum(s[key] for s in shards) / n_shards for key in ("nominal", "gradient", "shifted")}
    return estimate_biases(totals, shards, [("ms_scale", 1.0)], config, 1e5)["biases"][0]


def test_common_random_numbers_shrink_the_mc_error_tenfold():
    correlated = _mc_error(crn=True)
    independent = _mc_error(crn=False)
    assert correlated["delta_amu_mc_error"] * 10 < independent["delta_amu_mc_error"]


def test_linear_fit_agrees_with_the_minuit_fit_of_the_shifted_histogram():
    """The linear bias equals the MINUIT fit of the shifted expected histogram with the nominal
    templates (full-experiment luminosity, where the likelihood is close to quadratic).

    The comparison is made where the bias is linear: the histogram difference of the shift is
    scaled to an a_mu bias of 0.1 statistical error. With common random numbers a 1-sigma shift
    moves the bins of 20,000 events by ~1e-6 of their content, but an event that crosses a bin
    edge or a cut moves one bin by ~1e-3, a bias of ~60 statistical errors at this luminosity,
    well beyond the quadratic region (such a crossing happens in some samples, not in others)."""
    config = ChainConfig.from_dict(CHAIN)
    coarse = {"theta_e_rad": [6, 0.002, 0.026], "theta_mu_rad": [4, 0.0003, 0.0047]}
    binning = binning_from_dict(coarse)
    n, luminosity = 20_000, 1.5e7
    nominal = next(Chain(config, 5).run(n, n))
    shifted = next(Chain(catalogue.get("beam_energy_shift").apply(config, 1.0), 5).run(n, n))
    columns = {k: nominal[k] for k in ("theta_e_rad", "theta_mu_rad", "weight", "true_t_gev2", "selected")}
    sample = TemplateSample.from_columns(columns, n, config.generator.elastic.running_coupling, 160.0)
    template = Template(sample, binning)
    expected = template.histogram(None, luminosity)
    selected = shifted["selected"]
    data = Histogram.fill(binning, {k: shifted[k][selected] for k in binning.names},
                          shifted["weight"][selected] * luminosity * 1e3 / n, luminosity_inv_nb=luminosity)
    asimov = fit_histogram(expected, template, luminosity_inv_nb=luminosity)

    shard = bias_shard({**_task([["beam_energy_shift", 1.0]], events=n), "binning": coarse}, 5, 0)
    fit = LinearFit(shard["nominal"], shard["gradient"], reference_family(config), luminosity)
    difference = shard["shifted"][0] - shard["nominal"]
    scale = 0.1 * asimov.amu.error / abs(fit.shift(difference)["amu"])
    linear = fit.shift(scale * difference)
    scaled = Histogram(binning, expected.values + scale * (data.values - expected.values), expected.variances,
                       luminosity_inv_nb=luminosity)
    full = fit_histogram(scaled, template, luminosity_inv_nb=luminosity)
    assert abs(linear["amu"]) == pytest.approx(0.1 * asimov.amu.error, rel=1e-12)
    assert linear["amu"] == pytest.approx(full.amu.value - asimov.amu.value, rel=0.02)
    assert linear["K"] == pytest.approx(full.values[0] - asimov.values[0], rel=0.02)
    assert fit.stat_errors["amu"] == pytest.approx(asimov.amu.error, rel=1e-3)

    # The same with M held at its reference value: K alone absorbs the shift.
    fixed = {"M_gev2": float(fit.family.reference[1])}
    fit_k = LinearFit(shard["nominal"], shard["gradient"], fit.family, luminosity, fixed=tuple(fixed))
    asimov_k = fit_histogram(expected, template, luminosity_inv_nb=luminosity, fixed=fixed)
    full_k = fit_histogram(scaled, template, luminosity_inv_nb=luminosity, fixed=fixed)
    linear_k = fit_k.shift(scale * difference)
    assert linear_k["M_gev2"] == 0.0 and fit_k.stat_errors["M_gev2"] == 0.0
    assert linear_k["amu"] == pytest.approx(full_k.amu.value - asimov_k.amu.value, rel=0.02)
    assert linear_k["K"] == pytest.approx(full_k.values[0] - asimov_k.values[0], rel=0.02)
    assert fit_k.stat_errors["amu"] == pytest.approx(asimov_k.amu.error, rel=1e-3)
    assert fit_k.stat_errors["K"] < fit.stat_errors["K"]


def test_linear_fit_rejects_bad_fixed_names():
    family = reference_family(ChainConfig.from_dict(CHAIN))
    nominal, gradient = np.ones(4), np.ones((2, 4))
    with pytest.raises(ValueError, match="'mass' is not one of the hadronic parameters"):
        LinearFit(nominal, gradient, family, 1e5, fixed=("mass",))
    with pytest.raises(ValueError, match="leaves no hadronic parameter free"):
        LinearFit(nominal, gradient, family, 1e5, fixed=("K", "M_gev2"))


def test_planned_shifts():
    chosen = [catalogue.get(n) for n in ("ms_scale", "hit_efficiency", "radiative_corrections")]
    assert planned_shifts(chosen) == [("ms_scale", -2.0), ("ms_scale", -1.0), ("ms_scale", 1.0), ("ms_scale", 2.0),
                                      ("hit_efficiency", 1.0), ("hit_efficiency", 2.0), ("radiative_corrections", 1.0)]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    output = tmp_path_factory.mktemp("systematics")
    summary = run_systematics(CHAIN, 3000, 7, output, only="ms_scale,residual_smearing", n_shards=2, n_workers=1,
                              binning=BINNING, luminosity_inv_nb=1e5, progress=False)
    return output, summary


def test_campaign_report_and_keys(campaign):
    output, summary = campaign
    saved = json.loads((output / "systematics.json").read_text())
    assert saved["stat_error_amu"] == pytest.approx(summary["stat_error_amu"])
    for row in saved["biases"]:
        assert {"name", "shift", "delta_amu", "delta_amu_mc_error", "required_precision"} <= set(row)
    table = (output / "systematics.md").read_text()
    assert "| ms_scale |" in table
    for row in saved["biases"]:
        assert row["resolved"] == (abs(row["delta_amu"]) > 2.0 * row["delta_amu_mc_error"])
        label = f"{row['name']} ({row['shift']})"
        paragraphs = table.split("\n\n")
        unresolved = "".join(p for p in paragraphs if p.startswith("Not resolved"))
        nonlinear = "".join(p for p in paragraphs if p.startswith("Outside the linear regime"))
        assert (label in unresolved) == (not row["resolved"])
        assert (label in nonlinear) == (not row["linear_regime"])
    png = (output / "bias_budget.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_campaign_reports_the_nominal_cut_flow(campaign):
    """systematics.json's nominal_cutflow is the cut flow of the shards' nominal chains added up."""
    from fastsim.rng import derive_seed

    output, summary = campaign
    flow = None
    for shard in range(2):
        chain = Chain(ChainConfig.from_dict(CHAIN), derive_seed(7, shard))
        for _ in chain.run(1500, 1500):
            pass
        flow = chain.cutflow if flow is None else flow + chain.cutflow
    expected = flow.table()
    assert [row["cut"] for row in summary["nominal_cutflow"]] == [row["cut"] for row in expected]
    assert [row["count"] for row in summary["nominal_cutflow"]] == [row["count"] for row in expected]
    assert expected[-1]["count"] > 0
    for row, want in zip(summary["nominal_cutflow"], expected):
        assert row["weighted_count"] == pytest.approx(want["weighted_count"], rel=1e-12)
    assert json.loads((output / "systematics.json").read_text())["nominal_cutflow"][-1]["count"] == expected[-1]["count"]


def test_rerun_skips_finished_shards_and_dask_gives_identical_numbers(campaign):
    output, summary = campaign
    again = run_systematics(CHAIN, 3000, 7, output, only="ms_scale,residual_smearing", n_shards=2, n_workers=0,
                            binning=BINNING, luminosity_inv_nb=1e5, progress=False)
    assert again["campaign"]["skipped"] == 2 and again["campaign"]["computed"] == 0
    assert again["biases"] == summary["biases"]
    pytest.importorskip("distributed")
    dask_output = output / "dask"
    on_dask = run_systematics(CHAIN, 3000, 7, dask_output, only="ms_scale,residual_smearing", n_shards=2,
                              dask_local=1, binning=BINNING, luminosity_inv_nb=1e5, progress=False)
    assert on_dask["campaign"]["computed"] == 2
    assert on_dask["biases"] == summary["biases"]


def test_systematics_that_change_nothing_are_reported_not_run(tmp_path):
    # the chain's beam has no divergence: scaling it changes nothing, so its bias would be 0 +- 0
    # and without generated pairs (process "elastic"), the pair rate scale has nothing to scale
    summary = run_systematics(CHAIN, 400, 7, tmp_path, only="residual_smearing,beam_divergence,pair_normalization",
                              n_shards=1, n_workers=0, binning=BINNING, luminosity_inv_nb=1e5, progress=False,
                              linearity=False)
    assert [row["name"] for row in summary["biases"]] == ["residual_smearing"]
    assert summary["not_applicable"] == [
        {"name": "beam_divergence", "reason": "it leaves this configuration unchanged "
         "(generator.beam.divergence_x_rad = 0.0, generator.beam.divergence_y_rad = 0.0)"},
        {"name": "pair_normalization",
         "reason": "it needs generator.process in ['all', 'pair'], and generator.process = 'elastic' here"}]
    with_pairs = ChainConfig.from_dict({**CHAIN, "generator": {"process": "all"}})
    assert catalogue.get("pair_normalization").applies_to(with_pairs) == ""
    assert "- beam_divergence: it leaves this configuration unchanged" in (tmp_path / "systematics.md").read_text()
    with pytest.raises(ValueError, match="no chosen systematic changes this configuration.*beam_spot"):
        run_systematics(CHAIN, 400, 7, tmp_path, only="beam_spot", n_workers=0, progress=False)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="systematic = 'nosuch' is unknown"):
        run_systematics(CHAIN, 100, 1, tmp_path, only="nosuch", n_workers=0, progress=False)
    with pytest.raises(ValueError, match="simulation.nothing.*does not exist"):
        run_systematics(CHAIN, 100, 1, tmp_path, custom_tables=[{"name": "bad", "key": "simulation.nothing", "sigma": 1}],
                        n_workers=0, progress=False)
