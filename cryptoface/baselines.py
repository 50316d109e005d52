"""The seed's ResNet baselines as the encrypted side evaluates them: fused float64 networks in numpy (no torch).

:func:`cryptoface.training.fusion.fuse_resnet` folds every batch norm of a trained
:class:`cryptoface.training.resnet.ResNetFace` into its conv (and the final BatchNorm1d into the linear layer),
giving a :class:`FusedResNet`: convs with biases, parameter-free shortcuts, and one :class:`Activation` per
activation position.  Its ``embed`` has two modes:

* ``polynomial=False``: the trained network (exact ReLU for MPCNN), the reference;
* ``polynomial=True`` (the default, what the decision rules are fitted on): the *plaintext twin* of the
  encrypted network, every activation exactly as the encrypted side evaluates it: MPCNN's AppReLU
  ``x * step(x / B)`` with ``step = (1 + p) / 2`` and ``p`` the composite minimax sign
  (:meth:`fhe_ckks.circuits.sign.CompositeSign.step_plain`, degrees 15, 15, 27 by default); AutoFHE's
  channel-wise quadratics and identities are polynomials already, so both modes agree.

``B`` is the largest ReLU input seen on fitting faces times a slack (:func:`relu_bound`), so every ReLU input of
such faces lies within ``[-B, B]``, where the sign's approximation holds; a probe beyond ``B`` is refused by
the client like an out-of-range HerPN input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fhe_ckks.circuits.sign import CompositeSign
from fhe_ckks.errors import SerializationError
from fhe_ckks.nn.modelfile import read_model_file, write_model_file
from fhe_ckks.nn.plain import avg_pool, conv2d, zero_pad_shortcut

from .errors import ModelError
from .model import PROBE_ACTIVATION_SLACK, FusedPatchCNN, NormPolynomial, ProbeRules, Threshold

#: the margin of headroom over the largest ReLU input of the fitting faces (B = slack * max)
RELU_BOUND_SLACK = 1.25
#: the same headroom for AutoFHE's bootstrap bound over the largest value its chain carries on fitting faces
VALUE_BOUND_SLACK = 1.25


@dataclass
class Activation:
    """``kind``: ``"relu"`` (AppReLU under encryption), ``"identity"``, or ``"quadratic"`` with ``coefficients``
    ``(3, C)``: ``w0 + w1 x + w2 x^2`` per channel."""

    kind: str
    coefficients: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in ("relu", "identity", "quadratic"):
            raise ModelError(f"activation kind {self.kind!r} is not relu, identity or quadratic")
        if (self.kind == "quadratic") != (self.coefficients is not None):
            raise ModelError("a quadratic activation has (3, C) coefficients, the others none")
        if self.coefficients is not None:
            c = np.asarray(self.coefficients, dtype=np.float64)
            if c.ndim != 2 or c.shape[0] != 3 or not np.isfinite(c).all():
                raise ModelError(f"quadratic coefficients must be finite (3, C), got shape {c.shape}")
            self.coefficients = c

    @property
    def depth(self) -> int:
        """Levels under encryption, besides AppReLU's sign (a ReLU's depth depends on the composite)."""
        return {"identity": 0, "quadratic": 2, "relu": 1}[self.kind]

    def __call__(self, x: np.ndarray, polynomial: bool, bound: float, sign: CompositeSign | None) -> np.ndarray:
        if self.kind == "identity":
            return x
        if self.kind == "quadratic":
            w = self.coefficients[:, None, :, None, None]
            return w[0] + x * (w[1] + x * w[2])
        if not polynomial:
            return np.maximum(x, 0.0)
        return x * sign.step_plain(x / bound)


@dataclass
class FusedBasicBlock:
    weight1: np.ndarray
    bias1: np.ndarray
    stride: int
    act1: Activation
    weight2: np.ndarray
    bias2: np.ndarray
    act2: Activation
    shortcut: str = "identity"          # identity | zero_pad
    shortcut_offset: int = 0

    def forward(self, x: np.ndarray, peaks: list, values: list | None = None, **act) -> np.ndarray:
        """The block on ``x``; appends the per-face largest activation inputs to ``peaks`` and, with ``values``,
        the largest of every tensor the encrypted block carries (activation outputs and the branch too)."""
        h = conv2d(x, self.weight1, self.stride) + self.bias1.reshape(1, -1, 1, 1)
        peaks.append(_peak(h))
        h = self.act1(h, **act)
        branch = conv2d(h, self.weight2) + self.bias2.reshape(1, -1, 1, 1)
        if self.shortcut == "zero_pad":
            out = branch + zero_pad_shortcut(x, self.weight2.shape[0], self.stride, self.shortcut_offset)
        else:
            out = branch + x
        peaks.append(_peak(out))
        out_act = self.act2(out, **act)
        if values is not None:
            values += [peaks[-2], _peak(h), _peak(branch), peaks[-1], _peak(out_act)]
        return out_act


def _peak(t: np.ndarray) -> np.ndarray:
    return np.abs(t).reshape(len(t), -1).max(1)


@dataclass
class FusedResNet(ProbeRules):
    """A fused ResNet32/44 baseline (see the module doc): ``(B, 3, 64, 64)`` preprocessed faces -> 256-d
    embeddings, in float64.  A server runs it as one "patch" covering the whole face (``patch_size`` is the input
    size), under the same probe rules as the patch CNNs plus the bootstraps' range (:meth:`bootstrap_bound`)."""

    arch: str                            # "resnet32" | "resnet44"
    variant: str                         # "mpcnn" | "autofhe"
    conv0: np.ndarray
    bias0: np.ndarray
    act0: Activation
    blocks: list[FusedBasicBlock]
    head_weight: np.ndarray              # (256, 256): pooled features (c * 4 + i * 2 + j) -> embedding
    head_bias: np.ndarray
    relu_bound: float | None = None      # B (MPCNN): every ReLU input of the fitting faces within [-B, B]
    sign_degrees: tuple[int, ...] = (15, 15, 27)
    sign_margin: float = 2.0**-9
    input_size: int = 64
    pool_output: tuple[int, int] = (2, 2)
    info: dict = field(default_factory=dict)
    name: str = "model"
    norm: NormPolynomial | None = None
    thresholds: dict[str, Threshold] = field(default_factory=dict)

    @cached_property
    def sign(self) -> CompositeSign:
        return CompositeSign.fit(self.sign_degrees, self.sign_margin)

    def activations(self) -> list[Activation]:
        out = [self.act0]
        for b in self.blocks:
            out += [b.act1, b.act2]
        return out

    @property
    def patch_size(self) -> int:
        return self.input_size

    @property
    def num_patches(self) -> int:
        return 1

    @property
    def embedding_dim(self) -> int:
        return int(self.head_weight.shape[0])

    def _forward(self, x: np.ndarray, polynomial: bool, values: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ModelError(f"expected (B, 3, {self.input_size}, {self.input_size}) faces, got {x.shape}")
        uses_relu = any(a.kind == "relu" for a in self.activations())
        if polynomial and uses_relu and self.relu_bound is None:
            raise ModelError("the AppReLU twin needs the ReLU bound B (fit it with relu_bound)")
        act = {"polynomial": polynomial, "bound": self.relu_bound, "sign": self.sign if uses_relu else None}
        peaks: list[np.ndarray] = []
        with np.errstate(over="ignore", invalid="ignore"):
            h = conv2d(x, self.conv0, 2) + self.bias0.reshape(1, -1, 1, 1)
            peaks.append(_peak(h))
            h = self.act0(h, **act)
            if values is not None:
                values += [peaks[-1], _peak(h)]
            for block in self.blocks:
                h = block.forward(h, peaks, values, **act)
            pooled = avg_pool(h, self.pool_output)
            emb = pooled.reshape(len(pooled), -1) @ self.head_weight.T + self.head_bias
        return emb, np.max(np.stack(peaks), axis=0)

    def embed(self, x: np.ndarray, polynomial: bool = True) -> np.ndarray:
        """The embeddings the encrypted network computes (``polynomial=True``: every ReLU an AppReLU, which needs
        the ReLU bound), or those of the trained network (``polynomial=False``)."""
        return self._forward(x, polynomial)[0]

    def activation_peaks(self, x: np.ndarray) -> np.ndarray:
        """Per face, the largest |activation input| (with exact activations)."""
        return self._forward(x, False)[1]

    def value_peaks(self, x: np.ndarray) -> np.ndarray:
        """Per face, the largest ``|value|`` of any tensor the encrypted chain carries between the input and the
        pooling (the input, every conv output, activation output and residual sum), with the activations the
        chain evaluates, in the chain's units (MPCNN's chain runs on ``x / B``, where its bound is 1).  A bootstrap
        anywhere in the chain sees one of these values."""
        values: list[np.ndarray] = [_peak(np.asarray(x, dtype=np.float64))]
        self._forward(x, True, values)
        inner = np.max(np.stack(values[1:]), axis=0)
        return np.maximum(values[0], inner / self.relu_bound if self.variant == "mpcnn" else inner)

    def bootstrap_bound(self) -> float | None:
        """The largest slot value the chain's bootstraps are declared for (``BootstrapConfig.input_bound``):
        MPCNN's 1 (its chain runs on ``x / B``), AutoFHE's ``VALUE_BOUND_SLACK`` times the largest value of the
        fitting faces (``info["value_range"]["max"]``, recorded by the export); None when not recorded."""
        if self.variant == "mpcnn":
            return 1.0
        recorded = self.info.get("value_range", {}).get("max") if isinstance(self.info, dict) else None
        return None if recorded is None else VALUE_BOUND_SLACK * float(recorded)

    def activation_refusal(self, activation_peak: float, activation_slack: float) -> str | None:
        """``activation_peak`` is :meth:`value_peaks`' figure: beyond :meth:`bootstrap_bound` a bootstrap's
        EvalMod (and MPCNN's sign, accurate only on [-1, 1]) would return garbage, so the face is refused
        whatever the slack.  Without a recorded bound, the patch CNNs' rule."""
        bound = self.bootstrap_bound()
        if bound is None:
            return super().activation_refusal(activation_peak, activation_slack)
        if not activation_peak <= bound:
            what = "the AppReLU's range |x / B| <= 1" if self.variant == "mpcnn" else "the bootstraps' bound"
            return f"a value of the encrypted network reaches {activation_peak:.3g}, beyond {what} ({bound:.3g})"
        return None

    def check_probe(self, images: np.ndarray, norm_range: tuple[float, float] | None = None,
                    activation_slack: float = PROBE_ACTIVATION_SLACK) -> np.ndarray:
        """The embeddings (of the chain's twin) of faces this model can vouch for; :class:`ProbeError` otherwise
        (the rules of :class:`~cryptoface.model.ProbeRules`, the activations checked by :meth:`value_peaks`)."""
        x = np.asarray(images, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            emb = self.embed(x)
            peaks = self.value_peaks(x)
        return self._refuse_any(emb, peaks, norm_range, activation_slack)

    def digest(self) -> str:
        """SHA-256 (hex) of what the encrypted side evaluates and decides with (see ``FusedPatchCNN.digest``)."""
        values: list = [self.conv0, self.bias0, self.head_weight, self.head_bias,
                        [self.relu_bound, list(self.sign_degrees), self.sign_margin, list(self.pool_output)]]
        for a in self.activations():
            values += [a.kind, a.coefficients]
        for b in self.blocks:
            values += [b.weight1, b.bias1, b.weight2, b.bias2, [b.stride, b.shortcut, b.shortcut_offset]]
        return self._digest([self.name, self.input_size, self.arch, self.variant], values)


def relu_bound(peaks: np.ndarray, slack: float = RELU_BOUND_SLACK) -> float:
    """MPCNN's B from the per-face largest ReLU inputs of fitting faces: ``slack`` times their maximum."""
    p = np.asarray(peaks, dtype=np.float64)
    if not p.size or not np.isfinite(p).all() or not (p > 0).any():
        raise ModelError("the ReLU bound needs finite positive activation peaks")
    return float(slack * p.max())


# --------------------------------------------------------------------------- the .model.npz of a baseline
#
# The container of every CryptoFace model (fhe_ckks.nn.modelfile: tensors, a JSON manifest, checksums), with a
# topology of its own: the arch, the variant, the blocks with their strides and shortcuts, one entry per
# activation (kind and encrypted depth), and for MPCNN the ReLU bound B and the sign composite (degrees,
# margin).  Tensors: conv0.{weight,bias}, b<j>.conv{1,2}.{weight,bias}, act<k>.coefficients (quadratics),
# head.{weight,bias}.  The decision rules (thresholds per dataset and fold with their 1/sqrt polynomials, and
# the exact cosine rule's) are stored and checked as CryptoFaceNet's (cryptoface.model.Threshold).

BASELINE_SCHEMA = "cryptoface.baseline"
BASELINE_SCHEMA_VERSION = 1
_ARCH_BLOCKS = {"resnet32": 5, "resnet44": 7}
_CHANNELS = (16, 32, 64)


def _baseline_tensors(model: FusedResNet) -> dict[str, np.ndarray]:
    t = {"conv0.weight": model.conv0, "conv0.bias": model.bias0, "head.weight": model.head_weight,
         "head.bias": model.head_bias}
    for j, b in enumerate(model.blocks):
        t.update({f"b{j}.conv1.weight": b.weight1, f"b{j}.conv1.bias": b.bias1, f"b{j}.conv2.weight": b.weight2,
                  f"b{j}.conv2.bias": b.bias2})
    for k, a in enumerate(model.activations()):
        if a.kind == "quadratic":
            t[f"act{k}.coefficients"] = a.coefficients
    return {k: np.asarray(v, dtype=np.float64) for k, v in t.items()}


def _baseline_schema(model: FusedResNet) -> dict[str, Any]:
    return {"schema": BASELINE_SCHEMA, "schema_version": BASELINE_SCHEMA_VERSION, "name": model.name,
            "input": {"size": model.input_size, "channels": 3, "color": "RGB", "layout": "CHW",
                      "normalisation": "(x/255 - 0.5)/0.5"},
            "topology": {"arch": model.arch, "variant": model.variant,
                         "blocks": [{"in": int(b.weight1.shape[1]), "out": int(b.weight1.shape[0]),
                                     "stride": int(b.stride), "shortcut": b.shortcut, "offset": int(b.shortcut_offset)}
                                    for b in model.blocks],
                         "activations": [{"kind": a.kind, "depth": a.depth} for a in model.activations()],
                         "relu": None if model.variant != "mpcnn" else
                         {"bound": model.relu_bound, "sign_degrees": list(model.sign_degrees),
                          "sign_margin": float(model.sign_margin)},
                         "pool_output": list(model.pool_output), "embedding_dim": int(model.head_weight.shape[0])},
            "norm": None if model.norm is None else model.norm.as_dict(),
            "thresholds": {k: v.as_dict() for k, v in model.thresholds.items()},
            "info": model.info}


def save_baseline(model: FusedResNet, path: str | os.PathLike) -> Path:
    """Write ``model`` as a ``.model.npz``; what :func:`load_baseline` would refuse is not written."""
    schema, tensors = _baseline_schema(model), _baseline_tensors(model)
    _baseline_from(_json_roundtrip(schema), tensors)
    return write_model_file(path, schema, tensors)


def _json_roundtrip(obj):
    import json

    return json.loads(json.dumps(obj))


def load_baseline(path: str | os.PathLike) -> FusedResNet:
    """Read a baseline's ``.model.npz``: checksums, then every field against the architecture's shape; a
    damaged, foreign or inconsistent file raises :class:`ModelError` naming it."""
    where = getattr(path, "name", path)
    try:
        mf = read_model_file(path)
        return _baseline_from(mf.schema, mf.tensors)
    except SerializationError as exc:
        raise ModelError(str(exc)) from exc
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from exc


def load_served_model(path: str | os.PathLike) -> FusedPatchCNN | FusedResNet:
    """A ``.model.npz`` a server can run, by its manifest's schema: a CryptoFaceNet
    (:func:`cryptoface.model.load_model`) or a ResNet baseline (:func:`load_baseline`), each fully checked."""
    from .model import _model_from

    where = getattr(path, "name", path)
    try:
        mf = read_model_file(path)          # read once; the schema picks the checker
    except SerializationError as exc:
        raise ModelError(str(exc)) from exc
    schema = mf.schema.get("schema") if isinstance(mf.schema, dict) else None
    try:
        return (_baseline_from if schema == BASELINE_SCHEMA else _model_from)(mf.schema, mf.tensors)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from exc


def _expect(d, fields: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(d, dict) or set(d) != fields:
        raise ModelError(f"{what}: expected the fields {sorted(fields)}, got "
                         f"{sorted(d) if isinstance(d, dict) else type(d).__name__}")
    return d


def _baseline_from(s: Mapping[str, Any], t: Mapping[str, np.ndarray]) -> FusedResNet:
    s = _expect(s, {"schema", "schema_version", "name", "input", "topology", "norm", "thresholds", "info"},
                "baseline schema")
    if s["schema"] != BASELINE_SCHEMA or s["schema_version"] != BASELINE_SCHEMA_VERSION \
            or type(s["schema_version"]) is not int:
        raise ModelError(f"not a baseline model file of version {BASELINE_SCHEMA_VERSION} "
                         f"({s['schema']!r:.40}, {s['schema_version']!r:.20})")
    if not isinstance(s["name"], str) or not isinstance(s["info"], dict) or not isinstance(s["thresholds"], dict):
        raise ModelError("name must be a string, info and thresholds dicts")
    norm = None if s["norm"] is None else NormPolynomial.from_dict(s["norm"])
    thresholds = {k: Threshold.from_dict(v) for k, v in s["thresholds"].items()}
    spec = _expect(s["input"], {"size", "channels", "color", "layout", "normalisation"}, "input")
    size = spec["size"]
    if type(size) is not int or size < 8 or size % 8 or (spec["channels"], spec["color"], spec["layout"]) != \
            (3, "RGB", "CHW"):
        raise ModelError(f"input {size!r:.20}: a multiple of 8, 3-channel RGB in CHW layout")
    topo = _expect(s["topology"], {"arch", "variant", "blocks", "activations", "relu", "pool_output",
                                   "embedding_dim"}, "topology")
    arch, variant = topo["arch"], topo["variant"]
    if arch not in _ARCH_BLOCKS or variant not in ("mpcnn", "autofhe"):
        raise ModelError(f"unknown baseline {arch!r:.20} / {variant!r:.20}")
    n = _ARCH_BLOCKS[arch]
    blocks, acts = topo["blocks"], topo["activations"]
    if not isinstance(blocks, list) or len(blocks) != 3 * n or not isinstance(acts, list) or len(acts) != 6 * n + 1:
        raise ModelError(f"{arch} has {3 * n} blocks and {6 * n + 1} activations")
    want_tensors: dict[str, tuple[int, ...]] = {"conv0.weight": (16, 3, 3, 3), "conv0.bias": (16,)}
    planes = _CHANNELS[0]
    for j, b in enumerate(blocks):
        stage = j // n
        width, stride = _CHANNELS[stage], 2 if stage > 0 and j % n == 0 else 1
        pad = stride != 1 or planes != width
        want = {"in": planes, "out": width, "stride": stride, "shortcut": "zero_pad" if pad else "identity",
                "offset": (width - planes) // 2 if pad else 0}
        if _expect(b, set(want), f"block {j}") != want or any(type(b[k]) is not type(v) for k, v in want.items()):
            raise ModelError(f"block {j} is not {arch}'s {want}")
        want_tensors.update({f"b{j}.conv1.weight": (width, planes, 3, 3), f"b{j}.conv1.bias": (width,),
                             f"b{j}.conv2.weight": (width, width, 3, 3), f"b{j}.conv2.bias": (width,)})
        planes = width
    widths = [_CHANNELS[0]] + [_CHANNELS[j // n] for j in range(3 * n) for _ in range(2)]
    kinds = []
    for k, (a, c) in enumerate(zip(acts, widths)):
        a = _expect(a, {"kind", "depth"}, f"activation {k}")
        allowed = ("relu",) if variant == "mpcnn" else ("identity", "quadratic")
        if a["kind"] not in allowed or a["depth"] != Activation(a["kind"], np.zeros((3, c)) if
                                                                 a["kind"] == "quadratic" else None).depth:
            raise ModelError(f"activation {k}: {a!r:.60} is not one of {variant}'s {allowed}")
        if a["kind"] == "quadratic":
            want_tensors[f"act{k}.coefficients"] = (3, c)
        kinds.append(a["kind"])
    pool, dim = topo["pool_output"], topo["embedding_dim"]
    side = size // 8
    if pool != [2, 2] or side % 2 or type(dim) is not int or dim < 1:
        raise ModelError(f"pool_output {pool!r:.20} / embedding_dim {dim!r:.20}: 2x2 pooling of the {side}x{side} "
                         "trunk into a positive dimension")
    want_tensors.update({"head.weight": (dim, 4 * _CHANNELS[-1]), "head.bias": (dim,)})
    if set(t) != set(want_tensors):
        raise ModelError(f"tensors and topology disagree on {sorted(set(t) ^ set(want_tensors))[:5]}")
    for name, shape in want_tensors.items():
        a = t[name]
        if a.shape != shape or a.dtype != np.float64 or not np.isfinite(a).all():
            raise ModelError(f"tensor {name} is {a.dtype}{list(a.shape)}, the topology says finite float64"
                             f"{list(shape)}")
    relu = topo["relu"]
    bound, degrees, margin = None, (15, 15, 27), 2.0**-9
    if variant == "mpcnn":
        relu = _expect(relu, {"bound", "sign_degrees", "sign_margin"}, "relu")
        bound, degrees, margin = relu["bound"], relu["sign_degrees"], relu["sign_margin"]
        if not (bound is None or (isinstance(bound, float) and np.isfinite(bound) and bound > 0)):
            raise ModelError(f"relu bound {bound!r:.20} is not a positive finite float")
        if not isinstance(degrees, list) or not degrees or not all(type(d) is int and d % 2 == 1 and 1 < d < 256
                                                                   for d in degrees):
            raise ModelError(f"sign degrees {degrees!r:.40} are not odd ints in (1, 256)")
        if not isinstance(margin, float) or not 0 < margin < 1:
            raise ModelError(f"sign margin {margin!r:.20} is not in (0, 1)")
    elif relu is not None:
        raise ModelError("relu parameters belong to the mpcnn variant only")

    def act(k: int) -> Activation:
        return Activation(kinds[k], t[f"act{k}.coefficients"] if kinds[k] == "quadratic" else None)

    fused_blocks = []
    for j, b in enumerate(blocks):
        fused_blocks.append(FusedBasicBlock(t[f"b{j}.conv1.weight"], t[f"b{j}.conv1.bias"], b["stride"],
                                            act(1 + 2 * j), t[f"b{j}.conv2.weight"], t[f"b{j}.conv2.bias"],
                                            act(2 + 2 * j), b["shortcut"], b["offset"]))
    return FusedResNet(arch, variant, t["conv0.weight"], t["conv0.bias"], act(0), fused_blocks, t["head.weight"],
                       t["head.bias"], bound, tuple(degrees), float(margin), size, (2, 2), dict(s["info"]),
                       s["name"], norm, thresholds)
