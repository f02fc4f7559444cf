"""Precision projections: the statistical error on a_mu^HLO and Dalpha_had versus luminosity and stations.

What to use when:

- `project(preset, luminosity_inv_nb=None)` answers "what statistical error does this preset give
  at this luminosity?": it simulates the preset's template sample (full chain, a campaign) and
  returns at least ``amu_stat_error_rel`` and ``dalpha_had_stat_error_rel``, curves versus
  luminosity and number of stations, the comparison with the preset's goals, and a plot when
  `output_dir` is given.
- `stat_errors(template, luminosity_inv_nb, normalization, t_ref_gev2)` is the same from a
  `systematics.templates.Template` you already have; `projection_curves` evaluates it over
  luminosities and station counts.

Method. The expected (Asimov) errors are those of the fit's Fisher information for Poisson bins,
F = J^T diag(1 / mu) J with mu the expected events per bin and J = d mu / d(K, M, norm) at the
generated point (`systematics.bias.LinearFit`, the fit's linear form; its covariance equals the
MINUIT HESSE covariance of an Asimov fit). mu is proportional to the luminosity L, so every
error scales exactly as 1 / sqrt(L). a_mu^HLO's error is grad(a_mu) . C . grad(a_mu).

Which Dalpha_had. ``dalpha_had_stat_error_rel`` is the relative error of Dalpha_had(t_ref) of the
fitted lepton-like model at t_ref, the largest |t| the selection accepts: the t of an elastic
event at the lower theta_e cut (5 mrad by default: t_ref = -0.0297 GeV^2 at 160 GeV), where the
signal is largest. Both K and M float (with the normalization if it is free), as in the fit,
unless the preset's ``fixed`` holds one of them: then it is held at the generated point and the
errors are those of the others alone (smaller, and conditional on the fixed value).

Number of stations. With the same beam on identical stations the luminosity grows with the
number of targets: L(n) = L * n / n_ref (n_ref: the preset's ``experiment_stations``, or the
stations of its geometry). Systematic errors (from a bias table, when given) do not scale and are
shown as their quadratic sum.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fastsim.config import check_choice, check_range
from fastsim.physics.kinematics import ElasticKinematics
from fastsim.units import INV_NB_TO_INV_UB

#: Luminosities of the default projection curve (nb^-1): a test run (5 pb^-1) to twice the full experiment.
DEFAULT_LUMINOSITIES_INV_NB = (5e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1.5e7, 3e7)


def reference_t_gev2(selection, beam_energy_gev: float, binning=None) -> float:
    """t_ref (GeV^2, < 0): the t of the elastic event at the lowest accepted theta_e (the
    selection's theta_e_window minimum, else the lowest non-zero theta_e edge of `binning`)."""
    theta_min = 0.0
    if "theta_e_window" in selection.names:
        theta_min = selection.cut("theta_e_window").min_rad
    if theta_min <= 0.0 and binning is not None and "theta_e_rad" in binning.names:
        edges = binning.axes[binning.names.index("theta_e_rad")].edges
        positive = edges[edges > 0.0]
        theta_min = float(positive[0]) if positive.size else 0.0
    if theta_min <= 0.0:
        raise ValueError("t_ref: the selection has no theta_e_window cut and the binning no theta_e axis "
                         "above 0; cannot define the largest accepted |t|")
    return float(ElasticKinematics(beam_energy_gev).t_from_theta_e(theta_min))


def stat_errors(template, luminosity_inv_nb: float, normalization: str = "free", t_ref_gev2: float | None = None,
                fixed=()) -> dict:
    """Expected statistical errors of the fit of `template`'s histogram at `luminosity_inv_nb`.

    Parameters
    ----------
    template : systematics.templates.Template
    luminosity_inv_nb : float
        Integrated luminosity the template is scaled to (nb^-1).
    normalization : {"free", "fixed"}
    t_ref_gev2 : float, optional
        Where Dalpha_had's error is given (see the module doc).
    fixed : list of str
        Hadronic parameters held at the generated point (error 0), as the fit's `fixed`.

    Returns
    -------
    dict
        amu, amu_stat_error, amu_stat_error_rel, errors of K, M_gev2 (and norm), the K-M
        correlation (when both float) and, with t_ref, dalpha_had, dalpha_had_stat_error,
        dalpha_had_stat_error_rel.
    """
    from systematics.bias import LinearFit

    luminosity_inv_nb = check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True)
    normalization = check_choice("normalization", normalization, ("free", "fixed"))
    # Expected events per bin at 1 ub^-1 are the cross sections per bin in ub.
    nominal_ub, gradient_ub = template.expected_flat(None, 1.0 / INV_NB_TO_INV_UB, gradient=True)
    fit = LinearFit(nominal_ub, gradient_ub, template.family, luminosity_inv_nb, normalization, template.beam_energy_gev,
                    tuple(fixed))
    errors = fit.stat_errors
    n_had = len(template.family.names)
    covariance = fit.covariance[:n_had, :n_had]
    out = {"luminosity_inv_nb": luminosity_inv_nb, "normalization": normalization, "fixed": list(fit.fixed),
           "amu": fit.amu, "amu_stat_error": errors["amu"], "amu_stat_error_rel": errors["amu"] / abs(fit.amu),
           "parameter_errors": {k: v for k, v in errors.items() if k != "amu"}}
    if n_had == 2 and not fit.fixed:
        out["correlation_K_M"] = float(covariance[0, 1] / math.sqrt(covariance[0, 0] * covariance[1, 1]))
    if t_ref_gev2 is not None:
        dalpha, gradient = template.family.at(np.array([t_ref_gev2])).evaluate(template.family.reference)
        g = np.asarray(gradient)[:, 0]
        error = math.sqrt(float(g @ covariance @ g))
        out.update(t_ref_gev2=float(t_ref_gev2), dalpha_had=float(dalpha[0]), dalpha_had_stat_error=error,
                   dalpha_had_stat_error_rel=error / abs(float(dalpha[0])))
    return out


def systematic_error(biases) -> float | None:
    """Quadratic sum of the one-sigma biases on a_mu^HLO of a bias table (rows of
    `systematics.bias.estimate_biases`; discrete alternatives included at their full shift);
    None without rows."""
    rows = [r for r in (biases or []) if r.get("n_sigma", 1.0) == 1.0 and r.get("delta_amu") is not None]
    if not rows:
        return None
    return math.sqrt(sum(float(r["delta_amu"]) ** 2 for r in rows))


def projection_curves(template, luminosity_inv_nb: float, normalization: str, t_ref_gev2: float,
                      luminosities=None, stations=None, reference_stations: int = 1,
                      systematic_amu: float | None = None, fixed=()) -> dict:
    """Relative errors over `luminosities` (nb^-1) and over `stations` at the luminosity
    luminosity_inv_nb * n / reference_stations (see the module doc)."""
    luminosities = [float(x) for x in (luminosities or DEFAULT_LUMINOSITIES_INV_NB)]
    stations = [int(n) for n in (stations or ())]

    def row(luminosity):
        errors = stat_errors(template, luminosity, normalization, t_ref_gev2, fixed)
        out = {"luminosity_inv_nb": luminosity, "amu_stat_error_rel": errors["amu_stat_error_rel"],
               "dalpha_had_stat_error_rel": errors["dalpha_had_stat_error_rel"]}
        if systematic_amu is not None:
            out["amu_syst_error_rel"] = systematic_amu / abs(errors["amu"])
            out["amu_total_error_rel"] = math.hypot(out["amu_stat_error_rel"], out["amu_syst_error_rel"])
        return out

    curves = {"luminosity": [row(x) for x in luminosities], "stations": []}
    for n in stations:
        curves["stations"].append({"stations": n, **row(luminosity_inv_nb * n / reference_stations)})
    return curves


def plot_curves(curves: dict, path, luminosity_inv_nb: float, goals: dict, title: str = "") -> list[Path]:
    """The projection plots (versus luminosity, and versus stations if any): a list of paths."""
    from studies.plots import plot_projection

    def series(rows):
        out = {"a_mu^HLO (stat)": [r["amu_stat_error_rel"] for r in rows],
               "Dalpha_had(t_ref) (stat)": [r["dalpha_had_stat_error_rel"] for r in rows]}
        if rows and "amu_total_error_rel" in rows[0]:
            out["a_mu^HLO (stat + syst)"] = [r["amu_total_error_rel"] for r in rows]
        return out

    path = Path(path)
    paths = [plot_projection([r["luminosity_inv_nb"] for r in curves["luminosity"]], series(curves["luminosity"]),
                             path, r"integrated luminosity [nb$^{-1}$]", goals, marker=luminosity_inv_nb, title=title)]
    if curves["stations"]:
        paths.append(plot_projection([r["stations"] for r in curves["stations"]], series(curves["stations"]),
                                     path.with_name(path.stem + "_stations.png"), "stations", goals, title=title))
    return paths


def project(preset, luminosity_inv_nb: float | None = None, events: int | None = None, seed: int | None = None,
            output_dir=None, luminosities=None, stations=None, scheduler=None, dask_local=None,
            progress=None) -> dict:
    """Statistical errors of a preset at `luminosity_inv_nb` (default: the preset's).

    Parameters
    ----------
    preset : str or path
        A preset name (`studies.study.available_presets`) or a preset TOML file.
    luminosity_inv_nb : float, optional
        Integrated luminosity of the whole experiment described by the preset (nb^-1).
    events, seed : int, optional
        Override the preset's template-sample size and seed.
    output_dir : path, optional
        Where the campaign shards, ``projection.json`` and ``projection.png`` go (a temporary
        directory, deleted afterwards, if None; then no plot is written).
    luminosities, stations : list, optional
        Points of the curves (default: the preset's, else `DEFAULT_LUMINOSITIES_INV_NB`).

    Returns
    -------
    dict
        amu_stat_error_rel, dalpha_had_stat_error_rel, amu_stat_error, dalpha_had_stat_error,
        t_ref_gev2, luminosity_inv_nb, goals (with the ratio to each goal), curves, preset.
    """
    import tempfile

    from studies.report import write_json
    from studies.study import Study, luminosity_summary, simulate_templates

    study = Study.load(preset, events=events, seed=seed)
    temporary = tempfile.TemporaryDirectory(prefix="muone-project-") if output_dir is None else None
    directory = Path(temporary.name if temporary else output_dir)
    try:
        bundle = simulate_templates(study, directory, scheduler=scheduler, dask_local=dask_local, progress=progress)
        lumi = luminosity_summary(study, luminosity_inv_nb)
        result = projection_summary(study, bundle, lumi, luminosities, stations)
        if temporary is None:
            result["plots"] = [p.name for p in plot_curves(result["curves"], directory / "projection.png",
                                                            lumi["luminosity_inv_nb"], _goal_lines(study.settings),
                                                            title=f"{study.name}: projection")]
            write_json(directory / "projection.json", result)
    finally:
        if temporary is not None:
            temporary.cleanup()
    return result


def _goal_lines(settings) -> dict:
    goals = {}
    if settings.goal_amu_stat_error_rel is not None:
        goals[f"goal a_mu {settings.goal_amu_stat_error_rel * 100:g} %"] = settings.goal_amu_stat_error_rel
    if settings.goal_dalpha_had_stat_error_rel is not None:
        goals[f"goal Dalpha_had {settings.goal_dalpha_had_stat_error_rel * 100:g} %"] = settings.goal_dalpha_had_stat_error_rel
    return goals


def projection_summary(study, bundle, lumi: dict, luminosities=None, stations=None, biases=None) -> dict:
    """The projection dict of `project` from a simulated template bundle (`studies.study`)."""
    settings = study.settings
    normalization = settings.normalization if settings.normalization != "constrained" else "free"
    template_luminosity = lumi["template_luminosity_inv_nb"]
    errors = stat_errors(bundle.template, template_luminosity, normalization, bundle.t_ref_gev2, settings.fixed)
    systematic = systematic_error(biases)
    # The curves are in the experiment's luminosity; the template is scaled by the same factor.
    scale = template_luminosity / lumi["luminosity_inv_nb"]
    experiment_luminosities = [float(x) for x in (luminosities or settings.projection_luminosities_inv_nb
                                                  or DEFAULT_LUMINOSITIES_INV_NB)]
    curves = projection_curves(bundle.template, template_luminosity, normalization, bundle.t_ref_gev2,
                               [x * scale for x in experiment_luminosities],
                               stations or settings.projection_stations, lumi["experiment_stations"], systematic,
                               settings.fixed)
    for row in curves["luminosity"] + curves["stations"]:
        row["luminosity_inv_nb"] /= scale
    goals = {}
    if settings.goal_amu_stat_error_rel is not None:
        goals["amu_stat_error_rel"] = {"goal": settings.goal_amu_stat_error_rel,
                                       "projected": errors["amu_stat_error_rel"],
                                       "ratio": errors["amu_stat_error_rel"] / settings.goal_amu_stat_error_rel,
                                       "luminosity_for_goal_inv_nb": lumi["luminosity_inv_nb"]
                                       * (errors["amu_stat_error_rel"] / settings.goal_amu_stat_error_rel) ** 2}
    if settings.goal_dalpha_had_stat_error_rel is not None:
        goals["dalpha_had_stat_error_rel"] = {
            "goal": settings.goal_dalpha_had_stat_error_rel, "projected": errors["dalpha_had_stat_error_rel"],
            "ratio": errors["dalpha_had_stat_error_rel"] / settings.goal_dalpha_had_stat_error_rel,
            "luminosity_for_goal_inv_nb": lumi["luminosity_inv_nb"]
            * (errors["dalpha_had_stat_error_rel"] / settings.goal_dalpha_had_stat_error_rel) ** 2}
    out = {"preset": study.name, "luminosity_inv_nb": lumi["luminosity_inv_nb"],
           "template_luminosity_inv_nb": template_luminosity, "normalization": normalization,
           "fixed": dict(settings.fixed),
           "amu": errors["amu"], "amu_stat_error": errors["amu_stat_error"],
           "amu_stat_error_rel": errors["amu_stat_error_rel"], "dalpha_had": errors["dalpha_had"],
           "dalpha_had_stat_error": errors["dalpha_had_stat_error"],
           "dalpha_had_stat_error_rel": errors["dalpha_had_stat_error_rel"], "t_ref_gev2": errors["t_ref_gev2"],
           "parameter_errors": errors["parameter_errors"], "correlation_K_M": errors.get("correlation_K_M"),
           "events": bundle.n_generated, "selected_events": bundle.n_selected, "goals": goals, "curves": curves,
           "luminosity": lumi}
    if systematic is not None:
        out["amu_syst_error"] = systematic
        out["amu_syst_error_rel"] = systematic / abs(errors["amu"])
    return out
