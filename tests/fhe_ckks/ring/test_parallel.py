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


def test_using_threads_is_the_calling_threads_own():
    """using_threads sets the count for the calling thread only, nests, restores, and refuses bad counts."""
    import threading

    from fhe_ckks.ring import using_threads

    seen = {}
    with using_threads(3):
        assert get_num_threads() == 3
        with using_threads(2):
            assert get_num_threads() == 2
        assert get_num_threads() == 3
        other = threading.Thread(target=lambda: seen.setdefault("other", get_num_threads()))
        other.start()
        other.join()
    assert seen["other"] == 1 and get_num_threads() == 1
    for bad in (0, 1.5, True, 300):
        with pytest.raises(ParameterError):
            with using_threads(bad):
                pass


def test_chunks_are_disjoint_and_cover_the_range():
    from fhe_ckks.ring import using_threads
    from fhe_ckks.ring.parallel import run_chunks

    for threads in (1, 2, 3, 5):
        for count in (0, 1, 2, 7, 64):
            hits = []
            with using_threads(threads):
                run_chunks(lambda a, b, hits=hits: hits.append((a, b)), count)
            covered = sorted(i for a, b in hits for i in range(a, b))
            assert covered == list(range(count)) and len(hits) <= max(1, threads)


def test_a_forked_child_runs_threaded_kernels_after_its_parent_did(rng):
    """The parent's pool threads do not exist in a forked child; the child must start its own pool instead
    of queueing work on the inherited one (which would never run)."""
    import multiprocessing as mp

    from fhe_ckks.ring import using_threads

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    primes = ntt_primes(8, [50, 55, 60, 45])
    tables = NTTTables(8, primes)
    a = np.stack([rng.integers(0, q, 256, dtype=np.uint64) for q in primes])
    want = a.copy()
    with using_threads(2):
        tables.forward(want)                    # the parent's pool now exists

    def child(conn):
        got = a.copy()
        with using_threads(2):
            tables.forward(got)
        conn.send(got)

    recv, send = mp.get_context("fork").Pipe(duplex=False)
    proc = mp.get_context("fork").Process(target=child, args=(send,))
    proc.start()
    assert recv.poll(60), "the forked child's threaded NTT never finished"
    np.testing.assert_array_equal(recv.recv(), want)
    proc.join(10)
