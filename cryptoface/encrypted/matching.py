"""Encrypted L2 normalisation and thresholded matching.

Embeddings live in a vector layout of period ``Dp`` (``D`` rounded up to a power
of two, free slots zero), replicated over all slots.

``normalise`` (4 levels, 2 relinearisations, log2 Dp rotations)::

    y   = sum of squares, in every slot      (square, rotate-and-sum)
    p   = c0 + c1 y + c2 y^2                 (the model's 1/sqrt fit)
    out = e * p                              ~ e / ||e||

``match_score`` (2 levels, 1 relinearisation, log2 Dp rotations)::

    s   = ||p_hat - g_hat||^2 - tau           (in every slot)
    out = r * s  in slot 0, 0 elsewhere      (r > 0 random, chosen by the server)

The key holder learns only ``r * s``: its sign is the decision; ``r`` hides the
distance itself, and masking to one slot hides the per-dimension differences
that the original reveals (spec §8.11).
"""

from __future__ import annotations

import secrets

import numpy as np

from fhe_ckks.ckks.ciphertext import Ciphertext
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.evaluator import Evaluator

from ..model import NormPolynomial

NORMALISE_DEPTH = 4
MATCH_DEPTH = 2


def period_of(dim: int) -> int:
    return 1 << max(0, (dim - 1).bit_length())


def sum_steps(dim: int) -> list[int]:
    return Evaluator.rotation_steps_for_sum(period_of(dim))


def scaled_coefficients(poly: NormPolynomial) -> tuple[float, list[float]]:
    """``(s, q)`` such that for ``e_s = s e``: ``e p(|e|^2) = e_s q(|e_s|^2)`` with O(1) coefficients ``q``.

    ``s = 1/sqrt(m)`` for ``m`` the middle of the fitted range, so ``|e_s|^2 ~ 1``.
    CKKS multiplies by constants rounded at the working scale: a raw ``c2 ~ 1/y^2.5``
    would round to nothing, the rescaled ``q`` keeps every bit.  ``s`` is folded
    into the network's last layer for free.
    """
    if len(poly.coefficients) != 3:
        raise ValueError("the encrypted normalisation evaluates a quadratic 1/sqrt approximation")
    m = float(np.sqrt(poly.lo * poly.hi))
    return 1.0 / np.sqrt(m), [np.sqrt(m) * c * m**k for k, c in enumerate(poly.coefficients)]


def normalise(ev: Evaluator, e: Ciphertext, dim: int, coefficients) -> Ciphertext:
    """``e * q(|e|^2)`` for a quadratic ``q`` (ascending coefficients, of moderate size)."""
    c0, c1, c2 = coefficients
    y = ev.rotate_and_sum(ev.rescale(ev.square(e)), period_of(dim))
    y2 = ev.rescale(ev.square(y))
    t2 = ev.rescale(ev.mul_const(y2, c2))
    t1 = ev.rescale(ev.mul_const(y, c1))
    p = ev.add(ev.add(t2, t1), c0)
    e_low = ev.bring_to(e, p.level)
    return ev.rescale(ev.mul(e_low, p))


def match_score(ev: Evaluator, enc: Encoder, probe: Ciphertext, template: Ciphertext, dim: int, tau: float,
                blinding: float | None = None) -> Ciphertext:
    d = ev.sub(probe, template)
    s = ev.add(ev.rotate_and_sum(ev.rescale(ev.square(d)), period_of(dim)), -float(tau))
    r = blinding if blinding is not None else 1.0 + secrets.randbelow(2**20) / 2**16   # r in [1, 17)
    mask = np.zeros(ev.params.slots)
    mask[0] = r
    return ev.rescale(ev.mul_plain(s, enc.encode(mask, level=s.level, scale=ev.params.scale_at(s.level))))
