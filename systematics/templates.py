"""Templates: expected histograms of (theta_e, theta_mu) for any hadronic-model parameters.

What to use when:

- `TemplateSample` holds the selected events of a simulated sample (reconstructed angles, weight
  in ub, true Born t), the number of generated events and the running used at generation
  (`reference`). Build it from arrays, from truth events (`from_truth`, truth-level angles) or
  from a Parquet event file (`from_parquet`). `sample.reweighted_histogram(binning, model)` is
  the exact per-event reweighting: slow, the reference for the fast path.
- `Template(sample, binning, model)` is built once from a sample and gives the expected events
  per bin for any parameters theta of the model's family (lepton-like (K, M) by default) in
  microseconds: `expected(theta, luminosity_inv_nb)`, its gradient, and the template's own MC
  variance (sum of squared weights).
- `TemplateSet(nominal, variations={"ms_scale": (down, up)})` adds nuisance parameters: each is
  a pair of templates simulated with the effect at -1 and +1 sigma, morphed (see
  `morphing_coefficients`). The fit (`systematics.fit`) takes a TemplateSet (or a Template).

Expected events in a bin: mu = L * sum(w' in bin) / N_generated with L in ub^-1
(1 nb^-1 = 1e3 ub^-1) and w' the reweighted weights (`systematics.reweighting`).

The fast path. The factor r(t; theta) is smooth in u = ln(-t). The u range of the sample is cut
into `n_sub_bins` equal sub-bins, and in each r is replaced by its interpolating polynomial of
degree `degree` on Chebyshev nodes: r(u) ~ sum_j l_j(u) r(u_j). Building the template stores, per
reco bin and node, the Lagrange moments sum over events of w l_j(u) (and w^2 l_j(u) for the MC
variance); a new template is then the sparse contraction sum_j moment_j r(u_j), with r evaluated
at the few hundred nodes only. With 64 sub-bins of degree 4 the interpolation error is far below
1e-10 relative (the tests ask 1e-7 against the exact per-event sum). Events without a Born t
(pair background: t is NaN) are carried unweighted. For parameters that bring the running near
its Landau pole (1 - Dalpha(t) < RUNNING_FLOOR = 0.5 somewhere in the sample) r is continued
smoothly instead of following the pole, so fits cannot cross it; there, and only there, the
template differs from the exact reweighting.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from fastsim.config import check_integer, check_range
from fastsim.physics.vacuum_polarization import HadronicModel, LeptonLikeModel, RunningCoupling, dalpha_lep
from fastsim.units import INV_NB_TO_INV_UB
from systematics.histogram import Binning, Histogram
from systematics.reweighting import HadronicFamily, reweighting_factor

#: Columns a reconstructed template file must have (see reco/events.py).
RECO_COLUMNS = ("theta_e_rad", "theta_mu_rad", "weight", "selected", "true_t_gev2")
#: Truth files (fastsim.events) are read with these columns in the same roles.
TRUTH_COLUMNS = {"theta_e_rad": "e_theta_rad", "theta_mu_rad": "mu_theta_rad", "weight": "weight", "true_t_gev2": "t_gev2"}
#: Above this many (bin, node) cells the moments are accumulated sparsely (np.unique) instead of densely.
_DENSE_CELLS_MAX = 20_000_000
#: Below this value of 1 - Dalpha(t) = 1 - Dalpha_lep(t) - Dalpha_had(t; theta), templates continue
#: 1 / (1 - Dalpha) along its tangent instead of following it to the Landau pole (1 - Dalpha = 0).
#: The exact factor falls again past the pole, so a fit that stepped across (a toy of a few
#: thousand events constrains M hardly at all) met overflowing gradients and a cost that fell
#: again towards larger K. Continued, the expected counts keep growing with Dalpha: the cost rises
#: smoothly, with its gradient, back towards the physical region. At the reference point and
#: 150 GeV, 1 - Dalpha(t) > 0.989 (Dalpha_had < 0.0011): only Dalpha_had(t) > 0.49 sees the floor.
RUNNING_FLOOR = 0.5


@dataclass(frozen=True, eq=False)
class TemplateSample:
    """Selected events of a simulated sample, with what is needed to reweight them.

    Parameters
    ----------
    theta_e_rad, theta_mu_rad : array
        Observed (reconstructed or smeared) angles of the selected events.
    weight : array
        Event weights in ub: sum(weight) / n_generated is the selected cross section per
        target electron.
    true_t_gev2 : array
        True Born t of each event (< 0), NaN for events that are not reweighted (pairs).
    n_generated : int
        Number of generated events (all of them, before selection).
    reference : RunningCoupling
        The running of alpha used at generation.
    beam_energy_gev : float
        Mean beam energy (for the x range of the a_mu integral).
    """

    theta_e_rad: np.ndarray
    theta_mu_rad: np.ndarray
    weight: np.ndarray
    true_t_gev2: np.ndarray
    n_generated: int
    reference: RunningCoupling
    beam_energy_gev: float
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        arrays = {}
        for name in ("theta_e_rad", "theta_mu_rad", "weight", "true_t_gev2"):
            values = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if values.ndim != 1:
                raise ValueError(f"template sample: {name} must be a 1D array, got shape {values.shape}")
            arrays[name] = values
        n = arrays["weight"].size
        for name, values in arrays.items():
            if values.size != n:
                raise ValueError(f"template sample: {name} has {values.size} entries, weight has {n}")
            object.__setattr__(self, name, values)
        if not np.all(np.isfinite(arrays["weight"])):
            raise ValueError("template sample: weight must be finite")
        t = arrays["true_t_gev2"]
        if np.any(t >= 0):
            raise ValueError(f"template sample: true_t_gev2 = {float(t[t >= 0][0])!r} is outside the allowed range (-inf, 0) (NaN marks events that are not reweighted)")
        n_generated = check_integer("n_generated", self.n_generated, 1)
        if n_generated < n:
            raise ValueError(f"n_generated = {n_generated} is smaller than the {n} events of the sample")
        object.__setattr__(self, "n_generated", n_generated)
        if not isinstance(self.reference, RunningCoupling):
            raise ValueError(f"reference = {self.reference!r} is not a RunningCoupling")
        object.__setattr__(self, "beam_energy_gev", check_range("beam_energy_gev", self.beam_energy_gev, 0.0, math.inf, low_open=True))
        object.__setattr__(self, "metadata", dict(self.metadata))

    def __len__(self) -> int:
        return int(self.weight.size)

    @classmethod
    def from_columns(cls, columns, n_generated: int, reference: RunningCoupling, beam_energy_gev: float,
                     metadata=None) -> "TemplateSample":
        """From a mapping of reco columns (theta_e_rad, theta_mu_rad, weight, true_t_gev2 and
        optionally `selected`, applied here)."""
        missing = [c for c in RECO_COLUMNS if c != "selected" and c not in columns]
        if missing:
            raise ValueError(f"template sample: missing column {missing[0]!r}; needs {list(RECO_COLUMNS)}")
        keep = np.asarray(columns["selected"], dtype=bool) if "selected" in columns else slice(None)
        return cls(*(np.asarray(columns[c], dtype=np.float64)[keep] for c in ("theta_e_rad", "theta_mu_rad", "weight", "true_t_gev2")),
                   n_generated, reference, beam_energy_gev, metadata or {})

    @classmethod
    def from_truth(cls, events, n_generated: int | None = None) -> "TemplateSample":
        """Truth-level template sample from `fastsim.events.TruthEvents` of a weighted run
        (every generated event is a row, so n_generated defaults to the number of rows); the
        generation's running is read from the events' metadata."""
        config = _generator_config(events.metadata, "truth events")
        columns = {ours: events[theirs] for ours, theirs in TRUTH_COLUMNS.items()}
        return cls.from_columns(columns, len(events) if n_generated is None else n_generated,
                                config.elastic.running_coupling, config.beam.mean_energy_gev, dict(events.metadata))

    @classmethod
    def from_parquet(cls, path) -> "TemplateSample":
        """Read a template sample from a Parquet event file.

        A reconstructed file (columns theta_e_rad, theta_mu_rad, weight, selected, true_t_gev2)
        must carry `n_generated` in its key-value metadata (b"muone", JSON), next to the
        generator configuration (`config`). A truth file of `muone generate` (columns
        e_theta_rad, mu_theta_rad, weight, t_gev2) is read as a truth-level sample, with
        n_generated its number of rows unless the metadata says otherwise.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        where = f"templates = {str(path)!r}"
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as error:
            raise ValueError(f"{where} cannot be read: {error}") from None
        raw = (schema.metadata or {}).get(b"muone")
        if raw is None:
            raise ValueError(f"{where}: no b'muone' metadata; a template sample needs the generation's configuration and n_generated")
        metadata = json.loads(raw)
        names = set(schema.names)
        if set(RECO_COLUMNS) <= names:
            table = pq.read_table(path, columns=list(RECO_COLUMNS))
            columns = {c: table.column(c).to_numpy() for c in RECO_COLUMNS}
            if "n_generated" not in metadata:
                raise ValueError(f"{where}: metadata has no n_generated (the number of generated events before selection)")
            n_generated = metadata["n_generated"]
        elif set(TRUTH_COLUMNS.values()) <= names:
            table = pq.read_table(path, columns=list(TRUTH_COLUMNS.values()))
            columns = {ours: table.column(theirs).to_numpy() for ours, theirs in TRUTH_COLUMNS.items()}
            n_generated = metadata.get("n_generated", table.num_rows)
        else:
            need = sorted(set(RECO_COLUMNS) - names)
            raise ValueError(f"{where}: missing columns {need}; a template sample needs {list(RECO_COLUMNS)}")
        config = _generator_config(metadata, where)
        try:
            return cls.from_columns(columns, n_generated, config.elastic.running_coupling, config.beam.mean_energy_gev, metadata)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def columns(self) -> dict:
        return {"theta_e_rad": self.theta_e_rad, "theta_mu_rad": self.theta_mu_rad}

    def reweighted_histogram(self, binning: Binning, model: HadronicModel | None = None,
                             luminosity_inv_nb: float = 1.0) -> Histogram:
        """Exact per-event reweighting to `model` (None: the generation's running, no
        reweighting): the expected events at `luminosity_inv_nb`, with the MC variance."""
        luminosity = check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True)
        weight = self.weight.copy()
        if model is not None:
            has_t = ~np.isnan(self.true_t_gev2)
            weight[has_t] *= reweighting_factor(self.true_t_gev2[has_t], self.reference, model)
        scale = luminosity * INV_NB_TO_INV_UB / self.n_generated
        return Histogram.fill(binning, self.columns(), weight * scale, luminosity_inv_nb=luminosity)


def _generator_config(metadata: dict, where: str):
    from fastsim.generator.generate import GeneratorConfig

    config = metadata.get("config") if isinstance(metadata, dict) else None
    if isinstance(config, dict) and "generator" in config and isinstance(config["generator"], dict):
        config = config["generator"]
    if not isinstance(config, dict):
        raise ValueError(f"{where}: metadata has no generator configuration ('config'), so the running used at generation is unknown")
    try:
        return GeneratorConfig.from_dict(config, where=f"{where} metadata config")
    except ValueError as error:
        raise ValueError(str(error)) from None


# --- the fast path ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _contract(row_start, node, coefficient, factor, out):
    """out[b] += sum over the cells of bin b of coefficient * factor[node]."""
    for b in range(out.size):
        total = 0.0
        for k in range(row_start[b], row_start[b + 1]):
            total += coefficient[k] * factor[node[k]]
        out[b] += total


@njit(cache=True, nogil=True)
def _contract_with_gradient(row_start, node, coefficient, factor, factor_gradient, out, out_gradient):
    """As _contract, and out_gradient[p, b] = sum coefficient * factor_gradient[p, node]."""
    n_par = factor_gradient.shape[0]
    for b in range(out.size):
        total = 0.0
        for k in range(row_start[b], row_start[b + 1]):
            total += coefficient[k] * factor[node[k]]
        out[b] += total
        for p in range(n_par):
            total = 0.0
            for k in range(row_start[b], row_start[b + 1]):
                total += coefficient[k] * factor_gradient[p, node[k]]
            out_gradient[p, b] = total


def chebyshev_nodes(degree: int) -> np.ndarray:
    """The degree + 1 Chebyshev points of the first kind on [-1, 1]."""
    j = np.arange(degree + 1)
    return np.cos(np.pi * (2 * j + 1) / (2 * (degree + 1)))


def lagrange_basis(x, nodes) -> np.ndarray:
    """l_j(x) for every x (rows) and node j (columns): sum_j l_j(x) f(x_j) interpolates f."""
    x = np.asarray(x, dtype=np.float64)[:, None]
    basis = np.ones((x.shape[0], nodes.size))
    for j, xj in enumerate(nodes):
        for m, xm in enumerate(nodes):
            if m != j:
                basis[:, j] *= (x[:, 0] - xm) / (xj - xm)
    return basis


class Template:
    """Expected events per bin as a function of the hadronic parameters (see the module doc).

    Parameters
    ----------
    sample : TemplateSample
    binning : Binning
        Its axis names are sample columns (theta_e_rad, theta_mu_rad).
    model : HadronicModel
        The parametric family to fit (its parameters are the reference point), lepton-like
        (K, M) by default.
    n_sub_bins, degree : int
        Sub-bins in ln(-t) and the interpolation degree in each (see the module doc).
    """

    def __init__(self, sample: TemplateSample, binning: Binning, model: HadronicModel | None = None,
                 n_sub_bins: int = 64, degree: int = 4):
        if not isinstance(sample, TemplateSample):
            raise ValueError(f"sample = {sample!r} is not a TemplateSample")
        if not isinstance(binning, Binning):
            raise ValueError(f"binning = {binning!r} is not a Binning")
        self.binning = binning
        self.family = HadronicFamily(LeptonLikeModel() if model is None else model)
        self.n_generated = sample.n_generated
        self.beam_energy_gev = sample.beam_energy_gev
        self.sample_reference = sample.reference
        self.n_sub_bins = check_integer("n_sub_bins", n_sub_bins, 1, 100_000)
        self.degree = check_integer("degree", degree, 0, 12)
        n_bins = binning.n_bins

        index = binning.bin_index(sample.columns())
        keep = (index >= 0) & (sample.weight != 0.0)
        if not np.any(keep):
            raise ValueError("template sample has no event with non-zero weight inside the binning")
        index, weight, t = index[keep], sample.weight[keep], sample.true_t_gev2[keep]
        self.n_events = int(keep.sum())
        background = np.isnan(t)
        # (astype: bincount of an empty selection returns integers)
        self._background = np.bincount(index[background], weights=weight[background], minlength=n_bins).astype(np.float64)
        self._background2 = np.bincount(index[background], weights=weight[background] ** 2, minlength=n_bins).astype(np.float64)
        index, weight, t = index[~background], weight[~background], t[~background]

        width = self.degree + 1
        if t.size:
            u = np.log(-t)
            u_low, u_high = float(u.min()), float(u.max())
        else:
            u, u_low, u_high = np.zeros(0), -10.0, -1.0
        if u_high - u_low < 1e-9:
            u_low, u_high = u_low - 1e-6, u_high + 1e-6
        step = (u_high - u_low) / self.n_sub_bins
        sub = np.clip(np.floor((u - u_low) / step).astype(np.int64), 0, self.n_sub_bins - 1)
        centre = u_low + (sub + 0.5) * step
        x = np.clip(2.0 * (u - centre) / step, -1.0, 1.0)
        nodes = chebyshev_nodes(self.degree)
        basis = lagrange_basis(x, nodes)  # (events, width)
        node_u = (u_low + (np.arange(self.n_sub_bins)[:, None] + 0.5 + 0.5 * nodes[None, :]) * step).reshape(-1)
        self.node_t_gev2 = -np.exp(node_u)
        n_nodes = self.node_t_gev2.size

        cell = (index[:, None] * n_nodes + sub[:, None] * width + np.arange(width)[None, :]).reshape(-1)
        w1 = (weight[:, None] * basis).reshape(-1)
        w2 = (weight[:, None] ** 2 * basis).reshape(-1)
        if n_bins * n_nodes <= _DENSE_CELLS_MAX:
            dense1 = np.bincount(cell, weights=w1, minlength=n_bins * n_nodes)
            dense2 = np.bincount(cell, weights=w2, minlength=n_bins * n_nodes)
            occupied = np.zeros(n_bins * n_nodes, dtype=bool)
            occupied[cell] = True
            cells = np.flatnonzero(occupied)
            c1, c2 = dense1[cells], dense2[cells]
        else:
            cells, inverse = np.unique(cell, return_inverse=True)
            c1 = np.bincount(inverse, weights=w1, minlength=cells.size)
            c2 = np.bincount(inverse, weights=w2, minlength=cells.size)
        rows = cells // n_nodes
        self._node = np.ascontiguousarray((cells % n_nodes).astype(np.int64))
        self._row_start = np.zeros(n_bins + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_bins), out=self._row_start[1:])
        self._moment = np.ascontiguousarray(c1)
        self._moment2 = np.ascontiguousarray(c2)

        self._numerator = (1.0 - self.sample_reference.dalpha(self.node_t_gev2)) ** 2
        self._lepton = 1.0 - dalpha_lep(self.node_t_gev2)
        self._at_nodes = self.family.at(self.node_t_gev2)
        self._factor = np.empty(n_nodes)
        self._factor_gradient = np.empty((len(self.family.names), n_nodes))

    # --- parameters --------------------------------------------------------------------------

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.family.names

    @property
    def reference_parameters(self) -> np.ndarray:
        return self.family.reference.copy()

    def _theta(self, theta) -> np.ndarray:
        if theta is None:
            return self.family.reference
        if isinstance(theta, dict):
            unknown = sorted(set(theta) - set(self.family.names))
            if unknown:
                raise ValueError(f"unknown parameter {unknown[0]!r}; the template's parameters are {list(self.family.names)}")
            theta = [theta.get(n, r) for n, r in zip(self.family.names, self.family.reference)]
        return self.family.check(theta)

    def _scale(self, luminosity_inv_nb) -> float:
        luminosity = check_range("luminosity_inv_nb", luminosity_inv_nb, 0.0, math.inf, low_open=True)
        return luminosity * INV_NB_TO_INV_UB / self.n_generated

    def _factors(self, theta, gradient: bool):
        """The factor r = (1 - Dalpha_ref)^2 / (1 - Dalpha)^2 at the nodes (and dr/dtheta), with
        1 / (1 - Dalpha) continued along its tangent below 1 - Dalpha = RUNNING_FLOOR (see there)."""
        dalpha, dalpha_gradient = self._at_nodes.evaluate(theta)
        margin = self._lepton - dalpha
        continued = margin.min() < RUNNING_FLOOR
        if continued:
            below = margin < RUNNING_FLOOR
            inverse = np.where(below, (2.0 * RUNNING_FLOOR - margin) / RUNNING_FLOOR**2,
                               1.0 / np.maximum(margin, RUNNING_FLOOR))
        else:
            inverse = 1.0 / margin
        np.multiply(self._numerator, inverse * inverse, out=self._factor)
        if gradient:
            # dr/dtheta = 2 numerator inverse s dDalpha/dtheta, s = -d inverse / d margin: inverse^2
            # above the floor (so 2 r inverse), 1 / floor^2 below
            if continued:
                slope = np.where(below, 1.0 / RUNNING_FLOOR**2, inverse * inverse)
                np.multiply(dalpha_gradient, 2.0 * self._numerator * inverse * slope, out=self._factor_gradient)
            else:
                np.multiply(dalpha_gradient, 2.0 * self._factor * inverse, out=self._factor_gradient)

    # --- expected events ---------------------------------------------------------------------

    def expected_flat(self, theta=None, luminosity_inv_nb: float = 1.0, gradient: bool = False):
        """Expected events per flat bin at `luminosity_inv_nb`; with gradient=True also
        d expected / d theta, shape (n_parameters, n_bins)."""
        scale = self._scale(luminosity_inv_nb)
        theta = self._theta(theta)
        self._factors(theta, gradient)
        out = self._background.copy()
        if gradient:
            out_gradient = np.empty((len(self.family.names), out.size))
            _contract_with_gradient(self._row_start, self._node, self._moment, self._factor, self._factor_gradient,
                                    out, out_gradient)
            return out * scale, out_gradient * scale
        _contract(self._row_start, self._node, self._moment, self._factor, out)
        return out * scale

    def expected(self, theta=None, luminosity_inv_nb: float = 1.0) -> np.ndarray:
        """Expected events per bin (shape of the binning) for parameters `theta` (array in the
        order of `parameter_names`, a dict, or None for the reference point)."""
        return self.expected_flat(theta, luminosity_inv_nb).reshape(self.binning.shape)

    def mc_variance(self, theta=None, luminosity_inv_nb: float = 1.0) -> np.ndarray:
        """Variance of `expected` from the template's own MC statistics: scale^2 sum (w r)^2."""
        scale = self._scale(luminosity_inv_nb)
        self._factors(self._theta(theta), False)
        out = self._background2.copy()
        _contract(self._row_start, self._node, self._moment2, self._factor * self._factor, out)
        return (out * scale * scale).reshape(self.binning.shape)

    def histogram(self, theta=None, luminosity_inv_nb: float = 1.0) -> Histogram:
        """The expected histogram (an Asimov data set), with the template's MC variance."""
        theta = self._theta(theta)
        return Histogram(self.binning, self.expected(theta, luminosity_inv_nb), self.mc_variance(theta, luminosity_inv_nb),
                         luminosity_inv_nb=luminosity_inv_nb,
                         metadata={"asimov": dict(zip(self.family.names, map(float, theta)))})

    def describe(self) -> dict:
        return {"binning": self.binning.to_dict(), "model": self.family.prototype.describe(),
                "n_generated": self.n_generated, "n_events": self.n_events, "beam_energy_gev": self.beam_energy_gev,
                "reference_running": self.sample_reference.describe(), "n_sub_bins": self.n_sub_bins, "degree": self.degree}


# --- nuisance parameters ---------------------------------------------------------------------


def morphing_coefficients(delta: float):
    """(a, b, da/ddelta, db/ddelta) with mu(delta) = nominal + a (up - nominal) + b (down - nominal).

    Inside |delta| <= 1 the interpolation is quadratic through down, nominal and up at -1, 0, +1
    (a = (delta + delta^2)/2, b = (delta^2 - delta)/2: for symmetric variations it is linear);
    beyond, it is extrapolated linearly with the slope at +-1, so mu is continuous with a
    continuous derivative (MIGRAD needs no kink at 0). This is the polynomial interpolation of
    HistFactory (Cranmer et al., CERN-OPEN-2012-016) with linear instead of exponential tails.
    """
    if delta > 1.0:
        return 1.0 + 1.5 * (delta - 1.0), 0.5 * (delta - 1.0), 1.5, 0.5
    if delta < -1.0:
        return -0.5 * (delta + 1.0), 1.0 - 1.5 * (delta + 1.0), -0.5, -1.5
    return 0.5 * (delta + delta * delta), 0.5 * (delta * delta - delta), 0.5 + delta, delta - 0.5


class TemplateSet:
    """A nominal template and optional (down, up) templates per nuisance parameter.

    Nuisance parameters are in units of their sigma: -1 and +1 are the down and up templates,
    and the fit constrains each with a unit Gaussian.
    """

    def __init__(self, nominal: Template, variations: dict | None = None):
        if not isinstance(nominal, Template):
            raise ValueError(f"nominal = {nominal!r} is not a Template")
        self.nominal = nominal
        self.variations = {}
        for name, pair in (variations or {}).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"nuisance name = {name!r} must be a non-empty string")
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(p, Template) for p in pair)):
                raise ValueError(f"variation {name!r} must be a (down, up) pair of Templates")
            for side, template in zip(("down", "up"), pair):
                nominal.binning.require_same(template.binning, "nominal template", f"variation {name} ({side})")
                if template.parameter_names != nominal.parameter_names:
                    raise ValueError(f"variation {name} ({side}) fits parameters {list(template.parameter_names)}, "
                                     f"the nominal template {list(nominal.parameter_names)}")
            self.variations[name] = tuple(pair)
        if set(self.variations) & set(nominal.parameter_names):
            raise ValueError("nuisance names must differ from the hadronic parameter names")

    @classmethod
    def wrap(cls, templates) -> "TemplateSet":
        if isinstance(templates, TemplateSet):
            return templates
        if isinstance(templates, Template):
            return cls(templates)
        raise ValueError(f"templates = {templates!r} is neither a Template nor a TemplateSet")

    @property
    def binning(self) -> Binning:
        return self.nominal.binning

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.nominal.parameter_names

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        return tuple(self.variations)

    @property
    def family(self) -> HadronicFamily:
        return self.nominal.family

    @property
    def beam_energy_gev(self) -> float:
        return self.nominal.beam_energy_gev

    def expected_flat(self, theta, nuisances=(), luminosity_inv_nb: float = 1.0, gradient: bool = False):
        """Expected events per flat bin; with gradient=True also (d/d theta, d/d nuisances)."""
        nuisances = np.asarray(nuisances, dtype=np.float64).reshape(-1)
        if nuisances.size != len(self.variations):
            raise ValueError(f"{nuisances.size} nuisance values given, the template set has {list(self.variations)}")
        if not gradient:
            mu = self.nominal.expected_flat(theta, luminosity_inv_nb)
            nominal = mu.copy()
            for delta, (down, up) in zip(nuisances, self.variations.values()):
                a, b, _, _ = morphing_coefficients(float(delta))
                if a:
                    mu += a * (up.expected_flat(theta, luminosity_inv_nb) - nominal)
                if b:
                    mu += b * (down.expected_flat(theta, luminosity_inv_nb) - nominal)
            return mu
        nominal, nominal_gradient = self.nominal.expected_flat(theta, luminosity_inv_nb, gradient=True)
        mu, mu_gradient = nominal.copy(), nominal_gradient.copy()
        nuisance_gradient = np.empty((nuisances.size, nominal.size))
        for j, (delta, (down, up)) in enumerate(zip(nuisances, self.variations.values())):
            a, b, da, db = morphing_coefficients(float(delta))
            up_mu, up_gradient = up.expected_flat(theta, luminosity_inv_nb, gradient=True)
            down_mu, down_gradient = down.expected_flat(theta, luminosity_inv_nb, gradient=True)
            mu += a * (up_mu - nominal) + b * (down_mu - nominal)
            mu_gradient += a * (up_gradient - nominal_gradient) + b * (down_gradient - nominal_gradient)
            nuisance_gradient[j] = da * (up_mu - nominal) + db * (down_mu - nominal)
        return mu, mu_gradient, nuisance_gradient

    def describe(self) -> dict:
        return {"nominal": self.nominal.describe(), "nuisances": list(self.variations)}
