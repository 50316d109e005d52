"""The fused CryptoFaceNet on the numpy side: the exported model file and its float64 twin.

``python -m cryptoface.training export`` writes ``<name>.model.npz`` through
:func:`save_model`; the encrypted side reads it with :func:`load_model`,
never importing torch.  What is stored (PyTorch layouts, float64):

per patch network ``p{i}``

* ``p{i}.conv0.weight`` (16, 3, 3, 3): the first convolution;
* for each block ``b{j}``: ``a1, a0`` (C_in,) of the first fused HerPN
  ``x^2 + a1 x + a0``; ``weight1`` (C_out, C_in, 3, 3), the first conv with
  the HerPN's ``a2`` folded into its input channels; ``b1, b0`` (C_out,) and
  ``weight2`` (C_out, C_out, 3, 3) likewise; the shortcut as either
  ``shortcut.scale`` (C_in,) (identity blocks: ``a2 * h``) or
  ``shortcut.weight`` (C_out, C_in, 1, 1) + ``shortcut.bias`` (C_out,)
  (down-sampling blocks: ``a2`` and the shortcut's batch norm folded in);
* ``pool.a1, pool.a0`` (64,): the last HerPN, before 2x2 average pooling;
* ``head.weight`` (256, 256), ``head.bias`` (256,): pooling's ``a2``, the
  backbone's BatchNorm1d, this patch's slice of the final linear layer and the
  final BatchNorm1d folded into one affine map of the flattened
  ``(64, 2, 2)`` pooled features (index ``4 c + s``).

The embedding is the sum of the patch networks' outputs.  The manifest also
holds the input specification, the quadratic approximation of
``1/sqrt(||x||^2)`` used for encrypted L2 normalization, and verification
thresholds per dataset and fold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fhe_ckks.errors import SerializationError
from fhe_ckks.nn.plain import avg_pool, conv2d, quadratic
from fhe_ckks.nn.modelfile import read_model_file, write_model_file

from .errors import ModelError

SCHEMA = "cryptoface.model"
SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- the fused network


@dataclass
class FusedBlock:
    a1: np.ndarray
    a0: np.ndarray
    weight1: np.ndarray
    stride: int
    b1: np.ndarray
    b0: np.ndarray
    weight2: np.ndarray
    shortcut_scale: np.ndarray | None = None
    shortcut_weight: np.ndarray | None = None
    shortcut_bias: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        h = quadratic(x, self.a1, self.a0)
        out = quadratic(conv2d(h, self.weight1, self.stride), self.b1, self.b0)
        out = conv2d(out, self.weight2)
        if self.shortcut_weight is not None:
            short = conv2d(h, self.shortcut_weight, self.stride, 0) + self.shortcut_bias.reshape(1, -1, 1, 1)
        else:
            short = h * self.shortcut_scale.reshape(1, -1, 1, 1)
        return out + short


@dataclass
class FusedPatchNet:
    conv0: np.ndarray
    blocks: list[FusedBlock]
    pool_a1: np.ndarray
    pool_a0: np.ndarray
    head_weight: np.ndarray
    head_bias: np.ndarray
    pool_output: tuple[int, int] = (2, 2)

    def trunk(self, x: np.ndarray) -> np.ndarray:
        """Everything before the HerPN of the pooling stage: ``(B, 3, 32, 32)`` -> ``(B, 64, 8, 8)``."""
        out = conv2d(x, self.conv0)
        for block in self.blocks:
            out = block.forward(out)
        return out

    def head(self, trunk_out: np.ndarray) -> np.ndarray:
        pooled = avg_pool(quadratic(trunk_out, self.pool_a1, self.pool_a0), self.pool_output)
        return pooled.reshape(pooled.shape[0], -1) @ self.head_weight.T + self.head_bias

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.head(self.trunk(x))


@dataclass
class NormPolynomial:
    """``p(y) ~ 1/sqrt(y)`` on ``[lo, hi]``; coefficients in ascending powers of ``y``."""

    coefficients: list[float]
    lo: float
    hi: float
    max_relative_error: float = float("nan")

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return np.polynomial.polynomial.polyval(y, self.coefficients)

    def normalize(self, emb: np.ndarray) -> np.ndarray:
        y = np.sum(np.asarray(emb, dtype=np.float64) ** 2, axis=-1, keepdims=True)
        return emb * self(y)

    def as_dict(self) -> dict:
        return {"kind": "inverse_sqrt_polynomial", "coefficients": [float(c) for c in self.coefficients],
                "lo": float(self.lo), "hi": float(self.hi), "max_relative_error": float(self.max_relative_error)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NormPolynomial":
        return cls([float(c) for c in d["coefficients"]], float(d["lo"]), float(d["hi"]),
                   float(d.get("max_relative_error", float("nan"))))

    @classmethod
    def fit(cls, squared_norms: np.ndarray, degree: int = 2, trim: float = 0.01) -> "NormPolynomial":
        """Least squares on the relative error ``sqrt(y) p(y) - 1`` over the observed ``y`` (top ``trim`` dropped).

        The original interpolates 1/sqrt through three points (mean and
        mean +- std); minimizing the relative error over the data is what
        matters for distances between normalized embeddings.
        """
        y = np.asarray(squared_norms, dtype=np.float64)
        y = np.sort(y[np.isfinite(y) & (y > 0)])
        if y.size < degree + 1:
            raise ModelError(f"need at least {degree + 1} finite squared norms to fit 1/sqrt, got {y.size}")
        y = y[: max(degree + 1, int(np.floor(y.size * (1 - trim))))]
        m = float(np.mean(y))
        u = y / m
        design = np.sqrt(y)[:, None] * np.vander(u, degree + 1, increasing=True)
        q, *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
        coeffs = [float(q[k] / m**k) for k in range(degree + 1)]
        poly = cls(coeffs, float(y[0]), float(y[-1]))
        poly.max_relative_error = float(np.max(np.abs(np.sqrt(y) * poly(y) - 1)))
        return poly


@dataclass
class Threshold:
    """Decision rule ``||p(x) - p(y)||^2 < tau`` (polynomially normalized embeddings) for one dataset."""

    tau: float
    norm: NormPolynomial
    per_fold: dict[int, tuple[float, NormPolynomial]] = field(default_factory=dict)
    accuracy: float = float("nan")

    def for_fold(self, fold: int | None) -> tuple[float, NormPolynomial]:
        if fold is not None and fold in self.per_fold:
            return self.per_fold[fold]
        return self.tau, self.norm

    def as_dict(self) -> dict:
        return {"tau": self.tau, "norm": self.norm.as_dict(), "accuracy": self.accuracy,
                "per_fold": {str(k): {"tau": t, "norm": n.as_dict()} for k, (t, n) in self.per_fold.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Threshold":
        per_fold = {int(k): (float(v["tau"]), NormPolynomial.from_dict(v["norm"]))
                    for k, v in d.get("per_fold", {}).items()}
        return cls(float(d["tau"]), NormPolynomial.from_dict(d["norm"]), per_fold, float(d.get("accuracy", "nan")))


@dataclass
class FusedPatchCNN:
    """The whole fused model: one :class:`FusedPatchNet` per patch, embeddings summed."""

    input_size: int
    patch_size: int
    nets: list[FusedPatchNet]
    norm: NormPolynomial | None = None
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    name: str = "model"

    @property
    def grid(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return len(self.nets)

    @property
    def embedding_dim(self) -> int:
        return self.nets[0].head_weight.shape[0]

    def check_input(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float64)
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ModelError(f"model {self.name} takes (B, 3, {self.input_size}, {self.input_size}) images, "
                             f"got {tuple(x.shape)}")
        return x

    def patches(self, images: np.ndarray) -> np.ndarray:
        from .data import split_patches

        return split_patches(self.check_input(images), self.patch_size)

    def patch_outputs(self, images: np.ndarray) -> np.ndarray:
        """``(P, B, 256)``: each patch network's contribution."""
        return np.stack([net.forward(p) for net, p in zip(self.nets, self.patches(images))])

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.patch_outputs(images).sum(axis=0)


# --------------------------------------------------------------------------- file format


def _block_tensors(prefix: str, b: FusedBlock) -> dict[str, np.ndarray]:
    out = {f"{prefix}.a1": b.a1, f"{prefix}.a0": b.a0, f"{prefix}.weight1": b.weight1, f"{prefix}.b1": b.b1,
           f"{prefix}.b0": b.b0, f"{prefix}.weight2": b.weight2}
    if b.shortcut_weight is not None:
        out[f"{prefix}.shortcut.weight"] = b.shortcut_weight
        out[f"{prefix}.shortcut.bias"] = b.shortcut_bias
    else:
        out[f"{prefix}.shortcut.scale"] = b.shortcut_scale
    return out


def save_model(model: FusedPatchCNN, path: str | os.PathLike) -> Path:
    tensors: dict[str, np.ndarray] = {}
    blocks = []
    for i, net in enumerate(model.nets):
        tensors[f"p{i}.conv0.weight"] = net.conv0
        for j, b in enumerate(net.blocks):
            tensors.update(_block_tensors(f"p{i}.b{j}", b))
            if i == 0:
                blocks.append({"in": int(b.weight1.shape[1]), "out": int(b.weight1.shape[0]), "stride": int(b.stride),
                               "shortcut": "conv" if b.shortcut_weight is not None else "scale"})
        tensors.update({f"p{i}.pool.a1": net.pool_a1, f"p{i}.pool.a0": net.pool_a0,
                        f"p{i}.head.weight": net.head_weight, f"p{i}.head.bias": net.head_bias})
    tensors = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    schema = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": model.name,
        "input": {"size": model.input_size, "channels": 3, "color": "RGB", "layout": "CHW",
                  "alignment": "ArcFace 5-point template, 112x112, resized (antialiased) to size",
                  "normalisation": "(x/255 - 0.5)/0.5", "range": [-1.0, 1.0]},
        "topology": {"arch": "cryptofacenet", "patch_size": model.patch_size, "num_patches": model.num_patches,
                     "grid": model.grid, "conv0": {"in": 3, "out": int(model.nets[0].conv0.shape[0])},
                     "blocks": blocks, "pool_output": list(model.nets[0].pool_output),
                     "embedding_dim": model.embedding_dim},
        "norm": None if model.norm is None else model.norm.as_dict(),
        "thresholds": {k: v.as_dict() for k, v in model.thresholds.items()},
        "info": model.info,
    }
    return write_model_file(path, schema, tensors)


def load_model(path: str | os.PathLike) -> FusedPatchCNN:
    """Read a ``.model.npz``; a damaged or foreign file raises :class:`ModelError` naming it."""
    try:
        mf = read_model_file(path)
    except SerializationError as exc:
        raise ModelError(str(exc)) from exc
    s = mf.schema
    if s.get("schema") != SCHEMA:
        raise ModelError(f"{path}: not a CryptoFace model file (schema {s.get('schema')!r})")
    if s.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(f"{path}: model schema version {s.get('schema_version')!r}, this code reads {SCHEMA_VERSION}")
    try:
        topo = s["topology"]
        t = mf.tensors
        nets = []
        for i in range(int(topo["num_patches"])):
            blocks = []
            for j, spec in enumerate(topo["blocks"]):
                pre = f"p{i}.b{j}"
                conv_short = spec["shortcut"] == "conv"
                blocks.append(FusedBlock(
                    t[f"{pre}.a1"], t[f"{pre}.a0"], t[f"{pre}.weight1"], int(spec["stride"]), t[f"{pre}.b1"],
                    t[f"{pre}.b0"], t[f"{pre}.weight2"],
                    shortcut_scale=None if conv_short else t[f"{pre}.shortcut.scale"],
                    shortcut_weight=t[f"{pre}.shortcut.weight"] if conv_short else None,
                    shortcut_bias=t[f"{pre}.shortcut.bias"] if conv_short else None))
            nets.append(FusedPatchNet(t[f"p{i}.conv0.weight"], blocks, t[f"p{i}.pool.a1"], t[f"p{i}.pool.a0"],
                                      t[f"p{i}.head.weight"], t[f"p{i}.head.bias"], tuple(topo["pool_output"])))
        model = FusedPatchCNN(int(s["input"]["size"]), int(topo["patch_size"]), nets,
                              None if s.get("norm") is None else NormPolynomial.from_dict(s["norm"]),
                              {k: Threshold.from_dict(v) for k, v in s.get("thresholds", {}).items()},
                              s.get("info", {}), s.get("name", Path(path).name))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: model file is incomplete ({exc!r})") from exc
    if model.grid * model.grid != model.num_patches or model.grid * model.patch_size != model.input_size:
        raise ModelError(f"{path}: {model.num_patches} patches do not tile a {model.input_size} input")
    return model


def fit_thresholds(distance_fn, emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray, folds: np.ndarray,
                   degree: int = 2) -> Threshold:
    """Fit, for each fold, the 1/sqrt polynomial and tau on the other folds; and both on all folds.

    ``distance_fn(p, a, b)`` gives squared distances of ``a`` and ``b`` normalized with polynomial ``p``.
    """
    from .verification import best_threshold

    def fit(mask):
        poly = NormPolynomial.fit(np.concatenate([np.sum(emb1[mask] ** 2, 1), np.sum(emb2[mask] ** 2, 1)]), degree)
        tau, _ = best_threshold(distance_fn(poly, emb1[mask], emb2[mask]), issame[mask])
        return tau, poly

    per_fold, correct = {}, 0
    for k in sorted(set(np.asarray(folds).tolist())):
        test = folds == k
        tau, poly = fit(~test)
        per_fold[int(k)] = (tau, poly)
        correct += int(np.sum((distance_fn(poly, emb1[test], emb2[test]) < tau) == issame[test]))
    tau, poly = fit(np.ones(len(issame), dtype=bool))
    return Threshold(tau, poly, per_fold, correct / len(issame))


def poly_distances(poly: NormPolynomial, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum((poly.normalize(a) - poly.normalize(b)) ** 2, axis=1)


def decisions(model: FusedPatchCNN, emb1: np.ndarray, emb2: np.ndarray, dataset: str,
              folds: Sequence[int | None]) -> np.ndarray:
    """Plaintext decisions (True = same) with the model's polynomial normalization and thresholds."""
    if dataset not in model.thresholds:
        raise ModelError(f"model {model.name} has no threshold for {dataset!r} (has {sorted(model.thresholds)})")
    th = model.thresholds[dataset]
    out = []
    for a, b, f in zip(emb1, emb2, folds):
        tau, poly = th.for_fold(f)
        out.append(poly_distances(poly, a[None], b[None])[0] < tau)
    return np.array(out)
