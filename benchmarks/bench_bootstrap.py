"""Benchmark of CKKS bootstrapping: per-step latency, precision, levels, memory.

    python benchmarks/bench_bootstrap.py --json --preset NAME [--slots N]

Reports key generation time and key memory, the latency of each step
(ModRaise, SubSum, CoeffsToSlots, EvalMod, SlotsToCoeffs) and in total, the
precision after bootstrapping in bits (mean and minimum over uniform inputs in
[-1, 1]), the levels left, and peak RSS.  Latencies are single-threaded CPU
times; with ``--threads N`` (0: every core) the steps run again with the
kernels split over N threads and their wall-clock times are reported too.

With ``--openfhe PYTHON`` (default ``auto``: the first of this interpreter,
``python3.10`` and pyenv's 3.10 that imports ``openfhe``), the same measurement runs in OpenFHE
in the same benchmark run (``benchmarks/openfhe_bootstrap.py``, a separate
process because OpenFHE's wheel imports only on Python 3.10), with the same
slot count and levels left; ``--openfhe none`` skips it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import glob
import json
import resource
import shutil
import subprocess
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import emit  # noqa: E402

import fhe_ckks as fc  # noqa: E402
from fhe_ckks.bootstrap import CONFIGS, BootstrapConfig, Bootstrapper, generate_keys  # noqa: E402


def timed(fn, *args):
    t0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    timed.wall += time.perf_counter() - w0
    return out, 1e3 * (time.process_time() - t0)


timed.wall = 0.0


def run_steps(boot: Bootstrapper, config: BootstrapConfig, ct):
    """One bootstrap, step by step; returns (output, {step: ms})."""
    low, t_prescale = timed(boot.prescale, ct)
    raised, t_raise = timed(boot.mod_raise, low)
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
    out, t_stc = timed(boot.slots_to_coeffs, re2, im2, low.scale)
    return out, {"mod_raise_ms": t_prescale + t_raise, "sub_sum_ms": t_sum, "coeffs_to_slots_ms": t_cts, "split_ms": t_split,
                 "eval_mod_ms": t_mod_re + t_mod_im, "slots_to_coeffs_ms": t_stc}


def run(preset: str, slots: int | None, threads: int) -> dict:
    params = fc.presets.get(preset, allow_insecure=preset.startswith("INSECURE_"))
    config = CONFIGS.get(preset, BootstrapConfig())
    if slots is not None:
        config = dataclasses.replace(config, slots=slots, packed=2 * slots <= params.slots)
    t0 = time.process_time()
    kg = fc.KeyGenerator(params)
    keys = generate_keys(kg, config)
    keygen_s = time.process_time() - t0
    boot = Bootstrapper(params, keys.relin, keys.galois, config, keys.encapsulation)
    enc, dec = fc.Encoder(params), fc.Decryptor(params, kg.secret_key)
    # Secret-key encryption, as in the reference libraries' bootstrapping
    # examples: its fresh error (about 2^-30 at scale 2^40) stays below what
    # bootstrapping adds, which is what is measured.  A public-key encryption
    # at 2^40 and N = 2^16 carries about 2^-20 by itself.
    encryptor = fc.Encryptor(params, kg.secret_key)
    n = boot.slots
    z = np.random.default_rng(0).uniform(-1, 1, n)
    ct = encryptor.encrypt(enc.encode(z, level=0, slots=n))
    before = enc.decode(dec.decrypt(ct), n)
    boot.bootstrap(ct)  # warm-up: compilation, plaintext diagonals encoded once
    out, steps = run_steps(boot, config, ct)
    got = enc.decode(dec.decrypt(out), n)
    parallel = None
    if threads != 1:
        fc.ring.set_num_threads(threads or None)
        timed.wall = 0.0
        _, _ = run_steps(boot, config, ct)
        parallel = {"threads": fc.ring.get_num_threads(), "total_wall_ms": 1e3 * timed.wall}
        fc.ring.set_num_threads(1)
    return {
        "preset": preset,
        "parameters": params.describe(),
        "slots": n,
        "config": dataclasses.asdict(config),
        "keygen_s": keygen_s,
        "galois_keys": len(keys.galois.elements()),
        "key_memory_mb": (keys.galois.nbytes + keys.relin.nbytes
                          + (keys.encapsulation.nbytes if keys.encapsulation else 0)) / 2**20,
        "latency_ms": steps,
        "total_ms": sum(steps.values()),
        "precision_bits_min": fc.precision_bits(z, got),
        "precision_bits_mean": fc.precision_bits(z, got, mean=True),
        "input_precision_bits": fc.precision_bits(z, before),
        "circuit_precision_bits_min": fc.precision_bits(before, got),
        "circuit_precision_bits_mean": fc.precision_bits(before, got, mean=True),
        "depth": boot.depth(),
        "levels_left": boot.output_level,
        "output_scale_log2": float(np.log2(out.scale)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timing": "process CPU time after one warm-up bootstrap, single thread",
        "multi_thread": parallel,
    }


HERE = os.path.dirname(os.path.abspath(__file__))


def find_openfhe(choice: str) -> str | None:
    """The interpreter to run OpenFHE with, or None."""
    if choice == "none":
        return None
    if choice == "auto":
        pyenv = os.path.join(os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv")), "versions")
        candidates = [sys.executable, shutil.which("python3.10"),
                      *sorted(glob.glob(os.path.join(pyenv, "3.10*", "bin", "python")))]
    else:
        candidates = [choice]
    for exe in filter(None, candidates):
        try:
            ok = subprocess.run([exe, "-c", "import openfhe"], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return exe
    return None


def run_openfhe(exe: str, log_n: int, slots: int, levels_after: int) -> dict:
    cmd = [exe, os.path.join(HERE, "openfhe_bootstrap.py"), "--log-n", str(log_n), "--slots", str(slots),
           "--levels-after", str(levels_after)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (done.stderr or done.stdout)[-500:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="BOOT_N16_QP1737_L24_S40", help="preset (default: %(default)s)")
    parser.add_argument("--slots", type=int, default=None, help="slot count (default: full)")
    parser.add_argument("--threads", type=int, default=1, help="also time with N threads (0: all cores)")
    parser.add_argument("--openfhe", default="auto",
                        help="Python interpreter with openfhe for the comparison, 'auto' or 'none' (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        record = run(args.preset, args.slots, args.threads)
    except fc.FheError as exc:
        parser.error(str(exc))
    exe = find_openfhe(args.openfhe)
    if exe is not None:
        params = fc.presets.get(args.preset, allow_insecure=args.preset.startswith("INSECURE_"))
        record["openfhe"] = run_openfhe(exe, params.log_n, record["slots"], record["levels_left"])
    else:
        record["openfhe"] = None
    emit(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
