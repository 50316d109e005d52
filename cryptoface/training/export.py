"""Export: checkpoint -> fused ``<name>.model.npz`` with the 1/sqrt polynomial and thresholds.

The file is written by :func:`cryptoface.model.save_model` (numpy side, one
format).  When verification data is given, the embeddings of its pairs are
computed with the fused float64 model, and for each fold the exact cosine rule's
threshold (what the encrypted server decides), the quadratic ``p(y) ~ 1/sqrt(y)``
and the threshold on ``||x p(|x|^2) - y p(|y|^2)||^2`` are fitted on the other
folds (plus one fit on all of them); the quality floor (``info["quality"]``) is
taken from the same embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import data as facedata
from ..errors import ModelError
from ..model import FusedPatchCNN, embedding_quality, fit_exact_thresholds, fit_thresholds, poly_distances, save_model
from ..verification import kfold_accuracy, pairs_in_folds, squared_distances
from .checkpoint import backbone_state, input_size_of
from .fusion import fuse

log = logging.getLogger(__name__)


def fused_embeddings(model: FusedPatchCNN, vs: facedata.VerificationSet, pairs, batch: int = 64) -> np.ndarray:
    pairs = list(pairs)
    out = [model.embed(vs.images(model.input_size, pairs[i:i + batch // 2])) for i in range(0, len(pairs), batch // 2)]
    return np.concatenate(out)


def squared_norms_of_faces(model: FusedPatchCNN, roots: Sequence[str | Path], count: int, seed: int = 0,
                           batch: int = 64) -> np.ndarray:
    """Squared embedding norms of up to ``count`` faces drawn from each ImageFolder in ``roots`` (one image per
    identity first, then more): the range of real faces the 1/sqrt polynomial must cover beyond the fitting
    pairs."""
    rng = np.random.default_rng(seed)
    out = []
    for root in roots:
        images = facedata.image_folder(root)
        order = rng.permutation(len(images))
        first = {}
        for i in order.tolist():
            first.setdefault(int(images.labels[i]), i)
        chosen = set(first.values())
        picked = (list(first.values()) + [i for i in order.tolist() if i not in chosen])[:count]
        for k in range(0, len(picked), batch):
            faces = [facedata.check_aligned(facedata.read_image(images.paths[i]), str(images.paths[i]))
                     for i in picked[k:k + batch]]
            out.append(np.sum(model.embed(facedata.preprocess(faces, model.input_size)) ** 2, axis=1))
        log.info("%s: %d faces for the 1/sqrt range", root, len(picked))
    return np.concatenate(out) if out else np.empty(0)


def attach_thresholds(model: FusedPatchCNN, sets: dict[str, facedata.VerificationSet],
                      folds: Sequence[int] | None, all_folds: Sequence[str] = (),
                      extra_norms: np.ndarray | None = None, trim: float = 0.0) -> dict:
    """Fit every set's rules (on ``folds``, or on all folds for the sets named in ``all_folds``); each 1/sqrt
    polynomial is fitted on its fold's fitting faces plus ``extra_norms`` (other faces' squared norms), with the
    top ``trim`` dropped."""
    report, every = {}, []
    for name, vs in sets.items():
        pairs = pairs_in_folds(vs.folds, None if name in all_folds else folds)
        emb = fused_embeddings(model, vs, pairs)
        e1, e2, same, fo = emb[0::2], emb[1::2], vs.issame[pairs], vs.folds[pairs]
        th = fit_exact_thresholds(fit_thresholds(poly_distances, e1, e2, same, fo, extra_norms=extra_norms,
                                                 trim=trim), e1, e2, same, fo)
        model.thresholds[name] = th
        every.append(emb)
        exact = kfold_accuracy(squared_distances(e1, e2), same, fo)
        y = np.sum(emb ** 2, axis=1)
        outside = float(np.mean((y < th.norm.lo) | (y > th.norm.hi)))
        report[name] = {"pairs": len(pairs), "folds": sorted(set(fo.tolist())), "fused_accuracy": exact.accuracy,
                        "poly_norm_accuracy": th.accuracy, "exact_rule_accuracy": th.exact_accuracy,
                        "norm_range": [th.norm.lo, th.norm.hi], "faces_outside_norm_range": outside}
        log.info("%s: fused %.4f, with polynomial 1/sqrt %.4f over %d pairs; 1/sqrt range [%.4g, %.4g] (%.2f %% of "
                 "the faces outside)", name, exact.accuracy, th.accuracy, len(pairs), th.norm.lo, th.norm.hi,
                 100 * outside)
    if sets:
        model.norm = next(iter(model.thresholds.values())).norm
        model.info["quality"] = embedding_quality(np.concatenate(every))
    return report


def export_checkpoint(checkpoint: str | Path, output: str | Path, data_dir: str | Path | None = None,
                      datasets: Sequence[str] = ("lfw",), folds: Sequence[int] | None = None,
                      name: str | None = None, min_abs_a2: float = 1e-6,
                      extra_sets: dict[str, facedata.VerificationSet] | None = None,
                      norm_faces: Sequence[str | Path] = (), norm_faces_count: int = 2000,
                      norm_trim: float = 0.0) -> Path:
    """Fuse ``checkpoint`` and write it with its rules fitted on ``data_dir`` (its ``folds``) and on each of
    ``extra_sets`` (all folds; e.g. the held-out people of a training folder, to record how the model does on
    faces of another set).  ``norm_faces`` (ImageFolder roots, ``norm_faces_count`` faces each) widen the
    1/sqrt polynomial's range to faces beyond the fitting pairs."""
    obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = obj.get("config") if isinstance(obj, dict) else None
    arch = ((cfg.get("model") or {}).get("arch") if isinstance(cfg, dict) else None) or "cryptofacenet"
    if arch != "cryptofacenet":
        return _export_baseline(obj, arch, checkpoint, output, name, data_dir, datasets, folds, extra_sets,
                                norm_faces, norm_faces_count, norm_trim)
    state = backbone_state(obj)
    output = Path(output)
    name = name or output.name.split(".")[0]
    model = fuse(state, input_size_of(state), min_abs_a2=min_abs_a2, name=name)
    _record_provenance(model.info, obj, checkpoint)
    if data_dir:
        sets = facedata.load_verification_dir(data_dir, datasets)
        _fit_rules(model, sets, extra_sets, folds, norm_faces, norm_faces_count, norm_trim)
        model.info["activation_range"] = activation_range(state, sets, folds)
    return save_model(model, output)


def _fit_rules(model, sets, extra_sets, folds, norm_faces, norm_faces_count: int, norm_trim: float) -> None:
    """The decision rules of every set (``extra_sets`` on all their folds), the 1/sqrt range widened by
    ``norm_faces``, recorded in ``model.info``: CryptoFaceNet's export and the baselines' share it."""
    extra = dict(extra_sets or {})
    clash = set(extra) & set(sets)
    if clash:
        raise ModelError(f"datasets named twice: {sorted(clash)}")
    extra_norms = squared_norms_of_faces(model, norm_faces, norm_faces_count) if norm_faces else None
    if extra_norms is not None:
        model.info["norm_faces"] = {"folders": [Path(str(r)).name for r in norm_faces],
                                    "faces": int(extra_norms.size), "trim": norm_trim}
    model.info["evaluation"] = attach_thresholds(model, sets | extra, folds, all_folds=tuple(extra),
                                                 extra_norms=extra_norms, trim=norm_trim)


def _record_provenance(info: dict, obj, checkpoint) -> None:
    info["source"] = {"checkpoint": Path(checkpoint).name, "epoch": obj.get("epoch") if isinstance(obj, dict) else None}
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        d = obj["config"].get("data", {})
        info["training"] = {"loss": obj["config"].get("loss", {}).get("kind"),
                            "people_sets": d.get("people_sets"), "epochs": obj.get("epoch")}
        if isinstance(d.get("train"), list):
            info["training"]["sources"] = [str(x) if not isinstance(x, dict) else
                                           {k: x[k] for k in ("people_sets", "holdout") if k in x}
                                           | {"folder": Path(str(x.get("path"))).name} for x in d["train"]]


def _value_range(p: np.ndarray) -> dict:
    return {"images": int(p.size), "median": float(np.median(p)), "p999": float(np.percentile(p, 99.9)),
            "max": float(np.max(p)), "non_finite": int(np.sum(~np.isfinite(p)))}


def _export_baseline(obj: dict, arch: str, checkpoint, output, name, data_dir, datasets, folds, extra_sets,
                     norm_faces, norm_faces_count, norm_trim) -> Path:
    """A ResNet baseline's export (issue #16): fused, MPCNN's ReLU bound B from the largest ReLU input of the
    fitting faces (times :data:`cryptoface.baselines.RELU_BOUND_SLACK`), then the same decision rules as
    CryptoFaceNet's, fitted on the embeddings of the encrypted network's plaintext twin."""
    from ..baselines import relu_bound, save_baseline
    from .fusion import fuse_resnet

    output = Path(output)
    activation = (obj["config"]["model"].get("activation") or "relu")
    try:
        model = fuse_resnet(obj["backbone"], int(arch[len("resnet"):]), activation,
                            name=name or output.name.split(".")[0])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{checkpoint}: not a {arch} checkpoint ({exc})") from exc
    _record_provenance(model.info, obj, checkpoint)
    if data_dir:
        sets = facedata.load_verification_dir(data_dir, datasets)
        chunks = [(vs, chunk) for vs in sets.values()
                  for chunk in np.array_split(pairs_in_folds(vs.folds, folds),
                                              max(1, len(pairs_in_folds(vs.folds, folds)) // 64))]
        p = np.concatenate([model.activation_peaks(vs.images(model.input_size, c)) for vs, c in chunks])
        model.info["activation_range"] = _value_range(p)
        if model.variant == "mpcnn":
            model.relu_bound = relu_bound(p[np.isfinite(p)])
            log.info("ReLU bound B = %.4g (largest ReLU input %.4g)", model.relu_bound, float(np.max(p)))
        # the largest value the encrypted chain carries (in its units): AutoFHE's bootstrap bound comes from it
        model.info["value_range"] = _value_range(
            np.concatenate([model.value_peaks(vs.images(model.input_size, c)) for vs, c in chunks]))
        _fit_rules(model, sets, extra_sets, folds, norm_faces, norm_faces_count, norm_trim)
    return save_baseline(model, output)


def activation_range(state: dict, sets: dict[str, facedata.VerificationSet], folds) -> dict:
    """Largest |HerPN input| per image over the fitting pairs: the range the encrypted side must hold."""
    from .checkpoint import input_size_of
    from .models import build_model
    from .train import herpn_input_maxima

    net = build_model(input_size_of(state))
    net.load_state_dict(state)
    peaks = []
    for vs in sets.values():
        pairs = pairs_in_folds(vs.folds, folds)
        for chunk in np.array_split(pairs, max(1, len(pairs) // 64)):
            peaks.append(herpn_input_maxima(net, torch.from_numpy(vs.images(net.input_size, chunk))))
    p = np.concatenate(peaks)
    p = p[np.isfinite(p)] if np.isfinite(p).any() else np.array([np.inf])
    return {"images": int(sum(len(x) for x in peaks)), "median": float(np.median(p)),
            "p999": float(np.percentile(p, 99.9)), "max": float(np.max(p)),
            "non_finite": int(sum(int(np.sum(~np.isfinite(x))) for x in peaks))}
