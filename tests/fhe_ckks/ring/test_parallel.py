"""Thread-parallel kernels give bit-identical results."""

from __future__ import annotations

import numpy as np
import pytest

from fhe_ckks.errors import ParameterError
from fhe_ckks.ring import BasisConverter, RNSBasis, get_num_threads, ntt_primes, set_num_threads
from fhe_ckks.ring.ntt import NTTTables
from tests.conftest import NO_JIT


@pytest.fixture
def two_threads():
    set_num_threads(2)
    yield
    set_num_threads(1)


def test_ntt_and_conversion_do_not_depend_on_threads(rng, two_threads):
    primes = ntt_primes(8, [50, 55, 60, 45, 40])
    tables = NTTTables(8, primes)
    a = np.stack([rng.integers(0, q, 256, dtype=np.uint64) for q in primes])
    set_num_threads(1)
    one = a.copy()
    tables.forward(one)
    set_num_threads(2)
    two = a.copy()
    tables.forward(two)
    np.testing.assert_array_equal(one, two)
    tables.inverse(two)
    np.testing.assert_array_equal(two, a)
    src, dst = RNSBasis(primes[:2]), RNSBasis(primes[2:])
    conv = BasisConverter(src, dst, exact=True)
    got2 = conv.convert(a[:2].copy())
    set_num_threads(1)
    np.testing.assert_array_equal(got2, conv.convert(a[:2].copy()))


@pytest.mark.skipif(NO_JIT, reason="N = 2^12 key switching is too slow without the JIT")
def test_key_switching_does_not_depend_on_threads(rng, two_threads):
    from fhe_ckks.rlwe import KeySwitcher
    from tests.ckks_context import context

    ctx = context("INSECURE_N12_QP520_L7_S40")
    d = ctx.params.ring_q.sample_uniform(rng.bytes(32))
    switcher = KeySwitcher(ctx.params)
    two = switcher.switch(d, ctx.evaluator.relin_key)
    set_num_threads(1)
    one = switcher.switch(d, ctx.evaluator.relin_key)
    for x, y in zip(one, two):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_thread_counts(bad):
    with pytest.raises(ParameterError):
        set_num_threads(bad)
    assert get_num_threads() == 1
