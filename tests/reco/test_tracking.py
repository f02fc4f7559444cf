"""Track finding and fitting: pulls, angular resolution against the closed form, efficiency,
misalignment, and the geometry check."""

import dataclasses
import functools
import math

import numpy as np
import pytest

from fastsim.detector.digitization import cluster_u_cm, digitize_crossing, expected_resolution_cm
from fastsim.detector.geometry import Misalignment, load_geometry
from fastsim.detector.transport import DetectorSimulation, SimulationSettings
from fastsim.generator.generate import ElasticSettings
from reco.reconstruct import ReconstructionSettings, reconstruct
from reco.tracking import (
    TrackingModel,
    TrackingSettings,
    add_scattering_covariance,
    best_compatible_set,
    find_tracks,
    pair_resolution_table,
)

N_EVENTS = 6000
NO_MS = SimulationSettings(ms_scale=0.0, bremsstrahlung=False)
FIT_NO_MS = TrackingSettings(ms_scale=0.0)


@pytest.fixture(scope="module")
def setup(tr2023_sample):
    return tr2023_sample(11, N_EVENTS)


def true_lines(chunk, geometry, tracks):
    """(x, y, tx, ty) at each track's reference z of the true particle line, from the true
    crossings of its particle in its station (straight without scattering): least squares
    through the global crossing points c + u m + v s."""
    layers = geometry.layers()
    sensor_layers = np.flatnonzero(layers.kind == 1)
    cr = chunk.crossings
    rows = sensor_layers[cr["sensor_id"]]
    points = (layers.centre_cm[rows] + cr["u_cm"][:, None] * layers.measure_dir[rows]
              + cr["v_cm"][:, None] * layers.strip_dir[rows])
    event_row = cr["event_id"] - chunk.truth["event_id"][0]
    key = (event_row * 100 + layers.station[rows]) * 10 + cr["particle_index"]
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    out = np.full((len(tracks), 4), np.nan)
    for t in range(len(tracks)):
        k = (tracks.event[t] * 100 + tracks.station[t]) * 10 + tracks.particle[t]
        lo, hi = np.searchsorted(key_sorted, [k, k + 1])
        p = points[order[lo:hi]]
        if len(p) < 4:
            continue
        dz = p[:, 2] - tracks.zref_cm[t]
        a = np.column_stack([np.ones_like(dz), dz])
        (x0, tx), _, _, _ = np.linalg.lstsq(a, p[:, 0], rcond=None)
        (y0, ty), _, _, _ = np.linalg.lstsq(a, p[:, 1], rcond=None)
        out[t] = x0, y0, tx, ty
    return out


@pytest.fixture(scope="module")
def clean_tracks(setup):
    geometry, truth, model = setup
    chunk = DetectorSimulation(geometry, NO_MS, seed=5).simulate(truth)
    tracks = find_tracks(chunk.hits, chunk.stubs, model, FIT_NO_MS)
    pure = tracks.particle_hits == 2 * tracks.n_stubs
    return chunk, tracks, pure, true_lines(chunk, geometry, tracks)


def test_tracks_do_not_depend_on_the_chunking(setup):
    """The tracks of a chunk are those of its two halves simulated and reconstructed apart: every
    event's rows (reserved for its most possible tracks, then gathered) land in its place."""
    geometry, truth, model = setup
    simulation = DetectorSimulation(geometry, seed=5)
    half = len(truth) // 2
    first = np.arange(len(truth)) < half
    chunks = [simulation.simulate(events) for events in (truth, truth.select(first), truth.select(~first))]
    whole, *parts = (find_tracks(chunk.hits, chunk.stubs, model) for chunk in chunks)
    assert len(whole) == len(parts[0]) + len(parts[1]) > len(truth)
    np.testing.assert_array_equal(whole.event, np.concatenate([parts[0].event, parts[1].event + half]))
    for name in ("station", "params", "cov", "chi2", "ndf", "n_stubs", "particle", "particle_hits", "zref_cm"):
        np.testing.assert_array_equal(getattr(whole, name), np.concatenate([getattr(p, name) for p in parts]), name)


def test_pulls_have_mean_zero_and_width_one(clean_tracks):
    """No scattering: the tracks are exact lines; the pulls test the measurement model and the
    covariance (resolution and two-sensor correlation from the digitization model)."""
    _, tracks, pure, truth = clean_tracks
    good = pure & np.all(np.isfinite(truth), axis=1)
    assert good.sum() > 0.95 * len(tracks)
    n = good.sum()
    for a, name in enumerate(("x", "y", "tx", "ty")):
        pull = (tracks.params[good, a] - truth[good, a]) / np.sqrt(tracks.cov[good, a, a])
        # 5 sigma statistical bounds on the mean and the width (N ~ 1.5e4 tracks) are 4 % and
        # 2.9 %: the requirement of the issue, 5 %, is the binding one
        assert abs(pull.mean()) < 0.05, (name, pull.mean())
        assert abs(pull.std() - 1.0) < 0.05, (name, pull.std())
        assert 5.0 / math.sqrt(n) < 0.05
    ndf = tracks.ndf[good].sum()
    chi2_per_ndf = tracks.chi2[good].sum() / ndf
    # measured 1.0009 over 30505 degrees of freedom; chi2/ndf has the standard error sqrt(2 / ndf)
    assert chi2_per_ndf == pytest.approx(1.0, abs=5.0 * math.sqrt(2.0 / ndf))


#: Crossings of the Monte Carlo of the two-sensor correlation: its standard error is
#: (1 - rho^2) / sqrt(n), 0.0026 at rho = -0.42.
PAIR_MC_CROSSINGS = 100_000


@functools.cache  # a station's modules share two (angle, spacing) pairs: one Monte Carlo each
def _pair_correlation_mc(tan_alpha, spacing_cm, n=PAIR_MC_CROSSINGS):
    """Correlation of the residuals of a module's two sensors, by Monte Carlo over the crossing
    position with the digitization kernel (independent of the tracking's quadrature)."""
    pitch, strips, thickness = 0.009, 1016, 0.032
    generator = np.random.default_rng(3)
    u = generator.uniform(-0.45, 0.45, n)
    r0, r1 = np.empty(n), np.empty(n)
    for i, ui in enumerate(u):
        f0, k0 = digitize_crossing(ui, tan_alpha, pitch, strips, thickness, 0.25, 7e-4)
        u1 = ui + spacing_cm * tan_alpha
        f1, k1 = digitize_crossing(u1, tan_alpha, pitch, strips, thickness, 0.25, 7e-4)
        r0[i] = cluster_u_cm(f0, k0, pitch, strips) - ui
        r1[i] = cluster_u_cm(f1, k1, pitch, strips) - u1
    return np.corrcoef(r0, r1)[0, 1]


def test_resolution_table_matches_digitization():
    low, sigma, rho = pair_resolution_table(-math.tan(0.233), 0.009, 0.032, 0.18)
    k = int(round((-math.tan(0.233) - low) / 5e-4))
    assert sigma[k] == pytest.approx(expected_resolution_cm(-math.tan(0.233)), rel=2e-3)
    rho_mc = _pair_correlation_mc(-math.tan(0.233), 0.18)  # measured -0.4242 at 4e4 crossings, the table -0.4236
    assert rho[k] == pytest.approx(rho_mc, abs=5.0 * (1.0 - rho_mc**2) / math.sqrt(PAIR_MC_CROSSINGS))
    low, sigma, rho = pair_resolution_table(0.0, 0.009, 0.032, 0.40)
    k = int(round(-low / 5e-4))
    assert sigma[k] == pytest.approx(expected_resolution_cm(0.0), rel=2e-3)
    assert rho[k] > 0.95  # normal incidence: both sensors fire the same strip


def test_angular_resolution_agrees_with_closed_form(setup, clean_tracks):
    """Incoming muons (160 GeV, no scattering, slopes ~ 0.2 mrad): the spread of the fitted slopes
    against the closed-form straight-line least squares, sigma_slope^2 from the information matrix
    sum_k h_k h_k^T / sigma_k^2 of the six modules, h = (a_x, a_y, a_x dz, a_y dz), with a the
    transverse measurement direction in the tilted plane (m - (m.z / n.z) n) and sigma_k the
    resolution of the mean of the module's two clusters, sigma sqrt((1 + rho) / 2)."""
    geometry, _, _ = setup
    _, tracks, pure, truth = clean_tracks
    incoming = pure & (tracks.particle == 0) & np.all(np.isfinite(truth), axis=1)
    station = geometry.stations[0]
    zref = station.global_z_cm(station.target.z_cm + 0.5 * station.target.thickness_cm)
    info = np.zeros((4, 4))
    mc_error_rel = 0.0  # largest relative error of a module's sigma_mean from the Monte Carlo of rho
    for module in station.modules:
        m, _, n = module.frame()
        a = m - m[2] / n[2] * n
        tan_alpha = m[2] / n[2]
        sigma = expected_resolution_cm(tan_alpha)
        rho = _pair_correlation_mc(tan_alpha, module.sensor_spacing_cm)
        sigma_mean2 = sigma**2 * (1 + rho) / 2
        mc_error_rel = max(mc_error_rel, 0.5 * (1 - rho**2) / math.sqrt(PAIR_MC_CROSSINGS) / (1 + rho))
        dz = station.global_z_cm(module.z_cm) - zref
        h = np.array([a[0], a[1], a[0] * dz, a[1] * dz])
        info += np.outer(h, h) / sigma_mean2
    expected = np.sqrt(np.diag(np.linalg.inv(info)))
    n = incoming.sum()
    assert n > 3000
    for a in (2, 3):
        measured = np.std(tracks.params[incoming, a] - truth[incoming, a])
        # 5 sigma of the std (1/sqrt(2N)) and of the Monte Carlo of rho (0.2 % on sigma_mean);
        # measured/expected 1.018 (x) and 1.002 (y) with N = 3561
        assert measured == pytest.approx(expected[a], rel=5 / math.sqrt(2 * n) + 5 * mc_error_rel), (a, measured, expected[a])
    print(f"slope resolution of one station: {expected[2] * 1e6:.2f} urad (x), {expected[3] * 1e6:.2f} urad (y)")


def test_efficiency_of_clean_elastic_events(tr2023_sample):
    """Fiducial: the interaction in the second station's target (so the first measures the
    incoming muon), 5 < theta_e < 20 mrad, theta_mu > 0.2 mrad, and both outgoing particles
    within 4 cm of the axis (1 cm inside the 2S sensors' 4.57 x 5 cm half sizes) at the last
    module (z ~ 94 cm from the target). Full simulation: scattering, bremsstrahlung.

    The efficiency is ~0.992 (0.99203 +- 0.00032 here, 0.99168 +- 0.0006 with other seeds), so
    "above 99 %" needs ~8e4 fiducial events to put 0.99 six standard errors (3.2e-4) below it:
    the events are generated in the angular window and in the second target only."""
    window = ElasticSettings(theta_e_min_rad=5e-3, theta_e_max_rad=20e-3, theta_mu_min_rad=2e-4)
    geometry, truth, model = tr2023_sample(12, 80_000, elastic=window, targets=slice(1, None))
    chunk = DetectorSimulation(geometry, SimulationSettings(), seed=6).simulate(truth)
    events = reconstruct(chunk, model)
    lever = 94.0
    inside = np.ones(len(truth), bool)
    for prefix in ("e", "mu"):
        theta, phi = truth[f"{prefix}_theta_rad"], truth[f"{prefix}_phi_rad"]
        x = truth["vertex_x_cm"] + lever * np.tan(theta) * np.cos(phi)
        y = truth["vertex_y_cm"] + lever * np.tan(theta) * np.sin(phi)
        inside &= (np.abs(x) < 4.0) & (np.abs(y) < 4.0)
    fiducial = ((truth["weight"] > 0) & (truth["e_theta_rad"] > 5e-3) & (truth["e_theta_rad"] < 20e-3)
                & (truth["mu_theta_rad"] > 2e-4) & inside)
    n = fiducial.sum()
    assert n > 75_000
    found = (events["station"] == 1) & events["has_incoming"] & (events["n_tracks_out"] >= 2)
    efficiency = found[fiducial].mean()
    assert efficiency > 0.99, (efficiency, math.sqrt(efficiency * (1 - efficiency) / n))
    # the tracks are the electron and the muon
    pdg = np.sort(np.abs(np.column_stack([events["truth_pdg_1"], events["truth_pdg_2"]]))[fiducial & found], axis=1)
    assert np.mean((pdg[:, 0] == 11) & (pdg[:, 1] == 13)) > 0.99


def test_misaligned_station_shifts_the_tracks(setup):
    """Same truth and seed, simulated in a misaligned detector, reconstructed with the nominal one.
    Every module of a station moved by dx: the hits move by -dx relative to the sensors, so the
    fitted x moves by -dx and the slopes stay. The station's length scaled by (1 + e) about its
    origin: the reconstructed slopes are larger by the factor (1 + e)."""
    geometry, truth, model = setup
    dx = 0.01
    shifted = geometry.with_misalignment(modules={(1, m): Misalignment(dx_cm=dx) for m in range(6)})
    nominal = find_tracks(*_hits(geometry, truth), model, FIT_NO_MS)
    moved = find_tracks(*_hits(shifted, truth), model, FIT_NO_MS)
    a, b = _match(nominal, moved, station=1)
    delta = moved.params[b] - nominal.params[a]
    # the same particles cross the sensors at other points of their strips: the per-track changes
    # scatter by a fraction of the resolution; their spread gives the error of the mean
    error = delta.std(axis=0) / math.sqrt(len(a))
    assert delta[:, 0].mean() == pytest.approx(-dx, abs=5 * error[0])
    assert delta[:, 1].mean() == pytest.approx(0.0, abs=5 * error[1])
    assert abs(delta[:, 2].mean()) < 5 * error[2]
    # length scale: only the station origin is fixed; slopes scale by 1 + e
    e = 1e-3
    scaled = geometry.with_misalignment(stations={1: {"length_scale": 1.0 + e}})
    keep = truth["vertex_z_cm"] > 100.0 + 0.01
    sub = truth.select(keep)
    sub.columns["event_id"] = np.arange(len(sub))
    nominal = find_tracks(*_hits(geometry, sub), model, FIT_NO_MS)
    moved = find_tracks(*_hits(scaled, sub), model, FIT_NO_MS)
    a, b = _match(nominal, moved, station=1)
    big = np.abs(nominal.params[a, 2]) > 5e-3
    ratio = moved.params[b[big], 2] / nominal.params[a[big], 2] - 1.0
    spread = np.std(ratio) / math.sqrt(big.sum())
    assert ratio.mean() == pytest.approx(e, abs=5 * spread), (ratio.mean(), spread)


def _hits(geometry, truth):
    chunk = DetectorSimulation(geometry, NO_MS, seed=8).simulate(truth)
    return chunk.hits, chunk.stubs


def _match(first, second, station):
    """Rows of the same (event, particle) tracks of `station` in two Tracks."""
    key1 = np.where(first.station == station, first.event * 10 + first.particle, -1)
    key2 = np.where(second.station == station, second.event * 10 + second.particle, -2)
    common, a, b = np.intersect1d(key1, key2, return_indices=True)
    keep = common >= 0
    return a[keep], b[keep]


def test_geometry_mismatch_is_a_clear_error(setup):
    geometry, truth, _ = setup
    chunk = DetectorSimulation(geometry, NO_MS, seed=1).simulate(truth.select(truth["event_id"] < 500))
    with pytest.raises(ValueError, match=r"sensor ids up to 23 but the reconstruction geometry 'tb2022_station' has 12"):
        reconstruct(chunk, load_geometry("tb2022_station"))
    # one module (U) fewer per station: 20 sensors instead of 24
    stations = tuple(dataclasses.replace(s, modules=s.modules[:2] + s.modules[3:]) for s in geometry.stations)
    other = dataclasses.replace(geometry, name="no_u", stations=stations)
    with pytest.raises(ValueError, match=r"sensor ids up to 23 but the reconstruction geometry 'no_u' has 20 sensors \(10 modules\)"):
        reconstruct(chunk, other)
    with pytest.raises(ValueError, match="settings"):
        reconstruct(chunk, geometry, settings=TrackingSettings())
    with pytest.raises(ValueError, match="confirm_window_cm = -1"):
        TrackingSettings(confirm_window_cm=-1)
    assert isinstance(ReconstructionSettings(), ReconstructionSettings)


def _best_set_by_scan(n, conflicts, n_stubs, chi2, max_tracks):
    """The ambiguity resolution as first written: every subset in increasing order, the first
    strictly better (count, stubs, -total chi2) kept."""
    chosen, best = 0, (0, 0, -math.inf)
    for subset in range(1, 1 << n):
        members = [a for a in range(n) if subset >> a & 1]
        if len(members) > max_tracks or any(subset & conflicts[a] for a in members):
            continue
        total = 0.0
        for a in members:
            total += chi2[a]
        value = (len(members), sum(n_stubs[a] for a in members), -total)
        if value > best:
            chosen, best = subset, value
    return chosen


def test_ambiguity_search_matches_the_scan_of_every_subset():
    """The depth-first search over compatible sets chooses what the scan of all 2^n subsets chose,
    ties included (few distinct chi2 and stub counts, so that equal sets are common)."""
    rng = np.random.default_rng(5)
    stack_int, stack_total = np.empty((14, 4), np.int64), np.empty(14)
    for trial in range(400):
        n = int(rng.integers(1, 11))
        share = rng.random((n, n)) < rng.choice([0.0, 0.2, 0.5, 0.9])
        share = np.triu(share, 1)
        share = share | share.T
        conflicts = np.array([sum(1 << b for b in range(n) if share[a, b]) for a in range(n)] + [0], np.int64)
        n_stubs = rng.integers(5, 7, n + 1)
        chi2 = rng.choice([0.5, 1.25, 3.0, 7.5], n + 1)
        max_tracks = int(rng.integers(1, 7))
        index = np.arange(n + 1)
        expected = _best_set_by_scan(n, conflicts, n_stubs, chi2, max_tracks)
        assert best_compatible_set(n, conflicts, index, n_stubs, chi2, max_tracks, stack_int, stack_total) == expected


@pytest.mark.parametrize("downstream", [False, True])
def test_scattering_covariance_matches_the_sum_over_layers(downstream):
    """The fit's multiple-scattering covariance from the per-module moments equals the direct sum
    over the station's modules l of x_l (z_k - z_l)(z_j - z_l)(a_k . a_j), l upstream of both
    measurements (downstream of both for the incoming muon), for every station of the run2025
    layout with all modules measured and with some missing."""
    model = TrackingModel.from_geometry(load_geometry("run2025")).model
    rng = np.random.default_rng(3)
    theta2_per_x = 2.5e-9
    for station in range(model.station_seeds.shape[0]):
        first, last = model.station_module_first[station], model.station_module_last[station]
        for trial in range(5):
            modules = np.arange(first, last)
            if trial:
                modules = np.sort(rng.choice(modules, size=int(rng.integers(4, modules.size + 1)), replace=False))
            nm, n = last - first, modules.size
            fit_int = np.zeros((nm, 2), np.int64)
            fit_int[:n, 0] = modules
            fit_work = np.zeros((nm, nm + 4))
            a = rng.normal(size=(n, 2))
            fit_work[:n, nm:nm + 2] = a
            add_scattering_covariance(model.module_geom, fit_int, fit_work, n, theta2_per_x, downstream)
            z, x = model.module_z, model.module_x
            expected = np.zeros((n, n))
            for k in range(n):
                for j in range(n):
                    zk, zj = z[modules[k]], z[modules[j]]
                    for layer in range(first, last):
                        if (z[layer] > max(zk, zj)) if downstream else (z[layer] < min(zk, zj)):
                            expected[k, j] += theta2_per_x * x[layer] * (zk - z[layer]) * (zj - z[layer]) * (a[k] @ a[j])
            scale = theta2_per_x * x[first:last].sum() * np.ptp(z[first:last]) ** 2
            np.testing.assert_allclose(fit_work[:n, :n], expected, rtol=0, atol=1e-12 * scale)
            assert np.count_nonzero(expected) > 0
