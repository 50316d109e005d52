"""Precision in bits, and the precision the parameters promise.

Precision of an approximation ``have`` of ``want`` is ``-log2 max|have - want|``
(and the mean variant).  The bound :func:`expected_precision_bits` is the one
every test uses.  Derivation for a fresh public-key encryption (the noisiest
fresh ciphertext): its noise ``v e + e0 + e1 s`` has coefficients of standard
deviation about ``sigma sqrt(4N/3)`` (v, s dense ternary), and a slot sums N
coefficients with unit-modulus weights, so the slot error has standard
deviation ``sigma sqrt(4/3) N / Delta``; the largest of N/2 slots is below
``4.6`` times that (``sqrt(2 ln 2^15)``).  With sigma = 3.2 that is
``log2(Delta) - log_n - 4.1`` bits; the bound rounds to
``log2(Delta) - (log_n + 5)``, minus ``slack`` bits for the operations that
follow (Lattigo's rule ``log2(Delta) - (log_n + 2)`` is for the *mean* error).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["precision_bits", "expected_precision_bits"]


def precision_bits(want, have, mean: bool = False) -> float:
    """``-log2`` of the largest (or mean) absolute error; ``inf`` if exact."""
    err = np.abs(np.asarray(have, dtype=np.complex128) - np.asarray(want, dtype=np.complex128))
    e = float(err.mean() if mean else err.max()) if err.size else 0.0
    return math.inf if e == 0 else -math.log2(e)


def expected_precision_bits(scale: float, log_n: int, slack: float = 0.0) -> float:
    """``log2(scale) - (log_n + 5) - slack``: the precision an operation at
    this scale must at least reach (max error over all slots)."""
    return math.log2(scale) - (log_n + 5) - slack
