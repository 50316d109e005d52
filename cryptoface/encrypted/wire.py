"""Named byte strings in one versioned, checksummed container: the service's bodies, a stored template's parts.

A face is its ciphertexts in order (``"0"``, ``"1"``, ..., the hint last), the evaluation keys are
``{"relin", "galois", "public", "encapsulation"}``, an identification answer is one entry per enrolled
name.  Each entry's value is already an object in :mod:`fhe_ckks.serialize`'s format (checked again
where it is loaded); the container only frames them::

    b"CFBUNDLE"                    8 bytes, magic
    version                        uint16 little-endian (currently 1)
    count                          uint32 little-endian, at most MAX_ENTRIES
    count times:
        name length                uint16, 1..MAX_NAME_BYTES
        name                       UTF-8, printable
        value length               uint64
        value                      bytes
    sha256                         32 bytes, digest of everything before it

:func:`unpack` refuses (:class:`~fhe_ckks.errors.SerializationError`) a wrong magic or version, a
truncated or overlong body, a bad checksum, a repeated or bad name, and trailing bytes: nothing is
returned half-read.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterator, Mapping, Sequence

from fhe_ckks.errors import SerializationError

__all__ = ["MAX_ENTRIES", "iter_pack", "pack", "pack_list", "unpack", "unpack_list"]

MAGIC = b"CFBUNDLE"
VERSION = 1
#: At most this many entries (a gallery's answers included; a face has a handful).
MAX_ENTRIES = 1 << 20
MAX_NAME_BYTES = 1024
_HEAD = struct.Struct("<8sHI")
_NAME = struct.Struct("<H")
_VALUE = struct.Struct("<Q")
_DIGEST = 32


def iter_pack(entries: Mapping[str, bytes]) -> Iterator[bytes]:
    """The container of ``{name: bytes}`` as pieces (the values themselves, not copies), then the digest: a
    multi-GB key bundle streams out without being joined in memory."""
    if len(entries) > MAX_ENTRIES:
        raise SerializationError(f"a bundle holds at most {MAX_ENTRIES} entries")
    for name, value in entries.items():             # every name and value checked before the first piece
        _name_bytes(name)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SerializationError(f"bundle entry {name!r} is {type(value).__name__}, not bytes")
    digest = hashlib.sha256()

    def out(piece):
        digest.update(piece)
        return piece

    yield out(_HEAD.pack(MAGIC, VERSION, len(entries)))
    for name, value in entries.items():
        raw = _name_bytes(name)
        yield out(_NAME.pack(len(raw)) + raw + _VALUE.pack(len(value)))
        yield out(value)
    yield digest.digest()


def pack(entries: Mapping[str, bytes]) -> bytes:
    """``{name: bytes}`` -> one container (names in the mapping's order)."""
    return b"".join(bytes(piece) for piece in iter_pack(entries))


def pack_list(values: Sequence[bytes]) -> bytes:
    """A list of byte strings, as entries ``"0"``, ``"1"``, ..."""
    return pack({str(i): v for i, v in enumerate(values)})


def unpack(data: bytes | bytearray | memoryview, copy: bool = True) -> dict[str, bytes]:
    """The entries of one container, every framing field checked first.  ``copy=False``: the values are
    read-only ``memoryview`` slices of ``data`` (a memory-mapped key file is not copied)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"a bundle is bytes, got {type(data).__name__}")
    data = bytes(data) if copy else memoryview(data).toreadonly().cast("B")
    if len(data) < _HEAD.size + _DIGEST:
        raise SerializationError(f"a bundle has at least {_HEAD.size + _DIGEST} bytes, got {len(data)}")
    magic, version, count = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise SerializationError("not a bundle (bad magic)")
    if version != VERSION:
        raise SerializationError(f"bundle version {version} is not supported (this code reads {VERSION})")
    if count > MAX_ENTRIES:
        raise SerializationError(f"a bundle holds at most {MAX_ENTRIES} entries, this one says {count}")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != bytes(digest):
        raise SerializationError("bundle checksum mismatch (truncated or corrupted)")
    out: dict[str, bytes] = {}
    pos = _HEAD.size
    for _ in range(count):
        (n,) = _read(_NAME, body, pos)
        pos += _NAME.size
        if not 1 <= n <= MAX_NAME_BYTES or pos + n > len(body):
            raise SerializationError("a bundle entry's name is empty, too long or truncated")
        try:
            name = bytes(body[pos:pos + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise SerializationError("a bundle entry's name is not UTF-8") from None
        if not name.isprintable() or name in out:
            raise SerializationError(f"bundle entry name {name!r:.60} is repeated or not printable")
        pos += n
        (size,) = _read(_VALUE, body, pos)
        pos += _VALUE.size
        if size > len(body) - pos:
            raise SerializationError(f"bundle entry {name!r:.60} is truncated")
        out[name] = body[pos:pos + size]
        pos += size
    if pos != len(body):
        raise SerializationError(f"{len(body) - pos} trailing bytes after the bundle's entries")
    return out


def unpack_list(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The values of a :func:`pack_list` container, which must be named ``"0"``, ``"1"``, ... in order."""
    entries = unpack(data)
    if list(entries) != [str(i) for i in range(len(entries))]:
        raise SerializationError("a list bundle names its entries 0, 1, 2, ... in order")
    return list(entries.values())


def _name_bytes(name: object) -> bytes:
    if not isinstance(name, str) or not name or not name.isprintable():
        raise SerializationError(f"a bundle entry's name is a non-empty printable str, got {name!r:.60}")
    raw = name.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        raise SerializationError(f"a bundle entry's name has at most {MAX_NAME_BYTES} UTF-8 bytes")
    return raw


def _read(fmt: struct.Struct, body: bytes, pos: int) -> tuple:
    if pos + fmt.size > len(body):
        raise SerializationError("the bundle is truncated")
    return fmt.unpack_from(body, pos)
