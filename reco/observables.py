"""Event observables of MUonE from the identified electron and muon: acoplanarity and elasticity.

What to use when:

- `acoplanarity_rad(phi_e, phi_mu)` and `elasticity_rad(theta_e, theta_mu, beam_energy_gev)` on
  numpy arrays (any shape);
- the `*_kernel` functions are the same formulas as scalar numba functions, for event kernels
  (`reco.pid`, `reco.parametric`).

Definitions (MUonE test-run analysis, REFERENCE.md "Test-run analysis"):

    A_phi = pi - |phi_e - phi_mu|     with both azimuths first reduced to [-pi, pi), so A_phi is
                                      in [-pi, pi] and 0 for a coplanar (back-to-back) pair;
    elasticity = theta_mu - theta_mu_elastic(theta_e)   at the nominal beam energy, with the
                                      elastic curve of `fastsim.physics.kinematics`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, vectorize

from fastsim.physics.kinematics import ElasticKinematics, elastic_curve_kernel

_TWO_PI = 2.0 * math.pi


@njit(cache=True, nogil=True)
def wrap_angle_kernel(phi):
    """phi reduced to [-pi, pi)."""
    return phi - _TWO_PI * math.floor((phi + math.pi) / _TWO_PI)


@njit(cache=True, nogil=True)
def acoplanarity_kernel(phi_e, phi_mu):
    """A_phi = pi - |phi_e - phi_mu| with both azimuths in [-pi, pi) (rad)."""
    return math.pi - abs(wrap_angle_kernel(phi_e) - wrap_angle_kernel(phi_mu))


@njit(cache=True, nogil=True)
def elastic_theta_mu_kernel(beam_energy_gev, theta_e_rad):
    """The elastic curve theta_mu(theta_e) (rad) for 0 <= theta_e < pi/2, NaN otherwise."""
    return elastic_curve_kernel(beam_energy_gev, theta_e_rad)[0]


@njit(cache=True, nogil=True)
def elasticity_kernel(beam_energy_gev, theta_e_rad, theta_mu_rad):
    """theta_mu - theta_mu_elastic(theta_e) (rad); NaN if theta_e is outside [0, pi/2)."""
    return theta_mu_rad - elastic_theta_mu_kernel(beam_energy_gev, theta_e_rad)


@vectorize(["float64(float64, float64)"], cache=True)
def _acoplanarity_ufunc(phi_e, phi_mu):
    return acoplanarity_kernel(phi_e, phi_mu)


@vectorize(["float64(float64, float64, float64)"], cache=True)
def _elasticity_ufunc(beam_energy_gev, theta_e_rad, theta_mu_rad):
    return elasticity_kernel(beam_energy_gev, theta_e_rad, theta_mu_rad)


def acoplanarity_rad(phi_e_rad, phi_mu_rad):
    """Acoplanarity A_phi = pi - |phi_e - phi_mu| in [-pi, pi] (see the module docstring)."""
    return _acoplanarity_ufunc(np.asarray(phi_e_rad, dtype=np.float64), np.asarray(phi_mu_rad, dtype=np.float64))


def elasticity_rad(theta_e_rad, theta_mu_rad, beam_energy_gev):
    """Distance from the elastic curve, theta_mu - theta_mu_elastic(theta_e) (rad).

    Parameters
    ----------
    theta_e_rad, theta_mu_rad : array_like
        Electron and muon polar angles with respect to the incoming muon.
    beam_energy_gev : float
        The nominal beam energy of the elastic curve (validated by `ElasticKinematics`).

    Returns
    -------
    ndarray
        NaN where theta_e is not in [0, pi/2) or an angle is NaN.
    """
    energy = ElasticKinematics(beam_energy_gev).beam_energy_gev
    return _elasticity_ufunc(energy, np.asarray(theta_e_rad, dtype=np.float64),
                             np.asarray(theta_mu_rad, dtype=np.float64))
