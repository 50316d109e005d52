"""Example 02: CKKS encoding — vectors of numbers as polynomials.

Builds on 01 (the ring).  A CKKS plaintext is a polynomial m(X) of degree < N
with integer coefficients; its N/2 "slots" are the values of m at the roots
zeta^(5^j) of X^N + 1, divided by the scale Delta.  This example shows:

  1. encoding and decoding, and the precision the scale buys;
  2. that slot j really is m(zeta^(5^j)) / Delta;
  3. why products work: the product of polynomials is the product of slots;
  4. sparse packing: 8 slots repeated across the whole slot space.

Run:  python docs/examples/02_encoding.py [--toy]      (course page: docs/ckks.md)
"""

from __future__ import annotations

import argparse

import numpy as np

from fhe_ckks import Encoder, presets
from fhe_ckks.ckks import precision_bits


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main(toy: bool) -> None:
    params = presets.get("INSECURE_N10_QP380_L5_S40", allow_insecure=True) if toy else \
        presets.get("N14_QP430_L7_S40")
    encoder = Encoder(params)
    rng = np.random.default_rng(2)
    print(params.describe())

    section("1. Encode, decode, precision")
    z = rng.uniform(-1, 1, params.slots) + 1j * rng.uniform(-1, 1, params.slots)
    for log_scale in (20, 30, 40):
        pt = encoder.encode(z, scale=2.0**log_scale)
        print(f"scale 2^{log_scale}: decode(encode(z)) has {precision_bits(z, encoder.decode(pt)):.1f} bits "
              f"(rounding to integers costs about log2 N = {params.log_n} bits)")

    section("2. Slots are values at the roots zeta^(5^j)")
    coeffs = encoder.embed_inverse(z)
    zeta = np.exp(1j * np.pi / params.n)
    for j in (0, 1, 2):
        value = np.polynomial.polynomial.polyval(zeta ** pow(5, j, 2 * params.n), coeffs)
        print(f"m(zeta^(5^{j})) = {value:.6f}   slot {j} = {z[j]:.6f}")

    section("3. Polynomial product = slot-wise product")
    w = rng.uniform(-1, 1, params.slots)
    cw = encoder.embed_inverse(w)
    full = np.convolve(coeffs, cw)
    product = full[: params.n] - np.concatenate([full[params.n:], [0.0]])  # X^N = -1
    print("max |slots(m_z * m_w) - z * w| =", f"{np.abs(encoder.embed(product) - z * w).max():.2e}")

    section("4. Sparse packing: 8 slots")
    small = np.arange(8) / 8
    sparse = encoder.embed_inverse(small, slots=8)
    print("nonzero coefficients:", np.count_nonzero(np.abs(sparse) > 1e-12), "of", params.n)
    print("full slot space (first 24):", np.round(encoder.embed(sparse)[:24].real, 3))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small insecure parameters (used by the tests)")
    main(parser.parse_args().toy)
