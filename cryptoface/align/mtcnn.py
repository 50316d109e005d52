"""MTCNN face detection with 5 landmarks, in numpy (Zhang et al., IEEE SPL 2016).

Three cascaded CNNs on an image pyramid: P-Net proposes 12 x 12 windows at every scale, R-Net refines the
proposals on 24 x 24 crops, O-Net on 48 x 48 crops gives the final boxes, scores and the five landmarks (eye
centres, nose tip, mouth corners).  Between the stages: non-maximum suppression, bounding-box regression, and
squaring of the boxes.  The weights are those of the ``facenet-pytorch`` wheel (:mod:`.weights`); the layer
order, the input scaling ``(x - 127.5) / 128`` and the transposed flattening before R-Net's and O-Net's dense
layers follow that port, so that its weights load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fhe_ckks.errors import SerializationError
from fhe_ckks.nn.modelfile import read_arrays

from ..errors import DataError

__all__ = ["MTCNN", "Face"]


@dataclass(frozen=True)
class Face:
    """One detection: ``box`` (x1, y1, x2, y2) in pixels, ``score`` in [0, 1], ``landmarks`` (5, 2) as (x, y):
    left eye, right eye, nose, left mouth corner, right mouth corner (left and right as seen in the image)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])


# ---- layers ---------------------------------------------------------------------------------------------------

def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Valid 2-D convolution (stride 1) of ``x`` (N, C, H, W) with ``w`` (O, C, k, k)."""
    k = w.shape[2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))       # N, C, H', W', k, k
    return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]


def _prelu(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.where(x >= 0, x, x * a.reshape(shape))


def _maxpool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Max pooling with ``ceil_mode``: a last window that runs past the edge still counts."""
    n, c, h, w = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    ph, pw = (oh - 1) * s + k - h, (ow - 1) * s + k - w
    x = np.pad(x, ((0, 0), (0, 0), (0, max(ph, 0)), (0, max(pw, 0))), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return windows.max(axis=(4, 5))[:, :, :oh, :ow]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _area_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """``img`` (C, H, W) resized to (C, h, w) by adaptive average pooling (each output pixel the mean of the
    input pixels its bin covers: bins [floor(i H / h), ceil((i + 1) H / h)))."""
    c, hh, ww = img.shape

    def bins(n_in, n_out):
        i = np.arange(n_out)
        return (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)

    (r0, r1), (c0, c1) = bins(hh, h), bins(ww, w)
    s = np.zeros((c, hh + 1, ww + 1))
    s[:, 1:, 1:] = img.cumsum(1).cumsum(2)
    total = s[:, r1][:, :, c1] - s[:, r0][:, :, c1] - s[:, r1][:, :, c0] + s[:, r0][:, :, c0]
    return total / ((r1 - r0)[:, None] * (c1 - c0)[None, :])


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap: intersection over union, or over the smaller)."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return out


class MTCNN:
    """The detector.

    Args:
        weights: the ``.npz`` of :func:`cryptoface.align.weights.convert` (default: ``~/.cryptoface/mtcnn.npz``,
            made by ``cryptoface fetch-mtcnn``).
        min_face: the smallest face looked for, in pixels.
        thresholds: the three stages' score thresholds.
        factor: the pyramid's scale step.
    """

    def __init__(self, weights: str | Path | None = None, min_face: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709):
        from .weights import NETS, default_weights_path

        path = Path(weights) if weights is not None else default_weights_path()
        if not path.is_file():
            raise DataError(f"no MTCNN weights at {path}: run 'cryptoface fetch-mtcnn' (it downloads the "
                            "facenet-pytorch wheel and converts its weights, without installing it)")
        try:
            self.w = {k: v.astype(np.float64) for k, v in read_arrays(path).items()}
        except SerializationError as exc:
            raise DataError(f"{path}: not an MTCNN weight file ({exc})") from None
        missing = [n for n in NETS if not any(k.startswith(n + ".") for k in self.w)]
        if missing:
            raise DataError(f"{path}: no weights for {', '.join(missing)}")
        self.min_face, self.thresholds, self.factor = int(min_face), tuple(thresholds), float(factor)

    # ---- the three nets ---------------------------------------------------------------------------------

    def _p(self, name: str) -> np.ndarray:
        return self.w[name]

    def pnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, H, W) -> box offsets (N, 4, h, w), face probabilities (N, h, w)."""
        p = self._p
        x = _prelu(_conv(x, p("pnet.conv1.weight"), p("pnet.conv1.bias")), p("pnet.prelu1.weight"))
        x = _maxpool(x, 2, 2)
        x = _prelu(_conv(x, p("pnet.conv2.weight"), p("pnet.conv2.bias")), p("pnet.prelu2.weight"))
        x = _prelu(_conv(x, p("pnet.conv3.weight"), p("pnet.conv3.bias")), p("pnet.prelu3.weight"))
        prob = _softmax(_conv(x, p("pnet.conv4_1.weight"), p("pnet.conv4_1.bias")), 1)[:, 1]
        return _conv(x, p("pnet.conv4_2.weight"), p("pnet.conv4_2.bias")), prob

    def rnet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, 24, 24) -> box offsets (N, 4), face probabilities (N,)."""
        p = self._p
        x = _maxpool(_prelu(_conv(x, p("rnet.conv1.weight"), p("rnet.conv1.bias")), p("rnet.prelu1.weight")), 3, 2)
        x = _maxpool(_prelu(_conv(x, p("rnet.conv2.weight"), p("rnet.conv2.bias")), p("rnet.prelu2.weight")), 3, 2)
        x = _prelu(_conv(x, p("rnet.conv3.weight"), p("rnet.conv3.bias")), p("rnet.prelu3.weight"))
        x = x.transpose(0, 3, 2, 1).reshape(len(x), -1)
        x = _prelu(x @ p("rnet.dense4.weight").T + p("rnet.dense4.bias"), p("rnet.prelu4.weight"))
        prob = _softmax(x @ p("rnet.dense5_1.weight").T + p("rnet.dense5_1.bias"), 1)[:, 1]
        return x @ p("rnet.dense5_2.weight").T + p("rnet.dense5_2.bias"), prob

    def onet(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3, 48, 48) -> box offsets (N, 4), landmarks (N, 10: five x then five y, relative), probabilities."""
        p = self._p
        x = _maxpool(_prelu(_conv(x, p("onet.conv1.weight"), p("onet.conv1.bias")), p("onet.prelu1.weight")), 3, 2)
        x = _maxpool(_prelu(_conv(x, p("onet.conv2.weight"), p("onet.conv2.bias")), p("onet.prelu2.weight")), 3, 2)
        x = _maxpool(_prelu(_conv(x, p("onet.conv3.weight"), p("onet.conv3.bias")), p("onet.prelu3.weight")), 2, 2)
        x = _prelu(_conv(x, p("onet.conv4.weight"), p("onet.conv4.bias")), p("onet.prelu4.weight"))
        x = x.transpose(0, 3, 2, 1).reshape(len(x), -1)
        x = _prelu(x @ p("onet.dense5.weight").T + p("onet.dense5.bias"), p("onet.prelu5.weight"))
        prob = _softmax(x @ p("onet.dense6_1.weight").T + p("onet.dense6_1.bias"), 1)[:, 1]
        return (x @ p("onet.dense6_2.weight").T + p("onet.dense6_2.bias"),
                x @ p("onet.dense6_3.weight").T + p("onet.dense6_3.bias"), prob)

    # ---- the cascade --------------------------------------------------------------------------------------

    @staticmethod
    def _crops(img: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The boxes' pixels (clipped to the image, 1-based inclusive corners as in the original), resized and
        scaled, and the boxes that have any (the others are dropped)."""
        _, h, w = img.shape
        b = np.trunc(boxes[:, :4]).astype(np.int64)
        x1, y1 = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
        x2, y2 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
        ok = (y2 > y1 - 1) & (x2 > x1 - 1)
        crops = [_area_resize(img[:, y1[k] - 1:y2[k], x1[k] - 1:x2[k]], size, size) for k in np.flatnonzero(ok)]
        out = np.stack(crops) if crops else np.zeros((0, 3, size, size))
        return (out - 127.5) * 0.0078125, boxes[ok]

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces in an ``(H, W, 3)`` uint8 RGB image, best score first."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 12 or image.shape[1] < 12:
            raise DataError(f"MTCNN takes an (H, W, 3) image of at least 12 x 12 pixels, got {image.shape}")
        img = image.astype(np.float64).transpose(2, 0, 1)
        _, h, w = img.shape
        m = 12.0 / self.min_face
        scales, side = [], min(h, w) * m
        scale = m
        while side >= 12:
            scales.append(scale)
            scale, side = scale * self.factor, side * self.factor
        # stage 1: P-Net over the pyramid
        found = []
        for scale in scales:
            small = (_area_resize(img, int(h * scale + 1), int(w * scale + 1)) - 127.5) * 0.0078125
            reg, prob = self.pnet(small[None])
            ys, xs = np.nonzero(prob[0] >= self.thresholds[0])
            if not len(ys):
                continue
            cells = np.stack([xs, ys], axis=1).astype(np.float64)
            q1, q2 = np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)
            boxes = np.concatenate([q1, q2, prob[0, ys, xs][:, None], reg[0][:, ys, xs].T], axis=1)
            found.append(boxes[_nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not found:
            return []
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        boxes = np.concatenate([boxes[:, 0:2] + boxes[:, 5:7] * wh, boxes[:, 2:4] + boxes[:, 7:9] * wh,
                                boxes[:, 4:5]], axis=1)
        boxes = _square(boxes)
        # stage 2: R-Net
        crops, boxes = self._crops(img, boxes, 24)
        if not len(boxes):
            return []
        reg, prob = self.rnet(crops)
        keep = prob > self.thresholds[1]
        boxes, reg = np.concatenate([boxes[keep, :4], prob[keep, None]], axis=1), reg[keep]
        pick = _nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_regress(boxes[pick], reg[pick]))
        if not len(boxes):
            return []
        # stage 3: O-Net
        crops, boxes = self._crops(img, boxes, 48)
        if not len(boxes):
            return []
        reg, marks, prob = self.onet(crops)
        keep = prob > self.thresholds[2]
        boxes, reg, marks = np.concatenate([boxes[keep, :4], prob[keep, None]], axis=1), reg[keep], marks[keep]
        bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        points = np.stack([bw[:, None] * marks[:, :5] + boxes[:, 0:1] - 1,
                           bh[:, None] * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        boxes = _regress(boxes, reg)
        pick = _nms(boxes[:, :4], boxes[:, 4], 0.7, by_min=True)
        return [Face(boxes[k, :4].copy(), float(boxes[k, 4]), points[k].copy()) for k in pick]
