"""Execution backends: where the patch groups of one encrypted face run.

A backend takes the planned chains (:class:`fhe_ckks.nn.planner.EncryptedModel`,
one per patch group), the server's evaluator and encoder, and one input
ciphertext per group, and returns each group's output ciphertext with its
per-layer wall times.  It knows nothing of roles, galleries or decisions
(it never imports :mod:`cryptoface.encrypted.protocol`).

* :class:`~.local.LocalBackend` (the default): this machine, one forked
  worker process per group at a time, sharing the keys copy-on-write.
"""

from .local import GroupResult, LocalBackend, WorkerError

__all__ = ["GroupResult", "LocalBackend", "WorkerError"]
