"""Example 03: keys, encryption, levels and scales.

Builds on 02.  A ciphertext (c0, c1) decrypts to m = c0 + c1*s.  It lives
modulo q_0 ... q_l, where l is its level; each rescale spends one prime.

  1. key generation: the secret key stays here; the public key can go anywhere;
  2. public-key and secret-key (seeded, half-size) encryption;
  3. the level ladder: the standard scale of each level;
  4. noise-flooded decryption for results that will be shared.

Run:  python docs/examples/03_encryption_and_levels.py [--toy]      (docs/ckks.md)
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from fhe_ckks import Decryptor, Encoder, Encryptor, KeyGenerator, presets, serialize
from fhe_ckks.ckks import precision_bits


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main(toy: bool) -> None:
    params = presets.get("INSECURE_N10_QP380_L5_S40", allow_insecure=True) if toy else \
        presets.get("N14_QP430_L7_S40")
    print(params.describe())

    section("1. Keys")
    keygen = KeyGenerator(params)  # secrets from the OS CSPRNG
    public_key = keygen.public_key()
    s = keygen.secret_key.coeffs
    print(f"secret: {params.n} ternary coefficients, {np.count_nonzero(s)} nonzero")
    print(f"public key: {public_key.b.nbytes / 2**20:.2f} MiB expanded, "
          f"{len(serialize.dump(public_key)) / 2**20:.2f} MiB serialized (a is stored as a 32-byte seed)")

    section("2. Encrypt and decrypt")
    encoder, decryptor = Encoder(params), Decryptor(params, keygen.secret_key)
    z = np.random.default_rng(3).uniform(-1, 1, params.slots)
    for name, key in (("public key", public_key), ("secret key", keygen.secret_key)):
        ct = Encryptor(params, key).encrypt(encoder.encode(z))
        got = encoder.decode(decryptor.decrypt(ct))
        print(f"{name}: {precision_bits(z, got):.1f} bits, serialized {len(serialize.dump(ct)) / 2**10:.0f} KiB")

    section("3. Levels and their standard scales")
    for level in range(params.max_level, -1, -1):
        print(f"level {level}: q_{level} has {params.q_primes[level].bit_length()} bits, "
              f"scale 2^{math.log2(params.scale_at(level)):.6f}")

    section("4. Noise flooding before sharing a decryption")
    ct = Encryptor(params, public_key).encrypt(encoder.encode(z))
    for bits in (None, 10, 20):
        got = encoder.decode(decryptor.decrypt(ct, flooding_bits=bits))
        print(f"flooding 2^{bits}: {precision_bits(z, got):.1f} bits left" if bits else
              f"no flooding: {precision_bits(z, got):.1f} bits")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small insecure parameters (used by the tests)")
    main(parser.parse_args().toy)
