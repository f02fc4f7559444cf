"""Vertex fit: the incoming muon and the outgoing tracks fitted to a common point in the target.

What to use when:

- `reco.reconstruct.reconstruct` calls `fit_vertex` for every event; use `VertexSettings` there
  to change the fit (iterations, scattering scale).
- `fit_vertex` is the numba kernel for one event, callable from other kernels.

Model. Track i (x, y, tx, ty at its reference z, 4x4 covariance) is a straight line; the fit
finds the point V = (x_v, y_v, z_v) that minimizes

    chi2 = sum_i r_i^T W_i r_i,   r_i = (x_i + tx_i (z_v - z_i) - x_v,  y_i + ty_i (z_v - z_i) - y_v)

with W_i^-1 the 2x2 position covariance of the track extrapolated to z_v (slope errors times the
distance, position-slope correlation included) plus the multiple scattering in the part of the
target the particle crossed between the vertex and the tracker: from the vertex to the downstream
face for an outgoing track, from the upstream face to the vertex for the incoming muon. Over a
thickness L the straight extrapolation from the tracker side misses the true position at the
vertex by the scattering offset minus L times the scattering angle, whose variance per projection
is theta0^2 L^2 (1/3 + 1 - 2 (sqrt(3)/2)(1/sqrt(3))) = theta0^2 L^2 / 3 (PDG RPP, "Passage of
particles through matter": offset rms L theta0 / sqrt(3), correlation sqrt(3)/2 with the angle).
theta0 follows the simulation (`fastsim.detector.transport`): Highland on the whole station's
x/X0 shared in proportion to L / X0. Momenta are the trackers' estimates (`reco.tracking`:
the nominal beam for the incoming muon, the elastic relation for the outgoing tracks).

The fit is Gauss-Newton in (x_v, y_v, z_v) from the target centre, the weights re-evaluated at
every iteration; ndf = 2 n_tracks - 3. The elastic kinematic constraint on the track slopes is
the separate fit of `reco.kinematic`, switched on by ``elastic_fit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from numba import njit

from fastsim.config import check_integer, check_range
from fastsim.detector.interactions import highland_theta0_rad


@dataclass(frozen=True)
class VertexSettings:
    """Vertex fit options.

    Parameters
    ----------
    ms_scale : float
        Scale of the multiple scattering inside the target in the weights [1; 0 = none].
    iterations : int
        Gauss-Newton iterations from the target centre [4].
    elastic_fit : bool
        Also fit the track slopes with the elastic constraints (`reco.kinematic`) [False].
    """

    ms_scale: float = 1.0
    iterations: int = 4
    elastic_fit: bool = False

    def __post_init__(self):
        check_range("ms_scale", self.ms_scale, 0.0, 10.0)
        check_integer("iterations", self.iterations, 1, 50)
        if not isinstance(self.elastic_fit, bool):
            raise ValueError(f"elastic_fit = {self.elastic_fit!r} must be true or false")


@njit(cache=True, nogil=True, inline="always")
def target_scattering_angle_variance(length_cm, x0_cm, x_station, momentum_gev, mass_gev, ms_scale):
    """Variance (rad^2, per projection) of the scattering angle over length_cm of target:
    theta0^2 = (ms_scale theta0_Highland(x_station))^2 (L / X0) / x_station."""
    if length_cm <= 0.0 or ms_scale == 0.0 or x_station <= 0.0:
        return 0.0
    beta = momentum_gev / math.sqrt(momentum_gev * momentum_gev + mass_gev * mass_gev)
    return (ms_scale * highland_theta0_rad(momentum_gev, beta, 1.0, x_station)) ** 2 * (length_cm / x0_cm) / x_station


@njit(cache=True, nogil=True, inline="always")
def target_scattering_variance(length_cm, x0_cm, x_station, momentum_gev, mass_gev, ms_scale):
    """Variance (cm^2, per projection) of the back-extrapolated position over length_cm of target:
    theta0^2 L^2 / 3 (`target_scattering_angle_variance`)."""
    theta2 = target_scattering_angle_variance(length_cm, x0_cm, x_station, momentum_gev, mass_gev, ms_scale)
    return theta2 * length_cm * length_cm / 3.0


@njit(cache=True, nogil=True)
def fit_vertex(n_tracks, params, cov, zref, incoming, momentum, mass, target_front, target_back, target_x0, x_station,
               ms_scale, iterations, vertex, vertex_cov, work):
    """Common point of tracks 0 .. n_tracks - 1 (params[i] = x, y, tx, ty at zref[i], cov[i]
    4x4; incoming[i] True for the incoming muon). Writes vertex (3) and vertex_cov (3x3) and
    returns chi2 (nan if the normal matrix is singular); work: 4 x 3 scratch (no allocation per
    event). See the module docstring."""
    z = 0.5 * (target_front + target_back)
    x = 0.0
    y = 0.0
    for i in range(n_tracks):
        x += params[i, 0] + params[i, 2] * (z - zref[i])
        y += params[i, 1] + params[i, 3] * (z - zref[i])
    vertex[0], vertex[1], vertex[2] = x / n_tracks, y / n_tracks, z
    normal, gradient = work[:3], work[3]
    chi2 = math.nan
    for iteration in range(iterations + 1):
        for a in range(3):
            gradient[a] = 0.0
            for b in range(3):
                normal[a, b] = 0.0
        chi2 = 0.0
        for i in range(n_tracks):
            d = vertex[2] - zref[i]
            tx, ty = params[i, 2], params[i, 3]
            rx = params[i, 0] + tx * d - vertex[0]
            ry = params[i, 1] + ty * d - vertex[1]
            c = cov[i]
            cxx = c[0, 0] + 2.0 * d * c[0, 2] + d * d * c[2, 2]
            cyy = c[1, 1] + 2.0 * d * c[1, 3] + d * d * c[3, 3]
            cxy = c[0, 1] + d * (c[0, 3] + c[1, 2]) + d * d * c[2, 3]
            if incoming[i]:
                length = min(max(vertex[2] - target_front, 0.0), target_back - target_front)
            else:
                length = min(max(target_back - vertex[2], 0.0), target_back - target_front)
            ms = target_scattering_variance(length, target_x0, x_station, momentum[i], mass[i], ms_scale)
            cxx += ms
            cyy += ms
            det = cxx * cyy - cxy * cxy
            if not det > 0.0:
                return math.nan
            wxx, wyy, wxy = cyy / det, cxx / det, -cxy / det
            chi2 += rx * (wxx * rx + wxy * ry) + ry * (wxy * rx + wyy * ry)
            # r = p_i(z_v) - (x_v, y_v): dr/dx_v = (-1, 0), dr/dy_v = (0, -1), dr/dz_v = (tx, ty)
            jx0, jx1, jx2 = -1.0, 0.0, tx
            jy0, jy1, jy2 = 0.0, -1.0, ty
            jx = (jx0, jx1, jx2)
            jy = (jy0, jy1, jy2)
            for a in range(3):
                wja_x = wxx * jx[a] + wxy * jy[a]
                wja_y = wxy * jx[a] + wyy * jy[a]
                gradient[a] += wja_x * rx + wja_y * ry
                for b in range(3):
                    normal[a, b] += wja_x * jx[b] + wja_y * jy[b]
        if not _invert3(normal, vertex_cov):
            return math.nan
        if iteration == iterations:
            break
        for a in range(3):
            step = 0.0
            for b in range(3):
                step -= vertex_cov[a, b] * gradient[b]
            vertex[a] += step
    return chi2


@njit(cache=True, nogil=True, inline="always")
def _invert3(a, out):
    """out = inverse of the 3x3 matrix a (cofactors); False if singular."""
    c00 = a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1]
    c01 = a[1, 2] * a[2, 0] - a[1, 0] * a[2, 2]
    c02 = a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0]
    det = a[0, 0] * c00 + a[0, 1] * c01 + a[0, 2] * c02
    if not abs(det) > 0.0:
        return False
    out[0, 0] = c00 / det
    out[1, 0] = c01 / det
    out[2, 0] = c02 / det
    out[0, 1] = (a[0, 2] * a[2, 1] - a[0, 1] * a[2, 2]) / det
    out[1, 1] = (a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0]) / det
    out[2, 1] = (a[0, 1] * a[2, 0] - a[0, 0] * a[2, 1]) / det
    out[0, 2] = (a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1]) / det
    out[1, 2] = (a[0, 2] * a[1, 0] - a[0, 0] * a[1, 2]) / det
    out[2, 2] = (a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]) / det
    return True
