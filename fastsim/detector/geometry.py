"""Detector geometry: stations of 2S strip modules with their targets, misalignment, layer arrays.

A `Geometry` is a z-ordered tuple of `Station` objects and an optional `Calorimeter`. A station
has an origin on the beam axis, an optional `Target` (fastsim.generator.targets) and a tuple of
`Module` objects; a module is a CMS 2S module: two identical strip sensors, parallel, stacked
along the module normal. Geometries are TOML data (``geometries/*.toml``, `load_geometry`).

Conventions (beam along +z, x horizontal, y vertical, right-handed; cm and rad):

- View. The measurement direction of an untilted module is u0 = (cos a, sin a, 0) and its strips
  run along s = (-sin a, cos a, 0), so that u0 x s = +z. The view fixes a: X a = 0 (measures x,
  strips along y), Y a = +pi/2 (measures y, strips along -x), U a = +pi/4 (measures (x + y)/sqrt 2),
  V a = -pi/4 (measures (x - y)/sqrt 2), "stereo" a = `stereo_angle_rad`.
- Tilt. A module is rotated by `tilt_rad` about its strip direction s (right-hand rule): normal
  n = z cos(tilt) + u0 sin(tilt), measurement direction u = u0 cos(tilt) - z sin(tilt), s unchanged.
  This is the tilt of the MUonE X and Y modules (0.233 rad). REFERENCE.md says "about the axis
  perpendicular to the strips"; we take the axis along the strips (perpendicular to the beam and
  to the measured coordinate), the physically useful one: a track along the beam then crosses the
  320 um sensor over 320 um * tan(0.233) = 76 um in u, close to one 90 um pitch, so charge is
  shared between neighbouring strips and the resolution improves. A rotation about u instead
  would only lengthen the path in silicon and leave the binary resolution unchanged.
- Sensors. `z_cm` is the centre of the module, midway between the sensor centres;
  `sensor_spacing_cm` is the distance between the two sensor mid-planes along the normal. Sensor 0
  (upstream) is centred at C - spacing/2 n, sensor 1 at C + spacing/2 n. The strips of a 2S sensor
  come in two rows of 5 cm; `active_length_cm` is the full length (10 cm), the gap between the rows
  is neglected. The active width across the strips is n_strips * pitch_cm (9.144 cm). Nominal
  module centres lie on the beam axis (x = y = 0). Overlap and containment checks use the z extent
  of the sensor stack, a box of depth spacing + thickness and width n_strips * pitch rotated by
  the tilt (misalignment rotations neglected).
- Station transform. A point at z (relative to the station origin) is at global
  z_origin_cm + z_offset_cm + length_scale * z; this holds for module centres and for the target
  centre (thicknesses and the sensor spacing are not scaled).
- Misalignment of a module: the centre moves by (dx_cm, dy_cm, dz_cm) after the station transform,
  and the module frame (u, s, n) is rotated about the module centre by
  R = Rz(rot_z_rad) Ry(rot_y_rad) Rx(rot_x_rad) (global axes, applied after the tilt).
- Cluster resolution: `cluster_resolution_cm` if given, else pitch / sqrt(12) (binary readout,
  26 um for 90 um pitch; REFERENCE quotes 20-26 um measured).

Simulation transports through `geometry.with_misalignment(...).layers()`, reconstruction uses
`geometry.nominal()`: the same detector with every misalignment removed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from fastsim.config import check_choice, check_integer, check_range, from_mapping, load_toml
from fastsim.detector.digitization import MAX_NOISE_MEAN
from fastsim.generator.targets import Target
from fastsim.materials import material

VIEW_ANGLES_RAD = {"X": 0.0, "Y": 0.5 * math.pi, "U": 0.25 * math.pi, "V": -0.25 * math.pi}
VIEWS = (*VIEW_ANGLES_RAD, "stereo")
# Distance between the sensor mid-planes of the 2S modules of the MUonE stations (REFERENCE.md).
DEFAULT_SENSOR_SPACING_CM = {"X": 0.18, "Y": 0.18, "U": 0.40, "V": 0.40, "stereo": 0.18}
MAX_MISALIGNMENT_ROTATION_RAD = 0.1
LENGTH_SCALE_RANGE = (0.9, 1.1)
KIND_TARGET, KIND_SENSOR = 0, 1


def _check_name(key, value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} = {value!r} must be a non-empty string")


@dataclass(frozen=True)
class Misalignment:
    """Displacement of one module: shifts (cm) of its centre and small rotations (rad) of its
    frame about the global x, y, z axes through its centre, R = Rz Ry Rx."""

    dx_cm: float = 0.0
    dy_cm: float = 0.0
    dz_cm: float = 0.0
    rot_x_rad: float = 0.0
    rot_y_rad: float = 0.0
    rot_z_rad: float = 0.0

    def __post_init__(self):
        for key in ("dx_cm", "dy_cm", "dz_cm"):
            check_range(key, getattr(self, key), -10.0, 10.0)
        for key in ("rot_x_rad", "rot_y_rad", "rot_z_rad"):
            check_range(key, getattr(self, key), -MAX_MISALIGNMENT_ROTATION_RAD, MAX_MISALIGNMENT_ROTATION_RAD)

    @property
    def shift_cm(self) -> np.ndarray:
        return np.array([self.dx_cm, self.dy_cm, self.dz_cm])

    def rotation(self) -> np.ndarray:
        """The 3x3 rotation matrix Rz(rot_z) Ry(rot_y) Rx(rot_x)."""
        cx, sx = math.cos(self.rot_x_rad), math.sin(self.rot_x_rad)
        cy, sy = math.cos(self.rot_y_rad), math.sin(self.rot_y_rad)
        cz, sz = math.cos(self.rot_z_rad), math.sin(self.rot_z_rad)
        rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
        ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
        rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
        return rz @ ry @ rx


@dataclass(frozen=True)
class Module:
    """A 2S module: two strip sensors of `material` (see the module doc for the conventions).

    Parameters
    ----------
    name : str
        Unique inside its station.
    view : str
        "X", "Y", "U", "V" or "stereo" (then `stereo_angle_rad` gives the measurement angle).
    z_cm : float
        Centre of the module, relative to the station origin (cm).
    tilt_rad : float
        Rotation about the strip direction (rad).
    sensor_thickness_cm, sensor_spacing_cm : float
        Thickness of one sensor, distance between the sensor mid-planes (cm); the spacing defaults
        to 0.18 cm for X, Y and stereo views and 0.40 cm for U, V.
    pitch_cm, n_strips, active_length_cm : float, int, float
        Strip pitch (cm), strips per sensor, strip length (cm).
    hit_efficiency : float
        Probability that a crossing particle gives a cluster, per sensor, in [0, 1].
    noise_hits_per_event : float
        Mean number of noise clusters per sensor per event (Poisson mean), >= 0.
    cluster_resolution_cm : float or None
        Position resolution of a cluster (cm); None means pitch / sqrt(12).
    misalignment : Misalignment
        Displacement of the module (none by default).
    """

    name: str
    view: str
    z_cm: float
    tilt_rad: float = 0.0
    stereo_angle_rad: float | None = None
    sensor_thickness_cm: float = 0.032
    sensor_spacing_cm: float | None = None
    pitch_cm: float = 0.009
    n_strips: int = 1016
    active_length_cm: float = 10.0
    hit_efficiency: float = 1.0
    noise_hits_per_event: float = 0.0
    cluster_resolution_cm: float | None = None
    material: str = "Si"
    misalignment: Misalignment = field(default_factory=Misalignment)

    def __post_init__(self):
        _check_name("name", self.name)
        check_choice("view", self.view, VIEWS)
        if self.view == "stereo":
            if self.stereo_angle_rad is None:
                raise ValueError("stereo_angle_rad is required with view = 'stereo'")
            check_range("stereo_angle_rad", self.stereo_angle_rad, -0.5 * math.pi, 0.5 * math.pi, high_open=True)
        elif self.stereo_angle_rad is not None:
            raise ValueError(f"stereo_angle_rad = {self.stereo_angle_rad!r} is only allowed with view = 'stereo' "
                             f"(view = {self.view!r} fixes the angle)")
        check_range("z_cm", self.z_cm)
        check_range("tilt_rad", self.tilt_rad, -0.5 * math.pi, 0.5 * math.pi, low_open=True, high_open=True)
        check_range("sensor_thickness_cm", self.sensor_thickness_cm, 0.0, 1.0, low_open=True)
        if self.sensor_spacing_cm is None:
            object.__setattr__(self, "sensor_spacing_cm", DEFAULT_SENSOR_SPACING_CM[self.view])
        check_range("sensor_spacing_cm", self.sensor_spacing_cm, self.sensor_thickness_cm, 10.0)
        check_range("pitch_cm", self.pitch_cm, 0.0, 1.0, low_open=True)
        check_integer("n_strips", self.n_strips, 1)
        check_range("active_length_cm", self.active_length_cm, 0.0, 100.0, low_open=True)
        check_range("hit_efficiency", self.hit_efficiency, 0.0, 1.0)
        check_range("noise_hits_per_event", self.noise_hits_per_event, 0.0, MAX_NOISE_MEAN)
        if self.cluster_resolution_cm is not None:
            check_range("cluster_resolution_cm", self.cluster_resolution_cm, 0.0, 1.0, low_open=True)
        material(self.material)
        if not isinstance(self.misalignment, Misalignment):
            raise ValueError(f"misalignment = {self.misalignment!r} must be a Misalignment")

    @property
    def angle_rad(self) -> float:
        """Angle a of the measurement direction from +x towards +y (before tilt)."""
        return self.stereo_angle_rad if self.view == "stereo" else VIEW_ANGLES_RAD[self.view]

    @property
    def resolution_cm(self) -> float:
        """Cluster position resolution (cm): the override or pitch / sqrt(12)."""
        return self.cluster_resolution_cm if self.cluster_resolution_cm is not None else self.pitch_cm / math.sqrt(12.0)

    @property
    def active_width_cm(self) -> float:
        """Width of a sensor across the strips, n_strips * pitch (cm)."""
        return self.n_strips * self.pitch_cm

    @property
    def half_extent_z_cm(self) -> float:
        """Half the z extent of the sensor stack (spacing + thickness) with the tilt, misalignment
        rotations neglected: the stack is a box of width `active_width_cm` rotated in the (u, z) plane."""
        depth = self.sensor_spacing_cm + self.sensor_thickness_cm
        return 0.5 * (depth * math.cos(self.tilt_rad) + self.active_width_cm * abs(math.sin(self.tilt_rad)))

    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(measurement direction u, strip direction s, normal n) after the tilt, before misalignment."""
        a, tilt = self.angle_rad, self.tilt_rad
        u0 = np.array([math.cos(a), math.sin(a), 0.0])
        strip = np.array([-math.sin(a), math.cos(a), 0.0])
        z = np.array([0.0, 0.0, 1.0])
        return u0 * math.cos(tilt) - z * math.sin(tilt), strip, z * math.cos(tilt) + u0 * math.sin(tilt)


@dataclass(frozen=True)
class Station:
    """A tracking station: an optional target followed by modules, positions relative to its origin.

    Parameters
    ----------
    name : str
        Unique inside the geometry.
    z_origin_cm : float
        Global z of the station origin (cm).
    target : Target or None
        The target; its `z_cm` is the upstream face relative to the station origin.
    modules : tuple of Module
        In z order, not overlapping.
    length_cm : float or None
        Length of the station; everything must lie in [0, length_cm]. None: up to the next
        station's origin (unbounded for the last station).
    length_scale, z_offset_cm : float
        Misalignment of the whole station: local z maps to z_origin + z_offset + length_scale * z.
    """

    name: str
    z_origin_cm: float
    target: Target | None = None
    modules: tuple = ()
    length_cm: float | None = None
    length_scale: float = 1.0
    z_offset_cm: float = 0.0

    def __post_init__(self):
        _check_name("name", self.name)
        check_range("z_origin_cm", self.z_origin_cm)
        if self.length_cm is not None:
            check_range("length_cm", self.length_cm, 0.0, low_open=True)
        check_range("length_scale", self.length_scale, *LENGTH_SCALE_RANGE)
        check_range("z_offset_cm", self.z_offset_cm, -100.0, 100.0)
        if self.target is not None and not isinstance(self.target, Target):
            raise ValueError(f"target = {self.target!r} must be a Target or None")
        object.__setattr__(self, "modules", tuple(self.modules))
        names = set()
        for i, module in enumerate(self.modules):
            if not isinstance(module, Module):
                raise ValueError(f"modules[{i}] = {module!r} must be a Module")
            if module.name in names:
                raise ValueError(f"modules[{i}].name = {module.name!r} is used twice in the station")
            names.add(module.name)
        self._check_positions()

    def _check_positions(self):
        spans = [(f"modules[{i}]", m.z_cm, m.z_cm - m.half_extent_z_cm, m.z_cm + m.half_extent_z_cm)
                 for i, m in enumerate(self.modules)]
        for (name0, z0, _, high0), (name1, z1, low1, _) in zip(spans[:-1], spans[1:]):
            if z1 <= z0:
                raise ValueError(f"{name1}.z_cm = {z1!r} is not after {name0}.z_cm = {z0!r}; "
                                 "modules must be listed in z order")
            if low1 < high0:
                raise ValueError(f"{name1}.z_cm = {z1!r} overlaps {name0}: the sensor stacks (spacing + thickness, "
                                 f"tilt included) reach z = {high0:.4g} cm and start at z = {low1:.4g} cm")
        if self.target is not None:
            low, high = self.target.z_cm, self.target.z_cm + self.target.thickness_cm
            for name, _, m_low, m_high in spans:
                if low < m_high and m_low < high:
                    raise ValueError(f"target.z_cm = {low!r} overlaps {name}: the target spans "
                                     f"[{low:.4g}, {high:.4g}] cm and the module [{m_low:.4g}, {m_high:.4g}] cm")
            spans.append(("target", low, low, high))
        end = math.inf if self.length_cm is None else self.length_cm
        for name, z, low, high in spans:
            if low < 0.0 or high > end:
                raise ValueError(f"{name}.z_cm = {z!r} is outside the station: it spans [{low:.4g}, {high:.4g}] cm, "
                                 f"allowed [0, {end!r}] cm from the station origin (length_cm)")

    @property
    def extent_cm(self) -> tuple[float, float]:
        """(lowest, highest) local z of the target and the sensor stacks, nominal (0, 0 if empty)."""
        lows = [m.z_cm - m.half_extent_z_cm for m in self.modules]
        highs = [m.z_cm + m.half_extent_z_cm for m in self.modules]
        if self.target is not None:
            lows.append(self.target.z_cm)
            highs.append(self.target.z_cm + self.target.thickness_cm)
        return (min(lows), max(highs)) if lows else (0.0, 0.0)

    @property
    def is_nominal(self) -> bool:
        """No misalignment of the station or of its modules."""
        return (self.length_scale == 1.0 and self.z_offset_cm == 0.0
                and all(m.misalignment == Misalignment() for m in self.modules))

    def global_z_cm(self, z_local_cm):
        """Global z (cm) of a local z, with the station's z offset and length scale."""
        return self.z_origin_cm + self.z_offset_cm + self.length_scale * z_local_cm


@dataclass(frozen=True)
class Calorimeter:
    """An n_x x n_y array of crystals after the last station; `z_cm` is the global z of its front
    face, (x_cm, y_cm) the centre of the array. Defaults: the MUonE 5x5 PbWO4 prototype with
    CMS-like crystals of 2.85 x 2.85 x 22 cm^3; the Moliere radius of PbWO4 (PDG: 1.959 cm) and the
    CMS PbWO4 test-beam resolution, sigma/E = 2.8 %/sqrt(E) + 40 MeV a crystal + 0.3 %
    (`fastsim.detector.calorimeter` has the response model)."""

    z_cm: float
    material: str = "PbWO4"
    n_x: int = 5
    n_y: int = 5
    crystal_size_cm: float = 2.85
    crystal_length_cm: float = 22.0
    x_cm: float = 0.0
    y_cm: float = 0.0
    moliere_radius_cm: float = 1.959
    stochastic_term_gev_sqrt: float = 0.028
    constant_term: float = 0.003
    noise_per_crystal_gev: float = 0.04

    def __post_init__(self):
        check_range("z_cm", self.z_cm)
        material(self.material)
        check_integer("n_x", self.n_x, 1)
        check_integer("n_y", self.n_y, 1)
        check_range("crystal_size_cm", self.crystal_size_cm, 0.0, 100.0, low_open=True)
        check_range("crystal_length_cm", self.crystal_length_cm, 0.0, 1000.0, low_open=True)
        check_range("x_cm", self.x_cm, -1000.0, 1000.0)
        check_range("y_cm", self.y_cm, -1000.0, 1000.0)
        check_range("moliere_radius_cm", self.moliere_radius_cm, 0.0, 100.0, low_open=True)
        check_range("stochastic_term_gev_sqrt", self.stochastic_term_gev_sqrt, 0.0, 10.0)
        check_range("constant_term", self.constant_term, 0.0, 1.0)
        check_range("noise_per_crystal_gev", self.noise_per_crystal_gev, 0.0, 10.0)


@dataclass(frozen=True, eq=False)
class Layers:
    """Every target and sensor of a geometry as z-ordered arrays (length n), for numba kernels.

    Attributes
    ----------
    z_cm, thickness_cm, x0_cm : float64 (n,)
        Global z of the layer centre, thickness along its normal, radiation length of its material.
    atomic_number, mass_number : float64 (n,)
        Z and A (g/mol) of the layer's material (mass-weighted means for a compound).
    x_over_x0 : float64 (n,)
        Material crossed by a track along +z, thickness / x0 / |n_z|.
    kind : int64 (n,)
        KIND_TARGET (0) or KIND_SENSOR (1).
    station, module, sensor : int64 (n,)
        Station index, module index in the station and sensor index in the module (0 upstream,
        1 downstream); module and sensor are -1 for targets.
    measure_dir, strip_dir, normal, centre_cm : float64 (n, 3)
        Unit vectors of the sensor frame and the sensor centre (cm), misalignment included. For a
        target: normal (0, 0, 1), zero measure_dir and strip_dir, centre (0, 0, z).
    pitch_cm, active_length_cm, active_width_cm, efficiency, noise_hits_per_event, resolution_cm : float64 (n,)
        Sensor properties (zero for targets).
    n_strips : int64 (n,)
        Strips per sensor (zero for targets).
    """

    z_cm: np.ndarray
    thickness_cm: np.ndarray
    x0_cm: np.ndarray
    atomic_number: np.ndarray
    mass_number: np.ndarray
    x_over_x0: np.ndarray
    kind: np.ndarray
    station: np.ndarray
    module: np.ndarray
    sensor: np.ndarray
    measure_dir: np.ndarray
    strip_dir: np.ndarray
    normal: np.ndarray
    centre_cm: np.ndarray
    pitch_cm: np.ndarray
    n_strips: np.ndarray
    active_length_cm: np.ndarray
    active_width_cm: np.ndarray
    efficiency: np.ndarray
    noise_hits_per_event: np.ndarray
    resolution_cm: np.ndarray

    def __len__(self) -> int:
        return self.z_cm.size


_INT_LAYER_FIELDS = ("kind", "station", "module", "sensor", "n_strips")


@dataclass(frozen=True)
class Geometry:
    """The detector: stations in z order and an optional calorimeter after the last one.

    Build it with `load_geometry`, `Geometry.from_toml` or `Geometry.from_dict`; TOML layout:
    top-level `name`, `description`, ``[[stations]]`` tables (keys of `Station`, with
    ``[stations.target]`` and ``[[stations.modules]]``, a module's ``misalignment`` an inline
    table of `Misalignment` keys) and an optional ``[calorimeter]``. A station table may carry
    ``copies = N`` and ``copy_step_cm``: it then stands for N stations named name0 .. name(N-1)
    with origins z_origin_cm + k * copy_step_cm.
    """

    name: str
    stations: tuple
    calorimeter: Calorimeter | None = None
    description: str = ""

    def __post_init__(self):
        _check_name("name", self.name)
        object.__setattr__(self, "stations", tuple(self.stations))
        if not self.stations:
            raise ValueError("stations = () is empty; a geometry needs at least one station")
        names = set()
        for i, station in enumerate(self.stations):
            if not isinstance(station, Station):
                raise ValueError(f"stations[{i}] = {station!r} must be a Station")
            if station.name in names:
                raise ValueError(f"stations[{i}].name = {station.name!r} is used twice")
            if station.target is None and not station.modules:
                raise ValueError(f"stations[{i}] ({station.name!r}) has neither a target nor modules")
            names.add(station.name)
        for i, (first, second) in enumerate(zip(self.stations[:-1], self.stations[1:])):
            end = first.z_origin_cm + first.extent_cm[1]
            if first.length_cm is not None:
                end = max(end, first.z_origin_cm + first.length_cm)
            if second.z_origin_cm < end:
                raise ValueError(f"stations[{i + 1}].z_origin_cm = {second.z_origin_cm!r} is inside stations[{i}], "
                                 f"which reaches z = {end:.6g} cm; stations must be in z order and not overlap")
        if self.calorimeter is not None:
            if not isinstance(self.calorimeter, Calorimeter):
                raise ValueError(f"calorimeter = {self.calorimeter!r} must be a Calorimeter or None")
            last = self.stations[-1]
            end = last.z_origin_cm + last.extent_cm[1]
            if self.calorimeter.z_cm < end:
                raise ValueError(f"calorimeter.z_cm = {self.calorimeter.z_cm!r} is before the end of the last "
                                 f"station (z = {end:.6g} cm)")
        if not self.is_nominal:
            self._check_misaligned_order()

    def _check_misaligned_order(self):
        """ValueError unless the misaligned layers keep the nominal order: the stations one after the
        other, the modules of a station in their order, and the calorimeter behind everything."""
        layers = self.layers()
        for i in np.flatnonzero(np.diff(layers.station) < 0):
            early, late = self.stations[layers.station[i + 1]], self.stations[layers.station[i]]
            raise ValueError(
                f"stations {early.name!r} (length_scale = {early.length_scale!r}, z_offset_cm = {early.z_offset_cm!r}) "
                f"and {late.name!r} (length_scale = {late.length_scale!r}, z_offset_cm = {late.z_offset_cm!r}) overlap "
                f"with the misalignment: a layer of {early.name!r} is at z = {layers.z_cm[i + 1]:.6g} cm, behind one "
                f"of {late.name!r} at z = {layers.z_cm[i]:.6g} cm; stations must stay in z order")
        sensors = layers.kind == KIND_SENSOR
        for si, station in enumerate(self.stations):
            modules = layers.module[sensors & (layers.station == si)]
            for k in np.flatnonzero(np.diff(modules) < 0):
                early, late = station.modules[modules[k + 1]], station.modules[modules[k]]
                raise ValueError(
                    f"modules {early.name!r} ({early.misalignment!r}) and {late.name!r} ({late.misalignment!r}) of "
                    f"station {station.name!r} (length_scale = {station.length_scale!r}) overlap with the "
                    "misalignment; modules must stay in z order")
        if self.calorimeter is not None:
            end = float(np.max(layers.z_cm + 0.5 * layers.thickness_cm))
            if self.calorimeter.z_cm < end:
                raise ValueError(f"calorimeter.z_cm = {self.calorimeter.z_cm!r} is before the last layer, which reaches "
                                 f"z = {end:.6g} cm with the misalignment of the stations and modules")

    # --- counts -----------------------------------------------------------------------------
    @property
    def module_count(self) -> int:
        return sum(len(s.modules) for s in self.stations)

    @property
    def sensor_count(self) -> int:
        return 2 * self.module_count

    @property
    def target_count(self) -> int:
        return sum(s.target is not None for s in self.stations)

    # --- layers -----------------------------------------------------------------------------
    def layers(self) -> Layers:
        """Every target and sensor as z-ordered arrays (see `Layers`), misalignment included."""
        rows = []
        for si, station in enumerate(self.stations):
            if station.target is not None:
                t = station.target
                z = station.global_z_cm(t.z_cm + 0.5 * t.thickness_cm)
                rows.append(dict(z_cm=z, thickness_cm=t.thickness_cm, x0_cm=t.medium.radiation_length_cm,
                                 atomic_number=t.medium.z, mass_number=t.medium.a_g_mol,
                                 kind=KIND_TARGET, station=si, module=-1, sensor=-1, measure_dir=np.zeros(3),
                                 strip_dir=np.zeros(3), normal=np.array([0.0, 0.0, 1.0]),
                                 centre_cm=np.array([0.0, 0.0, z])))
            for mi, m in enumerate(station.modules):
                rotation = m.misalignment.rotation()
                measure, strip, normal = (rotation @ v for v in m.frame())
                centre = np.array([0.0, 0.0, station.global_z_cm(m.z_cm)]) + m.misalignment.shift_cm
                for k, sign in enumerate((-0.5, 0.5)):
                    position = centre + sign * m.sensor_spacing_cm * normal
                    rows.append(dict(
                        z_cm=position[2], thickness_cm=m.sensor_thickness_cm,
                        x0_cm=material(m.material).radiation_length_cm, atomic_number=material(m.material).z,
                        mass_number=material(m.material).a_g_mol,
                        kind=KIND_SENSOR, station=si, module=mi, sensor=k, measure_dir=measure, strip_dir=strip,
                        normal=normal, centre_cm=position, pitch_cm=m.pitch_cm, n_strips=m.n_strips,
                        active_length_cm=m.active_length_cm, active_width_cm=m.active_width_cm,
                        efficiency=m.hit_efficiency, noise_hits_per_event=m.noise_hits_per_event,
                        resolution_cm=m.resolution_cm))
        order = np.argsort([row["z_cm"] for row in rows], kind="stable")
        rows = [rows[i] for i in order]
        arrays = {}
        for f in dataclasses.fields(Layers):
            if f.name == "x_over_x0":
                continue
            dtype = np.int64 if f.name in _INT_LAYER_FIELDS else np.float64
            arrays[f.name] = np.ascontiguousarray([row.get(f.name, 0) for row in rows], dtype=dtype)
        arrays["x_over_x0"] = arrays["thickness_cm"] / arrays["x0_cm"] / np.abs(arrays["normal"][:, 2])
        return Layers(**arrays)

    # --- misalignment -----------------------------------------------------------------------
    def nominal(self) -> "Geometry":
        """The same detector with every misalignment removed (what reconstruction assumes)."""
        stations = tuple(
            dataclasses.replace(s, length_scale=1.0, z_offset_cm=0.0,
                                modules=tuple(dataclasses.replace(m, misalignment=Misalignment()) for m in s.modules))
            for s in self.stations)
        return dataclasses.replace(self, stations=stations)

    @property
    def is_nominal(self) -> bool:
        """No misalignment of any station or module (equal to `nominal()`)."""
        return all(station.is_nominal for station in self.stations)

    def with_misalignment(self, modules=None, stations=None) -> "Geometry":
        """A copy with misalignments set (what simulation uses); unnamed ones are kept.

        Parameters
        ----------
        modules : dict, optional
            {(station, module): Misalignment or a dict of its keys}; station and module are
            indices or names. Replaces the module's misalignment.
        stations : dict, optional
            {station: {"z_offset_cm": ..., "length_scale": ...}}; keys left out are kept.
        """
        new_stations = list(self.stations)
        for key, value in (stations or {}).items():
            si = self._station_index(key)
            if not isinstance(value, dict):
                raise ValueError(f"stations[{key!r}] = {value!r} must be a dict of z_offset_cm and length_scale")
            unknown = sorted(set(value) - {"z_offset_cm", "length_scale"})
            if unknown:
                raise ValueError(f"unknown key stations[{key!r}].{unknown[0]} = {value[unknown[0]]!r}; "
                                 f"allowed keys: ['length_scale', 'z_offset_cm']")
            try:
                new_stations[si] = dataclasses.replace(new_stations[si], **value)
            except ValueError as error:
                raise ValueError(f"stations[{key!r}].{error}") from None
        for key, value in (modules or {}).items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"modules key {key!r} must be a (station, module) pair")
            si = self._station_index(key[0])
            station = new_stations[si]
            mi = self._module_index(station, key[1])
            if isinstance(value, dict):
                value = from_mapping(Misalignment, value, f"misalignment[{key!r}]")
            elif not isinstance(value, Misalignment):
                raise ValueError(f"misalignment[{key!r}] = {value!r} must be a Misalignment or a dict")
            modules_ = list(station.modules)
            modules_[mi] = dataclasses.replace(modules_[mi], misalignment=value)
            new_stations[si] = dataclasses.replace(station, modules=tuple(modules_))
        return dataclasses.replace(self, stations=tuple(new_stations))

    def _station_index(self, key) -> int:
        names = [s.name for s in self.stations]
        if isinstance(key, str) and key in names:
            return names.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(names):
            return int(key)
        raise ValueError(f"station = {key!r} is unknown; stations: indices 0..{len(names) - 1} or names {names}")

    @staticmethod
    def _module_index(station, key) -> int:
        names = [m.name for m in station.modules]
        if isinstance(key, str) and key in names:
            return names.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(names):
            return int(key)
        raise ValueError(f"module = {key!r} is unknown in station {station.name!r}; "
                         f"modules: indices 0..{len(names) - 1} or names {names}")

    # --- construction from TOML -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, where: str = "geometry", default_name: str = "geometry") -> "Geometry":
        """Build a geometry from a TOML table (layout in the class doc); ValueError naming the
        dotted key, its value and what is allowed for any bad input."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a table, got {data!r}")
        allowed = ("name", "description", "stations", "calorimeter")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"unknown key {where}.{unknown[0]} = {data[unknown[0]]!r}; allowed keys: {sorted(allowed)}")
        for key in ("name", "description"):
            if key in data and not isinstance(data[key], str):
                raise ValueError(f"{where}.{key} = {data[key]!r} has the wrong type; expected str")
        if "stations" not in data:
            raise ValueError(f"missing required key {where}.stations")
        if not isinstance(data["stations"], list):
            raise ValueError(f"{where}.stations = {data['stations']!r} must be an array of tables ([[stations]])")
        stations = []
        for i, table in enumerate(data["stations"]):
            stations.extend(_stations_from_table(table, f"{where}.stations[{i}]"))
        calorimeter = None
        if "calorimeter" in data:
            calorimeter = from_mapping(Calorimeter, data["calorimeter"], f"{where}.calorimeter")
        try:
            return cls(name=data.get("name", default_name), stations=tuple(stations), calorimeter=calorimeter,
                       description=data.get("description", ""))
        except ValueError as error:
            raise ValueError(f"{where}.{error}") from None

    @classmethod
    def from_toml(cls, path) -> "Geometry":
        path = Path(path)
        return cls.from_dict(load_toml(path), where=str(path), default_name=path.stem)


def _module_from_table(table, where) -> Module:
    if isinstance(table, dict) and "misalignment" in table:
        misalignment = from_mapping(Misalignment, table["misalignment"], f"{where}.misalignment")
        module = from_mapping(Module, {k: v for k, v in table.items() if k != "misalignment"}, where)
        return dataclasses.replace(module, misalignment=misalignment)
    return from_mapping(Module, table, where)


def _stations_from_table(table, where) -> list[Station]:
    """One station table as Station objects (several with `copies`)."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {table!r}")
    table = dict(table)
    copies = table.pop("copies", 1)
    copies = check_integer(f"{where}.copies", copies, 1)
    step = table.pop("copy_step_cm", None)
    if copies > 1 and step is None:
        raise ValueError(f"missing required key {where}.copy_step_cm (copies = {copies})")
    if step is not None:
        step = check_range(f"{where}.copy_step_cm", step, 0.0, low_open=True)
    target = table.pop("target", None)
    modules = table.pop("modules", [])
    bare = from_mapping(Station, table, where)  # keys, types and ranges of the plain keys
    if target is not None:
        target = from_mapping(Target, target, f"{where}.target")
    if not isinstance(modules, list):
        raise ValueError(f"{where}.modules = {modules!r} must be an array of tables ([[stations.modules]])")
    modules = tuple(_module_from_table(m, f"{where}.modules[{i}]") for i, m in enumerate(modules))
    try:
        station = dataclasses.replace(bare, target=target, modules=modules)
    except ValueError as error:
        raise ValueError(f"{where}.{error}") from None
    if copies == 1:
        return [station]
    return [dataclasses.replace(station, name=f"{station.name}{k}", z_origin_cm=station.z_origin_cm + k * step)
            for k in range(copies)]


# --- presets ------------------------------------------------------------------------------------
def _preset_folder():
    return resources.files("fastsim.detector").joinpath("geometries")


def available_geometries() -> list[str]:
    """Names of the preset geometries shipped in fastsim/detector/geometries."""
    return sorted(p.name[: -len(".toml")] for p in _preset_folder().iterdir() if p.name.endswith(".toml"))


def geometry_table(name_or_path) -> dict:
    """The TOML table of a preset geometry (by name, see `available_geometries`) or of a file."""
    text = str(name_or_path)
    presets = available_geometries()
    if text in presets:
        resource = _preset_folder().joinpath(f"{text}.toml")
        try:
            data = tomllib.loads(resource.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"geometry = {text!r}: the preset is not valid TOML: {error}") from None
        data.setdefault("name", text)
        return data
    if Path(text).is_file():
        data = load_toml(text)
        data.setdefault("name", Path(text).stem)
        return data
    raise ValueError(f"geometry = {text!r} is neither a preset geometry nor a readable file; presets: {presets}")


def load_geometry(name_or_path) -> Geometry:
    """A preset geometry by name (see `available_geometries`) or a geometry TOML file by path."""
    text = str(name_or_path)
    where = text if text in available_geometries() else str(Path(text))
    return Geometry.from_dict(geometry_table(text), where=where)
