"""Samplers: determinism from seeds, supports, and distributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import ParameterError
from fhe_ckks.ring.sampling import (
    SecretStream,
    Shake256Stream,
    centered_binomial,
    discrete_gaussian,
    fresh_seed,
    gaussian_cdt,
    hamming_ternary,
    ternary,
    uniform_mod,
)

seeds = st.binary(min_size=32, max_size=32)


def test_stream_known_answer():
    # Block 0 of the stream is SHAKE-256(domain || 0x00 || seed || 0 as 8 LE bytes).
    import hashlib

    seed = bytes(range(32))
    want = hashlib.shake_256(b"kat\x00" + seed + bytes(8)).digest(16)
    assert Shake256Stream(seed, b"kat").read(16) == want


@given(seeds, st.lists(st.integers(1, 70000), min_size=1, max_size=4))
def test_stream_is_the_same_however_it_is_read(seed, sizes):
    whole = Shake256Stream(seed).read(sum(sizes))
    s = Shake256Stream(seed)
    assert b"".join(s.read(k) for k in sizes) == whole


def test_domains_and_seeds_separate_streams():
    seed = bytes(32)
    assert Shake256Stream(seed, b"a").read(64) != Shake256Stream(seed, b"b").read(64)
    assert Shake256Stream(seed).read(64) != Shake256Stream(bytes([1]) + bytes(31)).read(64)
    assert fresh_seed() != fresh_seed()


@given(seeds, st.lists(st.integers(1, 70000), min_size=1, max_size=4))
def test_secret_stream_is_the_public_stream_within_one_process(seed, sizes):
    # Fork safety must not change a fixed seed's output: known answers and
    # reproducible test keys depend on it.
    public, secret = Shake256Stream(seed, b"kat"), SecretStream(seed, b"kat")
    for k in sizes:
        assert secret.read(k) == public.read(k)
    assert secret.secret and not public.secret


def test_secret_stream_seeds_itself_from_the_os():
    assert SecretStream(None, b"x").read(64) != SecretStream(None, b"x").read(64)


@pytest.mark.parametrize("seed", [b"short", bytes(33), "x" * 32])
def test_secret_stream_bad_seeds_raise(seed):
    with pytest.raises(ParameterError):
        SecretStream(seed)


@given(seeds, st.lists(st.sampled_from([17, 97, 2**31 - 1, 2**60 + 33, 2**61 - 1]), min_size=1, max_size=3))
def test_uniform_is_reduced_and_reproducible(seed, moduli):
    a = uniform_mod(Shake256Stream(seed), moduli, 256)
    b = uniform_mod(Shake256Stream(seed), moduli, 256)
    np.testing.assert_array_equal(a, b)
    for k, q in enumerate(moduli):
        assert int(a[k].max()) < q


def test_uniform_is_uniform_chi_square():
    q = 17
    counts = np.bincount(uniform_mod(Shake256Stream(bytes(32)), [q], 170000)[0].astype(np.int64), minlength=q)
    chi2 = ((counts - 10000) ** 2 / 10000).sum()
    assert chi2 < 50  # 16 degrees of freedom: P(chi2 > 50) < 3e-5


def test_ternary_support_and_balance():
    t = ternary(Shake256Stream(bytes(32)), 30000)
    assert set(np.unique(t).tolist()) == {-1, 0, 1}
    for v in (-1, 0, 1):
        assert abs((t == v).mean() - 1 / 3) < 0.02


@given(seeds, st.integers(1, 64))
def test_hamming_weight_is_exact(seed, h):
    t = hamming_ternary(Shake256Stream(seed), 64, h)
    assert np.count_nonzero(t) == h
    assert set(np.unique(t[t != 0]).tolist()) <= {-1, 1}


def test_hamming_positions_cover_the_whole_range():
    # The CryptoFace SEAL fork could draw index N (out of bounds) and never the
    # last positions evenly; here every index is reachable, N never is.
    hits = np.zeros(16, dtype=np.int64)
    stream = Shake256Stream(bytes(32))
    for _ in range(2000):
        hits += hamming_ternary(stream, 16, 1) != 0
    assert hits.min() > 60


def test_discrete_gaussian_moments_and_tail():
    e = discrete_gaussian(Shake256Stream(bytes(32)), 200000, 3.2)
    assert abs(e.mean()) < 0.05
    assert abs(e.std() - 3.2) < 0.05
    assert np.abs(e).max() <= 20  # truncated at ceil(6 sigma)


def test_gaussian_table_is_monotone_and_saturated():
    table = gaussian_cdt(3.2, 20)
    assert (np.diff(table.astype(object)) > 0).all()
    assert int(table[-1]) == 2**64 - 1


def test_centered_binomial_variance():
    e = centered_binomial(Shake256Stream(bytes(32)), 100000, 21)
    assert abs(e.var() - 10.5) < 0.3
    assert np.abs(e).max() <= 21


@pytest.mark.parametrize("seed", [b"short", bytes(33), "x" * 32, None])
def test_bad_seeds_raise(seed):
    with pytest.raises(ParameterError):
        Shake256Stream(seed)


def test_bad_sampler_arguments_raise():
    s = Shake256Stream(bytes(32))
    with pytest.raises(ParameterError):
        hamming_ternary(s, 16, 17)
    with pytest.raises(ParameterError):
        hamming_ternary(s, 16, 0)
    with pytest.raises(ParameterError):
        discrete_gaussian(s, 16, -1.0)
    with pytest.raises(ParameterError):
        ternary(s, 0)
