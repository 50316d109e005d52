"""Benchmark of CKKS bootstrapping: per-step latency, precision, levels, memory.

    python benchmarks/bench_bootstrap.py --json --preset NAME [--slots N]

Single thread (Numba kernels are single-threaded; ``--threads`` is reserved for
the multi-core variant).  Reports key generation time and key memory, the
latency of each step (ModRaise, SubSum, CoeffsToSlots, EvalMod, SlotsToCoeffs)
and in total, the precision after bootstrapping in bits (mean and minimum over
uniform inputs in [-1, 1]), the levels left, and peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import emit  # noqa: E402

import fhe_ckks as fc  # noqa: E402
from fhe_ckks.bootstrap import CONFIGS, BootstrapConfig, Bootstrapper, generate_keys  # noqa: E402


def timed(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    return out, 1e3 * (time.process_time() - t0)


def run(preset: str, slots: int | None) -> dict:
    params = fc.presets.get(preset, allow_insecure=preset.startswith("INSECURE_"))
    config = CONFIGS.get(preset, BootstrapConfig())
    if slots is not None:
        config = dataclasses.replace(config, slots=slots, packed=config.packed and 2 * slots <= params.slots)
    t0 = time.process_time()
    kg = fc.KeyGenerator(params)
    rk, gk = generate_keys(kg, config)
    keygen_s = time.process_time() - t0
    boot = Bootstrapper(params, rk, gk, config)
    enc, dec = fc.Encoder(params), fc.Decryptor(params, kg.secret_key)
    encryptor = fc.Encryptor(params, kg.public_key())
    n = boot.slots
    z = np.random.default_rng(0).uniform(-1, 1, n)
    ct = encryptor.encrypt(enc.encode(z, level=0, slots=n))
    boot.bootstrap(ct)  # warm-up: compilation, plaintext diagonals encoded once
    raised, t_raise = timed(boot.mod_raise, ct)
    summed, t_sum = timed(boot.sub_sum, raised)
    w, t_cts = timed(boot.coeffs_to_slots, summed)
    if config.packed:
        t_split = 0.0
        re2, t_mod_re = timed(boot.eval_mod, w)
        im2, t_mod_im = None, 0.0
    else:
        (re, im), t_split = timed(boot.split, w)
        re2, t_mod_re = timed(boot.eval_mod, re)
        im2, t_mod_im = timed(boot.eval_mod, im)
    out, t_stc = timed(boot.slots_to_coeffs, re2, im2, ct.scale)
    got = enc.decode(dec.decrypt(out), n)
    steps = {"mod_raise_ms": t_raise, "sub_sum_ms": t_sum, "coeffs_to_slots_ms": t_cts, "split_ms": t_split,
             "eval_mod_ms": t_mod_re + t_mod_im, "slots_to_coeffs_ms": t_stc}
    return {
        "preset": preset,
        "parameters": params.describe(),
        "slots": n,
        "config": dataclasses.asdict(config),
        "keygen_s": keygen_s,
        "galois_keys": len(gk.elements()),
        "key_memory_mb": (gk.nbytes + rk.nbytes) / 2**20,
        "latency_ms": steps,
        "total_ms": sum(steps.values()),
        "precision_bits_min": fc.precision_bits(z, got),
        "precision_bits_mean": fc.precision_bits(z, got, mean=True),
        "depth": boot.depth(),
        "levels_left": boot.output_level,
        "output_scale_log2": float(np.log2(out.scale)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timing": "thread CPU time after one warm-up bootstrap, single thread",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="BOOT_N16_QP1735_L25_S55", help="preset (default: %(default)s)")
    parser.add_argument("--slots", type=int, default=None, help="slot count (default: full)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        record = run(args.preset, args.slots)
    except fc.FheError as exc:
        parser.error(str(exc))
    emit(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
