"""CKKS encoding: complex vectors <-> plaintext polynomials.

The canonical embedding evaluates a real polynomial ``m(X)`` of degree < N at
the primitive 2N-th roots of unity ``zeta^(5^j)``, ``zeta = exp(i pi / N)``,
``j = 0 .. N/2 - 1`` (the other half are their conjugates).  Those N/2
complex values are the **slots**.  Encoding inverts the embedding, multiplies
by the scale Delta and rounds to integers; decoding evaluates and divides::

    slot_j = m(zeta^(5^j)) / Delta

Because ``5`` generates the slot indices, ``X -> X^(5^k)`` rotates the slots
left by k, and ``X -> X^-1`` conjugates them (see :mod:`fhe_ckks.ring.automorphism`).

The special FFT (Cheon, Kim, Kim, Song, "HEAAN", 2017) evaluates the embedding
in ``O(n log n)``: radix-2 butterflies whose twiddles are powers of ``zeta``
indexed by the rotation group ``5^j mod 4 len``.  ``n < N/2`` slots
("sparse packing") use the subring ``Z[Y]/(Y^(2n) + 1)`` with
``Y = X^(N / 2n)``: the n-slot vector is repeated ``N / 2n`` times in the
full slot space, and the message polynomial has nonzero coefficients only at
multiples of ``N / 2n``.

Integer conversion: coefficients are rounded in float64 (exact below 2^53,
relative error 2^-53 above), converted to int64 when below 2^62 and to
Python integers otherwise, then reduced modulo each prime.  Decoding composes
only as many primes as the value can need (``log2 Delta + 64`` bits), so a
decode costs a few vectorized big-integer operations per coefficient,
whatever the level.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import LevelError, ParameterError, ShapeError
from ..ring.modarith import njit, signed_residues
from ..ring.ntt import NTTTables, bit_reverse_indices
from ..rlwe.params import Parameters
from .ciphertext import Plaintext

__all__ = ["Encoder", "special_fft", "special_ifft", "special_fft_plan"]


@lru_cache(maxsize=32)
def special_fft_plan(log_n: int, slots: int):
    """The special FFT for ``slots`` slots: its stages ``(length, twiddles)``
    in order of application, and the bit-reversal permutation applied first
    (the homomorphic DFT of bootstrapping reuses both)."""
    m = 2 << log_n  # 2N
    rot = np.array([pow(5, j, 4 * slots) for j in range(slots // 2 or 1)], dtype=np.int64)
    stages = []
    length = 2
    while length <= slots:
        half = length // 2
        lenq = length * 4
        idx = (rot[:half] % lenq) * (m // lenq)
        stages.append((length, np.exp(2j * np.pi * idx / m)))
        length *= 2
    perm = bit_reverse_indices(slots.bit_length() - 1) if slots > 1 else np.zeros(1, dtype=np.int64)
    return stages, perm


def special_fft(values: np.ndarray, log_n: int) -> np.ndarray:
    """Evaluate the embedding: coefficients (packed as ``n`` complex numbers)
    -> ``n`` slot values.  Returns a new array."""
    n = values.shape[0]
    stages, perm = special_fft_plan(log_n, n)
    v = values[perm].astype(np.complex128)
    for length, w in stages:
        blocks = v.reshape(-1, length)
        half = length // 2
        u = blocks[:, :half].copy()
        t = blocks[:, half:] * w
        blocks[:, :half] = u + t
        blocks[:, half:] = u - t
    return v


def special_ifft(values: np.ndarray, log_n: int) -> np.ndarray:
    """Inverse of :func:`special_fft` (slot values -> packed coefficients)."""
    n = values.shape[0]
    lengths, offsets, twiddles, perm = _ifft_plan(log_n, n)
    v = np.array(values, dtype=np.complex128)
    _ifft_stages(v, lengths, offsets, twiddles)
    return v[perm] / n


@lru_cache(maxsize=32)
def _ifft_plan(log_n: int, slots: int):
    """:func:`special_fft_plan`'s stages in the inverse order, flattened for the
    kernel: lengths, offsets into one array of conjugated twiddles, the twiddles."""
    stages, perm = special_fft_plan(log_n, slots)
    inverse = list(reversed(stages))
    lengths = np.array([length for length, _ in inverse], dtype=np.int64)
    sizes = [len(w) for _, w in inverse]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    twiddles = np.concatenate([np.conj(w) for _, w in inverse]) if inverse else np.zeros(0, dtype=np.complex128)
    return lengths, offsets, np.ascontiguousarray(twiddles, dtype=np.complex128), perm


@njit
def _ifft_stages(v, lengths, offsets, twiddles):
    """The inverse butterflies in place: ``(x, y) -> (x + y, (x - y) conj(w))``
    for every stage length, largest first (one pass per stage, no temporaries)."""
    n = v.shape[0]
    for s in range(lengths.shape[0]):
        length = lengths[s]
        half = length // 2
        base = offsets[s]
        for start in range(0, n, length):
            for j in range(half):
                x = v[start + j]
                y = v[start + half + j]
                v[start + j] = x + y
                v[start + half + j] = (x - y) * twiddles[base + j]


def _check_slots(params: Parameters, slots: int | None) -> int:
    if slots is None:
        return params.slots
    if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 1 \
            or slots > params.slots or slots & (slots - 1):
        raise ParameterError(f"slots must be a power of two in [1, {params.slots}], got {slots!r}")
    return int(slots)


@lru_cache(maxsize=8)
def _sparse_tables(log_n: int, primes: tuple[int, ...]) -> NTTTables:
    """NTT tables of a smaller ring over the same primes, for sparse encodings."""
    return NTTTables(log_n, primes)


class Encoder:
    """Encodes complex or real vectors into plaintexts and decodes them back.

    Args:
        params: the parameters (ring degree, primes, default scales).
    """

    def __init__(self, params: Parameters):
        self.params = params

    # ---- values <-> real coefficients ---------------------------------------

    def embed_inverse(self, values, slots: int | None = None) -> np.ndarray:
        """Real coefficients (length N, float64, *unscaled*) of the polynomial
        whose first ``slots`` slots are ``values`` (zero-padded)."""
        p = self.params
        slots = _check_slots(p, slots)
        vals = np.asarray(values)
        if vals.ndim != 1 or vals.shape[0] > slots:
            raise ShapeError(f"expected at most {slots} values in a 1-D array, got shape {vals.shape}")
        if not np.all(np.isfinite(vals)):
            raise ParameterError("cannot encode NaN or infinite values")
        z = np.zeros(slots, dtype=np.complex128)
        z[: vals.shape[0]] = vals
        u = special_ifft(z, p.log_n)
        coeffs = np.zeros(p.n, dtype=np.float64)
        gap = p.slots // slots
        coeffs[0: p.slots: gap] = u.real
        coeffs[p.slots:: gap] = u.imag
        return coeffs

    def embed(self, coeffs: np.ndarray, slots: int | None = None) -> np.ndarray:
        """Slot values of the real polynomial with coefficients ``coeffs``."""
        p = self.params
        slots = _check_slots(p, slots)
        gap = p.slots // slots
        u = coeffs[0: p.slots: gap] + 1j * coeffs[p.slots:: gap]
        return special_fft(u, p.log_n)

    # ---- plaintexts -----------------------------------------------------------

    def encode(self, values, level: int | None = None, scale: float | None = None,
               slots: int | None = None) -> Plaintext:
        """Encode ``values`` (at most ``slots`` numbers, real or complex) at
        ``level`` (default: the top) and ``scale`` (default: the level's
        standard scale, see :meth:`Parameters.scale_at`).  NTT domain."""
        p = self.params
        level = p.max_level if level is None else level
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= p.max_level:
            raise LevelError(f"level must be in [0, {p.max_level}], got {level!r}")
        scale = p.scale_at(level) if scale is None else float(scale)
        if not (np.isfinite(scale) and scale >= 1):
            raise ParameterError(f"scale must be a finite number >= 1, got {scale}")
        slots = _check_slots(p, slots)
        small, gap = self.encode_compact(values, level, scale, slots)
        return Plaintext(small if gap == 1 else np.repeat(small, gap, axis=1), scale, slots, p.fingerprint)

    def encode_compact(self, values, level: int, scale: float, slots: int) -> tuple[np.ndarray, int]:
        """An encoding kept compact when sparse: ``(poly, repeat)`` with ``poly`` of shape
        ``(level + 1, N / repeat)``, whose full NTT form is ``np.repeat(poly, repeat, axis=1)``.

        Sparse packing makes the polynomial ``m(X) = m'(X^gap)`` with ``m'`` of degree < N / gap
        (gap = N / (2 slots)), and the bit-reversed NTT of m is the NTT of m' at size N / gap (root
        ``psi^gap``) with each value repeated gap times.  So a vector of period P costs NTTs of size
        2P instead of N, and :class:`~fhe_ckks.ckks.dot.PlainDot` multiplies by it without
        expanding it.  No input checks (callers: :meth:`encode` and the linear transforms).
        """
        p = self.params
        gap = p.slots // slots
        compact = self.embed_inverse(values, slots)[::gap] * scale
        small = self.integers_to_rns(np.rint(compact), int(level) + 1)
        self._small_tables(gap).forward(small, check=False)
        return small, gap

    def _small_tables(self, gap: int) -> NTTTables:
        if gap == 1:
            return self.params.tables_qp
        return _sparse_tables(self.params.log_n - (gap.bit_length() - 1), self.params.q_primes)

    def integers_to_rns(self, rounded: np.ndarray, limbs: int) -> np.ndarray:
        """Residues of integer-valued float64 coefficients modulo the first
        ``limbs`` ciphertext primes (coefficient domain)."""
        p = self.params
        peak = float(np.max(np.abs(rounded))) if rounded.size else 0.0
        if peak < 2.0**62:
            ring = p.ring_q
            return signed_residues(rounded.astype(np.int64), ring.moduli[:limbs], ring.barrett_ratios[:limbs])
        out = np.empty((limbs, rounded.shape[0]), dtype=np.uint64)
        big = np.array([int(c) for c in rounded], dtype=object)
        for i, q in enumerate(p.q_primes[:limbs]):
            out[i] = (big % q).astype(np.uint64)
        return out

    def decode(self, pt: Plaintext, slots: int | None = None) -> np.ndarray:
        """The complex slot values of ``pt`` (its ``slots`` by default)."""
        coeffs = self.plaintext_coefficients(pt)
        return self.embed(coeffs / pt.scale, pt.slots if slots is None else slots)

    def plaintext_coefficients(self, pt: Plaintext) -> np.ndarray:
        """The centred integer coefficients of ``pt`` as float64 (not divided
        by the scale).  Only the first ``k`` primes are composed, with
        ``log2(q_0 ... q_{k-1}) >= log2(scale) + 64``: a correct decryption
        is far below half that product."""
        p = self.params
        poly = np.array(pt.poly, copy=True)
        p.tables_qp.inverse(poly, check=False)
        limbs = poly.shape[0]
        need = np.log2(max(pt.scale, 1.0)) + 64
        k, bits = 0, 0.0
        while k < limbs and bits < need:
            bits += np.log2(p.q_primes[k])
            k += 1
        if k == 1:
            q = np.int64(p.q_primes[0])
            v = poly[0].astype(np.int64)
            v = np.where(v > q // 2, v - q, v)
            return v.astype(np.float64)
        basis = p.ring_q.basis_at(k)
        return np.array([float(x) for x in basis.compose(np.ascontiguousarray(poly[:k]), centered=True)])
