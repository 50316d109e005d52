"""A model file: named float arrays plus a JSON manifest, in one ``.npz``.

This is the only way weights cross from a training framework to the encrypted
side.  The format is deliberately plain:

* every tensor is an ordinary ``.npz`` member (float64, float32, int64 or
  int32, C order, finite);
* the member ``__manifest__`` holds UTF-8 JSON as a ``uint8`` array, so the file
  loads with ``numpy.load(path, allow_pickle=False)`` and nothing else;
* the manifest names the format and its version, carries the caller's
  ``schema`` (what the tensors mean, e.g. a network topology, thresholds), and
  lists each tensor with its shape, dtype and SHA-256;
* the member ``__checksum__`` (format version 2) is the SHA-256 of the
  manifest's bytes (32 ``uint8``), so the checksum covers the schema and,
  through the tensor digests, every array.

A truncated or edited file is refused with
:class:`~fhe_ckks.errors.SerializationError` instead of being half-read.  The
checksums detect accidents and careless edits, not a forger: whoever can write
the file can recompute them (authenticity needs a signature over the file, or a
trusted channel).  Version-1 files, whose manifest no checksum covers, are
refused with a message asking for a re-export.

The reader never unpickles: it opens the zip itself (at most ``MAX_BYTES``
decompressed, each member's CRC-32 checked), and reads each ``.npy`` header
before its data, so a member of another dtype (an object array), of another
layout, or whose header's shape does not match its bytes is refused before an
array is made of it.  Writes go to a temporary file in the
same folder and are renamed into place, so a reader never sees a partial file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from ..errors import SerializationError

FORMAT = "fhe_ckks.nn.modelfile"
FORMAT_VERSION = 2
MANIFEST_KEY = "__manifest__"
CHECKSUM_KEY = "__checksum__"
_DTYPES = {"float64", "float32", "int64", "int32"}
_MANIFEST_FIELDS = {"format", "format_version", "schema", "tensors"}
_ENTRY_FIELDS = {"shape", "dtype", "sha256"}
#: Most bytes a model file may hold once decompressed (a guard against zip bombs).
MAX_BYTES = 1 << 30
#: What reading a damaged zip (a bad CRC or length, an unsupported zip feature) or a crafted ``.npy`` header
#: can raise, besides SerializationError.
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile, zlib.error, RecursionError,
                NotImplementedError)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@dataclass(frozen=True)
class ModelFile:
    """A loaded model file: the caller's ``schema`` dict and its arrays."""

    schema: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(repr=False)

    def tensor(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise SerializationError(f"model file has no tensor {name!r}") from None


def write_model_file(path: str | os.PathLike, schema: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> Path:
    """Write ``tensors`` and ``schema`` (JSON-serializable) to ``path`` atomically."""
    path = Path(path)
    entries = {}
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name in (MANIFEST_KEY, CHECKSUM_KEY) or "/" in name:
            raise SerializationError(f"bad tensor name {name!r}")
        array = np.ascontiguousarray(value)
        if array.dtype.name not in _DTYPES:
            raise SerializationError(f"tensor {name!r} has dtype {array.dtype}; allowed: {sorted(_DTYPES)}")
        _check_finite(array, name)
        arrays[name] = array
        entries[name] = {"shape": list(array.shape), "dtype": array.dtype.name, "sha256": _digest(array)}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "schema": dict(schema), "tensors": entries}
    try:
        blob = json.dumps(manifest, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"schema is not plain JSON: {exc}") from exc
    arrays[MANIFEST_KEY] = np.frombuffer(blob, dtype=np.uint8)
    arrays[CHECKSUM_KEY] = np.frombuffer(hashlib.sha256(blob).digest(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes 0600; a model file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_arrays(path: str | os.PathLike | BinaryIO) -> dict[str, np.ndarray]:
    """The ``.npy`` members of a plain ``.npz`` (no manifest, e.g. converted third-party weights), read with
    the model file's checks: no unpickling, a size limit, CRC-32s, headers checked before data, no AST built;
    any damage raises :class:`SerializationError`.  Non-finite values are not refused here."""
    return _read_members(path, getattr(path, "name", path), fortran=True)


def read_model_file(path: str | os.PathLike | BinaryIO) -> ModelFile:
    """Read and verify a model file; any damage raises :class:`SerializationError` naming it."""
    name = getattr(path, "name", path)
    members = _read_members(path, name)
    blob = members.pop(MANIFEST_KEY, None)
    checksum = members.pop(CHECKSUM_KEY, None)
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise SerializationError(f"{name}: no manifest")
    manifest = _parse_manifest(blob, name)
    if checksum is None or checksum.dtype != np.uint8 or checksum.tobytes() != hashlib.sha256(blob).digest():
        raise SerializationError(f"{name}: the manifest fails its checksum (edited or damaged)")
    entries = manifest["tensors"]
    if not isinstance(entries, dict) or set(entries) != set(members):
        missing = sorted(set(entries if isinstance(entries, dict) else {}) ^ set(members))
        raise SerializationError(f"{name}: tensors and manifest disagree on {missing[:5]}")
    for key, entry in entries.items():
        array = members[key]
        if not isinstance(entry, dict) or set(entry) != _ENTRY_FIELDS or not isinstance(entry["shape"], list) \
                or not all(type(d) is int for d in entry["shape"]):
            raise SerializationError(f"{name}: malformed manifest entry for tensor {key!r}")
        if array.dtype.name not in _DTYPES:
            raise SerializationError(f"{name}: tensor {key!r} has dtype {array.dtype}; allowed: {sorted(_DTYPES)}")
        if list(array.shape) != entry["shape"] or array.dtype.name != entry["dtype"]:
            raise SerializationError(f"{name}: tensor {key!r} is {array.dtype}{list(array.shape)}, "
                                     f"manifest says {entry['dtype']}{entry['shape']}")
        if _digest(array) != entry["sha256"]:
            raise SerializationError(f"{name}: tensor {key!r} fails its checksum")
        _check_finite(array, f"{name}: tensor {key}")
    schema = manifest["schema"]
    if not isinstance(schema, dict):
        raise SerializationError(f"{name}: manifest has no schema")
    return ModelFile(schema=schema, tensors=members)


def _check_finite(array: np.ndarray, what: str) -> None:
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise SerializationError(f"{what} holds non-finite values")


def _parse_manifest(blob: np.ndarray, name) -> dict[str, Any]:
    """The manifest's JSON, of this format and version (a version-1 file is refused with a clear message)."""
    try:
        manifest = json.loads(blob.tobytes().decode())
    except (ValueError, RecursionError) as exc:       # bad UTF-8 or JSON, a huge number, nesting too deep
        raise SerializationError(f"{name}: manifest is not JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SerializationError(f"{name}: not a {FORMAT} file")
    version = manifest.get("format_version")
    if type(version) is int and version == 1:
        raise SerializationError(f"{name}: format version 1, whose manifest no checksum covers; re-export the "
                                 f"model (or read it with an older release and write it again) to get version "
                                 f"{FORMAT_VERSION}")
    if type(version) is not int or version != FORMAT_VERSION:
        raise SerializationError(f"{name}: format version {version!r}, this reader knows {FORMAT_VERSION}")
    if set(manifest) != _MANIFEST_FIELDS:
        raise SerializationError(f"{name}: manifest fields {sorted(manifest)}, expected {sorted(_MANIFEST_FIELDS)}")
    return manifest


def _read_members(source, name, fortran: bool = False) -> dict[str, np.ndarray]:
    """Every ``<key>.npy`` member of the zip as an array; a damaged or foreign archive raises SerializationError."""
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            if sum(info.file_size for info in infos) > MAX_BYTES:
                raise SerializationError(f"{name}: more than {MAX_BYTES} bytes once decompressed")
            members = {}
            for info in infos:
                key = info.filename[:-4]
                if not info.filename.endswith(".npy") or key in members:
                    raise SerializationError(f"{name}: unexpected member {info.filename!r}")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
                    raise SerializationError(f"{name}: member {info.filename!r} is encrypted or compressed "
                                             "with an unsupported method")
                raw = archive.read(info)            # whole, so that its CRC-32 is checked before it is parsed
                members[key] = _parse_npy(raw, f"{name}: member {info.filename!r}", fortran)
            return members
    except FileNotFoundError:
        raise SerializationError(f"{name}: no such model file") from None
    except SerializationError:
        raise
    except _READ_ERRORS as exc:
        raise SerializationError(f"{name}: not a readable model file ({type(exc).__name__}: {exc})") from None


# An .npy header is a Python dict literal, e.g. ``{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }``.
# numpy parses it with ``ast.literal_eval``; this reader accepts only that literal's plain form, with a regular
# expression, so no AST is built from a file's bytes (and CPython 3.11's AST constructor, which two threads
# parsing at once can make raise SystemError, is never entered: clients load model files in threads).
_NPY_VALUE = r"""'[<>|=]?[A-Za-z][0-9]{0,2}'|True|False|\(\s*(?:[0-9]{1,19}\s*,\s*)*(?:[0-9]{1,19}\s*)?\)"""
_NPY_ITEM = r"""\s*'(descr|fortran_order|shape)'\s*:\s*(%s)\s*""" % _NPY_VALUE
_NPY_MAX_HEADER = 10_000                   # numpy's own default limit on what it will literal_eval
_NPY_HEADER = re.compile(r"\{(?:%s,)*(?:%s)?\s*\}\s*" % (_NPY_ITEM, _NPY_ITEM))
_NPY_PAIR = re.compile(_NPY_ITEM)


def _npy_header(member: io.BytesIO, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran flag and dtype of an ``.npy`` member's version 1.0 or 2.0 header."""
    magic = member.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise SerializationError(f"{what}: not an .npy member")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise SerializationError(f"{what}: .npy version {version} is not supported")
    width = 2 if version == (1, 0) else 4
    size = member.read(width)
    length = int.from_bytes(size, "little")
    if length > _NPY_MAX_HEADER:
        raise SerializationError(f"{what}: its .npy header of {length} bytes is longer than {_NPY_MAX_HEADER}")
    text = member.read(length)
    if len(size) < width or len(text) < length:
        raise SerializationError(f"{what}: its .npy header is truncated")
    header = text.decode("latin1")
    if _NPY_HEADER.fullmatch(header) is None:
        raise SerializationError(f"{what}: its .npy header is not a plain tensor header")
    pairs = _NPY_PAIR.findall(header)
    items = dict(pairs)
    if len(pairs) != 3 or set(items) != {"descr", "fortran_order", "shape"}:
        raise SerializationError(f"{what}: its .npy header must name descr, fortran_order and shape once each")
    if items["descr"][0] != "'" or items["fortran_order"] not in ("True", "False") \
            or not items["shape"].startswith("("):
        raise SerializationError(f"{what}: its .npy header has a field of the wrong kind")
    try:
        dtype = np.dtype(items["descr"][1:-1])
    except (TypeError, ValueError):
        raise SerializationError(f"{what}: its .npy header names an unknown dtype {items['descr']}") from None
    shape = tuple(int(d) for d in items["shape"][1:-1].replace(",", " ").split())
    return shape, items["fortran_order"] == "True", dtype


def _parse_npy(raw: bytes, what: str, fortran: bool = False) -> np.ndarray:
    """One ``.npy`` member: its header checked (a tensor dtype, C order unless ``fortran``, a shape its bytes
    fill exactly) before an array is made of its data."""
    member = io.BytesIO(raw)
    shape, fortran_order, dtype = _npy_header(member, what)
    if dtype.name not in _DTYPES and dtype.name != "uint8" or dtype.hasobject or fortran_order and not fortran:
        raise SerializationError(f"{what}: dtype {dtype}{' in Fortran order' if fortran_order else ''} is not a "
                                 "model tensor's")
    start = member.tell()
    if math.prod(shape) * dtype.itemsize != len(raw) - start:
        raise SerializationError(f"{what}: its header's shape {shape} does not match its {len(raw) - start} bytes")
    return np.frombuffer(bytearray(raw[start:]), dtype=dtype).astype(dtype.newbyteorder("="), copy=False) \
        .reshape(shape, order="F" if fortran_order else "C")
