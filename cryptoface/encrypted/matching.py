"""The embedding's vector layout and scale, shared by the network's head and the decision.

Embeddings live in a vector layout of period ``Dp`` (``D`` rounded up to a power
of two, free slots zero), replicated over all slots, so a rotate-and-sum over
``log2 Dp`` steps leaves a sum over the embedding in every slot.

The network's last layer multiplies the embedding by the *embedding scale*
``s`` (free: it is folded into the head's weights), chosen so that the model's
typical faces have ``||s e|| ~ 1``: CKKS then keeps every value of the
embedding and of the normalization hint ``1 / (s ||e||)`` at O(1).
"""

from __future__ import annotations

import numpy as np

from fhe_ckks.ckks.evaluator import Evaluator

from ..errors import ModelError
from ..model import NormPolynomial


def period_of(dim: int) -> int:
    """The embedding layout's period: ``dim`` rounded up to a power of two."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ModelError(f"an embedding dimension is an int >= 1, got {dim!r}")
    return 1 << max(0, (dim - 1).bit_length())


def sum_steps(dim: int) -> list[int]:
    """The rotation steps of a rotate-and-sum over the embedding's period."""
    return Evaluator.rotation_steps_for_sum(period_of(dim))


def embedding_scale(norm: NormPolynomial) -> float:
    """``s = 1 / sqrt(m)`` for ``m = sqrt(lo hi)``, the geometric middle of the squared norms the model's
    1/sqrt fit covers (the typical faces' range): ``||s e||^2 ~ 1`` there."""
    lo, hi = float(norm.lo), float(norm.hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ModelError(f"a squared-norm range is 0 < lo < hi, got [{lo!r}, {hi!r}]")
    return float(1.0 / np.sqrt(np.sqrt(lo * hi)))
