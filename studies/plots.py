"""Plots of a study, each a function of plain data (numpy arrays, lists, dicts) -> a PNG file.

What to use when: `studies.study.run_study` calls these with the numbers of a study; call them
yourself to redraw a plot from a ``summary.json`` or from your own numbers. Nothing here runs a
simulation or a fit. Every function writes one PNG (``dpi`` 120) with the mplhep ROOT style and
returns the path. Angles are given in rad and drawn in mrad.

- `plot_angles_2d`: the 2D (theta_e, theta_mu) distribution with the elastic curve.
- `plot_running_ratio`: data over the no-hadronic-running prediction versus theta_e, with the
  fitted curve (the signal: about 1e-3 at the largest |t|).
- `plot_pulls`: pull distributions of pseudo-experiments with the unit Gaussian.
- (the bias budget is `studies.budget.plot_bias_budget`, drawn by the systematics campaign)
- `plot_projection`: relative statistical (and systematic) errors versus luminosity or stations.
- `plot_scan`: a layout scan (one panel per quantity versus the scanned value).

matplotlib and mplhep are the ``plot`` extra (``pip install muone-toolkit[plot]``); they are
imported when a plot is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MRAD_PER_RAD = 1e3
DPI = 120


def _figure(n_rows: int = 1, n_cols: int = 1, size=(8.0, 6.0), **kwargs):
    """A pyplot-free Figure with an Agg canvas (no global backend state) and its axes
    (`kwargs` go to `Figure.subplots`)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ValueError("plots need matplotlib and mplhep: pip install 'muone-toolkit[plot]'") from error
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_rows, n_cols, squeeze=False, **kwargs)
    return figure, axes


def _style():
    import matplotlib
    import mplhep

    style = dict(mplhep.style.ROOT)
    style.pop("font.sans-serif", None)  # the ROOT style's TeX Gyre Heros is rarely installed
    return matplotlib.rc_context(style)


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_angles_2d(theta_e_edges_rad, theta_mu_edges_rad, counts, path, curve_theta_e_rad=None,
                   curve_theta_mu_rad=None, title: str = "") -> Path:
    """2D histogram `counts` (shape (n_theta_e, n_theta_mu)) with the elastic curve overlaid."""
    counts = np.asarray(counts, dtype=np.float64)
    with _style():
        figure, axes = _figure()
        ax = axes[0, 0]
        shown = np.where(counts > 0, counts, np.nan)
        mesh = ax.pcolormesh(np.asarray(theta_e_edges_rad) * MRAD_PER_RAD, np.asarray(theta_mu_edges_rad) * MRAD_PER_RAD,
                             shown.T, norm="log", cmap="viridis")
        figure.colorbar(mesh, ax=ax, label="expected events per bin")
        if curve_theta_e_rad is not None:
            ax.plot(np.asarray(curve_theta_e_rad) * MRAD_PER_RAD, np.asarray(curve_theta_mu_rad) * MRAD_PER_RAD,
                    color="red", lw=1.5, label="elastic curve")
            ax.legend(loc="upper right")
        ax.set_xlabel(r"$\theta_e$ [mrad]")
        ax.set_ylabel(r"$\theta_\mu$ [mrad]")
        if title:
            ax.set_title(title, fontsize=14)
        return _save(figure, path)


def plot_running_ratio(theta_e_edges_rad, ratio, ratio_error, fitted_ratio, path, reference_ratio=None,
                       title: str = "") -> Path:
    """Data / (prediction without hadronic running) per theta_e bin with the fitted curve.

    Parameters
    ----------
    ratio, ratio_error : array (n_theta_e,)
        Pseudo-data over the prediction with Dalpha_had = 0, and its Poisson error.
    fitted_ratio : array (n_theta_e,)
        The fitted model over the same prediction.
    reference_ratio : array, optional
        The generated (true) model over the same prediction.
    """
    edges = np.asarray(theta_e_edges_rad) * MRAD_PER_RAD
    centres = 0.5 * (edges[1:] + edges[:-1])
    ratio, ratio_error, fitted_ratio = (np.asarray(a, dtype=np.float64) for a in (ratio, ratio_error, fitted_ratio))
    shown = np.isfinite(ratio) & np.isfinite(ratio_error)
    with _style():
        figure, axes = _figure()
        ax = axes[0, 0]
        ax.errorbar(centres[shown], ratio[shown] - 1.0, yerr=ratio_error[shown], fmt="o", ms=4, color="black",
                    label="pseudo-data")
        ax.stairs(fitted_ratio - 1.0, edges, color="red", lw=2, label="fit")
        if reference_ratio is not None:
            ax.stairs(np.asarray(reference_ratio, dtype=np.float64) - 1.0, edges, color="blue", ls="--", lw=1.5,
                      label="generated")
        ax.axhline(0.0, color="grey", lw=1)
        ax.set_xlabel(r"$\theta_e$ [mrad]")
        ax.set_ylabel(r"$N / N(\Delta\alpha_{had} = 0) - 1$")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend(loc="best")
        if title:
            ax.set_title(title, fontsize=14)
        return _save(figure, path)


def plot_pulls(pulls: dict, path, title: str = "") -> Path:
    """Histogram of each array of `pulls` (name -> pulls) with the unit Gaussian."""
    names = [n for n, values in pulls.items() if np.isfinite(np.asarray(values, dtype=np.float64)).any()]
    if not names:
        raise ValueError("pulls: no finite pull to plot")
    with _style():
        figure, axes = _figure(1, len(names), size=(5.0 * len(names), 5.0))
        x = np.linspace(-4.0, 4.0, 200)
        for ax, name in zip(axes[0], names):
            values = np.asarray(pulls[name], dtype=np.float64)
            values = values[np.isfinite(values)]
            bins = np.linspace(-4.0, 4.0, 21)
            ax.hist(values, bins=bins, histtype="step", lw=2, color="black",
                    label=f"mean {values.mean():+.2f}\nwidth {values.std(ddof=1) if values.size > 1 else math.nan:.2f}")
            ax.plot(x, values.size * (bins[1] - bins[0]) * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi), color="red")
            ax.set_xlabel(f"pull {name}")
            ax.legend(loc="upper right", fontsize=12)
        axes[0, 0].set_ylabel("toys")
        if title:
            figure.suptitle(title, fontsize=14)
        return _save(figure, path)


def plot_projection(x, curves: dict, path, xlabel: str, goals: dict | None = None, marker=None,
                    title: str = "") -> Path:
    """Relative errors (curves: label -> array over x) versus x on log-log axes, with optional
    horizontal goal lines (label -> value) and a vertical marker at the study's x."""
    x = np.asarray(x, dtype=np.float64)
    with _style():
        figure, axes = _figure()
        ax = axes[0, 0]
        for label, values in curves.items():
            ax.plot(x, np.asarray(values, dtype=np.float64) * 100.0, marker="o", ms=4, label=label)
        for label, value in (goals or {}).items():
            ax.axhline(value * 100.0, ls="--", color="grey", lw=1.2)
            ax.text(x[0], value * 100.0 * 1.05, label, fontsize=11, color="grey")
        if marker is not None:
            ax.axvline(marker, color="black", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("relative error [%]")
        ax.legend(loc="upper right", fontsize=12)
        if title:
            ax.set_title(title, fontsize=14)
        return _save(figure, path)


def plot_scan(table: dict, x_key: str, y_keys, path, labels: dict | None = None, title: str = "") -> Path:
    """One panel per quantity of `y_keys` versus `x_key` (`table`: column name -> list)."""
    y_keys = list(y_keys)
    labels = labels or {}
    raw = list(table[x_key])
    categorical = any(isinstance(v, str) for v in raw)  # e.g. a target material: one point per value
    x = np.arange(len(raw), dtype=np.float64) if categorical else np.asarray(raw, dtype=np.float64)
    order = np.argsort(x)
    with _style():
        figure, axes = _figure(len(y_keys), 1, size=(8.0, 3.2 * len(y_keys)), sharex=True)
        for ax, key in zip(axes[:, 0], y_keys):
            y = np.asarray(table[key], dtype=np.float64)
            ax.plot(x[order], y[order], marker="o", ms=5, ls="none" if categorical else "-")
            ax.set_ylabel(labels.get(key, key), fontsize=12)
        if categorical:
            axes[-1, 0].set_xticks(x, [str(v) for v in raw])
        axes[-1, 0].set_xlabel(labels.get(x_key, x_key.split(",")[0]), fontsize=12)
        if title:
            axes[0, 0].set_title(title, fontsize=14)
        return _save(figure, path)
