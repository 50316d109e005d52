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


@given(st.lists(st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 1, -(2**63), 2**63 - 1, -97, -12289,
                                                                    -1152921504606830593]),
               min_size=1, max_size=40),
       st.lists(st.sampled_from([97, 12289, 2**31 - 1, 1152921504606830593, 1099511922689]), min_size=1,
                max_size=3))
def test_signed_residues_match_python_modulo(values, moduli):
    """The whole int64 range, both signs (the kernel is branch-free: a negative x is read as x + 2^64)."""
    import numpy as np

    from fhe_ckks.ring.modarith import signed_residues

    got = signed_residues(np.array(values, dtype=np.int64), moduli)
    assert got.dtype == np.uint64 and got.shape == (len(moduli), len(values))
    assert [[int(x) for x in row] for row in got] == [[v % q for v in values] for q in moduli]


@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.sampled_from([0, 1, 3]))
def test_dot_rows_wide_matches_python_sums(seed, terms, shift):
    import numpy as np
    from numba.typed import List

    from fhe_ckks.ring.modarith import barrett_precompute, dot_rows_wide

    rng = np.random.default_rng(seed)
    moduli = np.array([1152921504606830593, 1099511922689], dtype=np.uint64)   # 60 and 40 bits
    n = 16
    cts = [np.stack([rng.integers(0, moduli, (n, 2), dtype=np.uint64).T for _ in range(2)]) for _ in range(terms)]
    pts = [rng.integers(0, moduli, (n >> shift, 2), dtype=np.uint64).T.copy() for _ in range(terms)]
    ratios = np.array([barrett_precompute(int(q)) for q in moduli], dtype=np.uint64)
    out = np.empty((2, 2, n), dtype=np.uint64)
    dot_rows_wide(List(cts), List(pts), shift, moduli, ratios, out)
    for i in range(2):
        for r, q in enumerate(moduli.tolist()):
            want = [sum(int(c[i, r, k]) * int(p[r, k >> shift]) for c, p in zip(cts, pts)) % q for k in range(n)]
            assert out[i, r].tolist() == want
