"""The SQLite store: one database file, atomic enrollments, a gallery that survives restarts.

Schema (plain SQL: no SQLite-only types, no ``WITHOUT ROWID``, no ``AUTOINCREMENT``; see docs/store.md for moving
it to a server database)::

    CREATE TABLE store_meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)
    CREATE TABLE templates  (name VARCHAR(256) PRIMARY KEY, blob BLOB NOT NULL, enrolled TIMESTAMP NOT NULL)

``store_meta`` holds ``schema_version`` and the identity the store is bound to (``model``, ``params``, ``rule``:
what :meth:`~cryptoface.encrypted.Server.store_identity` gives).  Each write is one transaction, so a process
killed in the middle of an enrollment leaves the previous state; SQLite's rollback journal makes that hold
across a crash of the machine too (``synchronous = FULL``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator, Mapping

from ..errors import NameTakenError, StoreError, UnknownNameError
from .base import check_blob, check_identity, check_name, identity_mismatch

SCHEMA_VERSION = "1"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS templates (name VARCHAR(256) PRIMARY KEY, blob BLOB NOT NULL, "
    "enrolled TIMESTAMP NOT NULL)",
)


class SQLiteStore:
    """Templates in the SQLite database ``path`` (created if absent).

    One connection per store and process, serialized by a lock (a server calls it from several threads); each
    write is one transaction.  A process forked from the one that opened the store (a server's gallery worker)
    never touches the inherited connection or lock: its first call opens its own.  A file that is not a
    database of this schema raises :class:`StoreError` on open."""

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0):
        self.path, self._timeout, self._pid = Path(path), timeout, os.getpid()
        try:
            self._db = self._connect()
            with self._transaction():
                for statement in _SCHEMA:
                    self._db.execute(statement)
                row = self._db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO store_meta (key, value) VALUES ('schema_version', ?)",
                                     (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: template store schema {row[0]!r}, this code reads "
                                     f"{SCHEMA_VERSION!r}")
            self._check_columns()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: not a template store ({exc})") from None
        self._lock = threading.Lock()

    # ---- plumbing --------------------------------------------------------------------

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, exc, tb):
                db.execute("ROLLBACK" if kind is not None else "COMMIT")
                return False

        return _Tx()

    def _check_columns(self) -> None:
        for table, want in (("store_meta", ["key", "value"]), ("templates", ["name", "blob", "enrolled"])):
            have = [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]
            if have != want:
                raise StoreError(f"{self.path}: table {table} has columns {have}, a template store's has {want}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous = FULL")
        return db

    def _run(self, fn):
        if os.getpid() != self._pid:            # forked: SQLite connections must not cross a fork, nor may a lock
            self._lock, self._pid = threading.Lock(), os.getpid()   # another thread held at the fork
            try:
                self._db = self._connect()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from None
        with self._lock:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        if os.getpid() != self._pid:            # forked and never used here: the connection is the parent's
            return
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the interface ---------------------------------------------------------------

    def identity(self) -> dict[str, str]:
        """The identity this store is bound to (empty before the first :meth:`bind`)."""
        def read():
            rows = self._db.execute("SELECT key, value FROM store_meta WHERE key <> 'schema_version'").fetchall()
            return {k: v for k, v in rows}
        return self._run(read)

    def bind(self, identity: Mapping[str, str]) -> None:
        identity = check_identity(identity)

        def bind():
            with self._transaction():
                rows = self._db.execute("SELECT key, value FROM store_meta WHERE key <> 'schema_version'").fetchall()
                have = {k: v for k, v in rows}
                if have:
                    why = identity_mismatch(have, identity)
                    if why:
                        raise StoreError(f"{self.path}: {why}")
                    return
                self._db.executemany("INSERT INTO store_meta (key, value) VALUES (?, ?)", sorted(identity.items()))
        self._run(bind)

    def put(self, name: str, blob: bytes, replace: bool = False) -> None:
        name, blob = check_name(name), check_blob(blob)

        def put():
            with self._transaction():
                exists = self._db.execute("SELECT 1 FROM templates WHERE name = ?", (name,)).fetchone()
                if exists and not replace:
                    raise NameTakenError(f"{name!r} is enrolled already; enroll with replace=True to replace it")
                if exists:
                    self._db.execute("DELETE FROM templates WHERE name = ?", (name,))
                self._db.execute("INSERT INTO templates (name, blob, enrolled) VALUES (?, ?, ?)",
                                 (name, blob, time.strftime("%Y-%m-%d %H:%M:%S")))
        self._run(put)

    def version(self) -> tuple[int, int]:
        """Changes whenever the templates change: SQLite's ``data_version`` (commits by other connections,
        other processes included) and this connection's own count of changed rows."""
        return self._run(lambda: (self._db.execute("PRAGMA data_version").fetchone()[0], self._db.total_changes))

    def get(self, name: str) -> bytes:
        def get():
            row = self._db.execute("SELECT blob FROM templates WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownNameError(f"no template enrolled as {name!r:.60}")
            return bytes(row[0])
        return self._run(get)

    def delete(self, name: str) -> None:
        def delete():
            with self._transaction():
                if self._db.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount != 1:
                    raise UnknownNameError(f"no template enrolled as {name!r:.60}")
        self._run(delete)

    def names(self) -> list[str]:
        return self._run(lambda: [r[0] for r in self._db.execute("SELECT name FROM templates ORDER BY name")])

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._run(lambda: self._db.execute("SELECT 1 FROM templates WHERE name = ?", (name,)).fetchone()
                         is not None)

    def __len__(self) -> int:
        return self._run(lambda: self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
