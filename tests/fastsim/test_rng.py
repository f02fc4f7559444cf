"""Tests of fastsim.rng: Philox-4x64-10 against numpy and Random123, reproducibility, statistics."""

import math

import numba
import numpy as np
import pytest
from numba import njit
from scipy import stats

from fastsim import rng

U64 = np.uint64
MAX = 2**64 - 1
SEED = 20240611

# Random123 kat_vectors (Salmon et al. 2011): counter c0..c3, key k0 k1, expected block.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x16554D9ECA36314C, 0xDB20FE9D672D0FDC, 0xD7E772CEE186176B, 0x7E68B68AEC7BA23B)),
    ((MAX,) * 4, (MAX, MAX), (0x87B092C3013FE90B, 0x438C3C67BE8D0224, 0x9CC7D7C69CD777B6, 0xA09CAEBF594F0BA0)),
    (
        (0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89),
        (0x452821E638D01377, 0xBE5466CF34E90C6C),
        (0xA528F45403E61D95, 0x38C72DBD566E9788, 0xA5A1610E72FD18B5, 0x57BD43B5E52B7FE6),
    ),
]


def _block(counter, key):
    # Python ints >= 2**63 must reach numba as np.uint64 (its dispatcher cannot convert them
    # to an already compiled int64 signature).
    return tuple(int(v) for v in rng.philox4x64(*(U64(c) for c in counter), *(U64(k) for k in key)))


def _numpy_blocks(counter, key, n_blocks):
    # numpy's Philox increments its 256-bit counter (c0 least significant word, carries into
    # c1, c2, c3, wrapping at 2**256) *before* computing each block, and random_raw() then returns
    # the 4 words in order. Verified here: Philox(key=k, counter=c).random_raw(4) is the block of
    # counter c + 1, so to get the block of c we hand numpy c - 1.
    value = sum(c << (64 * i) for i, c in enumerate(counter))
    bit_generator = np.random.Philox(
        key=np.array(key, dtype=np.uint64),
        counter=np.array([((value - 1) % 2**256 >> (64 * i)) & MAX for i in range(4)], dtype=np.uint64),
    )
    return [int(v) for v in bit_generator.random_raw(4 * n_blocks)]


def _counters_and_keys():
    words = np.random.default_rng(7).integers(0, 2**64, size=(6, 6), dtype=np.uint64, endpoint=False)
    cases = [(tuple(int(w) for w in row[:4]), tuple(int(w) for w in row[4:])) for row in words]
    near = [MAX, MAX - 1, 2**63, 2**63 - 1, 2**32 - 1, 2**32, 1]
    cases += [((a, b, c, d), (a, d)) for a, b, c, d in zip(near, near[1:], near[2:], near[3:])]
    cases += [((MAX, MAX, 0, 0), (MAX, 0)), ((MAX, 0, MAX, 0), (0, MAX)), ((0, 0, 0, 0), (0, 0))]
    return cases


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert _block(counter, key) == expected


@pytest.mark.parametrize(("counter", "key"), _counters_and_keys())
def test_philox_matches_numpy_bit_for_bit(counter, key):
    numpy_words = _numpy_blocks(counter, key, 3)
    value = sum(c << (64 * i) for i, c in enumerate(counter))
    ours = []
    for j in range(3):  # the following counters exercise numpy's carries between words
        nxt = (value + j) % 2**256
        ours += _block(tuple((nxt >> (64 * i)) & MAX for i in range(4)), key)
    assert ours == numpy_words


@numba.njit
def _mulhilo_from_python(a, b):
    return rng._mulhilo(a, b)  # an intrinsic: callable only from compiled code


def test_mulhilo_against_python_ints():
    values = [0, 1, 2**32 - 1, 2**32, 2**63, MAX, MAX - 1, 0xD2E7470EE14C6C93, 0xCA5A826395121157]
    values += [int(v) for v in np.random.default_rng(3).integers(0, 2**64, size=20, dtype=np.uint64)]
    for a in values:
        for b in values:
            low, high = _mulhilo_from_python(U64(a), U64(b))
            assert (int(low), int(high)) == ((a * b) & MAX, (a * b) >> 64)


def test_key_scheme_and_draw_mapping():
    seed, event, stream = 2**64 - 5, 2**63 + 11, 1003
    for draw in range(11):
        block = _block((event, draw // 4, 0, 0), (seed, stream))
        x = int(rng.random_u64(U64(seed), U64(event), U64(stream), U64(draw)))
        assert x == block[draw % 4]
        u = rng.uniform(U64(seed), U64(event), U64(stream), U64(draw))
        assert u == ((x >> 12) + 0.5) * 2.0**-52


def test_event_uniform_key_scheme():
    """One number per event: word event % 4 of the block with counter (event // 4, 0, 0, 1),
    which `event_group_uniforms` gives whole, and which no uniform or normal draw uses."""
    seed, stream = 2**64 - 5, 21
    for event in (0, 1, 2, 3, 4, 7, 2**63 + 11, MAX):
        block = _block((event // 4, 0, 0, 1), (seed, stream))
        u = rng.event_uniform(U64(seed), U64(event), U64(stream))
        assert u == ((block[event % 4] >> 12) + 0.5) * 2.0**-52
        assert u == rng.event_group_uniforms(U64(seed), U64(event // 4), U64(stream))[event % 4]
        assert u != rng.uniform(U64(seed), U64(event), U64(stream), U64(0))


def test_int64_and_uint64_arguments_agree():
    assert rng.uniform(5, 6, 7, 9) == rng.uniform(U64(5), U64(6), U64(7), U64(9))
    assert rng.normal(5, 6, 7, 9) == rng.normal(U64(5), U64(6), U64(7), U64(9))


def test_uniform_is_exact_open_and_symmetric():
    assert rng._to_unit(U64(0)) == 2.0**-53
    assert rng._to_unit(U64(MAX)) == 1.0 - 2.0**-53
    for x in [0, 1, 4095, 4096, 2**52, 2**63, MAX - 4096, MAX]:
        u = rng._to_unit(U64(x))
        assert 0.0 < u < 1.0
        assert u + rng._to_unit(U64(MAX - x)) == 1.0


def test_ziggurat_layers_have_equal_area():
    # independent of the table construction: every layer of the ziggurat of exp(-x^2/2) must have
    # the area v, the base layer holding the tail beyond r (mpmath quadrature), and a word's
    # abscissa below k[i] must land where layer i lies wholly under the curve
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    r, v = rng.ZIGGURAT_R, rng.ZIGGURAT_LAYER_AREA
    k, w, f = rng._ZIGGURAT_K, rng._ZIGGURAT_W, rng._ZIGGURAT_F
    edges = w * 2.0**52  # outer edge x_i of layer i >= 1; w[0] holds the base box's width
    assert edges[255] == r
    tail = mpmath.quad(lambda x: mpmath.exp(-x * x / 2), [r, mpmath.inf])
    assert float(r * mpmath.exp(-r * r / 2) + tail) == pytest.approx(v, rel=1e-10)
    assert edges[0] * f[255] == pytest.approx(v, rel=1e-13)
    for i in range(1, 256):
        assert f[i] == pytest.approx(math.exp(-0.5 * edges[i] ** 2), rel=1e-15)
        assert edges[i] * (f[i - 1] - f[i]) == pytest.approx(v, rel=1e-9), i
        inner = edges[i - 1] if i > 1 else 0.0
        assert k[i] == math.floor(inner / edges[i] * 2.0**52)
    assert k[0] == math.floor(r / edges[0] * 2.0**52)


def test_normal_is_the_ziggurat_of_its_word():
    seed, event, stream = 9, 123, rng.STREAM_BEAM
    k, w = rng._ZIGGURAT_K, rng._ZIGGURAT_W
    fast = 0
    for index in range(400):
        word = int(rng.random_u64(seed, event, stream, index))
        layer, sign, abscissa = word & 0xFF, (word >> 8) & 1, (word >> 9) & (2**52 - 1)
        if abscissa < k[layer]:
            fast += 1
            assert rng.normal(seed, event, stream, index) == (-1.0 if sign else 1.0) * abscissa * w[layer]
    assert 380 <= fast < 400  # 1.5 % of the words go on to the wedge or the tail


def test_normal_distribution_in_the_wedges_and_the_tail():
    # 1e7 normals: the words outside their layer's box (the wedges, the tail beyond r) are about
    # 150,000 of them; chi2 of |z| in 120 bins up to 6 against the exact probabilities, and the
    # tail counts, each within 5 standard deviations
    z = np.abs(rng.normal_array(SEED, 0, 2_500_000, rng.STREAM_PAIR, 4).ravel())
    n = z.size
    edges = np.concatenate([np.linspace(0.0, 6.0, 121), [np.inf]])
    observed = np.histogram(z, edges)[0]
    expected = n * np.diff(2.0 * stats.norm.cdf(edges) - 1.0)
    dof = edges.size - 2
    chi2 = np.sum((observed - expected) ** 2 / expected)
    assert chi2 < dof + 5 * math.sqrt(2 * dof)
    for cut in (rng.ZIGGURAT_R, 4.0, 4.5):
        p = 2.0 * stats.norm.sf(cut)
        assert abs(np.count_nonzero(z > cut) - n * p) < 5 * math.sqrt(n * p), cut
    assert stats.kstest(z[:1_000_000], stats.halfnorm.cdf).pvalue > 1e-4


@pytest.mark.parametrize("n", range(10))
def test_fill_matches_scalar_draws(n):
    seed, event, stream = 31, 2**40 + 1, rng.STREAM_DIGITIZATION
    out = np.empty(n)
    rng.fill_uniform(seed, event, stream, out)
    assert out.tolist() == [rng.uniform(seed, event, stream, d) for d in range(n)]
    rng.fill_normal(seed, event, stream, out)
    assert out.tolist() == [rng.normal(seed, event, stream, d) for d in range(n)]


def test_chunk_independence_and_single_event():
    whole = rng.uniform_array(SEED, 0, 1000, rng.STREAM_ELASTIC, 7)
    parts = np.concatenate([rng.uniform_array(SEED, 0, 300, rng.STREAM_ELASTIC, 7),
                            rng.uniform_array(SEED, 300, 700, rng.STREAM_ELASTIC, 7)])
    np.testing.assert_array_equal(whole, parts)
    for k in (0, 299, 300, 777, 999):
        np.testing.assert_array_equal(rng.uniform_array(SEED, k, 1, rng.STREAM_ELASTIC, 7)[0], whole[k])
        assert [rng.uniform(SEED, k, rng.STREAM_ELASTIC, d) for d in range(7)] == whole[k].tolist()
    normals = rng.normal_array(SEED, 0, 1000, rng.STREAM_BEAM, 5)
    np.testing.assert_array_equal(normals[500:], rng.normal_array(SEED, 500, 500, rng.STREAM_BEAM, 5))


def test_events_near_the_end_of_the_counter_range():
    first = 2**64 - 10
    values = rng.uniform_array(MAX, first, 10, MAX, 3)
    assert values[9, 2] == rng.uniform(U64(MAX), U64(MAX), U64(MAX), 2)
    with pytest.raises(ValueError, match="first_event"):
        rng.uniform_array(1, first, 11, 1, 3)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 numba threads")
def test_thread_count_independence():
    original = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = (rng.uniform_array(SEED, 17, 20_001, 3, 5), rng.normal_array(SEED, 17, 20_001, 3, 5))
        numba.set_num_threads(2)
        two = (rng.uniform_array(SEED, 17, 20_001, 3, 5), rng.normal_array(SEED, 17, 20_001, 3, 5))
    finally:
        numba.set_num_threads(original)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


@njit(parallel=True)
def _kernel_using_rng(seed, n, out):
    for i in numba.prange(n):
        out[i] = rng.uniform(seed, i, rng.multiple_scattering_stream(2), 1) + rng.normal(seed, i, rng.STREAM_NOISE, 3)


def test_callable_from_parallel_kernels():
    out = np.empty(100)
    _kernel_using_rng(SEED, 100, out)
    expected = [rng.uniform(SEED, i, 1002, 1) + rng.normal(SEED, i, rng.STREAM_NOISE, 3) for i in range(100)]
    np.testing.assert_array_equal(out, expected)


def test_uniform_statistics():
    u = rng.uniform_array(SEED, 0, 250_000, rng.STREAM_ELASTIC, 4).ravel()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert u.min() > 0.0 and u.max() < 1.0


def test_normal_moments():
    z = rng.normal_array(SEED, 0, 250_000, rng.STREAM_BEAM, 4).ravel()
    n = z.size
    assert abs(z.mean()) < 5 * math.sqrt(1 / n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)


def test_streams_seeds_events_and_draws_are_uncorrelated():
    n = 1_000_000
    base = rng.uniform_array(SEED, 0, n, rng.STREAM_ELASTIC, 2)
    others = {
        "stream": rng.uniform_array(SEED, 0, n, rng.STREAM_BEAM, 1)[:, 0],
        "seed": rng.uniform_array(SEED + 1, 0, n, rng.STREAM_ELASTIC, 1)[:, 0],
        "derived seed": rng.uniform_array(rng.derive_seed(SEED, 1), 0, n, rng.STREAM_ELASTIC, 1)[:, 0],
        "next event": np.roll(base[:, 0], -1),
        "next draw": base[:, 1],
    }
    for name, values in others.items():
        assert abs(np.corrcoef(base[:, 0], values)[0, 1]) < 5 / math.sqrt(n), name


def test_stream_identifiers_are_distinct():
    named = [getattr(rng, name) for name in dir(rng) if name.startswith("STREAM_")]
    layers = [rng.multiple_scattering_stream(layer) for layer in range(100)]
    assert len(set(named + layers)) == len(named) + len(layers)
    assert rng.multiple_scattering_stream(7) == 1007


@pytest.mark.parametrize("seed", [0, 1, 2**63, MAX, np.uint64(MAX), np.int64(5), np.int8(3)])
def test_validate_seed_accepts(seed):
    assert rng.validate_seed(seed) == int(seed)
    assert type(rng.validate_seed(seed)) is int


@pytest.mark.parametrize(
    "seed", [-1, 2**64, 2**70, 1.0, 2.5, float("nan"), True, False, np.True_, "7", "abc", None, np.int64(-3),
             np.float64(4.0), [1], 1 + 0j],
)
def test_validate_seed_rejects(seed):
    with pytest.raises(ValueError) as info:
        rng.validate_seed(seed)
    message = str(info.value)
    assert "seed" in message and str(seed) in message and "2**64" in message


def test_derive_seed():
    shards = [rng.derive_seed(SEED, k) for k in range(1000)]
    assert len(set(shards)) == 1000 and SEED not in shards
    assert all(0 <= s < 2**64 for s in shards)
    assert shards[3] == int(rng.random_u64(SEED, 3, rng.STREAM_SEED_DERIVATION, 0))
    assert rng.derive_seed(SEED, 3, 4) == rng.derive_seed(rng.derive_seed(SEED, 3), 4)
    assert rng.derive_seed(SEED, 3, 4) != rng.derive_seed(SEED, 4, 3)
    assert rng.derive_seed(SEED) == SEED
    assert rng.derive_seed(MAX, MAX) == int(rng.random_u64(U64(MAX), U64(MAX), 0, 0))
    with pytest.raises(ValueError, match="label"):
        rng.derive_seed(SEED, -1)
    with pytest.raises(ValueError, match="seed"):
        rng.derive_seed(-1, 1)


def test_normal4_and_uniform4_equal_the_single_draws():
    from fastsim.rng import normal, normal4, uniform, uniform4, uniform_pair

    for draw in range(12):  # every word position, the last of a block included
        assert uniform_pair(np.uint64(3), 7, 2, draw) == (uniform(np.uint64(3), 7, 2, draw),
                                                           uniform(np.uint64(3), 7, 2, draw + 1))

    for event in (0, 7, 2**40):
        for block in (0, 1, 5):
            fours = normal4(np.uint64(3), event, 2, block)
            singles = [normal(np.uint64(3), event, 2, 4 * block + k) for k in range(4)]
            np.testing.assert_array_equal(fours, singles)
            np.testing.assert_array_equal(uniform4(np.uint64(3), event, 2, block),
                                          [uniform(np.uint64(3), event, 2, 4 * block + k) for k in range(4)])
