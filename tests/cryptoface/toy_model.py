"""A small fused CryptoFaceNet with random weights, for tests on toy rings.

16x16 inputs cut into four 8x8 patches; conv0 3->2, an identity block and a
stride-2 block with a 1x1 shortcut; 2x2 pooling; an 8-dimensional embedding.
Same topology kinds as the real model, a few hundred slots per patch.  conv0's weights are small enough that
the squared embedding norms of random and real faces spread over about 2^10 to 2^14, as a trained model's
do over a few octaves (larger ones compound through five quadratic activations into 2^40 spreads, which no
server's hint range covers).
"""

from __future__ import annotations

import numpy as np

from cryptoface.model import FusedBlock, FusedPatchCNN, FusedPatchNet, NormPolynomial, Threshold


def toy_model(seed: int = 0, embedding_dim: int = 8) -> FusedPatchCNN:
    rng = np.random.default_rng(seed)
    small = lambda *shape, s=0.12: rng.normal(size=shape) * s  # noqa: E731
    nets = []
    for _ in range(4):
        blocks = [
            FusedBlock(small(2), small(2), small(2, 2, 3, 3), 1, small(2), small(2), small(2, 2, 3, 3),
                       shortcut_scale=rng.uniform(0.3, 0.6, 2)),
            FusedBlock(small(2), small(2), small(4, 2, 3, 3), 2, small(4), small(4), small(4, 4, 3, 3),
                       shortcut_weight=small(4, 2, 1, 1), shortcut_bias=small(4)),
        ]
        nets.append(FusedPatchNet(small(2, 3, 3, 3, s=0.22), blocks, small(4), small(4),
                                  small(embedding_dim, 16, s=0.5), small(embedding_dim, s=0.1)))
    model = FusedPatchCNN(16, 8, nets, name="toy")
    return with_toy_rule(model, rng.uniform(-1, 1, (64, 3, 16, 16)))


def with_toy_rule(model, faces: np.ndarray):
    """``model`` with an "lfw" decision rule fitted on ``faces`` taken as pairs (0, 1), (2, 3), ...: the 1/sqrt
    polynomial over their squared norms and median thresholds (a toy rule: the faces are random)."""
    e = model.embed(faces)
    model.norm = NormPolynomial.fit(np.sum(e ** 2, axis=1))
    d = np.sum((model.norm.normalize(e[0::2]) - model.norm.normalize(e[1::2])) ** 2, axis=1)
    model.thresholds["lfw"] = Threshold(float(np.median(d)), model.norm)
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    model.thresholds["lfw"].exact_tau = float(np.median(np.sum((u[0::2] - u[1::2]) ** 2, axis=1)))
    return model


def toy_baseline(seed: int = 0, faces: np.ndarray | None = None):
    """An AutoFHE-style ResNet32 on 16x16 faces with random numpy weights (no torch): quadratic activations at
    every other position, the rest identities, head bias centred on ``faces`` (default: 32 random ones) so the
    embeddings spread, its value range recorded (its bootstraps' bound) and a toy "lfw" rule."""
    from cryptoface.baselines import Activation, FusedBasicBlock, FusedResNet

    rng = np.random.default_rng(seed)
    faces = rng.uniform(-1, 1, (32, 3, 16, 16)) if faces is None else faces
    k = iter(range(31))

    def act(c: int) -> Activation:
        if next(k) % 2:
            return Activation("identity")
        return Activation("quadratic", np.stack([rng.normal(0, 0.05, c), 1 + rng.normal(0, 0.05, c),
                                                 rng.normal(0, 0.05, c)]))

    blocks, planes = [], 16
    for j in range(15):
        width, stride = (16, 32, 64)[j // 5], 2 if j in (5, 10) else 1
        pad = width != planes
        blocks.append(FusedBasicBlock(rng.normal(0, 0.4 / np.sqrt(9 * planes), (width, planes, 3, 3)),
                                      rng.normal(0, 0.02, width), stride, act(width),
                                      rng.normal(0, 0.4 / np.sqrt(9 * width), (width, width, 3, 3)),
                                      rng.normal(0, 0.02, width), act(width), "zero_pad" if pad else "identity",
                                      (width - planes) // 2 if pad else 0))
        planes = width
    act0 = act(16)
    model = FusedResNet("resnet32", "autofhe", rng.normal(0, 0.3, (16, 3, 3, 3)), rng.normal(0, 0.02, 16), act0,
                        blocks, rng.normal(0, 0.3, (256, 256)), np.zeros(256), input_size=16, name="toy-autofhe")
    model.head_bias = -model.embed(faces).mean(axis=0)
    model.info["value_range"] = {"max": float(np.max(model.value_peaks(faces)))}
    return with_toy_rule(model, faces)
