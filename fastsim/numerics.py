"""Elementary functions for the hot loops, written as plain arithmetic.

numba calls libm for `math.sin`, `math.cos`, `math.atan2` and `math.tan` (9-20 ns each on the
development machine, SVML being unavailable there); the generator needs them for every event.
These versions are polynomials after an exact range reduction, accurate to a few units in the
last place (tests compare them with libm over 1e6 arguments):

- `sincos_turn(u)`: (cos 2 pi u, sin 2 pi u) for a fraction of a turn u, e.g. a uniform
  azimuth. The reduction u - k/4 is exact, so the result is closer to the true value than
  math.cos(2 * math.pi * u), whose argument is already rounded.
- `polar_angle(transverse, longitudinal)`: atan2(transverse, longitudinal) for transverse >= 0,
  the polar angle of a momentum in [0, pi].
- `tan_small(x)`: tan x, by its Taylor series for the small angles of multiple scattering and
  beam divergence (|x| < 1/16), by libm elsewhere.
- `float_bits(x)`: the IEEE-754 bits of a float64 as an int64 (no conversion: a register move).
  For x > 0, bits >> (52 - k) counts intervals of 2^k per octave, an index into tables that are
  uniform in log x, without a logarithm.
- `prefetch(array, index)`: a hint that array[index] (row `index` of a 2-D array) will be read
  soon, so that the loads of a gather from a table larger than the cache overlap.

Coefficients: S. L. Moshier, Cephes Math Library (sin.c), minimax polynomials for |x| <= pi/4;
Sun Microsystems fdlibm (s_atan.c), a minimax polynomial for |x| <= 7/16 that needs no
division, so small angles, the common case, cost one division (the ratio).
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_TWO_PI = 2.0 * math.pi
_HALF_PI = 0.5 * math.pi
_PI_LOW = 1.2246467991473532e-16  # pi - float(pi): atan2's pi - atan(x) without losing bits
_ATAN_LOW = 6.123233995736765886130e-17  # pi/2 - float(pi/2)


@njit(cache=True, nogil=True, inline="always")
def _sin_reduced(x, z):
    """sin x for |x| <= pi/4, z = x^2 (Cephes sin.c)."""
    p = 1.58962301576546568060e-10
    p = p * z - 2.50507477628578072866e-8
    p = p * z + 2.75573136213857245213e-6
    p = p * z - 1.98412698295895385996e-4
    p = p * z + 8.33333333332211858878e-3
    p = p * z - 1.66666666666666307295e-1
    return x + x * z * p


@njit(cache=True, nogil=True, inline="always")
def _cos_reduced(z):
    """cos x for |x| <= pi/4, z = x^2 (Cephes sin.c)."""
    p = -1.13585365213876817300e-11
    p = p * z + 2.08757008419747316778e-9
    p = p * z - 2.75573141792967388112e-7
    p = p * z + 2.48015872888517045348e-5
    p = p * z - 1.38888888888730564116e-3
    p = p * z + 4.16666666666665929218e-2
    return 1.0 - 0.5 * z + z * z * p


@njit(cache=True, nogil=True)
def sincos_turn(u):
    """(cos 2 pi u, sin 2 pi u) for 0 <= u <= 1.

    u = k/4 + r with k = round(4 u) and |r| <= 1/8 (exact in floating point), then the
    polynomials at x = 2 pi r and a rotation by k quarter turns.
    """
    quarter = math.floor(4.0 * u + 0.5)
    x = _TWO_PI * (u - 0.25 * quarter)
    z = x * x
    s = _sin_reduced(x, z)
    c = _cos_reduced(z)
    k = int(quarter) & 3  # branch-free rotation: random azimuths would defeat the predictor
    odd = (k & 1) == 1
    cos_sign = float(1 - ((k + 1) & 2))
    sin_sign = float(1 - (k & 2))
    return cos_sign * (s if odd else c), sin_sign * (c if odd else s)


@njit(cache=True, nogil=True, inline="always")
def _atan_series(x):
    """x - atan x over x for |x| <= 7/16 (fdlibm s_atan.c: odd polynomial of degree 23, split
    in even and odd powers of z = x^2 for two independent Horner chains)."""
    z = x * x
    w = z * z
    s1 = z * (3.33333333333329318027e-01 + w * (1.42857142725034663711e-01 + w * (9.09088713343650656196e-02 + w * (
        6.66107313738753120669e-02 + w * (4.97687799461593236017e-02 + w * 1.62858201153657823623e-02)))))
    s2 = w * (-1.99999999998764832476e-01 + w * (-1.11111104054623557880e-01 + w * (-7.69187620504482999495e-02 + w * (
        -5.83357013379057348645e-02 + w * -3.65315727442169155270e-02))))
    return s1 + s2


@njit(cache=True, nogil=True, inline="always")
def _atan_nonnegative(x):
    """atan x for x >= 0 (fdlibm s_atan.c): the series below 7/16, elsewhere
    atan x = atan c + atan((x - c) / (1 + x c)) for c = 1/2, 1, 3/2, infinity, with atan c in
    two parts (hi + lo) to keep the last bits."""
    if x < 0.4375:
        return x - x * _atan_series(x)
    if x < 0.6875:
        high, low, x = 4.63647609000806093515e-01, 2.26987774529616870924e-17, (2.0 * x - 1.0) / (2.0 + x)
    elif x < 1.1875:
        high, low, x = 7.85398163397448278999e-01, 3.06161699786838301793e-17, (x - 1.0) / (x + 1.0)
    elif x < 2.4375:
        high, low, x = 9.82793723247329054082e-01, 1.39033110312309984516e-17, (x - 1.5) / (1.0 + 1.5 * x)
    else:
        high, low, x = _HALF_PI, _ATAN_LOW, -1.0 / x
    return high - ((x * _atan_series(x) - low) - x)


@njit(cache=True, nogil=True)
def polar_angle(transverse, longitudinal):
    """atan2(transverse, longitudinal) in [0, pi] for transverse >= 0 (any longitudinal)."""
    if longitudinal > 0.0:
        return _atan_nonnegative(transverse / longitudinal)
    if longitudinal < 0.0:
        return (math.pi - _atan_nonnegative(transverse / -longitudinal)) + _PI_LOW
    if longitudinal == 0.0:
        return _HALF_PI if transverse > 0.0 else transverse * 0.0  # 0 stays 0, NaN stays NaN
    return longitudinal  # NaN


_TAN_SERIES_LIMIT = 0.0625


@njit(cache=True, nogil=True, inline="always")
def tan_small(x):
    """tan x (rad). For |x| < 1/16 the Taylor series to x^13 (the first omitted term,
    929569/638512875 x^15, is below 2e-20 of tan x there); math.tan elsewhere."""
    if abs(x) < _TAN_SERIES_LIMIT:
        z = x * x
        p = 21844.0 / 6081075.0
        p = p * z + 1382.0 / 155925.0
        p = p * z + 62.0 / 2835.0
        p = p * z + 17.0 / 315.0
        p = p * z + 2.0 / 15.0
        p = p * z + 1.0 / 3.0
        return x + x * z * p
    return math.tan(x)


@intrinsic
def float_bits(typingctx, x):
    """The bits of the float64 x as an int64 (an LLVM bitcast; callable inside numba kernels only)."""
    if not isinstance(x, types.Float) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Prefetch the cache line of array[index] (1-D) or array[index, 0] (2-D): LLVM's
    llvm.prefetch (read, keep in all cache levels), which changes no value. The index must lie
    inside the array, as for an element access (no bounds check). Callable inside numba kernels
    only."""
    if not (isinstance(array, types.Array) and array.ndim in (1, 2) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        position = context.cast(builder, args[1], index_type, types.intp)
        indices = [position] + [context.get_constant(types.intp, 0)] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, indices, wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        hint = ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3)
        function = cgutils.get_or_insert_function(builder.module, hint, "llvm.prefetch.p0")
        read, high_locality, data_cache = (ir.Constant(ir.IntType(32), value) for value in (0, 3, 1))
        builder.call(function, [builder.bitcast(pointer, byte_pointer), read, high_locality, data_cache])
        return context.get_dummy_value()

    return types.void(array, index), codegen
