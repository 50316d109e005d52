"""Example 01: modular arithmetic, the NTT and RNS — the ring under CKKS.

Every CKKS ciphertext is a pair of polynomials in Z_Q[X]/(X^N + 1) with a
modulus Q of hundreds of bits.  This example builds that ring from the bottom:

  1. NTT-friendly primes and the root of unity the transform needs.
  2. Shoup multiplication: a*w mod q without a division.
  3. The negacyclic NTT, checked by hand on N = 4, q = 17.
  4. Polynomial multiplication as a pointwise product of NTT values.
  5. RNS: one big modulus as several 60-bit primes; CRT; exact rescaling.
  6. How fast all this is at the real size N = 2^16 (skipped with --toy).

Run:  python docs/examples/01_modular_arithmetic_and_ntt.py [--toy]
The course page that goes with it is docs/ring.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fhe_ckks.ring import Ring, RNSBasis, ntt_primes, primitive_root_2n
from fhe_ckks.ring.modarith import U64, mul_shoup, shoup_precompute
from fhe_ckks.ring.ntt import NTTTables


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main(toy: bool) -> None:
    section("1. NTT-friendly primes")
    log_n = 4
    (q,) = ntt_primes(log_n, [30])
    psi = primitive_root_2n(q, log_n)
    print(f"N = {1 << log_n}: q = {q} ({q.bit_length()} bits), q mod 2N = {q % 32}")
    print(f"psi = {psi}: psi^N mod q = {pow(psi, 16, q)} = q - 1, i.e. psi^N = -1, a root of X^N + 1")

    section("2. Shoup multiplication by a constant")
    w = 123456789 % q
    w_shoup = shoup_precompute(w, q)  # floor(w * 2^64 / q), computed once
    y = 987654321
    r = int(mul_shoup(U64(y), U64(w), U64(w_shoup), U64(q)))
    print(f"{y} * {w} mod q = {r} (Python says {y * w % q}); two multiplications, no division")

    section("3. The NTT by hand: N = 4, q = 17, psi = 9")
    tables = NTTTables(2, [17])
    a = np.array([[1, 2, 3, 4]], dtype=np.uint64)
    tables.forward(a)
    print("NTT(1 + 2x + 3x^2 + 4x^3) =", a[0].tolist(), "= the values at x = 9, 8, 15, 2 (psi^1, psi^5, psi^3, psi^7)")
    tables.inverse(a)
    print("inverse NTT gives back", a[0].tolist())

    section("4. Multiplication modulo X^N + 1 through the NTT")
    ring = Ring(3, ntt_primes(3, [20]))
    f = np.array([[1, 1, 0, 0, 0, 0, 0, 0]], dtype=np.uint64)  # 1 + x
    g = np.array([[0, 0, 0, 0, 0, 0, 0, 1]], dtype=np.uint64)  # x^7
    ring.ntt(f)
    ring.ntt(g)
    h = ring.mul(f, g)
    ring.intt(h)
    qf = int(ring.moduli[0])
    print("(1 + x) * x^7 =", [int(c) if c < qf // 2 else int(c) - qf for c in h[0]],
          " (x^8 = -1, so the result is -1 + x^7)")

    section("5. RNS: a 180-bit modulus as three 60-bit primes")
    basis = RNSBasis(ntt_primes(4, [60, 60, 60]))
    x = 3**100
    residues = basis.decompose([x] + [0] * 15)
    print(f"3^100 has {x.bit_length()} bits; its residues: {[int(v) for v in residues[:, 0]]}")
    print("CRT gives back 3^100:", int(basis.compose(residues)[0]) == x)
    ring3 = Ring(4, basis.primes)
    rescaled = ring3.rescale(residues, ntt_domain=False)
    want = (2 * x + basis.primes[-1] - 1) // (2 * basis.primes[-1])
    print("rescale = round(x / q_last) exactly:", int(ring3.basis_at(2).compose(rescaled)[0]) == want)

    if toy:
        print("\n(--toy: skipping the timing at N = 2^16)")
        return
    section("6. Speed at N = 2^16 with eight 60-bit primes")
    big = Ring(16, ntt_primes(16, [60] * 8))
    poly = np.stack([np.random.default_rng(0).integers(0, q, 1 << 16, dtype=np.uint64) for q in big.basis.primes])
    big.ntt(poly)  # the first call compiles (or loads the cached kernel)
    start = time.perf_counter()
    for _ in range(10):
        big.ntt(poly, check=False)
    per_prime = (time.perf_counter() - start) / 10 / 8 * 1e3
    print(f"forward NTT: {per_prime:.3f} ms per prime (see benchmarks/bench_ring.py for the full figures)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small sizes only (used by the test suite)")
    main(parser.parse_args().toy)
