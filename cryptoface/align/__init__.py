"""Face alignment: ordinary photos to the 112 x 112 ArcFace crops the models take.

MTCNN (:mod:`.mtcnn`, numpy) finds the face and its five landmarks; a least-squares similarity transform
(Umeyama, 1991) maps them onto the ArcFace / InsightFace template, and the photo is resampled through it
(bilinear).  This is how ``lfw.bin`` and ``../shared/data/lfw/aligned_112x112`` were made.  A photo with no face,
or with several faces of similar size, is refused with one message (:class:`~cryptoface.errors.DataError`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import ALIGNED_SIZE
from ..errors import DataError
from .mtcnn import MTCNN, Face

__all__ = ["ARCFACE_TEMPLATE", "MTCNN", "Face", "align_face", "align_photo", "pick_face", "similarity_transform",
           "warp"]

#: The five landmarks of the 112 x 112 ArcFace template (x, y): eyes, nose tip, mouth corners.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])

#: A second face at least this fraction of the widest one's width makes a photo ambiguous.
SEVERAL_FACES_RATIO = 0.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 matrix ``[s R | t]`` (rotation, uniform scale, translation) minimizing ``sum |s R src + t - dst|^2``
    (Umeyama's closed form; a reflection is never chosen)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise DataError(f"a similarity transform needs two (n, 2) point sets, n >= 2; got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var = float(np.mean(np.sum(a * a, axis=1)))
    if not var > 0:
        raise DataError("the landmarks coincide: no transform")
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    e = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ e @ vt
    scale = float(np.trace(np.diag(d) @ e)) / var
    return np.concatenate([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]], axis=1)


def warp(image: np.ndarray, matrix: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The ``size x size`` crop whose pixel (x, y) is ``image`` at ``matrix^-1 (x, y)`` (bilinear; black outside)."""
    from PIL import Image

    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    out = img.transform((size, size), Image.AFFINE, tuple(inv.reshape(-1)), resample=Image.BILINEAR)
    return np.asarray(out.convert("RGB"))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The aligned crop of the face with these five landmarks (template scaled to ``size``)."""
    return warp(image, similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)), size)


def pick_face(faces: list[Face], source: str) -> Face:
    """The one face of a photo: refused when there is none, or when another is at least half as wide."""
    if not faces:
        raise DataError(f"{source}: no face found")
    widest = max(faces, key=lambda f: f.width)
    others = [f for f in faces if f is not widest and f.width >= SEVERAL_FACES_RATIO * widest.width]
    if others:
        raise DataError(f"{source}: {len(others) + 1} faces found; give a photo of one person")
    return widest


def align_photo(image: np.ndarray, detector: MTCNN | None = None, source: str = "<photo>") -> np.ndarray:
    """An ordinary ``(H, W, 3)`` RGB photo -> the aligned 112 x 112 crop of its one face."""
    detector = MTCNN() if detector is None else detector
    return align_face(image, pick_face(detector.detect(image), source).landmarks)


def align_folder(src: str | Path, dst: str | Path, detector: MTCNN | None = None) -> dict[str, str]:
    """Align every image under ``src`` into ``dst`` (same relative paths, JPEG quality 95); returns the
    refusals ``{relative path: reason}`` (no face, several faces, not an image)."""
    from PIL import Image

    from ..data import read_image

    src, dst = Path(src), Path(dst)
    detector = MTCNN() if detector is None else detector
    refused = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        try:
            crop = align_photo(read_image(path), detector, str(rel))
        except DataError as exc:
            refused[str(rel)] = str(exc)
            continue
        out = (dst / rel).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(out, quality=95)
    return refused
