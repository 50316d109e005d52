"""Session-wide CKKS contexts for the tests (lattigo's TestContext): one set of
keys per preset, built once, with every rotation the tests use."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
from fhe_ckks.ckks import expected_precision_bits

ROTATIONS = (1, 2, 3, 4, 5, 7, 8, 16, -1, -3, 100)
TEST_KEY_SEED = bytes(range(32))


@dataclass
class Context:
    params: object
    keygen: KeyGenerator
    encoder: Encoder
    encryptor: Encryptor
    sk_encryptor: Encryptor
    decryptor: Decryptor
    evaluator: Evaluator

    def encrypt(self, values, level=None, scale=None, slots=None):
        return self.encryptor.encrypt(self.encoder.encode(values, level=level, scale=scale, slots=slots))

    def decrypt(self, ct, slots=None):
        return self.encoder.decode(self.decryptor.decrypt(ct), slots)

    def bits(self, slack: float = 0.0, scale: float | None = None) -> float:
        """The precision a result at ``scale`` (default: the standard scale)
        must reach, after operations worth ``slack`` bits."""
        return expected_precision_bits(scale or self.params.scale, self.params.log_n, slack)

    def random_slots(self, rng: np.random.Generator, complex_values: bool = True, count: int | None = None):
        count = self.params.slots if count is None else count
        z = rng.uniform(-1, 1, count)
        return z + 1j * rng.uniform(-1, 1, count) if complex_values else z


@lru_cache(maxsize=None)
def context(name: str) -> Context:
    params = presets.get(name, allow_insecure=True)
    kg = KeyGenerator(params, seed=TEST_KEY_SEED)
    ev = Evaluator(params, kg.relin_key(), kg.galois_keys(ROTATIONS, conjugate=True))
    return Context(params, kg, Encoder(params), Encryptor(params, kg.public_key(), seed=bytes(32)),
                   Encryptor(params, kg.secret_key, seed=bytes([1]) * 32), Decryptor(params, kg.secret_key), ev)
