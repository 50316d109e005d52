"""Bootstrapping, step by step against plaintext models, then end to end,
at a toy ring; and the secret-key test double."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from fhe_ckks import Decryptor, Encoder, Encryptor, KeyGenerator, presets
from fhe_ckks.bootstrap import CONFIGS, BootstrapConfig, Bootstrapper, SecretKeyBootstrapper, required_rotations
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import BootstrapRangeError, SecurityError
from fhe_ckks.ring.ntt import bit_reverse_indices

NAME = "INSECURE_BOOT_N12_QP1235_H32"


@lru_cache(maxsize=None)
def setup(slots: int | None, packed: bool = False):
    params = presets.get(NAME, allow_insecure=True)
    config = BootstrapConfig(slots=slots, packed=packed)
    kg = KeyGenerator(params, seed=bytes(range(32)))
    boot = Bootstrapper(params, kg.relin_key(), kg.galois_keys(required_rotations(params, config), conjugate=True),
                        config)
    enc = Encoder(params)
    return params, kg, boot, enc, Encryptor(params, kg.public_key(), seed=bytes(32)), Decryptor(params, kg.secret_key)


def exact_coefficients(params, decryptor, encoder, ct):
    pt = decryptor.decrypt(ct)
    return encoder.plaintext_coefficients(pt) / pt.scale


@pytest.mark.parametrize("slots", [None, 128])
def test_each_step_matches_its_plaintext_model(slots, rng):
    params, kg, boot, enc, encryptor, dec = setup(slots)
    n = boot.slots
    z = rng.uniform(-1, 1, n)
    ct = encryptor.encrypt(enc.encode(z, level=0, slots=n))

    raised = boot.mod_raise(ct)  # decrypts to m + q0 I, read at scale q0
    assert raised.level == params.max_level
    t = exact_coefficients(params, dec, enc, raised)
    m_over_q0 = exact_coefficients(params, dec, enc, ct) * ct.scale / params.q_primes[0]
    integer_part = t - m_over_q0
    np.testing.assert_allclose(integer_part, np.round(integer_part), atol=1e-9)
    assert np.abs(np.round(integer_part)).max() <= boot.config.evalmod.k_bound

    summed = boot.sub_sum(raised)  # keeps the subring Z[X^gap], times gap
    gap = params.slots // n
    ts = exact_coefficients(params, dec, enc, summed)
    sub = np.zeros_like(t)
    sub[::gap] = t[::gap] * gap
    np.testing.assert_allclose(ts, sub, atol=1e-6)

    w = boot.coeffs_to_slots(summed)  # the coefficients, bit-reversed, normalized
    assert summed.level - w.level == boot.config.cts_budget
    u = ts[0: params.slots: gap] + 1j * ts[params.slots:: gap]
    want = u[bit_reverse_indices(int(np.log2(n)))] / (2 * gap * boot.config.evalmod.normalizer)
    got = enc.decode(dec.decrypt(w), n)
    assert precision_bits(want, got) >= 22

    re, im = boot.split(w)
    assert precision_bits(2 * want.real, enc.decode(dec.decrypt(re), n)) >= 22
    assert precision_bits(2 * want.imag, enc.decode(dec.decrypt(im), n)) >= 22


@pytest.mark.parametrize("slots", [None, 128])
def test_full_bootstrap_refreshes_levels_and_keeps_the_values(slots, rng):
    params, kg, boot, enc, encryptor, dec = setup(slots)
    n = boot.slots
    z = rng.uniform(-1, 1, n)
    ct = encryptor.encrypt(enc.encode(z, level=0, slots=n))
    out = boot.bootstrap(ct)
    assert out.level == boot.output_level == params.max_level - boot.depth() > 0
    assert out.scale == pytest.approx(params.scale_at(out.level), rel=2.0**-30)
    got = enc.decode(dec.decrypt(out), n)
    # Measured 15.7 / 19.9 bits (max / mean) with full slots and 19.9 / 21.8
    # with 128 slots.  The budget: EvalMod sees y = x / (K + 1) with CKKS noise
    # of about 2^-39 at scale 2^55 and N = 2^12; its slope 2 pi (K + 1) = 2^6.4
    # turns that into about 2^-33 on 2 pi m / q_0, whose coefficients are
    # about 2^-10: some 22 bits, minus the tail of the max over all slots.
    assert precision_bits(z, got) >= 13
    assert precision_bits(z, got, mean=True) >= 17


def test_out_of_range_and_malformed_inputs_are_refused(rng):
    params, kg, boot, enc, encryptor, dec = setup(None)
    too_big = encryptor.encrypt(enc.encode(rng.uniform(-1, 1, 8), level=0, scale=2.0**58))
    with pytest.raises(BootstrapRangeError):
        boot.bootstrap(too_big)
    sparse = encryptor.encrypt(enc.encode(rng.uniform(-1, 1, 8), level=0, slots=8))
    with pytest.raises(BootstrapRangeError):
        boot.bootstrap(sparse)
    with pytest.raises(SecurityError):
        Bootstrapper(params, kg.secret_key, None)


def test_secret_key_bootstrapper_is_a_counted_test_double(rng):
    params, kg, boot, enc, encryptor, dec = setup(None)
    double = SecretKeyBootstrapper(params, kg.secret_key, depth=boot.depth())
    assert double.output_level == boot.output_level
    z = rng.uniform(-1, 1, params.slots)
    out = double.bootstrap(encryptor.encrypt(enc.encode(z, level=0)))
    assert double.calls == 1 and out.level == boot.output_level
    assert precision_bits(z, enc.decode(dec.decrypt(out))) > 25


def test_packed_sparse_path_runs_one_evalmod_and_keeps_precision(rng):
    params, kg, boot, enc, encryptor, dec = setup(128, True)
    z = rng.uniform(-1, 1, 128) + 1j * rng.uniform(-1, 1, 128)  # complex messages too
    ct = encryptor.encrypt(enc.encode(z, level=0, slots=128))
    calls = []
    original = boot.eval_mod
    boot.eval_mod = lambda c: calls.append(1) or original(c)
    try:
        out = boot.bootstrap(ct)
    finally:
        boot.eval_mod = original
    assert calls == [1]
    assert out.level == boot.output_level and out.slots == 128
    got = enc.decode(dec.decrypt(out), 128)
    assert precision_bits(z, got) >= 17
    assert precision_bits(z, got, mean=True) >= 19


def test_packed_path_needs_sparse_slots():
    from fhe_ckks.errors import ParameterError

    params = presets.get(NAME, allow_insecure=True)
    with pytest.raises(ParameterError):
        required_rotations(params, BootstrapConfig(packed=True))


def test_generated_keys_follow_the_levels_of_the_plan(rng):
    from fhe_ckks.bootstrap import generate_keys, rotation_levels
    from fhe_ckks.ring import galois_element

    params = presets.get(NAME, allow_insecure=True)
    config = BootstrapConfig(slots=128, packed=True)
    kg = KeyGenerator(params, seed=bytes(range(32)))
    rk, gk, _ = generate_keys(kg, config)
    levels = rotation_levels(params, config)
    assert min(levels.values()) < params.max_level  # some keys are level-aware
    for step, level in levels.items():
        assert gk[galois_element(step, params.log_n)].max_level == level
    boot = Bootstrapper(params, rk, gk, config)
    enc, dec = Encoder(params), Decryptor(params, kg.secret_key)
    z = rng.uniform(-1, 1, 128)
    out = boot.bootstrap(Encryptor(params, kg.public_key()).encrypt(enc.encode(z, level=0, slots=128)))
    assert precision_bits(z, enc.decode(dec.decrypt(out), 128)) >= 17


@pytest.mark.slow
def test_secure_n16_preset_bootstraps():
    from fhe_ckks.bootstrap import CONFIGS, generate_keys

    name = "BOOT_N16_QP1737_L24_S40"
    params = presets.get(name)
    assert params.is_secure and params.hamming_weight is None
    config = CONFIGS[name]
    kg = KeyGenerator(params, seed=bytes(range(32)))
    keys = generate_keys(kg, config)
    boot = Bootstrapper(params, keys.relin, keys.galois, config, keys.encapsulation)
    assert boot.slots == params.slots and boot.output_level == 8 and params.scale_at(8) == 2.0**40
    enc, dec = Encoder(params), Decryptor(params, kg.secret_key)
    z = np.random.default_rng(0).uniform(-1, 1, boot.slots)
    out = boot.bootstrap(Encryptor(params, kg.secret_key).encrypt(enc.encode(z, level=0)))
    got = enc.decode(dec.decrypt(out))
    # Measured 23.0-23.3 / 25.4 bits (max / mean error), see docs/bootstrapping.md.
    assert precision_bits(z, got) >= 22
    assert precision_bits(z, got, mean=True) >= 24.5


DENSE = "INSECURE_BOOT_N12_QP1354_L19_S40"  # dense secret, chain of three runs


@lru_cache(maxsize=None)
def dense_setup():
    from fhe_ckks.bootstrap import CONFIGS, generate_keys

    params = presets.get(DENSE, allow_insecure=True)
    config = CONFIGS[DENSE]
    kg = KeyGenerator(params, seed=bytes(range(32)))
    keys = generate_keys(kg, config)
    boot = Bootstrapper(params, keys.relin, keys.galois, config, keys.encapsulation)
    enc = Encoder(params)
    return params, kg, keys, boot, enc, Encryptor(params, kg.public_key(), seed=bytes(32)), \
        Decryptor(params, kg.secret_key)


def test_encapsulation_bounds_the_overflow_by_the_ephemeral_weight(rng):
    import dataclasses

    params, kg, keys, boot, enc, encryptor, dec = dense_setup()
    assert params.hamming_weight is None and keys.encapsulation.weight == 32
    z = rng.uniform(-1, 1, params.slots)
    ct = boot.prescale(encryptor.encrypt(enc.encode(z, level=0)))
    m_over_q0 = exact_coefficients(params, dec, enc, ct) * ct.scale / params.q_primes[0]
    # ModRaise under the dense secret: |I| ~ sqrt(N / 18) standard deviations, far above K = 16.
    plain = Bootstrapper(params, keys.relin, keys.galois, dataclasses.replace(boot.config, ephemeral_weight=None))
    dense_i = exact_coefficients(params, dec, enc, plain.mod_raise(ct)) - m_over_q0
    assert np.abs(np.round(dense_i)).max() > 16
    # Through the ephemeral secret: |I| <= (32 + 1) / 2, back under the dense secret at the top level.
    raised = boot.mod_raise(ct)
    assert raised.level == params.max_level and raised.key_id == ct.key_id
    integer_part = exact_coefficients(params, dec, enc, raised) - m_over_q0
    np.testing.assert_allclose(integer_part, np.round(integer_part), atol=1e-9)
    assert np.abs(np.round(integer_part)).max() <= 16 == boot.config.evalmod.k_bound


def test_dense_secret_bootstrap_through_encapsulation(rng):
    params, kg, keys, boot, enc, encryptor, dec = dense_setup()
    z = rng.uniform(-1, 1, params.slots)
    ct = encryptor.encrypt(enc.encode(z, level=0))
    out = boot.bootstrap(ct)
    assert out.level == boot.output_level == 3  # the three user levels of 40 bits
    assert out.scale == pytest.approx(params.scale_at(out.level), rel=2.0**-30) and out.scale == 2.0**40
    got = enc.decode(dec.decrypt(out))
    # Measured 23.9 / 26.4 bits (max / mean), the public-key encryption's own error at 2^40 included
    # (29.9 / 31.5 with a secret-key encryption, as bench_bootstrap.py measures).
    assert precision_bits(z, got) >= 22
    assert precision_bits(z, got, mean=True) >= 25.5


def test_prescale_keeps_the_values_and_fills_q0(rng):
    params, kg, keys, boot, enc, encryptor, dec = dense_setup()
    z = rng.uniform(-1, 1, 16)
    ct = encryptor.encrypt(enc.encode(z, level=3))
    low = boot.prescale(ct)
    assert low.level == 0
    assert params.q_primes[0] / 2**6 < low.scale <= params.q_primes[0] / 2**5
    assert precision_bits(z, enc.decode(dec.decrypt(low))[:16]) >= 25


def test_encapsulation_keys_are_required_and_must_match(rng):
    from fhe_ckks.bootstrap import CONFIGS
    from fhe_ckks.errors import KeyMismatchError, ParameterError

    params, kg, keys, boot, enc, encryptor, dec = dense_setup()
    config = CONFIGS[DENSE]
    with pytest.raises(ParameterError):
        Bootstrapper(params, keys.relin, keys.galois, config)
    other = KeyGenerator(params, seed=bytes(32)).encapsulation_keys(32)
    with pytest.raises(KeyMismatchError):
        Bootstrapper(params, keys.relin, keys.galois, config, other)
    with pytest.raises(ParameterError):
        Bootstrapper(params, keys.relin, keys.galois, config, kg.encapsulation_keys(16))
    import dataclasses

    with pytest.raises(ParameterError):
        required_rotations(params, dataclasses.replace(config, message_ratio_log2=3))


def test_a_chain_too_small_for_coeffs_to_slots_is_refused_not_bootstrapped_to_garbage():
    # a levelled chain of 40-bit primes under a 60-bit q_0: CoeffsToSlots would encode its 4-slot diagonals
    # at 2^(40 + 40 - 60) times 2^-17, i.e. round them to 0 or +-1 (measured: 0.7 bits, no error raised)
    from fhe_ckks.bootstrap import MIN_CTS_DIAGONAL_BITS, BootstrapPlan
    from fhe_ckks.errors import ParameterError

    params = presets.get("INSECURE_N12_QP900_L18_S40", allow_insecure=True)
    config = BootstrapConfig(slots=4, packed=True, cts_budget=1, stc_budget=1)
    assert BootstrapPlan.build(params, config).cts_diagonal_bits(params) < MIN_CTS_DIAGONAL_BITS
    with pytest.raises(ParameterError, match="CoeffsToSlots"):
        Bootstrapper(params, None, None, config)
    for name, cfg in CONFIGS.items():                   # every bootstrapping preset keeps a wide margin
        p = presets.get(name, allow_insecure=True)
        assert BootstrapPlan.build(p, cfg).cts_diagonal_bits(p) > MIN_CTS_DIAGONAL_BITS + 10


@pytest.mark.parametrize("retrace", [False, True])
def test_a_wide_first_stage_bootstraps_few_slots_on_a_chain_of_small_primes(retrace, rng):
    # the chain the previous test refuses: one more level for CoeffsToSlots' first stage (two primes) gives
    # its diagonals 40 more bits, and 8 slots bootstrap there to about 19 bits
    from fhe_ckks.bootstrap import MIN_CTS_DIAGONAL_BITS, BootstrapPlan, generate_keys
    from fhe_ckks.circuits.evalmod import EvalMod

    params = presets.get("INSECURE_N12_QP900_L18_S40", allow_insecure=True)
    config = BootstrapConfig(slots=8, packed=True, cts_budget=1, stc_budget=1, wide_first_stage=True,
                             retrace=retrace, ephemeral_weight=32, message_ratio_log2=5,
                             evalmod=EvalMod(k_bound=16, double_angles=0, degree=160, arcsine=True))
    plan = BootstrapPlan.build(params, config)
    narrow = BootstrapPlan.build(params, BootstrapConfig(slots=8, packed=True, cts_budget=1, stc_budget=1,
                                                         evalmod=config.evalmod))
    assert plan.depth == narrow.depth + 1 == 13
    wide_bits, narrow_bits = plan.cts_diagonal_bits(params), narrow.cts_diagonal_bits(params)
    assert wide_bits > MIN_CTS_DIAGONAL_BITS > narrow_bits and abs(wide_bits - narrow_bits - 40) < 1.5
    kg = KeyGenerator(params, seed=bytes(range(32)))
    keys = generate_keys(kg, config)
    boot = Bootstrapper(params, keys.relin, keys.galois, config, keys.encapsulation)
    assert boot.key_plan().steps == narrow.key_plan().steps     # retrace needs no new key
    enc, dec = Encoder(params), Decryptor(params, kg.secret_key)
    z = rng.uniform(-1, 1, 8)
    out = boot.bootstrap(Encryptor(params, kg.public_key()).encrypt(enc.encode(z, level=0, slots=8)))
    assert out.level == params.max_level - 13 and out.slots == 8
    assert precision_bits(enc.decode(dec.decrypt(out)), z) > 17
    # every replica of the 8 slots: the retrace averages their noise (measured 18.3 against 14.8 bits)
    full = enc.decode(dec.decrypt(out.with_metadata(slots=params.slots)))
    assert precision_bits(full, np.tile(z, params.slots // 8)) > (17 if retrace else 13)


def test_unpack_bootstraps_2n_real_values_in_n_complex_slots(rng):
    # the real and imaginary parts of 8 complex slots come out as 16 real slots, at the precision of 8 slots
    # and with the same keys and diagonals; with the retrace, every replica has it (what a slot-wise circuit
    # after the bootstrap sees), and the imaginary parts are noise only
    from dataclasses import replace

    from fhe_ckks.bootstrap import BootstrapPlan, generate_keys
    from fhe_ckks.circuits.evalmod import EvalMod
    from fhe_ckks.errors import ParameterError

    params = presets.get("INSECURE_N12_QP900_L18_S40", allow_insecure=True)
    plain = BootstrapConfig(slots=8, packed=True, cts_budget=1, stc_budget=1, wide_first_stage=True,
                            ephemeral_weight=32, message_ratio_log2=5,
                            evalmod=EvalMod(k_bound=16, double_angles=0, degree=160, arcsine=True))
    config = replace(plain, unpack=True, retrace=True)
    plan, base = BootstrapPlan.build(params, config), BootstrapPlan.build(params, plain)
    assert plan.depth == base.depth and plan.output_slots == 16 and base.output_slots == 8
    assert [lt.diagonal_count for lt in plan.slots_to_coeffs] == [lt.diagonal_count for lt in base.slots_to_coeffs]
    kg = KeyGenerator(params, seed=bytes(range(32)))
    keys = generate_keys(kg, config)
    boot = Bootstrapper(params, keys.relin, keys.galois, config, keys.encapsulation)
    assert boot.output_slots == 16 and set(boot.key_plan().steps) == set(base.key_plan().steps)
    enc, dec = Encoder(params), Decryptor(params, kg.secret_key)
    z = rng.uniform(-1, 1, 8) + 1j * rng.uniform(-1, 1, 8)
    out = boot.bootstrap(Encryptor(params, kg.public_key()).encrypt(enc.encode(z, level=0, slots=8)))
    assert out.slots == 16 and out.level == params.max_level - plan.depth
    want = np.concatenate([z.real, z.imag])
    assert precision_bits(enc.decode(dec.decrypt(out)), want) > 17
    full = enc.decode(dec.decrypt(out.with_metadata(slots=params.slots)))
    assert precision_bits(full.real, np.tile(want, params.slots // 16)) > 17      # measured 18.0
    assert np.max(np.abs(full.imag)) < 2.0**-17
    with pytest.raises(ParameterError, match="packed"):
        BootstrapPlan.build(params, replace(plain, packed=False, unpack=True))
    with pytest.raises(ParameterError, match="replicas"):
        BootstrapPlan.build(params, replace(plain, slots=params.slots // 2, unpack=True, retrace=True))


def test_a_landed_bootstrapper_only_goes_down():
    from fhe_ckks.bootstrap import LandedBootstrapper
    from fhe_ckks.errors import LevelError

    class Ends:                          # a stand-in: the landing's level check needs only output_level
        output_level = 19
        slots = 8

    landed = LandedBootstrapper(Ends(), 16)
    assert landed.output_level == 16 and landed.slots == 8
    for level in (19, 20, -1):
        with pytest.raises(LevelError):
            LandedBootstrapper(Ends(), level)
