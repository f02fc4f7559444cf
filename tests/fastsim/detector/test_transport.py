"""Detector simulation: scattering against Highland, bremsstrahlung, hits, misalignment, reproducibility."""

import math
import pickle

import numpy as np
import pytest

from fastsim.detector.calorimeter import IMPACT_NONE
from fastsim.detector.digitization import StripHits, expected_resolution_cm
from fastsim.detector.geometry import Geometry, Misalignment, geometry_table, load_geometry
from fastsim.detector.slab import scatter_through_slab
from fastsim.detector.stubs import ModuleMap, build_stubs
from fastsim.detector.transport import DetectorSimulation, SimulationSettings, geometry_targets
from fastsim.generator.beam import BeamModel
from fastsim.generator.generate import Generator, GeneratorConfig
from studies.cli import main

N_SLAB = 400_000


@pytest.mark.parametrize(
    "particle, energy, material, thickness",
    [("mu", 160.0, "Be", 1.5), ("mu", 160.0, "C", 2.0), ("mu", 160.0, "Si", 0.064),
     ("e", 1.0, "Si", 0.064), ("e", 10.0, "Si", 0.064), ("e", 1.0, "Be", 1.5), ("e", 10.0, "C", 2.0)],
)
def test_widths_agree_with_highland(particle, energy, material, thickness):
    _, summary = scatter_through_slab(particle, energy, material, thickness, N_SLAB, seed=5)
    ratio = summary.theta0_sim_rad / summary.theta0_highland_rad
    if particle == "mu":
        # Gaussian model, no energy loss: Highland exactly, up to the fit's statistical error
        assert ratio == pytest.approx(1.0, abs=5 * summary.theta0_sim_error_rad / summary.theta0_highland_rad)
        assert summary.pos_angle_correlation == pytest.approx(math.sqrt(3) / 2, abs=0.01)
        # x and y, 2 N_SLAB Gaussian positions: the RMS within 5 standard errors, 5 sqrt(1 / 4 N_SLAB)
        assert summary.position_rms_cm == pytest.approx(thickness * summary.theta0_highland_rad / math.sqrt(3),
                                                        rel=5 / math.sqrt(4 * N_SLAB))
    else:
        # electrons lose energy in the slab and scatter more: within Highland's 11 % accuracy
        assert 1.0 <= ratio < 1.11


@pytest.mark.parametrize("energy, material, thickness", [(1.0, "Si", 0.064), (10.0, "Si", 0.064),
                                                      (1.0, "Be", 1.5), (10.0, "C", 2.0)])
def test_mean_bremsstrahlung_loss_is_the_exponential_law(energy, material, thickness):
    # Bethe-Heitler with -ln z ~ Gamma(b t), b = 1/ln 2: <z> = exp(-t) exactly and Var z =
    # 3^(-b t) - 4^(-b t). The loss distribution has a long tail: 2e6 electrons make the standard
    # error below 0.6 % of the mean loss, so 5 standard errors test it to 3 % ("a few %")
    n = 2_000_000
    _, summary = scatter_through_slab("e", energy, material, thickness, n, seed=6)
    expected_loss = energy * (1 - math.exp(-summary.x_over_x0))
    bt = summary.x_over_x0 / math.log(2.0)
    standard_error = energy * math.sqrt((3.0 ** -bt - 4.0 ** -bt) / n)
    assert standard_error < 0.006 * expected_loss
    assert abs(summary.mean_energy_loss_gev - expected_loss) < 5 * standard_error
    assert summary.mean_energy_loss_error_gev == pytest.approx(standard_error, rel=0.05)


def test_scattering_offsets_in_the_target_have_the_slab_width():
    """The position offset of a scattering inside the transport (PDG: rms x theta0 / sqrt(3),
    correlation sqrt(3)/2 with the angle) where the target is split at the vertex: the incoming
    muon's true vertex, and an outgoing electron's crossing of a sensor just behind the target.
    Scattering at the entry of a path and stepping on with the turned direction would make the
    offset 2.65 times too wide (variances 7x and 3.8x the expected ones)."""
    from fastsim.detector.interactions import highland_theta0_rad
    from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV, PDG_ELECTRON

    table = geometry_table("tb2022_station")
    station = table["stations"][0]
    station["target"] = {"material": "W", "thickness_cm": 0.5, "z_cm": 0.0}
    station["modules"][0].update(z_cm=0.9, tilt_rad=0.0)  # an X module close behind the target
    geometry = Geometry.from_dict(table)
    n, electron_gev = 100_000, 2.0
    truth = Generator(GeneratorConfig(targets=geometry_targets(geometry)), seed=4).chunk(0, n)
    thickness, z_vertex = 0.5, 0.25  # the vertex in the middle: half the target before, half after
    for column, value in (("vertex_x_cm", 0.0), ("vertex_y_cm", 0.0), ("vertex_z_cm", z_vertex),
                          ("beam_theta_x_rad", 0.0), ("beam_theta_y_rad", 0.0)):
        truth.columns[column][:] = value
    particles = truth.particles
    electron = particles["pdg"] == PDG_ELECTRON
    assert np.array_equal(np.flatnonzero(electron), truth.particle_offsets[:-1] + 1)  # particle index 2
    particles["e_gev"][electron] = electron_gev
    particles["px_gev"][:], particles["py_gev"][:] = 0.0, 0.0
    mass = np.where(electron, ELECTRON_MASS_GEV, MUON_MASS_GEV)
    particles["pz_gev"][:] = np.sqrt(particles["e_gev"] ** 2 - mass ** 2)
    chunk = DetectorSimulation(geometry, SimulationSettings(bremsstrahlung=False), seed=4).simulate(truth)

    layers = geometry.layers()
    x_station = layers.x_over_x0.sum()  # Highland's logarithm takes the whole station
    half_over_x0 = 0.5 * thickness / layers.x0_cm[0]

    def theta0(momentum, energy):  # the share of half the target
        return highland_theta0_rad(momentum, momentum / energy, 1.0, x_station) * math.sqrt(half_over_x0 / x_station)

    # incoming muon: its offset at the vertex, both projections (2n values: the variance to 1.6 %)
    beam_gev = float(truth["beam_energy_gev"][0])
    muon_theta0 = theta0(math.sqrt(beam_gev ** 2 - MUON_MASS_GEV ** 2), beam_gev)
    offsets = chunk.true_vertex_cm[:, :2].ravel()
    assert np.mean(offsets ** 2) == pytest.approx((0.5 * thickness * muon_theta0) ** 2 / 3, rel=5 * math.sqrt(1 / n))
    # the electron at the first sensor, D behind the target: u = offset + D angle, Var u =
    # theta0^2 (l^2 / 3 + l D + D^2) for l cm of target after the vertex (the muon's share, 1e-4
    # of it, is neglected); n values: the variance to 2.2 %
    first = (chunk.crossings["sensor_id"] == 0) & (chunk.crossings["particle_index"] == 2)
    assert first.sum() == n
    u = chunk.crossings["u_cm"][first]
    sensor_z = 0.9 - 0.5 * station["modules"][0]["sensor_spacing_cm"]
    length, distance = thickness - z_vertex, sensor_z - thickness
    electron_theta0 = theta0(math.sqrt(electron_gev ** 2 - ELECTRON_MASS_GEV ** 2), electron_gev)
    expected = electron_theta0 ** 2 * (length ** 2 / 3 + length * distance + distance ** 2)
    assert np.mean(u ** 2) == pytest.approx(expected, rel=5 * math.sqrt(2 / n))


def test_mixture_adds_tails_and_keeps_the_core():
    angles_gauss, gauss = scatter_through_slab("mu", 160.0, "Be", 1.5, N_SLAB, seed=2)
    angles_mix, mixture = scatter_through_slab("mu", 160.0, "Be", 1.5, N_SLAB, seed=2,
                                               settings=SimulationSettings(ms_model="mixture"))
    assert 1.0 < mixture.theta0_sim_rad / mixture.theta0_highland_rad < 1.11
    theta0 = gauss.theta0_highland_rad
    far_gauss = np.mean(np.abs(angles_gauss[:, :2]) > 5 * theta0)
    far_mix = np.mean(np.abs(angles_mix[:, :2]) > 5 * theta0)
    assert far_gauss < 1e-5 and far_mix > 1e-3


def test_ms_scale_moves_the_same_particles():
    nominal, _ = scatter_through_slab("mu", 160.0, "Be", 1.5, 10_000, seed=9)
    scaled, _ = scatter_through_slab("mu", 160.0, "Be", 1.5, 10_000, seed=9, settings=SimulationSettings(ms_scale=1.01))
    np.testing.assert_allclose(scaled[:, :2], 1.01 * nominal[:, :2], rtol=1e-6)


@pytest.fixture(scope="module")
def station_events():
    geometry = load_geometry("tb2022_station")
    beam = BeamModel(spot_x_cm=1.0, spot_y_cm=1.0, divergence_x_rad=2e-4, divergence_y_rad=2e-4)
    truth = Generator(GeneratorConfig(beam=beam, targets=geometry_targets(geometry)), seed=3).chunk(0, 20_000)
    return geometry, truth


def test_hits_of_clean_events_and_residuals(station_events):
    geometry, truth = station_events
    result = DetectorSimulation(geometry, seed=1).simulate(truth)
    crossings, hits = result.crossings, result.hits
    # the muon crosses the 12 sensors of the station, and so does the electron unless it radiated
    # nearly all its energy in a sensor and then scattered out of the station: 22 electrons in
    # 1e6 events of this sample (measured), so 0.44 expected here; at most 6 (Poisson, ~5 sigma)
    per_particle = np.bincount(crossings["event_id"] * 4 + crossings["particle_index"], minlength=4 * len(truth))
    muon, electron = truth.particles["pdg"][truth.particle_offsets[:-1]] == -13, per_particle[2::4]
    assert np.all(muon) and np.all(per_particle[1::4] == 12)
    assert np.all(electron <= 12) and np.count_nonzero(electron < 12) <= 6
    # residuals of single-particle hits against the true crossing, per sensor type
    event_of_hit = np.repeat(np.arange(len(truth)), np.diff(hits.offsets))
    key_hits = event_of_hit * 10_000 + hits.sensor_id * 10 + hits.particle_index
    key_cross = crossings["event_id"] * 10_000 + crossings["sensor_id"] * 10 + crossings["particle_index"]
    order = np.argsort(key_cross)
    match = order[np.searchsorted(key_cross[order], key_hits)]
    assert np.array_equal(key_cross[match], key_hits)
    residual = hits.u_cm - crossings["u_cm"][match]
    tan_alpha = crossings["tan_alpha"][match]
    for tilted in (True, False):
        mask = (np.abs(tan_alpha) > 0.1) == tilted
        # the closed-form resolution averaged over the crossings' incidence angles (interpolated
        # from 41 points), within 5 standard errors of an RMS (the Gaussian one, sqrt(1 / 2N):
        # larger than that of these flat-topped residuals)
        slopes = np.abs(tan_alpha[mask])
        grid = np.linspace(slopes.min(), slopes.max(), 41)
        mean_square = np.interp(slopes, grid, [expected_resolution_cm(float(t)) ** 2 for t in grid]).mean()
        expected = math.sqrt(mean_square)
        rms = float(np.sqrt(np.mean(residual[mask] ** 2)))
        assert rms == pytest.approx(expected, rel=5 * math.sqrt(0.5 / mask.sum())), (tilted, rms, expected)
        assert abs(residual[mask].mean()) < 5 * rms / math.sqrt(mask.sum())


def test_simulation_is_reproducible_across_chunks(station_events):
    geometry, truth = station_events
    simulation = DetectorSimulation(geometry, seed=4)
    whole = simulation.simulate(truth.select(truth["event_id"] < 2000))
    first = simulation.simulate(truth.select(truth["event_id"] < 700))
    second = simulation.simulate(truth.select((truth["event_id"] >= 700) & (truth["event_id"] < 2000)))
    joined = StripHits.concatenate([first.hits, second.hits])
    # a pickled copy (as sent to worker processes) simulates the same hits with its own buffers
    copy = pickle.loads(pickle.dumps(simulation)).simulate(truth.select(truth["event_id"] < 2000))
    for name in StripHits.FLAT:
        np.testing.assert_array_equal(getattr(whole.hits, name), getattr(joined, name))
        np.testing.assert_array_equal(getattr(whole.hits, name), getattr(copy.hits, name))


def test_known_misalignment_moves_hits(station_events):
    geometry, truth = station_events
    truth = truth.select(truth["event_id"] < 3000)
    shift = 0.005  # 50 um along x of module 0 (an X view)
    misaligned = geometry.with_misalignment(modules={(0, 0): Misalignment(dx_cm=shift)})
    nominal = DetectorSimulation(geometry, seed=6).simulate(truth).crossings
    moved = DetectorSimulation(misaligned, seed=6).simulate(truth).crossings
    layers = geometry.layers()
    sensor_layers = np.flatnonzero(layers.kind == 1)
    module0 = np.isin(nominal["sensor_id"], np.flatnonzero(layers.module[sensor_layers] == 0))
    upstream = module0 & (layers.sensor[sensor_layers[nominal["sensor_id"]]] == 0)
    rows = sensor_layers[nominal["sensor_id"][upstream]]
    measure_x, normal_x = layers.measure_dir[rows, 0], layers.normal[rows, 0]
    # the track stays, the sensor moves by delta: the crossing slides along the track to the
    # shifted (tilted) plane, so u changes by -delta.m + (delta.n) tan(alpha), tan(alpha) = d.m / d.n
    expected = -shift * measure_x + shift * normal_x * nominal["tan_alpha"][upstream]
    np.testing.assert_allclose(moved["u_cm"][upstream] - nominal["u_cm"][upstream], expected, rtol=0, atol=1e-10)
    # in the module's second sensor the track arrives after scattering at a shifted point of the
    # first: the same shift up to (kink angle) x (a few um)
    second = module0 & ~upstream
    rows = sensor_layers[nominal["sensor_id"][second]]
    expected = -shift * layers.measure_dir[rows, 0] + shift * layers.normal[rows, 0] * nominal["tan_alpha"][second]
    deviation = np.abs(moved["u_cm"][second] - nominal["u_cm"][second] - expected)
    assert np.median(deviation) < 1e-7 and deviation.max() < 1e-4


def test_stub_window_is_centred_on_the_nominal_bend(station_events):
    """The chips' stub window is programmed for the nominal geometry: a rotated module keeps the
    nominal window centre while its true bend moves (0.42 strip for 20 mrad about y here)."""
    geometry, _ = station_events
    rotated = geometry.with_misalignment(modules={(0, 0): Misalignment(rot_y_rad=0.02)})
    nominal_bend = ModuleMap.from_layers(geometry.layers()).offset_strips
    true_bend = ModuleMap.from_layers(rotated.layers()).offset_strips
    assert abs(true_bend[0] - nominal_bend[0]) > 0.3
    np.testing.assert_array_equal(DetectorSimulation(rotated, seed=1).modules.offset_strips, nominal_bend)


def test_length_scale_moves_downstream_hits(station_events):
    geometry, truth = station_events
    truth = truth.select(truth["event_id"] < 3000)
    scaled = geometry.with_misalignment(stations={0: {"length_scale": 1.001}})
    # the scaled station's target moves too: keep the vertices inside both targets
    inside = truth["vertex_z_cm"] > 0.002
    truth = truth.select(inside)
    truth.columns["event_id"] = np.arange(len(truth))
    nominal = DetectorSimulation(geometry, seed=6).simulate(truth).crossings
    moved = DetectorSimulation(scaled, seed=6).simulate(truth).crossings
    assert nominal["u_cm"].size == moved["u_cm"].size == 24 * len(truth)
    layers = geometry.layers()
    sensor_layers = np.flatnonzero(layers.kind == 1)
    last = layers.module[sensor_layers[nominal["sensor_id"]]] == 5
    # a module at z ~ 94 cm moves by ~0.094 cm: the hit moves by slope x dz (slopes of order mrad)
    du = np.abs(moved["u_cm"][last] - nominal["u_cm"][last])
    assert 1e-6 < np.median(du) < 0.094 * 0.05


def test_bad_settings():
    with pytest.raises(ValueError, match="ms_scale = -1.0"):
        SimulationSettings(ms_scale=-1.0)
    with pytest.raises(ValueError, match="ms_model = 'moliere'"):
        SimulationSettings(ms_model="moliere")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--material", "Kryptonite"], "material = 'Kryptonite' is unknown"),
        (["--thickness-cm", "-1"], "thickness_cm = -1.0"),
        (["--energy-gev", "0.05"], "energy_gev = 0.05"),
        (["--events", "0"], "events = 0"),
    ],
)
def test_scatter_cli_bad_input(capsys, argv, fragment):
    base = {"--particle": "mu", "--energy-gev": "160", "--material": "Be", "--thickness-cm": "1.5", "--events": "1000"}
    for key, value in zip(argv[::2], argv[1::2]):
        base[key] = value
    status = main(["scatter"] + [x for pair in base.items() for x in pair])
    err = capsys.readouterr().err
    assert status == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_scatter_cli_json(capsys):
    import json

    assert main(["scatter", "--particle", "e", "--energy-gev", "5", "--material", "Si", "--thickness-cm", "0.064",
                 "--events", "50000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("theta0_highland_rad", "theta0_sim_rad", "pos_angle_correlation", "mean_energy_loss_gev",
                "mean_energy_loss_error_gev", "position_rms_cm"):
        assert key in result
    assert main(["scatter", "--particle", "e", "--energy-gev", "5", "--material", "Si", "--thickness-cm", "0.064",
                 "--events", "50000"]) == 0
    text = capsys.readouterr().out
    for label in ("theta0 Highland", "theta0 simulated", "position-angle correlation", "position RMS at the exit",
                  "mean energy loss"):
        assert label in text
    assert f"{result['position_rms_cm']:.5g} cm" in text


def _stub_keys(chunk, modules):
    """The expected stubs as keys (event row * 100 + module) * 10 + particle: one per (module,
    particle) with a cluster in both sensors of the module."""
    hits = chunk.hits
    event_of_hit = np.repeat(np.arange(len(chunk.truth)), np.diff(hits.offsets))
    module_of_hit = modules.module_of_sensor[hits.sensor_id]
    side_of_hit = modules.side_of_sensor[hits.sensor_id]
    key = (event_of_hit * 100 + module_of_hit) * 10 + hits.particle_index
    return np.intersect1d(key[side_of_hit == 0], key[side_of_hit == 1])


def _stub_counts(chunk, modules):
    """(stubs found, stubs expected) per event (`_stub_keys`)."""
    return np.diff(chunk.stubs.offsets), np.bincount(_stub_keys(chunk, modules) // 1000, minlength=len(chunk.truth))


def test_stubs_of_clean_events(station_events):
    geometry, truth = station_events
    clean = truth.select(truth["event_id"] < 5000)
    no_brems = DetectorSimulation(geometry, SimulationSettings(bremsstrahlung=False), seed=1)
    found, expected = _stub_counts(no_brems.simulate(clean), no_brems.modules)
    np.testing.assert_array_equal(found, expected)
    simulation = DetectorSimulation(geometry, seed=1)
    chunk = simulation.simulate(truth)
    stubs, hits = chunk.stubs, chunk.hits
    modules = simulation.modules
    found, expected = _stub_counts(chunk, modules)
    # with bremsstrahlung, an electron that radiates most of its energy in the first sensor of a
    # module scatters enough before the second to leave the stub window: no stub, as on the real
    # chip. That happens in ~3e-4 of the events (30 in 1.05e5 with other seeds): a Poisson count
    # of mean ~6 here, which exceeds 20 (the bound 1e-3 of the events) with probability 9e-7.
    # Every stub lost is the electron's (particle 2; 0 is the incoming muon, 1 the outgoing one)
    missing = found < expected
    assert np.all(found <= expected)
    assert missing.sum() <= 1e-3 * missing.size
    event_of_stub = np.repeat(np.arange(len(truth)), np.diff(stubs.offsets))
    found_keys = np.concatenate([(event_of_stub * 100 + stubs.module) * 10 + hits.particle_index[getattr(stubs, hit)]
                                 for hit in ("hit0", "hit1")])
    lost = np.setdiff1d(_stub_keys(chunk, modules), found_keys)
    assert lost.size >= missing.sum() and np.all(lost % 10 == 2), lost
    assert np.mean(expected == 12) > 0.9
    # the measured bend is the particle's true one (its crossings' difference, in strips) up to
    # the two clusters' binary errors, less than a strip (0.89 at most in this sample, rms 0.24):
    # not merely within the window of the expected bend, which every stub is by construction
    crossings = chunk.crossings
    crossing_keys = (crossings["event_id"] * 1000 + crossings["sensor_id"]) * 10 + crossings["particle_index"]
    order = np.argsort(crossing_keys)
    same = hits.particle_index[stubs.hit0] == hits.particle_index[stubs.hit1]

    def true_u(hit):
        keys = ((truth["event_id"][event_of_stub] * 1000 + hits.sensor_id[hit]) * 10 + hits.particle_index[hit])[same]
        rows = order[np.searchsorted(crossing_keys, keys, sorter=order)]
        assert np.array_equal(crossing_keys[rows], keys)
        return crossings["u_cm"][rows]

    true_bend = (true_u(stubs.hit1) - true_u(stubs.hit0)) / modules.pitch_cm[stubs.module[same]]
    np.testing.assert_allclose(stubs.bend_strips[same], true_bend, atol=1.0)
    # tracks closer than the window in a module (small opening angles near the target) can give
    # a stub whose partner cluster belongs to the other particle, as on the real chip
    mixed = np.mean(hits.particle_index[stubs.hit0] != hits.particle_index[stubs.hit1])
    assert mixed < 0.02
    tilted = np.abs(modules.offset_strips) > 1
    assert tilted.sum() == 4 and np.allclose(np.abs(modules.offset_strips[tilted]), 0.18 * np.tan(0.233) / 0.009)
    # a window of zero keeps only pairs whose bend equals the expected one exactly
    narrow = build_stubs(hits, modules, window_strips=0.0)
    assert len(narrow) < len(stubs)


def test_stubs_of_hand_made_hits():
    from fastsim.detector.digitization import StripHits
    from fastsim.detector.stubs import ModuleMap

    modules = ModuleMap(np.array([0, 0]), np.array([0, 1]), np.array([0.0]), np.array([0.009]))
    def hits_with(u1):
        return StripHits(0, np.array([0, 2]), sensor_id=np.array([0, 1], dtype=np.int32), u_cm=np.array([0.0, u1]),
                         cluster_size=np.ones(2, np.int32), first_strip=np.zeros(2, np.int32),
                         is_noise=np.zeros(2, bool), particle_index=np.array([1, 1]))
    assert len(build_stubs(hits_with(0.009), modules, window_strips=2)) == 1      # 1 strip apart
    assert len(build_stubs(hits_with(5 * 0.009), modules, window_strips=2)) == 0  # 5 strips apart


def test_stubs_against_a_scan_of_every_pair():
    """Crowded modules (several clusters per sensor, in random order, some sensors without a
    partner): each seed's partner is the closest bend within the window of all the partner
    sensor's clusters, the first of equally close ones, on one thread and on two."""
    import numba

    from fastsim.detector.digitization import StripHits, make_stub
    from fastsim.detector.stubs import ModuleMap

    generator = np.random.default_rng(11)
    # sensors 0-5: modules 0, 1, 2 with sides (0, 1); sensor 6: a lone side-0 sensor (module 3)
    modules = ModuleMap(np.array([0, 0, 1, 1, 2, 2, 3]), np.array([0, 1, 1, 0, 0, 1, 0]),
                        np.array([0.0, 2.5, -1.0, 0.0]), np.full(4, 0.009))
    n_events = 3000
    counts = generator.integers(0, 25, n_events)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n = int(offsets[-1])
    sensor = generator.integers(0, 7, n).astype(np.int32)
    strips = generator.integers(0, 12, n) + np.where(generator.random(n) < 0.5, 0.0, 0.5)  # ties happen
    hits = StripHits(0, offsets, sensor_id=sensor, u_cm=strips * 0.009, cluster_size=np.ones(n, np.int32),
                     first_strip=np.zeros(n, np.int32), is_noise=np.ones(n, bool), particle_index=np.full(n, -1))
    partner = modules.partner_of_sensor
    position = hits.u_cm / 0.009  # as build_stubs computes it (ties at the window's edge included)
    expected = []
    for i in range(n_events):
        for h0 in range(offsets[i], offsets[i + 1]):
            if modules.side_of_sensor[sensor[h0]] != 0:
                continue
            m = modules.module_of_sensor[sensor[h0]]
            best, best_distance = -1, np.inf
            for h1 in range(offsets[i], offsets[i + 1]):
                if sensor[h1] == partner[sensor[h0]]:
                    ok, _, bend = make_stub(position[h0], position[h1], modules.offset_strips[m], 1.5)
                    if ok and abs(bend - modules.offset_strips[m]) < best_distance:
                        best, best_distance = h1, abs(bend - modules.offset_strips[m])
            if best >= 0:
                expected.append((i, m, h0, best))
    assert len(expected) > 5_000
    previous = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            stubs = build_stubs(hits, modules, window_strips=1.5)
            event = np.repeat(np.arange(n_events), np.diff(stubs.offsets))
            found = list(zip(event.tolist(), stubs.module.tolist(), stubs.hit0.tolist(), stubs.hit1.tolist()))
            assert found == expected
            np.testing.assert_array_equal(stubs.bend_strips, position[stubs.hit1] - position[stubs.hit0])
    finally:
        numba.set_num_threads(previous)


def test_zero_weight_trials_outside_the_kinematic_range_leave_no_hits():
    """With a beam-energy spread, t is sampled over the hull of the energy range: a trial beyond
    the kinematic limit of its own beam energy has weight 0 and no physical final state; it must
    not produce NaN crossings."""
    from fastsim.generator.generate import ElasticSettings

    geometry = load_geometry("run2025")
    config = GeneratorConfig(beam=BeamModel(energy_gev=150.0, energy_spread_rel=0.03),
                             elastic=ElasticSettings(ee_min_gev=0.2), targets=geometry_targets(geometry))
    truth = Generator(config, 3).chunk(0, 200_000)
    muon_energy = truth["mu_energy_gev"]
    unphysical = (truth["weight"] == 0) & (muon_energy < 0.1056583755)
    assert unphysical.any()  # the case exists in this sample
    chunk = DetectorSimulation(geometry, seed=3).simulate(truth)
    assert np.all(np.isfinite(chunk.crossings["u_cm"]))


def test_simulation_without_transport_keeps_the_noise_only():
    """transport=False: no crossings and no particle hits; the noise clusters are those of the
    full simulation (their random numbers do not depend on the particles), the calorimeter
    receives no particle and reads its noise only."""
    table = geometry_table("tr2023")
    for station in table["stations"]:
        for module in station["modules"]:
            module["noise_hits_per_event"] = 0.05
    geometry = Geometry.from_dict(table)
    truth = Generator(GeneratorConfig(targets=geometry_targets(geometry)), seed=8).chunk(0, 5000)
    simulation = DetectorSimulation(geometry, seed=8)
    full, empty = simulation.simulate(truth), simulation.simulate(truth, transport=False)
    assert len(empty.crossings["u_cm"]) == 0 and empty.hits.is_noise.all()
    np.testing.assert_array_equal(empty.true_vertex_cm, np.column_stack(
        [truth["vertex_x_cm"], truth["vertex_y_cm"], truth["vertex_z_cm"]]))

    def noise(hits):
        event = np.repeat(np.arange(hits.n_events), np.diff(hits.offsets))
        return sorted(zip(event[hits.is_noise], hits.sensor_id[hits.is_noise], hits.u_cm[hits.is_noise]))

    assert noise(empty.hits) == noise(full.hits)
    expected = 0.05 * geometry.sensor_count * len(truth)
    assert abs(len(empty.hits) - expected) < 5 * math.sqrt(expected)
    assert np.all(empty.calorimeter_impacts[..., 3] == IMPACT_NONE)
    noise_gev = geometry.calorimeter.noise_per_crystal_gev
    crystals = empty.calorimeter_energy_gev.size  # Gaussian noise: the std within 5 sqrt(1 / 2N)
    assert np.std(empty.calorimeter_energy_gev) == pytest.approx(noise_gev, rel=5 * math.sqrt(0.5 / crystals))
    assert np.std(full.calorimeter_energy_gev) > 10 * noise_gev
