"""``fhe_ckks.rlwe``: scheme-agnostic RLWE on top of the ring layer.

* :mod:`~fhe_ckks.rlwe.params`: parameter literal -> validated parameters,
  128-bit security check against the HE standard.
* :mod:`~fhe_ckks.rlwe.keys`: secret, public, relinearization and Galois keys.
* :mod:`~fhe_ckks.rlwe.keyswitch`: hybrid key switching with hoisting.
"""

from .keys import EncapsulationKeys, GaloisKeys, KeyGenerator, PublicKey, SecretKey, SwitchingKey
from .keyswitch import Decomposition, KeySwitcher
from .params import HE_STANDARD_MAX_LOG_QP, Parameters, ParametersLiteral

__all__ = [
    "Parameters",
    "ParametersLiteral",
    "HE_STANDARD_MAX_LOG_QP",
    "KeyGenerator",
    "EncapsulationKeys",
    "SecretKey",
    "PublicKey",
    "SwitchingKey",
    "GaloisKeys",
    "KeySwitcher",
    "Decomposition",
]
