"""Example 07: bootstrapping, step by step (toy parameters).

Builds on 05 (rotations) and the circuits of docs/bootstrapping.md.  A
ciphertext at level 0 can no longer be multiplied; bootstrapping brings it
back to a higher level without the secret key:

  ModRaise -> CoeffsToSlots -> EvalMod (real and imaginary parts) -> SlotsToCoeffs

This example runs each step, prints levels and timings, and the precision
before and after.  By default it uses the secure N = 2^16 preset (about a
minute of key generation, 6 GB of keys, ~20 s per bootstrap, and only about
13 bits of precision so far, see docs/bootstrapping.md); --toy uses the small
insecure test preset.

Run:  python docs/examples/07_bootstrapping.py [--toy]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fhe_ckks import Decryptor, Encoder, Encryptor, KeyGenerator, presets
from fhe_ckks.bootstrap import CONFIGS, BootstrapConfig, Bootstrapper, generate_keys, required_rotations
from fhe_ckks.ckks import precision_bits


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main(toy: bool) -> None:
    if toy:
        params = presets.get("INSECURE_BOOT_N12_QP1235_H32", allow_insecure=True)
        config = BootstrapConfig(slots=128, packed=True)  # one EvalMod for sparse slots
    else:
        params = presets.get("BOOT_N16_QP1735_L25_S55")
        config = CONFIGS["BOOT_N16_QP1735_L25_S55"]  # 4096 packed slots
    print(params.describe())

    section("1. Keys: exactly the rotations the plan needs, at the levels it needs them")
    steps = required_rotations(params, config)
    keygen = KeyGenerator(params)
    relin, galois = generate_keys(keygen, config)
    boot = Bootstrapper(params, relin, galois, config)
    print(f"{len(steps)} rotation keys + conjugation ({galois.nbytes / 2**30:.2f} GiB); depth {boot.depth()} "
          f"(CoeffsToSlots {config.cts_budget}, EvalMod {config.evalmod.depth()}, "
          f"SlotsToCoeffs {config.stc_budget}); output level {boot.output_level}")

    encoder, decryptor = Encoder(params), Decryptor(params, keygen.secret_key)
    z = np.random.default_rng(7).uniform(-1, 1, boot.slots)
    ct = Encryptor(params, keygen.public_key()).encrypt(encoder.encode(z, level=0, slots=boot.slots))

    def show(label, c, want=None, slots=None):
        got = encoder.decode(decryptor.decrypt(c), slots)
        extra = f", {precision_bits(want, got):.1f} bits" if want is not None else ""
        print(f"{label:<22} level {c.level:2d}{extra}")

    section("2. The steps")
    show("input", ct, z)
    start = time.perf_counter()
    raised = boot.mod_raise(ct)
    show("ModRaise", raised)
    summed = boot.sub_sum(raised)
    w = boot.coeffs_to_slots(summed)  # real parts in slots [0, n), imaginary in [n, 2n)
    show("CoeffsToSlots", w)
    reduced = boot.eval_mod(w)
    show("EvalMod", reduced)
    out = boot.slots_to_coeffs(reduced, None, ct.scale)
    elapsed = time.perf_counter() - start
    show("SlotsToCoeffs", out, z)
    print(f"bootstrapped in {elapsed:.2f} s; the result can be multiplied {out.level} more times")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="small insecure parameters (used by the tests)")
    main(parser.parse_args().toy)
