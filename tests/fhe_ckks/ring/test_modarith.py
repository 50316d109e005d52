"""Word-size kernels against exact big-integer references."""

from __future__ import annotations

import numba
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import ParameterError
from fhe_ckks.ring.modarith import (
    U64,
    barrett_precompute,
    check_modulus,
    mac_wide,
    mul_barrett,
    mul_barrett_reference,
    mul_shoup,
    mul_shoup_lazy,
    mul_shoup_reference,
    mul_wide,
    mulhi64,
    mulhi64_reference,
    reduce_wide,
    reduce_wide_reference,
    shoup_precompute,
    wide_constants,
)
from tests.strategies import u64

moduli = st.integers(3, 2**61 - 1).map(lambda q: q | 1)


@numba.njit
def _mulhi(a, b):
    return mulhi64(a, b)


@numba.njit
def _wide(a, b):
    return mul_wide(a, b)


@numba.njit
def _mac(hi, lo, a, b):
    return mac_wide(hi, lo, a, b)


@given(u64, u64)
def test_mulhi64_matches_big_integer_product(a, b):
    assert int(_mulhi(U64(a), U64(b))) == mulhi64_reference(a, b)


@given(u64, u64)
def test_mul_wide_is_the_full_product(a, b):
    hi, lo = _wide(U64(a), U64(b))
    assert (int(hi) << 64) | int(lo) == a * b


@given(u64, u64, u64, u64)
def test_mac_wide_accumulates_modulo_2_128(hi, lo, a, b):
    h2, l2 = _mac(U64(hi), U64(lo), U64(a), U64(b))
    assert (int(h2) << 64) | int(l2) == (((hi << 64) | lo) + a * b) % 2**128


def test_mulhi64_known_answers():
    assert int(_mulhi(U64(2**63), U64(4))) == 2
    assert int(_mulhi(U64(2**64 - 1), U64(2**64 - 1))) == 2**64 - 2
    assert int(_mulhi(U64(12345), U64(678))) == 0


@given(moduli, st.data())
def test_shoup_lazy_range_and_value(q, data):
    w = data.draw(st.integers(0, q - 1))
    y = data.draw(u64)
    ws = shoup_precompute(w, q)
    lazy = int(mul_shoup_lazy(U64(y), U64(w), U64(ws), U64(q)))
    assert 0 <= lazy < 2 * q
    assert lazy % q == mul_shoup_reference(y, w, q)
    assert int(mul_shoup(U64(y), U64(w), U64(ws), U64(q))) == mul_shoup_reference(y, w, q)


@given(moduli, st.data())
def test_barrett_product_is_reduced(q, data):
    a = data.draw(st.integers(0, q - 1))
    b = data.draw(st.integers(0, q - 1))
    r1, r0 = barrett_precompute(q)
    assert int(mul_barrett(U64(a), U64(b), U64(q), U64(r1), U64(r0))) == mul_barrett_reference(a, b, q)


@given(moduli, u64, u64)
def test_reduce_wide_any_128_bit_value(q, hi, lo):
    t, ts, m = wide_constants(q)
    got = int(reduce_wide(U64(hi), U64(lo), U64(q), U64(t), U64(ts), U64(m)))
    assert got == reduce_wide_reference(hi, lo, q)


@pytest.mark.parametrize("bad", [0, 1, 2, 4, 2**61 + 1, 2**62 + 1, -7])
def test_check_modulus_rejects(bad):
    with pytest.raises(ParameterError):
        check_modulus(bad)


def test_shoup_precompute_rejects_unreduced_constant():
    with pytest.raises(ParameterError):
        shoup_precompute(17, 17)
