"""Example 07: bootstrapping, step by step (toy parameters).

Builds on 05 (rotations) and the circuits of docs/bootstrapping.md.  A
ciphertext at level 0 can no longer be multiplied; bootstrapping brings it
back to a higher level without the secret key:

  prescale -> ModRaise (through an ephemeral sparse secret) -> CoeffsToSlots
  -> EvalMod (real and imaginary parts) -> SlotsToCoeffs

This example runs each step, prints levels and timings, and the precision
before and after.  By default it uses the secure N = 2^16 preset with full
slots (about 25 s of key generation, 3.1 GiB of keys, ~25 s per bootstrap,
about 23 / 25 bits of precision (max / mean error), see
docs/bootstrapping.md); --toy uses the same design at N = 2^12 (insecure).

Run:  python docs/examples/07_bootstrapping.py [--toy]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fhe_ckks import Decryptor, Encoder, Encryptor, KeyGenerator, presets
from fhe_ckks.bootstrap import CONFIGS, Bootstrapper, generate_keys, required_rotations
from fhe_ckks.ckks import precision_bits


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main(toy: bool) -> None:
    name = "INSECURE_BOOT_N12_QP1354_L19_S40" if toy else "BOOT_N16_QP1737_L24_S40"
    params = presets.get(name, allow_insecure=toy)
    config = CONFIGS[name]  # full slots, ephemeral secret of weight 32, K = 16
    print(params.describe())

    section("1. Keys: exactly the rotations the plan needs, at the levels it needs them")
    steps = required_rotations(params, config)
    keygen = KeyGenerator(params)
    keys = generate_keys(keygen, config)
    boot = Bootstrapper(params, keys.relin, keys.galois, config, keys.encapsulation)
    print(f"{len(steps)} rotation keys + conjugation ({keys.galois.nbytes / 2**30:.2f} GiB), encapsulation keys "
          f"({keys.encapsulation.nbytes / 2**20:.0f} MiB); depth {boot.depth()} (CoeffsToSlots {config.cts_budget}, "
          f"EvalMod {config.evalmod.depth()}, SlotsToCoeffs {config.stc_budget}); output level {boot.output_level}")

    encoder, decryptor = Encoder(params), Decryptor(params, keygen.secret_key)
    z = np.random.default_rng(7).uniform(-1, 1, boot.slots)
    ct = Encryptor(params, keygen.secret_key).encrypt(encoder.encode(z, level=0, slots=boot.slots))

    def show(label, c, want=None, slots=None):
        got = encoder.decode(decryptor.decrypt(c), slots)
        extra = f", {precision_bits(want, got):.1f} bits" if want is not None else ""
        print(f"{label:<22} level {c.level:2d}{extra}")

    section("2. The steps")
    show("input", ct, z)
    start = time.perf_counter()
    low = boot.prescale(ct)  # times an integer: the message fills 2^-5 of q_0
    show("prescale", low, z)
    raised = boot.mod_raise(low)  # to s' (weight 32), ModRaise, back to s: |I| <= 16
    show("ModRaise", raised)
    w = boot.coeffs_to_slots(boot.sub_sum(raised))  # the coefficients, bit-reversed, in the slots
    show("CoeffsToSlots", w)
    re, im = boot.split(w)  # real and imaginary parts: two EvalMods with full slots
    re, im = boot.eval_mod(re), boot.eval_mod(im)
    show("EvalMod (x2)", re)
    out = boot.slots_to_coeffs(re, im, low.scale)
    elapsed = time.perf_counter() - start
    show("SlotsToCoeffs", out, z)
    print(f"bootstrapped in {elapsed:.2f} s; the result can be multiplied {out.level} more times")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small insecure parameters (used by the tests)")
    main(parser.parse_args().toy)
