"""The Ring facade: pointwise arithmetic against big integers, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import RangeError, ShapeError
from fhe_ckks.ring import Ring, ntt_primes
from tests.strategies import reduced_poly, rings


def as_ints(ring, a):
    return [[int(v) for v in row] for row in a]


@given(rings(max_limbs=3), st.data())
def test_pointwise_operations_match_integer_arithmetic(ring, data):
    a = reduced_poly(data.draw, ring)
    b = reduced_poly(data.draw, ring)
    c = data.draw(st.integers(-(2**200), 2**200))
    for k, q in enumerate(ring.basis.primes):
        ai, bi = a[k].astype(object), b[k].astype(object)
        assert ring.add(a, b)[k].tolist() == ((ai + bi) % q).tolist()
        assert ring.sub(a, b)[k].tolist() == ((ai - bi) % q).tolist()
        assert ring.neg(a)[k].tolist() == ((-ai) % q).tolist()
        assert ring.mul(a, b)[k].tolist() == ((ai * bi) % q).tolist()
        assert ring.mul_scalar(a, c)[k].tolist() == ((ai * c) % q).tolist()
    acc = a.copy()
    ring.mul_add(a, b, acc)
    np.testing.assert_array_equal(acc, ring.add(a, ring.mul(a, b)))


@given(rings(max_limbs=3), st.data())
def test_operations_on_fewer_limbs_use_the_leading_primes(ring, data):
    limbs = data.draw(st.integers(1, len(ring)))
    a = reduced_poly(data.draw, ring, limbs)
    b = reduced_poly(data.draw, ring, limbs)
    full_a = np.vstack([a, ring.zeros(len(ring) - limbs)]) if limbs < len(ring) else a
    full_b = np.vstack([b, ring.zeros(len(ring) - limbs)]) if limbs < len(ring) else b
    np.testing.assert_array_equal(ring.mul(a, b), ring.mul(full_a, full_b)[:limbs])


def test_drop_limbs_and_from_signed():
    ring = Ring(3, ntt_primes(3, [30, 40, 50]))
    s = np.array([-1, 0, 1, 2, -3, 0, 0, 5])
    a = ring.from_signed(s)
    assert ring.basis.compose(a, centered=True).tolist() == s.tolist()
    dropped = ring.drop_limbs(a, 2)
    assert dropped.shape == (1, 8)
    assert ring.basis_at(1).compose(dropped, centered=True).tolist() == s.tolist()
    with pytest.raises(ShapeError):
        ring.drop_limbs(a, 3)


def test_uniform_from_seed_is_a_stored_polynomial():
    ring = Ring(4, ntt_primes(4, [40, 50]))
    seed = bytes(range(32))
    np.testing.assert_array_equal(ring.sample_uniform(seed), ring.sample_uniform(seed))
    assert not np.array_equal(ring.sample_uniform(seed), ring.sample_uniform(bytes(32)))


def test_mismatched_operands_raise_and_corrupt_nothing():
    ring = Ring(4, ntt_primes(4, [40, 50]))
    a = ring.sample_uniform(bytes(32))
    b = ring.sample_uniform(bytes(32), limbs=1)
    out = ring.zeros()
    with pytest.raises(ShapeError):
        ring.add(a, b, out)
    assert not out.any()
    bad = a.copy()
    bad[1, 3] = ring.moduli[1]
    with pytest.raises(RangeError):
        ring.mul(a, bad, out)
    assert not out.any()
    with pytest.raises(ShapeError):
        ring.rescale(a[:1], ntt_domain=False)
