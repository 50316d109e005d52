"""CryptoFaceNet in PyTorch: HerPN activations, the patch backbone and PatchCNN.

The module and parameter names follow the original CryptoFace repository
(``nets.<i>.conv``, ``nets.<i>.layers.<j>.herpn1.bn0``, ``linear``, ``bn``,
``jigsaw``), so its checkpoints load with the identity mapping documented in
:mod:`cryptoface.training.checkpoint`.  Unlike the original, nothing here
needs CUDA: patches are processed one after another on any device.

HerPN (Hermite polynomial normalization) replaces ReLU + BN by a learned
combination of the first three probabilists' Hermite polynomials, each
batch-normalized::

    herpn(x) = w * ( bn0(1)/sqrt(2 pi) + bn1(x)/2 + bn2((x^2 - 1)/sqrt 2)/sqrt(4 pi) ) + b

which in evaluation mode is the per-channel quadratic ``a2 x^2 + a1 x + a0``
(see :mod:`cryptoface.training.fusion`): one multiplicative level under CKKS.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PATCH_SIZE = 32
EMBEDDING_DIM = 256
POOL_OUTPUT = (2, 2)
STAGES = ((16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1))
INPUT_SIZES = {64: "CryptoFaceNet4", 96: "CryptoFaceNet9", 128: "CryptoFaceNet16"}


class HerPN(nn.Module):
    """Hermite-polynomial activation with three batch norms kept as buffers."""

    def __init__(self, planes: int):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(planes, affine=False)
        self.bn1 = nn.BatchNorm2d(planes, affine=False)
        self.bn2 = nn.BatchNorm2d(planes, affine=False)
        self.weight = nn.Parameter(torch.ones(planes, 1, 1))
        self.bias = nn.Parameter(torch.zeros(planes, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.bn0(torch.ones_like(x))
        h1 = self.bn1(x)
        h2 = self.bn2((x * x - 1.0) / math.sqrt(2.0))
        out = h0 / math.sqrt(2 * math.pi) + h1 / 2 + h2 / math.sqrt(4 * math.pi)
        return self.weight * out + self.bias


class HerPNConv(nn.Module):
    """Pre-activation residual block: HerPN -> conv3x3(stride) -> HerPN -> conv3x3, plus a shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.herpn1 = HerPN(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.herpn2 = HerPN(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.herpn1(x)
        out = self.conv2(self.herpn2(self.conv1(x)))
        return out + self.shortcut(x)


class HerPNPool(nn.Module):
    """HerPN followed by adaptive average pooling to ``output_size``."""

    def __init__(self, planes: int, output_size=POOL_OUTPUT):
        super().__init__()
        self.herpn = HerPN(planes)
        self.pool = nn.AdaptiveAvgPool2d(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.herpn(x))


class Backbone(nn.Module):
    """The shallow network that one 32x32 patch goes through: 3 -> 256 features."""

    def __init__(self, output_size=POOL_OUTPUT):
        super().__init__()
        self.conv = nn.Conv2d(3, STAGES[0][0], 3, stride=1, padding=1, bias=False)
        self.layers = nn.Sequential(*(HerPNConv(ci, co, s) for ci, co, s in STAGES))
        self.herpnpool = HerPNPool(STAGES[-1][1], output_size)
        self.bn = nn.BatchNorm1d(output_size[0] * output_size[1] * STAGES[-1][1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv(x))
        return self.bn(torch.flatten(self.herpnpool(out), 1))


class PatchCNN(nn.Module):
    """CryptoFaceNet: one backbone per patch, a linear map of the concatenated features, a final BN.

    ``forward`` returns ``(embedding, jigsaw_logits, jigsaw_target)``; the
    jigsaw head asks every patch's features to tell which patch they came from.
    The linear layer over the concatenation equals the sum over patches of a
    per-patch 256->256 map, which is how the encrypted side evaluates it.
    """

    def __init__(self, input_size: int = 64, patch_size: int = PATCH_SIZE, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not a multiple of the patch size {patch_size}")
        self.input_size, self.patch_size = input_size, patch_size
        self.grid = input_size // patch_size
        n = self.grid * self.grid
        dim = POOL_OUTPUT[0] * POOL_OUTPUT[1] * STAGES[-1][1]
        self.nets = nn.ModuleList(Backbone() for _ in range(n))
        self.linear = nn.Linear(n * dim, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim, affine=False)
        self.jigsaw = nn.Linear(dim, n)
        self.apply(_initialize)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, P, 256)`` backbone outputs."""
        b, c, h, w = x.shape
        if h != self.input_size or w != self.input_size:
            raise ValueError(f"expected {self.input_size}x{self.input_size} inputs, got {h}x{w}")
        g, p = self.grid, self.patch_size
        patches = x.reshape(b, c, g, p, g, p).permute(2, 4, 0, 1, 3, 5).reshape(g * g, b, c, p, p)
        return torch.stack([net(patches[i]) for i, net in enumerate(self.nets)], dim=1)

    def forward(self, x: torch.Tensor):
        feats = self.patch_features(x)
        embedding = self.bn(self.linear(torch.flatten(feats, 1)))
        b, n, _ = feats.shape
        logits = self.jigsaw(feats).reshape(b * n, n)
        target = torch.arange(n, device=x.device).repeat(b)
        return embedding, logits, target

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[0]


def _initialize(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.weight is not None:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_model(input_size: int, patch_size: int = PATCH_SIZE, arch: str = "cryptofacenet",
                activation: str | None = None) -> nn.Module:
    """The network of a config's ``model`` section: a CryptoFaceNet of ``input_size``, or (``arch`` resnet32 /
    resnet44) one of the seed's ResNet baselines on 64x64 faces (:mod:`cryptoface.training.resnet`)."""
    if arch in ("resnet32", "resnet44"):
        from .resnet import RESNET_INPUT_SIZE, ResNetFace

        if input_size != RESNET_INPUT_SIZE:
            raise ValueError(f"the ResNet baselines take {RESNET_INPUT_SIZE}x{RESNET_INPUT_SIZE} faces, "
                             f"not {input_size}")
        return ResNetFace(int(arch[6:]), activation or "relu")
    if arch != "cryptofacenet":
        raise ValueError(f"model.arch {arch!r} is not cryptofacenet, resnet32 or resnet44")
    if activation is not None:
        raise ValueError("model.activation applies to the ResNet baselines only (CryptoFaceNet uses HerPN)")
    if input_size not in INPUT_SIZES:
        raise ValueError(f"input size {input_size} not in {sorted(INPUT_SIZES)}")
    return PatchCNN(input_size, patch_size)


def randomize_batch_norms(model: nn.Module) -> None:
    """Batch-norm statistics and affine parameters drawn like a trained model's (tests and examples of fusion)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)


def trained_looking_model(input_size: int, seed: int = 0) -> PatchCNN:
    """A float64 model in evaluation mode with batch-norm statistics and HerPN weights drawn like a trained
    model's (tests and examples of fusion: a fresh model's statistics are trivial and hide mistakes)."""
    torch.manual_seed(seed)
    model = build_model(input_size).double()
    randomize_batch_norms(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, HerPN):
                m.weight.uniform_(0.3, 1.0)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(0.5)
    return model.eval()


class ArcFace(nn.Module):
    """Additive angular margin head: logits ``s * cos(theta + m)`` for the true class, ``s * cos(theta)`` else."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5, eps: float = 1e-4):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(embedding_dim, num_classes))
        with torch.no_grad():
            self.kernel.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
        self.s, self.m, self.eps = s, m, eps

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(embeddings, dim=1) @ F.normalize(self.kernel, dim=0)
        cosine = cosine.clamp(-1 + self.eps, 1 - self.eps)
        theta = torch.acos(cosine)
        margin = torch.zeros_like(cosine).scatter_(1, labels.reshape(-1, 1), self.m)
        theta = torch.clamp(theta + margin, self.eps, math.pi - self.eps)
        return self.s * torch.cos(theta)


def jigsaw_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between student and teacher embeddings plus a batch similarity-matrix term.

    The second term asks the student's pairwise cosine similarities within the
    batch to equal the teacher's, which is what verification uses; it is the
    whole loss when the teacher's embedding width differs from the student's.
    """
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher, dim=1)
    relational = F.mse_loss(s @ s.T, t @ t.T)
    if s.shape[1] != t.shape[1]:   # a teacher of another width: only similarities can be matched
        return relational
    return (1 - (s * t).sum(1)).mean() + relational
