"""EvalMod: homomorphic reduction modulo 1 of values close to integers.

After ModRaise and CoeffsToSlots, each slot holds ``x = I + e`` with I an
integer (``|I| <= K``) and e small (the message over q_0, ``|e| << 1/4``).
EvalMod returns e, through the scaled sine (Cheon, Han, Kim, Kim, Song,
EUROCRYPT 2018; Han & Ki, CT-RSA 2020)::

    e ~ sin(2 pi x) / (2 pi)        (exact at integers, error (2 pi)^2 e^3 / 6)

evaluated in three named steps on the normalized input ``y = x / (K + 1)``
(the normalization is folded into CoeffsToSlots for free):

1. :meth:`EvalMod.cosine`: a Chebyshev interpolant of
   ``cos(2 pi ((K + 1) y - 1/4) / 2^r)`` on [-1, 1] (the argument is divided
   by ``2^r`` so that a low degree suffices);
2. :meth:`EvalMod.double_angle`: r times ``cos(2t) = 2 cos(t)^2 - 1``, which
   gives ``cos(2 pi (x - 1/4)) = sin(2 pi x)``;
3. :meth:`EvalMod.arcsine` (optional): ``s + s^3 / 6 ~ arcsin(s)``, which
   removes the cubic error of the sine so that the result is ``2 pi e`` to
   fifth order.

The output is ``2 pi e`` (the 1/(2 pi) is folded into SlotsToCoeffs).  Depth:
the polynomial's, plus r, plus 2 with the arcsine step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ckks.ciphertext import Ciphertext
from ..ckks.evaluator import Evaluator
from ..errors import ParameterError
from .polynomial import ChebyshevPolynomial, cached_fit, chebyshev_interpolant, remez_minimax

__all__ = ["EvalMod"]


@dataclass(frozen=True)
class EvalMod:
    """Parameters of the scaled-sine reduction.

    Attributes:
        k_bound: K, the largest |I| supported.
        double_angles: r.
        degree: degree of the cosine interpolant.
        arcsine: apply the cubic arcsine correction.
        fit: ``"chebyshev"`` (interpolation at Chebyshev nodes) or
            ``"remez"`` (minimax by the Remez exchange, at most a factor
            ``2 + (2/pi) log(d + 1)`` better); both cached on disk.
    """

    k_bound: int = 12
    double_angles: int = 3
    degree: int = 30
    arcsine: bool = True
    fit: str = "chebyshev"

    def __post_init__(self):
        if not (isinstance(self.k_bound, int) and 1 <= self.k_bound <= 1 << 12):
            raise ParameterError(f"k_bound must be an int in [1, 4096], got {self.k_bound!r}")
        if not (isinstance(self.double_angles, int) and 0 <= self.double_angles <= 12):
            raise ParameterError(f"double_angles must be in [0, 12], got {self.double_angles!r}")
        if not (isinstance(self.degree, int) and 2 <= self.degree <= 256):
            raise ParameterError(f"degree must be in [2, 256], got {self.degree!r}")
        if self.fit not in ("chebyshev", "remez"):
            raise ParameterError(f"fit must be 'chebyshev' or 'remez', got {self.fit!r}")

    @property
    def normalizer(self) -> float:
        """``K + 1``: CoeffsToSlots divides by it so that y lies in [-1, 1]."""
        return float(self.k_bound + 1)

    def cosine_polynomial(self) -> ChebyshevPolynomial:
        """The interpolant of step 1.  With ``r = 0`` it is ``sin(2 pi (K + 1) y)``,
        an odd function: its even Chebyshev coefficients (zero up to rounding)
        are set to exactly zero, so that the evaluation skips them."""
        scale = 2 * math.pi / 2**self.double_angles
        kk = self.normalizer
        odd = self.double_angles == 0

        def fn(y):
            return np.cos(scale * (kk * y - 0.25))

        def fit() -> ChebyshevPolynomial:
            poly = remez_minimax(fn, self.degree)[0] if self.fit == "remez" else chebyshev_interpolant(fn, self.degree)
            if not odd:
                return poly
            return ChebyshevPolynomial(tuple(0.0 if k % 2 == 0 else c for k, c in enumerate(poly.coeffs)),
                                       poly.interval)

        key = {"fn": "evalmod-cos", "k": self.k_bound, "r": self.double_angles, "degree": self.degree,
               "fit": self.fit, "parity": "odd" if odd else None}
        return cached_fit(key, fit)

    def depth(self) -> int:
        return self.cosine_polynomial().depth(needs_affine=False) + self.double_angles + (2 if self.arcsine else 0)

    def evaluate_plain(self, x) -> np.ndarray:
        """The plaintext twin: ``2 pi e`` for ``x = I + e`` (x unnormalized)."""
        y = np.asarray(x, dtype=np.float64) / self.normalizer
        c = self.cosine_polynomial().evaluate_plain(y)
        for _ in range(self.double_angles):
            c = 2 * c * c - 1
        return c + c**3 / 6 if self.arcsine else c

    # ---- the three steps ------------------------------------------------------

    def cosine(self, evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        return self.cosine_polynomial().evaluate(evaluator, ct)

    def double_angle(self, evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        for _ in range(self.double_angles):
            ct = evaluator.add(evaluator.mul_int(evaluator.rescale(evaluator.square(ct)), 2), -1.0)
        return ct

    @staticmethod
    def arcsine_step(evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        """``s + s^3 / 6`` in two levels: ``(s/6) * s^2`` plus s."""
        sq = evaluator.rescale(evaluator.square(ct))
        sixth = evaluator.rescale(evaluator.mul_const(ct, 1.0 / 6.0))
        cube = evaluator.rescale(evaluator.mul(sixth, sq))
        return evaluator.add(cube, ct)

    def evaluate(self, evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        """Steps 1-3 on a ciphertext holding ``y = x / (K + 1)`` (real slots)."""
        out = self.double_angle(evaluator, self.cosine(evaluator, ct))
        return self.arcsine_step(evaluator, out) if self.arcsine else out
