"""``fhe_ckks.rlwe``: scheme-agnostic RLWE on top of the ring layer.

* :mod:`~fhe_ckks.rlwe.params`: parameter literal -> validated parameters,
  128-bit security check against the HE standard.
* :mod:`~fhe_ckks.rlwe.keyplan`: :class:`KeyPlan`, which keys a circuit needs
  and up to which level (merged with ``|``, sent as JSON).
* :mod:`~fhe_ckks.rlwe.keys`: secret, public, relinearization and Galois keys;
  :meth:`KeyGenerator.evaluation_keys` makes the keys of a plan.
* :mod:`~fhe_ckks.rlwe.keyswitch`: hybrid key switching with hoisting.
"""

from .keyplan import KeyPlan
from .keys import EncapsulationKeys, EvaluationKeys, GaloisKeys, KeyGenerator, PublicKey, SecretKey, SwitchingKey
from .keyswitch import Decomposition, KeySwitcher
from .params import HE_STANDARD_MAX_LOG_QP, Parameters, ParametersLiteral

__all__ = [
    "Parameters",
    "ParametersLiteral",
    "HE_STANDARD_MAX_LOG_QP",
    "KeyGenerator",
    "KeyPlan",
    "EvaluationKeys",
    "EncapsulationKeys",
    "SecretKey",
    "PublicKey",
    "SwitchingKey",
    "GaloisKeys",
    "KeySwitcher",
    "Decomposition",
]
