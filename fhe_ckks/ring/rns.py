"""Residue number system (RNS): bases, CRT, fast basis conversion, ModUp.

A big modulus ``Q = q_0 q_1 ... q_{L-1}`` (hundreds of bits) is never handled
directly: an integer ``x`` in ``[0, Q)`` is stored as its residues
``x_i = x mod q_i``, one 64-bit word per prime, and a polynomial as a
``(L, N)`` uint64 array ("limbs").  The Chinese remainder theorem (CRT) gives
the way back::

    x = sum_i [x_i * qhat_i^-1]_{q_i} * qhat_i  (mod Q),   qhat_i = Q / q_i.

**Fast basis conversion** (Bajard, Eynard, Hasan, Zucca, SAC 2016; Halevi,
Polyakov, Shoup, CT-RSA 2019) evaluates that sum modulo other primes p_j
*without* reducing modulo Q::

    conv(x)_j = sum_i y_i * [qhat_i]_{p_j} mod p_j,    y_i = [x_i * qhat_i^-1]_{q_i}

Because ``sum_i y_i qhat_i`` lies in ``[0, L*Q)``, the result is the residue of
``x + u*Q`` for some integer ``0 <= u < L``: an *approximate* conversion whose
error is a small multiple of Q.  **ModUp** extends a key-switching digit
(residues modulo some of the primes) to the primes of a larger basis this
way; hybrid key switching multiplies the ``u*Q_digit`` overflow by a key that
hides it in the noise.  Where the overflow must go, it can be estimated in
floating point and subtracted (``BasisConverter(..., exact=True)``).

Inner products over the source primes accumulate in 128 bits (one MULX and an
add-with-carry per term) and are reduced once per output coefficient, so the
cost is about two cycles per multiply-accumulate.  The accumulator holds
``L * max(q) * max(p) < 2^128`` for every basis the ring layer admits
(L <= 64 primes of at most 61 bits).

Neighbours: division by part of the modulus with rounding (ModDown by the
special modulus P, the exact CKKS rescale by the last prime) is in
:mod:`~fhe_ckks.ring.scaling`, built on the conversion here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ..errors import ParameterError, ShapeError
from .checks import check_poly_array, check_reduced
from .parallel import run_chunks
from .modarith import (
    U64,
    check_modulus,
    mac_wide,
    mul_shoup,
    njit,
    reduce_wide,
    shoup_precompute,
    wide_constants,
)

__all__ = [
    "RNSBasis",
    "BasisConverter",
    "ModUp",
    "fast_basis_conversion_reference",
]

MAX_BASIS_SIZE = 64


class RNSBasis:
    """An ordered list of distinct primes with the CRT constants of their product.

    Attributes:
        moduli: uint64 array of the primes q_i.
        product: Q as a Python int.
        qhat: ``Q / q_i`` as Python ints.
        qhat_inv: ``(Q / q_i)^-1 mod q_i`` as a uint64 array, with
            ``qhat_inv_shoup`` its Shoup companions.
    """

    def __init__(self, moduli: Sequence[int]):
        primes = [check_modulus(q) for q in moduli]
        if not 0 < len(primes) <= MAX_BASIS_SIZE:
            raise ParameterError(f"an RNS basis has 1 to {MAX_BASIS_SIZE} primes, got {len(primes)}")
        if len(set(primes)) != len(primes):
            raise ParameterError(f"RNS primes must be distinct: {primes}")
        self.primes: tuple[int, ...] = tuple(primes)
        self.moduli = np.array(primes, dtype=np.uint64)
        self.product = 1
        for q in primes:
            self.product *= q
        self.qhat = [self.product // q for q in primes]
        inv = [pow(qh % q, -1, q) for qh, q in zip(self.qhat, primes)]
        self.qhat_inv = np.array(inv, dtype=np.uint64)
        self.qhat_inv_shoup = np.array([shoup_precompute(v, q) for v, q in zip(inv, primes)], dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.primes)

    def __repr__(self) -> str:
        bits = [q.bit_length() for q in self.primes]
        return f"RNSBasis({len(self)} primes, bits={bits}, log2 Q={self.product.bit_length()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RNSBasis) and other.primes == self.primes

    def __hash__(self) -> int:
        return hash(self.primes)

    def check(self, a: np.ndarray) -> None:
        """Require a reduced ``(L, N)`` uint64 array for this basis."""
        if not isinstance(a, np.ndarray) or a.ndim != 2:
            raise ShapeError(f"expected a (limbs, N) array, got {getattr(a, 'shape', type(a).__name__)}")
        check_poly_array(a, len(self), a.shape[1])
        check_reduced(a, self.moduli)

    def compose(self, a: np.ndarray, centered: bool = False) -> np.ndarray:
        """CRT: residues ``(L, N)`` to integers, as a numpy object array of
        Python ints in ``[0, Q)`` (or ``(-Q/2, Q/2]`` when ``centered``)."""
        self.check(a)
        acc = np.zeros(a.shape[1], dtype=object)
        for i, q in enumerate(self.primes):
            y = (a[i].astype(object) * int(self.qhat_inv[i])) % q
            acc += y * self.qhat[i]
        acc %= self.product
        if centered:
            half = self.product // 2
            acc = np.where(acc > half, acc - self.product, acc)
        return acc

    def decompose(self, values) -> np.ndarray:
        """Residues of integers (any sign, any size) modulo each prime, as a
        ``(L, N)`` uint64 array."""
        vals = np.asarray(values, dtype=object)
        if vals.ndim != 1:
            raise ShapeError(f"expected a 1-D sequence of integers, got shape {vals.shape}")
        out = np.empty((len(self), vals.shape[0]), dtype=np.uint64)
        for i, q in enumerate(self.primes):
            out[i] = (vals % q).astype(np.uint64)
        return out


# --------------------------------------------------------------------------
# Fast basis conversion.
# --------------------------------------------------------------------------


def fast_basis_conversion_reference(x_residues, src: Sequence[int], dst: Sequence[int]) -> list[list[int]]:
    """Pure-Python fast basis conversion: for each coefficient,
    ``sum_i [x_i qhat_i^-1]_{q_i} * qhat_i mod p_j``."""
    q_prod = 1
    for q in src:
        q_prod *= q
    out = [[0] * len(x_residues[0]) for _ in dst]
    for c in range(len(x_residues[0])):
        total = 0
        for i, q in enumerate(src):
            qhat = q_prod // q
            total += (int(x_residues[i][c]) * pow(qhat % q, -1, q) % q) * qhat
        for j, p in enumerate(dst):
            out[j][c] = total % p
    return out


@njit
def _scaled_residues(a, moduli, factors, factors_shoup, y):
    """``y[c, i] = a[i, c] * factors[i] mod moduli[i]`` (transposed, so that the
    conversion's inner loop over i reads contiguous memory)."""
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        f = factors[i]
        fs = factors_shoup[i]
        row = a[i]
        for c in range(U64(a.shape[1])):
            y[c, i] = mul_shoup(row[c], f, fs, q)


@njit
def _overflow_estimate(y, inv_moduli, u):
    """``u[c] = floor(sum_i y[c, i] / q_i)``: the overflow of the fast
    conversion, from a float64 sum (Halevi, Polyakov, Shoup, CT-RSA 2019)."""
    for c in range(U64(y.shape[0])):
        v = 0.0
        for i in range(U64(y.shape[1])):
            v += float(y[c, i]) * inv_moduli[i]
        u[c] = U64(v)


@njit
def _accumulate_conversion(y, table, dst, wide, exact, neg_q, u, out, out_rows):
    """``out[out_rows[j], c] = sum_i y[c, i] * table[j, i] mod dst[j]`` with
    128-bit accumulation and one :func:`reduce_wide` per output; when
    ``exact``, minus ``u[c] * Q_src`` (``neg_q[j] = -Q_src mod dst[j]``)."""
    n = U64(y.shape[0])
    count = U64(y.shape[1])
    zero = U64(0)
    for j in range(U64(out_rows.shape[0])):
        p = dst[j]
        t, ts, m = wide[j, 0], wide[j, 1], wide[j, 2]
        coeffs = table[j]
        nq = neg_q[j]
        row = out[out_rows[j]]
        for c in range(n):
            hi = zero
            lo = zero
            if exact:
                hi, lo = mac_wide(zero, zero, u[c], nq)
            yc = y[c]
            for i in range(count):
                hi, lo = mac_wide(hi, lo, yc[i], coeffs[i])
            row[c] = reduce_wide(hi, lo, p, t, ts, m)


def scratch_buffer(local: threading.local, shape: tuple[int, ...]) -> np.ndarray:
    """A per-thread reusable uint64 buffer of the given shape (also used by
    :class:`~fhe_ckks.ring.scaling.Rescaler`)."""
    buf = getattr(local, "buffer", None)
    if buf is None or buf.shape != shape:
        buf = local.buffer = np.empty(shape, dtype=np.uint64)
    return buf


class ThreadScratch:
    """Pickles without its per-thread scratch buffers (``self._local``, a :class:`threading.local` for
    :func:`scratch_buffer`): a copy, or a worker on another machine, makes its own."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_local"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


class BasisConverter(ThreadScratch):
    """Fast basis conversion from a basis ``src`` to a basis ``dst``.

    ``convert(a)`` maps residues of ``x`` modulo the ``src`` primes to residues
    of ``x + u*Q_src`` modulo the ``dst`` primes, ``0 <= u < len(src)``, for the
    representative ``x`` in ``[0, Q_src)``.  Coefficient domain only (the
    conversion is not compatible with the NTT, whose roots differ per prime).

    With ``exact=True`` the overflow u is estimated in floating point,
    ``u = floor(sum_i y_i / q_i)``, and subtracted: the result is ``x`` itself,
    except with probability about ``len(src) * 2^-52`` per coefficient (when
    ``x / Q_src`` lies within that distance of 0 or 1), where it is ``x`` plus
    or minus ``Q_src``.  ModDown needs this: a biased overflow there is a
    constant-like polynomial that, multiplied by the secret, shows up in the
    slots near ``zeta = 1`` amplified by about N.

    Cost: ``len(src) * len(dst) * N`` multiply-accumulates plus
    ``len(src) * N`` Shoup products (plus ``len(src) * N`` float operations
    and ``len(dst) * N`` multiply-accumulates when exact).
    """

    def __init__(self, src: RNSBasis, dst: RNSBasis, exact: bool = False):
        self.src = src
        self.dst = dst
        self.exact = bool(exact)
        table = [[qh % p for qh in src.qhat] for p in dst.primes]
        self._table = np.array(table, dtype=np.uint64)  # (len(dst), len(src))
        self._wide = np.array([wide_constants(p) for p in dst.primes], dtype=np.uint64)
        self._inv_src = np.array([1.0 / q for q in src.primes], dtype=np.float64)
        self._neg_q = np.array([(-src.product) % p for p in dst.primes], dtype=np.uint64)
        self._rows = np.arange(len(dst), dtype=np.uint64)
        self._local = threading.local()

    def convert(self, a: np.ndarray, out: np.ndarray | None = None, *, out_rows: np.ndarray | None = None,
                check: bool = True) -> np.ndarray:
        """Convert ``a`` (``(len(src), N)``, reduced) into ``out``
        (``(len(dst), N)``, allocated when omitted) and return it.

        With ``out_rows``, destination prime j is written to row
        ``out_rows[j]`` of a larger ``out`` instead (ModUp fills an extended
        polynomial in place this way)."""
        if check:
            self.src.check(a)
        n = a.shape[1]
        if out is None:
            out = np.empty((len(self.dst), n), dtype=np.uint64)
        elif check and out_rows is None:
            check_poly_array(out, len(self.dst), n)
        if out_rows is None:
            out_rows = self._rows
        elif check and (len(out_rows) != len(self.dst) or int(np.max(out_rows)) >= out.shape[0]):
            raise ShapeError(f"out_rows {out_rows} do not fit {len(self.dst)} primes into {out.shape}")
        y = scratch_buffer(self._local, (n, len(self.src)))
        _scaled_residues(a, self.src.moduli, self.src.qhat_inv, self.src.qhat_inv_shoup, y)
        u = np.zeros(n if self.exact else 1, dtype=np.uint64)
        if self.exact:
            _overflow_estimate(y, self._inv_src, u)
        table, dst, wide, neg_q = self._table, self.dst.moduli, self._wide, self._neg_q

        def chunk(start: int, stop: int) -> None:
            _accumulate_conversion(y, table[start:stop], dst[start:stop], wide[start:stop], self.exact,
                                   neg_q[start:stop], u, out, out_rows[start:stop])

        run_chunks(chunk, len(dst))
        return out


class ModUp:
    """Extension of one key-switching digit to a larger basis (hybrid key switching).

    A digit is the part of ``x`` modulo a subset D of the primes of ``target``
    (``digit`` gives their positions).  ModUp returns residues modulo *every*
    prime of ``target``: the digit limbs are copied and the others come from
    fast basis conversion, so the result represents ``x_D + u * Q_D`` with
    ``0 <= u < |D|`` (``x_D`` the representative in ``[0, Q_D)``).  Coefficient
    domain.
    """

    def __init__(self, target: RNSBasis, digit: Sequence[int]):
        digit = [int(i) for i in digit]
        if not digit or len(set(digit)) != len(digit) or not all(0 <= i < len(target) for i in digit):
            raise ParameterError(f"invalid digit positions {digit} for a basis of {len(target)} primes")
        self.target = target
        self.digit = np.array(digit, dtype=np.int64)
        others = [i for i in range(len(target)) if i not in set(digit)]
        self.others = np.array(others, dtype=np.int64)
        self.digit_basis = RNSBasis([target.primes[i] for i in digit])
        self._conv = (BasisConverter(self.digit_basis, RNSBasis([target.primes[i] for i in others]))
                      if others else None)

    def apply(self, a_digit: np.ndarray, out: np.ndarray | None = None, *, check: bool = True) -> np.ndarray:
        """Return the ``(len(target), N)`` extension of ``a_digit``."""
        if check:
            self.digit_basis.check(a_digit)
        n = a_digit.shape[1]
        if out is None:
            out = np.empty((len(self.target), n), dtype=np.uint64)
        elif check:
            check_poly_array(out, len(self.target), n)
        out[self.digit] = a_digit
        if self._conv is not None:
            out[self.others] = self._conv.convert(a_digit, check=False)
        return out

