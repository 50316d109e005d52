"""Face data on the numpy side: decoding, the verification protocols, preprocessing, patches.

No torch here: the encrypted pipeline and ``benchmarks/run_lfw.py`` read data
through this module too, and :mod:`cryptoface.training` wraps it in torch
datasets.

Formats understood:

* InsightFace verification ``.bin`` files (``lfw``, ``cfp_fp``, ``cplfw``,
  ``agedb_30``, ``calfw``): a pickle of ``(bins, issame_list)`` where ``bins``
  holds two encoded images per pair.  They are read with a restricted
  unpickler that only builds lists, tuples, bytes and bools, so a hostile file
  cannot run code.  Decoding uses Pillow; mxnet is never needed.
* A raw LFW folder (``<root>/<Name>/<Name>_NNNN.jpg``) with the standard
  ``pairs.txt`` (10 folds of 300 genuine + 300 impostor pairs) and
  ``people.txt`` (the 10 identity-disjoint people sets; pair fold k uses only
  people of set k).
* ImageFolder-style training sets (one folder per identity, e.g. WebFace4M).

Images are RGB, aligned 112x112 crops (ArcFace template).  ``preprocess``
resizes them (antialiased, in float) to the model's input size and maps
``[0, 255]`` to ``[-1, 1]`` as ``(x/255 - 0.5)/0.5``, as the original does.

Decoding (:func:`decode_image`) reads JPEG, PNG, BMP, TIFF, WebP, GIF and PPM
(nothing that Pillow hands to an outside program, such as EPS) and gives 8-bit
RGB whatever the file's mode: 16-bit grey (Pillow's ``I;16``, ``I;16B``, ...,
and ``I``, which older Pillow uses for 16-bit PNGs) keeps its high byte,
``v >> 8`` (the exact inverse of the usual ``8 -> 16`` scaling ``v * 257``, and
what Pillow itself does to 16-bit RGB PNGs), instead of being clipped at 255;
grey, 1-bit, palette, CMYK and YCbCr are converted by Pillow; an alpha channel
is dropped (the colour under it is kept, as ``PIL.Image.convert("RGB")`` and
torchvision's loader do).  Anything else (float images, integers beyond 16
bits) is refused with :class:`~cryptoface.errors.DataError`, as is a file that
does not decode.  Text files (``pairs.txt``, ``people.txt``) must be UTF-8.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import DataError

VERIFICATION_DATASETS = ("lfw", "cfp_fp", "cplfw", "agedb_30", "calfw")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp")
ALIGNED_SIZE = 112
#: Pillow formats :func:`decode_image` opens (MPO: camera JPEGs with a second picture).
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM")


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a declared dependency
        raise DataError("Pillow is needed to decode images: pip install pillow") from exc
    return Image


def _open_image(data_or_file, source: str):
    """Open encoded bytes or a binary file lazily (header only); what Pillow does not recognize is a
    :class:`DataError`."""
    Image = _pil()
    Image.init()                        # registers every plugin (Image.open alone knows only five formats)
    try:
        return Image.open(io.BytesIO(data_or_file) if isinstance(data_or_file, bytes) else data_or_file,
                          formats=[f for f in IMAGE_FORMATS if f in Image.OPEN])
    except Exception as exc:  # UnidentifiedImageError, OSError, DecompressionBombError, ...
        raise DataError(f"{source}: cannot decode image ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (an OSError's without its errno and file name)."""
    return " ".join((getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).split())


def _unsupported_mode(mode: str) -> str | None:
    """Why an image of this Pillow mode cannot be read as 8-bit RGB (None: it can)."""
    if mode == "F" or mode.startswith(("I;32", "F;")):
        return f"mode {mode} (floating-point or 32-bit samples) has no agreed 0..255 range"
    return None


def _to_rgb8(img, source: str) -> np.ndarray:
    mode = img.mode
    why = _unsupported_mode(mode)
    if why:
        raise DataError(f"{source}: cannot decode image ({why})")
    if mode == "I" or mode.startswith("I;16"):
        grey = np.asarray(img)
        if grey.size and (grey.min() < 0 or grey.max() > 0xFFFF):
            raise DataError(f"{source}: cannot decode image (mode {mode} with samples outside 0..65535)")
        grey8 = (grey.astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey8[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")       # Pillow warns on a direct P -> RGB of a transparent palette
    return np.asarray(img.convert("RGB"))


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an ``(H, W, 3)`` uint8 RGB array (modes: see the module docstring)."""
    img = _open_image(bytes(data), source)
    try:
        with img:
            return _to_rgb8(img, source)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises several unrelated types for bad data (truncated, corrupt, ...)
        raise DataError(f"{source}: cannot decode image ({_reason(exc)})") from exc


def probe_image(data_or_path: bytes | str | os.PathLike, source: str, size: int | None = ALIGNED_SIZE) -> None:
    """The cheap part of :func:`decode_image`: read the header only (no pixels) and refuse what is not an
    image, a mode that cannot be read, or (when ``size`` is given) anything but a ``size x size`` crop.

    A file whose header is sound but whose pixel data are corrupt passes; decoding it raises later."""
    if isinstance(data_or_path, (bytes, bytearray)):
        _check_header(_open_image(bytes(data_or_path), source), source, size)
        return
    path = Path(data_or_path)
    if not path.is_file():
        raise DataError(f"{source}: not a regular file" if path.exists() else f"{source}: no such image")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"{source}: cannot read image ({_reason(exc)})") from exc
    with handle:
        _check_header(_open_image(handle, source), source, size)


def _check_header(img, source: str, size: int | None) -> None:
    with img:
        why = _unsupported_mode(img.mode)
        if why:
            raise DataError(f"{source}: cannot decode image ({why})")
        if size is not None and img.size != (size, size):
            raise DataError(_size_message(source, img.size, size))


def _size_message(source: str, wh: tuple[int, int], size: int) -> str:
    return (f"{source}: image is {wh[0]}x{wh[1]}, expected an aligned {size}x{size} face crop "
            f"(ArcFace template)")


def check_aligned(image: np.ndarray, source: str, size: int = ALIGNED_SIZE) -> np.ndarray:
    """Refuse anything but an aligned ``size x size`` RGB crop (e.g. a raw 250x250 LFW photo)."""
    if image.shape != (size, size, 3):
        raise DataError(_size_message(source, (image.shape[1], image.shape[0]), size))
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    return decode_image(data, str(path))


def resize_float(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of an ``(H, W, C)`` array, computed in float32."""
    if image.shape[0] == size and image.shape[1] == size:
        return image.astype(np.float32)
    Image = _pil()
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32), mode="F")
                           .resize((size, size), Image.BILINEAR)) for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)


def preprocess(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """uint8 RGB images ``(B, H, W, 3)`` -> float32 ``(B, 3, size, size)`` in ``[-1, 1]``."""
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"image {i} has shape {image.shape}, expected (H, W, 3)")
        out[i] = resize_float(image, size).transpose(2, 0, 1)
    out /= 255.0
    out -= 0.5
    out /= 0.5
    return out


def split_patches(images: np.ndarray, patch_size: int) -> np.ndarray:
    """``(B, C, S, S)`` -> ``(P, B, C, patch, patch)``, patches numbered row-major over the grid."""
    b, c, h, w = images.shape
    if h != w or h % patch_size:
        raise DataError(f"images of size {h}x{w} do not split into {patch_size}x{patch_size} patches")
    g = h // patch_size
    x = images.reshape(b, c, g, patch_size, g, patch_size)
    return np.ascontiguousarray(x.transpose(2, 4, 0, 1, 3, 5).reshape(g * g, b, c, patch_size, patch_size))


def merge_patches(patches: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split_patches`."""
    p, b, c, s, _ = patches.shape
    g = int(round(p ** 0.5))
    if g * g != p:
        raise DataError(f"{p} patches do not form a square grid")
    x = patches.reshape(g, g, b, c, s, s).transpose(2, 3, 0, 4, 1, 5)
    return np.ascontiguousarray(x.reshape(b, c, g * s, g * s))


# --------------------------------------------------------------------------- verification sets


@dataclass
class VerificationSet:
    """Pairs of face images with same/not-same labels and a fold per pair.

    Images are kept encoded (``sources`` are bytes or file paths) and decoded
    on demand, so a 12,000-image set costs its file size in memory.
    """

    name: str
    sources: list = field(repr=False)          # 2 per pair: bytes or Path
    issame: np.ndarray                          # (pairs,) bool
    folds: np.ndarray                           # (pairs,) int, 0..n_folds-1
    origin: str = ""

    def __post_init__(self):
        self.issame = np.asarray(self.issame, dtype=bool)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        if len(self.sources) != 2 * len(self.issame) or len(self.folds) != len(self.issame):
            raise DataError(f"{self.origin or self.name}: {len(self.sources)} images for {len(self.issame)} pairs")

    def __len__(self) -> int:
        return len(self.issame)

    @property
    def n_folds(self) -> int:
        return int(self.folds.max()) + 1 if len(self.folds) else 0

    def source_name(self, index: int) -> str:
        """How errors name image ``index``: its path, or ``<origin> image <index>`` for encoded bytes."""
        src = self.sources[index]
        return f"{self.origin or self.name} image {index}" if isinstance(src, (bytes, bytearray)) else str(src)

    def raw_image(self, index: int) -> np.ndarray:
        src = self.sources[index]
        if isinstance(src, (bytes, bytearray)):
            return decode_image(bytes(src), self.source_name(index))
        return read_image(src)

    def check(self, size: int = ALIGNED_SIZE) -> None:
        """Read every image's header, not its pixels (:func:`probe_image`; a file named by several pairs
        once): a :class:`DataError` names the first image that is missing, unreadable, not an image or not
        an aligned ``size x size`` crop, and says how many more are bad.  Under a second for the 12,000
        images of ``lfw.bin``, about 2 s for the 7,701 files of a raw LFW folder."""
        bad: list[str] = []
        seen: set = set()
        for j, src in enumerate(self.sources):
            if not isinstance(src, (bytes, bytearray)):
                if src in seen:
                    continue
                seen.add(src)
            try:
                probe_image(src, self.source_name(j), size)
            except DataError as exc:
                bad.append(str(exc))
        if bad:
            more = f" (and {len(bad) - 1} more bad image{'s' * (len(bad) > 2)})" if len(bad) > 1 else ""
            raise DataError(bad[0] + more)

    def pair(self, i: int, size: int) -> np.ndarray:
        """Pair ``i`` as ``(2, 3, size, size)`` float32."""
        if not 0 <= i < len(self):
            raise DataError(f"{self.name}: pair {i} out of range 0..{len(self) - 1}")
        return preprocess([self.raw_image(2 * i), self.raw_image(2 * i + 1)], size)

    def images(self, size: int, pairs: Iterable[int] | None = None) -> np.ndarray:
        """Both images of each selected pair: ``(2 * len(pairs), 3, size, size)``."""
        idx = range(len(self)) if pairs is None else list(pairs)
        return preprocess([self._aligned(j) for i in idx for j in (2 * i, 2 * i + 1)], size)

    def decodable_images(self, size: int, pairs: Iterable[int]) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """:meth:`images` of the pairs whose two images decode, and why the others do not:
        ``(images of the decoded pairs, those pairs, {pair: reason})``, in the order of ``pairs``."""
        raw, ok, failed = [], [], {}
        for i in pairs:
            try:
                both = [self._aligned(2 * i), self._aligned(2 * i + 1)]
            except DataError as exc:
                failed[i] = str(exc)
                continue
            raw += both
            ok.append(i)
        return preprocess(raw, size), ok, failed

    def _aligned(self, index: int) -> np.ndarray:
        return check_aligned(self.raw_image(index), self.source_name(index))

    def subset(self, pairs: Sequence[int]) -> "VerificationSet":
        pairs = list(pairs)
        return VerificationSet(self.name, [self.sources[j] for i in pairs for j in (2 * i, 2 * i + 1)],
                               self.issame[pairs], self.folds[pairs], self.origin)


class _BinUnpickler(pickle.Unpickler):
    """Refuses every global: an InsightFace .bin holds only containers, bytes and bools."""

    def find_class(self, module, name):  # noqa: D401
        if module in ("builtins", "__builtin__") and name in ("list", "tuple", "bytes", "bytearray", "bool"):
            return getattr(__import__("builtins"), name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a .bin file")


def load_verification_bin(path: str | os.PathLike, name: str | None = None, n_folds: int = 10) -> VerificationSet:
    """Read an InsightFace verification ``.bin`` (folds are contiguous, as in ``KFold(10)``)."""
    path = Path(path)
    name = name or path.stem
    try:
        with path.open("rb") as handle:
            obj = _BinUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:
        raise DataError(f"{path}: not an InsightFace verification .bin ({exc})") from exc
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataError(f"{path}: expected a (bins, issame_list) pair")
    bins, issame = obj
    bins = [bytes(b) if isinstance(b, (bytes, bytearray)) else b for b in bins]
    if any(not isinstance(b, bytes) for b in bins):
        raise DataError(f"{path}: image entries must be encoded bytes (an mxnet NDArray pickle needs mxnet)")
    issame = np.asarray([bool(v) for v in issame])
    if len(bins) != 2 * len(issame):
        raise DataError(f"{path}: {len(bins)} images for {len(issame)} pairs")
    folds = (np.arange(len(issame)) * n_folds) // max(len(issame), 1)
    return VerificationSet(name, bins, issame, folds, str(path))


def write_verification_bin(path: str | os.PathLike, encoded: Sequence[bytes], issame: Sequence[bool]) -> Path:
    """Write the InsightFace ``.bin`` format (used to build samples and test files)."""
    path = Path(path)
    with path.open("wb") as handle:
        pickle.dump(([bytes(b) for b in encoded], [bool(v) for v in issame]), handle, protocol=4)
    return path


def _lfw_image_path(root: Path, person: str, number: int) -> Path:
    """``<root>/<person>/<person>_NNNN`` with the first of :data:`IMAGE_SUFFIXES` (either case) that exists
    (``.jpg`` when none does: the error then names the usual file)."""
    stem = root / person / f"{person}_{number:04d}"
    for suffix in IMAGE_SUFFIXES:
        for s in (suffix, suffix.upper()):
            p = stem.with_name(stem.name + s)
            if p.exists():
                return p
    return stem.with_name(stem.name + ".jpg")


_COUNT = re.compile(r"[0-9]{1,9}")      # a count or an image number: ASCII digits, at most 9 of them


def _read_lines(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """The non-blank lines of a UTF-8 text file as ``(line number, fields)``; a file that cannot be read,
    is not UTF-8 or is empty is a :class:`DataError` naming it and ``what`` it should be."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({_reason(exc)})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        f"expected {what}") from None
    lines = [(n, ln.split()) for n, ln in enumerate(text.removeprefix("\ufeff").split("\n"), 1) if ln.strip()]
    if not lines:
        raise DataError(f"{path}: empty; expected {what}")
    return lines


def _count(path: Path, line: int, value: str, what: str, least: int = 1) -> int:
    if not _COUNT.fullmatch(value) or int(value) < least:
        raise DataError(f"{path}: line {line}: {what} {value!r} is not an integer of at least {least}")
    return int(value)


def _person(path: Path, line: int, name: str) -> str:
    """A person's name, which names a folder: no path separators, NUL or other control characters."""
    if name in (".", "..") or any(c in "/\\" or not c.isprintable() for c in name):
        raise DataError(f"{path}: line {line}: {name!r} is not a person's name")
    return name


def read_pairs(path: str | os.PathLike) -> list[tuple[str, int, str, int, int]]:
    """Parse LFW's ``pairs.txt``: ``[(name1, n1, name2, n2, fold), ...]`` in file order.

    Strict: UTF-8, a ``FOLDS PAIRS_PER_FOLD`` header of positive integers, exactly ``FOLDS x 2 x
    PAIRS_PER_FOLD`` pair lines of ``NAME N1 N2`` (genuine) or ``NAME1 N1 NAME2 N2`` (impostor) with image
    numbers from 1; anything else is a :class:`DataError` naming the file and the line."""
    path = Path(path)
    what = "an LFW pairs file (a 'FOLDS PAIRS_PER_FOLD' line, then one line per pair)"
    lines = _read_lines(path, what)
    no, header = lines[0]
    if len(header) != 2:
        raise DataError(f"{path}: line {no}: expected 'FOLDS PAIRS_PER_FOLD', got {' '.join(header)!r}")
    folds, per = (_count(path, no, v, "the header's count") for v in header)
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise DataError(f"{path}: not an LFW pairs file ({len(body)} pair lines, the header says "
                        f"{folds}x2x{per})")
    out = []
    for i, (no, parts) in enumerate(body):
        if len(parts) == 3:
            parts = [parts[0], parts[1], parts[0], parts[2]]
        elif len(parts) != 4:
            raise DataError(f"{path}: line {no}: expected 'NAME N1 N2' or 'NAME1 N1 NAME2 N2', got "
                            f"{' '.join(parts)!r}")
        n1, i1, n2, i2 = parts
        out.append((_person(path, no, n1), _count(path, no, i1, "image number"), _person(path, no, n2),
                    _count(path, no, i2, "image number"), i // (2 * per)))
    return out


def read_people(path: str | os.PathLike) -> list[dict[str, int]]:
    """Parse LFW's ``people.txt``: one ``{name: image count}`` per set (10 for View 2)."""
    path = Path(path)
    lines = [fields for _, fields in _read_lines(path, "an LFW people file")]
    sets, i = [], 1
    try:
        if len(lines[0]) != 1:   # View 1 files have no set count: one set
            lines, i = [["1"]] + lines, 1
        for _ in range(int(lines[0][0])):
            n = int(lines[i][0])
            sets.append({name: int(count) for name, count in lines[i + 1:i + 1 + n]})
            i += 1 + n
    except (ValueError, IndexError) as exc:
        raise DataError(f"{path}: not an LFW people file ({exc})") from exc
    return sets


def load_lfw_dir(root: str | os.PathLike, pairs_file: str | os.PathLike | None = None,
                 name: str = "lfw") -> VerificationSet:
    """A raw folder of aligned crops in LFW's layout (``<root>/<Name>/<Name>_NNNN.jpg``, or ``.png``,
    ``.pgm``, ... see :data:`IMAGE_SUFFIXES`) plus a ``pairs.txt`` in LFW's format (default:
    ``<root>/pairs.txt`` or ``<root>/../pairs.txt``), as dataset ``name``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such LFW image folder")
    if pairs_file is None:
        candidates = [root / "pairs.txt", root.parent / "pairs.txt"]
        pairs_file = next((c for c in candidates if c.exists()), candidates[0])
    pairs = read_pairs(pairs_file)
    sources, issame, folds = [], [], []
    for n1, i1, n2, i2, fold in pairs:
        for person, number in ((n1, i1), (n2, i2)):
            p = _lfw_image_path(root, person, number)
            if not p.exists():
                raise DataError(f"{p}: image named by {pairs_file} is missing")
            sources.append(p)
        issame.append(n1 == n2)
        folds.append(fold)
    return VerificationSet(name, sources, np.array(issame), np.array(folds), str(root))


def raw_folder_images(data_dir: Path) -> Path:
    """Where a raw folder's person folders are: ``aligned_112x112/``, ``lfw/`` or ``images/`` inside it,
    or the folder itself."""
    return next((data_dir / d for d in ("aligned_112x112", "lfw", "images") if (data_dir / d).is_dir()), data_dir)


def dataset_name(text: str) -> str:
    """A dataset's name as records and reports carry it: letters, digits, ``_``, ``-`` and ``.``, at most 64."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", text or ""):
        raise DataError(f"{text!r} is not a dataset name (letters, digits, '_', '-', '.'; at most 64)")
    return text


def load_verification_dir(data_dir: str | os.PathLike, datasets: Sequence[str] | None = None,
                          name: str | None = None) -> dict[str, VerificationSet]:
    """Open ``datasets`` (default ``["lfw"]``) from ``data_dir``: ``<name>.bin`` files (InsightFace).  A
    folder with a ``pairs.txt`` and none of the asked ``.bin`` files is *your own data*: a raw folder in
    LFW's layout, opened as one dataset called ``name``, else the one dataset asked for, else the folder's
    own name; it poses as ``lfw`` only when called so."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    asked = list(datasets or ["lfw"])
    if (data_dir / "pairs.txt").exists() and not any((data_dir / f"{n}.bin").exists() for n in asked):
        if datasets is not None and len(datasets) != 1:
            raise DataError(f"{data_dir}: a raw folder with pairs.txt holds one dataset, not {len(datasets)}")
        own = dataset_name(name or (datasets[0] if datasets else data_dir.resolve().name))
        return {own: load_lfw_dir(raw_folder_images(data_dir), data_dir / "pairs.txt", own)}
    if name is not None:
        raise DataError(f"{data_dir}: a name is given to a raw folder with pairs.txt, and this one has none")
    out = {}
    for name in asked:
        if name not in VERIFICATION_DATASETS:
            raise DataError(f"unknown dataset {name!r}; known: {', '.join(VERIFICATION_DATASETS)}")
        binary = data_dir / f"{name}.bin"
        if binary.exists():
            out[name] = load_verification_bin(binary, name)
        elif name == "lfw" and (data_dir / "pairs.txt").exists():
            out[name] = load_lfw_dir(raw_folder_images(data_dir), data_dir / "pairs.txt")
        else:
            raise DataError(f"{data_dir}: no {name}.bin (and no pairs.txt for a raw folder)")
    return out


# --------------------------------------------------------------------------- training sets


@dataclass
class ImageList:
    """A labelled list of image files (identity folders), with class names in label order."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def held_out(identity: str, fraction: float) -> bool:
    """Whether ``identity`` is in the held-out ``fraction`` of identities: decided by the SHA-256 of its name alone,
    so every tool (training, evaluation) draws the same split of a folder without sharing a list."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"a held-out fraction must lie in [0, 1), not {fraction!r}")
    digest = hashlib.sha256(identity.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2.0**64


def image_folder(root: str | os.PathLike, people: Iterable[str] | None = None, min_images: int = 1,
                 holdout: float = 0.0, part: str = "train") -> ImageList:
    """One sub-folder per identity.  ``people`` restricts to those identities (and must all exist).

    ``holdout`` > 0 splits the identities by :func:`held_out`: ``part="train"`` keeps the others,
    ``part="holdout"`` only the held-out ones (an identity-disjoint test set of the same folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder")
    if part not in ("train", "holdout"):
        raise DataError(f"part must be 'train' or 'holdout', not {part!r}")
    if people is None:
        names = sorted(d.name for d in root.iterdir() if d.is_dir())
    else:
        names = sorted(set(people))
        missing = [n for n in names if not (root / n).is_dir()]
        if missing:
            raise DataError(f"{root}: identity folders missing: {', '.join(missing[:5])}")
    if holdout:
        names = [n for n in names if held_out(n, holdout) == (part == "holdout")]
    paths, labels, classes = [], [], []
    for name in names:
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < min_images:
            continue
        label = len(classes)
        classes.append(name)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(f"{root}: no images found")
    return ImageList(paths, np.asarray(labels, dtype=np.int64), classes)


def folder_pairs(images: ImageList, name: str, folds: int = 10, per_fold: int = 300, seed: int = 0,
                 origin: str = "") -> VerificationSet:
    """An LFW-style verification protocol drawn from an ImageFolder's images: ``folds`` identity-disjoint folds
    (each identity in one fold), each with ``per_fold`` genuine pairs (two different images of one person) and
    ``per_fold`` impostor pairs (two people of the fold), no pair twice, deterministic in ``seed``.

    With ``image_folder(..., holdout=f, part="holdout")`` this tests a model on people of a training set's
    folder that it never saw (e.g. the CelebA identities left out of training)."""
    if folds < 2 or per_fold < 1:
        raise DataError(f"{name}: need at least 2 folds of at least 1 pair each, not {folds} x {per_fold}")
    rng = np.random.default_rng(seed)
    members: dict[int, list[int]] = {}
    for i, label in enumerate(images.labels.tolist()):
        members.setdefault(label, []).append(i)
    people = sorted(members)
    if len(people) < 2 * folds:
        raise DataError(f"{name}: {len(people)} identities cannot make {folds} folds of two or more people")
    order = rng.permutation(len(people))
    sources, issame, fold_of = [], [], []
    for k in range(folds):
        group = [people[j] for j in order[k::folds]]
        multi = [g for g in group if len(members[g]) >= 2]
        genuine_possible = sum(len(members[g]) * (len(members[g]) - 1) // 2 for g in multi)
        if genuine_possible < per_fold:
            raise DataError(f"{name}: fold {k} has only {genuine_possible} genuine pairs, {per_fold} asked")
        sizes = np.array([len(members[g]) for g in group])
        impostor_possible = (int(sizes.sum()) ** 2 - int(np.sum(sizes ** 2))) // 2
        if impostor_possible < per_fold:
            raise DataError(f"{name}: fold {k} has only {impostor_possible} impostor pairs, {per_fold} asked")
        chosen: set[tuple[int, int]] = set()
        while len(chosen) < per_fold:
            g = multi[rng.integers(len(multi))]
            a, b = rng.choice(members[g], 2, replace=False)
            chosen.add((min(a, b), max(a, b)))
        impostor: set[tuple[int, int]] = set()
        while len(impostor) < per_fold:
            g, h = rng.choice(len(group), 2, replace=False)
            a = members[group[g]][rng.integers(len(members[group[g]]))]
            b = members[group[h]][rng.integers(len(members[group[h]]))]
            impostor.add((min(a, b), max(a, b)))
        for pairs, same in ((sorted(chosen), True), (sorted(impostor), False)):
            for a, b in pairs:
                sources += [images.paths[a], images.paths[b]]
                issame.append(same)
                fold_of.append(k)
    return VerificationSet(dataset_name(name), sources, np.array(issame), np.array(fold_of), origin)


def lfw_people(people_file: str | os.PathLike, sets: Iterable[int]) -> list[str]:
    """Names in the chosen View-2 people sets (identity-disjoint from pair folds not chosen)."""
    all_sets = read_people(people_file)
    chosen = list(sets)
    for s in chosen:
        if not 0 <= s < len(all_sets):
            raise DataError(f"{people_file}: no people set {s} (has {len(all_sets)})")
    return sorted(n for s in chosen for n in all_sets[s])
