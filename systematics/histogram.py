"""Binned data: axes with their edges, weighted counts with their variances, saved as JSON.

What to use when:

- `Axis(name, edges)` is one binned observable; its name is the event column it bins
  (`theta_e_rad`, `theta_mu_rad`), so a template knows which column to read and a data
  histogram binned in another observable is refused.
- `Binning(axes)` is one or two axes: `Binning.uniform(theta_e_rad=(64, 0.0, 0.032))` for the 1D
  theta_e fit, two keyword arguments for the 2D (theta_e, theta_mu) fit. `bin_index(columns)`
  maps events to flat bin numbers (-1 outside the half-open ranges [low, high)).
- `Histogram(binning, values, variances)` is a data or expected histogram: sum of weights and
  sum of squared weights per bin (as boost-histogram's Weight storage), an optional
  integrated luminosity (nb^-1) and free-form metadata. `Histogram.fill(binning, columns,
  weights)` fills one from events; `save(path)` / `Histogram.load(path)` write and read JSON.
- `binning.require_same(other, ...)` raises ValueError when two binnings differ in axis names
  or edges: data and templates are never summed bin by bin unless they match.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastsim.config import check_integer, check_range
from fastsim.io.files import temporary_beside

FORMAT = "muone-histogram"
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class Axis:
    """One binned observable: `name` (an event column, with its unit) and increasing `edges`."""

    name: str
    edges: np.ndarray

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"axis name = {self.name!r} must be a non-empty string (an event column such as 'theta_e_rad')")
        edges = np.asarray(self.edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2:
            raise ValueError(f"axis {self.name}: edges must be a 1D array of at least 2 values, got shape {edges.shape}")
        if not np.all(np.isfinite(edges)):
            raise ValueError(f"axis {self.name}: edges must be finite")
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"axis {self.name}: edges must be strictly increasing")
        edges.setflags(write=False)
        object.__setattr__(self, "edges", edges)

    @classmethod
    def uniform(cls, name: str, n_bins: int, low: float, high: float) -> "Axis":
        n_bins = check_integer(f"{name}.n_bins", n_bins, 1, 10**6)
        low = check_range(f"{name}.low", low)
        high = check_range(f"{name}.high", high, low, math.inf, low_open=True)
        return cls(name, np.linspace(low, high, n_bins + 1))

    @property
    def n_bins(self) -> int:
        return self.edges.size - 1

    def index(self, values) -> np.ndarray:
        """Bin number of each value, -1 outside [edges[0], edges[-1]) (NaN included)."""
        values = np.asarray(values, dtype=np.float64)
        index = np.searchsorted(self.edges, values, side="right") - 1
        index[~(index < self.n_bins)] = -1  # at or above the last edge
        index[np.isnan(values)] = -1
        return index

    def same_as(self, other: "Axis") -> bool:
        return self.name == other.name and self.edges.shape == other.edges.shape and bool(np.all(self.edges == other.edges))

    def to_dict(self) -> dict:
        return {"name": self.name, "edges": self.edges.tolist()}


@dataclass(frozen=True, eq=False)
class Binning:
    """One or two axes; bins are numbered in C order (the last axis fastest)."""

    axes: tuple

    def __post_init__(self):
        axes = tuple(self.axes)
        if not 1 <= len(axes) <= 2 or not all(isinstance(a, Axis) for a in axes):
            raise ValueError(f"binning needs one or two Axis objects, got {self.axes!r}")
        if len({a.name for a in axes}) != len(axes):
            raise ValueError(f"binning axes must have distinct names, got {[a.name for a in axes]}")
        object.__setattr__(self, "axes", axes)

    @classmethod
    def uniform(cls, **axes) -> "Binning":
        """`Binning.uniform(theta_e_rad=(n, low, high), theta_mu_rad=(n, low, high))`."""
        return cls(tuple(Axis.uniform(name, *spec) for name, spec in axes.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.n_bins for a in self.axes)

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.shape))

    def bin_index(self, columns) -> np.ndarray:
        """Flat bin number of each event (-1 outside); `columns` maps axis names to arrays."""
        missing = [name for name in self.names if name not in columns]
        if missing:
            raise ValueError(f"events have no column {missing[0]!r} for the binning axes {list(self.names)}")
        index = None
        for axis in self.axes:
            local = axis.index(columns[axis.name])
            if index is None:
                index = local
            else:
                index = np.where((index >= 0) & (local >= 0), index * axis.n_bins + local, -1)
        return index

    def same_as(self, other: "Binning") -> bool:
        return len(self.axes) == len(other.axes) and all(a.same_as(b) for a, b in zip(self.axes, other.axes))

    def require_same(self, other: "Binning", this: str = "data", that: str = "templates"):
        """ValueError describing the first difference unless `other` has the same axes and edges."""
        if self.names != other.names:
            raise ValueError(f"binning mismatch: {this} has axes {list(self.names)}, {that} has axes {list(other.names)}")
        for a, b in zip(self.axes, other.axes):
            if a.edges.shape != b.edges.shape:
                raise ValueError(f"binning mismatch on axis {a.name}: {this} has {a.n_bins} bins, {that} has {b.n_bins}")
            if not np.all(a.edges == b.edges):
                k = int(np.argmax(a.edges != b.edges))
                raise ValueError(
                    f"binning mismatch on axis {a.name}: edge {k} is {float(a.edges[k])!r} in {this} and {float(b.edges[k])!r} in {that}"
                )

    def to_dict(self) -> list:
        return [a.to_dict() for a in self.axes]


@dataclass(frozen=True, eq=False)
class Histogram:
    """Weighted counts (`values`) and their variances (sum of squared weights) on a binning.

    `luminosity_inv_nb` is the integrated luminosity the histogram corresponds to (None if
    unknown); `metadata` is any JSON-able dictionary (configuration, seed, provenance).
    """

    binning: Binning
    values: np.ndarray
    variances: np.ndarray | None = None
    luminosity_inv_nb: float | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.binning, Binning):
            raise ValueError(f"binning = {self.binning!r} is not a Binning")
        values = np.array(self.values, dtype=np.float64)
        if values.shape != self.binning.shape:
            raise ValueError(f"histogram values have shape {values.shape}, the binning {list(self.binning.names)} has {self.binning.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("histogram values must be finite")
        variances = values.copy() if self.variances is None else np.array(self.variances, dtype=np.float64)
        if variances.shape != values.shape:
            raise ValueError(f"histogram variances have shape {variances.shape}, values have {values.shape}")
        if not np.all(np.isfinite(variances)) or np.any(variances < 0):
            raise ValueError("histogram variances must be finite and >= 0")
        values.setflags(write=False)
        variances.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "variances", variances)
        if self.luminosity_inv_nb is not None:
            object.__setattr__(self, "luminosity_inv_nb",
                               check_range("luminosity_inv_nb", self.luminosity_inv_nb, 0.0, math.inf, low_open=True))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @classmethod
    def fill(cls, binning: Binning, columns, weights=None, **kwargs) -> "Histogram":
        """Histogram of events: `columns` maps each axis name to an array; `weights` default 1."""
        index = binning.bin_index(columns)
        n = index.size
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"weights have shape {w.shape}, the columns have {n} events")
        inside = index >= 0
        values = np.bincount(index[inside], weights=w[inside], minlength=binning.n_bins)
        variances = np.bincount(index[inside], weights=w[inside] ** 2, minlength=binning.n_bins)
        return cls(binning, values.reshape(binning.shape), variances.reshape(binning.shape), **kwargs)

    @property
    def total(self) -> float:
        return float(self.values.sum())

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "axes": self.binning.to_dict(),
            "values": self.values.tolist(),
            "variances": self.variances.tolist(),
            "luminosity_inv_nb": self.luminosity_inv_nb,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "histogram") -> "Histogram":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{where} is not a {FORMAT} JSON document (no \"format\": \"{FORMAT}\")")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{where}: version = {data.get('version')!r} is not supported (expected {FORMAT_VERSION})")
        for key in ("axes", "values"):
            if key not in data:
                raise ValueError(f"{where}: missing key {key!r}")
        try:
            axes = tuple(Axis(a["name"], a["edges"]) for a in data["axes"])
            return cls(Binning(axes), data["values"], data.get("variances"), data.get("luminosity_inv_nb"),
                       data.get("metadata") or {})
        except (KeyError, TypeError) as error:
            raise ValueError(f"{where}: malformed histogram ({error!r})") from None
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def save(self, path):
        """Write the histogram as JSON, atomically (temporary file, then rename)."""
        path = Path(path)
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            raise ValueError(f"output = {str(path)!r} cannot be written: directory {str(directory)!r} does not exist")
        temporary = temporary_beside(path)
        try:
            with open(temporary, "w") as stream:
                json.dump(self.to_dict(), stream, default=str)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path) -> "Histogram":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(f"histogram = {str(path)!r} cannot be read: {error.strerror or error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"histogram = {str(path)!r} is not valid JSON: {error}") from None
        return cls.from_dict(data, where=f"histogram {str(path)!r}")
