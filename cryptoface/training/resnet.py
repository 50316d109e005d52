"""The seed's ResNet baselines in PyTorch: MPCNN ResNet32/44 and AutoFHE ResNet32 (issue #16).

Both encrypted-CNN baselines of the CryptoFace paper share one backbone, a CIFAR-style ResNet on one whole
(non-patched) 64x64x3 face:

* a 3x3 conv with stride 2 (64x64 -> 32x32, 16 channels), BN, activation;
* three stages of ``n`` post-activation basic blocks (conv-BN-act-conv-BN, plus the shortcut, then act) at 16, 32
  and 64 channels on 32x32, 16x16 and 8x8; the first block of stages 2 and 3 has stride 2 and the
  parameter-free zero-padded shortcut ("option A": every other pixel, the channels centered among zero
  channels); ResNet32 has ``n = 5``, ResNet44 ``n = 7``;
* average pooling to 2x2 (256 features), Linear(256, 256) and a BatchNorm1d without affine parameters
  (running statistics only): the embedding, as in CryptoFaceNet, then CryptoFace's polynomial 1/sqrt and
  matching.

``activation`` chooses the baseline:

* ``"relu"`` (MPCNN): trained with exact ReLU.  Under encryption every ReLU becomes AppReLU on ``x / B``
  (:class:`fhe_ckks.nn.layers.AppReLU`), with ``B`` the largest pre-activation seen on training faces,
  measured at export;
* ``"autofhe"``: a layer-wise activation, one depth per activation in forward order
  (:data:`AUTOFHE_RESNET32_BOOT8`, AutoFHE's released ResNet32 pattern with 8 bootstraps): depth 0 is the
  identity, depth 2 a channel-wise quadratic ``w0 + w1 x + w2 x^2`` whose coefficients are trained (initialized
  at ReLU's least-squares quadratic on [-3, 3], the range a batch-normalized input mostly lies in).  This is a
  faithful substitute of AutoFHE's searched EvoReLU: the released pattern, not a new search, and plain
  autograd through the quadratics instead of AutoFHE's straight-through ReLU gradient.

The model answers like :class:`~cryptoface.training.models.PatchCNN` (``forward`` gives the embedding and no
jigsaw logits; ``embed``; ``input_size``), so the same training loop, distillation and evaluation serve it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .models import EMBEDDING_DIM, _initialize

RESNET_CHANNELS = (16, 32, 64)
RESNET_BLOCKS = {32: 5, 44: 7}
RESNET_POOL = (2, 2)
RESNET_INPUT_SIZE = 64
ACTIVATIONS = ("relu", "autofhe")
#: AutoFHE's released ResNet32 activation depths with 8 bootstraps, one per activation in forward order
#: (the stem's, then two per basic block): 0 = identity, 2 = channel-wise quadratic.
AUTOFHE_RESNET32_BOOT8 = (0, 2, 2, 2, 0, 2, 0, 0, 0, 2, 0, 2, 2, 2, 0, 2, 0, 0, 0, 2, 0, 2, 0, 2, 2, 0, 0, 2, 2, 0, 2)
#: ReLU's least-squares quadratic on [-L, L], L = 3 (uniform weight; from |t| ~ 3/16 + 15/16 t^2 on [-1, 1]):
#: ``3 L / 32 + x / 2 + 15 x^2 / (32 L)``.
_RELU_QUADRATIC = (3 * 3 / 32, 0.5, 15 / (32 * 3))


class ChannelQuadratic(nn.Module):
    """``w0 + w1 x + w2 x^2`` per channel, trained (AutoFHE's depth-2 EvoReLU); starts at ReLU's quadratic."""

    def __init__(self, planes: int):
        super().__init__()
        w0, w1, w2 = _RELU_QUADRATIC
        self.weight = nn.Parameter(torch.tensor([[w0], [w1], [w2]]).repeat(1, planes))   # (3, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight[:, None, :, None, None]
        return w[0] + x * (w[1] + x * w[2])


def _activation(kind: int | str, planes: int) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == 0:
        return nn.Identity()
    if kind == 2:
        return ChannelQuadratic(planes)
    raise ValueError(f"activation depth {kind!r} is not 0 (identity) or 2 (quadratic)")


class ZeroPadShortcut(nn.Module):
    """Option A: ``x[:, :, ::s, ::s]`` with its channels centered among ``planes`` (zeros elsewhere)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.before = stride, (planes - in_planes) // 2
        self.after = planes - in_planes - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """``act2(bn2(conv2(act1(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, in_planes: int, planes: int, stride: int, act1: nn.Module, act2: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act1
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = act2
        self.shortcut = nn.Identity() if stride == 1 and in_planes == planes else \
            ZeroPadShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNetFace(nn.Module):
    """A CIFAR-style ResNet of ``depth`` 32 or 44 on 64x64 faces -> a 256-d embedding (see the module doc)."""

    def __init__(self, depth: int = 32, activation: str = "relu", pattern: tuple[int, ...] | None = None,
                 embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"ResNet depth {depth} not in {sorted(RESNET_BLOCKS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} not in {ACTIVATIONS}")
        n = RESNET_BLOCKS[depth]
        count = 1 + 2 * 3 * n
        if activation == "autofhe":
            pattern = tuple(AUTOFHE_RESNET32_BOOT8 if pattern is None else pattern)
            if len(pattern) != count:
                raise ValueError(f"ResNet{depth} has {count} activations, the pattern gives {len(pattern)}")
            kinds = list(pattern)
        else:
            if pattern is not None:
                raise ValueError("a depth pattern applies to the autofhe activation only")
            kinds = ["relu"] * count
        self.depth, self.activation, self.pattern = depth, activation, pattern
        self.input_size = RESNET_INPUT_SIZE
        c0 = RESNET_CHANNELS[0]
        self.conv = nn.Conv2d(3, c0, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c0)
        self.act0 = _activation(kinds[0], c0)
        blocks, k, planes = [], 1, c0
        for stage, width in enumerate(RESNET_CHANNELS):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(planes, width, stride, _activation(kinds[k], width),
                                         _activation(kinds[k + 1], width)))
                k, planes = k + 2, width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(RESNET_POOL)
        features = RESNET_POOL[0] * RESNET_POOL[1] * RESNET_CHANNELS[-1]
        self.linear = nn.Linear(features, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim, affine=False)
        self.apply(_initialize)

    def forward(self, x: torch.Tensor):
        """``(embedding, None, None)``: no jigsaw head (one whole face, no patches)."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}")
        out = self.layers(self.act0(self.bn0(self.conv(x))))
        return self.bn(self.linear(torch.flatten(self.pool(out), 1))), None, None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]

    def activations(self) -> list[nn.Module]:
        """The activation modules in forward order (the stem's, then two per block)."""
        out = [self.act0]
        for block in self.layers:
            out += [block.act1, block.act2]
        return out
