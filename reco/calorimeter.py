"""Calorimeter reconstruction: the cluster of the crystal array and where the tracks point to it.

What to use when:

- `calorimeter_columns(energies, calorimeter, tracks, track_z_cm)` gives the RecoEvents columns
  of the calorimeter (`reconstruct` calls it when the chunk has crystal energies):
  calo_energy_gev, calo_x_cm, calo_y_cm (the cluster) and calo_x_1_cm, calo_y_1_cm, calo_x_2_cm,
  calo_y_2_cm (outgoing tracks 1 and 2 extrapolated to the front face), all global, in cm.

The cluster: the crystal with the most energy is the seed; the cluster is the 3x3 block around
it (clipped at the array's edges). Its energy is the block's sum, its position the
logarithmically weighted mean of the crystal centres, w = max(0, w0 + ln(E_crystal / E_cluster))
with w0 = 4 (Awes et al., NIM A311 (1992) 130), which keeps the position unbiased across a crystal
where the linear mean is pulled to the crystal centres. No seed above zero: NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LOG_WEIGHT_W0 = 4.0


@njit(parallel=True, cache=True)
def _clusters(energies, n_x, n_y, size, w0, out):
    half_x, half_y = 0.5 * n_x * size, 0.5 * n_y * size
    for i in prange(energies.shape[0]):
        seed = 0
        for c in range(1, n_x * n_y):
            if energies[i, c] > energies[i, seed]:
                seed = c
        out[i, 0], out[i, 1], out[i, 2] = math.nan, math.nan, math.nan
        if not energies[i, seed] > 0.0:
            continue
        sx, sy = seed % n_x, seed // n_x
        total = 0.0
        for iy in range(max(sy - 1, 0), min(sy + 2, n_y)):
            for ix in range(max(sx - 1, 0), min(sx + 2, n_x)):
                total += max(energies[i, iy * n_x + ix], 0.0)
        sum_w = 0.0
        x = 0.0
        y = 0.0
        for iy in range(max(sy - 1, 0), min(sy + 2, n_y)):
            for ix in range(max(sx - 1, 0), min(sx + 2, n_x)):
                e = energies[i, iy * n_x + ix]
                if e <= 0.0:
                    continue
                w = max(0.0, w0 + math.log(e / total))
                sum_w += w
                x += w * ((ix + 0.5) * size - half_x)
                y += w * ((iy + 0.5) * size - half_y)
        out[i, 0] = total
        out[i, 1] = x / sum_w
        out[i, 2] = y / sum_w


def calorimeter_columns(energies, calorimeter, tracks, track_z_cm) -> dict:
    """The calorimeter columns of RecoEvents (module docstring).

    Parameters
    ----------
    energies : ndarray (n, n_x * n_y)
        Crystal energies (GeV), crystal c = iy * n_x + ix.
    calorimeter : fastsim.detector.geometry.Calorimeter
        The nominal calorimeter.
    tracks : ndarray (n, 2, 4)
        (x, y, tx, ty) of outgoing tracks 1 and 2 at z = track_z_cm (NaN where missing).
    track_z_cm : ndarray (n,)
        Reference z of the tracks (cm).
    """
    c = calorimeter
    energies = np.ascontiguousarray(energies, dtype=np.float64)
    n = energies.shape[0]
    if energies.shape != (n, c.n_x * c.n_y):
        raise ValueError(f"calorimeter energies of shape {energies.shape} do not match the calorimeter's "
                         f"{c.n_x} x {c.n_y} crystals")
    cluster = np.empty((n, 3))
    _clusters(energies, c.n_x, c.n_y, float(c.crystal_size_cm), LOG_WEIGHT_W0, cluster)
    columns = {"calo_energy_gev": cluster[:, 0], "calo_x_cm": cluster[:, 1] + c.x_cm, "calo_y_cm": cluster[:, 2] + c.y_cm}
    lever = c.z_cm - np.asarray(track_z_cm, dtype=np.float64)
    for k in (1, 2):
        columns[f"calo_x_{k}_cm"] = tracks[:, k - 1, 0] + tracks[:, k - 1, 2] * lever
        columns[f"calo_y_{k}_cm"] = tracks[:, k - 1, 1] + tracks[:, k - 1, 3] * lever
    return columns
