"""NTT-friendly primes and roots of unity."""

from __future__ import annotations

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import ParameterError
from fhe_ckks.ring.primes import is_ntt_prime, nearest_ntt_primes, ntt_primes, primitive_root_2n


@given(st.integers(1, 17), st.lists(st.integers(30, 61), min_size=1, max_size=5))
def test_ntt_primes_have_requested_sizes_and_are_distinct(log_n, bits):
    bits = [max(b, log_n + 2) for b in bits]
    primes = ntt_primes(log_n, bits)
    assert [q.bit_length() for q in primes] == bits
    assert len(set(primes)) == len(primes)
    for q in primes:
        assert sympy.isprime(q) and q % (2 << log_n) == 1


def test_ntt_primes_known_answer():
    # The largest primes = 1 mod 2^17 below 2^60, checked independently with sympy.
    assert ntt_primes(16, [60, 60]) == [1152921504606584833, 1152921504598720513]
    assert ntt_primes(2, [5]) == [17]  # q = 1 mod 8, below 32: 17 (25 is not prime)


def test_ntt_primes_exclude_keeps_bases_coprime():
    first = ntt_primes(10, [50] * 3)
    second = ntt_primes(10, [50] * 3, exclude=first)
    assert not set(first) & set(second)


@given(st.integers(2, 16), st.integers(30, 58), st.integers(1, 6))
def test_nearest_primes_alternate_around_target(log_n, target, count):
    primes = nearest_ntt_primes(log_n, target, count)
    assert len(set(primes)) == count
    assert all(is_ntt_prime(q, 1 << log_n) for q in primes)
    # The first prime found above the target, the next below, ...
    if count >= 2:
        assert primes[0] > 2**target > primes[1]


@given(st.integers(1, 16), st.sampled_from([30, 45, 60, 61]))
def test_primitive_root_has_order_2n(log_n, bits):
    q = ntt_primes(log_n, [bits])[0]
    psi = primitive_root_2n(q, log_n)
    n = 1 << log_n
    assert pow(psi, n, q) == q - 1  # psi^N = -1, hence order exactly 2N
    assert pow(psi, 2 * n, q) == 1


def test_primitive_root_known_answer():
    # 3 generates (Z/17Z)^*, so psi = 3^(16/8) = 9, and 9^4 = 6561 = -1 mod 17.
    assert primitive_root_2n(17, 2) == 9


@pytest.mark.parametrize("log_n,bits", [(0, [30]), (18, [30]), (4, [5]), (4, [62]), (4, [30.5]), (True, [30])])
def test_ntt_primes_rejects_bad_requests(log_n, bits):
    with pytest.raises(ParameterError):
        ntt_primes(log_n, bits)


@pytest.mark.parametrize("q", [97 * 113, 2**61 - 1, 19])
def test_primitive_root_rejects_non_ntt_moduli(q):
    with pytest.raises(ParameterError):
        primitive_root_2n(q, 4)


def test_prime_request_that_runs_out_raises():
    # The only 6-bit prime = 1 mod 8 is 41.
    with pytest.raises(ParameterError):
        ntt_primes(2, [6, 6, 6, 6])
