"""Example 05: rotations and key switching.

Builds on 04.  X -> X^(5^k) rotates the slots by k, but turns a ciphertext
under s into one under s(X^(5^k)); a Galois key switches it back to s.  Keys
are generated for the rotations a computation needs, never "all of them".

  1. rotate left and right, conjugate;
  2. hoisting: several rotations of one ciphertext share the expensive
     decomposition;
  3. rotate-and-sum: the sum of 16 consecutive slots with 4 rotations;
  4. what the keys cost.

Run:  python docs/examples/05_rotations_and_key_switching.py [--toy]      (docs/ckks.md)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets, serialize
from fhe_ckks.ckks import precision_bits


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main(toy: bool) -> None:
    params = presets.get("INSECURE_N10_QP380_L5_S40", allow_insecure=True) if toy else \
        presets.get("N14_QP430_L7_S40")
    keygen = KeyGenerator(params)
    steps = [1, 2, 3, 4, 8, -1]  # what this example uses: the plan decides the keys
    galois = keygen.galois_keys(steps, conjugate=True)
    evaluator = Evaluator(params, keygen.relin_key(), galois)
    encoder = Encoder(params)
    encryptor, decryptor = Encryptor(params, keygen.public_key()), Decryptor(params, keygen.secret_key)
    z = np.arange(params.slots, dtype=float) / params.slots + 0.5j
    ct = encryptor.encrypt(encoder.encode(z))

    def decode(c):
        return encoder.decode(decryptor.decrypt(c))

    section("1. Rotations and conjugation")
    for k in (1, 3, -1):
        got = decode(evaluator.rotate(ct, k))
        print(f"rotate {k:+d}: first slots {np.round(got[:3].real * params.slots).astype(int)}, "
              f"{precision_bits(np.roll(z, -k), got):.1f} bits")
    print(f"conjugate: {precision_bits(np.conj(z), decode(evaluator.conjugate(ct))):.1f} bits")

    section("2. Hoisted rotations")
    start = time.perf_counter()
    singles = {k: evaluator.rotate(ct, k) for k in (1, 2, 3, 4)}
    t_single = time.perf_counter() - start
    start = time.perf_counter()
    hoisted = evaluator.rotate_hoisted(ct, [1, 2, 3, 4])
    t_hoisted = time.perf_counter() - start
    agree = min(precision_bits(decode(singles[k]), decode(hoisted[k])) for k in singles)
    print(f"4 rotations: {t_single * 1e3:.0f} ms one by one, {t_hoisted * 1e3:.0f} ms hoisted; "
          f"they agree to {agree:.1f} bits")

    section("3. Rotate and sum")
    total = decode(evaluator.rotate_and_sum(ct, 16))
    want = sum(np.roll(z, -k) for k in range(16))
    print(f"slot 0 = sum of slots 0..15 = {total[0].real:.4f} (exact {want[0].real:.4f})")

    section("4. Key sizes")
    key = galois[next(iter(galois.elements()))]
    print(f"{len(galois.elements())} Galois keys; each {key.nbytes / 2**20:.1f} MiB in memory, "
          f"{len(serialize.dump(key)) / 2**20:.1f} MiB serialized ({params.digits} digits over "
          f"{len(params.q_primes) + len(params.p_primes)} primes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small insecure parameters (used by the tests)")
    main(parser.parse_args().toy)
