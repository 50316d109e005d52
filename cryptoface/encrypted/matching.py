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


# ---- the spread layout of identification ---------------------------------------------------------------------
#
# A 1:N gallery packs B = slots / Dp templates per ciphertext, template j's coordinate d at slot d B + j.  The
# probe and each template are first *spread*: coordinate d repeated over slots d B .. d B + B - 1, so that a
# template spread and masked to the residue class j (a plaintext mask of period B) lands in its place, and
# the products with the spread probe summed over the strides B, 2B, ..., Dp B / 2 leave <p, t_j> in every slot
# of class j.


def spread_factor(dim: int, slots: int) -> int:
    """B: the templates one gallery ciphertext holds (``slots`` over the embedding's period)."""
    period = period_of(dim)
    if slots % period or slots < period:
        raise ModelError(f"{slots} slots do not hold an embedding of period {period}")
    return slots // period


def spread_steps(dim: int, slots: int) -> list[int]:
    """The rotation steps of a sum over the spread layout's coordinates: ``B * 2^k`` for ``2^k < Dp``."""
    b = spread_factor(dim, slots)
    return [b * s for s in sum_steps(dim)]


def spread_sum(evaluator: Evaluator, ct, dim: int):
    """Slot i receives the sum of the slots ``i + B k`` over the coordinates ``k < Dp`` (no level)."""
    for step in spread_steps(dim, ct.slots):
        ct = evaluator.add(ct, evaluator.rotate(ct, step))
    return ct


def spread_plain(embedding: np.ndarray, dim: int, slots: int) -> np.ndarray:
    """The spread layout of one embedding in plaintext (its first ``dim`` coordinates; zeros above)."""
    period, b = period_of(dim), spread_factor(dim, slots)
    e = np.zeros(period)
    e[:dim] = np.asarray(embedding, dtype=np.float64).reshape(-1)[:dim]
    return np.repeat(e, b)


def spread_transform(dim: int, slots: int):
    """The linear map from the replicated layout (``x[i] = e[i mod Dp]``) to the spread one
    (``y[i] = e[i // B]``), as ``Dp`` diagonals of the full slot vector: ``y = sum_r d_r * rot(x, r)`` with
    ``d_r[i] = 1`` where ``(i // B - i) mod Dp == r`` (one level; BSGS rotations)."""
    from fhe_ckks.circuits.lintrans import LinearTransform

    period, b = period_of(dim), spread_factor(dim, slots)
    i = np.arange(slots)
    offset = (i // b - i) % period
    return LinearTransform({r: (offset == r).astype(np.float64) for r in range(period)}, slots)
