"""decrypt(op(encrypt(x))) ~ op(x) for every evaluator operation, with the
tolerance in bits from ``expected_precision_bits``; level and scale
bookkeeping; typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks import Evaluator, KeyGenerator
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import (KeyMismatchError, LevelError, MissingKeyError, ParameterError, ScaleMismatchError,
                             SecurityError)
from tests.ckks_context import ROTATIONS, context

NAMES = ["INSECURE_N10_QP380_L5_S40", "INSECURE_N12_QP520_L7_S40"]
seeds = st.integers(0, 2**32 - 1)
names = st.sampled_from(NAMES)


def vectors(ctx, seed, count=2):
    rng = np.random.default_rng(seed)
    return [ctx.random_slots(rng) for _ in range(count)]


@given(names, seeds)
def test_fresh_public_and_secret_key_encryptions_decrypt(name, seed):
    ctx = context(name)
    (z,) = vectors(ctx, seed, 1)
    assert precision_bits(z, ctx.decrypt(ctx.encrypt(z))) >= ctx.bits()
    sym = ctx.sk_encryptor.encrypt(ctx.encoder.encode(z))
    assert sym.c1_seed is not None
    assert precision_bits(z, ctx.decrypt(sym)) >= ctx.bits()


@given(names, seeds, st.complex_numbers(max_magnitude=4, allow_nan=False, allow_infinity=False))
def test_add_sub_negate_with_ciphertexts_plaintexts_and_constants(name, seed, c):
    ctx = context(name)
    ev = ctx.evaluator
    a, b = vectors(ctx, seed)
    ca, cb = ctx.encrypt(a), ctx.encrypt(b)
    pb = ctx.encoder.encode(b)
    bits = ctx.bits(slack=1)
    assert precision_bits(a + b, ctx.decrypt(ev.add(ca, cb))) >= bits
    assert precision_bits(a - b, ctx.decrypt(ev.sub(ca, cb))) >= bits
    assert precision_bits(a + b, ctx.decrypt(ev.add(ca, pb))) >= bits
    assert precision_bits(a - b, ctx.decrypt(ev.sub(ca, pb))) >= bits
    assert precision_bits(-a, ctx.decrypt(ev.negate(ca))) >= bits
    assert precision_bits(a + c, ctx.decrypt(ev.add(ca, c))) >= bits
    assert precision_bits(a - c, ctx.decrypt(ev.sub(ca, c))) >= bits


@given(names, seeds, st.complex_numbers(max_magnitude=4, allow_nan=False, allow_infinity=False))
def test_multiplications_then_rescale_keep_exact_scale_bookkeeping(name, seed, c):
    ctx = context(name)
    ev, p = ctx.evaluator, ctx.params
    a, b = vectors(ctx, seed)
    ca, cb = ctx.encrypt(a), ctx.encrypt(b)
    top = p.max_level
    bits = ctx.bits(slack=2)
    for got, want in [
        (ev.mul(ca, cb), a * b),
        (ev.square(ca), a * a),
        (ev.mul_plain(ca, ctx.encoder.encode(b)), a * b),
        (ev.mul_const(ca, c), a * c),
    ]:
        r = ev.rescale(got)
        assert r.level == top - 1
        assert r.scale == got.scale / p.q_primes[top]
        assert r.scale == pytest.approx(p.scale_at(top - 1), rel=2.0**-40)
        assert precision_bits(want, ctx.decrypt(r)) >= bits - np.log2(max(1.0, abs(c)))


@given(names, seeds)
def test_a_chain_of_multiplications_down_to_level_0(name, seed):
    ctx = context(name)
    ev, p = ctx.evaluator, ctx.params
    (a,) = vectors(ctx, seed, 1)
    a = a / np.abs(a).max()
    ct, want = ctx.encrypt(a), a.copy()
    while ct.level > 0:
        ct = ev.rescale(ev.mul(ct, ctx.encrypt(a, level=ct.level)))
        want = want * a
    assert ct.level == 0
    assert precision_bits(want, ctx.decrypt(ct)) >= ctx.bits(slack=p.max_level)


@given(names, seeds, st.integers(1, 4))
def test_operands_at_different_levels_are_aligned(name, seed, drop):
    ctx = context(name)
    ev = ctx.evaluator
    a, b = vectors(ctx, seed)
    ca = ctx.encrypt(a)
    cb = ctx.encrypt(b)
    for _ in range(drop):
        cb = ev.rescale(ev.mul_const(cb, 1.0))
    s = ev.add(ca, cb)
    assert s.level == cb.level
    assert precision_bits(a + b, ctx.decrypt(s)) >= ctx.bits(slack=2)
    m = ev.rescale(ev.mul(ca, cb))
    assert m.level == cb.level - 1
    assert precision_bits(a * b, ctx.decrypt(m)) >= ctx.bits(slack=3)


def test_drop_level_keeps_the_value(rng):
    ctx = context(NAMES[0])
    z = ctx.random_slots(rng)
    ct = ctx.evaluator.drop_level(ctx.encrypt(z), 3)
    assert ct.level == ctx.params.max_level - 3
    assert precision_bits(z, ctx.decrypt(ct)) >= ctx.bits()
    with pytest.raises(LevelError):
        ctx.evaluator.drop_level(ct, ct.level + 1)
    bottom = ctx.evaluator.drop_level(ct, ct.level)
    with pytest.raises(LevelError):
        ctx.evaluator.rescale(bottom)


@given(names, seeds, st.sampled_from(ROTATIONS))
def test_rotation_moves_slots_left(name, seed, step):
    ctx = context(name)
    (z,) = vectors(ctx, seed, 1)
    out = ctx.decrypt(ctx.evaluator.rotate(ctx.encrypt(z), step))
    assert precision_bits(np.roll(z, -step), out) >= ctx.bits(slack=1)


@given(names, seeds)
def test_rotations_compose_and_conjugation(name, seed):
    ctx = context(name)
    ev = ctx.evaluator
    (z,) = vectors(ctx, seed, 1)
    ct = ctx.encrypt(z)
    twice = ev.rotate(ev.rotate(ct, 3), 4)
    assert precision_bits(np.roll(z, -7), ctx.decrypt(twice)) >= ctx.bits(slack=2)
    assert precision_bits(np.conj(z), ctx.decrypt(ev.conjugate(ct))) >= ctx.bits(slack=1)


@given(names, seeds)
def test_hoisted_rotations_equal_one_by_one(name, seed):
    ctx = context(name)
    ev = ctx.evaluator
    (z,) = vectors(ctx, seed, 1)
    ct = ctx.encrypt(z)
    hoisted = ev.rotate_hoisted(ct, [1, 2, 5, 0, -3])
    assert sorted(hoisted) == [-3, 0, 1, 2, 5]
    for step, out in hoisted.items():
        single = ctx.decrypt(ev.rotate(ct, step))
        got = ctx.decrypt(out)
        assert precision_bits(np.roll(z, -step), got) >= ctx.bits(slack=1)
        assert precision_bits(single, got) >= ctx.bits(slack=2)


def test_rotate_and_sum(rng):
    ctx = context(NAMES[0])
    z = rng.uniform(-1, 1, ctx.params.slots)
    out = ctx.decrypt(ctx.evaluator.rotate_and_sum(ctx.encrypt(z), 16))
    want = sum(np.roll(z, -k) for k in range(16))
    assert precision_bits(want, out) >= ctx.bits(slack=5)
    assert Evaluator.rotation_steps_for_sum(16) == [1, 2, 4, 8]


def test_missing_keys_and_mixed_keys_raise(rng):
    ctx = context(NAMES[0])
    z = ctx.random_slots(rng)
    ct = ctx.encrypt(z)
    with pytest.raises(MissingKeyError):
        ctx.evaluator.rotate(ct, 6)
    bare = Evaluator(ctx.params)
    with pytest.raises(MissingKeyError):
        bare.mul(ct, ct)
    other = KeyGenerator(ctx.params, seed=bytes([9]) * 32)
    from fhe_ckks import Encryptor

    foreign = Encryptor(ctx.params, other.public_key()).encrypt(ctx.encoder.encode(z))
    with pytest.raises(KeyMismatchError):
        ctx.evaluator.add(ct, foreign)
    with pytest.raises(KeyMismatchError):
        ctx.decryptor.decrypt(foreign)
    with pytest.raises(KeyMismatchError):
        Evaluator(ctx.params, ctx.evaluator.relin_key, other.galois_keys([1]))
    with pytest.raises(KeyMismatchError):
        ctx.evaluator.add(ct, context(NAMES[1]).encrypt(z))


def test_scale_mismatch_raises(rng):
    ctx = context(NAMES[0])
    z = ctx.random_slots(rng)
    a = ctx.encrypt(z)
    b = ctx.encrypt(z, scale=2.0**35)
    with pytest.raises(ScaleMismatchError):
        ctx.evaluator.add(a, b)
    with pytest.raises(ScaleMismatchError):
        ctx.evaluator.add(a, ctx.encoder.encode(z, scale=2.0**30))


def test_evaluator_refuses_a_secret_key():
    ctx = context(NAMES[0])
    with pytest.raises(SecurityError):
        Evaluator(ctx.params, ctx.keygen.secret_key)


def test_noise_flooding_costs_the_expected_precision(rng):
    ctx = context(NAMES[0])
    z = ctx.random_slots(rng)
    ct = ctx.encrypt(z)
    pt = ctx.decryptor.decrypt(ct, flooding_bits=20)
    got = ctx.encoder.decode(pt)
    bits = precision_bits(z, got)
    # flooding noise 2^20 per coefficient, N of them per slot, over the scale
    assert ctx.bits(slack=20) - 2 <= bits <= np.log2(ctx.params.scale) - 20


def test_flooding_bits_out_of_range_raise(rng):
    from fhe_ckks.errors import ParameterError

    ctx = context(NAMES[0])
    ct = ctx.encrypt(ctx.random_slots(rng))
    with pytest.raises(ParameterError):
        ctx.decryptor.decrypt(ct, flooding_bits=60)


def test_level_aware_galois_keys_serve_low_levels_only(rng):
    from fhe_ckks import serialize
    from fhe_ckks.ring import galois_element

    ctx = context(NAMES[1])
    p = ctx.params
    low = ctx.keygen.galois_keys([3], max_level=2)
    g = galois_element(3, p.log_n)
    assert low[g].max_level == 2
    assert low[g].nbytes < ctx.evaluator.galois_keys[g].nbytes
    ev = Evaluator(p, ctx.evaluator.relin_key, low)
    z = ctx.random_slots(rng)
    ct = ctx.evaluator.drop_level(ctx.encrypt(z), p.max_level - 2)
    assert precision_bits(np.roll(z, -3), ctx.decrypt(ev.rotate(ct, 3))) >= ctx.bits(slack=1)
    with pytest.raises(LevelError):
        ev.rotate(ctx.encrypt(z), 3)
    back = serialize.load(serialize.dump(low), p)
    assert back[g].max_level == 2
    np.testing.assert_array_equal(back[g].a, low[g].a)


@given(names, st.integers(0, 2**32 - 1), st.integers(1, 6), st.sampled_from([1, 2, 8]), st.sampled_from([1, 2, 3]))
def test_plain_dot_equals_the_sum_of_plaintext_products(name, seed, terms, repeat, threads):
    """The lazily reduced dot product is exactly sum(mul_plain) (same integers mod q), with the
    plaintexts given full or compact (a sparse encoding kept at N / repeat columns), on any number of
    threads (rows are shared among them)."""
    from fhe_ckks.ring import using_threads

    ctx = context(name)
    p, enc, ev = ctx.params, ctx.encoder, ctx.evaluator
    rng = np.random.default_rng(seed)
    slots = p.slots // repeat
    cts = [ctx.encryptor.encrypt(enc.encode(ctx.random_slots(rng))) for _ in range(terms)]
    values = [ctx.random_slots(rng, count=slots) for _ in range(terms)]
    want = None
    dot = ev.plain_dot(cts[0])
    for ct, v in zip(cts, values):
        pt = enc.encode(v, slots=slots)
        term = ev.mul_plain(ct, pt)
        want = term if want is None else ev.add(want, term)
        if repeat == 1:
            dot.add(ct, pt)
        else:
            poly, rep = enc.encode_compact(v, p.max_level, pt.scale, slots)
            assert rep == repeat and np.array_equal(np.repeat(poly, rep, axis=1), pt.poly)
            dot.add(ct, poly, pt.scale, rep)
    with using_threads(threads):
        got = dot.result()
    assert np.array_equal(got.data, want.data) and got.scale == want.scale
    with pytest.raises(ScaleMismatchError):
        dot.add(cts[0], enc.encode(values[0], slots=slots, scale=2.0**30))


@given(names, seeds, st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=40))
def test_linear_combination_of_mixed_levels_and_scales(name, seed, constants):
    ctx = context(name)
    ev = ctx.evaluator
    rng = np.random.default_rng(seed)
    values, terms = [], []
    for i, c in enumerate(constants):
        z = ctx.random_slots(rng)
        ct = ctx.encrypt(z)
        if i % 3 == 1:  # another level and scale: one multiplication by 1
            ct = ev.rescale(ev.mul_const(ct, 1.0))
        elif i % 3 == 2:
            ct = ev.drop_level(ct, 2)
        values.append(c * z)
        terms.append((ct, c))
    low = min(ct.level for ct, _ in terms)
    scale = ctx.params.scale_at(low - 1) * ctx.params.q_primes[low]
    out = ev.rescale(ev.linear_combination(terms, scale))  # 40 terms: two 32-term chunks
    from fhe_ckks.ring import using_threads
    with using_threads(2):                                   # rows shared among threads: the same integers
        assert np.array_equal(ev.rescale(ev.linear_combination(terms, scale)).data, out.data)
    assert out.level == low - 1 and out.scale == pytest.approx(ctx.params.scale_at(low - 1), rel=1e-12)
    want = np.sum(values, axis=0)
    assert np.max(np.abs(ctx.decrypt(out) - want)) <= len(constants) * 2.0 ** -(ctx.bits() - 4)
    with pytest.raises(ParameterError):
        ev.linear_combination([(terms[0][0], 1j)], scale)
