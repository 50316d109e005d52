"""Benchmark of the ring layer: NTT, basis conversion, automorphism, rescale.

    python benchmarks/bench_ring.py --json [--log-n 16] [--limbs 8]

Single thread, median CPU time after a warm-up call (JIT compilation and cache
loading excluded).  Prints one JSON object; the ``reference`` block holds the
kernel-floor figures of ../shared/bench/REFERENCE.md, measured on the project's
development machine, and ``ratio_to_reference`` compares with them (meaningful
only on that machine; elsewhere read the absolute figures).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import emit, machine, measure  # noqa: E402

from fhe_ckks.ring import BasisConverter, Ring, RNSBasis, galois_element, ntt_primes  # noqa: E402

# ../shared/bench/REFERENCE.md, "Kernel floor" (N = 2^16, 60-bit primes, one thread).
REFERENCE = {"ntt_forward_ms_per_prime": 0.66, "ntt_inverse_ms_per_prime": 0.73,
             "basis_conversion_ns_per_mac": 1.32}
# Targets of the ring-layer issue on the development machine.
TARGETS = {"ntt_forward_ms_per_prime": 0.75, "ntt_inverse_ms_per_prime": 0.8,
           "basis_conversion_ns_per_mac": 1.4}


def run(log_n: int, limbs: int, conv_from: int, conv_to: int) -> dict:
    n = 1 << log_n
    rng = np.random.default_rng(1)
    ring = Ring(log_n, ntt_primes(log_n, [60] * limbs))

    def random_poly(primes):
        return np.stack([rng.integers(0, q, n, dtype=np.uint64) for q in primes])

    a = random_poly(ring.basis.primes)
    fwd = measure(lambda: ring.tables.forward(a, check=False))
    inv = measure(lambda: ring.tables.inverse(a, check=False))

    src_primes = ntt_primes(log_n, [60] * conv_from)
    dst_primes = ntt_primes(log_n, [60] * conv_to, exclude=src_primes)
    conv = BasisConverter(RNSBasis(src_primes), RNSBasis(dst_primes))
    x = random_poly(src_primes)
    out = np.empty((conv_to, n), dtype=np.uint64)
    bconv = measure(lambda: conv.convert(x, out, check=False))

    g = galois_element(1, log_n)
    auto_out = np.empty_like(a)
    ring.automorphism(a, g, ntt_domain=True, out=auto_out)  # caches the index map
    auto = measure(lambda: ring.automorphism(a, g, ntt_domain=True, out=auto_out))
    resc_out = np.empty((limbs - 1, n), dtype=np.uint64)
    resc = measure(lambda: ring.rescale(a, ntt_domain=True, out=resc_out, check=False))
    prod = np.empty_like(a)
    mul = measure(lambda: ring.mul(a, a, prod, check=False))

    butterflies = (n // 2) * log_n * limbs
    macs = conv_from * conv_to * n
    record = {
        "log_n": log_n,
        "limbs": limbs,
        "prime_bits": 60,
        "ntt_forward_ms": fwd["cpu_ms"],
        "ntt_inverse_ms": inv["cpu_ms"],
        "ntt_forward_ms_per_prime": fwd["cpu_ms"] / limbs,
        "ntt_inverse_ms_per_prime": inv["cpu_ms"] / limbs,
        "ntt_forward_ns_per_butterfly": fwd["cpu_ms"] * 1e6 / butterflies,
        "basis_conversion": f"{conv_from} -> {conv_to} primes",
        "basis_conversion_ms": bconv["cpu_ms"],
        "basis_conversion_ns_per_mac": bconv["cpu_ms"] * 1e6 / macs,
        "automorphism_ms": auto["cpu_ms"],
        "rescale_ntt_ms": resc["cpu_ms"],
        "pointwise_mul_ms": mul["cpu_ms"],
        "wall_ms": {"ntt_forward": fwd["wall_ms"], "ntt_inverse": inv["wall_ms"],
                    "basis_conversion": bconv["wall_ms"], "automorphism": auto["wall_ms"]},
        "best_ms": {"ntt_forward_per_prime": fwd["best_cpu_ms"] / limbs,
                    "ntt_inverse_per_prime": inv["best_cpu_ms"] / limbs,
                    "basis_conversion_ns_per_mac": bconv["best_cpu_ms"] * 1e6 / macs},
        "timing": "median thread CPU time after one warm-up call, single thread",
    }
    mhz = machine().get("cpu_mhz")
    if mhz:
        record["ntt_forward_cycles_per_butterfly_nominal_clock"] = record["ntt_forward_ns_per_butterfly"] * mhz / 1e3
    if log_n == 16:
        record["reference"] = REFERENCE
        record["ratio_to_reference"] = {k: record[k] / v for k, v in REFERENCE.items()}
        record["targets"] = TARGETS
        record["meets_targets"] = all(record[k] <= v for k, v in TARGETS.items())
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-n", type=int, default=16, help="ring degree exponent (default 16)")
    parser.add_argument("--limbs", type=int, default=8, help="primes in the NTT batch (default 8)")
    parser.add_argument("--conv-from", type=int, default=8, help="basis conversion source primes (default 8)")
    parser.add_argument("--conv-to", type=int, default=24, help="basis conversion target primes (default 24)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 2 <= args.log_n <= 17 or args.limbs < 1 or args.conv_from < 1 or args.conv_to < 1:
        parser.error("need 2 <= --log-n <= 17 and positive prime counts")
    emit(run(args.log_n, args.limbs, args.conv_from, args.conv_to), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
