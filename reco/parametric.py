"""Parametric (fast) reconstruction: smear the true angles with a response measured from the full mode.

What to use when:

- `calibrate(events, geometry, selection, pid_settings)` measures a `ParametricResponse` from a
  full-mode sample (elastic `RecoEvents` with the truth columns): per bin of the true electron
  angle, the resolution and bias of the four track angles, their correlations and the efficiency
  of the reconstruction and of the non-kinematic cuts. `response.save(path)` /
  `ParametricResponse.load(path, geometry)` keep it in an ``.npz`` file.
- `apply(truth, response, seed)` turns truth events (`TruthEvents`, `RecoEvents` with truth
  columns, or a dict of truth arrays) into `RecoEvents` on which the same `Selection` applies.
- `histogram(truth, response, seed, selection, theta_e_edges_rad, theta_mu_edges_rad)` goes
  straight to the weighted 2D (theta_e, theta_mu) histogram of the selected events, without
  making events: the fast path for templates; `generated_histogram(generator, first, n, ...)`
  generates the events inside the same kernel, without event arrays (`reco.chain.Chain.histogram`).

The model. For event i with true angles (theta_e, theta_mu, phi_e, phi_mu), the residual vector
r = (d theta_e, d theta_mu, d phi_e, d phi_mu) of the electron and muon tracks (reconstructed
minus true; the track of each particle by truth matching, truth_pdg_1/2) is r_k = w_k(theta_e) z_k:
w_k is a robust width (half the 15.9-84.1 % quantile range) measured per bin of the true theta_e
and interpolated linearly between bin centres, and z is the normalized residual vector of one of
the `neighbours` calibration events nearest in true theta_e (the calibration keeps the vectors
with their true theta_e, sorted; all of them unless `max_vectors_per_bin` caps them). Resampling whole vectors
keeps everything the full mode has, without a model: the bias, the non-Gaussian tails
(multiple-scattering tails, bremsstrahlung), the linear correlation through the incoming muon's
direction error (theta_e and theta_mu move in opposite directions) and the correlation of the
magnitudes (a hard scatter of the electron moves its polar and azimuthal angles together, which
a product of marginal quantile tables would lose: the acoplanarity and elasticity cuts then
differ, measured in the closure test). Drawing from the nearest neighbours rather than from the
whole bin keeps structure finer than the bins: the full mode's muon-angle residual varies with
the true angle on a scale of ~10 urad of theta_mu (measured on run2025, where resampling within
1 mrad bins of theta_e moved 2-8 % of the events across a 0.4 mrad theta_mu bin edge;
docs/reconstruction.md; most likely the binary strip readout: with a beam of small divergence
the hit-position errors of a track are nearly a fixed function of its slope). Along the elastic
curve theta_mu is a function of theta_e, so the neighbours in theta_e are neighbours in theta_mu
too; with a wide beam-energy spread or hard radiation they are not, and the response is the
average over the calibration sample's theta_mu at that theta_e. The response carries the
statistical error of its calibration sample: with nearest neighbours each histogram bin is
predicted from the calibration events that feed it, so a response from N events is about as
uncertain as N full-mode events (calibrate with more events than the study simulates). The
smeared tracks are ordered by angle and identified with the same decision as the full mode
(`reco.pid.muon_is_1_kernel`), so the mis-identification near theta_e ~ theta_mu is modelled too.
With the calorimeter in the identification (``PidSettings.calorimeter``) each calibration vector
also carries its event's calorimeter term (`reco.pid.calorimeter_term_kernel`, oriented as the
chi2 of "the true muon's track is the muon" minus that of the other hypothesis), which the
decision adds with the sign of the smeared tracks' order: cluster, track extrapolation and
angular residuals come from the same event, so their correlations are kept.
Random numbers: the event's uniform of `fastsim.rng.STREAM_PARAMETRIC`
(`fastsim.rng.event_uniform`, keyed by (seed, event_id)) picks the neighbour: independent of
the chunking.

The efficiency eff(theta_e) (weighted, per bin, interpolated linearly between bin centres like
the widths) is the fraction of events with two reconstructed tracks passing the non-kinematic
cuts of the selection (golden muon, hits, vertex z). It enters the weight of the parametric
events (weight = truth weight * eff), and the sample lists these cuts in
``metadata["folded_cuts"]`` so that `Selection.apply` does not apply them twice. Vertex z is the
true one, the tracking columns (hits, incoming track) are left missing. Outside the calibrated
theta_e range the outer bins' widths and efficiencies and the outermost calibration vectors are
used.

The response belongs to one geometry: the file records the geometry's name and content hash
(`fastsim.config.content_hash`) and refuses to load for another one.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

import fastsim
from fastsim import rng
from fastsim.config import check_edges, check_integer, content_hash, to_plain
from fastsim.detector.geometry import Geometry
from fastsim.events import TruthEvents
from fastsim.generator.generate import N_OUT, elastic_event_kernel
from fastsim.numerics import prefetch
from fastsim.units import PDG_ELECTRON, PDG_MUON
from reco.events import RecoEvents
from reco.observables import acoplanarity_kernel, elastic_theta_mu_kernel, wrap_angle_kernel
from reco.pid import PidSettings, calorimeter_terms, identify_kernel, muon_is_1_kernel
from reco.selection import Selection

COMPONENTS = ("theta_e", "theta_mu", "phi_e", "phi_mu")
_N = len(COMPONENTS)
_SIGMA_QUANTILES = (0.15865525393145707, 0.8413447460685429)  # Phi(-1), Phi(+1)
DEFAULT_BIN_WIDTH_RAD = 1e-3  # bins of the true theta_e in `calibrate` by default
DEFAULT_NEIGHBOURS = 256  # calibration vectors an event's residual is drawn from
FORMAT_VERSION = 3


@dataclass(frozen=True, eq=False)
class ParametricResponse:
    """Resolution, bias, correlation and efficiency per bin of the true theta_e (module doc).

    Attributes
    ----------
    theta_e_edges_rad : ndarray (nb + 1,)
    width_rad : ndarray (nb, 4)
        Robust width of the residual of each component (theta_e, theta_mu, phi_e, phi_mu).
    bias_rad : ndarray (nb, 4)
        Mean residual (informational; the residual vectors carry it).
    correlation : ndarray (nb, 4, 4)
        Correlation matrix of the residuals (informational; the vectors carry it).
    vector_theta_e_rad : ndarray (m,) float32
        True theta_e of the calibration events whose residual vectors are kept, increasing.
    residuals : ndarray (m, 4) float32
        Their normalized residual vectors r_k / w_k(true theta_e), in the same order.
    calorimeter_terms : ndarray (m,) float32
        Their events' calorimeter terms (module doc); empty without the calorimeter.
    efficiency, efficiency_error : ndarray (nb,)
        Weighted efficiency of reconstruction and non-kinematic cuts, with its binomial error.
    events : ndarray (nb,)
        Calibration events per bin (all, before the efficiency).
    geometry_name, geometry_hash : str
    settings : dict
        pid settings, the folded (non-kinematic) cuts, max_vectors_per_bin, neighbours, the
        sample size and the calibration's conditions (`calibrate`).
    package_version : str
        The toolkit version that measured it (its events differ from another version's).
    """

    theta_e_edges_rad: np.ndarray
    width_rad: np.ndarray
    bias_rad: np.ndarray
    correlation: np.ndarray
    vector_theta_e_rad: np.ndarray
    residuals: np.ndarray
    calorimeter_terms: np.ndarray
    efficiency: np.ndarray
    efficiency_error: np.ndarray
    events: np.ndarray
    geometry_name: str
    geometry_hash: str
    settings: dict = field(default_factory=dict)
    package_version: str = fastsim.__version__

    _ARRAYS = ("theta_e_edges_rad", "width_rad", "bias_rad", "correlation", "vector_theta_e_rad", "residuals",
               "calorimeter_terms", "efficiency", "efficiency_error", "events")

    @property
    def n_bins(self) -> int:
        return self.theta_e_edges_rad.size - 1

    @property
    def pid_settings(self) -> PidSettings:
        return PidSettings(**self.settings["pid"])

    @property
    def folded_cuts(self) -> list:
        return [dict(spec) for spec in self.settings["folded_cuts"]]

    @property
    def neighbours(self) -> int:
        return int(self.settings["neighbours"])

    @functools.cached_property
    def _rank_grid(self):
        """(first theta_e, cells per rad, rank at each cell edge) of `vector_theta_e_rad`: the rank
        of an angle among the vectors, interpolated linearly inside a cell, without a search."""
        theta = self.vector_theta_e_rad
        span = max(theta[-1] - theta[0], 1e-12)
        n_cells = int(min(2 ** 18, max(16, theta.size)))
        cell_edges = theta[0] + span * np.arange(n_cells + 1) / n_cells
        # int32: half the cache lines of float64 for the same (integer) values
        rank_type = np.int32 if theta.size < 2**31 else np.int64
        return theta[0], n_cells / span, np.searchsorted(theta, cell_edges).astype(rank_type)

    def kernel_arrays(self):
        """The response as the kernels take it: the bin centres with their lookup grid (`_Axis`;
        a dummy grid for a single bin), widths, efficiency, the rank grid of the vectors, the
        vectors, their calorimeter terms, the neighbours."""
        edges = np.ascontiguousarray(self.theta_e_edges_rad, dtype=np.float64)
        centres = 0.5 * (edges[1:] + edges[:-1])
        _, inv_cell, lookup = _Axis(centres if centres.size > 1 else edges).args()
        return (centres, inv_cell, lookup, np.ascontiguousarray(self.width_rad),
                np.ascontiguousarray(self.efficiency), *self._rank_grid,
                np.ascontiguousarray(self.residuals, dtype=np.float32),
                np.ascontiguousarray(self.calorimeter_terms, dtype=np.float32),
                min(self.neighbours, self.residuals.shape[0]))

    def table(self):
        """Resolution, bias and efficiency per bin as a pandas DataFrame (for reports)."""
        import pandas as pd

        data = {"theta_e_low_rad": self.theta_e_edges_rad[:-1], "theta_e_high_rad": self.theta_e_edges_rad[1:],
                "events": self.events, "efficiency": self.efficiency, "efficiency_error": self.efficiency_error}
        for k, name in enumerate(COMPONENTS):
            data[f"{name}_width_rad"] = self.width_rad[:, k]
            data[f"{name}_bias_rad"] = self.bias_rad[:, k]
        data["theta_e_theta_mu_correlation"] = self.correlation[:, 0, 1]
        return pd.DataFrame(data)

    def save(self, path) -> Path:
        """Write an ``.npz`` file: the arrays and a JSON header (geometry, settings, version)."""
        path = Path(path)
        with path.open("wb") as handle:
            np.savez_compressed(handle, header=np.array(json.dumps({"format_version": FORMAT_VERSION, **self.header})),
                                **{name: getattr(self, name) for name in self._ARRAYS})
        return path

    @property
    def header(self) -> dict:
        """What the file's header holds besides its format: geometry_name, geometry_hash, settings
        (with the calibration's conditions) and package_version."""
        return {"geometry_name": self.geometry_name, "geometry_hash": self.geometry_hash, "settings": self.settings,
                "package_version": self.package_version}

    @staticmethod
    def read_header(path) -> dict:
        """The JSON header of a file written by `save` (geometry, settings with the conditions,
        package version), without its arrays; ValueError for another kind of file or format."""
        return ParametricResponse._read(path, ())[0]

    @staticmethod
    def _read(path, names) -> tuple[dict, dict]:
        """(header, the arrays `names`) of a file written by `save`, from one opening."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {name: np.array(data[name]) for name in names}
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"calibration = {str(path)!r} is not a parametric-response file: {error}") from None
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"calibration = {str(path)!r} has format version {header.get('format_version')!r}, "
                             f"this toolkit reads version {FORMAT_VERSION}")
        return header, arrays

    @classmethod
    def load(cls, path, geometry: Geometry | None = None) -> "ParametricResponse":
        """Read a file written by `save`; with `geometry`, ValueError unless it is the one of the
        calibration (same content hash)."""
        header, arrays = cls._read(path, cls._ARRAYS)
        response = cls(**arrays, geometry_name=header["geometry_name"], geometry_hash=header["geometry_hash"],
                       settings=header["settings"], package_version=header.get("package_version"))
        if geometry is not None:
            response.check_geometry(geometry, where=str(path))
        return response

    def check_geometry(self, geometry: Geometry, where: str = "response"):
        """ValueError naming both geometries unless `geometry` has the calibration's content hash."""
        check_calibrated_geometry(self.geometry_name, self.geometry_hash, geometry, where)


def check_calibrated_geometry(name: str, digest: str, geometry: Geometry, where: str):
    """ValueError naming both geometries unless `geometry` has the content hash `digest` of the
    calibration's geometry `name`."""
    current = content_hash(geometry)
    if current != digest:
        raise ValueError(f"{where} was calibrated with geometry {name!r} (hash {digest}), "
                         f"not with geometry {geometry.name!r} (hash {current})")


# --- calibration ----------------------------------------------------------------------------

def _interpolated_width(centres, width, theta):
    """Widths (n, 4) at `theta`: linear between bin centres, constant beyond the outer ones."""
    return np.stack([np.interp(theta, centres, width[:, k]) for k in range(_N)], axis=1)


def _track_residuals(events: RecoEvents):
    """(residuals (n, 4), reconstructed, muon is track 1) of the electron and muon tracks; the
    track of each particle by truth matching where the tracks are one e and one mu, else by
    `muon_is_1`."""
    pdg_1, pdg_2 = np.abs(events["truth_pdg_1"]), np.abs(events["truth_pdg_2"])
    matched_mu_1 = (pdg_1 == PDG_MUON) & (pdg_2 == PDG_ELECTRON)
    matched = matched_mu_1 | ((pdg_1 == PDG_ELECTRON) & (pdg_2 == PDG_MUON))
    mu_1 = np.where(matched, matched_mu_1, events["muon_is_1"])
    t1, t2, p1, p2 = events["theta_1_rad"], events["theta_2_rad"], events["phi_1_rad"], events["phi_2_rad"]
    reco = np.stack([np.where(mu_1, t2, t1), np.where(mu_1, t1, t2), np.where(mu_1, p2, p1), np.where(mu_1, p1, p2)],
                    axis=1)
    true = np.stack([events["true_theta_e_rad"], events["true_theta_mu_rad"], events["true_phi_e_rad"],
                     events["true_phi_mu_rad"]], axis=1)
    residual = reco - true
    residual[:, 2:] = (residual[:, 2:] + math.pi) % (2.0 * math.pi) - math.pi
    return residual, np.all(np.isfinite(reco), axis=1), mu_1


@dataclass(frozen=True, eq=False)
class CalibrationSample:
    """What `calibrate` needs of full-mode elastic events: true theta_e (rad), the residual vector
    (n, 4) of the electron and muon tracks (rad, `COMPONENTS`), whether the event has both tracks
    and passes the non-kinematic cuts `folded_cuts`, the weight (ub) and, when the identification
    uses the calorimeter, the calorimeter term of each event (module doc; else None)."""

    true_theta_e_rad: np.ndarray
    residual_rad: np.ndarray
    passing: np.ndarray
    weight: np.ndarray
    folded_cuts: list
    config_hash: str | None = None
    calorimeter_term: np.ndarray | None = None

    @classmethod
    def from_events(cls, events: RecoEvents, geometry: Geometry, selection: Selection,
                    pid_settings: PidSettings | None = None) -> "CalibrationSample":
        """The sample of the elastic events (process 0) of `events`, the cuts from `selection`,
        the calorimeter terms if `pid_settings` (default ``PidSettings()``) uses the calorimeter."""
        if not isinstance(events, RecoEvents):
            raise ValueError(f"events = {type(events).__name__} must be a reco.events.RecoEvents")
        events = events.select(events["process"] == 0)
        true_theta_e = np.asarray(events["true_theta_e_rad"], dtype=np.float64)
        if not np.all(np.isfinite(true_theta_e)):
            raise ValueError("events: true_theta_e_rad must be filled (finite) for the calibration")
        residual, passing, mu_1 = _track_residuals(events)
        cuts = tuple((name, cut) for name, cut in selection.cuts if not cut.kinematic)
        for mask in Selection(cuts).masks(events, geometry):
            passing &= mask
        pid_settings = PidSettings() if pid_settings is None else pid_settings
        term = None
        if pid_settings.calorimeter:  # calorimeter_terms is chi2(track 1 muon) - chi2(track 2 muon)
            term = np.where(mu_1, 1.0, -1.0) * calorimeter_terms(events, pid_settings)
        return cls(true_theta_e, residual, passing, np.asarray(events["weight"], dtype=np.float64),
                   selection.non_kinematic_specs(), events.metadata.get("config_hash"), term)

    @classmethod
    def concatenate(cls, parts) -> "CalibrationSample":
        parts = list(parts)
        if not parts:
            raise ValueError("CalibrationSample.concatenate needs at least one sample")
        if any(part.folded_cuts != parts[0].folded_cuts for part in parts):
            raise ValueError("CalibrationSample.concatenate: the samples were made with different cuts")
        if any((part.calorimeter_term is None) != (parts[0].calorimeter_term is None) for part in parts):
            raise ValueError("CalibrationSample.concatenate: some samples have calorimeter terms, others not")
        term = None if parts[0].calorimeter_term is None else np.concatenate([p.calorimeter_term for p in parts])
        return cls(*(np.concatenate([getattr(part, name) for part in parts])
                     for name in ("true_theta_e_rad", "residual_rad", "passing", "weight")),
                   parts[0].folded_cuts, parts[0].config_hash, term)


def _default_edges(true_theta_e, min_events):
    """Bins of DEFAULT_BIN_WIDTH_RAD from 0 to the largest angle of the sample; the outer bins are
    merged with their neighbours until they hold min_events events (before the efficiency)."""
    top = DEFAULT_BIN_WIDTH_RAD * math.ceil(true_theta_e.max() / DEFAULT_BIN_WIDTH_RAD + 1e-9)
    edges = list(np.linspace(0.0, top, int(round(top / DEFAULT_BIN_WIDTH_RAD)) + 1))
    counts = lambda: np.histogram(true_theta_e, edges)[0]
    while len(edges) > 2 and counts()[-1] < min_events:
        del edges[-2]
    while len(edges) > 2 and counts()[0] < min_events:
        del edges[1]
    return np.array(edges)


def calibrate(events: RecoEvents, geometry: Geometry, selection: Selection | None = None,
              pid_settings: PidSettings | None = None, theta_e_edges_rad=None,
              max_vectors_per_bin: int | None = None, min_events_per_bin: int = 50,
              neighbours: int = DEFAULT_NEIGHBOURS, conditions: dict | None = None) -> ParametricResponse:
    """Measure the parametric response from a full-mode sample.

    Parameters
    ----------
    events : RecoEvents or CalibrationSample
        Full-mode reconstructed and identified events (`reco.pid.identify`) with the truth
        columns; only elastic events (process 0) are used. Use events independent of those the
        response will be validated on. A `CalibrationSample` holds only what the calibration
        needs (49 bytes an event, 57 with calorimeter terms): `reco.chain.calibrate_chain`
        builds one chunk by chunk.
    geometry : Geometry
        The geometry of the sample (its name and content hash go into the response; the vertex_z
        cut takes its targets).
    selection : Selection, optional
        Its non-kinematic cuts define the efficiency (default ``Selection()``).
    pid_settings : PidSettings, optional
        The identification the parametric mode applies (default ``PidSettings()``); use the one
        of the full mode.
    theta_e_edges_rad : array_like, optional
        Bins of the true theta_e; default 1 mrad bins from 0 to the largest angle of the sample
        (outer bins merged until they hold `min_events_per_bin` events).
    max_vectors_per_bin : int, optional
        Residual vectors kept per bin (the first ones in event order); default all of them. A
        cap bounds the file size (20 bytes a vector, 24 with calorimeter terms; 6.4e6 vectors
        from 1e7 run2025 events) at the cost of precision: the response is then only as precise
        as the vectors it keeps.
    min_events_per_bin : int
        A bin with fewer reconstructed events raises ValueError (widen the bins or add events).
    neighbours : int
        An event's residual vector is drawn from this many calibration vectors nearest in true
        theta_e (module doc): small enough to follow structure in the response, large enough
        that nearby events do not share few vectors.
    conditions : dict, optional
        What else the response depends on, saved with it and checked by the chain that reads it
        (`reco.chain.calibration_conditions`: the geometry as simulated and the simulation,
        reconstruction and identification settings).

    Returns
    -------
    ParametricResponse
    """
    if not isinstance(geometry, Geometry):
        raise ValueError(f"geometry = {type(geometry).__name__} must be a fastsim.detector.geometry.Geometry")
    selection = Selection() if selection is None else selection
    pid_settings = PidSettings() if pid_settings is None else pid_settings
    if max_vectors_per_bin is not None:
        max_vectors_per_bin = check_integer("max_vectors_per_bin", max_vectors_per_bin, 1)
    min_events_per_bin = check_integer("min_events_per_bin", min_events_per_bin, 2)
    neighbours = check_integer("neighbours", neighbours, 1)
    if isinstance(events, RecoEvents):
        events = CalibrationSample.from_events(events, geometry, selection, pid_settings)
    elif not isinstance(events, CalibrationSample):
        raise ValueError(f"events = {type(events).__name__} must be a reco.events.RecoEvents or a CalibrationSample")
    if events.folded_cuts != selection.non_kinematic_specs():
        raise ValueError(f"events: the calibration sample was made with the non-kinematic cuts {events.folded_cuts}, "
                         f"the selection's are {selection.non_kinematic_specs()}")
    if (events.calorimeter_term is not None) != pid_settings.calorimeter:
        raise ValueError(f"pid_settings.calorimeter = {pid_settings.calorimeter}, but the calibration sample was made "
                         f"{'with' if events.calorimeter_term is not None else 'without'} the calorimeter in the "
                         "identification; make it with the same pid settings")
    if len(events.weight) == 0:
        raise ValueError("events: the calibration needs elastic events (process 0), there are none")
    true_theta_e, residual, passing = events.true_theta_e_rad, events.residual_rad, events.passing
    weight = events.weight
    if theta_e_edges_rad is None:  # bins of enough events that are reconstructed and pass
        if np.count_nonzero(passing) < min_events_per_bin:
            raise ValueError(f"only {np.count_nonzero(passing)} events are reconstructed and pass the non-kinematic "
                             f"cuts, fewer than min_events_per_bin = {min_events_per_bin}; add events")
        edges = _default_edges(true_theta_e[passing], min_events_per_bin)
        edges[0], edges[-1] = min(edges[0], true_theta_e.min()), max(edges[-1], true_theta_e.max())
    else:
        edges = check_edges("theta_e_edges_rad", theta_e_edges_rad)
    nb = edges.size - 1
    index = np.clip(np.searchsorted(edges, true_theta_e, side="right") - 1, 0, nb - 1)
    inside = (true_theta_e >= edges[0]) & (true_theta_e <= edges[-1])

    sum_w = np.bincount(index[inside], weights=weight[inside], minlength=nb)
    sum_w2 = np.bincount(index[inside], weights=(weight * weight)[inside], minlength=nb)
    sum_w_pass = np.bincount(index[inside & passing], weights=weight[inside & passing], minlength=nb)
    counts = np.bincount(index[inside], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        efficiency = np.where(sum_w > 0, sum_w_pass / sum_w, 0.0)
        efficiency_error = np.where(sum_w > 0, np.sqrt(efficiency * (1 - efficiency) * sum_w2) / sum_w, 0.0)

    use = inside & passing
    bins = [np.flatnonzero(use & (index == b)) for b in range(nb)]
    for b, rows in enumerate(bins):
        if rows.size < min_events_per_bin:
            raise ValueError(f"theta_e bin [{edges[b]:.6g}, {edges[b + 1]:.6g}] rad has {rows.size} reconstructed "
                             f"events, fewer than min_events_per_bin = {min_events_per_bin}; widen the bins or add events")
    width = np.empty((nb, _N))
    bias = np.empty((nb, _N))
    for b, rows in enumerate(bins):
        low, high = np.quantile(residual[rows], _SIGMA_QUANTILES, axis=0)
        width[b] = 0.5 * (high - low)
        bias[b] = residual[rows].mean(axis=0)
    if np.any(width <= 0):
        raise ValueError("the calibration sample has a residual of zero width in some bin (no smearing?)")
    centres = 0.5 * (edges[1:] + edges[:-1])
    correlation = np.stack([np.corrcoef(residual[rows], rowvar=False) for rows in bins])
    kept = np.concatenate([rows if max_vectors_per_bin is None else rows[:max_vectors_per_bin] for rows in bins])
    kept = kept[np.argsort(true_theta_e[kept], kind="stable")]
    normalized = residual[kept] / _interpolated_width(centres, width, true_theta_e[kept])

    settings = {"pid": to_plain(pid_settings), "folded_cuts": [dict(s) for s in selection.non_kinematic_specs()],
                "max_vectors_per_bin": max_vectors_per_bin, "neighbours": neighbours,
                "calibration_events": int(len(weight)), "calibration_metadata_hash": events.config_hash,
                "conditions": conditions}
    terms = np.zeros(0) if events.calorimeter_term is None else events.calorimeter_term[kept]
    return ParametricResponse(edges, width, bias, correlation, true_theta_e[kept].astype(np.float32),
                              normalized.astype(np.float32), terms.astype(np.float32), efficiency, efficiency_error, counts,
                              geometry.name, content_hash(geometry), settings)


# --- kernels --------------------------------------------------------------------------------

class _Axis:
    """Bin edges with a lookup grid for O(1) bin finding without branches on random data: the
    grid's cells are at most half the narrowest bin, so a cell's first bin is the bin or one
    before it. (A binary search on random angles costs ~40 ns an event in mispredictions.)"""

    def __init__(self, edges):
        self.edges = np.ascontiguousarray(edges, dtype=np.float64)
        n_cells = int(min(2 ** 20, max(16, math.ceil(2.0 * (self.edges[-1] - self.edges[0]) / np.diff(self.edges).min()))))
        self.inv_cell = n_cells / (self.edges[-1] - self.edges[0])
        cell_low = self.edges[0] + np.arange(n_cells) / self.inv_cell
        self.lookup = np.clip(np.searchsorted(self.edges, cell_low, side="right") - 1, 0, self.edges.size - 2)

    def args(self):
        return self.edges, self.inv_cell, self.lookup


@njit(cache=True, nogil=True)
def _fast_bin(edges, inv_cell, lookup, x):
    """Bin of `edges` holding x through the lookup grid of `_Axis`: -1 outside [edges[0], edges[-1]].
    The step to the next bin adds a comparison instead of branching: on random angles the branch
    was mispredicted so often that the interpolation of the response took 36 ns an event, 7-9
    without it."""
    n = edges.size - 1
    if not (edges[0] <= x <= edges[n]):
        return -1
    cell = min(int((x - edges[0]) * inv_cell), lookup.size - 1)
    b = lookup[cell]
    return b + ((b < n - 1) & (x >= edges[b + 1]))


@njit(cache=True, nogil=True)
def _interpolation(centres, inv_cell, lookup, theta_e):
    """(j, f): theta_e lies at fraction f from response bin centre j to centre j + 1 (j from the
    centres' lookup grid); f = 0 before the first centre and 1 after the last (the outer values
    held constant)."""
    nb = centres.size
    if nb == 1 or not theta_e > centres[0]:
        return 0, 0.0
    if not theta_e < centres[nb - 1]:
        return nb - 2, 1.0
    j = _fast_bin(centres, inv_cell, lookup, theta_e)
    return j, (theta_e - centres[j]) / (centres[j + 1] - centres[j])


@njit(cache=True, nogil=True)
def _rank_position(theta_e, rank_low, rank_inv_cell):
    """Position of theta_e on the rank grid, in cells from its first edge (fractional)."""
    return (theta_e - rank_low) * rank_inv_cell


@njit(cache=True, nogil=True)
def _vector_row(u, theta_e, rank_low, rank_inv_cell, rank_table, n_vectors, neighbours):
    """Row of the residual vector of an event: one of the `neighbours` calibration vectors nearest
    in true theta_e (a window around the rank of theta_e, from the rank grid), picked by the
    event's uniform u of STREAM_PARAMETRIC."""
    x = _rank_position(theta_e, rank_low, rank_inv_cell)
    n_cells = rank_table.size - 1
    if x <= 0.0:
        rank = 0.0
    elif x >= n_cells:
        rank = float(n_vectors)
    else:
        cell = int(x)
        rank = rank_table[cell] + (x - cell) * (rank_table[cell + 1] - rank_table[cell])
    first = min(max(int(rank) - neighbours // 2, 0), n_vectors - neighbours)
    return first + min(int(u * neighbours), neighbours - 1)


@njit(cache=True, nogil=True)
def _prefetch_rank(theta_e, rank_low, rank_inv_cell, rank_table):
    """Prefetch the rank-grid cell that `_vector_row` reads for theta_e."""
    x = _rank_position(theta_e, rank_low, rank_inv_cell)
    prefetch(rank_table, int(min(max(x, 0.0), rank_table.size - 1.0)))


@njit(cache=True, nogil=True)
def _smear(j, f, z0, z1, z2, z3, theta_e, theta_mu, phi_e, phi_mu, width):
    """Smeared (theta_e, theta_mu, phi_e, phi_mu) of the electron and muon tracks of an event with
    normalized residual vector z, the widths interpolated at (j, f) (`_interpolation`)."""
    k = min(j + 1, width.shape[0] - 1)
    w0 = width[j, 0] + f * (width[k, 0] - width[j, 0])
    w1 = width[j, 1] + f * (width[k, 1] - width[j, 1])
    w2 = width[j, 2] + f * (width[k, 2] - width[j, 2])
    w3 = width[j, 3] + f * (width[k, 3] - width[j, 3])
    te, tm, pe, pm = theta_e + w0 * z0, theta_mu + w1 * z1, phi_e + w2 * z2, phi_mu + w3 * z3
    if te < 0.0:  # a polar angle through the axis: the track comes out on the other side
        te, pe = -te, pe + math.pi
    if tm < 0.0:
        tm, pm = -tm, pm + math.pi
    return te, tm, wrap_angle_kernel(pe), wrap_angle_kernel(pm)


@njit(cache=True, nogil=True)
def _efficiency(j, f, efficiency):
    """The efficiency interpolated at (j, f) (`_interpolation`)."""
    k = min(j + 1, efficiency.size - 1)
    return efficiency[j] + f * (efficiency[k] - efficiency[j])


@njit(cache=True, nogil=True, inline="always")
def _oriented_term(calo_terms, row, electron_is_1):
    """The calorimeter term of "track 1 is the muon" for vector `row` (0 without terms): the
    stored term is that of "the true muon's track is the muon"."""
    if calo_terms.size == 0:
        return 0.0
    return -calo_terms[row] if electron_is_1 else calo_terms[row]


@njit(parallel=True, cache=True, nogil=True)
def _apply_kernel(seed, event_id, theta_e_true, theta_mu_true, phi_e_true, phi_mu_true, weight, centres, inv_cell,
                  lookup, width, efficiency, rank_low, rank_inv_cell, rank_table, residuals, calo_terms,
                  neighbours, beam_energy_gev, muon_limit, sigma_mu, sigma_e0, scattering, theta_1, phi_1, theta_2,
                  phi_2, pdg_1, pdg_2, muon_is_1, theta_e, theta_mu, phi_e, phi_mu, acoplanarity, elasticity,
                  calo_term, weight_out):
    n_vectors = residuals.shape[0]
    for i in prange(event_id.size):
        j, f = _interpolation(centres, inv_cell, lookup, theta_e_true[i])
        u = rng.event_uniform(seed, np.uint64(event_id[i]), rng.STREAM_PARAMETRIC)
        row = _vector_row(u, theta_e_true[i], rank_low, rank_inv_cell, rank_table, n_vectors, neighbours)
        te, tm, pe, pm = _smear(j, f, residuals[row, 0], residuals[row, 1], residuals[row, 2], residuals[row, 3],
                                theta_e_true[i], theta_mu_true[i], phi_e_true[i], phi_mu_true[i], width)
        if te >= tm:
            theta_1[i], phi_1[i], pdg_1[i], theta_2[i], phi_2[i], pdg_2[i] = te, pe, PDG_ELECTRON, tm, pm, PDG_MUON
        else:
            theta_1[i], phi_1[i], pdg_1[i], theta_2[i], phi_2[i], pdg_2[i] = tm, pm, PDG_MUON, te, pe, PDG_ELECTRON
        term = _oriented_term(calo_terms, row, te >= tm)
        calo_term[i] = term if calo_terms.size else np.nan
        identify_kernel(i, theta_1, phi_1, theta_2, phi_2, beam_energy_gev, muon_limit, sigma_mu, sigma_e0,
                        scattering, term, theta_e, theta_mu, phi_e, phi_mu, acoplanarity, elasticity, muon_is_1)
        weight_out[i] = weight[i] * _efficiency(j, f, efficiency)


# Events go in sub-blocks: first the rows of their residual vectors, then a tight loop that only
# gathers the vectors (many cache misses in flight at once: the table is larger than L2), then
# the physics. 2x faster than one pass per event. The rank grid (up to 2^18 cells) and the vectors
# (16 bytes each) are read at random: a pass prefetching the rank cells, and the prefetch of each
# vector as soon as its row is known, overlap those cache misses (the chain 5-41 % faster).
_SUB_BLOCK = 1024


@njit(cache=True, nogil=True)
def _histogram_range(seed, event_id, theta_e_true, theta_mu_true, phi_e_true, phi_mu_true, weight, start, stop,
                     centres, inv_cell, lookup, width, efficiency, rank_low, rank_inv_cell, rank_table,
                     residuals, calo_terms, neighbours, beam_energy_gev, muon_limit, sigma_mu, sigma_e0, scattering, cuts, x_edges,
                     x_inv_cell, x_lookup, y_edges, y_inv_cell, y_lookup, sum_w, sum_w2):
    n_vectors = residuals.shape[0]
    rows = np.empty(_SUB_BLOCK, dtype=np.int64)
    z = np.empty((_SUB_BLOCK, 4), dtype=np.float32)
    term = np.zeros(_SUB_BLOCK, dtype=np.float32)
    # With theta_e_min at or above the muon limit, an event whose larger angle is within the limit
    # fails the theta_e cut whichever track is the muon: only the identification's "track 1 is
    # the electron" can lead to a selected event, and it is skipped (the same histogram, ~6 ns less).
    identify = cuts[1] < muon_limit
    for block in range(start, stop, _SUB_BLOCK):
        n = min(_SUB_BLOCK, stop - block)
        for j in range(n):
            _prefetch_rank(theta_e_true[block + j], rank_low, rank_inv_cell, rank_table)
        group, uniforms = np.int64(-1), (0.0, 0.0, 0.0, 0.0)
        for j in range(n):
            event = event_id[block + j]
            if event >> 2 != group:  # consecutive events share their Philox block
                group = event >> 2
                uniforms = rng.event_group_uniforms(seed, group, rng.STREAM_PARAMETRIC)
            rows[j] = _vector_row(uniforms[event & 3], theta_e_true[block + j], rank_low, rank_inv_cell, rank_table,
                                  n_vectors, neighbours)
            prefetch(residuals, rows[j])
        for j in range(n):
            for c in range(4):
                z[j, c] = residuals[rows[j], c]
            if identify and calo_terms.size:
                term[j] = calo_terms[rows[j]]
        for j in range(n):
            i = block + j
            b, f = _interpolation(centres, inv_cell, lookup, theta_e_true[i])
            te, tm, pe, pm = _smear(b, f, z[j, 0], z[j, 1], z[j, 2], z[j, 3], theta_e_true[i], theta_mu_true[i],
                                    phi_e_true[i], phi_mu_true[i], width)
            t1, t2, p1, p2 = (te, tm, pe, pm) if te >= tm else (tm, te, pm, pe)
            if identify and muon_is_1_kernel(t1, t2, beam_energy_gev, muon_limit, sigma_mu, sigma_e0, scattering,
                                             _oriented_term(term, j, te >= tm)):
                te, tm, pe, pm = t2, t1, p2, p1
            else:
                te, tm, pe, pm = t1, t2, p1, p2
            if not (tm > cuts[0] and cuts[1] < te < cuts[2]):
                continue
            if not abs(acoplanarity_kernel(pe, pm)) < cuts[3]:
                continue
            if not abs(tm - elastic_theta_mu_kernel(beam_energy_gev, te)) < cuts[4]:
                continue
            ix = _fast_bin(x_edges, x_inv_cell, x_lookup, te)
            iy = _fast_bin(y_edges, y_inv_cell, y_lookup, tm)
            if ix < 0 or iy < 0:
                continue
            w = weight[i] * _efficiency(b, f, efficiency)
            sum_w[ix, iy] += w
            sum_w2[ix, iy] += w * w


@njit(parallel=True, cache=True, nogil=True)
def _histogram_kernel(seed, event_id, theta_e_true, theta_mu_true, phi_e_true, phi_mu_true, weight, centres, inv_cell,
                      lookup, width, efficiency, rank_low, rank_inv_cell, rank_table, residuals, calo_terms,
                      neighbours, beam_energy_gev, muon_limit, sigma_mu, sigma_e0, scattering, cuts, x_edges, x_inv_cell, x_lookup,
                      y_edges, y_inv_cell, y_lookup, sum_w, sum_w2):
    # one histogram per block of events, summed at the end: no two threads write the same bins
    n_blocks = sum_w.shape[0]
    n = event_id.size
    for k in prange(n_blocks):
        _histogram_range(seed, event_id, theta_e_true, theta_mu_true, phi_e_true, phi_mu_true, weight,
                         k * n // n_blocks, (k + 1) * n // n_blocks, centres, inv_cell, lookup, width,
                         efficiency, rank_low, rank_inv_cell, rank_table, residuals, calo_terms, neighbours, beam_energy_gev,
                         muon_limit, sigma_mu, sigma_e0, scattering, cuts, x_edges, x_inv_cell, x_lookup, y_edges,
                         y_inv_cell, y_lookup, sum_w[k], sum_w2[k])


@njit(parallel=True, cache=True, nogil=True)
def _generated_histogram_kernel(generation_seed, first_event, n_events, generation, seed, centres, inv_cell, lookup,
                                width, efficiency, rank_low, rank_inv_cell, rank_table, residuals, calo_terms,
                                neighbours, beam_energy_gev, muon_limit, sigma_mu, sigma_e0, scattering, cuts, x_edges,
                                x_inv_cell, x_lookup, y_edges, y_inv_cell, y_lookup, sum_w, sum_w2):
    """`_histogram_kernel` of elastic events first_event .. first_event + n_events - 1 generated
    on the fly (`generation` = `Generator.elastic_kernel_args()`; weight and angles only),
    _SUB_BLOCK at a time into arrays that stay in the cache: the same events and histogram as
    generating the arrays first."""
    (weight_scale, beam_params, beam_profile, target_z, target_thickness, target_cumulative, t_shape, t_cumulative,
     t_start, t_jacobian, running_shift, running_first, running_table, generation_cuts, radiation_params) = generation
    n_blocks = sum_w.shape[0]
    for k in prange(n_blocks):
        weight, t = np.empty(_SUB_BLOCK), np.empty(_SUB_BLOCK)
        beam, vertex = np.empty((_SUB_BLOCK, 3)), np.empty((_SUB_BLOCK, 3))
        target = np.empty(_SUB_BLOCK, dtype=np.int16)
        momenta = np.empty((_SUB_BLOCK, 4 * N_OUT))
        event_id = np.empty(_SUB_BLOCK, dtype=np.int64)
        columns = np.empty((4, _SUB_BLOCK))
        angles = columns.T  # the generator's rows (theta_e, phi_e, theta_mu, phi_mu) land in the columns
        stop = (k + 1) * n_events // n_blocks
        for block in range(k * n_events // n_blocks, stop, _SUB_BLOCK):
            n = min(_SUB_BLOCK, stop - block)
            for j in range(n):
                elastic_event_kernel(generation_seed, first_event + block, j, False, weight_scale, beam_params,
                                     beam_profile, target_z, target_thickness, target_cumulative, t_shape, t_cumulative,
                                     t_start, t_jacobian, running_shift, running_first, running_table, generation_cuts,
                                     radiation_params, weight, t, beam, vertex, target, momenta, angles)
            for j in range(n):
                event_id[j] = first_event + block + j
            start = np.int64(0)  # not a literal 0: `_histogram_kernel`'s compiled version is reused
            _histogram_range(seed, event_id, columns[0], columns[2], columns[1], columns[3], weight, start, n, centres,
                             inv_cell, lookup, width, efficiency, rank_low, rank_inv_cell, rank_table, residuals,
                             calo_terms, neighbours, beam_energy_gev, muon_limit, sigma_mu, sigma_e0, scattering, cuts,
                             x_edges, x_inv_cell, x_lookup, y_edges, y_inv_cell, y_lookup, sum_w[k], sum_w2[k])


# --- Python layer ---------------------------------------------------------------------------

_TRUTH_KEYS = ("event_id", "weight", "e_theta_rad", "mu_theta_rad", "e_phi_rad", "mu_phi_rad")
_RECO_TRUTH = {"e_theta_rad": "true_theta_e_rad", "mu_theta_rad": "true_theta_mu_rad",
               "e_phi_rad": "true_phi_e_rad", "mu_phi_rad": "true_phi_mu_rad"}


def _truth_arrays(truth) -> dict:
    """The truth columns the parametric mode needs, as contiguous arrays, from TruthEvents,
    RecoEvents (true_* columns) or a dict with the TruthEvents names."""
    if isinstance(truth, TruthEvents):
        source = {key: truth[key] for key in (*_TRUTH_KEYS, "process", "t_gev2", "vertex_z_cm", "beam_energy_gev")}
    elif isinstance(truth, RecoEvents):
        source = {"event_id": truth["event_id"], "weight": truth["weight"], "process": truth["process"],
                  "t_gev2": truth["true_t_gev2"], "vertex_z_cm": truth["true_vertex_z_cm"],
                  "beam_energy_gev": truth["beam_energy_gev"]}
        source.update({key: truth[name] for key, name in _RECO_TRUTH.items()})
    elif isinstance(truth, dict):
        missing = [key for key in _TRUTH_KEYS if key not in truth]
        if missing:
            raise ValueError(f"truth: missing arrays {missing}; needed: {list(_TRUTH_KEYS)}")
        source = dict(truth)
    else:
        raise ValueError(f"truth = {type(truth).__name__} must be TruthEvents, RecoEvents or a dict of arrays")
    n = np.asarray(source["event_id"]).size
    out = {"event_id": np.ascontiguousarray(source["event_id"], dtype=np.int64)}
    for key in _TRUTH_KEYS[1:]:
        out[key] = np.ascontiguousarray(source[key], dtype=np.float64)
        if out[key].shape != (n,):
            raise ValueError(f"truth: {key} has shape {out[key].shape}, expected ({n},)")
        if key.endswith("_rad") and not np.all(np.isfinite(out[key])):
            raise ValueError(f"truth: {key} has {int(np.count_nonzero(~np.isfinite(out[key])))} values that are not "
                             "finite; the parametric mode needs the true angles of every event")
    if np.any(out["event_id"] < 0):
        raise ValueError("truth: event_id must be >= 0 (it keys the random numbers)")
    process = np.asarray(source.get("process", np.zeros(n, dtype=np.int8)))
    if np.any(process != 0):
        raise ValueError(f"truth: {int(np.count_nonzero(process != 0))} events are not elastic (process != 0); "
                         "the parametric response is calibrated on elastic events")
    out["process"] = process
    for key in ("t_gev2", "vertex_z_cm", "beam_energy_gev"):
        out[key] = np.asarray(source.get(key, np.full(n, np.nan)), dtype=np.float64)
    return out


def _checked(response, seed):
    if not isinstance(response, ParametricResponse):
        raise ValueError(f"response = {type(response).__name__} must be a ParametricResponse")
    return np.uint64(rng.validate_seed(seed))


def apply(truth, response: ParametricResponse, seed: int) -> RecoEvents:
    """Parametric reconstruction of elastic truth events.

    Parameters
    ----------
    truth : TruthEvents, RecoEvents or dict
        Elastic events; a dict needs event_id, weight, e_theta_rad, mu_theta_rad, e_phi_rad,
        mu_phi_rad (optional process, t_gev2, vertex_z_cm, beam_energy_gev).
    response : ParametricResponse
    seed : int
        Seed of the smearing (0 <= seed < 2**64).

    Returns
    -------
    RecoEvents
        Truth columns, the two tracks (theta_1 >= theta_2, truth_pdg_1/2), the identification and
        observables, calo_term (with a calorimeter response), vertex_z_cm = the true vertex z,
        weight = truth weight * efficiency (true_weight the truth weight);
        metadata: mode "parametric", seed, folded_cuts, the response's geometry and hash.
    """
    seed = _checked(response, seed)
    data = _truth_arrays(truth)
    n = data["event_id"].size
    floats = ("theta_1_rad", "phi_1_rad", "theta_2_rad", "phi_2_rad")
    observables = ("theta_e_rad", "theta_mu_rad", "phi_e_rad", "phi_mu_rad", "acoplanarity_rad", "elasticity_rad")
    out = {name: np.empty(n) for name in (*floats, "truth_pdg_1", "truth_pdg_2", "muon_is_1", *observables, "calo_term",
                                          "weight")}
    out["truth_pdg_1"] = np.empty(n, dtype=np.int32)
    out["truth_pdg_2"] = np.empty(n, dtype=np.int32)
    out["muon_is_1"] = np.empty(n, dtype=np.bool_)
    _apply_kernel(seed, data["event_id"], data["e_theta_rad"], data["mu_theta_rad"], data["e_phi_rad"],
                  data["mu_phi_rad"], data["weight"], *response.kernel_arrays(),
                  *response.pid_settings.kernel_args(), *out.values())
    columns = {"event_id": data["event_id"], "process": data["process"], "true_weight": data["weight"],
               "true_t_gev2": data["t_gev2"],
               "true_theta_e_rad": data["e_theta_rad"], "true_theta_mu_rad": data["mu_theta_rad"],
               "true_phi_e_rad": data["e_phi_rad"], "true_phi_mu_rad": data["mu_phi_rad"],
               "true_vertex_z_cm": data["vertex_z_cm"], "vertex_z_cm": data["vertex_z_cm"],
               "beam_energy_gev": data["beam_energy_gev"], "n_tracks_out": np.full(n, 2, dtype=np.int16), **out}
    metadata = {"mode": "parametric", "seed": int(seed), "folded_cuts": response.folded_cuts,
                "geometry_name": response.geometry_name, "geometry_hash": response.geometry_hash}
    return RecoEvents(columns, metadata)


def kinematic_bounds(selection: Selection) -> np.ndarray:
    """The kinematic cuts of `selection` as the kernel's array (theta_mu_min, theta_e_min,
    theta_e_max, |acoplanarity| max, |elasticity| max); a cut left out is unbounded."""
    values = {"theta_mu_min_rad": -math.inf, "theta_e_min_rad": -math.inf, "theta_e_max_rad": math.inf,
              "acoplanarity_max_rad": math.inf, "elasticity_max_rad": math.inf}
    for _, cut in selection.kinematic_cuts():
        values.update(cut.bounds())
    return np.array(list(values.values()))


def histogram(truth, response: ParametricResponse, seed: int, selection: Selection, theta_e_edges_rad,
              theta_mu_edges_rad, n_blocks: int | None = None):
    """Weighted 2D histogram (theta_e, theta_mu) of the selected parametric events, made directly.

    Same events and random numbers as `apply` followed by `selection.apply` (the non-kinematic
    cuts through the efficiency in the weight, the kinematic ones applied; no residual smearing:
    ValueError if the selection has it). Events outside the histogram range are not counted.

    Parameters
    ----------
    truth, response, seed
        As for `apply`.
    selection : Selection
        Its non-kinematic cuts must be the response's (ValueError otherwise).
    theta_e_edges_rad, theta_mu_edges_rad : array_like
        Increasing bin edges.
    n_blocks : int, optional
        Partial histograms filled in parallel (default: the number of numba threads).

    Returns
    -------
    (sum_w, sum_w2) : ndarray (nx, ny) each
        Sum of weights and of squared weights per bin.
    """
    arguments = _histogram_arguments(response, seed, selection, theta_e_edges_rad, theta_mu_edges_rad, n_blocks)
    data = _truth_arrays(truth)
    _histogram_kernel(arguments[0], data["event_id"], data["e_theta_rad"], data["mu_theta_rad"], data["e_phi_rad"],
                      data["mu_phi_rad"], data["weight"], *arguments[1:])
    return arguments[-2].sum(axis=0), arguments[-1].sum(axis=0)


def generated_histogram(generator, first_event: int, n_events: int, response: ParametricResponse, seed: int,
                        selection: Selection, theta_e_edges_rad, theta_mu_edges_rad, n_blocks: int | None = None):
    """`histogram` of events first_event .. first_event + n_events - 1 of an elastic
    `fastsim.generator.generate.Generator`, generated inside the histogram kernel a thousand at a
    time: the same numbers as `histogram(generator.chunk(first_event, n_events), ...)` (to the
    order of the sums), without the event arrays (`reco.chain.Chain.histogram`). The generator's
    cross-section summary does not count these events."""
    if generator.pair_probability > 0.0:
        raise ValueError(f"generator.process = {generator.config.process!r}: the parametric response is calibrated "
                         "on elastic events; generate with process = 'elastic'")
    first_event = check_integer("first_event", first_event, 0)
    n_events = check_integer("events", n_events, 1)
    arguments = _histogram_arguments(response, seed, selection, theta_e_edges_rad, theta_mu_edges_rad, n_blocks)
    _generated_histogram_kernel(np.uint64(generator.seed), np.int64(first_event), np.int64(n_events),
                                generator.elastic_kernel_args(), *arguments)
    return arguments[-2].sum(axis=0), arguments[-1].sum(axis=0)


def _histogram_arguments(response, seed, selection, theta_e_edges_rad, theta_mu_edges_rad, n_blocks) -> tuple:
    """The checked arguments of the histogram kernels after the events: the seed, the response
    and identification arrays, the kinematic bounds, both axes and the (n_blocks, nx, ny) sums."""
    seed = _checked(response, seed)
    if selection.non_kinematic_specs() != response.folded_cuts:
        raise ValueError(f"the response's efficiency is for the cuts {response.folded_cuts}, "
                         f"the selection's non-kinematic cuts are {selection.non_kinematic_specs()}")
    if selection.residual_smearing_rad > 0:
        raise ValueError("histogram: the residual smearing is not applied on this path; use apply and Selection.apply")
    x_edges = check_edges("theta_e_edges_rad", theta_e_edges_rad)
    y_edges = check_edges("theta_mu_edges_rad", theta_mu_edges_rad)
    n_blocks = numba.get_num_threads() if n_blocks is None else check_integer("n_blocks", n_blocks, 1, 4096)
    shape = (n_blocks, x_edges.size - 1, y_edges.size - 1)
    return (seed, *response.kernel_arrays(), *response.pid_settings.kernel_args(), kinematic_bounds(selection),
            *_Axis(x_edges).args(), *_Axis(y_edges).args(), np.zeros(shape), np.zeros(shape))
