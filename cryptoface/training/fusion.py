"""Fusion: a trained PatchCNN -> the polynomial network the encrypted side runs.

:func:`fuse` is a pure function of the model's state (it reads a state dict in
float64 and never touches the module).  Each HerPN in evaluation mode is the
per-channel quadratic ``a2 x^2 + a1 x + a0`` with

    a2 = w / sqrt(8 pi (v2 + eps))
    a1 = w / (2 sqrt(v1 + eps))
    a0 = b + w ((1 - m0)/sqrt(2 pi (v0 + eps)) - m1/(2 sqrt(v1 + eps)) - (1 + sqrt2 m2)/sqrt(8 pi (v2 + eps)))

(``m_k, v_k``: running mean and variance of batch norm k).  Dividing by
``a2`` gives the monic ``x^2 + (a1/a2) x + a0/a2``, one ciphertext square plus
one plaintext product, and ``a2`` is folded into the next linear operation's
input channels: conv1 of the block, the shortcut, or (after pooling) the
backbone's BatchNorm1d.  A channel with ``|a2|`` too small would make
``a1/a2`` explode; :func:`fuse` refuses it (:class:`FusionError`) unless
``min_abs_a2`` allows nudging, in which case ``a2`` is moved to
``sign(a2) * min_abs_a2`` and the change is recorded in ``info``.

Then BatchNorm1d, the patch's slice of the final linear layer and the final
affine-free BatchNorm1d fold into one 256x256 affine map per patch, with the
bias split evenly so the sum over patches restores it.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..errors import FusionError
from ..model import FusedBlock, FusedPatchCNN, FusedPatchNet
from .models import STAGES

EPS_DEFAULT = 1e-5


def _np(state: Mapping, key: str) -> np.ndarray:
    try:
        value = state[key]
    except KeyError:
        raise FusionError(f"state dict has no {key!r}") from None
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.array(value, dtype=np.float64)


def herpn_coefficients(state: Mapping, prefix: str, eps: float = EPS_DEFAULT):
    """``(a2, a1, a0)`` per channel of the HerPN at ``prefix`` (e.g. ``nets.0.layers.1.herpn2``)."""
    m = [_np(state, f"{prefix}.bn{k}.running_mean") for k in range(3)]
    v = [_np(state, f"{prefix}.bn{k}.running_var") for k in range(3)]
    w = _np(state, f"{prefix}.weight").reshape(-1)
    b = _np(state, f"{prefix}.bias").reshape(-1)
    a2 = w / np.sqrt(8 * math.pi * (v[2] + eps))
    a1 = w / (2 * np.sqrt(v[1] + eps))
    a0 = b + w * ((1 - m[0]) / np.sqrt(2 * math.pi * (v[0] + eps)) - m[1] / (2 * np.sqrt(v[1] + eps))
                  - (1 + math.sqrt(2) * m[2]) / np.sqrt(8 * math.pi * (v[2] + eps)))
    return a2, a1, a0


def _monic(state, prefix, min_abs_a2, nudged, eps):
    a2, a1, a0 = herpn_coefficients(state, prefix, eps)
    small = np.abs(a2) < max(min_abs_a2, 1e-300)
    if np.any(small):
        if min_abs_a2 <= 0:
            raise FusionError(f"{prefix}: x^2 coefficient a2 is ~0 in channel(s) {np.flatnonzero(small).tolist()} "
                              f"(|a2| = {np.abs(a2[small]).min():.3g}); cannot divide it out")
        for c in np.flatnonzero(small):
            nudged.append({"herpn": prefix, "channel": int(c), "a2": float(a2[c])})
        a2 = np.where(small, np.where(a2 < 0, -min_abs_a2, min_abs_a2), a2)
    return a2, a1 / a2, a0 / a2


def _bn(state, prefix, eps):
    g = _np(state, f"{prefix}.weight") if f"{prefix}.weight" in state else None
    b = _np(state, f"{prefix}.bias") if f"{prefix}.bias" in state else None
    mean, var = _np(state, f"{prefix}.running_mean"), _np(state, f"{prefix}.running_var")
    inv = 1.0 / np.sqrt(var + eps)
    scale = inv if g is None else g * inv
    shift = -mean * scale + (0.0 if b is None else b)
    return scale, shift


def fuse(state: Mapping, input_size: int, patch_size: int = 32, min_abs_a2: float = 0.0, eps: float = EPS_DEFAULT,
         name: str = "model") -> FusedPatchCNN:
    """Fuse a PatchCNN state dict (``model.state_dict()``, or the original's ``ckpt["backbone"]``)."""
    grid = input_size // patch_size
    n = grid * grid
    if grid * patch_size != input_size or f"nets.{n - 1}.conv.weight" not in state or f"nets.{n}.conv.weight" in state:
        raise FusionError(f"state dict does not hold {n} patch networks for input size {input_size}")
    nudged: list[dict] = []
    lin_w, lin_b = _np(state, "linear.weight"), _np(state, "linear.bias")
    out_scale, out_shift = _bn(state, "bn", eps)          # final BatchNorm1d, affine-free
    feat = lin_w.shape[1] // n
    nets = []
    for i in range(n):
        pre = f"nets.{i}"
        blocks = []
        j = 0
        while f"{pre}.layers.{j}.conv1.weight" in state:
            lp = f"{pre}.layers.{j}"
            a2, a1, a0 = _monic(state, f"{lp}.herpn1", min_abs_a2, nudged, eps)
            b2, b1, b0 = _monic(state, f"{lp}.herpn2", min_abs_a2, nudged, eps)
            w1, w2 = _np(state, f"{lp}.conv1.weight"), _np(state, f"{lp}.conv2.weight")
            if j >= len(STAGES) or w1.shape[:2] != (STAGES[j][1], STAGES[j][0]):
                raise FusionError(f"{lp}: conv1 of shape {w1.shape} does not match CryptoFaceNet's stages {STAGES}")
            stride = STAGES[j][2]
            if f"{lp}.shortcut.0.weight" in state:
                s_scale, s_shift = _bn(state, f"{lp}.shortcut.1", eps)
                sw = _np(state, f"{lp}.shortcut.0.weight") * a2[None, :, None, None] * s_scale[:, None, None, None]
                block = FusedBlock(a1, a0, w1 * a2[None, :, None, None], stride, b1, b0,
                                   w2 * b2[None, :, None, None], shortcut_weight=sw, shortcut_bias=s_shift)
            else:
                block = FusedBlock(a1, a0, w1 * a2[None, :, None, None], stride, b1, b0,
                                   w2 * b2[None, :, None, None], shortcut_scale=a2)
            blocks.append(block)
            j += 1
        p2, p1, p0 = _monic(state, f"{pre}.herpnpool.herpn", min_abs_a2, nudged, eps)
        bn_scale, bn_shift = _bn(state, f"{pre}.bn", eps)                 # backbone BatchNorm1d (flatten c*4+s)
        cells = bn_scale.size // p2.size
        scale = bn_scale * np.repeat(p2, cells)
        w_i = lin_w[:, i * feat:(i + 1) * feat] * out_scale[:, None]
        head_w = w_i * scale[None, :]
        head_b = w_i @ bn_shift + (lin_b * out_scale + out_shift) / n
        nets.append(FusedPatchNet(_np(state, f"{pre}.conv.weight"), blocks, p1, p0, head_w, head_b,
                                  (int(round(math.sqrt(cells))),) * 2))
    info = {"fusion": {"eps": eps, "min_abs_a2": min_abs_a2, "nudged": nudged}}
    return FusedPatchCNN(input_size, patch_size, nets, info=info, name=name)


# --------------------------------------------------------------------------- the ResNet baselines (issue #16)

def _conv_bn(state: Mapping, conv: str, bn: str, eps: float = EPS_DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """A bias-free conv followed by a BatchNorm2d, as one conv with a bias."""
    w = _np(state, f"{conv}.weight")
    gamma, beta = _np(state, f"{bn}.weight"), _np(state, f"{bn}.bias")
    mean, var = _np(state, f"{bn}.running_mean"), _np(state, f"{bn}.running_var")
    k = gamma / np.sqrt(var + eps)
    return w * k[:, None, None, None], beta - k * mean


def fuse_resnet(state: Mapping, depth: int, activation: str, eps: float = EPS_DEFAULT, name: str = "model"):
    """Fuse a :class:`~cryptoface.training.resnet.ResNetFace` state dict into a
    :class:`cryptoface.baselines.FusedResNet` (float64): every BatchNorm2d into its conv, the linear layer and
    the affine-free BatchNorm1d into one affine map; ReLU stays ReLU (``activation="relu"``, MPCNN), and for
    ``"autofhe"`` an activation with trained coefficients (``...act.weight``) is a quadratic, one without the
    identity.  The ReLU bound B is set by the export, from fitting faces."""
    from ..baselines import Activation, FusedBasicBlock, FusedResNet
    from .resnet import RESNET_BLOCKS, RESNET_CHANNELS

    if depth not in RESNET_BLOCKS or activation not in ("relu", "autofhe"):
        raise FusionError(f"no ResNet{depth} with {activation!r} activations")

    def act(prefix: str) -> Activation:
        if activation == "relu":
            return Activation("relu")
        if f"{prefix}.weight" in state:
            return Activation("quadratic", _np(state, f"{prefix}.weight"))
        return Activation("identity")

    conv0, bias0 = _conv_bn(state, "conv", "bn0", eps)
    blocks, planes, i = [], RESNET_CHANNELS[0], 0
    for stage, width in enumerate(RESNET_CHANNELS):
        for b in range(RESNET_BLOCKS[depth]):
            stride = 2 if stage > 0 and b == 0 else 1
            p = f"layers.{i}"
            w1, b1 = _conv_bn(state, f"{p}.conv1", f"{p}.bn1", eps)
            w2, b2 = _conv_bn(state, f"{p}.conv2", f"{p}.bn2", eps)
            pad = stride != 1 or planes != width
            blocks.append(FusedBasicBlock(w1, b1, stride, act(f"{p}.act1"), w2, b2, act(f"{p}.act2"),
                                          "zero_pad" if pad else "identity", (width - planes) // 2 if pad else 0))
            planes, i = width, i + 1
    if f"layers.{i}.conv1.weight" in state:
        raise FusionError(f"the state dict has more blocks than ResNet{depth}")
    lw, lb = _np(state, "linear.weight"), _np(state, "linear.bias")
    mean, var = _np(state, "bn.running_mean"), _np(state, "bn.running_var")
    k = 1.0 / np.sqrt(var + eps)
    return FusedResNet(f"resnet{depth}", "mpcnn" if activation == "relu" else "autofhe", conv0, bias0, act("act0"),
                       blocks, lw * k[:, None], (lb - mean) * k, info={"fusion": {"eps": eps}}, name=name)
