"""Calorimeter: lateral profile, energy resolution, muon deposits, impacts from the transport."""

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import integrate, stats

from fastsim.detector.calorimeter import (
    IMPACT_MUON,
    IMPACT_SHOWER,
    PROFILE_RADIUS_PER_MOLIERE,
    CalorimeterResponse,
    landau_width_gev,
    lateral_fraction,
    mip_most_probable_gev,
)
from fastsim.detector.geometry import KIND_SENSOR, KIND_TARGET, Calorimeter, load_geometry
from fastsim.detector.transport import DetectorSimulation, SimulationSettings, geometry_targets
from fastsim.generator.generate import Generator, GeneratorConfig
from fastsim.units import PDG_ELECTRON, PDG_MUON

CALORIMETER = Calorimeter(z_cm=300.0)


def _profile_density(x, y, r):
    """The GFlash radial profile 2 rho R^2 / (rho^2 + R^2)^2 as a density in the plane."""
    return r * r / (math.pi * (x * x + y * y + r * r) ** 2)


@pytest.mark.parametrize("box", [(-1.4, 1.4, -1.4, 1.4), (0.3, 3.1, -2.0, 0.5), (-7.1, -4.2, 1.0, 9.0)])
def test_lateral_fraction_is_the_integral_of_the_profile(box):
    r = 0.65
    x1, x2, y1, y2 = box
    expected = integrate.dblquad(lambda y, x: _profile_density(x, y, r), x1, x2, y1, y2, epsabs=1e-12)[0]
    assert lateral_fraction(x1, x2, y1, y2, r) == pytest.approx(expected, abs=1e-10)


def test_profile_contains_what_the_pdg_states():
    moliere = CALORIMETER.moliere_radius_cm
    r = PROFILE_RADIUS_PER_MOLIERE * moliere
    within = lambda radius: integrate.quad(lambda rho: 2 * rho * r * r / (rho * rho + r * r) ** 2, 0, radius)[0]
    assert within(moliere) == pytest.approx(0.90, abs=1e-6)
    assert within(3.5 * moliere) > 0.99
    assert lateral_fraction(-1e5, 1e5, -1e5, 1e5, r) == pytest.approx(1.0, abs=1e-9)


def test_mip_most_probable_value_and_width():
    # PDG: xi = K/2 <Z/A> rho x
    xi = landau_width_gev("PbWO4", 22.0)
    assert xi == pytest.approx(0.5 * 0.307075e-3 * 0.41315 * 8.30 * 22.0, rel=1e-12)
    # the measured most probable loss in 300 um of silicon: 82 keV at minimum ionization, a few %
    # more on the Fermi plateau (PDG review, fig. "straggling functions in silicon")
    assert 0.082e-3 < mip_most_probable_gev("Si", 0.03) < 0.088e-3
    # Delta_p grows as x (ln x + const): per cm it rises with the thickness
    mpv = mip_most_probable_gev("PbWO4", 22.0)
    assert mip_most_probable_gev("PbWO4", 44.0) / 44.0 > mpv / 22.0
    assert mpv == pytest.approx(xi * (math.log(2 * 0.51099895e6 * xi * 1e9 / (28.816 ** 2 * 8.30 * 0.41315)) + 0.2),
                                rel=1e-12)


def _shower_sample(energy_gev, n, x_cm=0.0, y_cm=0.0, calorimeter=CALORIMETER, seed=3, kind=IMPACT_SHOWER):
    impacts = np.zeros((n, 3, 4))
    impacts[:, 0] = (x_cm, y_cm, energy_gev, kind)
    return CalorimeterResponse(calorimeter).deposit(seed, np.arange(n), impacts)


@pytest.mark.parametrize("energy", [2.0, 20.0, 100.0])
def test_energy_resolution(energy):
    n = 40_000
    total = _shower_sample(energy, n).sum(axis=1)
    c = CALORIMETER
    half = 0.5 * c.n_x * c.crystal_size_cm
    contained = energy * lateral_fraction(-half, half, -half, half, PROFILE_RADIUS_PER_MOLIERE * c.moliere_radius_cm)
    sigma = math.sqrt(c.stochastic_term_gev_sqrt ** 2 * contained + (c.constant_term * contained) ** 2
                      + c.n_x * c.n_y * c.noise_per_crystal_gev ** 2)
    assert total.mean() == pytest.approx(contained, abs=5 * sigma / math.sqrt(n))
    assert total.std() == pytest.approx(sigma, rel=5 / math.sqrt(2 * n))


def test_muon_deposit_is_moyal_in_the_crystal_it_enters():
    quiet = replace(CALORIMETER, noise_per_crystal_gev=0.0)
    n = 20_000
    energies = _shower_sample(160.0, n, x_cm=1.0, y_cm=-3.0, calorimeter=quiet, kind=IMPACT_MUON)
    crystal = 1 * quiet.n_x + 2  # x = 1 cm in column 2, y = -3 cm in row 1
    assert np.count_nonzero(np.delete(energies, crystal, axis=1)) == 0
    mpv, xi = mip_most_probable_gev("PbWO4", 22.0), landau_width_gev("PbWO4", 22.0)
    assert stats.kstest(energies[:, crystal], stats.moyal(loc=mpv, scale=xi).cdf).pvalue > 1e-3


def test_deposits_depend_only_on_the_event():
    impacts = np.zeros((50, 3, 4))
    impacts[:, 0] = (0.5, -0.7, 30.0, IMPACT_SHOWER)
    impacts[:, 1] = (-1.0, 0.2, 160.0, IMPACT_MUON)
    response = CalorimeterResponse(CALORIMETER)
    whole = response.deposit(7, np.arange(100, 150), impacts)
    assert np.array_equal(response.deposit(7, np.arange(120, 150), impacts[20:]), whole[20:])
    assert not np.array_equal(response.deposit(8, np.arange(100, 150), impacts), whole)


def test_bad_impacts_and_calorimeter_keys():
    with pytest.raises(ValueError, match="impacts of shape"):
        CalorimeterResponse(CALORIMETER).deposit(1, np.arange(3), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="noise_per_crystal_gev"):
        Calorimeter(z_cm=300.0, noise_per_crystal_gev=-0.1)
    with pytest.raises(ValueError, match="moliere_radius_cm"):
        Calorimeter(z_cm=300.0, moliere_radius_cm=0.0)


@pytest.fixture(scope="module")
def straight_run():
    """run2025 without scattering and bremsstrahlung: the particles reach the calorimeter on
    straight lines from the vertex."""
    geometry = load_geometry("run2025")
    truth = Generator(GeneratorConfig(targets=geometry_targets(geometry)), seed=4).chunk(0, 5000)
    settings = SimulationSettings(ms_scale=0.0, bremsstrahlung=False)
    return geometry, truth, DetectorSimulation(geometry, settings, seed=4).simulate(truth)


def test_impacts_are_the_straight_line_from_the_vertex(straight_run):
    geometry, truth, chunk = straight_run
    calo_z = geometry.calorimeter.z_cm
    p = truth.particles
    checked = 0
    for j, code in ((0, PDG_MUON), (1, PDG_ELECTRON)):
        rows = truth.particle_offsets[:-1] + j
        assert np.all(np.abs(p["pdg"][rows]) == code)
        vertex = chunk.true_vertex_cm
        scale = (calo_z - vertex[:, 2]) / p["pz_gev"][rows]
        x = vertex[:, 0] + p["px_gev"][rows] * scale
        y = vertex[:, 1] + p["py_gev"][rows] * scale
        hit = chunk.calorimeter_impacts[:, j, 3] != 0
        assert hit.mean() > 0.99
        np.testing.assert_allclose(chunk.calorimeter_impacts[hit, j, 0], x[hit], atol=1e-8)
        np.testing.assert_allclose(chunk.calorimeter_impacts[hit, j, 1], y[hit], atol=1e-8)
        expected_kind = IMPACT_MUON if code == PDG_MUON else IMPACT_SHOWER
        assert np.all(chunk.calorimeter_impacts[hit, j, 3] == expected_kind)
        checked += hit.sum()
    electrons = truth.particle_offsets[:-1] + 1
    hit = chunk.calorimeter_impacts[:, 1, 3] != 0
    np.testing.assert_allclose(chunk.calorimeter_impacts[hit, 1, 2], p["e_gev"][electrons][hit], rtol=1e-12)
    assert checked > 9000
    assert chunk.calorimeter_energy_gev.shape == (len(truth), 25)


def _muon_shift_variance_cm2(geometry, truth, true_vertex_cm):
    """Expected variance of the muon's calorimeter impact per projection, event by event, from
    the Gaussian model: every scatterer it meets (the previous station's sensors and target, the
    target before and after the vertex, the vertex station's sensors, each later station lumped
    over its length) adds theta0^2 (l^2 / 3 + l D + D^2) for l cm of material ending D cm before
    the calorimeter (l = 0 for a sensor). A deflection of the incoming muon turns the outgoing
    one with it. theta0^2 is Highland's of the scatterer's station times the layer's share."""
    from fastsim.detector.interactions import highland_theta0_rad
    from fastsim.units import MUON_MASS_GEV

    layers, calo = geometry.layers(), geometry.calorimeter.z_cm
    front, back = layers.z_cm - 0.5 * layers.thickness_cm, layers.z_cm + 0.5 * layers.thickness_cm
    x_station = np.array([layers.x_over_x0[layers.station == s].sum() for s in range(len(geometry.stations))])
    targets = np.flatnonzero(layers.kind == KIND_TARGET)
    sensors = layers.kind == KIND_SENSOR

    def theta2(momentum, station, x_over_x0):
        energy = math.hypot(momentum, MUON_MASS_GEV)
        return highland_theta0_rad(momentum, momentum / energy, 1.0, x_station[station]) ** 2 * x_over_x0 / x_station[station]

    def thick(momentum, station, length_cm, x0_cm, end_cm):
        distance = calo - end_cm
        return theta2(momentum, station, length_cm / x0_cm) * (length_cm ** 2 / 3 + length_cm * distance + distance ** 2)

    def thin(momentum, station):
        rows = sensors & (layers.station == station)
        return np.sum(theta2(momentum, station, layers.x_over_x0[rows]) * (calo - layers.z_cm[rows]) ** 2)

    variance = np.empty(len(truth))
    for i in range(len(truth)):
        p_in = math.sqrt(truth["beam_energy_gev"][i] ** 2 - MUON_MASS_GEV ** 2)
        p_out = math.sqrt(truth["mu_energy_gev"][i] ** 2 - MUON_MASS_GEV ** 2)
        z_v = true_vertex_cm[i, 2]
        t = targets[np.searchsorted(back[targets], z_v)]
        s = layers.station[t]
        total = 0.0
        if s > 0:
            u = targets[s - 1]
            total += thin(p_in, s - 1) + thick(p_in, s - 1, layers.thickness_cm[u], layers.x0_cm[u], back[u])
        total += thick(p_in, s, z_v - front[t], layers.x0_cm[t], z_v)
        total += thick(p_out, s, back[t] - z_v, layers.x0_cm[t], back[t]) + thin(p_out, s)
        for later in range(s + 1, len(geometry.stations)):
            rows = layers.station == later
            length, end = back[rows].max() - front[rows].min(), back[rows].max()
            total += thick(p_out, later, length, length / x_station[later], end)
        variance[i] = total
    return variance


def test_downstream_stations_scatter_on_the_way_to_the_calorimeter(straight_run):
    """The muon's calorimeter impact moves by multiple scattering as the Gaussian model says, for
    vertices in each of the three stations (0, 1 or 2 stations lumped on the way): the mean of
    the squared shift per projection against the expected variance, within 5 standard errors
    (those of a mean of squared Gaussians with the events' own variances)."""
    geometry, truth, straight = straight_run
    scattered = DetectorSimulation(geometry, SimulationSettings(bremsstrahlung=False), seed=4).simulate(truth)
    shift = scattered.calorimeter_impacts[:, 0, :2] - straight.calorimeter_impacts[:, 0, :2]
    assert np.all(scattered.calorimeter_impacts[:, 0, 3] == IMPACT_MUON)
    expected = _muon_shift_variance_cm2(geometry, truth, scattered.true_vertex_cm)
    station = np.searchsorted([50.0, 150.0], truth["vertex_z_cm"])  # run2025 targets at 0, 100, 200 cm
    for s in range(3):
        rows = station == s
        observed = np.mean(shift[rows] ** 2)
        standard_error = math.sqrt(4 * np.sum(expected[rows] ** 2)) / (2 * rows.sum())
        assert abs(observed - np.mean(expected[rows])) < 5 * standard_error, s
