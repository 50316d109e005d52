"""Example 08: from a PyTorch CryptoFaceNet to the polynomial network the encrypted side runs.

1. Build a CryptoFaceNet4 (one backbone per 32x32 patch of a 64x64 face) and
   give its batch norms statistics like a trained model's (or load a
   checkpoint with --checkpoint).
2. Look at one HerPN: in evaluation mode it is the quadratic a2 x^2 + a1 x + a0.
3. Fuse: every HerPN becomes the monic x^2 + a1' x + a0' with a2 folded into the
   next linear operation, and BN + linear become one affine map per patch.
   Check the fused float64 network against the torch one, in bits.
4. Export to a .model.npz, read it back with numpy alone, and print its manifest.
5. If the shipped model and LFW sample exist, show their recorded accuracy.

Run:  python docs/examples/08_train_fuse_export.py [--toy] [--checkpoint CKPT]      (docs/training.md)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from cryptoface.model import NormPolynomial, load_model, save_model
from cryptoface.training.checkpoint import load_checkpoint
from cryptoface.training.fusion import fuse, herpn_coefficients
from cryptoface.training.models import trained_looking_model

SHIPPED = Path(__file__).resolve().parents[2] / "cryptoface" / "assets" / "cryptofacenet4.model.npz"


def section(title: str) -> None:
    print(f"\n== {title} ==")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="a smaller batch (the same steps)")
    parser.add_argument("--checkpoint", help="a checkpoint of ours or of the original repository")
    args = parser.parse_args()

    section("1. the model")
    model = load_checkpoint(args.checkpoint).double() if args.checkpoint else trained_looking_model(64)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("jigsaw"))
    print(f"CryptoFaceNet{model.num_patches}: input {model.input_size}x{model.input_size}, "
          f"{model.num_patches} patch networks, {params / 1e6:.2f} M parameters")

    section("2. a HerPN is a quadratic")
    state = model.state_dict()
    a2, a1, a0 = herpn_coefficients(state, "nets.0.layers.0.herpn1")
    print("channel 0 of nets.0.layers.0.herpn1: "
          f"{a2[0]:+.4f} x^2 {a1[0]:+.4f} x {a0[0]:+.4f}")

    section("3. fuse, and compare with torch in float64")
    fused = fuse(state, model.input_size, name="example")
    x = torch.rand(2 if args.toy else 8, 3, model.input_size, model.input_size, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        want = model.embed(x).numpy()
    got = fused.embed(x.numpy())
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    print(f"max relative difference {err:.2e} = {-math.log2(err):.1f} bits of agreement")
    block = fused.nets[0].blocks[1]
    print(f"block 1 of patch 0: conv1 {block.weight1.shape} stride {block.stride}, shortcut 1x1 conv "
          f"{block.shortcut_weight.shape} with BN folded; head {fused.nets[0].head_weight.shape}")

    section("4. export and read back with numpy alone")
    emb = fused.embed(x.numpy())
    fused.norm = NormPolynomial.fit(np.sum(emb ** 2, axis=1).repeat(4) * np.linspace(0.8, 1.2, 4 * len(emb)))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(fused, Path(tmp) / "example.model.npz")
        with np.load(path, allow_pickle=False) as f:
            manifest = json.loads(f["__manifest__"].tobytes())
            print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, {len(f.files) - 1} tensors")
        print("topology:", json.dumps(manifest["schema"]["topology"]["blocks"][:2]))
        print("1/sqrt polynomial (ascending):", [f"{c:.3e}" for c in manifest["schema"]["norm"]["coefficients"]])
        back = load_model(path)
        assert np.array_equal(back.embed(x.numpy()), got)
        print("reloaded model gives identical embeddings")

    section("5. the shipped model")
    if SHIPPED.exists():
        shipped = load_model(SHIPPED)
        ev = shipped.info.get("evaluation", {}).get("lfw", {})
        print(f"{SHIPPED.name}: input {shipped.input_size}, trained on {shipped.info.get('training')}")
        if ev:
            print(f"LFW folds {ev['folds']} ({ev['pairs']} identity-disjoint pairs): "
                  f"{100 * ev['fused_accuracy']:.2f}% exact norm, {100 * ev['poly_norm_accuracy']:.2f}% "
                  "with the polynomial 1/sqrt")
    else:
        print("no shipped model in this checkout")


if __name__ == "__main__":
    main()
