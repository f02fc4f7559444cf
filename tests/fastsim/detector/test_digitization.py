"""Tests of fastsim.detector.digitization: clusters, resolution, efficiency, noise, stubs, CSR output."""

import math

import mpmath
import numpy as np
import pytest
from scipy import integrate, special, stats

from fastsim.detector import digitization as dg

PITCH = 0.009
THICKNESS = 0.032
N_STRIPS = 1016
THRESHOLD = 0.25
SIGMA = 7e-4
SEED = 20260611


def _sensors(n_sensors, efficiency=1.0, noise_mean=0.0):
    return dict(pitch_cm=np.full(n_sensors, PITCH), n_strips=np.full(n_sensors, N_STRIPS),
                thickness_cm=np.full(n_sensors, THICKNESS), efficiency=np.full(n_sensors, efficiency),
                noise_mean=np.full(n_sensors, noise_mean))


def _one_per_event(u, tan_alpha, sigma=SIGMA, threshold=THRESHOLD, seed=SEED, **sensor):
    """One crossing per event on sensor 0; returns the hits."""
    n = len(u)
    return dg.digitize_hits(seed, 0, n, np.arange(n), np.zeros(n, int), u, np.full(n, tan_alpha), np.zeros(n, int),
                            sigma_diff_cm=sigma, threshold_fraction=threshold, **(_sensors(1) | sensor))


def _interior_u(n, seed=1):
    # crossing positions uniform over 80 strips around the centre, far from the sensor edges
    return np.random.default_rng(seed).uniform(-40 * PITCH, 40 * PITCH, n)


# --- charge model ------------------------------------------------------------------------------


def test_gauss_cdf_integral_against_mpmath():
    # G(z) = z Phi(z) + phi(z) from the Mills-ratio polynomials, over all their intervals
    mpmath.mp.prec = 100
    for z in np.concatenate([-np.linspace(0.0, 8.5, 341), [-1e-300, -8.4999999, -8.5000001, -20.0]]):
        exact = z * mpmath.ncdf(z) + mpmath.npdf(z)
        assert dg._gauss_cdf_integral(z) == pytest.approx(float(exact), rel=5e-14, abs=2e-18)


@pytest.mark.parametrize("half_width, sigma", [(0.0, 7e-4), (0.004, 7e-4), (0.02, 5e-4), (1e-12, 7e-4), (0.004, 0.0)])
def test_deposit_cdf_against_quadrature(half_width, sigma):
    for x in (-0.03, -0.005, -0.001, 0.0, 0.0013, 0.004, 0.02):
        if sigma == 0.0:
            expected = min(max((x + half_width) / (2 * half_width), 0.0), 1.0)
        elif half_width < 1e-9:
            expected = stats.norm.cdf(x / sigma)
        else:  # uniform on [-h, h] convolved with N(0, sigma): average of Phi((x - y)/sigma)
            expected = integrate.quad(lambda y: stats.norm.cdf((x - y) / sigma), -half_width, half_width,
                                      epsabs=1e-14, epsrel=1e-12)[0] / (2 * half_width)
        assert dg._deposit_cdf(x, 0.0, half_width, sigma) == pytest.approx(expected, abs=1e-12)


def _reference_cluster(u, tan_alpha, sigma):
    """Independent model: strip fractions by quadrature over every strip of a window, fired set."""
    h = 0.5 * THICKNESS * abs(tan_alpha)
    low, high = (int(math.floor(x / PITCH + N_STRIPS / 2)) for x in (u - h, u + h))
    fired, margin = [], np.inf
    for k in range(max(low - 3, 0), min(high + 4, N_STRIPS)):  # 2 strips away: Phi(-180 um / sigma) = 0
        a, b = (k - N_STRIPS / 2) * PITCH, (k + 1 - N_STRIPS / 2) * PITCH
        if sigma == 0.0:
            fraction = max(min(b, u + h) - max(a, u - h), 0.0) / (2 * h)
        elif h == 0.0:
            fraction = stats.norm.cdf((b - u) / sigma) - stats.norm.cdf((a - u) / sigma)
        else:  # ndtr is the standard normal CDF (stats.norm.cdf without its per-call overhead)
            fraction = integrate.quad(lambda y: special.ndtr((b - y) / sigma) - special.ndtr((a - y) / sigma),
                                      u - h, u + h, epsabs=1e-13, epsrel=1e-12)[0] / (2 * h)
        charge = fraction * math.sqrt(1 + tan_alpha**2)
        margin = min(margin, abs(charge - THRESHOLD))
        if charge > THRESHOLD:
            fired.append(k)
    assert fired == list(range(fired[0], fired[-1] + 1))  # contiguous
    return (fired[0], len(fired)), margin


@pytest.mark.parametrize("sigma", [0.0, SIGMA])
def test_cluster_against_reference_model(sigma):
    rng = np.random.default_rng(7)
    n_checked = 0
    for _ in range(150):
        u, tan_alpha = rng.uniform(-1.0, 1.0), rng.choice([0.0, rng.uniform(-1.5, 1.5), rng.uniform(-0.05, 0.05)])
        if sigma == 0.0 and tan_alpha == 0.0:
            continue
        expected, margin = _reference_cluster(u, tan_alpha, sigma)
        if margin > 1e-9:  # not at a threshold crossing, where rounding decides
            assert dg.digitize_crossing(u, tan_alpha, PITCH, N_STRIPS, THICKNESS, THRESHOLD, sigma) == expected
            n_checked += 1
    assert n_checked > 80


def _full_cluster(u, tan_alpha, sigma, threshold=THRESHOLD):
    """The cluster with every strip's fraction computed from `_deposit_cdf` (no bounds)."""
    h = 0.5 * THICKNESS * abs(tan_alpha)
    secant = math.sqrt(1 + tan_alpha**2)
    strips = range(max(int(math.floor((u - h) / PITCH + N_STRIPS / 2)) - 2, 0),
                   min(int(math.floor((u + h) / PITCH + N_STRIPS / 2)) + 3, N_STRIPS))
    fired = [k for k in strips if (dg._deposit_cdf((k + 1 - N_STRIPS / 2) * PITCH, u, h, sigma)
                                   - dg._deposit_cdf((k - N_STRIPS / 2) * PITCH, u, h, sigma)) * secant > threshold]
    return (fired[0], len(fired)) if fired else (-1, 0)


@pytest.mark.parametrize("sigma", [SIGMA, 3e-3, 2e-6])
def test_cluster_decisions_are_those_of_the_full_computation(sigma):
    # The kernel decides most strips from bounds of the charge fraction: at the positions where a
    # strip starts or stops firing (found by bisection, to the last bit) and around them, its
    # clusters must be those of the full computation. (sigma = 2e-6 cm: the bounds give way to
    # the full computation, their rounding being too large; tan 1e-6: a wide margin.)
    rng = np.random.default_rng(3)
    n_transitions = 0
    for tan_alpha in (0.0, 1e-6, 1e-3, -0.05, 0.237, 0.5, -1.2):
        grid = np.linspace(0.0, PITCH, 301)
        clusters = [_full_cluster(u, tan_alpha, sigma) for u in grid]
        for a, b, before, after in zip(grid[:-1], grid[1:], clusters[:-1], clusters[1:]):
            if before == after:
                continue
            for _ in range(60):  # bisection to the transition
                middle = 0.5 * (a + b)
                a, b = (middle, b) if _full_cluster(middle, tan_alpha, sigma) == before else (a, middle)
            n_transitions += 1
            for u in (a, b, *np.nextafter(a, [-1.0, 1.0]), *(a + rng.normal(0.0, 1e-9, 4))):
                kernel = dg.digitize_crossing(u, tan_alpha, PITCH, N_STRIPS, THICKNESS, THRESHOLD, sigma)
                assert kernel == _full_cluster(u, tan_alpha, sigma), (u, tan_alpha)
    assert n_transitions >= 12


def test_normal_incidence_two_strip_band():
    n = 200_000
    u = _interior_u(n)
    hits = _one_per_event(u, 0.0)
    assert len(hits) == n and set(np.unique(hits.cluster_size)) <= {1, 2}
    # neighbour strip gets Phi(-d / sigma) at distance d from the boundary: fires for d < b
    band = SIGMA * stats.norm.isf(THRESHOLD)
    distance = np.abs((u / PITCH + 0.5 * N_STRIPS) - np.round(u / PITCH + 0.5 * N_STRIPS)) * PITCH
    two = hits.cluster_size == 2
    assert np.all(distance[two] < band + 1e-12) and np.all(distance[~two] > band - 1e-12)
    expected = 2 * band / PITCH
    assert abs(two.mean() - expected) < 5 * math.sqrt(expected * (1 - expected) / n)


def test_tilted_incidence_cluster_sizes_by_geometry():
    n = 200_000
    u = _interior_u(n, seed=2)
    # tan alpha = pitch / thickness, no diffusion: the deposit is one pitch wide and shares x, 1 - x
    # (x uniform) between two strips; a strip fires if share * sec(alpha) > threshold
    tan_alpha = PITCH / THICKNESS
    t_eff = THRESHOLD / math.sqrt(1 + tan_alpha**2)
    sizes = _one_per_event(u, tan_alpha, sigma=0.0).cluster_size
    expected_two = 1 - 2 * t_eff
    assert set(np.unique(sizes)) == {1, 2}
    assert abs(np.mean(sizes == 2) - expected_two) < 5 * math.sqrt(expected_two * (1 - expected_two) / n)

    # tan alpha = 2.5 pitch / thickness: deposit 2.5 pitches; s = offset of its left end in its
    # strip (uniform in [0, 1)); shares (1 - s, 1, 0.5 + s) for s < 0.5, (1 - s, 1, 1, s - 0.5)
    # otherwise, in pitch units. A strip fires if share > h = 2.5 threshold / sec(alpha) = 0.511,
    # so 3 strips for h - 0.5 < s < 1 - h, 2 strips otherwise.
    tan_alpha = 2.5 * PITCH / THICKNESS
    h = 2.5 * THRESHOLD / math.sqrt(1 + tan_alpha**2)
    assert 0.5 < h < 1.0
    sizes = _one_per_event(u, tan_alpha, sigma=0.0).cluster_size
    expected_three = (1 - h) - (h - 0.5)
    assert set(np.unique(sizes)) == {2, 3}
    assert abs(np.mean(sizes == 3) - expected_three) < 5 * math.sqrt(expected_three * (1 - expected_three) / n)


# --- resolution --------------------------------------------------------------------------------


def test_expected_resolution_closed_forms():
    # one strip only: uniform residual over a pitch
    assert dg.expected_resolution_cm(0.0, sigma_diff_cm=0.0) == pytest.approx(PITCH / math.sqrt(12), rel=1e-12)
    # normal incidence with the 2-strip band 2 b: residual uniform over +-(p/2 - b) and over +-b
    b = SIGMA * stats.norm.isf(THRESHOLD)
    expected = math.sqrt(((PITCH - 2 * b) ** 3 + (2 * b) ** 3) / (12 * PITCH))
    assert dg.expected_resolution_cm(0.0) == pytest.approx(expected, rel=1e-9)
    # tan alpha = p / T, no diffusion: 1-strip region of width 2 t' p (residual uniform over
    # +-t' p), 2-strip region of width (1 - 2 t') p (residual uniform over +-(1/2 - t') p)
    t_eff = THRESHOLD / math.sqrt(1 + (PITCH / THICKNESS) ** 2)
    expected = PITCH * math.sqrt(((2 * t_eff) ** 3 + (1 - 2 * t_eff) ** 3) / 12)
    assert dg.expected_resolution_cm(PITCH / THICKNESS, sigma_diff_cm=0.0) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("tan_alpha, sigma", [(0.0, 0.0), (0.0, SIGMA), (0.1, SIGMA), (PITCH / THICKNESS, SIGMA),
                                              (0.703, SIGMA), (-1.5, 5e-4)])
def test_residuals_match_expected_resolution(tan_alpha, sigma):
    n = 200_000
    u = _interior_u(n, seed=3)
    hits = _one_per_event(u, tan_alpha, sigma=sigma)
    assert len(hits) == n
    residual = hits.u_cm - u
    rms = math.sqrt(np.mean(residual**2))
    assert abs(residual.mean()) < 5 * rms / math.sqrt(n)
    # error of the RMS from the spread of residual^2
    rms_error = np.std(residual**2) / (2 * rms * math.sqrt(n))
    expected = dg.expected_resolution_cm(tan_alpha, sigma_diff_cm=sigma)
    assert abs(rms - expected) < 5 * rms_error
    if tan_alpha == 0.0 and sigma == 0.0:
        assert np.all(hits.cluster_size == 1) and expected == pytest.approx(PITCH / math.sqrt(12), rel=1e-12)


# --- acceptance --------------------------------------------------------------------------------


def test_outside_active_area_gives_no_hit():
    edge = 0.5 * N_STRIPS * PITCH
    u = np.array([edge + 1e-6, -edge - 1e-6, 10.0, edge - 1e-4, -edge + 1e-4])
    hits = _one_per_event(u, 0.3)
    assert hits.offsets.tolist() == [0, 0, 0, 0, 1, 2]
    assert hits.first_strip.tolist() == [N_STRIPS - 1, 0]
    for x, tan_alpha in [(edge + 1e-6, 0.0), (-edge - 1e-6, 5.0), (np.nan, 0.0), (0.0, np.inf), (0.0, np.nan)]:
        assert dg.digitize_crossing(x, tan_alpha, PITCH, N_STRIPS, THICKNESS, THRESHOLD, SIGMA) == (-1, 0)
    # a track almost in the sensor plane: every strip gets p / (T sin alpha) ~ 0.28 > threshold
    assert dg.digitize_crossing(0.0, 1e4, PITCH, N_STRIPS, THICKNESS, THRESHOLD, SIGMA) == (0, N_STRIPS)
    assert dg.digitize_crossing(0.0, 1e4, PITCH, N_STRIPS, THICKNESS, 0.3, SIGMA) == (-1, 0)
    first, size = dg.digitize_crossing(0.0, 1e300, PITCH, N_STRIPS, THICKNESS, THRESHOLD, SIGMA)  # no overflow
    assert (first, size) == (-1, 0) or (first >= 0 and first + size <= N_STRIPS)
    # along the strips, with v_cm and half_length_cm
    hits = dg.digitize_hits(SEED, 0, 3, [0, 1, 2], [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0, 0, 0],
                            v_cm=[4.9, -5.1, 5.0], half_length_cm=[5.0], **_sensors(1))
    assert hits.offsets.tolist() == [0, 1, 1, 2]


def test_strips_within_sensor():
    n = 100_000
    rng = np.random.default_rng(4)
    edge = 0.5 * N_STRIPS * PITCH
    u = rng.uniform(-edge, edge, n)
    u[: n // 2] = np.sign(u[: n // 2]) * (edge - rng.uniform(0, 0.05, n // 2))  # crowd the edges
    tan_alpha = rng.uniform(-5, 5, n)
    for k in range(n):
        first, size = dg.digitize_crossing(u[k], tan_alpha[k], PITCH, N_STRIPS, THICKNESS, THRESHOLD, SIGMA)
        assert size > 0 and 0 <= first and first + size <= N_STRIPS


# --- efficiency and noise ----------------------------------------------------------------------


def _many_crossings(n_events, n_sensors, seed=5):
    """Every event crosses every sensor once, particle index 0 (and a second particle on sensor 0)."""
    rng = np.random.default_rng(seed)
    events = np.repeat(np.arange(n_events), n_sensors + 1)
    sensors = np.tile(np.r_[np.arange(n_sensors), 0], n_events)
    particles = np.tile(np.r_[np.zeros(n_sensors, int), 1], n_events)
    u = rng.uniform(-4.0, 4.0, events.size)
    tan_alpha = rng.uniform(-0.3, 0.3, events.size)
    return events, sensors, u, tan_alpha, particles


def test_efficiency_fraction_and_independence():
    n_events, n_sensors, eff = 20_000, 5, 0.9
    events, sensors, u, tan_alpha, particles = _many_crossings(n_events, n_sensors)
    args = (events, sensors, u, tan_alpha, particles)
    full = dg.digitize_hits(SEED, 0, n_events, *args, **_sensors(n_sensors, efficiency=eff))
    all_kept = dg.digitize_hits(SEED, 0, n_events, *args, **_sensors(n_sensors))
    n = len(all_kept)
    assert n == events.size and not full.is_noise.any()
    assert abs(len(full) / n - eff) < 5 * math.sqrt(eff * (1 - eff) / n)
    # the kept clusters of sensor 3 do not change when the other sensors' crossings are removed
    mine = sensors == 3
    alone = dg.digitize_hits(SEED, 0, n_events, *(a[mine] for a in args), **_sensors(n_sensors, efficiency=eff))
    assert np.array_equal(alone.u_cm, full.u_cm[full.sensor_id == 3])
    # and the two particles on sensor 0 are dropped independently: P(both lost) = (1 - eff)^2
    hit_event = np.repeat(np.arange(n_events), np.diff(full.offsets))
    kept_on_sensor0 = np.bincount(hit_event[full.sensor_id == 0], minlength=n_events)
    both = np.mean(kept_on_sensor0 == 0)
    p = (1 - eff) ** 2
    assert abs(both - p) < 5 * math.sqrt(p * (1 - p) / n_events)


def test_noise_clusters_poisson():
    n_events, n_sensors, mean = 40_000, 4, 0.5
    hits = dg.digitize_hits(SEED, 0, n_events, [], [], [], [], [], **_sensors(n_sensors, noise_mean=mean))
    assert hits.is_noise.all() and np.all(hits.particle_index == -1) and np.all(hits.cluster_size == 1)
    assert np.all((hits.first_strip >= 0) & (hits.first_strip < N_STRIPS))
    event = np.repeat(np.arange(n_events), np.diff(hits.offsets))
    counts = np.bincount(event * n_sensors + hits.sensor_id, minlength=n_events * n_sensors)
    n = counts.size
    assert abs(counts.mean() - mean) < 5 * math.sqrt(mean / n)
    # Var(sample variance) of a Poisson sample: (mu_4 - sigma^4) / n = (mean + 2 mean^2) / n
    assert abs(counts.var() - mean) < 5 * math.sqrt((mean + 2 * mean**2) / n)
    # strips uniform over the sensor
    m = len(hits)
    assert abs(hits.first_strip.mean() - (N_STRIPS - 1) / 2) < 5 * N_STRIPS / math.sqrt(12 * m)
    assert np.allclose(hits.u_cm, (hits.first_strip - (N_STRIPS - 1) / 2) * PITCH)


# --- reproducibility ---------------------------------------------------------------------------


def _same(a, b):
    return a.first_event == b.first_event and all(
        np.array_equal(getattr(a, name), getattr(b, name)) for name in ("offsets",) + dg.StripHits.FLAT)


def test_reproducible_whatever_the_batch_split():
    n_events, n_sensors = 3000, 6
    events, sensors, u, tan_alpha, particles = _many_crossings(n_events, n_sensors, seed=6)
    params = _sensors(n_sensors, efficiency=0.8, noise_mean=0.3)

    def run(seed, first, count):
        sel = (events >= first) & (events < first + count)
        return dg.digitize_hits(seed, first, count, events[sel], sensors[sel], u[sel], tan_alpha[sel],
                                particles[sel], **params)

    whole = run(SEED, 0, n_events)
    assert whole.is_noise.any() and len(whole) < events.size + 10 * n_events
    for k in (1, 1234, n_events - 1):
        assert _same(whole, dg.StripHits.concatenate([run(SEED, 0, k), run(SEED, k, n_events - k)]))
    single = run(SEED, 777, 1)
    a, b = whole.offsets[777], whole.offsets[778]
    assert np.array_equal(single.u_cm, whole.u_cm[a:b]) and np.array_equal(single.sensor_id, whole.sensor_id[a:b])
    other = run(SEED + 1, 0, n_events)
    assert not _same(whole, other)
    assert not np.array_equal(whole.is_noise[: len(other)], other.is_noise[: len(whole)])


# --- stubs -------------------------------------------------------------------------------------


def test_stub_window():
    assert dg.make_stub(100.0, 101.0, 0.0, 2.0) == (True, 100.0, 1.0)
    assert not dg.make_stub(100.0, 105.0, 0.0, 2.0)[0]
    assert dg.make_stub(100.0, 105.0, 4.5, 1.0)[0]  # expected offset 4.5 strips
    index0, index1, position, bend = dg.make_stubs(np.array([100.0, 300.0, 500.5]), np.array([301.5, 101.0, 505.5]),
                                                   0.0, 2.0)
    assert index0.tolist() == [0, 1] and index1.tolist() == [1, 0]
    assert position.tolist() == [100.0, 300.0] and bend.tolist() == [1.0, 1.5]


def test_stub_from_digitized_sensors():
    # a track with slope tan alpha crosses sensors 0.18 cm apart: bend ~ 0.18 tan(alpha) / pitch strips
    spacing, tan_alpha = 0.18, 0.1
    u0 = 0.1234
    c0, c1 = (dg.digitize_crossing(u, tan_alpha, PITCH, N_STRIPS, THICKNESS, THRESHOLD, SIGMA)
              for u in (u0, u0 + spacing * tan_alpha))
    centre0, centre1 = c0[0] + 0.5 * (c0[1] - 1), c1[0] + 0.5 * (c1[1] - 1)
    offset = spacing * tan_alpha / PITCH
    ok, position, bend = dg.make_stub(centre0, centre1, offset, 1.0)
    assert ok and position == centre0 and abs(bend - offset) <= 1.0
    assert not dg.make_stub(centre0, centre1, 0.0, 1.0)[0]  # a straight-through window misses it


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("pitch_cm", 0.0), ("pitch_cm", -0.009), ("n_strips", 0), ("n_strips", -3),
                                        ("efficiency", 1.1), ("efficiency", -0.1), ("noise_mean", -0.5),
                                        ("thickness_cm", 0.0)])
def test_bad_sensor_parameters(key, value):
    params = _sensors(3)
    params[key] = params[key].astype(float)
    params[key][1] = value
    with pytest.raises(ValueError, match=rf"{key}\[1\] = {value!r}"):
        dg.digitize_hits(SEED, 0, 1, [0], [0], [0.0], [0.0], [0], **params)


@pytest.mark.parametrize("kwargs, match", [
    (dict(threshold_fraction=1.5), "threshold_fraction = 1.5"),
    (dict(sigma_diff_cm=-1e-4), "sigma_diff_cm = -0.0001"),
    (dict(sensor_id=[7]), r"sensor_id\[0\] = 7"),
    (dict(event_index=[5]), "event_index must lie in"),
    (dict(seed=-1), "seed"),
    (dict(v_cm=[0.0]), "v_cm and half_length_cm"),
    (dict(u_cm=[np.nan]), r"u_cm\[0\] = nan must be finite"),
    (dict(tan_alpha=[np.inf]), r"tan_alpha\[0\] = inf must be finite"),
    (dict(particle_index=[-2]), r"particle_index\[0\] = -2"),
    (dict(event_index=[0, 0]), r"sensor_id must be a 1-D array of length 2"),
])
def test_bad_arguments(kwargs, match):
    args = dict(seed=SEED, first_event=0, n_events=1, event_index=[0], sensor_id=[0], u_cm=[0.0], tan_alpha=[0.0],
                particle_index=[0]) | _sensors(2) | kwargs
    with pytest.raises(ValueError, match=match):
        dg.digitize_hits(**args)


def test_bad_resolution_arguments():
    with pytest.raises(ValueError, match="pitch_cm = -1.0"):
        dg.expected_resolution_cm(0.0, pitch_cm=-1.0)
