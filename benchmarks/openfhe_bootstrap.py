"""The OpenFHE side of ``bench_bootstrap.py``: one CKKS bootstrap, measured the same way.

    python3.10 benchmarks/openfhe_bootstrap.py --log-n 16 --levels-after 8 [--slots N]

OpenFHE's pip wheel (``openfhe``) imports only on Python 3.10, so
``bench_bootstrap.py --openfhe PYTHON`` runs this file under that interpreter,
in the same benchmark run, and merges the JSON it prints.  It does not import
this project.  The parameters follow OpenFHE's own bootstrapping example: a
dense (uniform ternary) secret, 128-bit classical security (OpenFHE's check),
scale 2^59 with a 60-bit first prime, FLEXIBLEAUTO rescaling, level budget
(3, 3), and the requested levels left after bootstrapping (fewer when
OpenFHE's 128-bit check refuses that many at this ring degree: both counts are
reported).  Timings are process
CPU time after one warm-up bootstrap; precision is over uniform inputs in
[-1, 1], from a public-key encryption (OpenFHE's API), against the input
values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402


def context(of, log_n: int, levels_after: int, budget: tuple[int, int]):
    """A bootstrapping context with ``levels_after`` levels left, or fewer when
    OpenFHE's own 128-bit check refuses that many at this ring degree; the
    number of key-switching digits is OpenFHE's default or the first that
    passes that check.  Returns ``(context, depth, levels left, digits)``."""
    last: Exception | None = None
    for left in range(levels_after, 0, -1):
        for digits in (None, 3, 4, 5, 6, 8):
            try:
                return (*_context(of, log_n, left, budget, digits), left, digits)
            except RuntimeError as exc:  # OpenFHE's parameter checks
                last = exc
    raise last  # type: ignore[misc]


def bootstrap_depth(of, budget: tuple[int, int], secret) -> int:
    """Levels one bootstrap consumes, from the installed wheel: ``FHECKKSRNS.GetBootstrapDepth`` up to OpenFHE
    1.5; 1.6 moved it to a static method of ``CryptoContext`` (and dropped ``FHECKKSRNS`` from the module)."""
    holder = getattr(of, "FHECKKSRNS", None) or getattr(of, "CryptoContext", None)
    fn = getattr(holder, "GetBootstrapDepth", None)
    if fn is None:
        raise RuntimeError(f"this openfhe ({getattr(of, '__version__', 'unknown version')}) has no GetBootstrapDepth")
    return int(fn(list(budget), secret))


def _context(of, log_n: int, levels_after: int, budget: tuple[int, int], digits: int | None):
    secret = of.SecretKeyDist.UNIFORM_TERNARY
    params = of.CCParamsCKKSRNS()
    params.SetSecretKeyDist(secret)
    if log_n >= 16:
        params.SetSecurityLevel(of.SecurityLevel.HEStd_128_classic)
    else:  # toy ring, for a quick check of this script only
        params.SetSecurityLevel(of.SecurityLevel.HEStd_NotSet)
    params.SetRingDim(1 << log_n)
    params.SetScalingModSize(59)
    params.SetFirstModSize(60)
    params.SetScalingTechnique(of.ScalingTechnique.FLEXIBLEAUTO)
    if digits is not None:
        params.SetNumLargeDigits(digits)
    depth = levels_after + bootstrap_depth(of, budget, secret)
    params.SetMultiplicativeDepth(depth)
    cc = of.GenCryptoContext(params)
    for feature in (of.PKESchemeFeature.PKE, of.PKESchemeFeature.KEYSWITCH, of.PKESchemeFeature.LEVELEDSHE,
                    of.PKESchemeFeature.ADVANCEDSHE, of.PKESchemeFeature.FHE):
        cc.Enable(feature)
    return cc, depth


def run(log_n: int, levels_after: int, slots: int | None, budget: tuple[int, int]) -> dict:
    import openfhe as of

    requested = levels_after
    cc, depth, levels_after, digits = context(of, log_n, levels_after, budget)
    n = slots or (1 << (log_n - 1))
    t0 = time.process_time()
    cc.EvalBootstrapSetup(list(budget), [0, 0], n)
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalBootstrapKeyGen(keys.secretKey, n)
    keygen_s = time.process_time() - t0
    z = np.random.default_rng(0).uniform(-1, 1, n)
    pt = cc.MakeCKKSPackedPlaintext(z.tolist(), 1, depth - 1, None, n)
    pt.SetLength(n)
    ct = cc.Encrypt(keys.publicKey, pt)
    cc.EvalBootstrap(ct)  # warm-up
    t0 = time.process_time()
    out = cc.EvalBootstrap(ct)
    boot_ms = 1e3 * (time.process_time() - t0)
    dec = cc.Decrypt(out, keys.secretKey)
    dec.SetLength(n)
    got = np.array(dec.GetRealPackedValue())
    err = np.abs(got - z)
    return {
        "library": f"OpenFHE {_version()}",
        "log_n": log_n,
        "slots": n,
        "level_budget": list(budget),
        "depth": depth,
        "levels_left": levels_after,
        "levels_requested": requested,
        "key_switching_digits": digits or "OpenFHE default",
        "keygen_s": keygen_s,
        "total_ms": boot_ms,
        "precision_bits_min": float(-np.log2(err.max())),
        "precision_bits_mean": float(-np.log2(err.mean())),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timing": "process CPU time after one warm-up bootstrap, OMP_NUM_THREADS=1",
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openfhe")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown version"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log-n", type=int, default=16)
    ap.add_argument("--levels-after", type=int, default=8)
    ap.add_argument("--slots", type=int, default=None)
    args = ap.parse_args()
    try:
        record = run(args.log_n, args.levels_after, args.slots, (3, 3))
    except ImportError as exc:
        print(json.dumps({"error": f"openfhe not importable: {exc}"}))
        return 1
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
