"""Hypothesis strategies shared by the test suite."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from hypothesis import strategies as st

from fhe_ckks.ring import Ring, ntt_primes

from .conftest import NO_JIT

#: Ring sizes the property tests draw from (smaller without the JIT).
LOG_NS = (1, 2, 3, 4, 5) if NO_JIT else (1, 2, 3, 4, 5, 6, 8, 10)
#: Prime sizes drawn from: the extremes of what the ring layer accepts.
PRIME_BITS = (20, 30, 45, 59, 60, 61)

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@lru_cache(maxsize=None)
def toy_ring(log_n: int, bits: tuple[int, ...]) -> Ring:
    """A cached ring with one prime per entry of ``bits``."""
    return Ring(log_n, ntt_primes(log_n, list(bits)))


@st.composite
def rings(draw, max_limbs: int = 3, log_ns=LOG_NS) -> Ring:
    """A small ring: N = 2^log_n with 1 to ``max_limbs`` primes."""
    log_n = draw(st.sampled_from(log_ns))
    bits = draw(st.lists(st.sampled_from(PRIME_BITS), min_size=1, max_size=max_limbs))
    return toy_ring(log_n, tuple(bits))


@st.composite
def ntt_primes_st(draw, log_n: int) -> int:
    bits = draw(st.sampled_from(PRIME_BITS))
    return ntt_primes(log_n, [bits])[0]


def reduced_poly(draw, ring: Ring, limbs: int | None = None) -> np.ndarray:
    """A reduced ``(limbs, N)`` array, drawn limb by limb (edge values
    included through hypothesis' integer shrinking)."""
    limbs = len(ring) if limbs is None else limbs
    rows = []
    for q in ring.basis.primes[:limbs]:
        seed = draw(st.integers(0, 2**32 - 1))
        gen = np.random.default_rng(seed)
        row = gen.integers(0, q, ring.n, dtype=np.uint64, endpoint=False)
        special = draw(st.sampled_from(["random", "zeros", "max", "mixed"]))
        if special == "zeros":
            row[:] = 0
        elif special == "max":
            row[:] = q - 1
        elif special == "mixed":
            row[::2] = q - 1
        rows.append(row)
    return np.ascontiguousarray(np.stack(rows))
