"""Presets: lookup, refusal of toys, and (slow) real-size operation."""

from __future__ import annotations

import numpy as np
import pytest

from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
from fhe_ckks.ckks import expected_precision_bits, precision_bits
from fhe_ckks.errors import ParameterError, SecurityError


def test_unknown_and_insecure_presets():
    with pytest.raises(ParameterError):
        presets.get("N99")
    with pytest.raises(SecurityError):
        presets.get("INSECURE_N12_QP520_L7_S40")
    assert all(not n.startswith("INSECURE_") for n in presets.names(include_insecure=False))


@pytest.mark.slow
@pytest.mark.parametrize("name", presets.names(include_insecure=False))
def test_secure_preset_end_to_end(name):
    params = presets.get(name)
    kg = KeyGenerator(params, seed=bytes(32))
    ev = Evaluator(params, kg.relin_key(), kg.galois_keys([1]))
    enc = Encoder(params)
    encryptor, decryptor = Encryptor(params, kg.public_key(), seed=bytes(32)), Decryptor(params, kg.secret_key)
    z = np.random.default_rng(0).uniform(-1, 1, params.slots)
    ct = encryptor.encrypt(enc.encode(z))
    bits = expected_precision_bits(params.scale, params.log_n)
    assert precision_bits(z, enc.decode(decryptor.decrypt(ct))) >= bits
    prod = ev.rescale(ev.mul(ct, ct))
    assert precision_bits(z * z, enc.decode(decryptor.decrypt(prod))) >= bits - 1
    rot = ev.rotate(ct, 1)
    assert precision_bits(np.roll(z, -1), enc.decode(decryptor.decrypt(rot))) >= bits - 1
