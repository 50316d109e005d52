"""``fhe_ckks.circuits``: algorithms built from CKKS operations.

* :mod:`~fhe_ckks.circuits.polynomial`: Chebyshev-basis polynomial evaluation
  (baby-step giant-step) and fitting.
* :mod:`~fhe_ckks.circuits.lintrans`: linear transforms from their diagonals,
  baby-step giant-step with hoisted rotations.
"""

from .polynomial import ChebyshevPolynomial, LevelSimulator, cached_fit, chebyshev_interpolant, remez_minimax

__all__ = ["ChebyshevPolynomial", "LevelSimulator", "chebyshev_interpolant", "remez_minimax", "cached_fit"]

from .sign import CompositeSign, SignStage, sign_minimax  # noqa: E402  (composite minimax sign, comparison)

__all__ += ["CompositeSign", "SignStage", "sign_minimax"]
