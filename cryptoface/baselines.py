"""The seed's ResNet baselines as the encrypted side evaluates them: fused float64 networks in numpy (no torch).

:func:`cryptoface.training.fusion.fuse_resnet` folds every batch norm of a trained
:class:`cryptoface.training.resnet.ResNetFace` into its conv (and the final BatchNorm1d into the linear layer),
giving a :class:`FusedResNet`: convs with biases, parameter-free shortcuts, and one :class:`Activation` per
activation position.  Its ``embed`` has two modes:

* ``polynomial=False``: the trained network (exact ReLU for MPCNN), the reference;
* ``polynomial=True``: the *plaintext twin* of the encrypted network, every activation exactly as the encrypted
  side evaluates it: MPCNN's AppReLU ``x * step(x / B)`` with ``step = (1 + p) / 2`` and ``p`` the composite
  minimax sign (:meth:`fhe_ckks.circuits.sign.CompositeSign.step_plain`, degrees 15, 15, 27 by default), and
  AutoFHE's channel-wise quadratics and identities (polynomials already, so both modes agree).

``B`` is the largest ReLU input seen on fitting faces times a slack (:func:`relu_bound`), so every ReLU input of
such faces lies within ``[-B, B]``, where the sign's approximation holds; a probe beyond ``B`` is refused by
the client like an out-of-range HerPN input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from fhe_ckks.circuits.sign import CompositeSign
from fhe_ckks.nn.plain import avg_pool, conv2d, zero_pad_shortcut

from .errors import ModelError

#: the margin of headroom over the largest ReLU input of the fitting faces (B = slack * max)
RELU_BOUND_SLACK = 1.25


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

    def forward(self, x: np.ndarray, peaks: list, **act) -> np.ndarray:
        h = conv2d(x, self.weight1, self.stride) + self.bias1.reshape(1, -1, 1, 1)
        peaks.append(np.abs(h).reshape(len(h), -1).max(1))
        h = self.act1(h, **act)
        out = conv2d(h, self.weight2) + self.bias2.reshape(1, -1, 1, 1)
        if self.shortcut == "zero_pad":
            out = out + zero_pad_shortcut(x, self.weight2.shape[0], self.stride, self.shortcut_offset)
        else:
            out = out + x
        peaks.append(np.abs(out).reshape(len(out), -1).max(1))
        return self.act2(out, **act)


@dataclass
class FusedResNet:
    """A fused ResNet32/44 baseline (see the module doc): ``(B, 3, 64, 64)`` preprocessed faces -> 256-d
    embeddings, in float64."""

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

    @cached_property
    def sign(self) -> CompositeSign:
        return CompositeSign.fit(self.sign_degrees, self.sign_margin)

    def activations(self) -> list[Activation]:
        out = [self.act0]
        for b in self.blocks:
            out += [b.act1, b.act2]
        return out

    def _forward(self, x: np.ndarray, polynomial: bool) -> tuple[np.ndarray, np.ndarray]:
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
            peaks.append(np.abs(h).reshape(len(h), -1).max(1))
            h = self.act0(h, **act)
            for block in self.blocks:
                h = block.forward(h, peaks, **act)
            pooled = avg_pool(h, self.pool_output)
            emb = pooled.reshape(len(pooled), -1) @ self.head_weight.T + self.head_bias
        return emb, np.max(np.stack(peaks), axis=0)

    def embed(self, x: np.ndarray, polynomial: bool = False) -> np.ndarray:
        return self._forward(x, polynomial)[0]

    def activation_peaks(self, x: np.ndarray) -> np.ndarray:
        """Per face, the largest |activation input| (with exact activations)."""
        return self._forward(x, False)[1]


def relu_bound(peaks: np.ndarray, slack: float = RELU_BOUND_SLACK) -> float:
    """MPCNN's B from the per-face largest ReLU inputs of fitting faces: ``slack`` times their maximum."""
    p = np.asarray(peaks, dtype=np.float64)
    if not p.size or not np.isfinite(p).all() or not (p > 0).any():
        raise ModelError("the ReLU bound needs finite positive activation peaks")
    return float(slack * p.max())
