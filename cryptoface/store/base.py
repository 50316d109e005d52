"""The template store's interface and its checks."""

from __future__ import annotations

from typing import Iterator, Mapping, Protocol, runtime_checkable

from ..errors import StoreError

#: The longest name a store takes (characters), and the largest template blob (bytes).
MAX_NAME = 256
MAX_BLOB = 1 << 30


@runtime_checkable
class TemplateStore(Protocol):
    """What a server needs of its gallery.

    ``bind(identity)`` is called once by the server with its identity (strings: model digest, parameter
    fingerprint, decision rule); a store that already holds another identity refuses with
    :class:`StoreError`.  ``put`` is atomic and refuses an existing name unless ``replace``; ``delete`` of an
    unknown name raises :class:`StoreError`, as does ``get``.

    A store may also offer ``version()``: a value that changes whenever its templates change, from any process
    (:meth:`SQLiteStore.version`).  A server keeps the packed gallery ciphertexts it built from a store only while
    that value stays the same, and never without it."""

    def bind(self, identity: Mapping[str, str]) -> None: ...

    def put(self, name: str, blob: bytes, replace: bool = False) -> None: ...

    def get(self, name: str) -> bytes: ...

    def delete(self, name: str) -> None: ...

    def names(self) -> list[str]: ...

    def __contains__(self, name: object) -> bool: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[str]: ...


def check_name(name: object) -> str:
    """A template name: a non-empty ``str`` of at most :data:`MAX_NAME` printable characters."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise StoreError(f"a template name is a non-empty printable str of at most {MAX_NAME} characters, "
                         f"got {name!r:.60}")
    return name


def check_blob(blob: object) -> bytes:
    if not isinstance(blob, (bytes, bytearray, memoryview)) or not 0 < len(blob) <= MAX_BLOB:
        raise StoreError(f"a template is a non-empty serialized ciphertext of at most {MAX_BLOB} bytes")
    return bytes(blob)


def check_identity(identity: object) -> dict[str, str]:
    if not isinstance(identity, Mapping) or not identity or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in identity.items()):
        raise StoreError("a store's identity maps field names to strings")
    return dict(identity)


def identity_mismatch(have: Mapping[str, str], want: Mapping[str, str]) -> str | None:
    """Why a store bound to ``have`` cannot serve ``want``, or None."""
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if not diff:
        return None
    return ("the store holds templates of another " + ", ".join(diff) + ": "
            + "; ".join(f"{k} {have.get(k)!r:.24} here, {want.get(k)!r:.24} asked" for k in diff))
