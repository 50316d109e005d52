"""The homomorphic DFT of bootstrapping: CoeffsToSlots and SlotsToCoeffs.

The encoder maps coefficients to slots by ``slots = V u`` with
``u_k = m_(k gap) + i m_(N/2 + k gap)`` (n slots, ``gap = N / 2n``) and
``V = F BR``: a bit-reversal permutation BR followed by the ``log2 n``
butterfly stages of the special FFT (see :mod:`fhe_ckks.ckks.encoder`).  Each
stage ``S_len`` has three nonzero diagonals (offsets ``0, +len/2, -len/2``).

Slot-wise operations do not care about the order of the slots, so the
bit reversal is never evaluated:

* **CoeffsToSlots** is ``F^-1`` (it leaves the coefficients in bit-reversed
  order in the slots);
* **SlotsToCoeffs** is ``F`` (it takes them in that order).

With a *level budget* b the ``log2 n`` stages are merged into b groups; each
group is one :class:`~fhe_ckks.circuits.lintrans.LinearTransform` (one level)
whose number of diagonals grows as ``2^(stages + 1) - 1``.  More levels mean
fewer rotations.  Constant factors (the bootstrapping normalizations) are
folded into the first group, so they cost nothing.
"""

from __future__ import annotations

import numpy as np

from ..ckks.encoder import special_fft_plan
from ..errors import ParameterError
from .lintrans import LinearTransform, diagonals_of, matrix_of

__all__ = ["butterfly_stages", "compose_diagonals", "dft_transforms", "real_form"]


def butterfly_stages(log_n: int, slots: int, inverse: bool) -> list[dict[int, np.ndarray]]:
    """The special-FFT stages as diagonal dictionaries, in application order
    (``F``: stage 2 first; ``F^-1``: the inverses, stage n first, each
    including its factor 1/2)."""
    stages, _ = special_fft_plan(log_n, slots)
    out = []
    for length, w in stages:
        half = length // 2
        blocks = slots // length
        first = np.zeros(slots, dtype=bool)
        first.reshape(blocks, length)[:, :half] = True
        wfull = np.zeros(slots, dtype=np.complex128)
        wfull.reshape(blocks, length)[:, :half] = w
        wsecond = np.roll(wfull, half)  # w_j placed at position i + j + half
        if not inverse:
            d0 = np.where(first, 1.0, -wsecond)
            dp = np.where(first, wfull, 0.0)
            dm = np.where(first, 0.0, 1.0)
        else:
            d0 = np.where(first, 0.5, -0.5 * np.conj(wsecond))
            dp = np.where(first, 0.5, 0.0)
            dm = np.where(first, 0.0, 0.5 * np.conj(wsecond))
        diag = {0: d0.astype(np.complex128)}
        if half % slots:
            diag[half % slots] = diag.get(half % slots, 0) + dp
            diag[(-half) % slots] = diag.get((-half) % slots, 0) + dm
        else:  # slots == 1: a single stage of length... (never: length >= 2)
            diag[0] = diag[0] + dp + dm
        out.append(diag)
    if inverse:
        out.reverse()
    return out


def compose_diagonals(first: dict[int, np.ndarray], then: dict[int, np.ndarray],
                      period: int) -> dict[int, np.ndarray]:
    """Diagonals of ``then @ first`` (apply ``first``, then ``then``):
    ``d_(a+b) += then_a * rot(first_b, a)``."""
    out: dict[int, np.ndarray] = {}
    for a, da in then.items():
        for b, db in first.items():
            k = (a + b) % period
            out[k] = out.get(k, 0) + da * np.roll(db, -a)
    return {k: v for k, v in out.items() if np.max(np.abs(v)) > 1e-300}


def dft_transforms(log_n: int, slots: int, inverse: bool, budget: int,
                   factor: complex = 1.0, factor_on_last: bool = False) -> list[LinearTransform]:
    """CoeffsToSlots (``inverse=True``, ``factor * F^-1``) or SlotsToCoeffs
    (``factor * F``) as ``budget`` linear transforms, in application order.

    The factor is folded into the first group, or into the last one with
    ``factor_on_last``: a small factor belongs at the end, so that the early
    stages keep diagonals of size one, which their plaintext scale encodes to
    full relative precision while the values they act on are still large."""
    if slots < 2:
        raise ParameterError("the homomorphic DFT needs at least 2 slots")
    stages = butterfly_stages(log_n, slots, inverse)
    if not 1 <= budget <= len(stages):
        raise ParameterError(f"level budget {budget} must be in [1, {len(stages)}]")
    sizes = [len(stages) // budget + (1 if i < len(stages) % budget else 0) for i in range(budget)]
    groups, pos = [], 0
    for size in sizes:
        acc = stages[pos]
        for st in stages[pos + 1: pos + size]:
            acc = compose_diagonals(acc, st, slots)
        groups.append(acc)
        pos += size
    target = -1 if factor_on_last else 0
    groups[target] = {k: v * factor for k, v in groups[target].items()}
    return [LinearTransform(g, slots) for g in groups]


def real_form(lt: LinearTransform) -> LinearTransform:
    """The same map on real and imaginary parts held apart: a period-``2P`` transform with real diagonals that
    takes ``[Re v, Im v]`` (2P real slots) to ``[Re M v, Im M v]`` for the period-P transform ``M`` = ``lt``.

    Its matrix is ``[[Re M, -Im M], [Im M, Re M]]``.  Because its entries are real it acts on the real and the
    imaginary part of its (noisy) input separately, so the real part of the output is exactly the map of the
    real part of the input.  Each diagonal of ``M`` becomes at most two (offsets ``k`` and ``k + P``)."""
    p = lt.period
    m = matrix_of(lt.diagonals, p)
    big = np.block([[m.real, -m.imag], [m.imag, m.real]])
    tol = 1e-13 * float(np.max(np.abs(big)))
    return LinearTransform(diagonals_of(big, tol), 2 * p)
