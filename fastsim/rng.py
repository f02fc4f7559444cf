"""Counter-based random numbers for numba kernels: Philox-4x64-10.

Every random number of the toolkit is a pure function of (seed, event index, stream, draw), so a
result does not depend on chunk size, thread count or worker layout, and event k can be
regenerated alone. There is no state to carry around and nothing to seed per thread.

What to use when (all are `@njit` scalars, callable from other kernels and inside `prange`):

- `uniform(seed, event, stream, draw)`: one float64 in the open interval (0, 1), safe for log.
- `normal(seed, event, stream, index)`: one standard normal (ziggurat).
- `fill_uniform(seed, event, stream, out)` / `fill_normal(...)`: draws 0 .. n-1 into `out`,
  one Philox block per 4 uniforms, when a kernel needs several numbers for one event.
- `event_uniform(seed, event, stream)`: the one uniform of an event in a stream that draws a
  single number per event; `event_group_uniforms(seed, group, stream)` gives those of events
  4 group .. 4 group + 3 from one Philox block, for a loop over consecutive events.
- `random_u64(...)` / `philox4x64(...)`: the raw 64-bit words.
- Python side: `validate_seed` at every API boundary taking a seed, `derive_seed` for campaign
  shards, `uniform_array` / `normal_array` for tests and studies.

Key scheme. The Philox key is (seed, stream) and the counter is (event, draw // 4, 0, 0); the
draw-th 64-bit number is word draw % 4 of that block. Uniforms take the top 52 bits,
u = ((x >> 12) + 0.5) * 2**-52, which is exact in float64, never 0 or 1, and symmetric
(u(~x) = 1 - u(x)). Normal number `index` is the ziggurat of word `index` (Marsaglia & Tsang,
J. Stat. Softw. 5 (2000) 8, with 256 layers and the bit layout of numpy's
`Generator.standard_normal`: 8 bits pick the layer, 1 the sign, 52 the abscissa). One word gives
the normal with probability 0.985; the rest (the wedges of the layers and the tail beyond
r = 3.654) takes further words from the blocks with counter (event, index // 4, attempt,
index % 4 + 1), attempt = 1, 2, ..., which no uniform uses. Uniform draw i and normal index i of
one stream share random bits: within one stream, use either kind for a given range of indices,
not both. A stream with one number per event (`event_uniform`) takes word event % 4 of the block
with counter (event // 4, 0, 0, 1), which no other draw uses: four consecutive events share a
block, a quarter of the Philox work when a loop keeps it for the next event.
Stream 0 is reserved for `derive_seed`; named streams are below 1000 and multiple scattering in
layer l uses stream 1000 + l.

`philox4x64` is bit-identical to numpy's `np.random.Philox` block function (numpy increments its
counter before each block, so `Philox(key=k, counter=c).random_raw(4)` is the block of c + 1).

Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC11 (2011).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from llvmlite import ir
from numba import float64, int64, njit, prange, types, uint64
from numba.extending import intrinsic


# Stream identifiers: one per use, so that changing one effect never shifts another's numbers.
STREAM_SEED_DERIVATION = 0  # reserved for derive_seed
STREAM_ELASTIC = 1  # elastic event: one block per event (t, azimuth, vertex, unweighting)
STREAM_BEAM = 2  # beam energy, position and direction
STREAM_RADIATION = 3  # QED radiative corrections (photon emission at the vertex)
STREAM_PAIR = 4  # pair production
STREAM_PROCESS = 5  # process choice (elastic or pair) when processes are mixed
STREAM_IMPORT = 6  # imported (LHE) samples: anything drawn while reading them
STREAM_BREMSSTRAHLUNG = 7  # bremsstrahlung in a single slab (tests; the detector uses bremsstrahlung_stream)
STREAM_DIGITIZATION = 8  # strip digitization (cluster charge, resolution)
STREAM_EFFICIENCY = 9  # hit efficiency
STREAM_NOISE = 10  # noise hits
STREAM_PILEUP = 11  # pile-up muons
STREAM_CALORIMETER = 12  # calorimeter response (crystal noise, shower and muon deposits)
STREAM_RESIDUAL_SMEARING = 20  # reco.selection: residual (data/MC) smearing of the reconstructed angles
STREAM_PARAMETRIC = 21  # reco.parametric: smearing of the truth angles in the parametric mode
STREAM_BENCHMARK_SMEARING = 991  # benchmarks/bench_fit.py: Gaussian smearing of truth-level templates
STREAM_CAMPAIGN_SELF_TEST = 999  # studies.campaign: the self-test task of the executors
_MULTIPLE_SCATTERING_BASE = 1000  # stream of layer l is 1000 + l
_BREMSSTRAHLUNG_BASE = 100_000  # stream of layer l is 100000 + l

_UINT64_LIMIT = 2**64

# Philox-4x64 multipliers and Weyl key increments (Salmon et al. 2011, Random123).
_M0 = np.uint64(0xD2E7470EE14C6C93)
_M1 = np.uint64(0xCA5A826395121157)
_W0 = np.uint64(0x9E3779B97F4A7C15)
_W1 = np.uint64(0xBB67AE8584CAA73B)
_S12 = np.uint64(12)
_ZERO = np.uint64(0)
_ROUNDS = 10
_TWO_M52 = 2.0**-52
_ONE = np.uint64(1)
_S8 = np.uint64(8)
_S9 = np.uint64(9)
_LAYER_BITS = np.uint64(0xFF)
_MANTISSA_BITS = np.uint64(0x000FFFFFFFFFFFFF)

# The scalar draws that are not inlined have one compiled version each: (seed, event, stream,
# draw) as uint64, whatever integer types and constants the callers pass. numba would otherwise
# compile a version for every combination of int64, uint64 and literal constants it meets (9 of
# `normal4` at ~5 s each from a cold cache); the numbers are the same (int64 -> uint64 keeps the
# bits, as the np.uint64() inside did).
_KEY = (uint64, uint64, uint64, uint64)

# Ziggurat of the standard normal with 256 layers of equal area under exp(-x^2/2) (Marsaglia &
# Tsang 2000; the constants of numpy's random/src/distributions/ziggurat_constants.h): the base
# layer, a box of width v / f(r) holding the tail beyond r, and 255 layers above it.
ZIGGURAT_R = 3.6541528853610088
ZIGGURAT_LAYER_AREA = 4.92867323399e-3


def _ziggurat_tables():
    """(k, w, f) of the 256 layers, Marsaglia & Tsang's setup with 52-bit abscissae. Layer 0 is
    the base: a box of width v / f(r) = w[0] 2^52 over the tail. Layer i >= 1 reaches out to
    x_i = w[i] 2^52 (x_255 = r, smaller upwards), f[i] = exp(-x_i^2 / 2), and f[0] = 1 (x = 0,
    the top). A word's abscissa a < k[i] lies where layer i is wholly under the curve; its
    value is a w[i]."""
    scale = 2.0**52
    k, w, f = np.zeros(256, np.int64), np.zeros(256), np.zeros(256)
    edge = outer = ZIGGURAT_R
    base_width = ZIGGURAT_LAYER_AREA / math.exp(-0.5 * edge * edge)
    k[0] = int(edge / base_width * scale)
    w[0], w[255] = base_width / scale, edge / scale
    f[0], f[255] = 1.0, math.exp(-0.5 * edge * edge)
    for i in range(254, 0, -1):
        edge = math.sqrt(-2.0 * math.log(ZIGGURAT_LAYER_AREA / edge + math.exp(-0.5 * edge * edge)))
        k[i + 1] = int(edge / outer * scale)
        outer = edge
        f[i] = math.exp(-0.5 * edge * edge)
        w[i] = edge / scale
    return k, w, f


_ZIGGURAT_K, _ZIGGURAT_W, _ZIGGURAT_F = _ziggurat_tables()


@intrinsic
def _mulhilo(typingctx, a, b):
    """(low, high) 64-bit words of the 128-bit product a * b of two uint64: one native
    64 x 64 -> 128 multiplication (LLVM i128), which numba does not offer as a type."""
    signature = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, sig, args):
        i128 = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        low = builder.trunc(product, ir.IntType(64))
        high = builder.trunc(builder.lshr(product, ir.Constant(i128, 64)), ir.IntType(64))
        return context.make_tuple(builder, sig.return_type, (low, high))

    return signature, codegen


@njit(cache=True, nogil=True, inline="always")
def philox4x64(c0, c1, c2, c3, k0, k1):
    """One Philox-4x64-10 block.

    Parameters
    ----------
    c0, c1, c2, c3 : uint64
        Counter words (c0 least significant).
    k0, k1 : uint64
        Key words.

    Returns
    -------
    tuple of 4 uint64
        The block, equal to numpy's ``np.random.Philox`` output for the same key and counter.

    Notes
    -----
    Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC11 (2011).
    """
    c0, c1, c2, c3 = np.uint64(c0), np.uint64(c1), np.uint64(c2), np.uint64(c3)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(_ROUNDS):
        lo0, hi0 = _mulhilo(_M0, c0)
        lo1, hi1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 += _W0  # the bump after the last round is unused
        k1 += _W1
    return c0, c1, c2, c3


@njit(cache=True, nogil=True, inline="always")
def _block(seed, event, stream, block):
    """Philox block `block` of (seed, event, stream): key (seed, stream), counter (event, block, 0, 0)."""
    return philox4x64(np.uint64(event), np.uint64(block), _ZERO, _ZERO, np.uint64(seed), np.uint64(stream))


@njit(cache=True, nogil=True, inline="always")
def _to_unit(x):
    """Open-interval uniform from a 64-bit word: ((x >> 12) + 0.5) 2^-52, exact, in (0, 1)."""
    return (np.float64(x >> _S12) + 0.5) * _TWO_M52


@njit(uint64(*_KEY), cache=True, nogil=True)
def random_u64(seed, event, stream, draw):
    """The draw-th 64-bit random word of (seed, event, stream): word draw % 4 of block draw // 4."""
    draw = np.uint64(draw)
    x0, x1, x2, x3 = _block(seed, event, stream, draw >> np.uint64(2))
    word = draw & np.uint64(3)
    if word == 0:
        return x0
    if word == 1:
        return x1
    if word == 2:
        return x2
    return x3


@njit(float64(*_KEY), cache=True, nogil=True)
def uniform(seed, event, stream, draw):
    """The draw-th uniform of (seed, event, stream), a float64 in the open interval (0, 1)."""
    return _to_unit(random_u64(seed, event, stream, draw))


@njit(cache=True, nogil=True, inline="always")
def uniform_pair(seed, event, stream, draw):
    """Uniform draws `draw` and `draw + 1` of (seed, event, stream): the numbers of two `uniform`
    calls, from one Philox block unless `draw` is the last word of its block."""
    draw = np.uint64(draw)
    word = draw & np.uint64(3)
    if word == 3:
        return uniform(seed, event, stream, draw), uniform(seed, event, stream, draw + np.uint64(1))
    x0, x1, x2, x3 = _block(seed, event, stream, draw >> np.uint64(2))
    if word == 0:
        return _to_unit(x0), _to_unit(x1)
    if word == 1:
        return _to_unit(x1), _to_unit(x2)
    return _to_unit(x2), _to_unit(x3)


@njit(cache=True, nogil=True, inline="always")
def uniform4(seed, event, stream, block):
    """Uniform draws 4 block .. 4 block + 3 of (seed, event, stream) from one Philox block."""
    x0, x1, x2, x3 = _block(seed, event, stream, block)
    return _to_unit(x0), _to_unit(x1), _to_unit(x2), _to_unit(x3)


@njit(cache=True, nogil=True, inline="always")
def event_group_uniforms(seed, group, stream):
    """The `event_uniform`s of events 4 group .. 4 group + 3 of (seed, stream), from one Philox
    block (counter (group, 0, 0, 1))."""
    x0, x1, x2, x3 = philox4x64(np.uint64(group), _ZERO, _ZERO, _ONE, np.uint64(seed), np.uint64(stream))
    return _to_unit(x0), _to_unit(x1), _to_unit(x2), _to_unit(x3)


@njit(float64(*_KEY[:3]), cache=True, nogil=True)
def event_uniform(seed, event, stream):
    """The one uniform of `event` in a stream that draws a single number per event: word event % 4
    of the block of `event_group_uniforms(seed, event // 4, stream)`."""
    return event_group_uniforms(seed, event >> np.uint64(2), stream)[np.int64(event & np.uint64(3))]


@njit(cache=True, nogil=True, inline="always")
def _ziggurat_candidate(word):
    """(layer, abscissa bits, signed value) of a 64-bit word: bits 0-7, bits 9-60, bit 8 the sign."""
    layer = np.int64(word & _LAYER_BITS)
    abscissa = np.int64((word >> _S9) & _MANTISSA_BITS)
    sign = 1.0 - 2.0 * np.float64((word >> _S8) & _ONE)  # no branch: the sign is a coin flip
    return layer, abscissa, sign * np.float64(abscissa) * _ZIGGURAT_W[layer]


@njit(float64(float64, int64, *_KEY, int64), cache=True, nogil=True)
def _ziggurat_rest(value, layer, seed, event, stream, block, word_index):
    """The ziggurat after a word fell outside its layer's box (1.5 % of the words): the wedge test
    or the tail (Marsaglia 1964: r + x with x ~ Exp(r) accepted if 2 y > x^2, y ~ Exp(1)), with
    the words of the blocks (event, block, attempt, word_index + 1), attempt = 1, 2, ..."""
    attempt = 0
    while True:
        attempt += 1
        x0, x1, x2, _ = philox4x64(np.uint64(event), np.uint64(block), np.uint64(attempt), np.uint64(word_index + 1),
                                   np.uint64(seed), np.uint64(stream))
        if layer == 0:
            x = -math.log(_to_unit(x1)) * (1.0 / ZIGGURAT_R)
            if -2.0 * math.log(_to_unit(x2)) > x * x:
                return math.copysign(ZIGGURAT_R + x, value)
            continue
        height = _ZIGGURAT_F[layer] + (_ZIGGURAT_F[layer - 1] - _ZIGGURAT_F[layer]) * _to_unit(x1)
        if height < math.exp(-0.5 * value * value):
            return value
        layer, abscissa, value = _ziggurat_candidate(x0)
        if abscissa < _ZIGGURAT_K[layer]:
            return value


@njit(cache=True, nogil=True, inline="always")
def _ziggurat(word, seed, event, stream, block, word_index):
    """Standard normal from word `word_index` of Philox block `block` (see the module docstring)."""
    layer, abscissa, value = _ziggurat_candidate(word)
    if abscissa < _ZIGGURAT_K[layer]:
        return value
    return _ziggurat_rest(value, layer, seed, event, stream, block, word_index)


@njit(types.UniTuple(float64, 4)(*_KEY), cache=True, nogil=True)
def normal4(seed, event, stream, block):
    """Normals 4 block .. 4 block + 3 of (seed, event, stream), equal to `normal` of those
    indices, from one Philox block (and, rarely, more)."""
    x0, x1, x2, x3 = _block(seed, event, stream, block)
    return (_ziggurat(x0, seed, event, stream, block, 0), _ziggurat(x1, seed, event, stream, block, 1),
            _ziggurat(x2, seed, event, stream, block, 2), _ziggurat(x3, seed, event, stream, block, 3))


@njit(float64(*_KEY), cache=True, nogil=True)
def normal(seed, event, stream, index):
    """Standard normal number `index` of (seed, event, stream): the ziggurat of its 64-bit word."""
    index = np.uint64(index)
    word_index = np.int64(index & np.uint64(3))
    return _ziggurat(random_u64(seed, event, stream, index), seed, event, stream, index >> np.uint64(2), word_index)


@njit([types.void(*_KEY[:3], float64[::1]), types.void(*_KEY[:3], float64[:])], cache=True, nogil=True)
def fill_uniform(seed, event, stream, out):
    """Fill out[0 .. n) with the uniform draws 0 .. n-1 of (seed, event, stream), ceil(n/4) blocks."""
    n = out.shape[0]
    for b in range((n + 3) // 4):
        x0, x1, x2, x3 = _block(seed, event, stream, b)
        i = 4 * b
        out[i] = _to_unit(x0)
        if i + 1 < n:
            out[i + 1] = _to_unit(x1)
        if i + 2 < n:
            out[i + 2] = _to_unit(x2)
        if i + 3 < n:
            out[i + 3] = _to_unit(x3)


@njit([types.void(*_KEY[:3], float64[::1]), types.void(*_KEY[:3], float64[:])], cache=True, nogil=True)
def fill_normal(seed, event, stream, out):
    """Fill out[0 .. n) with the normals 0 .. n-1 of (seed, event, stream), ceil(n/4) blocks."""
    n = out.shape[0]
    for b in range((n + 3) // 4):
        z0, z1, z2, z3 = normal4(seed, event, stream, b)
        i = 4 * b
        out[i] = z0
        if i + 1 < n:
            out[i + 1] = z1
        if i + 2 < n:
            out[i + 2] = z2
        if i + 3 < n:
            out[i + 3] = z3


@njit(int64(int64), cache=True, nogil=True)
def multiple_scattering_stream(layer_index):
    """Stream of the multiple scattering in layer `layer_index` (>= 0): 1000 + layer_index."""
    return _MULTIPLE_SCATTERING_BASE + layer_index


@njit(int64(int64), cache=True, nogil=True)
def bremsstrahlung_stream(layer_index):
    """Stream of the bremsstrahlung in layer `layer_index` (>= 0): 100000 + layer_index."""
    return _BREMSSTRAHLUNG_BASE + layer_index


def _validate_uint64(name, value):
    """`value` as a Python int if it is an integer (not bool) in [0, 2**64), else ValueError."""
    is_integer = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not is_integer or not 0 <= int(value) < _UINT64_LIMIT:
        raise ValueError(f"{name} must be an integer with 0 <= {name} < 2**64, got {value!r}")
    return int(value)


def validate_seed(seed) -> int:
    """Check a seed and return it as a Python int.

    Parameters
    ----------
    seed : int or numpy integer
        Must satisfy 0 <= seed < 2**64; bools, floats and strings are refused.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        Naming `seed`, the value and the allowed range.
    """
    return _validate_uint64("seed", seed)


def derive_seed(seed, *labels) -> int:
    """A new 64-bit seed from `seed` and integer labels (e.g. a campaign shard number).

    Parameters
    ----------
    seed : int
        0 <= seed < 2**64.
    *labels : int
        Each 0 <= label < 2**64; applied in order, so ``derive_seed(s, a, b)`` equals
        ``derive_seed(derive_seed(s, a), b)``. Without labels the seed is returned unchanged.

    Returns
    -------
    int

    Notes
    -----
    Each label maps s to ``random_u64(s, label, STREAM_SEED_DERIVATION, 0)``, word 0 of the Philox
    block with key (s, 0) and counter (label, 0, 0, 0). Stream 0 is used by nothing else.
    """
    result = validate_seed(seed)
    for label in labels:
        label = _validate_uint64("label", label)
        result = int(random_u64(np.uint64(result), np.uint64(label), STREAM_SEED_DERIVATION, 0))
    return result


@njit(parallel=True, cache=True, nogil=True)
def _uniform_rows(seed, first_event, stream, out):
    for i in prange(out.shape[0]):
        fill_uniform(seed, first_event + np.uint64(i), stream, out[i])


@njit(parallel=True, cache=True, nogil=True)
def _normal_rows(seed, first_event, stream, out):
    for i in prange(out.shape[0]):
        fill_normal(seed, first_event + np.uint64(i), stream, out[i])


def _rows(kernel, seed, first_event, n_events, stream, draws_per_event):
    seed = validate_seed(seed)
    first_event = _validate_uint64("first_event", first_event)
    n_events = _validate_uint64("n_events", n_events)
    stream = _validate_uint64("stream", stream)
    draws_per_event = _validate_uint64("draws_per_event", draws_per_event)
    if first_event + n_events > _UINT64_LIMIT:
        raise ValueError(f"first_event + n_events must be <= 2**64, got {first_event} + {n_events}")
    out = np.empty((n_events, draws_per_event), dtype=np.float64)
    kernel(np.uint64(seed), np.uint64(first_event), np.uint64(stream), out)
    return out


def uniform_array(seed, first_event, n_events, stream, draws_per_event):
    """Uniform draws 0 .. draws_per_event-1 of events first_event .. first_event + n_events - 1.

    Returns
    -------
    ndarray, shape (n_events, draws_per_event), float64
        Row i is `fill_uniform` of event first_event + i; computed in parallel over events.
    """
    return _rows(_uniform_rows, seed, first_event, n_events, stream, draws_per_event)


def normal_array(seed, first_event, n_events, stream, draws_per_event):
    """Standard normals 0 .. draws_per_event-1 of events first_event .. first_event + n_events - 1.

    Returns
    -------
    ndarray, shape (n_events, draws_per_event), float64
        Row i is `fill_normal` of event first_event + i; computed in parallel over events.
    """
    return _rows(_normal_rows, seed, first_event, n_events, stream, draws_per_event)
