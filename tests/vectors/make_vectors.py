"""Produce tests/vectors/ntt_kat.json, the NTT known-answer vectors.

Independent of the library's kernels: the forward NTT is the *definition*
evaluated with Python integers, ``NTT(a)[k] = a(psi^(2 brv(k) + 1)) mod q``,
and the negacyclic product is schoolbook multiplication modulo ``X^N + 1``.
The primes and roots are found here with sympy, from first principles.

Run from the repository root:  python tests/vectors/make_vectors.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import sympy

CASES = [(4, 7), (8, 61), (10, 60)]  # (log_n, prime bits)
SEED = 20250611


def largest_ntt_prime(log_n: int, bits: int) -> int:
    step = 2 << log_n
    q = ((1 << bits) - 1) // step * step + 1
    while q > 1 << (bits - 1) and not sympy.isprime(q):
        q -= step
    return q


def root(q: int, log_n: int) -> int:
    g = sympy.primitive_root(q)
    return pow(g, (q - 1) >> (log_n + 1), q)


def brv(k: int, bits: int) -> int:
    return int(format(k, f"0{bits}b")[::-1], 2)


def evaluate(a: list[int], x: int, q: int) -> int:
    acc = 0
    for coeff in reversed(a):  # Horner
        acc = (acc * x + coeff) % q
    return acc


def negacyclic(a: list[int], b: list[int], q: int) -> list[int]:
    n = len(a)
    out = [0] * n
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            if i + j < n:
                out[i + j] += ai * bj
            else:
                out[i + j - n] -= ai * bj
    return [c % q for c in out]


def main() -> None:
    rnd = random.Random(SEED)
    cases = []
    for log_n, bits in CASES:
        n = 1 << log_n
        q = largest_ntt_prime(log_n, bits)
        psi = root(q, log_n)
        a = [rnd.randrange(q) for _ in range(n)]
        b = [rnd.randrange(q) for _ in range(n)]
        ntt_a = [evaluate(a, pow(psi, 2 * brv(k, log_n) + 1, q), q) for k in range(n)]
        cases.append({
            "log_n": log_n, "q": q, "psi": psi, "a": a, "b": b,
            "ntt_a": ntt_a, "a_times_b": negacyclic(a, b, q),
        })
    doc = {
        "description": "Negacyclic NTT (bit-reversed output order) and products; see make_vectors.py",
        "seed": SEED,
        "cases": cases,
    }
    path = Path(__file__).with_name("ntt_kat.json")
    path.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
