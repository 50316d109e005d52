"""The tail of the pipeline as layers: encrypted L2 normalization and thresholded matching.

Embeddings live in a vector layout of period ``Dp`` (``D`` rounded up to a power
of two, free slots zero), replicated over all slots.

:class:`Normalize` (a :class:`~fhe_ckks.nn.layers.Layer`: 4 levels,
2 relinearizations, log2 Dp rotations)::

    y   = sum of squares, in every slot      (square, rotate-and-sum)
    p   = c0 + c1 y + c2 y^2                 (the model's 1/sqrt fit)
    out = e * p                              ~ e / ||e||

:class:`Match` (layer-like, on a probe and a template: 2 levels,
1 relinearization, log2 Dp rotations)::

    s   = ||p_hat - g_hat||^2 - tau           (in every slot)
    out = r * s  in slot 0, 0 elsewhere      (r > 0 random, chosen by the server)

The key holder learns only ``r * s``: its sign is the decision; ``r`` hides the
distance itself, and masking to one slot hides the per-dimension differences
that the original reveals (spec §8.11).

Both say their depth, key switches and key plan, so the planner places any
bootstrap in front of them like in front of any other layer, and the server's
counts come from the plan.
"""

from __future__ import annotations

import secrets

import numpy as np

from fhe_ckks.ckks.ciphertext import Ciphertext
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.evaluator import Evaluator
from fhe_ckks.nn.layers import Layer
from fhe_ckks.nn.layout import TensorLayout
from fhe_ckks.rlwe.keyplan import KeyPlan

from ..errors import ModelError
from ..model import NormPolynomial


def period_of(dim: int) -> int:
    return 1 << max(0, (dim - 1).bit_length())


def _dimension(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ModelError(f"an embedding dimension is an int >= 1, got {dim!r}")
    return dim


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
        raise ModelError("the encrypted normalization evaluates a quadratic 1/sqrt approximation")
    m = float(np.sqrt(poly.lo * poly.hi))
    return 1.0 / np.sqrt(m), [np.sqrt(m) * c * m**k for k, c in enumerate(poly.coefficients)]


class _SumOfSquares:
    """What both tail steps cost: ``relinearizations`` products and one rotate-and-sum over the
    embedding's period, after the first rescale (so one level below the step's start)."""

    dim: int
    relinearizations: int

    def rotation_steps(self) -> list[int]:
        return sum_steps(self.dim)

    def key_switches(self) -> int:
        return self.relinearizations + len(self.rotation_steps())

    def key_plan(self, level: int) -> KeyPlan:
        return KeyPlan.rotations_at(self.rotation_steps(), level - 1, relinearization=True)


class Normalize(_SumOfSquares, Layer):
    """``e * q(|e|^2)`` for a quadratic ``q`` (ascending coefficients of moderate size, see
    :func:`scaled_coefficients`) on a ``dim``-vector layout."""

    relinearizations = 2     # |e|^2 and the product with e

    def __init__(self, dim: int, coefficients, name: str = "normalize"):
        if len(coefficients) != 3:
            raise ModelError("the encrypted normalization evaluates a quadratic polynomial")
        self.dim, self.name = _dimension(dim), name
        self.coefficients = [float(c) for c in coefficients]
        self.in_layout = self.out_layout = TensorLayout.vector(1, self.dim)

    def depth(self) -> int:
        return 4     # square; square of the sum; constant products; the product with e

    def _poly(self, y: np.ndarray) -> np.ndarray:
        c0, c1, c2 = self.coefficients
        return c0 + c1 * y + c2 * y * y

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        e = np.asarray(tensor, dtype=np.float64)
        return e * self._poly(np.sum(e * e, axis=tuple(range(1, e.ndim)), keepdims=True))

    def forward_slots(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float64)
        p = self.in_layout.period
        blocks = v.reshape(-1, p)
        y = np.sum(blocks * blocks, axis=1, keepdims=True)     # every slot of a period holds the period's sum
        return (blocks * self._poly(y)).reshape(-1)

    def forward(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext) -> Ciphertext:
        self._need_levels(ct)
        ev = evaluator
        c0, c1, c2 = self.coefficients
        y = ev.rotate_and_sum(ev.rescale(ev.square(ct)), period_of(self.dim))
        y2 = ev.rescale(ev.square(y))
        t2 = ev.rescale(ev.mul_const(y2, c2))
        t1 = ev.rescale(ev.mul_const(y, c1))
        p = ev.add(ev.add(t2, t1), c0)
        e_low = ev.bring_to(ct, p.level)
        return ev.rescale(ev.mul(e_low, p))


class Match(_SumOfSquares):
    """The blinded, thresholded squared distance of two normalized embeddings, in slot 0 only.

    Layer-like, on two ciphertexts at the same level: ``depth()``,
    ``key_switches()``, ``key_plan(level)``, ``forward(evaluator, encoder,
    probe, template)`` and its plaintext twin ``forward_plain(probe,
    template)`` (the unblinded ``||p - t||^2 - tau``, whose sign is the
    decision).
    """

    relinearizations = 1     # the square of the difference

    def __init__(self, dim: int, tau: float, name: str = "match"):
        self.dim, self.tau, self.name = _dimension(dim), float(tau), name

    def depth(self) -> int:
        return 2     # the square of the difference; the blinding mask

    def forward_plain(self, probe: np.ndarray, template: np.ndarray) -> np.ndarray:
        d = np.asarray(probe, dtype=np.float64) - np.asarray(template, dtype=np.float64)
        return np.sum(d * d, axis=-1) - self.tau

    def forward(self, evaluator: Evaluator, encoder: Encoder, probe: Ciphertext, template: Ciphertext,
                blinding: float | None = None) -> Ciphertext:
        ev = evaluator
        d = ev.sub(probe, template)
        s = ev.add(ev.rotate_and_sum(ev.rescale(ev.square(d)), period_of(self.dim)), -self.tau)
        r = blinding if blinding is not None else 1.0 + secrets.randbelow(2**20) / 2**16   # r in [1, 17)
        mask = np.zeros(ev.params.slots)
        mask[0] = r
        return ev.rescale(ev.mul_plain(s, encoder.encode(mask, level=s.level, scale=ev.params.scale_at(s.level))))
