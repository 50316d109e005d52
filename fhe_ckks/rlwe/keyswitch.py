"""Hybrid key switching (Han & Ki, CT-RSA 2020), with hoisting.

Key switching turns ``d * s'`` into ``ks0 + ks1 * s`` (plus small noise) for a
polynomial ``d`` at level l, given a switching key from ``s'`` to ``s``.  In
four named steps:

1. :meth:`KeySwitcher.decompose` ("ModUp"): bring ``d`` to coefficients, cut
   it into digits (the residues modulo each group of ``alpha`` primes), and
   extend every digit to all primes of ``Q_l ∪ P`` by fast basis conversion,
   then back to the NTT domain.  Only the converted limbs need an NTT: the
   digit's own limbs are ``d``'s NTT values, copied.
2. inner product: ``acc0 = sum_j ext_j * b_j``, ``acc1 = sum_j ext_j * a_j``
   over ``Q_l ∪ P``, accumulated in 128 bits and reduced once.
3. "ModDown": divide ``acc0`` and ``acc1`` by P with rounding (P limbs to
   coefficients, fast conversion to ``Q_l``, back to NTT, pointwise finish).
4. the caller adds ``(ks0, ks1)`` to what it keeps of the ciphertext.

Why it works: ``sum_j [d]_{D_j} * Q~_j = d (mod Q_l)`` (CRT), and the ModUp
overflow ``u * Q_{D_j}`` is a multiple of ``Q_l`` once multiplied by ``Q~_j``,
so ``sum_j ext_j * b_j + (sum_j ext_j * a_j) s = P d s' + sum_j ext_j e_j``;
dividing by P leaves ``d s'`` plus noise of about ``alpha * Q_{D_j} / P *
sqrt(N) * sigma``, well below one when ``P >= Q_{D_j}``.

**Hoisting** (Halevi & Shoup, CRYPTO 2014; Bossuat et al., EUROCRYPT 2021):
an automorphism is a permutation of NTT values and commutes with the
decomposition, so several rotations of one ciphertext share step 1; each
rotation only permutes the extended digits inside its inner product.

Cost at level l with ``d`` digits: one inverse NTT of l+1 limbs; ``d``
conversions ``alpha -> l+1-alpha+K``; ``d (l+1-alpha+K)`` forward NTTs;
``2 d (l+1+K) N`` multiply-accumulates; two ModDowns (2K inverse NTTs, two
conversions ``K -> l+1``, ``2(l+1)`` forward NTTs).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..errors import KeyMismatchError, LevelError
from ..ring.modarith import U64, barrett_precompute, mac_wide, njit, reduce_barrett_wide
from ..ring.parallel import run_chunks
from ..ring.rns import BasisConverter, RNSBasis, ThreadScratch, scratch_buffer
from ..ring.scaling import ModDown
from .keys import SwitchingKey
from .params import Parameters

__all__ = ["KeySwitcher", "Decomposition"]


@njit
def _inner_product(ext, key_b, key_a, key_rows, moduli, ratios, perm, use_perm, out0, out1, r_start, r_stop):
    """``out0[r] = sum_j ext[j, r] * key_b[j, key_rows[r]]`` (and ``out1`` with
    ``key_a``) modulo ``moduli[r]`` for rows ``r_start <= r < r_stop``;
    ``ext`` read through ``perm`` when ``use_perm`` (an automorphism in the
    NTT domain)."""
    digits = U64(ext.shape[0])
    n = U64(ext.shape[2])
    zero = U64(0)
    for r in range(U64(r_start), U64(r_stop)):
        kr = key_rows[r]
        q = moduli[r]
        r1 = ratios[r, 0]
        r0 = ratios[r, 1]
        for c in range(n):
            src = perm[c] if use_perm else c
            h0 = zero
            l0 = zero
            h1 = zero
            l1 = zero
            for j in range(digits):
                x = ext[j, r, src]
                h0, l0 = mac_wide(h0, l0, x, key_b[j, kr, c])
                h1, l1 = mac_wide(h1, l1, x, key_a[j, kr, c])
            out0[r, c] = reduce_barrett_wide(h0, l0, q, r1, r0)
            out1[r, c] = reduce_barrett_wide(h1, l1, q, r1, r0)


@dataclass
class Decomposition:
    """The ModUp'ed digits of one polynomial at ``level`` (NTT domain):
    ``ext`` has shape ``(digits, level + 1 + K, N)``, rows ``q_0..q_level``
    then the special primes."""

    level: int
    ext: np.ndarray


class _LevelPlan:
    """Everything key switching precomputes for one level."""

    def __init__(self, params: Parameters, level: int):
        big_l = len(params.q_primes)
        k = len(params.p_primes)
        self.rows = params.qp_rows(level)  # table rows of the extended polynomial
        self.moduli = params.moduli_qp[self.rows.astype(np.int64)].copy()
        self.ratios = np.array([barrett_precompute(int(q)) for q in self.moduli], dtype=np.uint64)
        self.digits = []
        width = level + 1 + k
        for pos in params.digit_positions(level):
            others = [i for i in range(width) if i not in set(pos)]
            src = RNSBasis([params.q_primes[i] for i in pos])
            dst = RNSBasis([int(params.moduli_qp[int(self.rows[i])]) for i in others])
            self.digits.append((
                np.array(pos, dtype=np.int64),
                np.array(others, dtype=np.uint64),
                self.rows[np.array(others, dtype=np.int64)].copy(),
                BasisConverter(src, dst),
            ))
        q_basis = RNSBasis(params.q_primes[: level + 1])
        self.mod_down = ModDown(q_basis, RNSBasis(params.p_primes))
        self.p_local = np.arange(level + 1, width, dtype=np.uint64)  # P rows inside ext
        self.level = level
        self.special = k
        self._key_rows: dict[int, np.ndarray] = {}
        self.p_table_rows = np.arange(big_l, big_l + k, dtype=np.uint64)
        self.q_rows = np.arange(level + 1, dtype=np.uint64)


    def key_rows(self, key_level: int) -> np.ndarray:
        """Rows of a key serving levels up to ``key_level`` that this level's
        extended polynomial meets: ``0 .. level``, then the key's P rows."""
        rows = self._key_rows.get(key_level)
        if rows is None:
            rows = np.concatenate([np.arange(self.level + 1),
                                   np.arange(key_level + 1, key_level + 1 + self.special)]).astype(np.uint64)
            self._key_rows[key_level] = rows
        return rows


class KeySwitcher(ThreadScratch):
    """Hybrid key switching for one parameter set (plans cached per level).

    The inner product's two accumulators are a per-thread scratch buffer reused from one key switch to
    the next (a fresh 30 MB pair per key switch cost its page faults: the inner product took 17.6 ms of
    a 156 ms key switch at level 20, N = 2^16, and takes 13.5 ms on the reused buffer)."""

    def __init__(self, params: Parameters):
        if not params.p_primes:
            raise LevelError("these parameters have no special primes: no key switching")
        self.params = params
        self._plans: dict[int, _LevelPlan] = {}
        self._local = threading.local()

    def plan(self, level: int) -> _LevelPlan:
        if not 0 <= level <= self.params.max_level:
            raise LevelError(f"level {level} outside [0, {self.params.max_level}]")
        if level not in self._plans:
            self._plans[level] = _LevelPlan(self.params, level)
        return self._plans[level]

    def decompose(self, d: np.ndarray) -> Decomposition:
        """Step 1 (ModUp) for an NTT-domain polynomial ``d`` of shape
        ``(level + 1, N)``."""
        level = d.shape[0] - 1
        plan = self.plan(level)
        tables = self.params.tables_qp
        coeff = d.copy()
        tables.inverse(coeff, check=False)
        width = len(plan.rows)
        ext = np.empty((len(plan.digits), width, self.params.n), dtype=np.uint64)
        for j, (pos, others, other_table_rows, conv) in enumerate(plan.digits):
            ej = ext[j]
            ej[pos] = d[pos]
            conv.convert(np.ascontiguousarray(coeff[pos]), ej, out_rows=others, check=False)
            tables.forward_select(ej, others, other_table_rows)
        return Decomposition(level, ext)

    def apply(self, dec: Decomposition, key: SwitchingKey, perm: np.ndarray | None = None,
              out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Steps 2-3: inner product with ``key`` (after the automorphism
        ``perm``, if given) and ModDown; returns ``(ks0, ks1)`` at the
        decomposition's level, NTT domain (written into ``out[0]`` and
        ``out[1]`` when given: the caller's new ciphertext, no copy)."""
        if key.params is not self.params and key.params.fingerprint != self.params.fingerprint:
            raise KeyMismatchError("switching key of other parameters")
        if dec.level > key.max_level:
            raise LevelError(f"this key serves levels up to {key.max_level}, the ciphertext is at level {dec.level}")
        plan = self.plan(dec.level)
        key_rows = plan.key_rows(key.max_level)
        n = self.params.n
        width = len(plan.rows)
        acc = scratch_buffer(self._local, (2, width, n))      # consumed below, before the next call
        acc0, acc1 = acc[0], acc[1]
        use_perm = perm is not None
        perm_arr = perm if use_perm else np.zeros(1, dtype=np.uint64)
        key_b, key_a = key.b, key.a

        def chunk(start: int, stop: int) -> None:
            _inner_product(dec.ext, key_b, key_a, key_rows, plan.moduli, plan.ratios, perm_arr, use_perm, acc0,
                           acc1, start, stop)

        run_chunks(chunk, width)
        if out is None:
            out = np.empty((2, dec.level + 1, self.params.n), dtype=np.uint64)
        self._mod_down(plan, acc0, dec.level, out[0])
        self._mod_down(plan, acc1, dec.level, out[1])
        return out[0], out[1]

    def _mod_down(self, plan: _LevelPlan, acc: np.ndarray, level: int, out: np.ndarray) -> None:
        tables = self.params.tables_qp
        tables.inverse_select(acc, plan.p_local, plan.p_table_rows)
        correction = plan.mod_down.correction(acc[level + 1:], overwrite=True)   # acc is ours: scratch
        tables.forward_select(correction, plan.q_rows, plan.q_rows)
        plan.mod_down.finish(acc[: level + 1], correction, out)

    def switch(self, d: np.ndarray, key: SwitchingKey, out: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Key-switch one NTT-domain polynomial: ``(ks0, ks1)`` with
        ``ks0 + ks1 * s ~ d * s'`` (into ``out`` when given, as :meth:`apply`)."""
        return self.apply(self.decompose(d), key, out=out)
