"""Track finding and fitting in one station: stubs -> straight 3D tracks with covariance and chi2.

What to use when:

- `reco.reconstruct.reconstruct(chunk, geometry)` runs everything (tracks, vertex, angles) and is
  what analyses call; the kernels of this module are its building blocks.
- `find_tracks(hits, stubs, geometry, settings)` returns every track of every station of a chunk
  (`Tracks`, flat arrays with the event of each track): for validation (pulls, resolutions,
  efficiencies) and for studies that want the tracks themselves.
- `TrackingSettings` holds the finder's windows and the fit's multiple-scattering model;
  `TrackingModel.from_geometry` turns a (nominal) geometry into the arrays the kernels read.

Finding (per station). Seeds are built in the two projections from the stubs of the first and the
last X module (a line in x-z) and of the first and last Y module (a line in y-z): a hit u of a
module whose strips run along y (X view, any tilt about the strips) fixes the point
centre + u * measure_dir exactly, so each projection line through two stubs is exact. Every
(x line, y line) pair is a 3D candidate; it is confirmed by the other modules (the stereo U and V
views) if their nearest stub lies within `confirm_window_cm` of the predicted u, and kept with
at least `min_stubs` stubs. Candidates are fitted; those with chi2/ndf above `max_chi2_per_ndf`
are dropped. Ambiguity resolution: each stub is used by one track only; among the sets of
compatible candidates the one with the most tracks, then the most stubs, then the smallest total
chi2 is kept
(exhaustive search up to 12 candidates, else greedy by number of stubs and chi2/ndf). A plain
greedy choice by chi2 loses events: a wrong combination that borrows the muon's stub can fit
better than the true track of an electron that radiated.

Fit. The two clusters of a stub are averaged: their mean measures u = m . (P - c) exactly in the
module's mid-plane (the sensors share m and n, and a line crosses them at u0 and
u0 + spacing tan(alpha)), with P the intersection of the line (x, y, tx, ty at the reference z)
with that plane (normal n, centre c) of the nominal geometry: the exact model of the tilted and
stereo planes. Only their difference is left out, which constrains the slope over the 0.18-0.40
cm between the sensors: (0.2 / 70)^2 of the information of the station's lever arm. Gauss-Newton
from the seed (2 iterations; the seed is already exact in the two projections). Measurement
covariance:

- resolution of the cluster mean, sigma sqrt((1 + rho) / 2) at the track's tan(alpha), with the
  single-cluster sigma and the correlation rho of the two sensors' errors computed from the
  digitization model (`fastsim.detector.digitization.digitize_crossing`, crossing position
  uniform over a strip, `pair_resolution_table`): the sensors see the same strip pattern shifted
  by spacing tan(alpha), so at normal incidence (U, V) their errors are nearly identical (rho ~ 1)
  and counting them as independent would underestimate the track errors by up to sqrt(2);
- multiple scattering in the station's modules (`ms_scale` > 0): a scatter of variance theta_l^2
  at z_l between the reference plane and measurement k moves it by (z_k - z_l) theta; the
  covariance of k, j is sum_l theta_l^2 (z_k - z_l)(z_j - z_l) (a_k . a_j) with a the transverse
  derivative of u. theta_l follows the simulation's convention (`fastsim.detector.transport`):
  Highland on the whole station's x/X0, shared in proportion to the layers' x/X0 (a module's two
  sensors scatter at its mid-plane). The momentum is estimated from the track's polar angle with
  the elastic relation at `beam_energy_gev`: below arcsin(m_e/m_mu) the muon's energy on the
  soft-electron branch (the energetic muon of theta_e > 1.3 mrad), the electron's above (energy lost by bremsstrahlung in the station is
  neglected). For an outgoing track the reference plane is upstream of the station (scatters
  before a measurement count); for the incoming muon it is downstream (`downstream=True`).

The covariance of (x, y, tx, ty) is the inverse of J^T V^-1 J; chi2 = r^T V^-1 r, ndf = modules - 4.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from fastsim.config import check_integer, check_range
from fastsim.detector.digitization import (
    DEFAULT_SIGMA_DIFF_CM,
    DEFAULT_THRESHOLD_FRACTION,
    cluster_u_cm,
    digitize_crossing,
)
from fastsim.detector.geometry import KIND_SENSOR, Geometry
from fastsim.detector.interactions import highland_theta0_rad
from fastsim.physics.kinematics import (
    THETA_MU_MAX_RAD,
    electron_energy_from_t_kernel,
    t_from_theta_e_kernel,
    t_from_theta_mu_kernel,
)
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV

MODULE_X, MODULE_Y, MODULE_OTHER = 0, 1, 2
# Grid of the resolution/correlation tables: tan(alpha) around the value of a track along the
# beam, +- TABLE_HALF_RANGE, in steps of TABLE_STEP (a U/V module's pair pattern repeats every
# pitch / spacing = 0.0225 in tan(alpha): 45 steps per period).
TABLE_HALF_RANGE = 0.15
TABLE_STEP = 5e-4
TABLE_POINTS_PER_PITCH = 2000
_MAX_SEED_STUBS = 32  # stubs per seed module considered (more: the station is skipped)


@dataclass(frozen=True)
class TrackingSettings:
    """Track finding and fitting options (defaults in brackets).

    Parameters
    ----------
    confirm_window_cm : float
        Half-width of the window, in the measured coordinate u, in which a stereo stub confirms a
        seed [0.1 cm: ~4x the 1 GeV electron's scattering deviation at the U/V modules].
    max_slope : float
        Largest |dx/dz| and |dy/dz| of a seed projection line [0.1].
    min_stubs : int
        Fewest stubs (modules) of a track, the four seeds included [5: one stereo module may miss].
    max_chi2_per_ndf : float
        Candidates above are dropped [500: only hopeless combinations; electrons that radiated in
        the station have chi2/ndf of tens, and the ambiguity resolution removes the wrong
        combinations that share stubs with true tracks].
    max_tracks_per_station : int
        Tracks kept per station and event [6].
    max_candidates : int
        Confirmed candidates fitted per station and event [64]; seeds beyond are ignored.
    ms_scale : float
        Multiple-scattering scale in the fit's covariance; 0 for a pure hit-resolution fit [1].
    beam_energy_gev : float
        Nominal beam energy: the incoming muon's momentum and the elastic relation that estimates
        the outgoing momenta [160].
    gauss_newton_iterations : int
        Iterations of the fit from the seed [2].
    threshold_fraction, diffusion_sigma_cm : float
        Charge model assumed for the cluster resolution (`fastsim.detector.digitization`)
        [the digitization defaults, 0.25 and 7e-4 cm].
    """

    confirm_window_cm: float = 0.1
    max_slope: float = 0.1
    min_stubs: int = 5
    max_chi2_per_ndf: float = 500.0
    max_tracks_per_station: int = 6
    max_candidates: int = 64
    ms_scale: float = 1.0
    beam_energy_gev: float = 160.0
    gauss_newton_iterations: int = 2
    threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION
    diffusion_sigma_cm: float = DEFAULT_SIGMA_DIFF_CM

    def __post_init__(self):
        check_range("confirm_window_cm", self.confirm_window_cm, 0.0, 10.0, low_open=True)
        check_range("max_slope", self.max_slope, 0.0, 1.0, low_open=True)
        check_integer("min_stubs", self.min_stubs, 4, 1000)
        check_range("max_chi2_per_ndf", self.max_chi2_per_ndf, 0.0, low_open=True)
        check_integer("max_tracks_per_station", self.max_tracks_per_station, 1, 100)
        check_integer("max_candidates", self.max_candidates, 1, 10_000)
        check_range("ms_scale", self.ms_scale, 0.0, 10.0)
        check_range("beam_energy_gev", self.beam_energy_gev, 1.0, 1e4)
        check_integer("gauss_newton_iterations", self.gauss_newton_iterations, 1, 10)
        check_range("threshold_fraction", self.threshold_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_range("diffusion_sigma_cm", self.diffusion_sigma_cm, 0.0, 0.01, low_open=True)

    def kernel_array(self) -> np.ndarray:
        return np.array([self.confirm_window_cm, self.max_slope, self.min_stubs, self.max_chi2_per_ndf,
                         self.max_tracks_per_station, self.max_candidates, self.ms_scale, self.beam_energy_gev,
                         self.gauss_newton_iterations], dtype=np.float64)


# indices into TrackingSettings.kernel_array()
_WINDOW, _MAX_SLOPE, _MIN_STUBS, _MAX_CHI2, _MAX_TRACKS, _MAX_CAND, _MS_SCALE, _BEAM_E, _ITER = range(9)

# The geometry as arrays for the kernels (a namedtuple of arrays is a numba tuple).
Model = collections.namedtuple("Model", [
    # per sensor (global sensor id of the hits, z order)
    "measure", "normal", "centre", "sensor_module", "sensor_x", "sensor_z",
    # per module (global index, z order): the mid-plane between its two sensors
    "module_station", "module_kind", "module_sensor0", "module_sensor1", "module_table", "module_measure",
    "module_normal", "module_centre", "module_x", "module_z", "module_spacing", "module_pitch",
    # per station
    "station_module_first", "station_module_last", "station_sensor_first", "station_sensor_last",
    "station_seeds", "station_zref", "station_has_target", "station_target_front", "station_target_back",
    "station_target_x0", "station_x",
    # per table: sigma of the mean of a module's two clusters on a tan(alpha) grid from table_low
    "table_sigma", "table_sigma1", "table_low",
    # packed copies read by the hot kernels (every array passed to a non-inlined numba function
    # costs an atomic reference-count increment and decrement per call):
    # module_geom[g] = measure (3), normal (3), centre (3), z, x/X0, sensor spacing, pitch,
    # w = z - the station's zref, and the moments (sum x/X0, sum x/X0 w, sum x/X0 w^2) of the
    # station's modules upstream (3) and downstream (3) of g (`add_scattering_covariance`);
    # table_both[0] = table_sigma, table_both[1] = table_sigma1
    "module_geom", "table_both",
])
_GEOM_MEASURE, _GEOM_NORMAL, _GEOM_CENTRE, _GEOM_Z, _GEOM_X, _GEOM_SPACING, _GEOM_PITCH = 0, 3, 6, 9, 10, 11, 12
_GEOM_W, _GEOM_MS_UP, _GEOM_MS_DOWN = 13, 14, 17


@njit(cache=True, nogil=True)
def _pair_moments(tan_alpha, offset_cm, pitch_cm, thickness_cm, threshold, sigma_diff, n_points):
    """(sigma, rho) of the cluster residuals of a module's two sensors, crossed at u and u + offset,
    u uniform over one strip (midpoint rule with n_points)."""
    reach = 0.5 * thickness_cm * abs(tan_alpha) + 8.5 * sigma_diff + abs(offset_cm)
    n = 2 * int(reach / pitch_cm) + 7
    s00 = 0.0
    s11 = 0.0
    s01 = 0.0
    for i in range(n_points):
        u = (-0.5 + (i + 0.5) / n_points) * pitch_cm
        f0, k0 = digitize_crossing(u, tan_alpha, pitch_cm, n, thickness_cm, threshold, sigma_diff)
        f1, k1 = digitize_crossing(u + offset_cm, tan_alpha, pitch_cm, n, thickness_cm, threshold, sigma_diff)
        if k0 == 0 or k1 == 0:
            continue
        r0 = cluster_u_cm(f0, k0, pitch_cm, n) - u
        r1 = cluster_u_cm(f1, k1, pitch_cm, n) - (u + offset_cm)
        s00 += r0 * r0
        s11 += r1 * r1
        s01 += r0 * r1
    return math.sqrt(0.5 * (s00 + s11) / n_points), s01 / math.sqrt(s00 * s11)


@functools.lru_cache(maxsize=32)
def pair_resolution_table(tan_centre, pitch_cm, thickness_cm, spacing_cm, threshold_fraction=DEFAULT_THRESHOLD_FRACTION,
                          sigma_diff_cm=DEFAULT_SIGMA_DIFF_CM):
    """Resolution sigma(tan alpha) (cm) and two-sensor correlation rho(tan alpha) of a 2S module.

    Parameters
    ----------
    tan_centre : float
        tan(alpha) of a track along the beam; the table spans +- TABLE_HALF_RANGE around it.
    pitch_cm, thickness_cm, spacing_cm : float
        Strip pitch, sensor thickness and distance between the two sensors' mid-planes.
    threshold_fraction, sigma_diff_cm : float
        Charge model of `fastsim.detector.digitization.digitize_crossing`.

    Returns
    -------
    low, sigma, rho : float, arrays
        Grid start and the values at low + k TABLE_STEP.

    Notes
    -----
    sigma reproduces `fastsim.detector.digitization.expected_resolution_cm` (same charge model,
    midpoint rule instead of exact integration); the second sensor is crossed spacing *
    tan(alpha) further along u (same normal, same strip layout).
    """
    n = int(round(2 * TABLE_HALF_RANGE / TABLE_STEP)) + 1
    low = tan_centre - TABLE_HALF_RANGE
    sigma, rho = np.empty(n), np.empty(n)
    for k in range(n):
        t = low + k * TABLE_STEP
        sigma[k], rho[k] = _pair_moments(t, spacing_cm * t, pitch_cm, thickness_cm, threshold_fraction, sigma_diff_cm,
                                         TABLE_POINTS_PER_PITCH)
    return low, sigma, rho


@dataclass(frozen=True, eq=False)
class TrackingModel:
    """The reconstruction geometry as arrays (`model`, a `Model` namedtuple) plus its counts."""

    geometry: Geometry
    model: Model
    n_sensors: int
    n_modules: int
    max_modules_per_station: int

    @classmethod
    def from_geometry(cls, geometry: Geometry, settings: "TrackingSettings | None" = None) -> "TrackingModel":
        """Arrays of `geometry.nominal()`; ValueError if a station with modules lacks two X and
        two Y modules (the seeding needs them)."""
        settings = TrackingSettings() if settings is None else settings
        geometry = geometry.nominal()
        layers = geometry.layers()
        sensors = np.flatnonzero(layers.kind == KIND_SENSOR)
        keys = layers.station[sensors] * 10_000 + layers.module[sensors]
        unique_keys, module_of_sensor = np.unique(keys, return_inverse=True)
        n_modules = unique_keys.size
        n_stations = len(geometry.stations)
        module_station = (unique_keys // 10_000).astype(np.int64)
        module_index = unique_keys % 10_000
        kind = np.full(n_modules, MODULE_OTHER, np.int64)
        sensor0 = np.empty(n_modules, np.int64)
        sensor1 = np.empty(n_modules, np.int64)
        table_of_module = np.empty(n_modules, np.int64)
        tables = {}
        for g in range(n_modules):
            module = geometry.stations[module_station[g]].modules[module_index[g]]
            if module.view == "X" or (module.view == "stereo" and math.sin(module.angle_rad) == 0.0):
                kind[g] = MODULE_X
            elif module.view == "Y":
                kind[g] = MODULE_Y
            pair = np.flatnonzero(module_of_sensor == g)
            first, second = sorted(pair, key=lambda s: layers.sensor[sensors[s]])
            sensor0[g], sensor1[g] = first, second
            row = sensors[first]
            tan_centre = float(layers.measure_dir[row, 2] / layers.normal[row, 2])
            key = (round(tan_centre, 12), module.pitch_cm, module.sensor_thickness_cm, module.sensor_spacing_cm)
            if key not in tables:
                tables[key] = len(tables)
            table_of_module[g] = tables[key]
        table_low = np.empty(len(tables))
        rows_sigma, rows_sigma1 = [None] * len(tables), [None] * len(tables)
        for key, t in tables.items():
            table_low[t], sigma, rho = pair_resolution_table(*key, settings.threshold_fraction,
                                                             settings.diffusion_sigma_cm)
            rows_sigma[t] = sigma * np.sqrt(0.5 * (1.0 + rho))  # the mean of two correlated clusters
            rows_sigma1[t] = sigma
        spacing = np.array([geometry.stations[module_station[g]].modules[module_index[g]].sensor_spacing_cm
                            for g in range(n_modules)])
        pitch = np.array([geometry.stations[module_station[g]].modules[module_index[g]].pitch_cm
                          for g in range(n_modules)])

        first_module = np.zeros(n_stations, np.int64)
        last_module = np.zeros(n_stations, np.int64)
        first_sensor = np.zeros(n_stations, np.int64)
        last_sensor = np.zeros(n_stations, np.int64)
        seeds = np.full((n_stations, 4), -1, np.int64)
        zref = np.zeros(n_stations)
        has_target = np.zeros(n_stations, np.bool_)
        front, back, target_x0 = np.zeros(n_stations), np.zeros(n_stations), np.ones(n_stations)
        station_x = np.zeros(n_stations)
        max_modules = 0
        for s, station in enumerate(geometry.stations):
            mods = np.flatnonzero(module_station == s)
            if mods.size:
                first_module[s], last_module[s] = mods[0], mods[-1] + 1
                first_sensor[s], last_sensor[s] = sensor0[mods[0]], sensor1[mods[-1]] + 1
                xs, ys = mods[kind[mods] == MODULE_X], mods[kind[mods] == MODULE_Y]
                if xs.size < 2 or ys.size < 2:
                    raise ValueError(f"station {station.name!r} has {xs.size} X and {ys.size} Y modules; the track "
                                     "finder seeds with the first and last X and Y modules and needs two of each")
                seeds[s] = xs[0], xs[-1], ys[0], ys[-1]
            max_modules = max(max_modules, mods.size)
            in_station = layers.station == s
            station_x[s] = layers.x_over_x0[in_station].sum()
            if station.target is not None:
                t = station.target
                centre = station.global_z_cm(t.z_cm + 0.5 * t.thickness_cm)
                zref[s] = centre
                has_target[s] = True
                front[s], back[s] = centre - 0.5 * t.thickness_cm, centre + 0.5 * t.thickness_cm
                target_x0[s] = t.medium.radiation_length_cm
            else:
                zref[s] = station.global_z_cm(0.0)
                front[s] = back[s] = zref[s]
        module_x = layers.x_over_x0[sensors[sensor0]] + layers.x_over_x0[sensors[sensor1]]
        module_z = 0.5 * (layers.centre_cm[sensors[sensor0], 2] + layers.centre_cm[sensors[sensor1], 2])
        module_w = module_z - zref[module_station]
        moments_up, moments_down = np.zeros((n_modules, 3)), np.zeros((n_modules, 3))
        for g in range(n_modules):
            in_station = module_station == module_station[g]
            for moments, side in ((moments_up, module_z < module_z[g]), (moments_down, module_z > module_z[g])):
                x, w = module_x[in_station & side], module_w[in_station & side]
                moments[g] = x.sum(), (x * w).sum(), (x * w * w).sum()
        model = Model(
            measure=np.ascontiguousarray(layers.measure_dir[sensors]),
            normal=np.ascontiguousarray(layers.normal[sensors]),
            centre=np.ascontiguousarray(layers.centre_cm[sensors]),
            sensor_module=module_of_sensor.astype(np.int64),
            sensor_x=np.ascontiguousarray(layers.x_over_x0[sensors]),
            sensor_z=np.ascontiguousarray(layers.centre_cm[sensors, 2]),
            module_station=module_station, module_kind=kind, module_sensor0=sensor0, module_sensor1=sensor1,
            module_table=table_of_module,
            module_measure=np.ascontiguousarray(layers.measure_dir[sensors[sensor0]]),
            module_normal=np.ascontiguousarray(layers.normal[sensors[sensor0]]),
            module_centre=np.ascontiguousarray(0.5 * (layers.centre_cm[sensors[sensor0]] + layers.centre_cm[sensors[sensor1]])),
            module_x=module_x, module_z=module_z,
            station_module_first=first_module, station_module_last=last_module,
            station_sensor_first=first_sensor, station_sensor_last=last_sensor, station_seeds=seeds,
            station_zref=zref, station_has_target=has_target, station_target_front=front,
            station_target_back=back, station_target_x0=target_x0, station_x=station_x,
            module_spacing=spacing, module_pitch=pitch,
            table_sigma=np.ascontiguousarray(np.array(rows_sigma)),
            table_sigma1=np.ascontiguousarray(np.array(rows_sigma1)),
            table_low=table_low,
            module_geom=np.ascontiguousarray(np.column_stack([
                layers.measure_dir[sensors[sensor0]], layers.normal[sensors[sensor0]],
                0.5 * (layers.centre_cm[sensors[sensor0]] + layers.centre_cm[sensors[sensor1]]),
                module_z, module_x, spacing, pitch, module_w, moments_up, moments_down])),
            table_both=np.ascontiguousarray(np.array([rows_sigma, rows_sigma1])),
        )
        return cls(geometry, model, int(sensors.size), int(n_modules), int(max_modules))


# ---------------------------------------------------------------------------------------------
# Kernels
#
# Speed (run2025: ~12 six-module fits an event, 9 of them track candidates). Every array passed
# to a non-inlined numba function, and every view made in a loop, costs an atomic reference-count
# increment and decrement (on an Intel Xeon under KVM 14 % of the reconstruction time before
# the fit stopped slicing its work arrays), so the kernels that receive the model and the
# workspace tuples are inlined and the fit indexes its work arrays in place. The fit itself
# (`fit_stub_arrays`) is not inlined: at its three call sites it doubled the cold compile time
# of `muone study quickstart` (117 -> 241 s) for a gain within the machine's drift. The scattering covariance is built from per-module moments (O(n^2), see
# `add_scattering_covariance`), which changed the fitted values by rounding only (chi2 1e-11
# relative, covariance elements up to 6e-8 where they nearly cancel; no track, stub or
# selection changed on 50k run2025 events); other rewrites for speed keep every floating-point
# operation of each result in its order (independent sums interleaved, not reassociated).


@njit(cache=True, nogil=True, inline="always")
def _table(table_both, table_low, table, tan_alpha, single):
    """Resolution of a module's cluster mean (single: of one cluster) at tan_alpha: linear
    interpolation, clamped at the ends (table_both, table_low: `Model` fields)."""
    which = 1 if single else 0
    n = table_both.shape[2]
    x = (tan_alpha - table_low[table]) / TABLE_STEP
    if x <= 0.0:
        return table_both[which, table, 0]
    if x >= n - 1:
        return table_both[which, table, n - 1]
    k = int(x)
    f = x - k
    return (1.0 - f) * table_both[which, table, k] + f * table_both[which, table, k + 1]


@njit(cache=True, nogil=True, inline="always")
def predict(geom, g, x0, y0, tx, ty, zref):
    """Line (x0, y0 at zref, slopes tx, ty) in the mid-plane of module g: (u, s, a_x, a_y, tan_alpha)
    with u the measured coordinate of the intersection, s = z_intersection - zref,
    (a_x, a_y) = (du/dx0, du/dy0) (and du/dtx = s a_x, du/dty = s a_y), tan_alpha = (d.m) / (d.n).

    The mean of the two clusters of a module measures u in its mid-plane exactly: the sensors
    share m and n, and a line crosses them at u0 and u0 + spacing tan_alpha. geom: `Model.module_geom`."""
    m0, m1, m2 = geom[g, _GEOM_MEASURE], geom[g, _GEOM_MEASURE + 1], geom[g, _GEOM_MEASURE + 2]
    n0, n1, n2 = geom[g, _GEOM_NORMAL], geom[g, _GEOM_NORMAL + 1], geom[g, _GEOM_NORMAL + 2]
    wx = x0 - geom[g, _GEOM_CENTRE]
    wy = y0 - geom[g, _GEOM_CENTRE + 1]
    wz = zref - geom[g, _GEOM_CENTRE + 2]
    nd = n0 * tx + n1 * ty + n2
    md = m0 * tx + m1 * ty + m2
    s = -(n0 * wx + n1 * wy + n2 * wz) / nd
    u = m0 * wx + m1 * wy + m2 * wz + s * md
    r = md / nd
    return u, s, m0 - r * n0, m1 - r * n1, r


@njit(cache=True, nogil=True, inline="always")
def estimate_momentum(tx, ty, beam_energy_gev):
    """(momentum GeV, mass GeV) of an outgoing track from its polar angle (w.r.t. z) with the elastic
    relation: the muon below arcsin(m_e/m_mu) (soft branch: the energetic muon of
    theta_e > 1.3 mrad, the MUonE signal region), else the electron."""
    theta = math.atan(math.sqrt(tx * tx + ty * ty))
    if theta < THETA_MU_MAX_RAD:
        t = t_from_theta_mu_kernel(beam_energy_gev, theta, False)
        energy = beam_energy_gev + ELECTRON_MASS_GEV - electron_energy_from_t_kernel(t)
        mass = MUON_MASS_GEV
    else:
        energy = electron_energy_from_t_kernel(t_from_theta_e_kernel(beam_energy_gev, theta))
        mass = ELECTRON_MASS_GEV
    energy = max(energy, 1.001 * mass)
    return math.sqrt((energy - mass) * (energy + mass)), mass


@njit(cache=True, nogil=True, inline="always")
def _cholesky(a, n):
    """In-place lower Cholesky factor of a[:n, :n]; False if not positive definite."""
    for j in range(n):
        d = a[j, j]
        for k in range(j):
            d -= a[j, k] * a[j, k]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        a[j, j] = d
        for i in range(j + 1, n):
            v = a[i, j]
            for k in range(j):
                v -= a[i, k] * a[j, k]
            a[i, j] = v / d
    return True


@njit(cache=True, nogil=True, inline="always")
def _forward(lower, n, b, column):
    """Solve lower[:n, :n] y = b[:n, column] in place."""
    for i in range(n):
        v = b[i, column]
        for k in range(i):
            v -= lower[i, k] * b[k, column]
        b[i, column] = v / lower[i, i]


@njit(cache=True, nogil=True, inline="always")
def invert_spd(a, n, out):
    """out[:n, :n] = inverse of the symmetric positive-definite a[:n, :n] (a is overwritten by its
    Cholesky factor); False if a is not positive definite."""
    if not _cholesky(a, n):
        return False
    if n == 4:  # the track fit's case: the four columns interleaved (independent chains; same operations)
        for i in range(4):  # forward: L y = e_c
            v0 = 1.0 if i == 0 else 0.0
            v1 = 1.0 if i == 1 else 0.0
            v2 = 1.0 if i == 2 else 0.0
            v3 = 1.0 if i == 3 else 0.0
            for k in range(i):
                w = a[i, k]
                v0 -= w * out[k, 0]
                v1 -= w * out[k, 1]
                v2 -= w * out[k, 2]
                v3 -= w * out[k, 3]
            d = a[i, i]
            out[i, 0], out[i, 1], out[i, 2], out[i, 3] = v0 / d, v1 / d, v2 / d, v3 / d
        for i in range(3, -1, -1):  # backward: L^T x = y
            v0, v1, v2, v3 = out[i, 0], out[i, 1], out[i, 2], out[i, 3]
            for k in range(i + 1, 4):
                w = a[k, i]
                v0 -= w * out[k, 0]
                v1 -= w * out[k, 1]
                v2 -= w * out[k, 2]
                v3 -= w * out[k, 3]
            d = a[i, i]
            out[i, 0], out[i, 1], out[i, 2], out[i, 3] = v0 / d, v1 / d, v2 / d, v3 / d
        return True
    for c in range(n):
        for i in range(n):  # forward: L y = e_c
            v = 1.0 if i == c else 0.0
            for k in range(i):
                v -= a[i, k] * out[k, c]
            out[i, c] = v / a[i, i]
        for i in range(n - 1, -1, -1):  # backward: L^T x = y
            v = out[i, c]
            for k in range(i + 1, n):
                v -= a[k, i] * out[k, c]
            out[i, c] = v / a[i, i]
    return True


@njit(cache=True, nogil=True, inline="always")
def add_scattering_covariance(geom, fit_int, fit_work, n, theta2_per_x, downstream):
    """Add the multiple-scattering covariance of n measurements to fit_work[:n, :n] (the layout of
    `fit_line`: modules fit_int[:n, 0], transverse derivatives a of u in fit_work[:n, nm:nm + 2]):

        V_kj += theta2_per_x (a_k . a_j) sum_l x_l (z_k - z_l) (z_j - z_l)

    over the station's modules l (x_l their x/X0, scattering at their mid-planes) upstream of both
    measurements, or downstream of both if `downstream`. The sum over l is expanded as
    w_k w_j S0 - (w_k + w_j) S1 + S2 with S_i = sum_l x_l w_l^i and w = z - station origin, the
    moments stored per module in `Model.module_geom`: O(n^2) operations instead of O(layers n^2)
    (rounding ~1e-13 relative for the detectors' lever arms)."""
    ca = fit_int.shape[0]
    moments = _GEOM_MS_DOWN if downstream else _GEOM_MS_UP
    for k in range(n):
        gk = fit_int[k, 0]
        wk = geom[gk, _GEOM_W]
        for j in range(k + 1):
            gj = fit_int[j, 0]
            wj = geom[gj, _GEOM_W]
            # the scatterers before (after) both measurements are those before (after) the nearer one
            near = gj if (wj <= wk) != downstream else gk
            lever_sum = (wk * wj * geom[near, moments] - (wk + wj) * geom[near, moments + 1]
                         + geom[near, moments + 2])
            v = theta2_per_x * lever_sum * (fit_work[k, ca] * fit_work[j, ca] + fit_work[k, ca + 1] * fit_work[j, ca + 1])
            fit_work[k, j] += v
            if j != k:
                fit_work[j, k] += v


@njit(cache=True, nogil=True, inline="always")
def fit_line(geom, module_table, table_both, table_low, x_station, n, params, zref, momentum, mass,
             ms_scale, downstream, n_iterations, cov, fit_int, fit_work, work_j, fit_normal):
    """Gauss-Newton fit of a straight line to n module measurements (module ids fit_int[:n, 0], cluster
    means fit_work[:n, nm + 3], or a single cluster's mid-plane equivalent where fit_int[k, 1]),
    starting from and updating params = (x, y, tx, ty) at zref.

    Fills cov (4x4) and returns chi2 (inf if a covariance is singular). See the module docstring
    for the measurement model and the covariance; a module's scattering acts at its mid-plane
    (the 0.18-0.40 cm between its sensors is neglected). geom, module_table, table_both, table_low:
    the `Model` fields; x_station: the station's x/X0. Work arrays
    (`make_workspace`; indexed in place, not sliced: a view in a hot loop costs an atomic
    reference-count increment and decrement): fit_int nm x 2, fit_work nm x (nm + 4) holding the
    covariance V (columns 0 .. nm - 1), a (nm, nm + 1), the residuals (nm + 2) and the
    measurements (nm + 3); work_j nm x 4, fit_normal 4 x 5 (J^T V^-1 J and, in column 4, J^T V^-1 r)."""
    nm = fit_int.shape[0]
    ca, cr = nm, nm + 2
    for k in range(n):
        g = fit_int[k, 0]
        u, s, ax, ay, tan_alpha = predict(geom, g, params[0], params[1], params[2], params[3], zref)
        sigma = _table(table_both, table_low, module_table[g], tan_alpha, fit_int[k, 1])
        fit_work[k, ca], fit_work[k, ca + 1] = ax, ay
        fit_work[k, cr] = fit_work[k, cr + 1] - u  # iteration 0 (same parameters)
        work_j[k, 0], work_j[k, 1], work_j[k, 2], work_j[k, 3] = ax, ay, s * ax, s * ay
        for j in range(n):
            fit_work[k, j] = 0.0
        fit_work[k, k] = sigma * sigma
    if ms_scale > 0.0 and x_station > 0.0:
        beta = momentum / math.sqrt(momentum * momentum + mass * mass)
        theta2_per_x = (ms_scale * highland_theta0_rad(momentum, beta, 1.0, x_station)) ** 2 / x_station
        add_scattering_covariance(geom, fit_int, fit_work, n, theta2_per_x, downstream)
    if not _cholesky(fit_work, n):
        return math.inf
    chi2 = math.inf
    for iteration in range(n_iterations + 1):
        if iteration > 0:
            for k in range(n):
                u, s, ax, ay, _ = predict(geom, fit_int[k, 0], params[0], params[1], params[2], params[3], zref)
                fit_work[k, cr] = fit_work[k, cr + 1] - u
                work_j[k, 0], work_j[k, 1], work_j[k, 2], work_j[k, 3] = ax, ay, s * ax, s * ay
        if iteration == n_iterations:
            _forward(fit_work, n, fit_work, cr)
        else:
            # whiten the residuals and the Jacobian's columns (forward substitution, the five
            # independent columns interleaved row by row)
            for i in range(n):
                r = fit_work[i, cr]
                v0, v1, v2, v3 = work_j[i, 0], work_j[i, 1], work_j[i, 2], work_j[i, 3]
                for k in range(i):
                    w = fit_work[i, k]
                    r -= w * fit_work[k, cr]
                    v0 -= w * work_j[k, 0]
                    v1 -= w * work_j[k, 1]
                    v2 -= w * work_j[k, 2]
                    v3 -= w * work_j[k, 3]
                d = fit_work[i, i]
                fit_work[i, cr] = r / d
                work_j[i, 0], work_j[i, 1], work_j[i, 2], work_j[i, 3] = v0 / d, v1 / d, v2 / d, v3 / d
        chi2 = 0.0
        for k in range(n):
            chi2 += fit_work[k, cr] * fit_work[k, cr]
        if iteration == n_iterations:
            break
        # gradient J^T r and normal matrix J^T J: the 14 sums accumulated together (each in the
        # order i = 0 .. n - 1)
        g0 = g1 = g2 = g3 = 0.0
        n00 = n10 = n11 = n20 = n21 = n22 = n30 = n31 = n32 = n33 = 0.0
        for i in range(n):
            j0, j1, j2, j3, r = work_j[i, 0], work_j[i, 1], work_j[i, 2], work_j[i, 3], fit_work[i, cr]
            g0 += j0 * r
            g1 += j1 * r
            g2 += j2 * r
            g3 += j3 * r
            n00 += j0 * j0
            n10 += j1 * j0
            n11 += j1 * j1
            n20 += j2 * j0
            n21 += j2 * j1
            n22 += j2 * j2
            n30 += j3 * j0
            n31 += j3 * j1
            n32 += j3 * j2
            n33 += j3 * j3
        fit_normal[0, 4], fit_normal[1, 4], fit_normal[2, 4], fit_normal[3, 4] = g0, g1, g2, g3
        fit_normal[0, 0], fit_normal[1, 1], fit_normal[2, 2], fit_normal[3, 3] = n00, n11, n22, n33
        fit_normal[1, 0] = fit_normal[0, 1] = n10
        fit_normal[2, 0] = fit_normal[0, 2] = n20
        fit_normal[2, 1] = fit_normal[1, 2] = n21
        fit_normal[3, 0] = fit_normal[0, 3] = n30
        fit_normal[3, 1] = fit_normal[1, 3] = n31
        fit_normal[3, 2] = fit_normal[2, 3] = n32
        if not invert_spd(fit_normal, 4, cov):
            return math.inf
        s0 = s1 = s2 = s3 = 0.0
        for b in range(4):
            g = fit_normal[b, 4]
            s0 += cov[0, b] * g
            s1 += cov[1, b] * g
            s2 += cov[2, b] * g
            s3 += cov[3, b] * g
        params[0] += s0
        params[1] += s1
        params[2] += s2
        params[3] += s3
    return chi2


@njit(cache=True, nogil=True, inline="always")
def stub_mean_u(stub_hit0, stub_hit1, hit_u, k):
    """Mean of the two clusters of stub k (the module's mid-plane measurement)."""
    return 0.5 * (hit_u[stub_hit0[k]] + hit_u[stub_hit1[k]])


@njit(cache=True, nogil=True, inline="always")
def fit_stubs(model, station, stubs, stub_hit0, stub_hit1, hit_u, params, zref, momentum, mass, ms_scale, downstream,
              n_iterations, cov, ws):
    """`fit_line` on a track's stubs (one per module slot of `station`, -1 for none) with the
    work arrays of the workspace `ws` (`make_workspace`); returns (chi2, ndf). It only unpacks
    the model and the workspace for `fit_stub_arrays`."""
    # bool(): the callers pass True or False as constants, and a literal argument would make numba
    # compile the fit once for each value (11 s each from a cold cache)
    return fit_stub_arrays(model.module_geom, model.module_table, model.table_both, model.table_low,
                           model.station_module_first[station], model.station_module_last[station],
                           model.station_x[station], stubs, stub_hit0, stub_hit1, hit_u, params, zref, momentum, mass,
                           ms_scale, bool(downstream), n_iterations, cov, ws[7], ws[8], ws[19], ws[20])


@njit(cache=True, nogil=True)
def fit_stub_arrays(geom, module_table, table_both, table_low, m_first, m_last, x_station, stubs, stub_hit0, stub_hit1,
                    hit_u, params, zref, momentum, mass, ms_scale, downstream, n_iterations, cov, fit_int, fit_work,
                    fit_jac, fit_normal):
    """`fit_stubs` on arrays: the `Model` fields, the station's modules m_first .. m_last - 1
    and x/X0, and the work arrays fit_int (modules x 2), fit_work (modules x (modules + 4)),
    fit_jac (modules x 4) and fit_normal (4 x 5) of `make_workspace`; returns (chi2, ndf).

    A stub's two clusters, moved to the mid-plane along the track (u0 + spacing tan(alpha) / 2,
    u1 - spacing tan(alpha) / 2), agree within one pitch when they come from one particle (each
    binary residual is at most half a pitch). If they do not, the stub paired clusters of two
    particles that crossed the module within the stub window (the CBC logic of
    `fastsim.detector.stubs`): only the cluster closer to the track is used, with the
    single-cluster resolution."""
    measured = fit_int.shape[0] + 3  # the column of fit_work that fit_line reads the measurements from
    n = 0
    for slot in range(m_last - m_first):
        k = stubs[slot]
        if k >= 0:
            g = m_first + slot
            u_pred, _, _, _, tan_alpha = predict(geom, g, params[0], params[1], params[2], params[3], zref)
            half = 0.5 * geom[g, _GEOM_SPACING] * tan_alpha
            mid0 = hit_u[stub_hit0[k]] + half
            mid1 = hit_u[stub_hit1[k]] - half
            fit_int[n, 0] = g
            if abs(mid0 - mid1) <= geom[g, _GEOM_PITCH]:
                fit_work[n, measured] = 0.5 * (mid0 + mid1)
                fit_int[n, 1] = 0
            else:
                fit_work[n, measured] = mid0 if abs(mid0 - u_pred) <= abs(mid1 - u_pred) else mid1
                fit_int[n, 1] = 1
            n += 1
    chi2 = fit_line(geom, module_table, table_both, table_low, x_station, n, params, zref, momentum,
                    mass, ms_scale, downstream, n_iterations, cov, fit_int, fit_work, fit_jac, fit_normal)
    return chi2, n - 4


@njit(cache=True, nogil=True, inline="always")
def _seed_point(model, stub_hit0, stub_hit1, hit_u, g, k, coordinate):
    """(coordinate, z) of stub k of the X (coordinate 0) or Y (1) module g: the point
    centre + u m of its mid-plane, exact because the strips run along the other transverse axis."""
    u = stub_mean_u(stub_hit0, stub_hit1, hit_u, k)
    geom = model.module_geom
    return (geom[g, _GEOM_CENTRE + coordinate] + u * geom[g, _GEOM_MEASURE + coordinate],
            geom[g, _GEOM_CENTRE + 2] + u * geom[g, _GEOM_MEASURE + 2])


@njit(cache=True, nogil=True, inline="always")
def find_station_tracks(model, station, cfg, stub_lo, stub_hi, stub_module, stub_hit0, stub_hit1, hit_u, ws,
                        first_out):
    """Find and fit the tracks of one station from the stubs stub_lo .. stub_hi - 1 of one event
    (any order; those of other stations are ignored).

    Tracks are written from row `first_out` of the workspace's out arrays (ws[9] params
    (x, y, tx, ty) at the station's reference z, ws[10] cov, ws[11] chi2, ws[12] ndf, ws[13] the
    stub of each module slot or -1, ws[14] the momentum estimate); returns their number (0 also
    when a seed module has no stub or more than _MAX_SEED_STUBS). Inlined into the calling kernel
    (passing the model and the workspace to a function costs two atomic reference-count
    operations per array)."""
    seeds = model.station_seeds[station]
    if seeds[0] < 0:
        return 0
    seed_stubs, key, cand_stubs, cand_params, cand_cov, cand_chi2, cand_ndf = ws[0], ws[1], ws[2], ws[3], ws[4], ws[5], ws[6]
    out_params, out_cov, out_chi2, out_ndf, out_stubs, out_momentum = ws[9], ws[10], ws[11], ws[12], ws[13], ws[14]
    lines, line_stubs, counts, cand_nstubs = ws[15], ws[16], ws[17], ws[18]
    geom = model.module_geom
    m_first = model.station_module_first[station]
    n_slots = model.station_module_last[station] - m_first
    zref = model.station_zref[station]
    window, max_slope = cfg[_WINDOW], cfg[_MAX_SLOPE]
    min_stubs, max_chi2 = int(cfg[_MIN_STUBS]), cfg[_MAX_CHI2]
    max_tracks = min(int(cfg[_MAX_TRACKS]), out_params.shape[0] - first_out)
    max_cand = min(int(cfg[_MAX_CAND]), cand_stubs.shape[0])
    max_lines = lines.shape[1]
    # stubs of the four seed modules; the stubs of every module slot in increasing k with their
    # mid-plane u (for the confirmation; a slot with more than _MAX_SLOT_STUBS: scan all stubs)
    slot_n, slot_k, slot_u = ws[23], ws[24], ws[25]
    for q in range(6):
        counts[q] = 0
    for slot in range(n_slots):
        slot_n[slot] = 0
    slot_overflow = False
    for k in range(stub_lo, stub_hi):
        for q in range(4):
            if stub_module[k] == seeds[q]:
                if counts[q] >= _MAX_SEED_STUBS:
                    return 0
                seed_stubs[q, counts[q]] = k
                counts[q] += 1
        slot = stub_module[k] - m_first
        if 0 <= slot < n_slots:
            if slot_n[slot] < _MAX_SLOT_STUBS:
                slot_k[slot, slot_n[slot]] = k
                slot_u[slot, slot_n[slot]] = stub_mean_u(stub_hit0, stub_hit1, hit_u, k)
                slot_n[slot] += 1
            else:
                slot_overflow = True
    if counts[0] == 0 or counts[1] == 0 or counts[2] == 0 or counts[3] == 0:
        return 0
    # projection lines: (position at zref, slope) and their two stubs
    for view in range(2):
        for i in range(counts[2 * view]):
            a, za = _seed_point(model, stub_hit0, stub_hit1, hit_u, seeds[2 * view], seed_stubs[2 * view, i], view)
            for j in range(counts[2 * view + 1]):
                b, zb = _seed_point(model, stub_hit0, stub_hit1, hit_u, seeds[2 * view + 1],
                                    seed_stubs[2 * view + 1, j], view)
                slope = (b - a) / (zb - za)
                n = counts[4 + view]
                if abs(slope) > max_slope or n >= max_lines:
                    continue
                lines[view, n, 0] = a + slope * (zref - za)
                lines[view, n, 1] = slope
                line_stubs[view, n, 0] = seed_stubs[2 * view, i]
                line_stubs[view, n, 1] = seed_stubs[2 * view + 1, j]
                counts[4 + view] = n + 1
    # 3D candidates confirmed by the other modules
    n_cand = 0
    for ix in range(counts[4]):
        for iy in range(counts[5]):
            if n_cand >= max_cand:
                break
            x0, tx = lines[0, ix, 0], lines[0, ix, 1]
            y0, ty = lines[1, iy, 0], lines[1, iy, 1]
            for slot in range(n_slots):
                cand_stubs[n_cand, slot] = -1
            n_stubs = 4
            cand_stubs[n_cand, seeds[0] - m_first] = line_stubs[0, ix, 0]
            cand_stubs[n_cand, seeds[1] - m_first] = line_stubs[0, ix, 1]
            cand_stubs[n_cand, seeds[2] - m_first] = line_stubs[1, iy, 0]
            cand_stubs[n_cand, seeds[3] - m_first] = line_stubs[1, iy, 1]
            for slot in range(n_slots):
                g = m_first + slot
                if g == seeds[0] or g == seeds[1] or g == seeds[2] or g == seeds[3]:
                    continue
                u_pred = predict(geom, g, x0, y0, tx, ty, zref)[0]
                best, best_distance = -1, window
                if slot_overflow:
                    for k in range(stub_lo, stub_hi):
                        if stub_module[k] == g:
                            distance = abs(stub_mean_u(stub_hit0, stub_hit1, hit_u, k) - u_pred)
                            if distance <= best_distance:
                                best, best_distance = k, distance
                else:
                    for idx in range(slot_n[slot]):
                        distance = abs(slot_u[slot, idx] - u_pred)
                        if distance <= best_distance:
                            best, best_distance = slot_k[slot, idx], distance
                if best >= 0:
                    cand_stubs[n_cand, slot] = best
                    n_stubs += 1
            if n_stubs < min_stubs:
                continue
            cand_params[n_cand, 0], cand_params[n_cand, 1] = x0, y0
            cand_params[n_cand, 2], cand_params[n_cand, 3] = tx, ty
            cand_nstubs[n_cand] = n_stubs
            n_cand += 1
    # fit every candidate; rank by (more stubs, smaller chi2/ndf)
    for c in range(n_cand):
        momentum, mass = estimate_momentum(cand_params[c, 2], cand_params[c, 3], cfg[_BEAM_E])
        chi2, ndf = fit_stubs(model, station, cand_stubs[c], stub_hit0, stub_hit1, hit_u, cand_params[c], zref,
                              momentum, mass, cfg[_MS_SCALE], False, int(cfg[_ITER]), cand_cov[c], ws)
        cand_chi2[c] = chi2
        cand_ndf[c] = ndf
        key[c] = key_of(key, cand_nstubs, cand_chi2, cand_ndf, c)
    # ambiguity resolution: each stub used by one track; the set of compatible candidates with the
    # most tracks, then the most stubs, then the smallest total chi2 (exhaustive up to _MAX_EXHAUSTIVE candidates),
    # else greedily best first (a wrong combination can have a better chi2 than a true electron
    # track that lost energy by bremsstrahlung: only the global choice keeps both true tracks)
    n_ok = 0
    for c in range(n_cand):
        if cand_chi2[c] <= max_chi2 * max(cand_ndf[c], 1):
            seed_stubs[0, n_ok] = c  # reuse: the candidates that pass the chi2 cut
            n_ok += 1
            if n_ok >= _MAX_SEED_STUBS:
                break
    chosen = 0
    if n_ok <= _MAX_EXHAUSTIVE:
        for a in range(n_ok):
            mask = 0
            for b in range(n_ok):
                if b != a and _share(cand_stubs, seed_stubs[0, a], seed_stubs[0, b], n_slots):
                    mask |= 1 << b
            line_stubs[0, a, 0] = mask
        chosen = best_compatible_set(n_ok, line_stubs[0, :, 0], seed_stubs[0], cand_nstubs, cand_chi2, max_tracks,
                                     ws[21], ws[22])
    else:
        for _ in range(n_ok):
            pick = -1
            for a in range(n_ok):
                if chosen & (1 << a) or key[seed_stubs[0, a]] == math.inf:
                    continue
                if pick < 0 or key[seed_stubs[0, a]] < key[seed_stubs[0, pick]]:
                    pick = a
            if pick < 0:
                break
            key[seed_stubs[0, pick]] = math.inf
            compatible = True
            for a in range(n_ok):
                if chosen & (1 << a) and _share(cand_stubs, seed_stubs[0, a], seed_stubs[0, pick], n_slots):
                    compatible = False
            if compatible and _popcount(chosen) < max_tracks:
                chosen |= 1 << pick
    # write the chosen tracks, best (most stubs, smallest chi2/ndf) first
    n_out = 0
    for _ in range(n_ok):
        pick = -1
        for a in range(n_ok):
            if chosen & (1 << a) and (pick < 0 or key_of(key, cand_nstubs, cand_chi2, cand_ndf, seed_stubs[0, a])
                                      < key_of(key, cand_nstubs, cand_chi2, cand_ndf, seed_stubs[0, pick])):
                pick = a
        if pick < 0:
            break
        chosen &= ~(1 << pick)
        c = seed_stubs[0, pick]
        row = first_out + n_out
        for a in range(4):
            out_params[row, a] = cand_params[c, a]
            for b in range(4):
                out_cov[row, a, b] = cand_cov[c, a, b]
        out_chi2[row] = cand_chi2[c]
        out_ndf[row] = cand_ndf[c]
        for slot in range(out_stubs.shape[1]):
            out_stubs[row, slot] = cand_stubs[c, slot] if slot < n_slots else -1
        out_momentum[row] = estimate_momentum(cand_params[c, 2], cand_params[c, 3], cfg[_BEAM_E])[0]
        n_out += 1
    return n_out


_MAX_LINES = 256  # projection lines per view and station
_MAX_EXHAUSTIVE = 12  # candidates up to which the ambiguity resolution tries every compatible set
_MAX_SLOT_STUBS = 64  # stubs per module listed for the confirmation (more: every stub is scanned)


@njit(cache=True, nogil=True, inline="always")
def best_compatible_set(n, conflicts, index, n_stubs, chi2, max_tracks, stack_int, stack_total):
    """Bit mask of the best set of mutually compatible candidates 0 .. n - 1 (n <= 62; candidate a
    is row index[a] of n_stubs and chi2, conflicts[a] the bit mask of those it shares a stub with):
    at most max_tracks of them, the most, then the most stubs, then the smallest total chi2 (summed
    in increasing a); among equal sets the smallest bit mask, i.e. the first one met by a scan of
    every subset in increasing order. Depth-first over the compatible sets only (candidate a in or
    out, a = 0, 1, ...), pruned when the best count cannot be reached. Work arrays: stack_int
    (n + 2) x 4, stack_total n + 2."""
    chosen = 0
    best_count, best_stubs, best_chi2 = 0, 0, math.inf
    stack_int[0, 0], stack_int[0, 1], stack_int[0, 2], stack_int[0, 3] = 0, 0, 0, 0  # next a, set, count, stubs
    stack_total[0] = 0.0
    top = 1
    while top > 0:
        top -= 1
        a, subset, count, stubs_used = stack_int[top, 0], stack_int[top, 1], stack_int[top, 2], stack_int[top, 3]
        total = stack_total[top]
        if a == n:
            if count > 0 and (count > best_count or (count == best_count and (
                    stubs_used > best_stubs or (stubs_used == best_stubs and (
                        total < best_chi2 or (total == best_chi2 and subset < chosen)))))):
                best_count, best_stubs, best_chi2, chosen = count, stubs_used, total, subset
            continue
        if count + n - a < best_count:
            continue
        stack_int[top, 0], stack_int[top, 1], stack_int[top, 2], stack_int[top, 3] = a + 1, subset, count, stubs_used
        stack_total[top] = total
        top += 1
        if count < max_tracks and not subset & conflicts[a]:
            c = index[a]
            stack_int[top, 0], stack_int[top, 1], stack_int[top, 2] = a + 1, subset | (1 << a), count + 1
            stack_int[top, 3] = stubs_used + n_stubs[c]
            stack_total[top] = total + chi2[c]
            top += 1
    return chosen


@njit(cache=True, nogil=True, inline="always")
def key_of(key, cand_nstubs, cand_chi2, cand_ndf, c):
    """Ranking key of candidate c: more stubs first, then smaller chi2/ndf."""
    chi2 = cand_chi2[c]
    return -1e6 * cand_nstubs[c] + (chi2 / max(cand_ndf[c], 1) if chi2 < 1e5 else 1e5)


@njit(cache=True, nogil=True, inline="always")
def _share(cand_stubs, a, b, n_slots):
    """True if candidates a and b use a common stub."""
    for slot in range(n_slots):
        if cand_stubs[a, slot] >= 0 and cand_stubs[a, slot] == cand_stubs[b, slot]:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _popcount(mask):
    n = 0
    while mask:
        n += mask & 1
        mask >>= 1
    return n


@njit(cache=True, nogil=True)
def make_workspace(max_modules, max_candidates, max_tracks):
    """The scratch arrays of `find_station_tracks` and `fit_stubs` (one tuple per thread), with
    out arrays for max_tracks tracks."""
    n = max(max_modules, 1)
    return (np.empty((4, _MAX_SEED_STUBS), np.int64), np.empty(max_candidates),                      # 0 1
            np.empty((max_candidates, n), np.int64), np.empty((max_candidates, 4)),                   # 2 3
            np.empty((max_candidates, 4, 4)), np.empty(max_candidates), np.empty(max_candidates, np.int64),  # 4-6
            np.empty((n, 2), np.int64), np.empty((n, n + 4)),  # 7 8: fit_int, fit_work (fit_stub_arrays)
            np.empty((max_tracks, 4)), np.empty((max_tracks, 4, 4)), np.empty(max_tracks),            # 9-11 out
            np.empty(max_tracks, np.int64), np.full((max_tracks, n), -1, np.int64), np.empty(max_tracks),  # 12-14
            np.empty((2, _MAX_LINES, 2)), np.empty((2, _MAX_LINES, 2), np.int64),                     # 15 16
            np.zeros(6, np.int64), np.empty(max_candidates, np.int64),                                # 17 18
            np.empty((n, 4)), np.empty((4, 5)),                                     # 19 20: fit_jac, fit_normal
            np.empty((_MAX_EXHAUSTIVE + 2, 4), np.int64), np.empty(_MAX_EXHAUSTIVE + 2),  # 21 22: ambiguity search
            np.zeros(n, np.int64), np.empty((n, _MAX_SLOT_STUBS), np.int64),              # 23 24: stubs per slot
            np.empty((n, _MAX_SLOT_STUBS)))                                               # 25: their u


@njit(cache=True, nogil=True, inline="always")
def station_stub_count(model, station, lo, hi, stub_module):
    """Number of the stubs lo .. hi - 1 (one event, any order) in the modules of `station`."""
    m_lo, m_hi = model.station_module_first[station], model.station_module_last[station]
    n = 0
    for k in range(lo, hi):
        n += m_lo <= stub_module[k] < m_hi
    return n


@njit(cache=True, nogil=True, inline="always")
def track_truth(n_slots, stubs, stub_hit0, stub_hit1, hit_particle):
    """(particle index, number of hits) of the particle that made most of a track's hits
    (stubs: the track's stub per module slot, -1 for none, n_slots: the station's modules); -1
    for noise."""
    best, best_count = -1, 0
    for slot in range(n_slots):
        for side in range(2):
            k = stubs[slot]
            if k < 0:
                continue
            p = hit_particle[stub_hit0[k] if side == 0 else stub_hit1[k]]
            count = 0
            for slot2 in range(n_slots):
                k2 = stubs[slot2]
                if k2 >= 0:
                    count += (hit_particle[stub_hit0[k2]] == p) + (hit_particle[stub_hit1[k2]] == p)
            if count > best_count:
                best, best_count = p, count
    return best, best_count


@njit(cache=True, nogil=True)  # not parallel: ~50 ns an event, and a parallel kernel compiles 4x longer
def _track_bounds(model, cfg, stub_offsets, stub_module, bounds):
    """Most tracks each event can have: per station, min(max_tracks, stubs // min_stubs), as a
    track holds at least min_stubs stubs and no stub is in two tracks (0 below four stubs)."""
    per_track = int(cfg[_MIN_STUBS])
    max_tracks = int(cfg[_MAX_TRACKS])
    for i in range(stub_offsets.size - 1):
        bound = 0
        for station in range(model.station_seeds.shape[0]):
            n = station_stub_count(model, station, stub_offsets[i], stub_offsets[i + 1], stub_module)
            if n >= 4:
                bound += min(max_tracks, n // per_track)
        bounds[i] = bound


@njit(parallel=True, cache=True)
def _find_tracks_kernel(model, cfg, max_modules, stub_offsets, stub_module, stub_hit0, stub_hit1, hit_u, hit_particle,
                        slot_offsets, out_station, out_params, out_cov, out_chi2, out_ndf, out_nstubs, out_particle,
                        out_particle_hits, counts):
    """The tracks of event i into rows slot_offsets[i] onwards (room for its bound from
    `_track_bounds`), their number into counts[i]."""
    n_events = stub_offsets.size - 1
    n_stations = model.station_seeds.shape[0]
    n_blocks = min(n_events, 256)
    for block in prange(n_blocks):
        ws = make_workspace(max_modules, int(cfg[_MAX_CAND]), int(cfg[_MAX_TRACKS]))
        for i in range(block * n_events // n_blocks, (block + 1) * n_events // n_blocks):
            total = 0
            lo, hi = stub_offsets[i], stub_offsets[i + 1]
            for station in range(n_stations):
                if station_stub_count(model, station, lo, hi, stub_module) < 4:
                    continue
                n = find_station_tracks(model, station, cfg, lo, hi, stub_module, stub_hit0, stub_hit1, hit_u, ws, 0)
                n_slots = model.station_module_last[station] - model.station_module_first[station]
                for t in range(n):
                    row = slot_offsets[i] + total + t
                    if row >= slot_offsets[i + 1]:  # cannot happen (see _track_bounds); counts[i] tells
                        break
                    out_station[row] = station
                    for a in range(4):
                        out_params[row, a] = ws[9][t, a]
                        for b in range(4):
                            out_cov[row, a, b] = ws[10][t, a, b]
                    out_chi2[row] = ws[11][t]
                    out_ndf[row] = ws[12][t]
                    n_stubs = 0
                    for slot in range(max_modules):
                        n_stubs += ws[13][t, slot] >= 0
                    out_nstubs[row] = n_stubs
                    out_particle[row], out_particle_hits[row] = track_truth(n_slots, ws[13][t], stub_hit0,
                                                                             stub_hit1, hit_particle)
                total += n
            counts[i] = total


@dataclass(frozen=True, eq=False)
class Tracks:
    """Tracks of a chunk, one row per track: `event` (row of the chunk), `station`, `params`
    (x_cm, y_cm, tx, ty at the station's reference z: its target centre), `cov` (4x4), `chi2`,
    `ndf`, `n_stubs`, `particle` (truth particle index of the majority of the hits: 0 the
    incoming muon, k >= 1 the event's truth particle k - 1, -1 noise) and `particle_hits`."""

    event: np.ndarray
    station: np.ndarray
    params: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    ndf: np.ndarray
    n_stubs: np.ndarray
    particle: np.ndarray
    particle_hits: np.ndarray
    zref_cm: np.ndarray

    def __len__(self) -> int:
        return int(self.event.size)


def find_tracks(hits, stubs, geometry: Geometry | TrackingModel, settings: TrackingSettings = TrackingSettings()) -> Tracks:
    """Every track of every station of a chunk (see the module docstring).

    Parameters
    ----------
    hits, stubs : fastsim.detector.digitization.StripHits, fastsim.detector.stubs.Stubs
        The chunk's hits and stubs (`SimulatedChunk.hits`, `.stubs`).
    geometry : Geometry or TrackingModel
        The reconstruction geometry (its nominal version is used).
    settings : TrackingSettings

    Returns
    -------
    Tracks
    """
    tm = geometry if isinstance(geometry, TrackingModel) else TrackingModel.from_geometry(geometry, settings)
    check_hits_match(hits, stubs, tm)
    cfg = settings.kernel_array()
    n = hits.offsets.size - 1
    args = (tm.model, cfg, tm.max_modules_per_station, stubs.offsets, stubs.module, stubs.hit0, stubs.hit1,
            hits.u_cm, hits.particle_index.astype(np.int64))
    # one pass: each event writes into rows reserved for its most possible tracks, then the rows
    # used are gathered (half the time of counting the tracks first and finding them again)
    bounds = np.empty(n, np.int64)
    _track_bounds(tm.model, cfg, stubs.offsets, stubs.module, bounds)
    slot_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(bounds, out=slot_offsets[1:])
    m_slots = int(slot_offsets[-1])
    station, ndf, nst, particle, particle_hits = (np.empty(m_slots, np.int64) for _ in range(5))
    params, cov, chi2 = np.empty((m_slots, 4)), np.empty((m_slots, 4, 4)), np.empty(m_slots)
    counts = np.zeros(n, np.int64)
    _find_tracks_kernel(*args, slot_offsets, station, params, cov, chi2, ndf, nst, particle, particle_hits, counts)
    if np.any(counts > bounds):
        raise RuntimeError("find_tracks: an event has more tracks than its stubs allow (a bug: please report it)")
    event = np.repeat(np.arange(n), counts)
    rows = slot_offsets[event] + np.arange(event.size) - np.repeat(np.cumsum(counts) - counts, counts)
    station, params, cov, chi2, ndf, nst, particle, particle_hits = (
        column[rows] for column in (station, params, cov, chi2, ndf, nst, particle, particle_hits))
    return Tracks(event, station, params, cov, chi2, ndf, nst, particle, particle_hits, tm.model.station_zref[station])


def check_hits_match(hits, stubs, tm: TrackingModel):
    """ValueError unless the hits and stubs can come from the geometry of `tm`: every sensor id
    below its sensor count and every stub's module the module of its clusters' sensors."""
    name = tm.geometry.name
    if len(hits) and int(hits.sensor_id.max()) >= tm.n_sensors:
        raise ValueError(f"the hits have sensor ids up to {int(hits.sensor_id.max())} but the reconstruction geometry "
                         f"{name!r} has {tm.n_sensors} sensors ({tm.n_modules} modules): reconstruct with the geometry "
                         "the chunk was simulated with (its nominal version)")
    if len(stubs):
        if int(stubs.module.max()) >= tm.n_modules:
            raise ValueError(f"the stubs have module indices up to {int(stubs.module.max())} but the reconstruction "
                             f"geometry {name!r} has {tm.n_modules} modules: reconstruct with the geometry the chunk "
                             "was simulated with")
        module_of_hits = tm.model.sensor_module[hits.sensor_id[stubs.hit0]]
        module_of_hits1 = tm.model.sensor_module[hits.sensor_id[stubs.hit1]]
        bad = np.flatnonzero((module_of_hits != stubs.module) | (module_of_hits1 != stubs.module))
        if bad.size:
            raise ValueError(f"the module count does not match: stub {bad[0]} is in module {stubs.module[bad[0]]} "
                             f"but its clusters are in module {module_of_hits[bad[0]]} of the reconstruction geometry "
                             f"{name!r} ({tm.n_modules} modules, {tm.n_sensors} sensors); reconstruct with the "
                             "geometry the chunk was simulated with")
