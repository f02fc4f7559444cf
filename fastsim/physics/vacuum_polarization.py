"""Vacuum polarization: the running of alpha in the space-like region, t < 0.

What to use when:

- `loop_bracket(t, mass2)` is the one-fermion-loop bracket B(t; M) that every model is built on
  (the private scalar kernel `loop_bracket_kernel` is the same function for numba code).
- `dalpha_lep(t)` is the leptonic running, exact at one loop for e, mu and tau.
- A hadronic model gives Dalpha_had(t) and its derivatives with respect to its parameters:
  `LeptonLikeModel(K, M_gev2)` (the MUonE convention K M B(t; M)), `Pol2Model(c1, c2)`,
  `TabulatedModel.from_file(path)` and `NoHadronicModel()`. All share the `HadronicModel`
  interface: `dalpha(t)`, `gradient(t)`, `parameter_names`, `parameters`, `with_parameters(...)`.
- `RunningCoupling` combines them into Dalpha(t) and the factor |1 / (1 - Dalpha(t))|^2 of the
  cross section.

The bracket, with beta = sqrt(1 - 4M/t), is

    B(t; M) = -5/9 - 4M/(3t) + (4M^2/(3t^2) + M/(3t) - 1/6) (2/beta) ln|(1 - beta)/(1 + beta)|
            = int_0^1 dx 2x(1-x) ln(1 + x(1-x) z),   z = -t/M,

so Dalpha = (alpha/pi) B for one lepton of mass^2 M. The closed form cancels for small z; below
z = 1 the power series B = sum_n 2 (-1)^(n+1) z^n Beta(n+2, n+2) / n = z/15 - z^2/140 + ...
is summed instead (see e.g. Jegerlehner, "The anomalous magnetic moment of the muon", Springer
2017, ch. 2.6, for the one-loop vacuum polarization function).
"""

from __future__ import annotations

import csv
import math
from fractions import Fraction
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numba import njit

from fastsim.config import check_number, check_range
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, MUON_MASS_GEV, TAU_MASS_GEV

#: Below this z = -t/M the series is summed instead of the closed form.
SERIES_SWITCH_Z = 1.0


def _series_coefficients(n_terms=40):
    # c_n = 2 (-1)^(n+1) Beta(n+2, n+2) / n with Beta(n+2, n+2) = ((n+1)!)^2 / (2n+3)!, in exact
    # rational arithmetic before the single rounding to float64.
    return np.array(
        [
            float(Fraction(2 * (-1) ** (n + 1) * math.factorial(n + 1) ** 2, n * math.factorial(2 * n + 3)))
            for n in range(1, n_terms + 1)
        ]
    )


_SERIES = _series_coefficients()  # terms fall like (z/4)^n: 4^-40 ~ 1e-24 at the switch


@njit(cache=True, nogil=True)
def _bracket_of_z(z, series):
    """(B, dB/dz) of the loop bracket as a function of z = -t/M > 0."""
    if z < SERIES_SWITCH_Z:
        value = 0.0
        slope = 0.0
        for n in range(series.size, 0, -1):
            value = value * z + series[n - 1]
            slope = slope * z + n * series[n - 1]
        return value * z, slope
    beta = math.sqrt(1.0 + 4.0 / z)
    # ln((beta - 1)/(beta + 1)) with beta - 1 = (4/z)/(beta + 1): no cancellation at large z.
    log_ratio = math.log(4.0 / z) - 2.0 * math.log(beta + 1.0)
    g = 4.0 / (3.0 * z * z) - 1.0 / (3.0 * z) - 1.0 / 6.0
    h = 2.0 / beta * log_ratio
    value = -5.0 / 9.0 + 4.0 / (3.0 * z) + g * h
    dg = -8.0 / (3.0 * z**3) + 1.0 / (3.0 * z * z)
    dh = 4.0 / (z * z * beta**3) * log_ratio - 2.0 / (z * beta * beta)
    slope = -4.0 / (3.0 * z * z) + dg * h + g * dh
    return value, slope


@njit(cache=True, nogil=True)
def loop_bracket_kernel(t_gev2, mass2_gev2, series):
    """B(t; M) for t < 0 and M > 0 (both GeV^2); `series` is the module's _SERIES array."""
    return _bracket_of_z(-t_gev2 / mass2_gev2, series)[0]


@njit(cache=True)
def _bracket_array(t_gev2, mass2_gev2, series, value, slope):
    for i in range(t_gev2.size):
        value[i], slope[i] = _bracket_of_z(-t_gev2[i] / mass2_gev2, series)


@njit(cache=True)
def _dalpha_lep_array(t_gev2, lepton_mass2, series, out):
    for i in range(t_gev2.size):
        total = 0.0
        for m2 in lepton_mass2:
            total += _bracket_of_z(-t_gev2[i] / m2, series)[0]
        out[i] = ALPHA0 / math.pi * total


def check_spacelike(t_gev2, name="t_gev2"):
    """Return t as a float64 array; ValueError naming `name` unless every t is finite and < 0."""
    t = np.asarray(t_gev2, dtype=np.float64)
    bad = ~(np.isfinite(t) & (t < 0.0))
    if np.any(bad):
        value = float(t.reshape(-1)[np.argmax(bad.reshape(-1))])
        raise ValueError(f"{name} = {value!r} is outside the allowed range (-inf, 0): vacuum polarization is evaluated for space-like t < 0")
    return t


def loop_bracket(t_gev2, mass2_gev2):
    """One-loop vacuum-polarization bracket B(t; M) for a fermion of mass^2 M (GeV^2), t < 0."""
    return _bracket_and_slope(t_gev2, mass2_gev2)[0]


def _bracket_and_slope(t_gev2, mass2_gev2):
    t = check_spacelike(t_gev2)
    mass2 = check_range("mass2_gev2", mass2_gev2, 0.0, math.inf, low_open=True, high_open=True)
    flat = np.ascontiguousarray(t.reshape(-1))
    value = np.empty_like(flat)
    slope = np.empty_like(flat)
    _bracket_array(flat, mass2, _SERIES, value, slope)
    return value.reshape(t.shape), slope.reshape(t.shape)


LEPTON_MASSES2_GEV2 = np.array([ELECTRON_MASS_GEV**2, MUON_MASS_GEV**2, TAU_MASS_GEV**2])


def dalpha_lep(t_gev2):
    """Leptonic Dalpha(t) = (alpha/pi) sum_{e, mu, tau} B(t; m_l^2), exact at one loop (t < 0)."""
    t = check_spacelike(t_gev2)
    flat = np.ascontiguousarray(t.reshape(-1))
    out = np.empty_like(flat)
    _dalpha_lep_array(flat, LEPTON_MASSES2_GEV2, _SERIES, out)
    return out.reshape(t.shape)


# --- hadronic models ------------------------------------------------------------------------


class HadronicModel:
    """Interface of a hadronic vacuum-polarization model Dalpha_had(t).

    Subclasses are frozen dataclasses whose fields are the parameters listed in
    `parameter_names` (empty for models without free parameters).
    """

    name: str = ""
    parameter_names: tuple[str, ...] = ()

    @property
    def parameters(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in self.parameter_names}

    def with_parameters(self, **values) -> "HadronicModel":
        """A copy with some parameters changed (validated like the constructor)."""
        unknown = set(values) - set(self.parameter_names)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for hadronic model {self.name!r}; "
                f"allowed: {list(self.parameter_names)}"
            )
        return replace(self, **values)

    def dalpha(self, t_gev2) -> np.ndarray:
        raise NotImplementedError

    def gradient(self, t_gev2) -> np.ndarray:
        """d Dalpha_had / d parameter, shape (n_parameters,) + t.shape."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"model": self.name, **self.parameters}

    def breakpoints_gev2(self) -> np.ndarray:
        """t values where Dalpha_had(t) is not smooth (integrators put panel edges there)."""
        return np.zeros(0)


@dataclass(frozen=True)
class NoHadronicModel(HadronicModel):
    """No hadronic running: Dalpha_had = 0."""

    name = "none"

    def dalpha(self, t_gev2):
        return np.zeros_like(check_spacelike(t_gev2))

    def gradient(self, t_gev2):
        return np.zeros((0,) + np.shape(check_spacelike(t_gev2)))


@dataclass(frozen=True)
class LeptonLikeModel(HadronicModel):
    """Lepton-like hadronic running, Dalpha_had(t) = K M B(t; M), the MUonE convention.

    K is dimensionless and M (GeV^2) plays the role of a mass squared. For small |t|,
    Dalpha_had = -K t / 15. Reference point K = 0.13724, M = 0.0525 GeV^2 (Abbiendi et al.,
    "Measuring the leading hadronic contribution to the muon g-2 via mu e scattering",
    Eur. Phys. J. C 77 (2017) 139; and the MUonE design study).
    """

    K: float = 0.13724
    M_gev2: float = 0.0525
    name = "ll"
    parameter_names = ("K", "M_gev2")

    def __post_init__(self):
        object.__setattr__(self, "K", check_number("K", self.K))
        object.__setattr__(self, "M_gev2", check_range("M_gev2", self.M_gev2, 0.0, math.inf, low_open=True, high_open=True))

    def dalpha(self, t_gev2):
        return self.K * self.M_gev2 * loop_bracket(t_gev2, self.M_gev2)

    def gradient(self, t_gev2):
        t = check_spacelike(t_gev2)
        value, slope = _bracket_and_slope(t, self.M_gev2)
        z = -t / self.M_gev2
        # d(K M B(z))/dM = K (B - z dB/dz), since dz/dM = -z/M.
        return np.stack([self.M_gev2 * value, self.K * (value - z * slope)])


@dataclass(frozen=True)
class Pol2Model(HadronicModel):
    """Second-order polynomial, Dalpha_had(t) = c1 t + c2 t^2 (c1 in GeV^-2, c2 in GeV^-4).

    Reference values c1 = -0.009057 GeV^-2, c2 = -0.01364 GeV^-4 (REFERENCE.md).
    """

    c1_per_gev2: float = -0.009057
    c2_per_gev4: float = -0.01364
    name = "pol2"
    parameter_names = ("c1_per_gev2", "c2_per_gev4")

    def __post_init__(self):
        object.__setattr__(self, "c1_per_gev2", check_number("c1_per_gev2", self.c1_per_gev2))
        object.__setattr__(self, "c2_per_gev4", check_number("c2_per_gev4", self.c2_per_gev4))

    def dalpha(self, t_gev2):
        t = check_spacelike(t_gev2)
        return self.c1_per_gev2 * t + self.c2_per_gev4 * t * t

    def gradient(self, t_gev2):
        t = check_spacelike(t_gev2)
        return np.stack([t, t * t])


@dataclass(frozen=True)
class TabulatedModel(HadronicModel):
    """Dalpha_had(t) interpolated in a table of (t, Dalpha_had) with t < 0.

    Interpolation is linear in ln(-t) (vacuum polarization is smooth in the logarithm of |t|),
    and linear in t between t = 0 (where Dalpha_had = 0) and the table point nearest to 0.
    Evaluating beyond the most negative t of the table raises ValueError: the table defines
    its own range, nothing is extrapolated.
    """

    t_gev2: np.ndarray = field(repr=False)
    dalpha_had: np.ndarray = field(repr=False)
    source: str = "<array>"
    name = "table"

    def __post_init__(self):
        t = np.asarray(self.t_gev2, dtype=np.float64)
        d = np.asarray(self.dalpha_had, dtype=np.float64)
        where = f"table {self.source}"
        if t.ndim != 1 or t.shape != d.shape or t.size < 2:
            raise ValueError(f"{where}: needs two columns (t_gev2, dalpha_had) with at least 2 rows, got shapes {t.shape} and {d.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(d))):
            raise ValueError(f"{where}: contains non-finite values")
        if np.any(t >= 0):
            raise ValueError(f"{where}: t_gev2 = {float(t[t >= 0][0])!r} is outside the allowed range (-inf, 0)")
        order = np.argsort(-t)  # from t near 0 to the most negative t
        t, d = t[order], d[order]
        if np.any(np.diff(t) == 0):
            raise ValueError(f"{where}: duplicate t_gev2 values")
        object.__setattr__(self, "t_gev2", t)
        object.__setattr__(self, "dalpha_had", d)

    @classmethod
    def from_file(cls, path) -> "TabulatedModel":
        """Read a two-column text/CSV file: t (GeV^2, < 0) and Dalpha_had, comma or white-space
        separated; lines starting with '#' and a non-numeric header line are skipped."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(f"had_table = {str(path)!r} cannot be read: {error.strerror or error}") from None
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = next(csv.reader([stripped])) if "," in stripped else stripped.split()
            try:
                values = [float(v) for v in fields]
            except ValueError:
                if not rows and number == 1:
                    continue  # header line
                raise ValueError(f"had_table {path}: line {number} is not two numbers: {stripped!r}") from None
            if len(values) != 2:
                raise ValueError(f"had_table {path}: line {number} has {len(values)} columns, expected 2 (t_gev2, dalpha_had)")
            rows.append(values)
        if len(rows) < 2:
            raise ValueError(f"had_table {path}: found {len(rows)} data rows, need at least 2")
        data = np.array(rows)
        return cls(data[:, 0], data[:, 1], source=str(path))

    @property
    def t_min_gev2(self) -> float:
        """Most negative t of the table: the model is defined on [t_min_gev2, 0)."""
        return float(self.t_gev2[-1])

    def dalpha(self, t_gev2):
        t = check_spacelike(t_gev2)
        if np.any(t < self.t_min_gev2):
            raise ValueError(
                f"t_gev2 = {float(t.min())!r} is outside the range of table {self.source}: [{self.t_min_gev2!r}, 0)"
            )
        # np.interp needs increasing abscissae: ln(-t) increases along the sorted table.
        log_table = np.log(-self.t_gev2)
        inside = np.interp(np.log(-t), log_table, self.dalpha_had)
        near_zero = self.dalpha_had[0] * t / self.t_gev2[0]
        return np.where(t > self.t_gev2[0], near_zero, inside)

    def gradient(self, t_gev2):
        return np.zeros((0,) + np.shape(check_spacelike(t_gev2)))

    def breakpoints_gev2(self):
        return self.t_gev2.copy()

    def describe(self) -> dict:
        return {"model": self.name, "source": self.source, "rows": int(self.t_gev2.size)}


HADRONIC_MODELS = {"ll": LeptonLikeModel, "pol2": Pol2Model, "table": TabulatedModel, "none": NoHadronicModel}


# --- the running coupling --------------------------------------------------------------------

RUNNING_CHOICES = ("none", "lep", "lep+had")


@dataclass(frozen=True)
class RunningCoupling:
    """alpha(t) = alpha(0) / (1 - Dalpha(t)) with Dalpha = Dalpha_lep + Dalpha_had.

    `running` is "none" (fixed alpha(0)), "lep" (leptons only) or "lep+had" (leptons and the
    hadronic model). The hadronic model is ignored unless running is "lep+had".
    """

    running: str = "lep+had"
    hadronic: HadronicModel = field(default_factory=LeptonLikeModel)

    def __post_init__(self):
        if self.running not in RUNNING_CHOICES:
            raise ValueError(f"running = {self.running!r} is not allowed; choose one of {list(RUNNING_CHOICES)}")
        if not isinstance(self.hadronic, HadronicModel):
            raise ValueError(f"hadronic = {self.hadronic!r} is not a HadronicModel")

    def dalpha(self, t_gev2):
        t = check_spacelike(t_gev2)
        if self.running == "none":
            return np.zeros_like(t)
        total = dalpha_lep(t)
        if self.running == "lep+had":
            total = total + self.hadronic.dalpha(t)
        return total

    def factor(self, t_gev2):
        """|1 / (1 - Dalpha(t))|^2, the running's factor on the LO cross section."""
        return 1.0 / (1.0 - self.dalpha(t_gev2)) ** 2

    def describe(self) -> dict:
        info = {"running": self.running}
        if self.running == "lep+had":
            info["hadronic"] = self.hadronic.describe()
        return info
