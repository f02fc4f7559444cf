"""The analysis selection as data: named cuts with parameters, applied in order, with a cut flow.

What to use when:

- `Selection()` is the MUonE test-run selection (REFERENCE.md "Test-run analysis"), in this order:

      golden_muon     incoming track with n_hits_in == 6 stubs, |x|, |y| <= 1.5 cm at the target,
                      polar angle < 4 mrad                                          (not kinematic)
      hits_out        n_hits_out <= 15                                              (not kinematic)
      vertex_z        vertex z inside the target of its station, +- tolerance_cm   (not kinematic)
      theta_mu_min    theta_mu > 0.2 mrad
      theta_e_window  5 < theta_e < 20 mrad
      acoplanarity    |A_phi| < 0.4 rad
      elasticity      |theta_mu - theta_mu_elastic(theta_e)| < 0.2 mrad

- `Selection.from_dict(table)` builds one from a TOML table (the ``[selection]`` section of a chain
  configuration); an empty table is the default. Keys: ``cuts`` (the list of cut names to apply,
  in order; default the seven above), ``residual_smearing_rad`` (default 0: off), and one
  sub-table per cut with its parameters, e.g.::

      [selection]
      cuts = ["golden_muon", "vertex_z", "theta_e_window", "elasticity"]
      residual_smearing_rad = 23e-6
      [selection.elasticity]
      max_abs_rad = 3e-4

- `selection.apply(events, geometry, cutflow=flow, ...)` returns the events with `selected` set
  and adds the chunk to the `CutFlow` `flow` (`selection.new_cutflow()`); flows of chunks add up,
  so a campaign streams chunks and reads `flow.table()` at the end.

Cut-flow table: one row per step, the first one "all" (before any cut); each row has the weighted
count (sum of weights, with its error from the sum of squared weights), the unweighted count,
`efficiency` relative to the previous row and `cumulative_efficiency` relative to "all".

Residual smearing (the 23 urad per angle by which the test-run data were narrower than the MC,
REFERENCE.md): each outgoing track's polar angle gets sigma * N(0, 1), N drawn from
`fastsim.rng.STREAM_RESIDUAL_SMEARING` keyed by (seed, event_id, track), so it is reproducible and
independent of the chunking. The tracks are re-ordered by angle if needed and identified again
(`reco.pid.identify`), which recomputes every observable; this happens before the cuts.

Parametric samples (`reco.parametric.apply`) carry the efficiency of the non-kinematic cuts in
their weights and list those cuts in ``metadata["folded_cuts"]``; on such a sample the folded cuts
let every event through (they are checked to equal the selection's, else ValueError). Their cut
flow takes the truth weights (`true_weight`) up to the first folded cut and the folded weights
from it on: "all" is the generated cross section as in full mode, the first folded cut's row
carries the efficiency of all the folded cuts measured together, and the other folded cuts show 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numba import njit, prange

from fastsim import rng
from fastsim.config import check_integer, check_range, from_mapping, to_plain
from fastsim.detector.geometry import KIND_TARGET, Geometry
from reco.events import RecoEvents


@dataclass(frozen=True)
class GoldenMuon:
    """Incoming muon: measured, with `n_hits_in` stubs in its station (one per module of the
    test-run station), within +- `max_offset_cm` of the beam axis in x and in y at the target,
    polar angle (from its slopes) below `max_theta_rad`."""

    n_hits_in: int = 6
    max_offset_cm: float = 1.5
    max_theta_rad: float = 4e-3
    kinematic: ClassVar[bool] = False

    def __post_init__(self):
        check_integer("n_hits_in", self.n_hits_in, 1, 10_000)
        check_range("max_offset_cm", self.max_offset_cm, 0.0, 1e3, low_open=True)
        check_range("max_theta_rad", self.max_theta_rad, 0.0, 0.5 * math.pi, low_open=True)

    def mask(self, events, context):
        theta = np.arctan(np.hypot(events["in_tx"], events["in_ty"]))
        return (events["has_incoming"] & (events["n_hits_in"] == self.n_hits_in)
                & (np.abs(events["in_x_cm"]) <= self.max_offset_cm) & (np.abs(events["in_y_cm"]) <= self.max_offset_cm)
                & (theta < self.max_theta_rad))


@dataclass(frozen=True)
class HitsOut:
    """At most `max_hits` stubs in the station after the target (rejects pair production and
    showers)."""

    max_hits: int = 15
    kinematic: ClassVar[bool] = False

    def __post_init__(self):
        check_integer("max_hits", self.max_hits, 0, 1_000_000)

    def mask(self, events, context):
        return (events["n_hits_out"] >= 0) & (events["n_hits_out"] <= self.max_hits)


@dataclass(frozen=True)
class VertexZ:
    """Vertex z inside the target of the event's station (nominal geometry), widened by
    `tolerance_cm` on both faces. The default 1 cm is about the vertex z resolution at the
    small opening angles of elastic events."""

    tolerance_cm: float = 1.0
    kinematic: ClassVar[bool] = False

    def __post_init__(self):
        check_range("tolerance_cm", self.tolerance_cm, 0.0, 1e3)

    def mask(self, events, context):
        centre, half = context.target_centre_cm, context.target_half_cm
        station = events["station"].astype(np.int64)
        known = (station >= 0) & (station < centre.size)
        index = np.where(known, station, 0)
        distance = np.abs(events["vertex_z_cm"] - centre[index])
        return known & (distance <= half[index] + self.tolerance_cm)


@dataclass(frozen=True)
class ThetaMuMin:
    """theta_mu above `min_rad` (the muon must be separated from the incoming track)."""

    min_rad: float = 2e-4
    kinematic: ClassVar[bool] = True

    def __post_init__(self):
        check_range("min_rad", self.min_rad, 0.0, 0.5 * math.pi)

    def mask(self, events, context):
        return events["theta_mu_rad"] > self.min_rad

    def bounds(self):
        return {"theta_mu_min_rad": self.min_rad}


@dataclass(frozen=True)
class ThetaEWindow:
    """min_rad < theta_e < max_rad."""

    min_rad: float = 5e-3
    max_rad: float = 20e-3
    kinematic: ClassVar[bool] = True

    def __post_init__(self):
        check_range("min_rad", self.min_rad, 0.0, 0.5 * math.pi)
        check_range("max_rad", self.max_rad, self.min_rad, 0.5 * math.pi, low_open=True)

    def mask(self, events, context):
        theta = events["theta_e_rad"]
        return (theta > self.min_rad) & (theta < self.max_rad)

    def bounds(self):
        return {"theta_e_min_rad": self.min_rad, "theta_e_max_rad": self.max_rad}


@dataclass(frozen=True)
class Acoplanarity:
    """|A_phi| below `max_abs_rad` (A_phi = pi - |phi_e - phi_mu|)."""

    max_abs_rad: float = 0.4
    kinematic: ClassVar[bool] = True

    def __post_init__(self):
        check_range("max_abs_rad", self.max_abs_rad, 0.0, math.pi, low_open=True)

    def mask(self, events, context):
        return np.abs(events["acoplanarity_rad"]) < self.max_abs_rad

    def bounds(self):
        return {"acoplanarity_max_rad": self.max_abs_rad}


@dataclass(frozen=True)
class Elasticity:
    """|theta_mu - theta_mu_elastic(theta_e)| below `max_abs_rad`."""

    max_abs_rad: float = 2e-4
    kinematic: ClassVar[bool] = True

    def __post_init__(self):
        check_range("max_abs_rad", self.max_abs_rad, 0.0, 0.1, low_open=True)

    def mask(self, events, context):
        return np.abs(events["elasticity_rad"]) < self.max_abs_rad

    def bounds(self):
        return {"elasticity_max_rad": self.max_abs_rad}


#: The cuts by name, in the default order.
CUTS = {"golden_muon": GoldenMuon, "hits_out": HitsOut, "vertex_z": VertexZ, "theta_mu_min": ThetaMuMin,
        "theta_e_window": ThetaEWindow, "acoplanarity": Acoplanarity, "elasticity": Elasticity}
_SETTINGS = ("cuts", "residual_smearing_rad")


@dataclass(frozen=True)
class _Context:
    """Geometry facts the cuts need: target centre and half thickness (cm) per station index
    (NaN for a station without a target)."""

    target_centre_cm: np.ndarray
    target_half_cm: np.ndarray

    @classmethod
    def from_geometry(cls, geometry):
        if not isinstance(geometry, Geometry):
            raise ValueError(f"geometry = {type(geometry).__name__} must be a fastsim.detector.geometry.Geometry")
        layers = geometry.nominal().layers()
        n = len(geometry.stations)
        centre, half = np.full(n, np.nan), np.full(n, np.nan)
        targets = layers.kind == KIND_TARGET
        centre[layers.station[targets]] = layers.z_cm[targets]
        half[layers.station[targets]] = 0.5 * layers.thickness_cm[targets]
        return cls(centre, half)


def _cut_spec(name, cut) -> dict:
    return {"name": name, **to_plain(cut)}


@dataclass
class CutFlow:
    """Weighted cut flow accumulated over chunks (see the module docstring for the table).

    `steps` are "all" followed by the cut names; `sum_w`, `sum_w2` and `count` hold, per step, the
    sum of weights, of squared weights and the number of events passing every cut up to it."""

    steps: tuple
    sum_w: np.ndarray = None
    sum_w2: np.ndarray = None
    count: np.ndarray = None

    def __post_init__(self):
        self.steps = tuple(self.steps)
        n = len(self.steps)
        self.sum_w = np.zeros(n) if self.sum_w is None else np.asarray(self.sum_w, dtype=np.float64)
        self.sum_w2 = np.zeros(n) if self.sum_w2 is None else np.asarray(self.sum_w2, dtype=np.float64)
        self.count = np.zeros(n, dtype=np.int64) if self.count is None else np.asarray(self.count, dtype=np.int64)

    def add(self, other: "CutFlow") -> "CutFlow":
        """Add the counts of another flow of the same steps, in place."""
        if other.steps != self.steps:
            raise ValueError(f"cut flows of different cuts cannot be added: {list(self.steps)} and {list(other.steps)}")
        self.sum_w += other.sum_w
        self.sum_w2 += other.sum_w2
        self.count += other.count
        return self

    def __add__(self, other: "CutFlow") -> "CutFlow":
        return CutFlow(self.steps, self.sum_w.copy(), self.sum_w2.copy(), self.count.copy()).add(other)

    def table(self) -> list[dict]:
        """[{cut, weighted_count, weighted_count_error, count, efficiency, cumulative_efficiency}]:
        efficiency relative to the previous step, cumulative relative to "all" (NaN if 0/0)."""
        rows = []
        for i, step in enumerate(self.steps):
            previous = self.sum_w[i - 1] if i else self.sum_w[0]
            rows.append({"cut": step, "weighted_count": float(self.sum_w[i]),
                         "weighted_count_error": math.sqrt(self.sum_w2[i]), "count": int(self.count[i]),
                         "efficiency": _ratio(self.sum_w[i], previous),
                         "cumulative_efficiency": _ratio(self.sum_w[i], self.sum_w[0])})
        return rows

    def to_dict(self) -> dict:
        return {"steps": list(self.steps), "sum_w": self.sum_w.tolist(), "sum_w2": self.sum_w2.tolist(),
                "count": self.count.tolist()}

    @classmethod
    def from_dict(cls, data) -> "CutFlow":
        return cls(tuple(data["steps"]), data["sum_w"], data["sum_w2"], data["count"])


def _ratio(a, b):
    return float(a / b) if b != 0 else math.nan


@njit(parallel=True, cache=True, nogil=True)
def _smear_tracks(seed, event_id, sigma, theta_1, theta_2):
    """theta_k + sigma * normal k of (seed, event, STREAM_RESIDUAL_SMEARING), reflected at 0."""
    for i in prange(event_id.size):
        n0, n1, _, _ = rng.normal4(seed, np.uint64(event_id[i]), rng.STREAM_RESIDUAL_SMEARING, 0)
        theta_1[i] = abs(theta_1[i] + sigma * n0)
        theta_2[i] = abs(theta_2[i] + sigma * n1)


_TRACK_PAIRS = (("theta_1_rad", "theta_2_rad"), ("phi_1_rad", "phi_2_rad"), ("chi2_1", "chi2_2"),
                ("ndf_1", "ndf_2"), ("truth_pdg_1", "truth_pdg_2"), ("calo_x_1_cm", "calo_x_2_cm"),
                ("calo_y_1_cm", "calo_y_2_cm"), ("elastic_chi2_mu_1", "elastic_chi2_mu_2"),
                ("elastic_theta_e_mu_1_rad", "elastic_theta_e_mu_2_rad"),
                ("elastic_theta_mu_mu_1_rad", "elastic_theta_mu_mu_2_rad"))


@dataclass(frozen=True)
class Selection:
    """Cuts applied in order, and the optional residual smearing (see the module docstring).

    Parameters
    ----------
    cuts : tuple of (name, cut)
        Names from `CUTS`, each with its cut object; default: every cut of `CUTS` with its defaults.
    residual_smearing_rad : float
        Gaussian sigma added to each reconstructed track angle before the cuts (0: off).
    """

    cuts: tuple = field(default_factory=lambda: tuple((name, cls()) for name, cls in CUTS.items()))
    residual_smearing_rad: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "cuts", tuple((name, cut) for name, cut in self.cuts))
        names = [name for name, _ in self.cuts]
        for name, cut in self.cuts:
            if name not in CUTS:
                raise ValueError(f"unknown cut {name!r}; the known cuts are {list(CUTS)}")
            if not isinstance(cut, CUTS[name]):
                raise ValueError(f"cut {name!r} must be a {CUTS[name].__name__}, got {cut!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"cuts = {names} names a cut twice")
        check_range("residual_smearing_rad", self.residual_smearing_rad, 0.0, 0.01)

    @classmethod
    def from_dict(cls, table: dict | None = None, where: str = "selection") -> "Selection":
        """Build from a TOML table (see the module docstring); ValueError naming the bad key."""
        table = {} if table is None else table
        if not isinstance(table, dict):
            raise ValueError(f"{where} must be a table, got {table!r}")
        unknown = [key for key in table if key not in CUTS and key not in _SETTINGS]
        if unknown:
            raise ValueError(f"unknown cut {where}.{unknown[0]}; the known cuts are {list(CUTS)} "
                             f"(other keys: {list(_SETTINGS)})")
        names = table.get("cuts", list(CUTS))
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}.cuts = {names!r} must be a list of cut names")
        for name in names:
            if name not in CUTS:
                raise ValueError(f"unknown cut {name!r} in {where}.cuts; the known cuts are {list(CUTS)}")
        unused = [key for key in table if key in CUTS and key not in names]
        if unused:
            raise ValueError(f"{where}.{unused[0]} sets parameters of a cut that {where}.cuts = {list(names)} "
                             "does not apply")
        cuts = tuple((name, from_mapping(CUTS[name], table.get(name, {}), f"{where}.{name}")) for name in names)
        smearing = table.get("residual_smearing_rad", 0.0)
        try:
            return cls(cuts, smearing)
        except ValueError as error:
            raise ValueError(f"{where}.{error}") from None

    def to_dict(self) -> dict:
        """The TOML table of this selection (`from_dict` gives it back)."""
        table = {"cuts": [name for name, _ in self.cuts], "residual_smearing_rad": self.residual_smearing_rad}
        table.update({name: to_plain(cut) for name, cut in self.cuts})
        return table

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.cuts]

    def cut(self, name):
        """The cut object called `name`."""
        for cut_name, cut in self.cuts:
            if cut_name == name:
                return cut
        raise KeyError(f"the selection has no cut {name!r}; it has {self.names}")

    def kinematic_cuts(self) -> list:
        return [(name, cut) for name, cut in self.cuts if cut.kinematic]

    def non_kinematic_specs(self) -> list[dict]:
        """The non-kinematic cuts as plain specs ({name, parameters}) in order."""
        return [_cut_spec(name, cut) for name, cut in self.cuts if not cut.kinematic]

    def new_cutflow(self) -> CutFlow:
        return CutFlow(("all", *self.names))

    # --- applying ---------------------------------------------------------------------------

    def smear(self, events: RecoEvents, seed, pid_settings=None) -> RecoEvents:
        """A copy of `events` with the residual smearing applied to the track angles, the tracks
        re-ordered by angle and identified again (`reco.pid.identify`)."""
        from reco.pid import identify

        seed = rng.validate_seed(seed)
        out = RecoEvents(dict(events.columns), dict(events.metadata))
        theta_1, theta_2 = events["theta_1_rad"].copy(), events["theta_2_rad"].copy()
        _smear_tracks(np.uint64(seed), events["event_id"], self.residual_smearing_rad, theta_1, theta_2)
        out.columns["theta_1_rad"], out.columns["theta_2_rad"] = theta_1, theta_2
        swap = theta_2 > theta_1
        if np.any(swap):
            for first, second in _TRACK_PAIRS:
                a, b = out[first], out[second]
                out.columns[first], out.columns[second] = np.where(swap, b, a), np.where(swap, a, b)
            out.columns["calo_term"] = np.where(swap, -out["calo_term"], out["calo_term"])
        return identify(out, pid_settings)

    def masks(self, events: RecoEvents, geometry=None) -> list[np.ndarray]:
        """One boolean array per cut: the events passing that cut alone (folded cuts of a
        parametric sample pass every event)."""
        if not isinstance(events, RecoEvents):
            raise ValueError(f"events = {type(events).__name__} must be a reco.events.RecoEvents")
        folded = events.metadata.get("folded_cuts")
        if folded is not None:
            mine = self.non_kinematic_specs()
            if [dict(spec) for spec in folded] != mine:
                raise ValueError(f"this parametric sample has the efficiency of the cuts {folded} in its weights, "
                                 f"but the selection's non-kinematic cuts are {mine}")
        needs_geometry = any(name == "vertex_z" for name, _ in self.cuts) and folded is None
        if needs_geometry and geometry is None:
            raise ValueError("geometry is required by the vertex_z cut (the target z range of each station)")
        context = _Context.from_geometry(geometry) if needs_geometry else None
        masks = []
        for name, cut in self.cuts:
            if folded is not None and not cut.kinematic:
                masks.append(np.ones(len(events), dtype=bool))
            else:
                masks.append(np.asarray(cut.mask(events, context), dtype=bool))
        return masks

    def apply(self, events: RecoEvents, geometry=None, cutflow: CutFlow | None = None, seed=None,
              pid_settings=None) -> RecoEvents:
        """Apply the smearing (if on) and the cuts in order.

        Parameters
        ----------
        events : RecoEvents
            Identified events (`reco.pid.identify`) or a parametric sample.
        geometry : Geometry, optional
            Required by the vertex_z cut (its targets, nominal positions).
        cutflow : CutFlow, optional
            From `new_cutflow()`; this chunk's counts are added to it.
        seed : int, optional
            Seed of the residual smearing; default ``events.metadata["seed"]``.
        pid_settings : reco.pid.PidSettings, optional
            For the identification after the smearing; default ``PidSettings()``.

        Returns
        -------
        RecoEvents
            The events (a smeared copy if the smearing is on) with `selected` set.
        """
        if self.residual_smearing_rad > 0.0:
            seed = events.metadata.get("seed") if seed is None else seed
            if seed is None:
                raise ValueError("seed is required by the residual smearing (none given, none in events.metadata)")
            events = self.smear(events, seed, pid_settings)
        masks = self.masks(events, geometry)
        passing = np.ones(len(events), dtype=bool)
        weight = events["weight"]
        # a parametric sample carries the folded cuts' efficiency in its weights: the rows before
        # the first folded cut take the truth weights, the rows from it on the folded ones
        folded = events.metadata.get("folded_cuts") is not None
        truth_weight = events["true_weight"] if folded else weight
        first_folded = next((i for i, (_, cut) in enumerate(self.cuts) if folded and not cut.kinematic), len(self.cuts))
        flow = self.new_cutflow()
        for i, mask in enumerate([None, *masks]):
            if mask is not None:
                passing &= mask
            w = (truth_weight if i <= first_folded else weight)[passing]
            flow.sum_w[i], flow.sum_w2[i], flow.count[i] = w.sum(), np.dot(w, w), w.size
        events["selected"] = passing
        if cutflow is not None:
            cutflow.add(flow)
        return events
