"""Negacyclic NTT: known answers, round trips, the convolution theorem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import DTypeError, RangeError, ShapeError
from fhe_ckks.ring import NTTTables, ntt_primes
from fhe_ckks.ring.ntt import bit_reverse, ntt_forward_reference, ntt_inverse_reference
from tests.conftest import NO_JIT
from tests.strategies import reduced_poly, rings

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "ntt_kat.json").read_text())


def negacyclic_schoolbook(a, b, q):
    n = len(a)
    out = [0] * n
    for i in range(n):
        for j in range(n):
            if i + j < n:
                out[i + j] += int(a[i]) * int(b[j])
            else:
                out[i + j - n] -= int(a[i]) * int(b[j])
    return [c % q for c in out]


def negacyclic_bigint(a, b, q):
    """Exact negacyclic product through one big-integer multiplication
    (Kronecker substitution: pack each polynomial into an integer with
    wide enough digits, multiply, unpack, fold X^N = -1)."""
    n = len(a)
    width = 2 * q.bit_length() + n.bit_length() + 1
    pack = lambda p: sum(int(c) << (width * i) for i, c in enumerate(p))  # noqa: E731
    prod = pack(a) * pack(b)
    mask = (1 << width) - 1
    digits = [(prod >> (width * i)) & mask for i in range(2 * n)]
    return [(digits[i] - digits[i + n]) % q for i in range(n)]


def test_ntt_known_answer_by_hand():
    # N = 4, q = 17 (= 1 mod 8), psi = 9 (9^4 = 6561 = -1 mod 17).
    # Output k holds a(psi^(2 brv(k) + 1)): exponents 1, 5, 3, 7, i.e. the
    # points 9, 8, 15, 2.  For a = 1 + 2x + 3x^2 + 4x^3:
    #   a(9)  = 1 + 18 + 39 + 60 = 118 = 16 (mod 17)   [9^2 = 13, 9^3 = 15]
    #   a(8)  = 1 + 16 + 39 + 8  = 64  = 13            [8^2 = 13, 8^3 = 2]
    #   a(15) = 1 + 30 + 12 + 36 = 79  = 11            [15^2 = 4, 15^3 = 9]
    #   a(2)  = 1 + 4 + 12 + 32  = 49  = 15
    tables = NTTTables(2, [17])
    assert tables.psi == [9]
    a = np.array([[1, 2, 3, 4]], dtype=np.uint64)
    tables.forward(a)
    assert a.tolist() == [[16, 13, 11, 15]]
    tables.inverse(a)
    assert a.tolist() == [[1, 2, 3, 4]]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"N{1 << c['log_n']}_q{c['q'].bit_length()}b")
def test_ntt_known_answer_vectors(case):
    if NO_JIT and case["log_n"] > 8:
        pytest.skip("large vector: too slow without the JIT")
    tables = NTTTables(case["log_n"], [case["q"]])
    assert tables.psi == [case["psi"]]
    a = np.array([case["a"]], dtype=np.uint64)
    b = np.array([case["b"]], dtype=np.uint64)
    tables.forward(a)
    assert a[0].tolist() == case["ntt_a"]
    tables.forward(b)
    prod = (a[0].astype(object) * b[0].astype(object)) % case["q"]
    c = np.array([prod], dtype=np.uint64)
    tables.inverse(c)
    assert c[0].tolist() == case["a_times_b"]


@given(st.integers(1, 5), st.sampled_from([20, 50, 61]), st.data())
def test_kernels_match_the_definition(log_n, bits, data):
    q = ntt_primes(log_n, [bits])[0]
    tables = NTTTables(log_n, [q])
    a = data.draw(st.lists(st.integers(0, q - 1), min_size=1 << log_n, max_size=1 << log_n))
    x = np.array([a], dtype=np.uint64)
    tables.forward(x)
    assert x[0].tolist() == ntt_forward_reference(a, q, tables.psi[0])
    assert ntt_inverse_reference(x[0].tolist(), q, tables.psi[0]) == a


@given(rings(max_limbs=4), st.data())
def test_inverse_undoes_forward(ring, data):
    a = reduced_poly(data.draw, ring)
    x = a.copy()
    ring.tables.forward(x)
    ring.tables.inverse(x)
    np.testing.assert_array_equal(x, a)


@given(rings(max_limbs=3), st.data())
def test_lazy_variants_respect_their_ranges(ring, data):
    a = reduced_poly(data.draw, ring)
    x = a.copy()
    ring.tables.forward_lazy(x)
    assert (x < (4 * ring.moduli.astype(object))[:, None].astype(np.uint64)).all()
    y = a.copy()
    ring.tables.forward(y)
    np.testing.assert_array_equal(x % ring.moduli[:, None], y)
    ring.tables.inverse_lazy(y)
    assert (y < (2 * ring.moduli.astype(object))[:, None].astype(np.uint64)).all()
    np.testing.assert_array_equal(y % ring.moduli[:, None], a)


@given(rings(max_limbs=2, log_ns=(1, 2, 3, 4, 5)), st.data())
def test_pointwise_product_is_negacyclic_schoolbook(ring, data):
    a = reduced_poly(data.draw, ring)
    b = reduced_poly(data.draw, ring)
    x, y = a.copy(), b.copy()
    ring.ntt(x)
    ring.ntt(y)
    c = ring.mul(x, y)
    ring.intt(c)
    for k, q in enumerate(ring.basis.primes):
        assert c[k].tolist() == negacyclic_schoolbook(a[k], b[k], q)


@pytest.mark.skipif(NO_JIT, reason="N = 2^12 and 2^16 are too slow without the JIT")
@pytest.mark.parametrize("log_n", [12, pytest.param(16, marks=pytest.mark.slow)])
def test_product_matches_exact_big_integer_product_at_large_n(log_n, rng):
    primes = ntt_primes(log_n, [61, 40])
    tables = NTTTables(log_n, primes)
    a = np.stack([rng.integers(0, q, 1 << log_n, dtype=np.uint64) for q in primes])
    b = np.stack([rng.integers(0, q, 1 << log_n, dtype=np.uint64) for q in primes])
    x, y = a.copy(), b.copy()
    tables.forward(x)
    tables.forward(y)
    prod = np.stack([(x[k].astype(object) * y[k].astype(object)) % q for k, q in enumerate(primes)]).astype(np.uint64)
    tables.inverse(prod)
    for k, q in enumerate(primes):
        assert prod[k].tolist() == negacyclic_bigint(a[k].tolist(), b[k].tolist(), q)


@pytest.mark.skipif(NO_JIT, reason="N = 2^16 is too slow without the JIT")
def test_forward_at_n_2_16_matches_the_definition_at_sampled_points(rng):
    # Horner evaluation at the root each output claims to be, for 64 outputs.
    log_n = 16
    q = ntt_primes(log_n, [60])[0]
    tables = NTTTables(log_n, [q])
    a = rng.integers(0, q, 1 << log_n, dtype=np.uint64)
    x = a[None, :].copy()
    tables.forward(x)
    coeffs = a.tolist()
    for k in rng.integers(0, 1 << log_n, 64):
        point = pow(tables.psi[0], 2 * bit_reverse(int(k), log_n) + 1, q)
        acc = 0
        for c in reversed(coeffs):
            acc = (acc * point + c) % q
        assert int(x[0, k]) == acc


def test_transform_on_a_limb_subset_uses_the_selected_primes():
    primes = ntt_primes(4, [30, 40, 50])
    tables = NTTTables(4, primes)
    a = np.array([[i % primes[2] for i in range(16)]], dtype=np.uint64)
    x = a.copy()
    tables.forward(x, rows=[2])
    assert x[0].tolist() == ntt_forward_reference(a[0].tolist(), primes[2], tables.psi[2])


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda q: np.zeros((1, 16), dtype=np.int64), DTypeError),
        (lambda q: [[0] * 16], DTypeError),
        (lambda q: np.zeros((1, 8), dtype=np.uint64), ShapeError),
        (lambda q: np.zeros((2, 16), dtype=np.uint64), ShapeError),  # more limbs than primes
        (lambda q: np.zeros((1, 32), dtype=np.uint64)[:, ::2], ShapeError),  # not contiguous
        (lambda q: np.full((1, 16), q, dtype=np.uint64), RangeError),  # unreduced
    ],
)
def test_bad_input_raises_typed_errors_and_leaves_data_alone(make, error):
    q = ntt_primes(4, [30])[0]
    tables = NTTTables(4, [q])
    a = make(q)
    before = np.array(a, copy=True)
    with pytest.raises(error):
        tables.forward(a)
    np.testing.assert_array_equal(np.asarray(a), before)


def test_lazy_forward_accepts_up_to_4q_but_not_beyond():
    q = ntt_primes(4, [30])[0]
    tables = NTTTables(4, [q])
    tables.forward_lazy(np.full((1, 16), 4 * q - 1, dtype=np.uint64))
    with pytest.raises(RangeError):
        tables.forward_lazy(np.full((1, 16), 4 * q, dtype=np.uint64))
