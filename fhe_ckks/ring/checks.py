"""Input validation shared by the ring layer's public entry points.

Kernels never check their input (that would cost a pass over the data in the
hot loop); the public functions that call them do, through these helpers, and
raise typed errors from :mod:`fhe_ckks.errors` instead of wrapping silently.
"""

from __future__ import annotations

import numpy as np

from ..errors import DTypeError, RangeError, ShapeError

__all__ = ["check_poly_array", "check_reduced"]


def check_poly_array(a: np.ndarray, limbs: int, n: int) -> None:
    """Require a C-contiguous ``uint64`` array of shape ``(limbs, n)``.

    Raises:
        DTypeError: not a numpy array of dtype uint64.
        ShapeError: wrong shape, or not C-contiguous (kernels work in place).
    """
    if not isinstance(a, np.ndarray):
        raise DTypeError(f"expected a numpy uint64 array, got {type(a).__name__}")
    if a.dtype != np.uint64:
        raise DTypeError(f"expected dtype uint64, got {a.dtype}")
    if a.shape != (limbs, n):
        raise ShapeError(f"expected shape ({limbs}, {n}) (limbs, N), got {a.shape}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ShapeError("expected a writeable C-contiguous array")


def check_reduced(a: np.ndarray, moduli: np.ndarray, factor: int = 1) -> None:
    """Require limb k of ``a`` to lie in ``[0, factor * moduli[k])``.

    Raises:
        RangeError: naming the first offending limb, index and value.
    """
    bounds = moduli.astype(object) * factor
    bad_limbs = np.flatnonzero((a.max(axis=1) if a.size else np.zeros(len(moduli), np.uint64)).astype(object) >= bounds)
    if bad_limbs.size:
        k = int(bad_limbs[0])
        j = int(np.flatnonzero(a[k] >= np.uint64(int(bounds[k])))[0])
        raise RangeError(
            f"limb {k}, coefficient {j}: value {int(a[k, j])} is not below "
            f"{factor}*q = {int(bounds[k])} (input must be reduced)"
        )
