"""Key generation: secrets, the RLWE relations of every key, seeds, level-aware keys, typed errors.

Every relation is checked in the coefficient domain against plain numpy / Python-int references
on a toy ring (N = 32): the key's error ``b + a*s - (target term)`` must be one small integer
polynomial (|e| <= ceil(6 sigma), the sampler's tail), the same on every limb.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import ParameterError
from fhe_ckks.rlwe import Parameters, ParametersLiteral
from fhe_ckks.rlwe.keys import (
    EncapsulationKeys,
    GaloisKeys,
    KeyGenerator,
    PublicKey,
    SwitchingKey,
    signed_to_ntt,
)

LOG_N = 5
N = 1 << LOG_N
SEED = bytes(range(32))

#: 5 ciphertext primes, 2 special primes, dnum = 3 with alpha = 2: digits {0, 1}, {2, 3}, {4}
#: (the last one partial), so a key at level l has 1, 2 or 3 digits.
TOY = ParametersLiteral(log_n=LOG_N, log_q=(50, 40, 40, 40, 40), log_p=(55, 55), log_scale=40, digits=3,
                        name="INSECURE_TEST_KEYS")


@lru_cache(maxsize=None)
def toy_params(hamming_weight: int | None = None, special: bool = True) -> Parameters:
    lit = ParametersLiteral(**{**TOY.__dict__, "hamming_weight": hamming_weight,
                               "log_p": TOY.log_p if special else (), "digits": TOY.digits if special else None})
    return Parameters.from_literal(lit, allow_insecure=True)


@lru_cache(maxsize=None)
def toy_keygen() -> KeyGenerator:
    return KeyGenerator(toy_params(), seed=SEED)


def error_tail(params: Parameters) -> int:
    return math.ceil(6 * params.sigma)


# ---- plain references -----------------------------------------------------------------------------


def negacyclic_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a * b mod X^N + 1`` for small integer coefficient vectors."""
    n = a.shape[0]
    full = np.convolve(a.astype(np.int64), b.astype(np.int64))
    out = full[:n].copy()
    out[: n - 1] -= full[n:]
    return out


def automorphism(a: np.ndarray, g: int) -> np.ndarray:
    """``a(X^g) mod X^N + 1`` (a signed permutation of the coefficients)."""
    n = a.shape[0]
    e = (np.arange(n) * g) % (2 * n)
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, e % n, np.where(e < n, 1, -1) * a.astype(np.int64))
    return out


def centered(vals, q: int) -> np.ndarray:
    v = np.asarray(vals, dtype=object) % q
    return np.array([int(x) - q if int(x) > q // 2 else int(x) for x in v], dtype=np.int64)


def inverse_ntt(params: Parameters, values: np.ndarray, rows) -> np.ndarray:
    """Coefficients (reduced uint64) of NTT values over the given ``tables_qp`` rows."""
    out = np.ascontiguousarray(values, dtype=np.uint64).copy()
    params.tables_qp.inverse(out, rows=np.asarray(rows, dtype=np.uint64))
    return out


def b_plus_as(params, b, a, s, rows) -> np.ndarray:
    """``b + a*s`` (NTT domain) with Python integers, then back to coefficients."""
    moduli = [int(params.moduli_qp[r]) for r in rows]
    out = np.empty(b.shape, dtype=np.uint64)
    for k, q in enumerate(moduli):
        out[k] = ((b[k].astype(object) + a[k].astype(object) * s[k].astype(object)) % q).astype(np.uint64)
    return inverse_ntt(params, out, rows)


def single_error(params, coeffs: np.ndarray, rows, expected) -> np.ndarray:
    """``coeffs - expected[k]`` modulo each row's prime, centred; asserts it is one integer polynomial,
    the same on every limb, within the Gaussian tail, and returns it."""
    errs = []
    for k, r in enumerate(rows):
        q = int(params.moduli_qp[r])
        errs.append(centered(coeffs[k].astype(object) - expected[k], q))
    for e in errs[1:]:
        np.testing.assert_array_equal(e, errs[0])
    assert np.max(np.abs(errs[0])) <= error_tail(params)
    return errs[0]


def switching_errors(params: Parameters, key: SwitchingKey, s_ntt: np.ndarray, target: np.ndarray):
    """The error of each digit of ``key``: ``b_j + a_j s - P Q~_j s'`` with ``s'`` given by its
    integer coefficients ``target``; ``Q~_j`` is 1 modulo the primes of digit j, 0 modulo the others."""
    rows = [int(r) for r in key.table_rows()]
    big_p = math.prod(params.p_primes)
    s = np.ascontiguousarray(s_ntt[rows])
    out = []
    positions = params.digit_positions(key.max_level)
    assert key.b.shape[0] == len(positions)
    for j, pos in enumerate(positions):
        coeffs = b_plus_as(params, key.b[j], key.a[j], s, rows)
        expected = [(big_p % int(params.moduli_qp[r])) * target.astype(object) if r in pos
                    else np.zeros(params.n, dtype=object) for r in rows]
        out.append(single_error(params, coeffs, rows, expected))
    return out


def check_switching_key(params, key, s_ntt, target):
    errors = switching_errors(params, key, s_ntt, target)
    assert all(np.any(e != 0) for e in errors)                   # there is an error term...
    for i in range(len(errors)):                                 # ...drawn afresh for every digit
        for j in range(i):
            assert not np.array_equal(errors[i], errors[j])


# ---- secret keys ------------------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32), st.sampled_from([None, 1, 7, 16, N]))
def test_secret_is_ternary_of_the_parameters_weight_and_its_ntt_matches(seed, weight):
    params = toy_params(weight)
    sk = KeyGenerator(params, seed=seed).secret_key
    c = sk.coeffs
    assert c.shape == (N,) and c.dtype == np.int8
    assert set(np.unique(c).tolist()) <= {-1, 0, 1}
    if weight is not None:
        assert np.count_nonzero(c) == weight
    rows = list(range(len(params.q_primes) + len(params.p_primes)))
    assert sk.ntt.shape == (len(rows), N)
    coeffs = inverse_ntt(params, sk.ntt, rows)
    for k, q in enumerate(params.moduli_qp.tolist()):
        np.testing.assert_array_equal(centered(coeffs[k], q), c.astype(np.int64))
        assert sk.ntt[k].max() < q


def test_dense_secret_uses_all_three_values():
    c = toy_keygen().secret_key.coeffs
    counts = [np.count_nonzero(c == v) for v in (-1, 0, 1)]
    assert min(counts) > 0 and np.count_nonzero(c) > 1


# ---- seeds and key ids ------------------------------------------------------------------------------


def test_a_fixed_seed_reproduces_every_key():
    params = toy_params()
    k1, k2 = KeyGenerator(params, seed=SEED), KeyGenerator(params, seed=SEED)
    assert k1.secret_key.key_id == k2.secret_key.key_id and len(k1.secret_key.key_id) == 16
    np.testing.assert_array_equal(k1.secret_key.coeffs, k2.secret_key.coeffs)
    p1, p2 = k1.public_key(), k2.public_key()
    assert p1.seed == p2.seed and p1.b.tobytes() == p2.b.tobytes()
    r1, r2 = k1.relin_key(), k2.relin_key()
    assert r1.seed == r2.seed and r1.b.tobytes() == r2.b.tobytes()
    # a second public key from the same generator is a fresh one
    p3 = k1.public_key()
    assert p3.seed != p1.seed and not np.array_equal(p3.b, p1.b)


def test_other_or_no_seed_gives_other_secrets_and_key_ids():
    params = toy_params()
    other = KeyGenerator(params, seed=bytes(32))
    fresh1, fresh2 = KeyGenerator(params), KeyGenerator(params)
    keys = [toy_keygen(), other, fresh1, fresh2]
    ids = {k.secret_key.key_id for k in keys}
    assert len(ids) == len(keys)
    for i in range(len(keys)):
        for j in range(i):
            assert not np.array_equal(keys[i].secret_key.coeffs, keys[j].secret_key.coeffs)


def test_every_key_of_a_generator_carries_its_key_id():
    kg = toy_keygen()
    kid = kg.secret_key.key_id
    gk = kg.galois_keys([1, 2])
    assert kg.public_key().key_id == kid and kg.relin_key().key_id == kid
    assert gk.key_id == kid and all(gk[g].key_id == kid for g in gk.elements())
    assert kg.encapsulation_keys(4).key_id == kid


def test_keygenerator_refuses_other_arguments():
    with pytest.raises(ParameterError):
        KeyGenerator(TOY)                       # a literal, not validated Parameters
    with pytest.raises(ParameterError):
        KeyGenerator("INSECURE_TEST_KEYS")


# ---- public key ---------------------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
def test_public_key_is_an_rlwe_sample_under_the_secret(seed):
    params = toy_params()
    kg = KeyGenerator(params, seed=seed)
    pk = kg.public_key()
    rows = list(range(params.max_level + 1))
    assert pk.b.shape == pk.a.shape == (len(rows), N)
    coeffs = b_plus_as(params, pk.b, pk.a, kg.secret_key.ntt[rows], rows)
    e = single_error(params, coeffs, rows, [np.zeros(N, dtype=object)] * len(rows))
    assert np.any(e != 0)


def test_public_key_under_another_secret_is_not_small():
    params = toy_params()
    pk = toy_keygen().public_key()
    other = KeyGenerator(params, seed=bytes(32)).secret_key
    rows = list(range(params.max_level + 1))
    coeffs = b_plus_as(params, pk.b, pk.a, other.ntt[rows], rows)
    with pytest.raises(AssertionError):
        single_error(params, coeffs, rows, [np.zeros(N, dtype=object)] * len(rows))


# ---- switching keys -----------------------------------------------------------------------------------


def test_relinearization_key_switches_from_s_squared():
    params = toy_params()
    kg = toy_keygen()
    rk = kg.relin_key()
    assert rk.kind == "relin" and rk.galois_element is None and rk.max_level == params.max_level
    assert rk.b.shape == (3, params.max_level + 1 + len(params.p_primes), N) == rk.a.shape
    s = kg.secret_key.coeffs
    check_switching_key(params, rk, kg.secret_key.ntt, negacyclic_mul(s, s))
    # the target really is s^2: against s itself the relation fails
    with pytest.raises(AssertionError):
        switching_errors(params, rk, kg.secret_key.ntt, s.astype(np.int64))


@given(st.integers(0, N - 1), st.integers(0, 4))
def test_galois_key_switches_from_the_automorphic_secret(half, level):
    params = toy_params()
    kg = toy_keygen()
    g = 2 * half + 1
    key = kg.galois_key(g, max_level=level)
    assert key.kind == "galois" and key.galois_element == g and key.max_level == level
    check_switching_key(params, key, kg.secret_key.ntt, automorphism(kg.secret_key.coeffs, g))


def test_galois_keys_of_rotations_and_conjugation_use_their_elements():
    params = toy_params()
    kg = toy_keygen()
    gk = kg.galois_keys([1, -1, 3], conjugate=True)
    two_n = 2 * N
    want = sorted({5 % two_n, pow(5, N // 2 - 1, two_n), pow(5, 3, two_n), two_n - 1})
    assert gk.elements() == want
    for g in want:
        assert g in gk and gk[g].galois_element == g
        check_switching_key(params, gk[g], kg.secret_key.ntt, automorphism(kg.secret_key.coeffs, g))
    # the key of one element does not serve another
    with pytest.raises(AssertionError):
        switching_errors(params, gk[5], kg.secret_key.ntt, automorphism(kg.secret_key.coeffs, two_n - 1))


def test_seeded_halves_expand_to_the_same_uniform_arrays():
    params = toy_params()
    kg = toy_keygen()
    rk = kg.relin_key()
    low = kg.galois_key(5, max_level=1)
    pk = kg.public_key()
    enc = kg.encapsulation_keys(4)
    for key in (rk, low, enc.up):
        assert len(key.seed) == 32
        lazy = SwitchingKey(params, key.key_id, key.kind, key.galois_element, key.seed, key.b,
                            max_level=key.max_level)
        assert lazy._a is None
        np.testing.assert_array_equal(lazy.a, key.a)
        assert lazy.a is lazy.a                                  # expanded once
        other = SwitchingKey(params, key.key_id, key.kind, key.galois_element, bytes(32), key.b,
                             max_level=key.max_level)
        assert not np.array_equal(other.a, key.a)
        assert key.serialized_nbytes == key.b.nbytes + 32 < key.nbytes == 2 * key.b.nbytes
    lazy_pk = PublicKey(params, pk.key_id, pk.seed, pk.b)
    np.testing.assert_array_equal(lazy_pk.a, pk.a)
    lazy_enc = EncapsulationKeys(params, enc.key_id, enc.weight, enc.seed, enc.down_b, enc.up)
    np.testing.assert_array_equal(lazy_enc.down_a, enc.down_a)
    # the uniform halves are reduced and look uniform (not all zero, not all one value)
    for arr, moduli in ((rk.a[0], params.moduli_qp), (pk.a, params.moduli_qp[: params.max_level + 1])):
        assert np.all(arr < moduli[:, None]) and np.unique(arr).size > N


# ---- level-aware keys and Galois key sets -----------------------------------------------------------


@pytest.mark.parametrize("level, digits", [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3)])
def test_level_aware_galois_keys_live_on_fewer_rows(level, digits):
    params = toy_params()
    kg = toy_keygen()
    full = kg.galois_keys([1])[5]
    gk = kg.galois_keys([1], max_level=level)
    key = gk[5]
    k = len(params.p_primes)
    assert key.max_level == level
    np.testing.assert_array_equal(key.table_rows(), params.qp_rows(level))
    assert key.table_rows().tolist() == list(range(level + 1)) + [5, 6]
    assert key.b.shape == key.a.shape == (digits, level + 1 + k, N)
    if level < params.max_level:
        assert key.b.nbytes < full.b.nbytes and key.nbytes < full.nbytes
    else:
        assert key.b.nbytes == full.b.nbytes
    check_switching_key(params, key, kg.secret_key.ntt, automorphism(kg.secret_key.coeffs, 5))


def test_into_keeps_keys_serving_the_level_and_replaces_lower_ones():
    kg = toy_keygen()
    gk = kg.galois_keys([1, 2], max_level=2)
    k1, k2 = gk[5], gk[25]
    same = kg.galois_keys([1], max_level=1, into=gk)
    assert same is gk and gk[5] is k1                          # level 2 serves level 1: kept
    kg.galois_keys([1], max_level=2, into=gk)
    assert gk[5] is k1                                         # equal level: kept
    kg.galois_keys([1, 3], max_level=4, into=gk)
    assert gk[5] is not k1 and gk[5].max_level == 4            # lower key replaced
    assert gk[25] is k2 and gk[25].max_level == 2              # untouched
    assert gk[pow(5, 3, 2 * N)].max_level == 4                 # new element added
    assert gk.elements() == sorted([5, 25, pow(5, 3, 2 * N)])
    assert gk.nbytes == sum(gk[g].nbytes for g in gk.elements())


def test_galois_keys_skip_identity_and_dedupe_equal_elements():
    kg = toy_keygen()
    slots = N // 2
    assert kg.galois_keys([0]).elements() == []
    assert kg.galois_keys([0, slots, -slots]).elements() == []         # all are the identity
    gk = kg.galois_keys([1, 1 + slots, 1 - slots, 1])
    assert gk.elements() == [5]
    assert kg.galois_keys([-1]).elements() == kg.galois_keys([slots - 1]).elements() == [pow(5, slots - 1, 2 * N)]
    assert kg.galois_keys([], conjugate=True).elements() == [2 * N - 1]
    assert 2 * N - 1 not in kg.galois_keys([1, 2, 3])
    assert isinstance(gk, GaloisKeys) and 25 not in gk
    with pytest.raises(KeyError):
        gk[25]


# ---- encapsulation keys -----------------------------------------------------------------------------


def recover_ephemeral(params, up: SwitchingKey, s_ntt) -> np.ndarray:
    """The ephemeral secret from digit 0 of ``up`` at q_0: ``b_0 + a_0 s = e + (P mod q_0) s'``
    with s' ternary and e small, so each coefficient of s' is the one t in {-1, 0, 1} that leaves a
    small remainder."""
    q0 = params.q_primes[0]
    pq = math.prod(params.p_primes) % q0
    x = b_plus_as(params, up.b[0][:1], up.a[0][:1], s_ntt[:1], [0])[0]
    out = np.zeros(params.n, dtype=np.int64)
    tail = error_tail(params)
    for i, v in enumerate(x.tolist()):
        fits = [t for t in (-1, 0, 1) if abs(int(centered([v - pq * t], q0)[0])) <= tail]
        assert len(fits) == 1
        out[i] = fits[0]
    return out


@pytest.mark.parametrize("weight", [1, 4, 12])
def test_encapsulation_keys_relate_the_dense_and_ephemeral_secrets(weight):
    params = toy_params()
    kg = toy_keygen()
    enc = kg.encapsulation_keys(weight)
    assert enc.weight == weight and enc.key_id == kg.secret_key.key_id
    assert enc.down_b.shape == enc.down_a.shape == (2, N)
    np.testing.assert_array_equal(EncapsulationKeys.down_rows(params), [0, len(params.q_primes)])
    up = enc.up
    assert up.kind == "encapsulation" and up.galois_element is None and up.max_level == params.max_level
    assert enc.nbytes == 2 * enc.down_b.nbytes + up.nbytes
    # up: s' -> s over Q*P with an ephemeral s' of exactly `weight` nonzero ternary coefficients
    s_eph = recover_ephemeral(params, up, kg.secret_key.ntt)
    assert np.count_nonzero(s_eph) == weight
    assert not np.array_equal(s_eph, kg.secret_key.coeffs)
    check_switching_key(params, up, kg.secret_key.ntt, s_eph)
    # down: s -> s' modulo (q_0, p_0): down_b + down_a s' - p_0 s is small
    rows = [0, len(params.q_primes)]
    full_rows = len(params.q_primes) + len(params.p_primes)
    eph_ntt = signed_to_ntt(params, s_eph, full_rows)
    coeffs = b_plus_as(params, enc.down_b, enc.down_a, eph_ntt[rows], rows)
    p0 = params.p_primes[0]
    s = kg.secret_key.coeffs.astype(object)
    e = single_error(params, coeffs, rows, [p0 * s, np.zeros(N, dtype=object)])
    assert np.any(e != 0)


def test_each_encapsulation_draws_a_new_ephemeral_secret():
    params = toy_params()
    kg = KeyGenerator(params, seed=bytes(32))
    first = recover_ephemeral(params, kg.encapsulation_keys(8).up, kg.secret_key.ntt)
    second = recover_ephemeral(params, kg.encapsulation_keys(8).up, kg.secret_key.ntt)
    assert np.count_nonzero(first) == np.count_nonzero(second) == 8
    assert not np.array_equal(first, second)


# ---- typed errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [-1, 5, 100])
def test_max_level_outside_the_chain_is_refused(level):
    kg = toy_keygen()
    with pytest.raises(ParameterError):
        kg.galois_key(5, max_level=level)
    with pytest.raises(ParameterError):
        kg.galois_keys([1], max_level=level)


@pytest.mark.parametrize("g", [0, 2, 64, -1, 65, 2 * N + 1, 10**6])
def test_invalid_galois_elements_are_refused(g):
    with pytest.raises(ParameterError):
        toy_keygen().galois_key(g)


def test_parameters_without_special_primes_have_no_switching_keys():
    params = toy_params(special=False)
    assert params.p_primes == ()
    kg = KeyGenerator(params, seed=SEED)
    kg.public_key()                                      # encryption keys still work
    for make in (kg.relin_key, lambda: kg.galois_key(5), lambda: kg.galois_keys([1]),
                 lambda: kg.encapsulation_keys(4)):
        with pytest.raises(ParameterError):
            make()


@pytest.mark.parametrize("weight", [0, -3, N + 1])
def test_encapsulation_weight_outside_the_ring_is_refused(weight):
    with pytest.raises(ParameterError):
        toy_keygen().encapsulation_keys(weight)


def test_uncovered_names_the_steps_a_key_set_cannot_serve():
    from fhe_ckks.rlwe.keyplan import KeyPlan

    params, kg = toy_params(), toy_keygen()
    keys = kg.galois_keys([1], max_level=1)
    kg.galois_keys([2], into=keys)
    plan = KeyPlan({1: 1, 2: params.max_level, 3: 0, 0: params.max_level})
    assert keys.uncovered(plan) == [3]                        # step 0 needs no key; 1 and 2 deep enough
    assert keys.uncovered(KeyPlan({1: 2, 2: 0})) == [1]       # step 1's key serves only up to level 1
    assert keys.uncovered(KeyPlan()) == []
