"""fhe_ckks: a from-scratch RNS-CKKS library in Python and Numba.

Layers, each importing only those before it (checked by
``tests/test_architecture.py``)::

    ring  <-  rlwe  <-  ckks  <-  circuits  <-  bootstrap  <-  nn

``fhe_ckks.errors`` is the one leaf every layer may import.  Importing this
package compiles nothing: Numba kernels are compiled on first use and cached
on disk.

Quick tour::

    from fhe_ckks import presets, KeyGenerator, Encoder, Encryptor, Decryptor, Evaluator
    params = presets.get("N14_QP430_L7_S40")
    keygen = KeyGenerator(params)
    enc, ev = Encoder(params), Evaluator(params, keygen.relin_key(), keygen.galois_keys([1]))
    ct = Encryptor(params, keygen.public_key()).encrypt(enc.encode([1.0, 2.0]))
    ct = ev.rescale(ev.mul(ct, ct))
    print(enc.decode(Decryptor(params, keygen.secret_key).decrypt(ct))[:2])  # ~ [1, 4]
"""

from . import errors, presets, ring, serialize
from .ckks import (
    Ciphertext,
    Decryptor,
    Encoder,
    Encryptor,
    Evaluator,
    Plaintext,
    expected_precision_bits,
    precision_bits,
)
from .errors import FheError
from .rlwe import GaloisKeys, KeyGenerator, KeyPlan, Parameters, ParametersLiteral, PublicKey, SecretKey, SwitchingKey

__version__ = "0.1.0"

__all__ = [
    "errors",
    "presets",
    "ring",
    "serialize",
    "FheError",
    "Parameters",
    "ParametersLiteral",
    "KeyGenerator",
    "KeyPlan",
    "SecretKey",
    "PublicKey",
    "SwitchingKey",
    "GaloisKeys",
    "Encoder",
    "Encryptor",
    "Decryptor",
    "Evaluator",
    "Plaintext",
    "Ciphertext",
    "precision_bits",
    "expected_precision_bits",
    "__version__",
]
