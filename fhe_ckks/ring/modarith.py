"""Word-size modular arithmetic on ``uint64``: Shoup and Barrett multiplication.

Every modulus ``q`` handled by the ring layer is an odd prime below 2^61
(:data:`MAX_MODULUS_BITS`).  That bound leaves two spare bits in a 64-bit word,
which is what lets the NTT keep values *lazily* in ``[0, 4q)`` between
butterflies and reduce only once at the end (Harvey, "Faster arithmetic for
number-theoretic transforms", J. Symb. Comp. 2014).

Three primitives, each with a readable pure-Python reference beside it
(``*_reference``) that the tests compare against:

``mulhi64(a, b)``
    The high 64 bits of the 128-bit product ``a*b``.  Under Numba it is an
    ``@intrinsic`` that emits one LLVM ``i128`` multiply, which x86-64 lowers to
    a single ``MUL``/``MULX``; in plain Python it is big-integer arithmetic.

Shoup multiplication by a constant ``w < q``
    With the precomputed companion ``w' = floor(w * 2^64 / q)``, for *any*
    ``y < 2^64``::

        r = y*w - mulhi64(y, w')*q   (mod 2^64)   lies in [0, 2q)

    (:func:`mul_shoup_lazy`).  One conditional subtraction gives ``[0, q)``
    (:func:`mul_shoup`).  Two multiplications and no division: this is the NTT's
    butterfly multiplication, because twiddle factors are known in advance.

Barrett multiplication of two variables ``a, b < q``
    With ``ratio = floor(2^128 / q)`` split as ``(r1, r0)`` 64-bit halves,
    the quotient ``floor(a*b / q)`` is estimated from the partial products of
    ``a*b`` and ``ratio`` to within 3, so the remainder needs at most three
    conditional subtractions (:func:`mul_barrett`).

Range conventions: a function named ``*_lazy`` returns a value that is
congruent to the exact result but only bounded as its docstring says; every
other function returns a fully reduced value in ``[0, q)``.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..errors import ParameterError

__all__ = [
    "MAX_MODULUS_BITS",
    "U64",
    "mulhi64",
    "mul_wide",
    "mac_wide",
    "mulhi64_reference",
    "shoup_precompute",
    "barrett_precompute",
    "mul_shoup_lazy",
    "mul_shoup",
    "mul_shoup_reference",
    "mul_barrett",
    "signed_residues",
    "dot_rows_wide",
    "dot_rows_wide_range",
    "mul_barrett_reference",
    "reduce_wide",
    "reduce_barrett_wide",
    "reduce_wide_reference",
    "wide_constants",
    "check_modulus",
    "njit",
]

#: Largest modulus bit size the ring layer accepts.  Lazy NTT butterflies keep
#: values below 4q, so q < 2^62 is the hard limit; 61 leaves room for sums.
MAX_MODULUS_BITS = 61

U64 = np.uint64
_MASK64 = (1 << 64) - 1


def njit(*args, **kwargs):
    """``numba.njit`` with the project defaults: ``cache=True``, no fastmath.

    Kernels are compiled lazily on first call (never at import) and cached on
    disk next to the source, so a second process loads them in milliseconds.
    """
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    kwargs.setdefault("error_model", "numpy")
    if args and callable(args[0]):
        return numba.njit(**kwargs)(args[0])
    return numba.njit(*args, **kwargs)


def check_modulus(q: int) -> int:
    """Return ``q`` as a Python int after checking it is an odd modulus in
    ``[3, 2^61)``.

    Raises:
        ParameterError: if ``q`` is even, too small or too large.
    """
    q = int(q)
    if q < 3 or q % 2 == 0 or q.bit_length() > MAX_MODULUS_BITS:
        raise ParameterError(
            f"modulus {q} must be odd and in [3, 2^{MAX_MODULUS_BITS}) "
            f"(it has {q.bit_length()} bits)"
        )
    return q


# --------------------------------------------------------------------------
# 64x64 -> 128-bit products.
# --------------------------------------------------------------------------


def mulhi64_reference(a: int, b: int) -> int:
    """High 64 bits of ``a*b`` for ``a, b < 2^64`` (pure Python)."""
    return (int(a) * int(b)) >> 64


def _require_u64(*tys):
    for ty in tys:
        if not (isinstance(ty, types.Integer) and ty.bitwidth == 64 and not ty.signed):
            raise numba.core.errors.TypingError(
                f"fhe_ckks 128-bit intrinsics take uint64 operands, got {ty}"
            )


@intrinsic
def _mulhi64_intrinsic(typingctx, a, b):
    _require_u64(a, b)
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i128 = ir.IntType(128)
        prod = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        return builder.trunc(builder.lshr(prod, ir.Constant(i128, 64)), ir.IntType(64))

    return sig, codegen


_pair = types.UniTuple(types.uint64, 2)


@intrinsic
def _mul_wide_intrinsic(typingctx, a, b):
    _require_u64(a, b)
    sig = _pair(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64, i128 = ir.IntType(64), ir.IntType(128)
        prod = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        hi = builder.trunc(builder.lshr(prod, ir.Constant(i128, 64)), i64)
        lo = builder.trunc(prod, i64)
        return context.make_tuple(builder, signature.return_type, (hi, lo))

    return sig, codegen


@intrinsic
def _mac_wide_intrinsic(typingctx, hi, lo, a, b):
    _require_u64(hi, lo, a, b)
    sig = _pair(types.uint64, types.uint64, types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64, i128 = ir.IntType(64), ir.IntType(128)
        acc = builder.or_(
            builder.shl(builder.zext(args[0], i128), ir.Constant(i128, 64)),
            builder.zext(args[1], i128),
        )
        acc = builder.add(acc, builder.mul(builder.zext(args[2], i128), builder.zext(args[3], i128)))
        hi_out = builder.trunc(builder.lshr(acc, ir.Constant(i128, 64)), i64)
        lo_out = builder.trunc(acc, i64)
        return context.make_tuple(builder, signature.return_type, (hi_out, lo_out))

    return sig, codegen


def _mulhi64_python(a, b):
    return U64((int(a) * int(b)) >> 64)


def _mul_wide_python(a, b):
    p = int(a) * int(b)
    return U64(p >> 64), U64(p & _MASK64)


def _mac_wide_python(hi, lo, a, b):
    acc = ((int(hi) << 64) | int(lo)) + int(a) * int(b)
    acc &= (1 << 128) - 1
    return U64(acc >> 64), U64(acc & _MASK64)


if numba.config.DISABLE_JIT:
    # With NUMBA_DISABLE_JIT=1 the kernels run as plain Python on numpy
    # scalars, so the intrinsics are replaced by exact big-integer twins.
    mulhi64 = _mulhi64_python
    mul_wide = _mul_wide_python
    mac_wide = _mac_wide_python
else:
    mulhi64 = _mulhi64_intrinsic
    mul_wide = _mul_wide_intrinsic
    mac_wide = _mac_wide_intrinsic

mulhi64.__doc__ = "High 64 bits of the 128-bit product of two uint64 (one MULX)."
if not numba.config.DISABLE_JIT:  # pragma: no branch
    mul_wide.__doc__ = "Full 128-bit product of two uint64 as ``(hi, lo)``."
    mac_wide.__doc__ = "``(hi, lo) + a*b`` modulo 2^128 as ``(hi, lo)``."


# --------------------------------------------------------------------------
# Shoup multiplication by a precomputed constant.
# --------------------------------------------------------------------------


def shoup_precompute(w: int, q: int) -> int:
    """Shoup companion ``floor(w * 2^64 / q)`` of a constant ``w < q``."""
    w, q = int(w), int(q)
    if not 0 <= w < q:
        raise ParameterError(f"Shoup constant {w} is not reduced modulo {q}")
    return (w << 64) // q


def mul_shoup_reference(y: int, w: int, q: int) -> int:
    """``y*w mod q`` (pure Python), the value :func:`mul_shoup` must return."""
    return (int(y) * int(w)) % int(q)


@njit(inline="always")
def mul_shoup_lazy(y, w, w_shoup, q):
    """``y*w mod q`` up to one multiple of q.

    Args:
        y: any uint64.
        w: the constant, ``w < q``.
        w_shoup: ``shoup_precompute(w, q)``.
        q: the modulus, ``q < 2^63``.

    Returns:
        A uint64 congruent to ``y*w`` modulo q, in ``[0, 2q)``.
    """
    return y * w - mulhi64(y, w_shoup) * q


@njit(inline="always")
def mul_shoup(y, w, w_shoup, q):
    """``y*w mod q`` in ``[0, q)`` for any uint64 ``y`` (see
    :func:`mul_shoup_lazy`)."""
    r = y * w - mulhi64(y, w_shoup) * q
    if r >= q:
        r -= q
    return r


# --------------------------------------------------------------------------
# Barrett reduction of 128-bit values and products of two variables.
# --------------------------------------------------------------------------


def barrett_precompute(q: int) -> tuple[int, int]:
    """``floor(2^128 / q)`` as its ``(hi, lo)`` 64-bit halves."""
    q = check_modulus(q)
    ratio = (1 << 128) // q
    return ratio >> 64, ratio & _MASK64


def mul_barrett_reference(a: int, b: int, q: int) -> int:
    """``a*b mod q`` (pure Python), the value :func:`mul_barrett` must return."""
    return (int(a) * int(b)) % int(q)


@njit(inline="always")
def reduce_barrett_wide(hi, lo, q, r1, r0):
    """``(hi*2^64 + lo) mod q`` in ``[0, q)`` for values below ``q * 2^64``
    (``r1, r0 = barrett_precompute(q)``)."""
    # Quotient estimate floor(x * ratio / 2^128) from three of the four partial
    # products; the dropped lo*r0 term and the truncations lose less than 3.
    # Valid for x = hi*2^64 + lo < q * 2^64 (so that hi*r1 < 2^64).
    qhat = hi * r1 + mulhi64(hi, r0) + mulhi64(lo, r1)
    r = lo - qhat * q  # exact: the true remainder plus < 3q is below 2^63
    if r >= q:
        r -= q
    if r >= q:
        r -= q
    if r >= q:
        r -= q
    return r


@njit(inline="always")
def mul_barrett(a, b, q, r1, r0):
    """``a*b mod q`` in ``[0, q)``.

    Args:
        a, b: uint64 with ``a*b < q * 2^64`` (true when both are below q).
        q: the modulus, ``q < 2^61``.
        r1, r0: ``barrett_precompute(q)``.
    """
    hi, lo = mul_wide(a, b)
    return reduce_barrett_wide(hi, lo, q, r1, r0)


def wide_constants(q: int) -> tuple[int, int, int]:
    """Constants for :func:`reduce_wide`: ``(t, t', m)`` with
    ``t = 2^64 mod q``, its Shoup companion ``t'``, and ``m = floor(2^64/q)``
    used as a 64-bit Barrett factor."""
    q = check_modulus(q)
    t = (1 << 64) % q
    return t, shoup_precompute(t, q), (1 << 64) // q


def reduce_wide_reference(hi: int, lo: int, q: int) -> int:
    """``(hi*2^64 + lo) mod q`` (pure Python)."""
    return ((int(hi) << 64) | int(lo)) % int(q)


@njit(inline="always")
def reduce_wide(hi, lo, q, t, t_shoup, m):
    """``(hi*2^64 + lo) mod q`` in ``[0, q)`` for *any* 128-bit value.

    ``hi*2^64 = hi*t (mod q)`` is one Shoup multiplication (result in
    ``[0, 2q)``), and ``lo mod q`` is a 64-bit Barrett step with
    ``m = floor(2^64/q)`` (result in ``[0, 2q)``); their sum is below 4q.
    Used by fast basis conversion, whose 128-bit accumulators may exceed
    ``q * 2^64``.
    """
    a = hi * t - mulhi64(hi, t_shoup) * q
    b = lo - mulhi64(lo, m) * q
    r = a + b
    if r >= q + q:
        r -= q + q
    if r >= q:
        r -= q
    return r


@njit
def _signed_residues(vals, moduli, ratios, out):
    # Branch-free: a sign branch on random-signed coefficients mispredicts half the time, and that cost
    # three times the arithmetic (10.4 -> 1.x ms for 26 primes at N = 2^16, the body of every encoding).
    # x < 0 is read as the uint64 u = x + 2^64, so x mod q = (u mod q) - (2^64 mod q), corrected by q.
    zero = U64(0)
    n = U64(vals.shape[0])
    for k in range(U64(moduli.shape[0])):
        q = moduli[k]
        r1 = ratios[k, 0]
        r0 = ratios[k, 1]
        wrap = reduce_barrett_wide(U64(1), zero, q, r1, r0)          # 2^64 mod q
        for i in range(n):
            x = vals[i]
            r = reduce_barrett_wide(zero, U64(x), q, r1, r0)
            c = wrap if x < 0 else zero
            r = r - c
            out[k, i] = r + q if r > q else r       # wrapped below zero: r - c + 2^64 > q


def signed_residues(values: np.ndarray, moduli, ratios: np.ndarray | None = None) -> np.ndarray:
    """``values mod q`` in ``[0, q)`` for each modulus: ``(len(moduli), len(values))`` uint64.

    ``values`` are any int64.  One branch-free Barrett reduction per residue
    (about 10x faster than ``np.mod`` on int64, which divides); CKKS encoding
    spends most of its non-NTT time here.  ``ratios``: the moduli's
    ``barrett_precompute`` values when the caller has them (e.g.
    :attr:`Ring.barrett_ratios`), else computed.
    """
    vals = np.ascontiguousarray(values, dtype=np.int64)
    mods = np.ascontiguousarray(moduli, dtype=np.uint64)
    if ratios is None:
        ratios = np.array([barrett_precompute(int(q)) for q in mods], dtype=np.uint64).reshape(len(mods), 2)
    out = np.empty((len(mods), vals.shape[0]), dtype=np.uint64)
    _signed_residues(vals, mods, ratios, out)
    return out


@njit
def dot_rows_wide(cts, pts, shift, moduli, ratios, out):
    """``out[i, r] = sum_t cts[t][i, r] * pts[t][r] mod moduli[r]``: a lazily reduced dot product.

    ``cts`` and ``pts`` are lists of arrays (``(size, rows, N)`` and
    ``(>= rows, N >> shift)``; a plaintext of ``N >> shift`` columns stands for
    ``repeat(p, 2^shift)``, a sparse encoding kept compact).  Each product of
    values below ``q < 2^61`` is below 2^122, so up to 32 terms are summed in
    128 bits without reduction; the high word is reduced first, then the
    whole.  Columns go in chunks whose 128-bit accumulators stay in cache, so
    every input is read once and the output written once.
    """
    dot_rows_wide_range(cts, pts, shift, moduli, ratios, out, 0, out.shape[1])


@njit
def dot_rows_wide_range(cts, pts, shift, moduli, ratios, out, r_start, r_stop):
    """:func:`dot_rows_wide` on the rows ``r_start <= r < r_stop`` only (one thread's share)."""
    zero = U64(0)
    terms = len(cts)
    size = U64(out.shape[0])
    n = U64(out.shape[2])
    sh = U64(shift)
    chunk = U64(2048) if n >= U64(2048) else n
    acc_hi = np.empty(chunk, dtype=np.uint64)
    acc_lo = np.empty(chunk, dtype=np.uint64)
    for i in range(size):
        for r in range(U64(r_start), U64(r_stop)):
            q = moduli[r]
            r1 = ratios[r, 0]
            r0 = ratios[r, 1]
            for c0 in range(U64(0), n, chunk):
                for j in range(chunk):
                    acc_hi[j] = zero
                    acc_lo[j] = zero
                for t in range(terms):
                    a = cts[t]
                    b = pts[t]
                    for j in range(chunk):
                        c = c0 + j
                        h, lo = mac_wide(acc_hi[j], acc_lo[j], a[i, r, c], b[r, c >> sh])
                        acc_hi[j] = h
                        acc_lo[j] = lo
                for j in range(chunk):
                    h = reduce_barrett_wide(zero, acc_hi[j], q, r1, r0)
                    out[i, r, c0 + j] = reduce_barrett_wide(h, acc_lo[j], q, r1, r0)
