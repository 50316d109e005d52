"""Execution backends: where the patch groups of an encrypted face (and the server's other tasks) run.

A backend runs tasks ``fn(*shared, item)``: the large read-only objects of a call (the evaluator with the
evaluation keys, the planned chains of :class:`fhe_ckks.nn.planner.EncryptedModel`, a bootstrapper) are
shared, the per-task input (one ciphertext) goes by value, and each task returns its output ciphertext with
its per-stage wall times.  A backend knows nothing of roles, galleries or decisions (it never imports
:mod:`cryptoface.encrypted.protocol`).

* :class:`~.local.LocalBackend` (the default): this machine, one forked worker process per task at a time,
  sharing the keys copy-on-write.  Needs nothing installed.
* :class:`~.ray.RayBackend` (the ``ray`` extra): a Ray cluster; shared objects are put in the object store
  once and passed by reference, dead workers' tasks are retried.

:func:`make_backend` picks one by name (``--backend local|ray``, ``--ray-address``).
"""

from .base import BACKENDS, Backend, BackendError, GroupResult, WorkerError, make_backend, run_group
from .local import LocalBackend

__all__ = ["BACKENDS", "Backend", "BackendError", "GroupResult", "LocalBackend", "WorkerError", "make_backend",
           "run_group"]
