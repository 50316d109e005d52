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


def test_the_user_levels_end_where_the_lowest_run_of_primes_ends():
    assert presets.get("N16_QP1762_L29_S38").user_top == 29                    # one run: every level
    assert presets.get("BOOT_N16_QP1737_L24_S40").user_top == 8
    assert presets.get("BOOT_N16_QP1771_L32_S36").user_top == 16
    p = presets.get("INSECURE_BOOT_N12_QP1771_L32_S36", allow_insecure=True)
    assert p.user_top == 16 and all(p.literal.log_q[lvl] == 36 for lvl in range(1, 17)) and p.literal.log_q[17] == 45
