"""Teacher models for knowledge distillation, and a cache of their embeddings.

A teacher maps aligned 112x112 RGB uint8 faces to embeddings.  Three kinds:

* ``*.onnx``: run with onnxruntime (optional extra ``onnx``);
* ``*.xml``: an OpenVINO IR model (optional extra ``openvino``), e.g. Intel's
  ``face-reidentification-retail-0095`` in ``../shared/data/models``;
* ``*.npy`` / ``*.npz``: embeddings computed earlier (:func:`embed_images`
  writes them), so training needs no runtime at all.

Teacher input conventions differ from the student's, so each teacher carries a
:class:`TeacherInput`: the crop of the 112x112 ArcFace-aligned face it
expects, its size, channel order and value range.  The default matches the
Open Model Zoo face models (96x112 template -> 128x128, BGR, 0..255).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import read_image, resize_float
from ..errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherInput:
    crop_x: tuple[int, int] = (8, 104)      # the 96x112 template inside the 112x112 ArcFace crop
    crop_y: tuple[int, int] = (0, 112)
    size: int = 128
    bgr: bool = True
    scale: float = 1.0                       # multiply 0..255 by this
    offset: float = 0.0                      # then add this

    def prepare(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(faces), 3, self.size, self.size), dtype=np.float32)
        for i, face in enumerate(faces):
            crop = face[self.crop_y[0]:self.crop_y[1], self.crop_x[0]:self.crop_x[1]]
            img = resize_float(crop, self.size)
            if self.bgr:
                img = img[:, :, ::-1]
            out[i] = img.transpose(2, 0, 1) * self.scale + self.offset
        return out


class Teacher:
    """Embeds faces with an ONNX or OpenVINO model (``__call__(faces) -> (B, D)``)."""

    def __init__(self, path: str | Path, spec: TeacherInput = TeacherInput()):
        self.path, self.spec = Path(path), spec
        if not self.path.exists():
            raise ModelError(f"{self.path}: no such teacher model")
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise ModelError("an ONNX teacher needs onnxruntime: pip install onnxruntime") from exc
            session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self._run = lambda x: session.run(None, {name: x})[0]
        elif suffix == ".xml":
            try:
                import openvino as ov
            except ImportError as exc:
                raise ModelError("an OpenVINO teacher needs openvino: pip install openvino") from exc
            compiled = ov.Core().compile_model(str(self.path), "CPU")
            self._run = lambda x: compiled(x)[0]
        else:
            raise ModelError(f"{self.path}: a teacher must be .onnx or OpenVINO .xml")

    def __call__(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        x = self.spec.prepare(faces)
        rows = [np.asarray(self._run(x[i:i + 1]), dtype=np.float32).reshape(1, -1) for i in range(len(x))]
        return np.concatenate(rows)


def embed_images(teacher: Teacher, paths: Sequence[Path], out: str | Path, flips: bool = True,
                 progress: bool = True) -> Path:
    """Embed every image (and its mirror image) once, and save ``{paths, embeddings, flipped}`` to ``out``."""
    from tqdm import tqdm

    rows = []
    for p in tqdm(paths, desc="teacher", unit="img", disable=not progress):
        face = read_image(p)
        faces = [face, face[:, ::-1]] if flips else [face]
        rows.append(teacher(faces))
    emb = np.stack(rows)
    out = Path(out)
    np.savez(out, paths=np.array([str(p) for p in paths]), embeddings=emb)
    log.info("teacher embeddings %s for %d images -> %s", emb.shape, len(paths), out)
    return out


def _image_key(path: str | Path) -> str:
    """``identity/file``: an image's name inside its ImageFolder (file names alone repeat across sets)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def load_embeddings(path: str | Path | Sequence[str | Path], paths: Sequence[Path]) -> np.ndarray:
    """Embeddings ``(len(paths), F, D)`` (F = 2 with mirrored images) in the order of ``paths``.

    ``path`` is one embedding file or a list of them (e.g. one per training source); an image is found by
    its identity folder and file name, so the files may have been made anywhere.  Every file must have the
    same ``F`` and ``D``, and an image embedded in two files must have the same rows in both."""
    files = [path] if isinstance(path, (str, Path)) else list(path)
    if not files:
        raise ModelError("no teacher-embedding file given")
    index: dict[str, tuple[int, int]] = {}
    blocks = []
    for k, file in enumerate(files):
        file = Path(file)
        try:
            with np.load(file, allow_pickle=False) as f:
                stored = [str(p) for p in f["paths"]]
                emb = f["embeddings"]
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise ModelError(f"{file}: not a teacher-embedding file ({exc})") from exc
        if emb.ndim != 3 or emb.shape[0] != len(stored) or not np.isfinite(emb).all():
            raise ModelError(f"{file}: embeddings of shape {emb.shape} (finite, one row per path) expected")
        if blocks and emb.shape[1:] != blocks[0].shape[1:]:
            raise ModelError(f"{file}: embeddings {emb.shape[1:]} differ from {files[0]}'s {blocks[0].shape[1:]}")
        for i, p in enumerate(stored):
            key = _image_key(p)
            if key not in index:
                index[key] = (k, i)
                continue
            j, r = index[key]
            earlier = emb[r] if j == k else blocks[j][r]
            if not np.array_equal(earlier, emb[i]):
                raise ModelError(f"{file}: image {key} has two different teacher embeddings")
        blocks.append(emb)
    try:
        rows = [index[_image_key(p)] for p in paths]
    except KeyError as exc:
        raise ModelError(f"{', '.join(map(str, files))}: no teacher embedding for image {exc}") from None
    return np.stack([blocks[k][i] for k, i in rows]) if rows else np.empty((0,) + blocks[0].shape[1:], np.float32)
