"""The encrypted template store: where a server keeps its gallery.

A store holds one ciphertext blob (the versioned format of
:mod:`fhe_ckks.serialize`) per enrolled name, and the identity of what the
blobs belong to: the model's digest, the parameter fingerprint and the decision
rule.  It refuses to serve another model or other parameters.

* :class:`SQLiteStore`: one SQLite file (the stdlib :mod:`sqlite3`), atomic
  writes, survives restarts; plain SQL, so the schema moves to a server
  database unchanged (``docs/store.md``).

The interface (duck-typed: the :class:`~cryptoface.encrypted.Server` never
imports this package; its default gallery, in memory, keeps the same
interface) is :class:`TemplateStore`.
"""

from ..errors import StoreError
from .base import TemplateStore, check_name
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "StoreError", "TemplateStore", "check_name"]
