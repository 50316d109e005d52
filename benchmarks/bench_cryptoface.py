"""Benchmark of the encrypted CryptoFaceNet: one verification at 128-bit parameters, or its plan alone.

    python benchmarks/bench_cryptoface.py --json --input-size {64,96,128} [--model FILE] [--plan-only]
    python benchmarks/bench_cryptoface.py --json --baseline 5509a0e     # the same run at another commit, ratios

Builds the patch groups of the model (``--model``, else the shipped trained
CryptoFaceNet4/9/16 of ``--input-size``; see ``pick_model``) and reports, per patch group
and per patch network: depth, key switches, Galois keys, plaintext diagonals.

Unless ``--plan-only``, it then runs one real LFW pair of the shipped sample
through the client/server protocol at ``--preset`` (default the levelled
``N16_QP1762_L29_S38``): key generation, enrollment of the first image,
verification of the second (encryption, each layer of each patch group in
its worker process, the hint's product, the encrypted decision with its 8-slot
bootstrap and sign, decryption of the decision), and
reports the latency of each stage, key and ciphertext sizes, the peak memory
of the server's process tree (proportional set size, so pages the workers
share with the parent count once), the error of the decrypted normalized
embedding against the fused plaintext model (the benchmark holds both roles;
only it decrypts an embedding), and whether the encrypted decision equals the
plaintext one (the exact cosine rule).  On ``INSECURE_`` presets the decision's
bootstrap is the secret-key double (``decision_bootstrap`` says so).  The figures are wall-clock seconds on this machine.

``--baseline REV`` then runs this benchmark as it was at commit REV (checked out
in a temporary git worktree, run in a child process) with the same pair, preset
and workers, and adds its figures and this run's ratio to them under
``baseline``: this machine's speed drifts by tens of percent from day to day,
so a speed-up is a ratio measured in one run, never two absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import run_at_revision, emit  # noqa: E402

from harness import TreeMemory  # noqa: E402

from cryptoface import DEFAULT_SAMPLE, MODEL_BY_INPUT_SIZE, data, model_path  # noqa: E402
from cryptoface.encrypted import DEFAULT_PRESET, Server  # noqa: E402
from cryptoface.encrypted.measuring import MeasuringHarness  # noqa: E402
from cryptoface.errors import ModelError  # noqa: E402
from cryptoface.model import (  # noqa: E402
    FusedPatchCNN,
    fit_exact_thresholds,
    fit_thresholds,
    load_model,
    poly_distances,
)
from fhe_ckks import KeyGenerator, presets  # noqa: E402
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper  # noqa: E402

def pick_model(name_or_path: str | None, input_size: int) -> FusedPatchCNN:
    """The model to measure: ``--model`` (a shipped name such as ``cryptofacenet16``, or a file), else the
    shipped CryptoFaceNet of ``input_size``.  Only trained models with fitted rules are measured: a network
    of the right shape with other weights (random ones, or another model's patch networks reused) has the
    costs of the shape but no accuracy, and its activations are not those of real faces."""
    name = name_or_path or MODEL_BY_INPUT_SIZE[input_size]
    try:
        model = load_model(model_path(name))
    except ModelError as exc:
        raise SystemExit(f"error: {exc} (train and export one: docs/training.md)") from exc
    if model.input_size != input_size:
        raise SystemExit(f"error: {name} takes {model.input_size}x{model.input_size} inputs, not {input_size}")
    if "lfw" not in model.thresholds or model.thresholds["lfw"].exact_tau is None:
        raise SystemExit(f"error: {name} has no fitted 'lfw' decision rule; export it with --data "
                         "(docs/training.md)")
    return model


def sample_pairs(size: int):
    """The shipped LFW sample at ``size``: (images of the first / second faces, issame, folds)."""
    vs = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    meta = json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())
    imgs = vs.images(size)
    return imgs[0::2], imgs[1::2], vs.issame, np.array([p["fold"] for p in meta["pairs"]])


def with_sample_thresholds(model: FusedPatchCNN) -> FusedPatchCNN:
    """Fit the 1/sqrt polynomial, tau and the exact cosine rule on the shipped sample: for the tests' toy
    models, which have none (a measured model brings its own, see ``pick_model``)."""
    a, b, same, folds = sample_pairs(model.input_size)
    ea, eb = model.embed(a), model.embed(b)
    model.thresholds["lfw"] = fit_exact_thresholds(fit_thresholds(poly_distances, ea, eb, same, folds), ea, eb,
                                                   same, folds)
    return model


def encrypted_run(model: FusedPatchCNN, preset: str, pair: int, workers: int | None, backend: str = "local",
                  ray_address: str | None = None) -> dict:
    """One enrollment and one verification through the protocol, timed stage by stage, with the patch groups
    and the decision on ``backend`` (``local`` forked workers, or ``ray``: the cluster at ``ray_address``, by
    default a Ray instance started on this machine)."""
    from cryptoface.encrypted.backends import make_backend

    params = presets.get(preset, allow_insecure=preset.startswith("INSECURE_"))
    a, b, same, _ = sample_pairs(model.input_size)
    where = make_backend(backend, workers=workers, address=ray_address)
    session = MeasuringHarness(model, params, workers=workers, backend=where)
    mem = TreeMemory()
    res = session.verify_pair(a[pair], b[pair], online=mem)
    server = session.server
    group0 = server.costs()["groups"][0]
    traffic = dict(getattr(where, "traffic", {}))
    where.close()
    return {
        "preset": preset, "security": params.security, "log_qp": params.log_qp, "levels": params.max_level,
        "backend": backend, **({"ray_traffic_bytes": traffic} if traffic else {}),
        "workers": min(server.workers, len(server.public_info()["groups"])), "pair": {"index": pair, "same": bool(same[pair])},
        "seconds": {"setup": session.setup_seconds, "enrollment": res.enrollment_seconds,
                    "verification": res.verification_seconds},
        "seconds_per_layer": res.layer_seconds,
        "key_switches_per_image": res.key_switches,
        "key_switches_per_patch_network": group0["key_switches"] / len(group0["patches"]),
        "bootstraps_per_image": res.bootstraps,
        "galois_keys": len(session.key_plan), "key_bytes": session.key_bytes,
        "server_key_memory_gb": session.server_key_bytes / 1e9,
        "face_upload_bytes": res.upload_bytes, "answer_bytes": res.answer_bytes,
        "peak_memory_gb_during_verification": mem.peak_gb,
        "peak_rss_gb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "embedding_error_bits": res.embedding_error_bits,
        "outcome": res.outcome, "decision_encrypted": res.decision_encrypted,
        "decision_plaintext": res.decision_plaintext, "decisions_equal": res.agrees,
        "plaintext_threshold_minus_cosine": res.plaintext_margin, "decision_bootstrap": res.decision_bootstrap,
    }


def _verification_seconds(encrypted: dict) -> float:
    """The online verification's wall time in a record of this benchmark at any commit (older ones have no
    ``total``: their stages are summed)."""
    stages = encrypted["seconds"]["verification"]
    return float(stages["total"]) if "total" in stages else float(sum(stages.values()))


def compare_with(base: dict, record: dict) -> dict:
    """The baseline's headline figures beside this run's, and this run's ratio to each that both records
    have (a field an older commit's record lacks is left out, never an error: the run is too long to lose
    to a missing key)."""
    def ratio(mine, theirs):
        return mine / theirs if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)) and theirs \
            else None

    out: dict = {"revision": base.get("revision")}
    ratios: dict = {}
    for name in ("key_switches_per_patch_network", "diagonals_per_group", "galois_keys"):
        out[name] = base.get(name, (base.get("encrypted") or {}).get(name))
        ratios[name] = ratio(record.get(name, (record.get("encrypted") or {}).get(name)), out[name])
    if "encrypted" in base and "encrypted" in record:
        mine, theirs = record["encrypted"], base["encrypted"]
        figures = {"verification_seconds": _verification_seconds,
                   "network_seconds": lambda e: e["seconds_per_layer"]["network"],
                   "peak_memory_gb_during_verification": lambda e: e["peak_memory_gb_during_verification"],
                   "server_key_memory_gb": lambda e: e["server_key_memory_gb"]}
        for name, read in figures.items():
            try:
                out[name], here = float(read(theirs)), float(read(mine))
            except (KeyError, TypeError, ValueError):
                out[name] = here = None
            ratios[name] = ratio(here, out[name])
        out["seconds"] = theirs.get("seconds")
    out["ratio_this_run_to_baseline"] = {k: v for k, v in ratios.items() if v is not None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=64, choices=(64, 96, 128))
    ap.add_argument("--model", help="a shipped model's name or an exported .model.npz (default: the shipped "
                                    "CryptoFaceNet of --input-size)")
    ap.add_argument("--plan-only", action="store_true", help="count the plan, encrypt nothing")
    ap.add_argument("--preset", default=DEFAULT_PRESET, help="parameter preset of the encrypted run")
    ap.add_argument("--pair", type=int, default=0, help="pair of the shipped LFW sample (0-39)")
    ap.add_argument("--workers", type=int, help="processes for the patch groups (default: one per core)")
    ap.add_argument("--backend", choices=["local", "ray"], default="local", help="where the patch groups run")
    ap.add_argument("--ray-address", help="the Ray cluster to join (default: a Ray instance on this machine)")
    ap.add_argument("--baseline", metavar="REV",
                    help="also run this benchmark as it was at commit REV (a git worktree, in a child process) "
                         "right after this one, on the same pair, preset and workers, and report the ratios")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model = pick_model(args.model, args.input_size)
    params = presets.get(args.preset, allow_insecure=args.preset.startswith("INSECURE_"))
    t0 = time.perf_counter()
    testing = args.preset.startswith("INSECURE_")     # as the measuring harness: the decision's bootstrap a double
    double = SecretKeyBootstrapper(params, KeyGenerator(params).secret_key) if testing else None
    costs = Server(model, params, workers=1, testing=testing,     # the plan alone: no keys, nothing encrypted
                   decision_bootstrapper=double).costs()
    build_s = time.perf_counter() - t0
    groups, g0 = costs["groups"], costs["groups"][0]
    per_layer = [{k: layer[k] for k in ("layer", "depth", "key_switches", "diagonals")} for layer in g0["layers"]]
    record = {
        "benchmark": "cryptoface", "model": model.name, "input_size": model.input_size,
        "patch_networks": model.num_patches, "patch_groups": len(groups),
        "patches_per_group": [len(g["patches"]) for g in groups], "slots": params.slots,
        "depth_network": g0["depth"], "depth_hint_decision": costs["tail"]["depth"],
        "key_switches_per_group": g0["key_switches"],
        "key_switches_per_patch_network": g0["key_switches"] / len(g0["patches"]),
        "key_switches_hint_decision": costs["tail"]["key_switches"],
        "galois_keys_network": costs["galois_keys_network"], "galois_keys": costs["galois_keys"],
        "diagonals_per_group": g0["diagonals"], "build_seconds": build_s, "layers": per_layer,
        "original_key_switches_per_patch_network": 2913,
    }
    del costs, groups, g0
    if not args.plan_only:
        record["encrypted"] = encrypted_run(model, args.preset, args.pair, args.workers, args.backend,
                                            args.ray_address)
    if args.baseline:
        forwarded = ["--input-size", str(args.input_size), "--preset", args.preset, "--pair", str(args.pair)]
        forwarded += (["--model", args.model] if args.model else []) + (["--plan-only"] if args.plan_only else [])
        forwarded += ["--workers", str(args.workers)] if args.workers else []
        try:
            base = run_at_revision(args.baseline, "bench_cryptoface.py", forwarded)
            record["baseline"] = compare_with(base, record)
        except Exception as exc:  # noqa: BLE001 - this run's record is still printed, with the reason
            record["baseline"] = {"revision": args.baseline, "error": f"{type(exc).__name__}: {exc}"}
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emit(record, args.json)


if __name__ == "__main__":
    main()
