"""Benchmark of the encrypted CryptoFaceNet's plan: what one image costs, counted from the layers.

    python benchmarks/bench_cryptoface.py --json --input-size {64,96,128} [--model FILE]

Builds the patch groups of the model (the shipped CryptoFaceNet4 for 64; a
fused random model of the real shape for 96 and 128 when no file is given;
the counts depend only on the shape) and reports, per patch group and per
patch network: depth, key switches, distinct rotation steps (Galois keys),
plaintext diagonals, and the build time.  The encrypted run at N = 2^16, with
latency per stage, memory and the embedding error, is the next step (see
docs/cnn_packing.md, "What is left"); the toy-ring run is in
tests/cryptoface/test_protocol.py.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import emit  # noqa: E402

from cryptoface import DEFAULT_MODEL  # noqa: E402
from cryptoface.encrypted.network import build_group, group_patches  # noqa: E402
from cryptoface.model import FusedBlock, FusedPatchCNN, FusedPatchNet, load_model  # noqa: E402
from fhe_ckks import presets  # noqa: E402
from fhe_ckks.nn.layers import Residual, Sequential, SlotLinear  # noqa: E402

STAGES = ((16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1))


def random_model(input_size: int, seed: int = 0) -> FusedPatchCNN:
    """A fused CryptoFaceNet of the real shape with random weights (plan figures depend only on the shape)."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.normal(size=s) * 0.1  # noqa: E731
    nets = []
    for _ in range((input_size // 32) ** 2):
        blocks = []
        for ci, co, s in STAGES:
            conv_short = s != 1 or ci != co
            blocks.append(FusedBlock(r(ci), r(ci), r(co, ci, 3, 3), s, r(co), r(co), r(co, co, 3, 3),
                                     shortcut_scale=None if conv_short else r(ci),
                                     shortcut_weight=r(co, ci, 1, 1) if conv_short else None,
                                     shortcut_bias=r(co) if conv_short else None))
        nets.append(FusedPatchNet(r(16, 3, 3, 3), blocks, r(64), r(64), r(256, 256), r(256)))
    return FusedPatchCNN(input_size, 32, nets, name=f"random{input_size}")


def leaves(layer):
    if isinstance(layer, Sequential):
        for x in layer.layers:
            yield from leaves(x)
    elif isinstance(layer, Residual):
        yield from leaves(layer.body)
        yield from leaves(layer.shortcut)
    else:
        yield layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=64, choices=(64, 96, 128))
    ap.add_argument("--model", help="an exported .model.npz (default: shipped model for 64, random otherwise)")
    ap.add_argument("--slots", type=int, default=2**15, help="slots of the parameters (N/2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.model:
        model = load_model(args.model)
    elif args.input_size == 64 and DEFAULT_MODEL.exists():
        model = load_model(DEFAULT_MODEL)
    else:
        model = random_model(args.input_size)
    if model.input_size != args.input_size:
        raise SystemExit(f"error: {args.model} takes {model.input_size}x{model.input_size} inputs, "
                         f"not {args.input_size}")
    t0 = time.perf_counter()
    groups = [build_group(model, g) for g in group_patches(model, args.slots)]
    build_s = time.perf_counter() - t0
    g0 = groups[0]
    per_layer = []
    for layer in g0.layers:
        per_layer.append({"layer": layer.name, "depth": layer.depth(), "key_switches": layer.key_switches(),
                          "diagonals": sum(x.diagonal_count for x in leaves(layer) if isinstance(x, SlotLinear))})
    steps = set()
    for g in groups:
        steps |= set(g.rotation_steps())
    ks = sum(layer["key_switches"] for layer in per_layer)
    record = {
        "benchmark": "cryptoface_plan", "model": model.name, "input_size": model.input_size,
        "patch_networks": model.num_patches, "patch_groups": len(groups),
        "patches_per_group": [len(g.patches) for g in groups], "slots": args.slots,
        "depth_network": g0.depth(), "depth_normalise_match": 6,
        "key_switches_per_group": ks, "key_switches_per_patch_network": ks / len(g0.patches),
        "galois_keys": len(steps), "diagonals_per_group": sum(x["diagonals"] for x in per_layer),
        "build_seconds": build_s, "layers": per_layer,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "original_key_switches_per_patch_network": 2913,
    }
    emit(record, args.json)


if __name__ == "__main__":
    main()
