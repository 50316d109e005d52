"""Encoding: canonical embedding, round trips, sparse slots, homomorphism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import LevelError, ParameterError, ShapeError
from tests.ckks_context import context

NAME = "INSECURE_N10_QP380_L5_S40"
slot_counts = st.sampled_from([1, 2, 8, 64, 512])


@given(st.integers(0, 2**32 - 1), slot_counts, st.integers(0, 5))
def test_decode_inverts_encode(seed, slots, level):
    ctx = context(NAME)
    z = ctx.random_slots(np.random.default_rng(seed), count=slots)
    pt = ctx.encoder.encode(z, level=level, slots=slots)
    assert pt.level == level and pt.slots == slots
    # Rounding error only: 0.5 per coefficient, N coefficients per slot.
    assert precision_bits(z, ctx.encoder.decode(pt)) >= np.log2(pt.scale) - ctx.params.log_n - 2


def test_slots_are_the_values_at_the_powers_of_five(rng):
    ctx = context(NAME)
    n = ctx.params.n
    z = ctx.random_slots(rng)
    coeffs = ctx.encoder.embed_inverse(z)
    zeta = np.exp(1j * np.pi / n)
    for j in (0, 1, 2, 100, 511):
        point = zeta ** pow(5, j, 2 * n)
        assert abs(np.polynomial.polynomial.polyval(point, coeffs) - z[j]) < 1e-9


def test_sparse_encoding_repeats_in_the_full_slot_space(rng):
    ctx = context(NAME)
    z = ctx.random_slots(rng, count=8)
    coeffs = ctx.encoder.embed_inverse(z, slots=8)
    full = ctx.encoder.embed(coeffs)
    np.testing.assert_allclose(full, np.tile(z, ctx.params.slots // 8), atol=1e-9)
    assert np.count_nonzero(coeffs) <= 16  # only multiples of N / 16


def test_encoding_is_a_ring_homomorphism(rng):
    # The negacyclic product of two message polynomials decodes to the
    # slot-wise product (what makes CKKS multiplication work).
    ctx = context(NAME)
    n = ctx.params.n
    a, b = ctx.random_slots(rng), ctx.random_slots(rng)
    ca, cb = ctx.encoder.embed_inverse(a), ctx.encoder.embed_inverse(b)
    full = np.convolve(ca, cb)
    prod = full[:n] - np.concatenate([full[n:], [0.0]])
    np.testing.assert_allclose(ctx.encoder.embed(prod), a * b, atol=1e-9)


def test_real_vectors_decode_with_zero_imaginary_part(rng):
    ctx = context(NAME)
    x = rng.uniform(-1, 1, 100)
    out = ctx.encoder.decode(ctx.encoder.encode(x))
    assert precision_bits(np.concatenate([x, np.zeros(412)]), out) > 25


@pytest.mark.parametrize("kwargs, error", [
    ({"values": np.zeros(513)}, ShapeError),
    ({"values": np.zeros((2, 2))}, ShapeError),
    ({"values": [np.nan]}, ParameterError),
    ({"values": [1.0], "level": 6}, LevelError),
    ({"values": [1.0], "slots": 3}, ParameterError),
    ({"values": [1.0], "scale": 0.5}, ParameterError),
])
def test_bad_encoding_requests_raise(kwargs, error):
    with pytest.raises(error):
        context(NAME).encoder.encode(**kwargs)


def test_large_scale_encoding_uses_exact_integers():
    ctx = context(NAME)
    pt = ctx.encoder.encode([3.0, -2.0], scale=2.0**70)
    assert precision_bits([3.0, -2.0], ctx.encoder.decode(pt)[:2]) > 40


@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 8, 64, 256]), st.integers(0, 5))
def test_sparse_encoding_equals_the_slow_path(seed, slots, level):
    """The sparse fast path (NTTs of size 2 * slots, values repeated) gives exactly the polynomial of
    putting the coefficients at their gap positions and running the full-size NTT."""
    ctx = context(NAME)
    p = ctx.params
    z = ctx.random_slots(np.random.default_rng(seed), count=slots)
    fast = ctx.encoder.encode(z, level=level, slots=slots)
    coeffs = np.rint(ctx.encoder.embed_inverse(z, slots) * fast.scale)
    slow = ctx.encoder.integers_to_rns(coeffs, level + 1)
    p.tables_qp.forward(slow, check=False)
    assert np.array_equal(fast.poly, slow)
