"""The shipped model and LFW sample: readable without torch, consistent, and useful."""

from __future__ import annotations

import json

import numpy as np

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data
from cryptoface.model import decisions, load_model


def test_shipped_model_manifest():
    model = load_model(DEFAULT_MODEL)
    assert (model.input_size, model.patch_size, model.num_patches, model.embedding_dim) == (64, 32, 4, 256)
    ev = model.info["evaluation"]["lfw"]
    assert ev["folds"] == [6, 7, 8, 9] and ev["pairs"] == 2400
    # trained on people sets 0-5 only: evaluation folds are identity-disjoint
    assert set(model.info["training"]["people_sets"]).isdisjoint(ev["folds"])
    assert ev["poly_norm_accuracy"] > 0.9
    assert model.info["activation_range"]["non_finite"] == 0
    assert sorted(model.thresholds["lfw"].per_fold) == [6, 7, 8, 9]


def test_shipped_sample_is_identity_disjoint_and_verified_in_plaintext():
    model = load_model(DEFAULT_MODEL)
    vs = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    meta = json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())
    folds = [p["fold"] for p in meta["pairs"]]
    assert len(vs) == len(meta["pairs"]) == 40 and set(folds) == {6, 7, 8, 9}
    assert [p["same"] for p in meta["pairs"]] == vs.issame.tolist()
    emb = model.embed(vs.images(model.input_size))
    assert np.isfinite(emb).all()
    acc = np.mean(decisions(model, emb[0::2], emb[1::2], "lfw", folds) == vs.issame)
    assert acc >= 0.85, f"plaintext accuracy on the shipped sample fell to {acc:.2f}"
