"""Scaling in RNS form: division by part of the modulus, with rounding.

Both operations here take ``x`` modulo a product of primes, divide it by the
product of *some* of those primes, round, and return the quotient modulo the
primes that are left:

* **ModDown** (:class:`ModDown`) divides by the special modulus P and rounds:
  ``round(x / P)`` from the basis ``Q ∪ P`` to Q.  It ends every hybrid key
  switch (:class:`~fhe_ckks.rlwe.keyswitch.KeySwitcher`).  The P limbs are
  converted to Q by fast basis conversion with the overflow removed by a
  floating-point estimate (an approximate ModDown leaves a biased error that
  the secret key amplifies in some slots).
* **Rescale** (:class:`Rescaler`) divides by the last prime and rounds
  *exactly*: ``round(x / q_last)``, the CKKS rescaling
  (:meth:`fhe_ckks.ring.Ring.rescale`, which caches one Rescaler per level).

Each splits into two steps so that the NTT domain can be served too: a
``correction`` computed in the coefficient domain from the limbs being divided
away, and a pointwise ``finish`` on the remaining limbs (in either domain)
that subtracts the correction and multiplies by the inverse of the divisor.

Neighbours: :mod:`~fhe_ckks.ring.rns` holds the bases, the CRT and the fast
basis conversion (and ModUp) this module builds on; :mod:`~fhe_ckks.ring.ring`
and :mod:`~fhe_ckks.rlwe.keyswitch` are its callers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ..errors import ParameterError, ShapeError
from .modarith import U64, mul_shoup, mulhi64, njit, shoup_precompute
from .rns import BasisConverter, RNSBasis, ThreadScratch, scratch_buffer

__all__ = ["ModDown", "Rescaler"]


# --------------------------------------------------------------------------
# Kernels.
# --------------------------------------------------------------------------


@njit(inline="always")
def _add_mod(x, y, q):
    """``x + y mod q`` for ``x, y`` in ``[0, q)``."""
    s = x + y
    if s >= q:
        s -= q
    return s


@njit
def _add_const_inplace(a, consts, moduli):
    """``a[i] += consts[i] mod moduli[i]`` for reduced ``a`` and ``consts``."""
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        h = consts[i]
        row = a[i]
        for c in range(U64(a.shape[1])):
            row[c] = _add_mod(row[c], h, q)


@njit
def _rounding_correction(last, half, q_last, offsets, moduli, barrett_m, out):
    """``out[i, c] = ((last[c] + half) mod q_last + offsets[i]) mod moduli[i]``
    for a reduced ``last`` limb and reduced offsets."""
    for i in range(U64(out.shape[0])):
        q, m, off = moduli[i], barrett_m[i], offsets[i]
        row = out[i]
        for c in range(U64(last.shape[0])):
            r = _add_mod(last[c], half, q_last)
            x = r - mulhi64(r, m) * q  # 64-bit Barrett, in [0, 2q)
            if x >= q:
                x -= q
            row[c] = _add_mod(x, off, q)


@njit
def _sub_scale(a, b, factor, factor_shoup, moduli, out):
    """``out[i] = (a[i] - b[i]) * factor[i] mod moduli[i]``, all reduced."""
    for i in range(U64(out.shape[0])):
        q = moduli[i]
        f = factor[i]
        fs = factor_shoup[i]
        for c in range(U64(out.shape[1])):
            out[i, c] = mul_shoup(a[i, c] + (q - b[i, c]), f, fs, q)


def _shoup_pair(values: Sequence[int], primes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Constants ``values[i] mod primes[i]`` and their Shoup companions, as uint64 arrays."""
    vals = np.array(values, dtype=np.uint64)
    comp = np.array([shoup_precompute(v, q) for v, q in zip(values, primes)], dtype=np.uint64)
    return vals, comp


# --------------------------------------------------------------------------
# ModDown and rescale.
# --------------------------------------------------------------------------


class ModDown(ThreadScratch):
    """Division by the special modulus P with rounding (hybrid key switching).

    Given ``x`` in the basis ``Q ∪ P``, returns ``round(x / P)`` in the basis Q
    (off by one with probability about ``len(P) * 2^-52`` per coefficient, see
    :class:`~fhe_ckks.ring.rns.BasisConverter` with ``exact=True``)::

        x' = x + h,  h = floor(P/2)
        out_i = (x_i - (conv_{P->Q}([x']_P)_i - h)) * P^-1 mod q_i

    The work splits in two steps so that the NTT domain can be served too:
    :meth:`correction` (coefficient domain, from the P limbs) returns the
    polynomial ``conv(...) - h`` whose coefficients are subtracted, and
    :meth:`finish` (either domain, pointwise on the Q limbs) subtracts and
    scales.  (The rounding offset h is added to every *coefficient*, so it must
    not be added to NTT values; folding it into the correction avoids that.)
    """

    def __init__(self, q_basis: RNSBasis, p_basis: RNSBasis):
        self.q_basis, self.p_basis = q_basis, p_basis
        self._to_q = BasisConverter(p_basis, q_basis, exact=True)
        half = p_basis.product // 2
        self._half_p = np.array([half % p for p in p_basis.primes], dtype=np.uint64)
        self._neg_half_q = np.array([(-half) % q for q in q_basis.primes], dtype=np.uint64)
        self._p_inv, self._p_inv_shoup = _shoup_pair(
            [pow(p_basis.product % q, -1, q) for q in q_basis.primes], q_basis.primes
        )
        self._local = threading.local()

    def correction(self, a_p: np.ndarray, overwrite: bool = False) -> np.ndarray:
        """``conv_{P->Q}([x + h]_P) - h`` from coefficient-domain P limbs (``a_p`` is used as scratch when
        ``overwrite``).

        The result is a buffer owned by this object and the calling thread, valid until its next call
        (as :meth:`Rescaler.correction`): key switching calls this twice per key switch, and fresh
        multi-megabyte arrays each time cost their page faults."""
        xp = a_p if overwrite else a_p.copy()
        _add_const_inplace(xp, self._half_p, self.p_basis.moduli)
        conv = self._to_q.convert(xp, scratch_buffer(self._local, (len(self.q_basis), a_p.shape[1])),
                                  check=False)
        _add_const_inplace(conv, self._neg_half_q, self.q_basis.moduli)
        return conv

    def finish(self, a_q: np.ndarray, correction: np.ndarray, out: np.ndarray) -> None:
        """``out = (a_q - correction) * P^-1`` limb by limb (pointwise, so
        ``a_q`` and ``correction`` may both be in the NTT domain)."""
        _sub_scale(a_q, correction, self._p_inv, self._p_inv_shoup, self.q_basis.moduli, out)

    def apply(self, a_q: np.ndarray, a_p: np.ndarray, *, check: bool = True) -> np.ndarray:
        """Return ``round((a_q, a_p) / P)`` in the Q basis (coefficient domain)."""
        if check:
            self.q_basis.check(a_q)
            self.p_basis.check(a_p)
            if a_q.shape[1] != a_p.shape[1]:
                raise ShapeError(f"Q part has N={a_q.shape[1]}, P part N={a_p.shape[1]}")
        out = np.empty_like(a_q)
        self.finish(a_q, self.correction(a_p), out)
        return out


class Rescaler(ThreadScratch):
    """Exact divide-and-round by the last prime of a basis (CKKS rescale).

    For ``x`` in ``[0, Q)`` with ``Q = q_0 ... q_{L-1}``, returns the residues of
    ``round(x / q_{L-1})`` modulo ``q_0 ... q_{L-2}``::

        r = (x_{L-1} + h) mod q_{L-1},   h = (q_{L-1} - 1) / 2
        out_i = (x_i - (r - h)) * q_{L-1}^-1  mod q_i

    (``x + h - r`` is a multiple of q_{L-1}, and ``(x + h - r) / q_{L-1}`` is
    ``round(x / q_{L-1})``, ties rounded down.)  As for :class:`ModDown` the
    work is split into :meth:`correction` (coefficient domain, from the last
    limb: the small signed polynomial ``r - h``) and :meth:`finish`
    (pointwise, either domain).
    """

    def __init__(self, basis: RNSBasis):
        if len(basis) < 2:
            raise ParameterError("rescaling needs at least two primes")
        self.basis = basis
        primes = basis.primes
        self.last = primes[-1]
        self.half = (self.last - 1) // 2
        rest = primes[:-1]
        self._rest_moduli = basis.moduli[:-1].copy()
        self._inv, self._inv_shoup = _shoup_pair([pow(self.last % q, -1, q) for q in rest], rest)
        self._neg_half_mod = np.array([(-self.half) % q for q in rest], dtype=np.uint64)
        self._barrett_m = np.array([(1 << 64) // q for q in rest], dtype=np.uint64)
        self._local = threading.local()

    def correction(self, last_limb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(r - h) mod q_i`` for every remaining prime, ``(L-1, N)``, from the
        coefficient-domain last limb (reduced).

        Without ``out`` the result goes to a scratch buffer owned by this
        object and the calling thread, valid until the next call: fresh
        multi-megabyte arrays cost more in page faults than the kernel itself.
        """
        if out is None:
            out = scratch_buffer(self._local, (len(self._rest_moduli), last_limb.shape[0]))
        _rounding_correction(last_limb, U64(self.half), U64(self.last), self._neg_half_mod,
                             self._rest_moduli, self._barrett_m, out)
        return out

    def finish(self, a_rest: np.ndarray, correction: np.ndarray, out: np.ndarray) -> None:
        """``out_i = (a_i - correction_i) * q_last^-1 mod q_i`` (pointwise)."""
        _sub_scale(a_rest, correction, self._inv, self._inv_shoup, self._rest_moduli, out)

    def apply(self, a: np.ndarray, *, check: bool = True) -> np.ndarray:
        """Rescale a coefficient-domain ``(L, N)`` array to ``(L-1, N)``."""
        if check:
            self.basis.check(a)
        out = np.empty((a.shape[0] - 1, a.shape[1]), dtype=np.uint64)
        self.finish(a[:-1], self.correction(a[-1]), out)
        return out
