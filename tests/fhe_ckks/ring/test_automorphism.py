"""Automorphisms X -> X^g in both domains."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import ParameterError
from fhe_ckks.ring import conjugation_element, galois_element
from fhe_ckks.ring.automorphism import automorphism_coeff_reference, check_galois_element
from tests.strategies import reduced_poly, rings


def odd_elements(log_n):
    return st.integers(0, (1 << log_n) - 1).map(lambda k: 2 * k + 1)


def test_galois_elements_known_answers():
    assert galois_element(1, 4) == 5
    assert galois_element(2, 4) == 25
    assert galois_element(3, 4) == 125 % 32
    assert galois_element(-1, 4) == pow(5, 7, 32)  # 5 has order N/2 = 8 modulo 2N = 32
    assert galois_element(0, 4) == 1
    assert conjugation_element(4) == 31
    assert galois_element(1, 16) * pow(5, -1, 2**17) % 2**17 == 1


def test_automorphism_known_answer():
    # N = 4, g = 3: X -> X^3, so 1 + 2X + 3X^2 + 4X^3 -> 1 + 2X^3 + 3X^6 + 4X^9
    # = 1 + 2X^3 - 3X^2 + 4X (X^4 = -1, X^6 = -X^2, X^9 = X) = [1, 4, -3, 2].
    assert automorphism_coeff_reference([1, 2, 3, 4], 3, 17) == [1, 4, 14, 2]


@given(rings(max_limbs=2), st.data())
def test_coefficient_kernel_matches_reference(ring, data):
    g = data.draw(odd_elements(ring.log_n))
    a = reduced_poly(data.draw, ring)
    out = ring.automorphism(a, g, ntt_domain=False)
    for k, q in enumerate(ring.basis.primes):
        assert out[k].tolist() == automorphism_coeff_reference(a[k].tolist(), g, q)


@given(rings(max_limbs=2), st.data())
def test_ntt_domain_permutation_matches_coefficient_domain(ring, data):
    g = data.draw(odd_elements(ring.log_n))
    a = reduced_poly(data.draw, ring)
    want = ring.automorphism(a, g, ntt_domain=False)
    x = a.copy()
    ring.ntt(x)
    got = ring.automorphism(x, g, ntt_domain=True)
    ring.intt(got)
    np.testing.assert_array_equal(got, want)


@given(rings(max_limbs=2), st.data())
def test_automorphisms_compose(ring, data):
    g1 = data.draw(odd_elements(ring.log_n))
    g2 = data.draw(odd_elements(ring.log_n))
    a = reduced_poly(data.draw, ring)
    x = a.copy()
    ring.ntt(x)
    two_steps = ring.automorphism(ring.automorphism(x, g1, ntt_domain=True), g2, ntt_domain=True)
    one_step = ring.automorphism(x, g1 * g2 % (2 * ring.n), ntt_domain=True)
    np.testing.assert_array_equal(two_steps, one_step)


@given(rings(max_limbs=1), st.data())
def test_rotation_elements_compose_additively(ring, data):
    k1 = data.draw(st.integers(-100, 100))
    k2 = data.draw(st.integers(-100, 100))
    two_n = 2 * ring.n
    assert galois_element(k1, ring.log_n) * galois_element(k2, ring.log_n) % two_n == galois_element(k1 + k2, ring.log_n)


@pytest.mark.parametrize("g", [0, 2, 32, 33, -1])
def test_invalid_galois_elements_raise(g):
    with pytest.raises(ParameterError):
        check_galois_element(g, 4)
