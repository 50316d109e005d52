"""Lazily reduced sums of products over ciphertexts.

Two sums that a linear transform or a polynomial evaluation computes many
times, each in one pass of :func:`fhe_ckks.ring.modarith.dot_rows_wide` (rows shared among threads): one
multiply-accumulate per coefficient and term into 128-bit accumulators, one
reduction per output coefficient, no temporary ciphertexts.

* :class:`PlainDot`: ``sum_i ct_i * pt_i`` with plaintexts (the baby-step
  sums of a linear transform, :mod:`fhe_ckks.circuits.lintrans`).
* :func:`linear_combination`: ``sum_i c_i * ct_i`` with real constants, over
  ciphertexts of any levels and scales (:mod:`fhe_ckks.circuits.polynomial`).

Both are reached through the :class:`~fhe_ckks.ckks.evaluator.Evaluator`
(:meth:`~fhe_ckks.ckks.evaluator.Evaluator.plain_dot` and
:meth:`~fhe_ckks.ckks.evaluator.Evaluator.linear_combination`), whose checks
they use; the rest of the arithmetic lives in :mod:`fhe_ckks.ckks.evaluator`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numba.typed import List as NumbaList

from ..errors import KeyMismatchError, ParameterError, ScaleMismatchError, ShapeError
from ..ring.modarith import dot_rows_wide_range
from ..ring.parallel import run_chunks
from .ciphertext import Ciphertext, Plaintext

if TYPE_CHECKING:
    from .evaluator import Evaluator

__all__ = ["PlainDot", "linear_combination"]


def _dot(cts, pts, shift: int, moduli: np.ndarray, ratios: np.ndarray, out: np.ndarray) -> None:
    """:func:`~fhe_ckks.ring.modarith.dot_rows_wide` with its rows shared among the kernels' threads
    (:func:`~fhe_ckks.ring.parallel.run_chunks`; each row is one thread's, so the sum does not depend on
    the thread count)."""
    run_chunks(lambda start, stop: dot_rows_wide_range(cts, pts, shift, moduli, ratios, out, start, stop),
               out.shape[1])


class PlainDot:
    """``sum_i ct_i * pt_i`` with lazy reduction: the workhorse of a linear transform's inner sums.

    :meth:`add` only collects the terms; :meth:`result` computes the whole sum
    in one pass (:func:`fhe_ckks.ring.modarith.dot_rows_wide`): one
    multiply-accumulate per coefficient and term into 128-bit accumulators
    that stay in cache, one reduction per output coefficient, no temporary
    ciphertexts.  A plaintext may be given compact (``poly`` with
    ``N / repeat`` columns standing for ``repeat`` copies of each value, as
    :meth:`~fhe_ckks.ckks.Encoder.encode_compact` returns for a sparse
    vector; all terms then share one ``repeat``).  At most 32 terms (the
    accumulator's headroom for 61-bit primes).
    """

    MAX_TERMS = 32

    def __init__(self, evaluator: Evaluator, like: Ciphertext):
        self.evaluator, self.like = evaluator, like
        self._cts: list[np.ndarray] = []
        self._pts: list[np.ndarray] = []
        self._shift: int | None = None
        self.pt_scale: float | None = None

    @property
    def terms(self) -> int:
        return len(self._cts)

    def add(self, ct: Ciphertext, poly: np.ndarray | Plaintext, scale: float | None = None, repeat: int = 1) -> None:
        ev = self.evaluator
        ev._check(ct)
        if isinstance(poly, Plaintext):
            if poly.params_fingerprint != ev.params.fingerprint:
                raise KeyMismatchError("plaintext of other parameters")
            poly, scale, repeat = poly.poly, poly.scale, 1
        if ct.data.shape != self.like.data.shape or not ev._same_scale(ct.scale, self.like.scale):
            raise ScaleMismatchError("terms of a plain dot product share one level, size and scale")
        if scale is None or (self.pt_scale is not None and not ev._same_scale(scale, self.pt_scale)):
            raise ScaleMismatchError("the plaintexts of a dot product share one scale")
        rows = ct.level + 1
        shift = int(repeat).bit_length() - 1
        if repeat < 1 or repeat & (repeat - 1) or poly.shape[0] < rows or poly.shape[1] << shift != ev.params.n \
                or (self._shift is not None and shift != self._shift):
            raise ShapeError(f"plaintext of shape {poly.shape} (repeat {repeat}) for a ciphertext at level {ct.level}")
        if self.terms >= self.MAX_TERMS:
            raise ParameterError(f"a PlainDot takes at most {self.MAX_TERMS} terms")
        self._cts.append(ct.data)
        self._pts.append(np.ascontiguousarray(poly, dtype=np.uint64))
        self._shift = shift
        self.pt_scale = float(scale)

    def result(self) -> Ciphertext:
        if not self.terms:
            raise ParameterError("an empty dot product")
        p = self.evaluator.params
        rows = self.like.level + 1
        out = np.empty(self.like.data.shape, dtype=np.uint64)
        _dot(NumbaList(self._cts), NumbaList(self._pts), self._shift, p.moduli_qp[:rows],
             p.ring_qp.barrett_ratios[:rows], out)
        return self.evaluator._new(out, self.like.scale * self.pt_scale, self.like)


def linear_combination(evaluator: Evaluator, terms: Sequence[tuple[Ciphertext, numbers.Real]],
                       scale: float) -> Ciphertext:
    """The body of :meth:`Evaluator.linear_combination
    <fhe_ckks.ckks.evaluator.Evaluator.linear_combination>`.

    Each constant becomes the integer ``round(c_i scale / a_i.scale)``, one
    residue per prime of the lowest level, and a term is read only up to that
    level, so no operand is dropped or scaled first.  The terms go through the
    kernel in chunks of :attr:`PlainDot.MAX_TERMS` (its 128-bit headroom),
    and the partial sums of the chunks are added.
    """
    if not terms:
        raise ParameterError("an empty linear combination")
    for a, c in terms:
        evaluator._check(a)
        if np.iscomplexobj(c) or not np.isfinite(float(c)):
            raise ParameterError(f"linear_combination takes finite real constants, got {c!r}")
    size = terms[0][0].size
    if any(a.size != size for a, _ in terms):
        raise ShapeError("the terms of a linear combination share one size")
    params = evaluator.params
    low = min(a.level for a, _ in terms)
    moduli = params.q_primes[: low + 1]
    first = terms[0][0]
    out = None
    for start in range(0, len(terms), PlainDot.MAX_TERMS):
        chunk = terms[start:start + PlainDot.MAX_TERMS]
        consts = [np.array(evaluator._residues(int(round(float(c) * scale / a.scale)), moduli),
                           dtype=np.uint64).reshape(-1, 1) for a, c in chunk]
        data = np.empty((size, low + 1, params.n), dtype=np.uint64)
        _dot(NumbaList([a.data for a, _ in chunk]), NumbaList(consts), params.log_n,
             params.moduli_qp[: low + 1], params.ring_qp.barrett_ratios[: low + 1], data)
        part = Ciphertext(data, float(scale), first.slots, first.key_id, first.params_fingerprint)
        out = part if out is None else evaluator.add(out, part)
    return out
