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
thresholds per dataset and fold.  :func:`load_model` returns a model only when the file's checksums hold (one
covers the whole manifest, decision rules included: format version 2 of :mod:`fhe_ckks.nn.modelfile`) and every
field, tensor shape and threshold is consistent with the declared topology; :func:`save_model` runs the same
checks before it writes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fhe_ckks.errors import SerializationError
from fhe_ckks.nn import plain
from fhe_ckks.nn.plain import avg_pool, conv2d
from fhe_ckks.nn.modelfile import read_model_file, write_model_file

from .errors import ModelError, ProbeError

#: How far beyond the largest HerPN input seen in fitting a probe's activations may go before an honest client
#: refuses it (:meth:`FusedPatchCNN.check_probe`): the encrypted evaluation stays exact well past it (it
#: wraps only near q_l / scale), so the bound catches the overflowing inputs (stripes reach 1e105) without
#: refusing merely bright or contrasty faces.
PROBE_ACTIVATION_SLACK = 1024.0

#: How far outside the fitted squared-norm range ``[lo, hi]`` (the extremes of the fitting data, not accuracy
#: bounds: the 1/sqrt polynomial's error grows continuously past them) a probe may fall, relatively.
PROBE_NORM_SLACK = 2.0**-6

#: The quality floor's quantile: a probe whose squared embedding norm is below this quantile of the fitting faces'
#: is refused as a low-quality face (the embedding's norm tracks face quality: junk, flat, saturated and noisy
#: images land at the bottom of the range, where their directions crowd together and match everyone more often).
QUALITY_QUANTILE = 0.002

_ACTIVATION_PEAKS: contextvars.ContextVar[list | None] = contextvars.ContextVar("activation_peaks", default=None)


def quadratic(x: np.ndarray, a1: np.ndarray, a0: np.ndarray) -> np.ndarray:
    """The fused HerPN ``x^2 + a1 x + a0`` (:func:`fhe_ckks.nn.plain.quadratic`), recording each image's
    ``max |x|`` (``inf`` once a value is not finite) while :func:`recording_activation_peaks` is active in this
    thread or task."""
    peaks = _ACTIVATION_PEAKS.get()
    if peaks is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            a = np.abs(x).reshape(x.shape[0], -1)
            peaks.append(np.where(np.isfinite(a), a, np.inf).max(axis=1, initial=0.0))
    return plain.quadratic(x, a1, a0)


@contextlib.contextmanager
def recording_activation_peaks(into: list):
    """While active, every HerPN evaluated in this thread or task appends its per-image ``max |input|`` to
    ``into`` (one array per call): the quantity of the model file's ``info["activation_range"]``."""
    token = _ACTIVATION_PEAKS.set(into)
    try:
        yield into
    finally:
        _ACTIVATION_PEAKS.reset(token)

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
        """The polynomial :meth:`as_dict` wrote, finite and not identically 0 on its range; any other content raises
        :class:`ModelError`."""
        d = _fields(d, _NORM_FIELDS, "normalization polynomial")
        if d["kind"] != "inverse_sqrt_polynomial":
            raise ModelError(f"unknown normalization {d['kind']!r:.40}")
        coeffs = d["coefficients"]
        if not isinstance(coeffs, list) or not 1 <= len(coeffs) <= MAX_NORM_COEFFICIENTS:
            raise ModelError(f"a normalization polynomial has 1 to {MAX_NORM_COEFFICIENTS} coefficients")
        lo, hi = _real(d["lo"], "its lower end"), _real(d["hi"], "its upper end")
        if not 0 < lo < hi:
            raise ModelError(f"a normalization polynomial's range [{lo}, {hi}] must satisfy 0 < lo < hi")
        error = _real(d["max_relative_error"], "its relative error")
        if error < 0:
            raise ModelError(f"a relative error cannot be negative ({error})")
        poly = cls([_real(c, "a coefficient") for c in coeffs], lo, hi, error)
        if not 0 < poly.max_output_norm() < np.inf:
            raise ModelError("the normalization polynomial vanishes or overflows on its range")
        return poly

    def max_output_norm(self) -> float:
        """``max sqrt(y) |p(y)|`` over ``[lo, hi]``: the largest norm of a normalized embedding whose squared norm
        lies in the fitted range (``t p(t^2)`` is a polynomial in ``t = sqrt(y)``: its end points and critical
        points, with a grid as a guard against inexact roots)."""
        odd = np.zeros(2 * len(self.coefficients))
        odd[1::2] = self.coefficients
        f = np.polynomial.Polynomial(odd)
        a, b = np.sqrt(self.lo), np.sqrt(self.hi)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # absurd coefficients give inf
            try:                                    # the critical points do not move when f is scaled
                roots = (f / np.max(np.abs(odd))).deriv().roots() if np.any(odd) else np.array([])
            except np.linalg.LinAlgError:
                roots = np.array([])
            inside = roots[(np.abs(roots.imag) < 1e-9) & (roots.real > a) & (roots.real < b)].real
            return float(np.max(np.abs(f(np.concatenate([np.linspace(a, b, 257), inside])))))

    @classmethod
    def fit(cls, squared_norms: np.ndarray, degree: int = 2, trim: float = 0.0) -> "NormPolynomial":
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
    """Decision rules for one dataset.

    * The polynomial rule ``||p(x) - p(y)||^2 < tau`` (polynomially normalized embeddings: the plaintext
      reference of the original pipeline).
    * The exact rule ``||x/|x| - y/|y|||^2 < exact_tau``, i.e. ``cos(x, y) > 1 - exact_tau / 2``: the rule the
      encrypted decision evaluates (:mod:`cryptoface.encrypted.decision`), with its thresholds fitted the same way
      (``exact_per_fold``: fitted on the other folds).
    """

    tau: float
    norm: NormPolynomial
    per_fold: dict[int, tuple[float, NormPolynomial]] = field(default_factory=dict)
    accuracy: float = float("nan")
    exact_tau: float | None = None
    exact_per_fold: dict[int, float] = field(default_factory=dict)
    exact_accuracy: float = float("nan")

    def for_fold(self, fold: int | None) -> tuple[float, NormPolynomial]:
        if fold is not None and fold in self.per_fold:
            return self.per_fold[fold]
        return self.tau, self.norm

    def cosine_for_fold(self, fold: int | None) -> float:
        """The exact rule's cosine threshold ``c = 1 - exact_tau / 2`` for ``fold`` (all folds when None)."""
        if self.exact_tau is None:
            raise ModelError("this model has no exact-rule threshold: export it with verification data "
                             "(cryptoface.model.fit_exact_thresholds)")
        tau = self.exact_per_fold.get(fold, self.exact_tau) if fold is not None else self.exact_tau
        return 1.0 - tau / 2.0

    def as_dict(self) -> dict:
        out = {"tau": self.tau, "norm": self.norm.as_dict(), "accuracy": self.accuracy,
               "per_fold": {str(k): {"tau": t, "norm": n.as_dict()} for k, (t, n) in self.per_fold.items()}}
        if self.exact_tau is not None:
            out["exact"] = {"tau": self.exact_tau, "accuracy": self.exact_accuracy,
                            "per_fold": {str(k): t for k, t in self.exact_per_fold.items()}}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Threshold":
        """The rule :meth:`as_dict` wrote: each tau in ``(0, 4 M^2]`` for ``M`` the largest norm its polynomial
        gives an embedding of the fitted range (beyond it every such pair would match), each exact tau in
        ``(0, 4)``; else :class:`ModelError`."""
        optional = {"exact"} & set(d) if isinstance(d, dict) else set()
        d = _fields(d, _THRESHOLD_FIELDS | optional, "threshold")
        accuracy = _accuracy(d["accuracy"])
        if not isinstance(d["per_fold"], dict):
            raise ModelError("per_fold must map folds to rules")
        per_fold = {_fold(k): _rule(_fields(v, _FOLD_FIELDS, f"fold {k}")) for k, v in d["per_fold"].items()}
        tau, norm = _rule(d)
        out = cls(tau, norm, per_fold, accuracy)
        if optional:
            exact = _fields(d["exact"], _EXACT_FIELDS, "exact rule")
            if not isinstance(exact["per_fold"], dict):
                raise ModelError("the exact rule's per_fold must map folds to thresholds")
            out.exact_tau = _exact_tau(exact["tau"])
            out.exact_per_fold = {_fold(k): _exact_tau(v) for k, v in exact["per_fold"].items()}
            out.exact_accuracy = _accuracy(exact["accuracy"])
        return out


def _accuracy(value) -> float:
    accuracy = _real(value, "accuracy")
    if not 0 <= accuracy <= 1:
        raise ModelError(f"accuracy {accuracy} outside [0, 1]")
    return accuracy


def _exact_tau(value) -> float:
    tau = _real(value, "an exact-rule tau")
    if not 0 < tau < 4:
        raise ModelError(f"an exact-rule tau (squared distance of unit vectors) lies in (0, 4), got {tau}")
    return tau


class ProbeRules:
    """What a server's model refuses to vouch for, shared by every model the protocol runs (the patch CNNs and
    the ResNet baselines).  A model sets ``info`` and ``thresholds`` and says, in :meth:`activation_refusal`,
    how far its activations may go before the encrypted evaluation stops tracking the plaintext one."""

    info: dict[str, Any]
    thresholds: dict[str, Threshold]

    def quality_floor(self) -> float | None:
        """The smallest squared embedding norm a probe may have (``info["quality"]``, see
        :func:`embedding_quality`), None when the model file records none."""
        q = self.info.get("quality") if isinstance(self.info, dict) else None
        return None if q is None else float(q["min_squared_norm"])

    def activation_refusal(self, activation_peak: float, activation_slack: float) -> str | None:
        """Why a face whose largest activation input is ``activation_peak`` is refused, or None: by default
        beyond ``activation_slack`` times the largest recorded on the fitting data
        (``info["activation_range"]["max"]``; far beyond it the encrypted activations wrap modulo the
        ciphertext modulus)."""
        recorded = self.info.get("activation_range", {}).get("max") if isinstance(self.info, dict) else None
        if recorded is not None and not activation_peak <= activation_slack * float(recorded):
            return (f"an activation reaches {activation_peak:.3g}, beyond {activation_slack:g} x the largest seen "
                    f"in fitting ({float(recorded):.3g})")
        return None

    def probe_refusal(self, embedding: np.ndarray, activation_peak: float,
                      norm_range: tuple[float, float] | None = None,
                      activation_slack: float = PROBE_ACTIVATION_SLACK) -> str | None:
        """Why :meth:`check_probe` refuses one face with this embedding and largest activation input, or None."""
        with np.errstate(over="ignore", invalid="ignore"):
            y = float(np.sum(np.asarray(embedding, dtype=np.float64) ** 2))
        if not (np.all(np.isfinite(embedding)) and np.isfinite(y)):
            return "the face's embedding is not finite (its activations overflow)"
        floor = self.quality_floor()
        if floor is not None and y < floor:
            return (f"a low-quality face: squared embedding norm {y:.4g} below the model's quality floor {floor:.4g} "
                    f"(the {100 * self.info['quality']['quantile']:g} % quantile of its fitting faces')")
        reason = self.activation_refusal(activation_peak, activation_slack)
        if reason is not None:
            return reason
        if norm_range is None and "lfw" in self.thresholds:
            norm_range = (self.thresholds["lfw"].norm.lo, self.thresholds["lfw"].norm.hi)
        if norm_range is not None:
            lo, hi = float(norm_range[0]) * (1 - PROBE_NORM_SLACK), float(norm_range[1]) * (1 + PROBE_NORM_SLACK)
            if not lo <= y <= hi:
                return (f"squared embedding norm {y:.4g} outside [{float(norm_range[0]):.4g}, "
                        f"{float(norm_range[1]):.4g}] (+-{100 * PROBE_NORM_SLACK:.1f} %), where the "
                        "normalization is accurate")
        return None

    def _digest(self, header: list, values: Sequence) -> str:
        """SHA-256 (hex) of ``header`` (JSON), each of ``values`` (arrays as float64 with their shape, other
        values as JSON, None skipped), then the decision rules and the quality record."""
        h = hashlib.sha256(json.dumps(header).encode())
        quality = self.info.get("quality") if isinstance(self.info, dict) else None
        for value in [*values, {k: v.as_dict() for k, v in sorted(self.thresholds.items())}, quality]:
            if isinstance(value, np.ndarray):
                a = np.ascontiguousarray(value, dtype=np.float64)
                h.update(json.dumps(a.shape).encode())
                h.update(a.tobytes())
            elif value is not None:
                h.update(json.dumps(value, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def _refuse_any(self, embeddings: np.ndarray, peaks: np.ndarray, norm_range, activation_slack) -> np.ndarray:
        for e, peak in zip(embeddings, peaks):
            reason = self.probe_refusal(e, float(peak), norm_range, activation_slack)
            if reason is not None:
                raise ProbeError(reason)
        return embeddings


@dataclass
class FusedPatchCNN(ProbeRules):
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

    def check_probe(self, images: np.ndarray, norm_range: tuple[float, float] | None = None,
                    activation_slack: float = PROBE_ACTIVATION_SLACK) -> np.ndarray:
        """The embeddings of faces this model can vouch for; :class:`~cryptoface.errors.ProbeError` otherwise.

        Refused: a non-finite embedding; a low-quality face, whose squared embedding norm is below the model's
        quality floor (:meth:`quality_floor`, when the file records one); a HerPN input above
        ``activation_slack`` times the largest one
        recorded on the fitting data (``info["activation_range"]["max"]``; far beyond it the encrypted
        activations wrap modulo the ciphertext modulus); a squared embedding norm outside ``norm_range``
        (a server's hint range, ``Server.public_info()["norm_range"]``; default: the ``[lo, hi]`` of the
        model's "lfw" 1/sqrt polynomial), where the encrypted normalization is not accurate.  An honest
        client runs this on its own images before encrypting them (the model file is public).
        """
        peaks: list[np.ndarray] = []
        with recording_activation_peaks(peaks), np.errstate(over="ignore", invalid="ignore"):
            emb = self.embed(images)
        per_image = np.max(np.stack(peaks), axis=0) if peaks else np.zeros(len(emb))
        return self._refuse_any(emb, per_image, norm_range, activation_slack)

    def digest(self) -> str:
        """SHA-256 (hex) of what the encrypted side evaluates and decides with: the sizes, every weight (float64,
        in order), the decision rules and the quality record.  A template store is bound to it."""
        values: list = []
        for net in self.nets:
            values += [getattr(net, name) for name in ("conv0", "pool_a1", "pool_a0", "head_weight", "head_bias",
                                                       "pool_output")]
            for block in net.blocks:
                values += [getattr(block, f.name) for f in dataclasses.fields(block)]
        return self._digest([self.name, self.input_size, self.patch_size], values)


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
    _model_from(schema, tensors)        # what load_model would refuse is not written
    return write_model_file(path, schema, tensors)


def load_model(path: str | os.PathLike) -> FusedPatchCNN:
    """Read a ``.model.npz``: its checksums, then every manifest field, every tensor's shape against the topology
    the manifest declares, and the decision rules; a damaged, foreign or inconsistent file raises
    :class:`ModelError` naming it."""
    where = getattr(path, "name", path)
    try:
        mf = read_model_file(path)
    except SerializationError as exc:
        raise ModelError(str(exc)) from exc
    try:
        return _model_from(mf.schema, mf.tensors)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from exc


# --------------------------------------------------------------------------- checking a manifest

_SCHEMA_FIELDS = {"schema", "schema_version", "name", "input", "topology", "norm", "thresholds", "info"}
_INPUT_FIELDS = {"size", "channels", "color", "layout", "alignment", "normalisation", "range"}
_TOPOLOGY_FIELDS = {"arch", "patch_size", "num_patches", "grid", "conv0", "blocks", "pool_output", "embedding_dim"}
_BLOCK_FIELDS = {"in", "out", "stride", "shortcut"}
_NORM_FIELDS = {"kind", "coefficients", "lo", "hi", "max_relative_error"}
_THRESHOLD_FIELDS = {"tau", "norm", "accuracy", "per_fold"}
_FOLD_FIELDS = {"tau", "norm"}
_EXACT_FIELDS = {"tau", "accuracy", "per_fold"}
#: A normalization polynomial of higher degree is refused (the encrypted side evaluates a quadratic).
MAX_NORM_COEFFICIENTS = 16


def _check_quality(q) -> None:
    q = _fields(q, {"images", "quantile", "min_squared_norm", "median_squared_norm"}, "info.quality")
    _int(q["images"], "info.quality.images")
    quantile, floor, median = (_real(q[k], f"info.quality.{k}") for k in ("quantile", "min_squared_norm",
                                                                           "median_squared_norm"))
    if not (0 <= quantile < 0.5 and 0 < floor <= median):
        raise ModelError(f"info.quality: a quantile in [0, 1/2) and 0 < min_squared_norm <= median_squared_norm, "
                         f"got {quantile!r}, {floor!r}, {median!r}")


def _fields(d, expected: set[str], what: str) -> Mapping[str, Any]:
    """``d``, a dict with exactly the ``expected`` fields."""
    if not isinstance(d, dict) or set(d) != expected:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ModelError(f"{what}: expected the fields {sorted(expected)}, got {got}")
    return d


def _int(value, what: str, lo: int = 1) -> int:
    if type(value) is not int or value < lo:
        raise ModelError(f"{what} must be an int >= {lo}, got {value!r:.40}")
    return value


def _real(value, what: str) -> float:
    """A finite float (as :meth:`NormPolynomial.as_dict` and :meth:`Threshold.as_dict` write them)."""
    if not isinstance(value, float) or not np.isfinite(value):
        raise ModelError(f"{what} must be a finite float, got {value!r:.40}")
    return float(value)


def _fold(key: str) -> int:
    try:
        fold = int(key)
    except ValueError:
        fold = None
    if fold is None or str(fold) != key:
        raise ModelError(f"fold {key!r:.40} is not an integer")
    return fold


def _rule(d: Mapping[str, Any]) -> tuple[float, NormPolynomial]:
    """``(tau, polynomial)`` with ``0 < tau <= 4 M^2`` (see :meth:`Threshold.from_dict`)."""
    norm = NormPolynomial.from_dict(d["norm"])
    tau = _real(d["tau"], "tau")
    bound = 4 * norm.max_output_norm() ** 2
    if not 0 < tau <= bound * (1 + 1e-9):
        raise ModelError(f"tau {tau} outside (0, {bound:.6g}]: no pair, or every pair, of the polynomial's range "
                         "would match")
    return tau, norm


def _check_input(spec) -> int:
    """The input size; the image format must be the one :mod:`cryptoface.data` produces."""
    spec = _fields(spec, _INPUT_FIELDS, "input")
    if (spec["channels"], spec["color"], spec["layout"]) != (3, "RGB", "CHW") or type(spec["channels"]) is not int:
        raise ModelError(f"input {spec['channels']!r:.20} {spec['color']!r:.20} {spec['layout']!r:.20}: "
                         "this code feeds 3-channel RGB images in CHW layout")
    if not isinstance(spec["alignment"], str) or not isinstance(spec["normalisation"], str):
        raise ModelError("input alignment and normalisation are descriptions (strings)")
    rng = spec["range"]
    if not isinstance(rng, list) or len(rng) != 2 or not _real(rng[0], "input range") < _real(rng[1], "input range"):
        raise ModelError(f"input range {rng!r:.40} is not [lo, hi]")
    return _int(spec["size"], "input size")


def _check_topology(topo, size: int) -> Mapping[str, Any]:
    """Patches that tile the input, blocks that chain (a scale shortcut keeps channels and resolution), and a
    pooling grid that divides the trunk's output."""
    topo = _fields(topo, _TOPOLOGY_FIELDS, "topology")
    if topo["arch"] != "cryptofacenet":
        raise ModelError(f"unknown architecture {topo['arch']!r:.40}")
    patch = _int(topo["patch_size"], "patch_size")
    grid = size // patch
    if size % patch or _int(topo["grid"], "grid") != grid or _int(topo["num_patches"], "num_patches") != grid * grid:
        raise ModelError(f"{topo['num_patches']!r:.20} patches of {patch} (grid {topo['grid']!r:.20}) do not tile a "
                         f"{size} input")
    conv0 = _fields(topo["conv0"], {"in", "out"}, "conv0")
    if conv0["in"] != 3 or type(conv0["in"]) is not int:
        raise ModelError(f"conv0 takes the 3 input channels, not {conv0['in']!r:.20}")
    channels, side = _int(conv0["out"], "conv0 channels"), patch
    if not isinstance(topo["blocks"], list):
        raise ModelError("blocks must be a list")
    for j, block in enumerate(topo["blocks"]):
        block = _fields(block, _BLOCK_FIELDS, f"block {j}")
        stride, short = block["stride"], block["shortcut"]
        if _int(block["in"], f"block {j} input channels") != channels or stride not in (1, 2) \
                or type(stride) is not int or short not in ("scale", "conv"):
            raise ModelError(f"block {j} ({block['in']!r:.20} channels, stride {stride!r:.20}, shortcut "
                             f"{short!r:.20}) does not follow {channels} channels with stride 1 or 2 and a "
                             "scale or conv shortcut")
        channels = _int(block["out"], f"block {j} output channels")
        if short == "scale" and (stride != 1 or channels != block["in"]):
            raise ModelError(f"block {j}: a scale shortcut keeps channels and resolution")
        side = (side - 1) // stride + 1
    pool = topo["pool_output"]
    if not isinstance(pool, list) or len(pool) != 2 or any(type(p) is not int or p < 1 or side % p for p in pool):
        raise ModelError(f"pool_output {pool!r:.40} does not divide the trunk's {side}x{side} output")
    _int(topo["embedding_dim"], "embedding_dim")
    return topo


def _net_shapes(topo: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The tensors of one patch network (names after ``p<i>.``) with the shapes the topology gives them."""
    channels = topo["conv0"]["out"]
    out: dict[str, tuple[int, ...]] = {"conv0.weight": (channels, 3, 3, 3)}
    for j, block in enumerate(topo["blocks"]):
        cin, cout = block["in"], block["out"]
        out.update({f"b{j}.a1": (cin,), f"b{j}.a0": (cin,), f"b{j}.weight1": (cout, cin, 3, 3), f"b{j}.b1": (cout,),
                    f"b{j}.b0": (cout,), f"b{j}.weight2": (cout, cout, 3, 3)})
        if block["shortcut"] == "conv":
            out.update({f"b{j}.shortcut.weight": (cout, cin, 1, 1), f"b{j}.shortcut.bias": (cout,)})
        else:
            out[f"b{j}.shortcut.scale"] = (cin,)
        channels = cout
    ph, pw = topo["pool_output"]
    dim = topo["embedding_dim"]
    out.update({"pool.a1": (channels,), "pool.a0": (channels,), "head.weight": (dim, channels * ph * pw),
                "head.bias": (dim,)})
    return out


def _check_tensors(topo: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
    """Exactly the tensors of the topology, float64, each of its shape."""
    per_net = _net_shapes(topo)
    if len(tensors) != topo["num_patches"] * len(per_net):
        raise ModelError(f"{len(tensors)} tensors, the topology has {topo['num_patches'] * len(per_net)}")
    shapes = {f"p{i}.{k}": v for i in range(topo["num_patches"]) for k, v in per_net.items()}
    if set(tensors) != set(shapes):
        raise ModelError(f"tensors and topology disagree on {sorted(set(tensors) ^ set(shapes))[:5]}")
    for name, shape in shapes.items():
        if tensors[name].shape != shape or tensors[name].dtype != np.float64:
            raise ModelError(f"tensor {name} is {tensors[name].dtype}{list(tensors[name].shape)}, the topology "
                             f"says float64{list(shape)}")


def _model_from(s: Mapping[str, Any], t: Mapping[str, np.ndarray]) -> FusedPatchCNN:
    """The model a schema and its tensors describe, every field checked (see :func:`load_model`)."""
    s = _fields(s, _SCHEMA_FIELDS, "model schema")
    if s["schema"] != SCHEMA:
        raise ModelError(f"not a CryptoFace model file (schema {s['schema']!r:.40})")
    if type(s["schema_version"]) is not int or s["schema_version"] != SCHEMA_VERSION:
        raise ModelError(f"model schema version {s['schema_version']!r:.20}, this code reads {SCHEMA_VERSION}")
    if not isinstance(s["name"], str) or not isinstance(s["info"], dict) or not isinstance(s["thresholds"], dict):
        raise ModelError("name must be a string, info and thresholds dicts")
    if "quality" in s["info"]:
        _check_quality(s["info"]["quality"])
    size = _check_input(s["input"])
    topo = _check_topology(s["topology"], size)
    _check_tensors(topo, t)
    nets = []
    for i in range(topo["num_patches"]):
        blocks = []
        for j, spec in enumerate(topo["blocks"]):
            pre = f"p{i}.b{j}"
            conv_short = spec["shortcut"] == "conv"
            blocks.append(FusedBlock(
                t[f"{pre}.a1"], t[f"{pre}.a0"], t[f"{pre}.weight1"], spec["stride"], t[f"{pre}.b1"],
                t[f"{pre}.b0"], t[f"{pre}.weight2"],
                shortcut_scale=None if conv_short else t[f"{pre}.shortcut.scale"],
                shortcut_weight=t[f"{pre}.shortcut.weight"] if conv_short else None,
                shortcut_bias=t[f"{pre}.shortcut.bias"] if conv_short else None))
        nets.append(FusedPatchNet(t[f"p{i}.conv0.weight"], blocks, t[f"p{i}.pool.a1"], t[f"p{i}.pool.a0"],
                                  t[f"p{i}.head.weight"], t[f"p{i}.head.bias"], tuple(topo["pool_output"])))
    norm = None if s["norm"] is None else NormPolynomial.from_dict(s["norm"])
    thresholds = {k: Threshold.from_dict(v) for k, v in s["thresholds"].items()}
    return FusedPatchCNN(size, topo["patch_size"], nets, norm, thresholds, s["info"], s["name"])


def fit_thresholds(distance_fn, emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray, folds: np.ndarray,
                   degree: int = 2, extra_norms: np.ndarray | None = None, trim: float = 0.0) -> Threshold:
    """Fit, for each fold, the 1/sqrt polynomial and tau on the other folds; and both on all folds.

    ``distance_fn(p, a, b)`` gives squared distances of ``a`` and ``b`` normalized with polynomial ``p``.
    ``extra_norms``: squared norms of other faces (no labels) that each polynomial's fit covers too, so that its
    range holds faces beyond the fitting pairs; ``trim``: the top fraction of squared norms the fit drops.
    """
    from .verification import best_threshold

    extra = np.empty(0) if extra_norms is None else np.asarray(extra_norms, dtype=np.float64).ravel()

    def fit(mask):
        poly = NormPolynomial.fit(np.concatenate([np.sum(emb1[mask] ** 2, 1), np.sum(emb2[mask] ** 2, 1), extra]),
                                  degree, trim)
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


def exact_distances(_poly: NormPolynomial | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances of the exactly normalized rows of ``a`` and ``b`` (``_poly`` unused: the signature of
    :func:`fit_thresholds`)."""
    from .verification import squared_distances

    return squared_distances(a, b, normalize=True)


def fit_exact_thresholds(threshold: Threshold, emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray,
                         folds: np.ndarray) -> Threshold:
    """``threshold`` with the exact rule's thresholds fitted like the polynomial ones (per fold on the others)."""
    fitted = fit_thresholds(exact_distances, emb1, emb2, issame, folds)
    threshold.exact_tau = float(fitted.tau)
    threshold.exact_per_fold = {k: float(t) for k, (t, _) in fitted.per_fold.items()}
    threshold.exact_accuracy = float(fitted.accuracy)
    return threshold


def embedding_quality(embeddings: np.ndarray, quantile: float = QUALITY_QUANTILE) -> dict:
    """``info["quality"]`` of a model from the embeddings of its fitting faces: the ``quantile`` of their squared
    norms is the quality floor below which a probe is refused (:meth:`FusedPatchCNN.probe_refusal`)."""
    y = np.sum(np.asarray(embeddings, dtype=np.float64) ** 2, axis=1)
    y = y[np.isfinite(y)]
    if not y.size:
        raise ModelError("no finite embedding to take the quality floor from")
    return {"images": int(y.size), "quantile": float(quantile), "min_squared_norm": float(np.quantile(y, quantile)),
            "median_squared_norm": float(np.median(y))}


def poly_distances(poly: NormPolynomial, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum((poly.normalize(a) - poly.normalize(b)) ** 2, axis=1)


def decisions(model: FusedPatchCNN, emb1: np.ndarray, emb2: np.ndarray, dataset: str,
              folds: Sequence[int | None]) -> np.ndarray:
    """Plaintext decisions (True = same) with the model's polynomial normalization and thresholds."""
    th = _threshold_of(model, dataset)
    out = []
    for a, b, f in zip(emb1, emb2, folds):
        tau, poly = th.for_fold(f)
        out.append(poly_distances(poly, a[None], b[None])[0] < tau)
    return np.array(out)


def exact_decisions(model: FusedPatchCNN, emb1: np.ndarray, emb2: np.ndarray, dataset: str,
                    folds: Sequence[int | None]) -> np.ndarray:
    """Plaintext decisions (True = same) of the exact cosine rule, ``cos >= c`` with the fold's
    :meth:`Threshold.cosine_for_fold`: what the server decides under encryption
    (:class:`cryptoface.encrypted.decision.Decision`)."""
    from .verification import cosines

    th = _threshold_of(model, dataset)
    return np.array([c >= th.cosine_for_fold(f) for c, f in zip(cosines(emb1, emb2), folds)], dtype=bool)


def _threshold_of(model: FusedPatchCNN, dataset: str) -> Threshold:
    if dataset not in model.thresholds:
        raise ModelError(f"model {model.name} has no threshold for {dataset!r} (has {sorted(model.thresholds)})")
    return model.thresholds[dataset]
