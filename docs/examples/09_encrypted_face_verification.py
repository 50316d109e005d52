"""Example 09: encrypt one face and verify it against an enrolled template.

Builds on 06 (client/server) and the course page docs/cnn_packing.md.  The
client owns the secret key; the server holds the exported model, the
evaluation keys its plan asks for, and an encrypted gallery.  Two real LFW
faces from the shipped sample: the first is enrolled (offline), the second is
verified against it (online).  The client sends each face with its
normalization hint; the server checks the hint under encryption, decides the
exact cosine rule, bootstraps those 8 slots and takes a composite sign.  The
client learns "same", "different" or "invalid", and nothing else.

Default: the shipped CryptoFaceNet4 at the 128-bit levelled preset
N16_QP1762_L29_S38 (keys in a minute or two, each face a few minutes on 2
cores, the two patch groups in two worker processes; ~10 GB of memory).
``--toy``: a small random CryptoFaceNet on the INSECURE toy ring
INSECURE_N12_QP1642_L29_S38 (the default chain in miniature), in seconds, with
the decision's real 8-slot bootstrap.

Run:  python docs/examples/09_encrypted_face_verification.py [--toy] [--pair 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data
from cryptoface.encrypted import DEFAULT_PRESET, Client, Server
from cryptoface.model import (
    FusedBlock,
    FusedPatchCNN,
    FusedPatchNet,
    fit_exact_thresholds,
    fit_thresholds,
    load_model,
    poly_distances,
)
from fhe_ckks import presets
from fhe_ckks.rlwe.keyplan import KeyPlan


def section(title: str) -> None:
    print(f"\n== {title} ==")


def toy_model(sample: data.VerificationSet, folds: np.ndarray) -> FusedPatchCNN:
    """A 16x16-input CryptoFaceNet with random weights and a decision rule fitted on the sample."""
    rng = np.random.default_rng(0)
    w = lambda *s, k=0.12: rng.normal(size=s) * k  # noqa: E731
    nets = [FusedPatchNet(w(2, 3, 3, 3, k=0.22), [
        FusedBlock(w(2), w(2), w(2, 2, 3, 3), 1, w(2), w(2), w(2, 2, 3, 3), shortcut_scale=rng.uniform(0.3, 0.6, 2)),
        FusedBlock(w(2), w(2), w(4, 2, 3, 3), 2, w(4), w(4), w(4, 4, 3, 3), shortcut_weight=w(4, 2, 1, 1),
                   shortcut_bias=w(4))], w(4), w(4), w(8, 16, k=0.5), w(8, k=0.1)) for _ in range(4)]
    model = FusedPatchCNN(16, 8, nets, name="toy")
    e = model.embed(sample.images(16))
    model.thresholds["lfw"] = fit_exact_thresholds(
        fit_thresholds(poly_distances, e[0::2], e[1::2], sample.issame, folds), e[0::2], e[1::2], sample.issame, folds)
    return model


def main(toy: bool, pair: int) -> None:
    sample = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    meta = json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())["pairs"]
    folds = np.array([p["fold"] for p in meta])
    model = toy_model(sample, folds) if toy else load_model(DEFAULT_MODEL)
    params = presets.get("INSECURE_N12_QP1642_L29_S38" if toy else DEFAULT_PRESET, allow_insecure=toy)
    first, second = sample.pair(pair, model.input_size)
    names = [f"{meta[pair][k][0]} #{meta[pair][k][1]}" for k in ("first", "second")]

    section("1. Server: model and plan (no keys yet)")
    t0 = time.perf_counter()
    client = Client(params, model)           # the key holder; the model file is public
    server = Server(model, params)           # public keys only, here too
    plan = server.key_plan()
    costs = server.costs()
    print(f"{model.name}: {model.num_patches} patch networks in {len(costs['groups'])} ciphertext(s) of "
          f"{params.slots} slots; {costs['groups'][0]['key_switches']} key switches and depth "
          f"{costs['groups'][0]['depth']} per group; asks for {len(plan)} Galois keys "
          f"({time.perf_counter() - t0:.1f} s)")

    section("2. Client: keys for exactly that plan")
    t0 = time.perf_counter()
    keys = client.evaluation_keys(KeyPlan.from_json(plan.to_json()))     # it crosses the wire as JSON
    print(f"{sum(len(v) for v in keys.values()) / 1e9:.2f} GB of evaluation keys "
          f"({time.perf_counter() - t0:.1f} s); the secret key stays here")
    server.install_keys(keys)

    section("3. Enrollment (offline): the template stays encrypted on the server")
    t0 = time.perf_counter()
    server.enroll("template", client.encrypt_face(first, server.public_info()))
    print(f"enrolled {names[0]} ({time.perf_counter() - t0:.1f} s)")

    section("4. Verification (online)")
    t0 = time.perf_counter()
    probe = client.encrypt_face(second, server.public_info())
    answer = server.verify(probe, "template")
    outcome = client.outcome(answer).kind          # client.decide(answer) gives True / False, raising on invalid
    print(f"probe {names[1]}: {sum(len(c) for c in probe) / 1e6:.1f} MB up, {len(answer) / 1e6:.2f} MB down, "
          f"{server.stats.key_switches} key switches, {server.stats.bootstraps} bootstrap, "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"client learns: {outcome}  (truth: {'same' if meta[pair]['same'] else 'different'})")

    section("5. The same decision in plaintext (the fused numpy model)")
    e = model.embed(np.stack([second, first]))
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos, c = float(u[0] @ u[1]), server.cos_threshold
    want = "same" if cos >= c else "different"
    print(f"plaintext cosine {cos:.4f} vs threshold {c:.4f}: {want}; encrypted decision "
          f"{'equals' if want == outcome else 'DIFFERS FROM'} it")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true", help="INSECURE toy ring and a toy model (seconds)")
    ap.add_argument("--pair", type=int, default=0, help="pair of the shipped LFW sample (0-39)")
    args = ap.parse_args()
    main(args.toy, args.pair)
