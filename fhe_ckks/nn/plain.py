"""Plain numpy twins of the encrypted layers, on ``(B, C, H, W)`` tensors (float64).

These are the references the encrypted layers are tested against, and what
:mod:`cryptoface.model` runs as the fused plaintext model.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int | None = None) -> np.ndarray:
    """``(B, C, H, W)`` * ``(O, C, k, k)`` -> ``(B, O, H', W')`` (cross-correlation, zero padding ``k // 2``)."""
    o, c, k, _ = weight.shape
    if x.ndim != 4 or x.shape[1] != c:
        raise ShapeError(f"conv expects (B, {c}, H, W) inputs, got {x.shape}")
    pad = k // 2 if padding is None else padding
    b, _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.zeros((b, o, ho, wo), dtype=np.result_type(x, weight))
    for ky in range(k):
        for kx in range(k):
            tap = xp[:, :, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            out += np.einsum("oc,bchw->bohw", weight[:, :, ky, kx], tap, optimize=True)
    return out


def quadratic(x: np.ndarray, a1: np.ndarray, a0: np.ndarray) -> np.ndarray:
    """Per-channel monic quadratic ``x^2 + a1 x + a0`` on ``(B, C, ...)``."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * x + np.reshape(a1, shape) * x + np.reshape(a0, shape)


def channel_quadratic(x: np.ndarray, a2: np.ndarray, a1: np.ndarray, a0: np.ndarray) -> np.ndarray:
    """Per-channel ``a2 x^2 + a1 x + a0`` on ``(B, C, ...)`` (any ``a2``, 0 included)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (np.reshape(a2, shape) * x + np.reshape(a1, shape)) * x + np.reshape(a0, shape)


def zero_pad_shortcut(x: np.ndarray, out_channels: int, stride: int, offset: int) -> np.ndarray:
    """The parameter-free ResNet shortcut ("option A"): every ``stride``-th pixel of ``(B, C, H, W)``, its ``C``
    channels placed at ``offset .. offset + C - 1`` of ``out_channels`` zero channels."""
    b, c, h, w = x.shape
    if not 0 <= offset <= out_channels - c or stride < 1 or h % stride or w % stride:
        raise ShapeError(f"cannot pad {c} channels at offset {offset} into {out_channels} with stride {stride}")
    out = np.zeros((b, out_channels, h // stride, w // stride), dtype=x.dtype)
    out[:, offset:offset + c] = x[:, :, ::stride, ::stride]
    return out


def avg_pool(x: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    """Average pooling of ``(B, C, H, W)`` to ``(B, C, *out)`` (H, W multiples of ``out``)."""
    b, c, h, w = x.shape
    if h % out[0] or w % out[1]:
        raise ShapeError(f"cannot average-pool {h}x{w} to {out}")
    return x.reshape(b, c, out[0], h // out[0], out[1], w // out[1]).mean(axis=(3, 5))
