"""Example 04: multiply, relinearize, rescale.

Builds on 03.  Multiplying (a0, a1) by (b0, b1) gives three components
(a0 b0, a0 b1 + a1 b0, a1 b1) decrypting with (1, s, s^2); relinearization
key-switches the s^2 part back to s; rescaling divides by q_l to bring the
scale from Delta^2 back to about Delta.

  1. one product, step by step, with levels and scales;
  2. x^(2^k) by repeated squaring down to level 0: about one bit lost per level;
  3. constants and plaintexts; operands at different levels are aligned.

Run:  python docs/examples/04_multiply_relinearize_rescale.py [--toy]      (docs/ckks.md)
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
from fhe_ckks.ckks import precision_bits


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main(toy: bool) -> None:
    params = presets.get("INSECURE_N10_QP380_L5_S40", allow_insecure=True) if toy else \
        presets.get("N14_QP430_L7_S40")
    keygen = KeyGenerator(params)
    encoder = Encoder(params)
    encryptor, decryptor = Encryptor(params, keygen.public_key()), Decryptor(params, keygen.secret_key)
    evaluator = Evaluator(params, relin_key=keygen.relin_key())  # public material only
    x = np.random.default_rng(4).uniform(0.5, 1, params.slots)
    ct = encryptor.encrypt(encoder.encode(x))

    def show(label, c, want):
        got = encoder.decode(decryptor.decrypt(c))
        print(f"{label:<28} size {c.size}, level {c.level}, scale 2^{math.log2(c.scale):.3f}, "
              f"{precision_bits(want, got):.1f} bits")

    section("1. One product")
    show("x", ct, x)
    product = evaluator.mul(ct, ct, relinearize=False)
    show("x*x (tensor)", product, x * x)
    product = evaluator.relinearize(product)
    show("x*x (relinearized)", product, x * x)
    product = evaluator.rescale(product)
    show("x*x (rescaled)", product, x * x)

    section("2. Repeated squaring to level 0")
    c, want = ct, x
    while c.level > 0:
        c = evaluator.rescale(evaluator.square(c))
        want = want * want
        show(f"x^{2 ** (params.max_level - c.level)}", c, want)

    section("3. Constants, plaintexts, alignment")
    show("0.25 * x (mul_const)", evaluator.rescale(evaluator.mul_const(ct, 0.25)), 0.25 * x)
    show("x * x (mul_plain)", evaluator.rescale(evaluator.mul_plain(ct, encoder.encode(x))), x * x)
    show("x + x^2 (levels aligned)", evaluator.add(ct, product), x + x * x)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small insecure parameters (used by the tests)")
    main(parser.parse_args().toy)
