"""A model file: named float arrays plus a JSON manifest, in one ``.npz``.

This is the only way weights cross from a training framework to the encrypted
side.  The format is deliberately plain:

* every tensor is an ordinary ``.npz`` member (float64 or float32, C order);
* the member ``__manifest__`` holds UTF-8 JSON as a ``uint8`` array, so the file
  loads with ``numpy.load(path, allow_pickle=False)`` and nothing else;
* the manifest names the format and its version, carries the caller's
  ``schema`` (what the tensors mean, e.g. a network topology), and lists each
  tensor with its shape, dtype and SHA-256, so a truncated or edited file is
  refused with :class:`~fhe_ckks.errors.SerializationError` instead of being
  half-read.

Writes go to a temporary file in the same folder and are renamed into place,
so a reader never sees a partial file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import SerializationError

FORMAT = "fhe_ckks.nn.modelfile"
FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"
_DTYPES = {"float64", "float32", "int64", "int32"}


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
        if not isinstance(name, str) or not name or name == MANIFEST_KEY or "/" in name:
            raise SerializationError(f"bad tensor name {name!r}")
        array = np.ascontiguousarray(value)
        if array.dtype.name not in _DTYPES:
            raise SerializationError(f"tensor {name!r} has dtype {array.dtype}; allowed: {sorted(_DTYPES)}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise SerializationError(f"tensor {name!r} holds non-finite values")
        arrays[name] = array
        entries[name] = {"shape": list(array.shape), "dtype": array.dtype.name, "sha256": _digest(array)}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "schema": dict(schema), "tensors": entries}
    try:
        blob = json.dumps(manifest, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"schema is not plain JSON: {exc}") from exc
    arrays[MANIFEST_KEY] = np.frombuffer(blob, dtype=np.uint8)
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


def read_model_file(path: str | os.PathLike | io.BytesIO) -> ModelFile:
    """Read and verify a model file; any damage raises :class:`SerializationError`."""
    name = getattr(path, "name", path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            members = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise SerializationError(f"{name}: no such model file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise SerializationError(f"{name}: not a readable model file ({exc})") from exc
    blob = members.pop(MANIFEST_KEY, None)
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise SerializationError(f"{name}: no manifest")
    try:
        manifest = json.loads(blob.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError(f"{name}: manifest is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SerializationError(f"{name}: not a {FORMAT} file")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SerializationError(f"{name}: format version {manifest.get('format_version')!r}, "
                                 f"this reader knows {FORMAT_VERSION}")
    entries = manifest.get("tensors")
    if not isinstance(entries, dict) or set(entries) != set(members):
        missing = sorted(set(entries or {}) ^ set(members))
        raise SerializationError(f"{name}: tensors and manifest disagree on {missing[:5]}")
    for key, entry in entries.items():
        array = members[key]
        if list(array.shape) != entry.get("shape") or array.dtype.name != entry.get("dtype"):
            raise SerializationError(f"{name}: tensor {key!r} is {array.dtype}{list(array.shape)}, "
                                     f"manifest says {entry.get('dtype')}{entry.get('shape')}")
        if _digest(array) != entry.get("sha256"):
            raise SerializationError(f"{name}: tensor {key!r} fails its checksum")
    schema = manifest.get("schema")
    if not isinstance(schema, dict):
        raise SerializationError(f"{name}: manifest has no schema")
    return ModelFile(schema=schema, tensors=members)
