"""The ResNet baselines of issue #16 as chains of encrypted layers (:mod:`fhe_ckks.nn`), from a fused
:class:`cryptoface.baselines.FusedResNet`.

One face is one ciphertext: the input ``3 x S x S`` stacked, then each stage in the multiplexed layout of Lee et
al. (MPCNN), whose gap is the stride so far (``16 x S/2 x S/2`` at gap 2, ``32 x S/4`` at gap 4, ``64 x S/8`` at
gap 8): a stride-2 convolution or shortcut moves no data.

* **MPCNN** (ReLU): the network runs on ``x / B`` (conv0's weights and every bias divided by B; ReLU is
  positively homogeneous), every ReLU is a :class:`~fhe_ckks.nn.layers.Bootstrap` followed by an
  :class:`~fhe_ckks.nn.layers.AppReLU` (MPCNN bootstraps before each AppReLU: 31 for ResNet32, 43 for
  ResNet44), and the head multiplies by B again.
* **AutoFHE**: each quadratic is a :class:`~fhe_ckks.nn.layers.ChannelQuadratic` (2 levels), each identity
  nothing; bootstraps are left to the planner (greedy, as late as possible).

Identity shortcuts are a per-channel scaling by 1 (one level, on the shortcut branch, which has levels to
spare); down-sampling ones are :class:`~fhe_ckks.nn.layers.ZeroPadShortcut`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_ckks.nn.layers import (AppReLU, Bootstrap, ChannelQuadratic, ChannelScale, Conv2d, Layer, Residual,
                                Sequential, ZeroPadShortcut)
from fhe_ckks.nn.layout import TensorLayout

from ..baselines import Activation, FusedResNet
from ..errors import ModelError
from .network import head_layer


@dataclass
class BaselineChain:
    layers: list[Layer]
    input_layout: TensorLayout
    output_layout: TensorLayout

    def forward_plain(self, face: np.ndarray) -> np.ndarray:
        """The chain's numpy twin on one ``(3, S, S)`` face: the embedding (MPCNN: of its AppReLU twin)."""
        x = np.asarray(face, dtype=np.float64)[None]
        for layer in self.layers:
            x = layer.forward_plain(x)
        return x.reshape(-1)

    def input_peaks(self, faces: np.ndarray) -> np.ndarray:
        """The largest ``|value|`` entering each layer of the chain (one entry per layer, the last one the
        head's), over ``faces`` of shape ``(F, 3, S, S)``, from the numpy twin.  A bootstrap the planner
        places before layer i sees the input of layer i: ``BootstrapConfig.input_bound`` must cover it
        (EvalMod is correct only below the declared bound, which the bootstrapper cannot check)."""
        faces = np.asarray(faces, dtype=np.float64)
        if faces.ndim != 4:
            raise ModelError(f"faces of shape (F, 3, S, S) expected, got {faces.shape}")
        peaks = np.zeros(len(self.layers))
        for face in faces:
            x = face[None]
            for i, layer in enumerate(self.layers):
                peaks[i] = max(peaks[i], float(np.max(np.abs(x))))
                x = layer.forward_plain(x)
        return peaks


def _layout(channels: int, size: int, gap: int) -> TensorLayout:
    return TensorLayout.multiplexed(1, channels, size, size, gap)


def chain_period(model: FusedResNet, input_size: int | None = None) -> int:
    """The largest layout period of :func:`build_baseline`'s chain, from the model's shapes (no slot matrix
    built): the slots a bootstrap of the chain must cover."""
    size = model.input_size if input_size is None else input_size
    periods = [TensorLayout.stacked(1, 3, size, size).period]
    gap, spatial, channels = 2, size // 2, model.conv0.shape[0]
    periods.append(_layout(channels, spatial, gap).period)
    for b in model.blocks:
        if b.stride == 2:
            gap, spatial = gap * 2, spatial // 2
        periods.append(_layout(b.weight2.shape[0], spatial, gap).period)
    return max(periods)


def build_baseline(model: FusedResNet, bootstrapper=None, input_size: int | None = None,
                   output_scale: float = 1.0) -> BaselineChain:
    """The encrypted chain of ``model`` (see the module doc); its output is ``output_scale`` times the
    embedding (a server's embedding scale, as :func:`cryptoface.encrypted.network.build_group`'s).  MPCNN needs
    ``bootstrapper`` (its bootstraps are part of the design) and the model's ReLU bound.  ``input_size`` defaults
    to the model's (tests build small ones)."""
    relu = model.variant == "mpcnn"
    if relu and (model.relu_bound is None or bootstrapper is None):
        raise ModelError("an MPCNN chain needs the model's ReLU bound B and a bootstrapper")
    size = model.input_size if input_size is None else input_size
    scale = 1.0 / model.relu_bound if relu else 1.0
    sign = model.sign if relu else None
    counter = iter(range(10**6))

    def act(a: Activation, lay: TensorLayout) -> list[Layer]:
        k = next(counter)
        if a.kind == "identity":
            return []
        if a.kind == "quadratic":
            w0, w1, w2 = a.coefficients
            return [ChannelQuadratic(lay, w2, w1, w0, name=f"act{k}")]
        return [Bootstrap(lay, bootstrapper, name=f"boot{k}"), AppReLU(lay, sign, name=f"app_relu{k}")]

    lin = TensorLayout.stacked(1, 3, size, size)
    gap, spatial = 2, size // 2
    lay = _layout(model.conv0.shape[0], spatial, gap)
    layers: list[Layer] = [Conv2d(lin, lay, model.conv0 * scale, stride=2, bias=model.bias0 * scale, name="conv0")]
    layers += act(model.act0, lay)
    for i, b in enumerate(model.blocks):
        out_ch = b.weight2.shape[0]
        if b.stride == 2:
            gap, spatial = gap * 2, spatial // 2
        out = _layout(out_ch, spatial, gap)
        body = [Conv2d(lay, out, b.weight1, stride=b.stride, bias=b.bias1 * scale, name=f"b{i}.conv1")]
        body += act(b.act1, out)
        body.append(Conv2d(out, out, b.weight2, bias=b.bias2 * scale, name=f"b{i}.conv2"))
        shortcut = ZeroPadShortcut(lay, out, b.stride, b.shortcut_offset, name=f"b{i}.shortcut") \
            if b.shortcut == "zero_pad" else ChannelScale(lay, out, 1.0, name=f"b{i}.shortcut")
        layers.append(Residual(Sequential(body, name=f"b{i}.body"), shortcut, name=f"b{i}"))
        layers += act(b.act2, out)
        lay = out
    vec = TensorLayout.vector(1, model.head_weight.shape[0])

    class _Head:
        head_weight = model.head_weight / scale
        head_bias = model.head_bias

    layers.append(head_layer(lay, [_Head], model.pool_output, vec, output_scale))
    return BaselineChain(layers, lin, vec)
