"""Hybrid key switching: correctness with bounded noise at every level."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fhe_ckks.ring import galois_element
from fhe_ckks.rlwe import KeySwitcher
from tests.ckks_context import context

PRESETS = ["INSECURE_N10_QP380_L5_S40", "INSECURE_N12_QP520_L7_S40"]


def noise_bits(params, ks0, ks1, d, target, secret):
    """log2 of the largest coefficient of ks0 + ks1 s - d s' (centred)."""
    ring = params.ring_q
    rows = d.shape[0]
    s = np.ascontiguousarray(secret[:rows])
    diff = ring.sub(ring.add(ks0, ring.mul(ks1, s)), ring.mul(d, np.ascontiguousarray(target[:rows])))
    ring.intt(diff)
    vals = ring.basis_at(rows).compose(diff, centered=True)
    return max(abs(int(v)) for v in vals).bit_length()


def bound_bits(params, level):
    """Key-switching noise bound: the inner-product noise sum_j ext_j e_j is at
    most digits * alpha * Q_digit * N * 6 sigma; divided by P, plus the ModDown
    rounding (< K + 1 per coefficient, times ||s||_1 <= N)."""
    digits = len(params.digit_positions(level))
    qd = max(sum(math.log2(params.q_primes[i]) for i in pos) for pos in params.digit_positions(level))
    log_p = sum(math.log2(p) for p in params.p_primes)
    inner = math.log2(digits * params.alpha) + qd + params.log_n + math.log2(6 * params.sigma) - log_p
    rounding = math.log2(len(params.p_primes) + 1) + params.log_n
    return max(inner, rounding) + 1


@pytest.mark.parametrize("name", PRESETS)
def test_relinearization_key_switch_noise_is_bounded_at_every_level(name, rng):
    ctx = context(name)
    p = ctx.params
    switcher = KeySwitcher(p)
    s = ctx.keygen.secret_key.ntt
    s2 = p.ring_qp.mul(s, s)
    for level in range(p.max_level + 1):
        d = p.ring_q.sample_uniform(rng.bytes(32), level + 1)
        ks0, ks1 = switcher.switch(d, ctx.evaluator.relin_key)
        assert noise_bits(p, ks0, ks1, d, s2, s) <= bound_bits(p, level)


@pytest.mark.parametrize("name", PRESETS)
def test_hoisted_and_direct_galois_switches_agree(name, rng):
    ctx = context(name)
    p = ctx.params
    switcher = KeySwitcher(p)
    d = p.ring_q.sample_uniform(rng.bytes(32), p.max_level + 1)
    dec = switcher.decompose(d)
    for step in (1, 3, -1):
        g = galois_element(step, p.log_n)
        key = ctx.evaluator.galois_keys[g]
        perm = p.ring_q.galois_permutation(g)
        hoisted = switcher.apply(dec, key, perm)
        direct = switcher.switch(p.ring_q.automorphism(d, g, ntt_domain=True), key)
        # Both are valid switches of sigma_g(d); they may differ by the ModUp
        # overflow, which is noise: compare through the secret.
        s = np.ascontiguousarray(ctx.keygen.secret_key.ntt[: p.max_level + 1])
        ring = p.ring_q
        h = ring.add(hoisted[0], ring.mul(hoisted[1], s))
        t = ring.add(direct[0], ring.mul(direct[1], s))
        diff = ring.sub(h, t)
        ring.intt(diff)
        vals = ring.basis.compose(diff, centered=True)
        assert max(abs(int(v)) for v in vals).bit_length() <= 2 * bound_bits(p, p.max_level)
