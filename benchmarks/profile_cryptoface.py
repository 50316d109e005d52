"""Where an encrypted CryptoFaceNet's time goes: one face's patch groups, stage by stage.

    python benchmarks/profile_cryptoface.py --json [--input-size 64] [--preset N16_QP1762_L29_S38]

Runs the server side of one embedding at ``--preset`` in this process on one
thread (the patch groups one after the other, so that every kernel call is
seen here), after one untimed embedding of another face (the enrollment: the
JIT and first-touch warm-up), and reports the wall time spent in each stage
of the primitives, summed over the groups, with its call count and share:

* key switching: ModUp (``KeySwitcher.decompose``), the inner product and
  ModDown (``KeySwitcher.apply`` minus its ModDowns);
* the plaintext diagonals' encoding (``Encoder.encode_compact``) and the
  plaintext dot products (``PlainDot.result``);
* the rest of the evaluator (rescale, add, square, relinearize, ...).

The stages are timed by wrapping those methods (a profiler of the benchmark,
not of the library: nothing is wrapped outside this script).  Figures are wall-clock seconds on this
machine; compare runs only in ratios measured the same day.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import emit  # noqa: E402

from cryptoface import DEFAULT_MODEL  # noqa: E402
from cryptoface.encrypted import DEFAULT_PRESET  # noqa: E402
from cryptoface.encrypted.protocol import Client, Server, Stats  # noqa: E402
from cryptoface.model import load_model  # noqa: E402
from fhe_ckks import presets  # noqa: E402
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper  # noqa: E402
from fhe_ckks.ckks import dot as dot_module  # noqa: E402
from fhe_ckks.ckks import encoder as encoder_module  # noqa: E402
from fhe_ckks.ckks import evaluator as evaluator_module  # noqa: E402
from fhe_ckks.rlwe import keyswitch as keyswitch_module  # noqa: E402

#: (owner, attribute, stage) of every wrapped method; times are exclusive, so "key switch: inner product"
#: (``KeySwitcher.apply``) is the apply without its two ModDowns.
STAGES = [
    (keyswitch_module.KeySwitcher, "decompose", "key switch: ModUp"),
    (keyswitch_module.KeySwitcher, "apply", "key switch: inner product"),
    (keyswitch_module.KeySwitcher, "_mod_down", "key switch: ModDown"),
    (encoder_module.Encoder, "encode_compact", "diagonals: encoding"),
    (dot_module.PlainDot, "result", "diagonals: plaintext dot products"),
    (evaluator_module, "automorphism_ntt", "automorphism of c0"),
] + [(evaluator_module.Evaluator, name, f"evaluator: {name}")
     for name in ("rescale", "add", "square", "relinearize", "mul", "mul_plain", "mul_const", "bring_to")]


class StageTimer:
    """Wraps the methods of :data:`STAGES` to sum their *exclusive* wall time and calls (a stage called
    inside another, ModDown inside a key switch's apply or a relinearization inside a product, counts
    once, in the innermost stage); :meth:`restore` undoes the wrapping."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self._saved: list[tuple[object, str, Callable]] = []
        self._stack: list[float] = []          # time spent in the callees of each active stage
        self.enabled = False
        for owner, name, stage in STAGES:
            self._wrap(owner, name, stage)

    def _wrap(self, owner, name: str, stage: str) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))

        def timed(*args, **kwargs):
            if not self.enabled:
                return original(*args, **kwargs)
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                inner = self._stack.pop()
                self.seconds[stage] += elapsed - inner
                self.calls[stage] += 1
                if self._stack:
                    self._stack[-1] += elapsed

        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def table(self, total: float) -> list[dict]:
        """One row per stage, the largest first, and "other" for what no stage covers."""
        sec = dict(self.seconds)
        sec["other"] = total - sum(sec.values())
        return [{"stage": k, "seconds": round(v, 3), "calls": self.calls.get(k, 0), "share": round(v / total, 4)}
                for k, v in sorted(sec.items(), key=lambda kv: -kv[1])]


def profile(model, preset: str) -> dict:
    """Enroll one face (untimed warm-up), then embed another with every stage timed."""
    from bench_cryptoface import sample_pairs

    testing = preset.startswith("INSECURE_")
    params = presets.get(preset, allow_insecure=testing)
    client = Client(params, model)
    double = SecretKeyBootstrapper(params, client.secret_key) if testing else None
    server = Server(model, params, workers=1, testing=testing, decision_bootstrapper=double)
    server.install_keys(client.evaluation_keys(server.key_plan()))
    first, second, _, _ = sample_pairs(model.input_size)
    info = server.public_info()
    server.embed(client.encrypt_face(first[0], info), Stats())          # warm-up
    probe = client.encrypt_face(second[0], info)
    timer = StageTimer()
    try:
        stats = Stats()
        timer.enabled = True
        t0 = time.perf_counter()
        server.embed(probe, stats)
        total = time.perf_counter() - t0
        timer.enabled = False
    finally:
        timer.restore()
    return {"preset": preset, "groups": len(server.groups), "threads": 1, "seconds": total,
            "key_switches": stats.key_switches, "stages": timer.table(total),
            "seconds_per_layer": dict(stats.seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=64, choices=(64,))
    ap.add_argument("--model", help="an exported .model.npz (default: the shipped CryptoFaceNet4)")
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = load_model(args.model or DEFAULT_MODEL)
    record = {"benchmark": "profile_cryptoface", "model": model.name, **profile(model, args.preset)}
    emit(record, args.json)


if __name__ == "__main__":
    main()
