"""CRT, fast basis conversion, ModDown and rescale against big integers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import ParameterError, RangeError, ShapeError
from fhe_ckks.ring import BasisConverter, ModDown, ModUp, Rescaler, RNSBasis, ntt_primes
from fhe_ckks.ring.rns import fast_basis_conversion_reference
from tests.strategies import PRIME_BITS, rings, toy_ring

N = 16


@st.composite
def two_bases(draw, max_src=6, max_dst=6):
    src_bits = draw(st.lists(st.sampled_from(PRIME_BITS), min_size=1, max_size=max_src))
    dst_bits = draw(st.lists(st.sampled_from(PRIME_BITS), min_size=1, max_size=max_dst))
    src = ntt_primes(4, src_bits)
    dst = ntt_primes(4, dst_bits, exclude=src)
    return RNSBasis(src), RNSBasis(dst)


def ints_below(bound):
    return st.lists(st.integers(0, bound - 1), min_size=N, max_size=N)


@given(rings(max_limbs=5), st.data())
def test_crt_round_trip(ring, data):
    values = data.draw(ints_below(ring.basis.product))
    residues = ring.basis.decompose(values)
    assert ring.basis.compose(residues).tolist() == values


@given(two_bases(), st.data())
def test_crt_centered_and_negative_values(bases, data):
    basis, _ = bases
    q = basis.product
    values = data.draw(st.lists(st.integers(-(q // 2), q // 2), min_size=N, max_size=N))
    composed = basis.compose(basis.decompose(values), centered=True)
    assert composed.tolist() == values


@given(two_bases(), st.data())
def test_fast_basis_conversion_error_is_a_small_multiple_of_q(bases, data):
    src, dst = bases
    values = data.draw(ints_below(src.product))
    out = BasisConverter(src, dst).convert(src.decompose(values))
    # out holds x + u*Q_src modulo every dst prime, with 0 <= u < len(src).
    got = dst.compose(out).tolist()
    for x, y in zip(values, got):
        overflow = [u for u in range(len(src)) if (x + u * src.product) % dst.product == y]
        assert overflow, (x, y)


@given(two_bases(max_src=4, max_dst=3), st.data())
def test_fast_basis_conversion_matches_reference(bases, data):
    src, dst = bases
    a = src.decompose(data.draw(ints_below(src.product)))
    got = BasisConverter(src, dst).convert(a)
    assert got.tolist() == fast_basis_conversion_reference(a.tolist(), src.primes, dst.primes)


def test_fast_basis_conversion_overflow_reaches_but_never_exceeds_its_bound(rng):
    # With 8 source primes the overflow u of x + u*Q takes several values in
    # [0, 8) over random inputs: the bound is tight, not vacuous.
    src = RNSBasis(ntt_primes(4, [61] * 8))
    dst = RNSBasis(ntt_primes(4, [61] * 24, exclude=src.primes))
    values = [int(v) for v in rng.integers(0, 2**62, 16)]
    values = [v * (src.product >> 62) for v in values]
    got = dst.compose(BasisConverter(src, dst).convert(src.decompose(values))).tolist()
    overflows = {(y - x) // src.product for x, y in zip(values, got)}
    assert all((y - x) % src.product == 0 for x, y in zip(values, got))
    assert overflows <= set(range(8)) and len(overflows) > 1


@given(two_bases(max_src=6, max_dst=1), st.data())
def test_mod_up_extends_a_digit_up_to_a_small_multiple_of_its_modulus(bases, data):
    target, _ = bases
    digit = data.draw(st.lists(st.integers(0, len(target) - 1), min_size=1, max_size=len(target), unique=True))
    up = ModUp(target, digit)
    values = data.draw(ints_below(up.digit_basis.product))
    out = up.apply(up.digit_basis.decompose(values))
    np.testing.assert_array_equal(out[digit], up.digit_basis.decompose(values))
    got = target.compose(out).tolist()
    q_d = up.digit_basis.product
    for x, y in zip(values, got):
        assert any((x + u * q_d) % target.product == y for u in range(len(digit))), (x, y)


@given(two_bases(), st.data())
def test_rescale_divides_and_rounds_exactly(bases, data):
    basis, _ = bases
    if len(basis) < 2:
        basis = RNSBasis(list(basis.primes) + ntt_primes(4, [40], exclude=basis.primes))
    values = data.draw(ints_below(basis.product))
    out = Rescaler(basis).apply(basis.decompose(values))
    last = basis.primes[-1]
    rest = RNSBasis(basis.primes[:-1])
    expected = [((2 * x + last - 1) // (2 * last)) % rest.product for x in values]  # round, ties down
    assert rest.compose(out).tolist() == expected


@given(two_bases(max_src=5, max_dst=4), st.data())
def test_mod_down_rounds_division_by_p_exactly(bases, data):
    q_basis, p_basis = bases
    qp = RNSBasis(q_basis.primes + p_basis.primes)
    values = data.draw(ints_below(qp.product))
    residues = qp.decompose(values)
    out = ModDown(q_basis, p_basis).apply(residues[: len(q_basis)], residues[len(q_basis):])
    got = q_basis.compose(out).tolist()
    big_p = p_basis.product
    # x is taken centred modulo QP, so round(x / P) is centred modulo Q.
    for x, y in zip(values, got):
        assert y == ((x + big_p // 2) // big_p) % q_basis.product, (x, y)


@given(two_bases(), st.data())
def test_exact_conversion_removes_the_overflow(bases, data):
    src, dst = bases
    values = data.draw(ints_below(src.product))
    out = BasisConverter(src, dst, exact=True).convert(src.decompose(values))
    for x, y in zip(values, dst.compose(out).tolist()):
        if y != x % dst.product:
            # The documented exception: x / Q within float precision of 0 or 1.
            near_edge = min(x, src.product - x) < src.product * 2.0**-45
            assert near_edge and y in ((x - src.product) % dst.product, (x + src.product) % dst.product)


@given(rings(max_limbs=4), st.data())
def test_rescale_in_ntt_domain_equals_coefficient_domain(ring, data):
    from tests.strategies import reduced_poly

    if len(ring) < 2:
        ring = toy_ring(ring.log_n, (60, 50))
    a = reduced_poly(data.draw, ring)
    coeff = ring.rescale(a, ntt_domain=False)
    x = a.copy()
    ring.ntt(x)
    via_ntt = ring.rescale(x, ntt_domain=True)
    ring.intt(via_ntt)
    np.testing.assert_array_equal(via_ntt, coeff)


def test_basis_rejects_repeated_or_bad_primes():
    q = ntt_primes(4, [30])[0]
    with pytest.raises(ParameterError):
        RNSBasis([q, q])
    with pytest.raises(ParameterError):
        RNSBasis([])
    with pytest.raises(ParameterError):
        Rescaler(RNSBasis([q]))


def test_conversion_rejects_unreduced_or_misshaped_input():
    src = RNSBasis(ntt_primes(4, [30, 31]))
    dst = RNSBasis(ntt_primes(4, [40]))
    conv = BasisConverter(src, dst)
    with pytest.raises(RangeError):
        conv.convert(np.full((2, 16), 2**31, dtype=np.uint64))
    with pytest.raises(ShapeError):
        conv.convert(np.zeros((3, 16), dtype=np.uint64))
    with pytest.raises(ShapeError):
        src.decompose([[1, 2], [3, 4]])
