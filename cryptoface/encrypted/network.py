"""The fused CryptoFaceNet as a chain of encrypted layers, several patch networks per ciphertext.

Patches are grouped (``patches_per_ciphertext``, default: as many as fit the
largest activation into the slots); a group's patch networks share every
rotation, relinearization and bootstrap, and their different weights simply
sit in different slots of the same plaintexts.  Per group the chain is::

    conv0 -> [HerPN, (conv1 -> HerPN -> conv2) + shortcut] x 5 -> HerPN -> head

where ``head`` is one slot matrix that does the 2x2 average pooling, the
folded BatchNorm1d / linear / final BatchNorm1d of every patch in the group
*and* the sum over those patches, straight into the embedding slots.  The
embedding is the sum of the groups' outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fhe_ckks.nn.layers import ChannelScale, Conv2d, Layer, Quadratic, Residual, Sequential, SlotLinear
from fhe_ckks.nn.layout import TensorLayout

from ..errors import ModelError
from ..model import FusedPatchCNN


def _layout(groups: int, channels: int, size: int, gap: int) -> TensorLayout:
    return TensorLayout.multiplexed(groups, channels, size, size, gap)


def head_layer(layout: TensorLayout, nets, pool_output: tuple[int, int], out_layout: TensorLayout,
               output_scale: float = 1.0) -> SlotLinear:
    """Average pooling + per-patch affine head + sum over the group's patches (times ``output_scale``),
    as one slot matrix."""
    g, c, h, w = layout.shape
    ph, pw = pool_output
    d = nets[0].head_weight.shape[0]
    gg, dd, cc, yy, xx = np.meshgrid(np.arange(g), np.arange(d), np.arange(c), np.arange(h), np.arange(w),
                                     indexing="ij")
    cell = (yy // (h // ph)) * pw + (xx // (w // pw))
    weights = np.stack([net.head_weight for net in nets])            # (G, D, C * cells)
    wt = weights[gg, dd, cc * (ph * pw) + cell] * (output_scale / ((h // ph) * (w // pw)))
    bias = output_scale * sum(net.head_bias for net in nets).reshape(out_layout.shape)
    return SlotLinear(layout, out_layout, out_layout.index[0, dd, 0, 0], layout.index[gg, cc, yy, xx], wt, bias,
                      name="pool+head")


@dataclass
class PatchGroup:
    patches: list[int]
    layers: list[Layer]
    input_layout: TensorLayout
    output_layout: TensorLayout

    def depth(self) -> int:
        return sum(layer.depth() for layer in self.layers)

    def rotation_steps(self) -> list[int]:
        return sorted({s for layer in self.layers for s in layer.rotation_steps()})

    def forward_plain(self, patches: np.ndarray) -> np.ndarray:
        x = patches
        for layer in self.layers:
            x = layer.forward_plain(x)
        return x.reshape(-1)


def build_group(model: FusedPatchCNN, patches: Sequence[int], output_scale: float = 1.0) -> PatchGroup:
    """The chain of one patch group; its output is ``output_scale`` times the group's embedding share."""
    nets = [model.nets[i] for i in patches]
    g, size = len(nets), model.patch_size
    stack = lambda f: np.stack([f(n) for n in nets])  # noqa: E731
    lay = _layout(g, 3, size, 1)
    first = lay
    c0 = nets[0].conv0.shape[0]
    nxt = _layout(g, c0, size, 1)
    layers: list[Layer] = [Conv2d(lay, nxt, stack(lambda n: n.conv0), 1, name="conv0")]
    lay, gap = nxt, 1
    for j in range(len(nets[0].blocks)):
        blocks = [n.blocks[j] for n in nets]
        b0 = blocks[0]
        co, stride = b0.weight1.shape[0], b0.stride
        if stride not in (1, 2):
            raise ModelError(f"block {j}: stride {stride} is not supported")
        size_out, gap_out = size // stride, gap * stride
        out = _layout(g, co, size_out, gap_out)
        q1 = Quadratic(lay, np.stack([b.a1 for b in blocks]), np.stack([b.a0 for b in blocks]), name=f"b{j}.herpn1")
        body = Sequential([
            Conv2d(lay, out, np.stack([b.weight1 for b in blocks]), stride, name=f"b{j}.conv1"),
            Quadratic(out, np.stack([b.b1 for b in blocks]), np.stack([b.b0 for b in blocks]), name=f"b{j}.herpn2"),
            Conv2d(out, out, np.stack([b.weight2 for b in blocks]), 1, name=f"b{j}.conv2"),
        ], name=f"b{j}.body")
        if b0.shortcut_weight is not None:
            shortcut: Layer = Conv2d(lay, out, np.stack([b.shortcut_weight for b in blocks]), stride, padding=0,
                                     bias=np.stack([b.shortcut_bias for b in blocks]), name=f"b{j}.shortcut")
        else:
            if stride != 1 or co != b0.a1.shape[0]:
                raise ModelError(f"block {j}: an identity shortcut cannot change shape")
            shortcut = ChannelScale(lay, out, np.stack([b.shortcut_scale for b in blocks]), name=f"b{j}.shortcut")
        layers += [q1, Residual(body, shortcut, name=f"b{j}")]
        lay, size, gap = out, size_out, gap_out
    layers.append(Quadratic(lay, stack(lambda n: n.pool_a1), stack(lambda n: n.pool_a0), name="pool.herpn"))
    out_layout = TensorLayout.vector(1, model.embedding_dim)
    layers.append(head_layer(lay, nets, nets[0].pool_output, out_layout, output_scale))
    return PatchGroup(list(patches), layers, first, out_layout)


def largest_activation(model: FusedPatchCNN) -> int:
    """Slots one patch needs: the largest period among the layouts :func:`build_group` uses for it."""
    size, gap = model.patch_size, 1
    best = max(_layout(1, c, size, 1).period for c in (3, model.nets[0].conv0.shape[0]))
    for b in model.nets[0].blocks:
        size, gap = size // b.stride, gap * b.stride
        best = max(best, _layout(1, b.weight1.shape[0], size, gap).period)
    return best


def group_patches(model: FusedPatchCNN, slots: int, per_ciphertext: int | None = None) -> list[list[int]]:
    per_patch = largest_activation(model)
    fit = max(1, slots // per_patch)
    if per_patch > slots:
        raise ModelError(f"one patch network needs {per_patch} slots; the parameters have {slots}")
    k = min(fit, model.num_patches) if per_ciphertext is None else per_ciphertext
    if k < 1 or k > fit:
        raise ModelError(f"{k} patches per ciphertext do not fit {slots} slots ({per_patch} per patch)")
    return [list(range(i, min(i + k, model.num_patches))) for i in range(0, model.num_patches, k)]


def patch_network_depth(model: FusedPatchCNN) -> int:
    """Levels the chain of :func:`build_group` consumes, from the model's shapes alone (no slot matrix is
    built, so it costs microseconds where building the real model's groups takes seconds).

    Every slot matrix (a convolution, a channel scale, the pooling head) and every HerPN quadratic costs
    one level; a block is its first HerPN and a residual as deep as its deeper branch (conv, HerPN, conv),
    the shallower branch being brought down for at most one level more.  Refuses, like
    :func:`build_group`, a stride other than 1 or 2 and an identity shortcut that would change the shape.
    """
    slot_matrix = quadratic = 1
    body = slot_matrix + quadratic + slot_matrix
    shortcut = slot_matrix
    residual = max(body, shortcut + (shortcut < body))
    blocks = model.nets[0].blocks
    for j, block in enumerate(blocks):
        if block.stride not in (1, 2):
            raise ModelError(f"block {j}: stride {block.stride} is not supported")
        if block.shortcut_weight is None and (block.stride, block.weight1.shape[0]) != (1, block.a1.shape[0]):
            raise ModelError(f"block {j}: an identity shortcut cannot change shape")
    return slot_matrix + len(blocks) * (quadratic + residual) + quadratic + slot_matrix
