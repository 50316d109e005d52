"""What every execution backend provides, and how one is chosen by name.

A backend runs *tasks*: ``fn(*shared, item)`` for each item, where ``fn`` is a module-level function,
``shared`` a tuple of large read-only objects every task of the call uses (the evaluator with the
evaluation keys, the planned chains, a bootstrapper) and ``item`` the small per-task input (one
ciphertext, one batch of records).  A task returns a :class:`GroupResult`.  The local backend hands
``shared`` to forked workers through the fork (copy-on-write, never copied); the Ray backend puts each
shared object in the object store once and passes it by reference (zero-copy NumPy arrays for the workers
of a node).  :func:`run_groups` is the patch groups of one or several faces, written on top of it.

A backend knows no roles: it never imports :mod:`cryptoface.encrypted.protocol`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

from fhe_ckks.ckks.ciphertext import Ciphertext
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.evaluator import Evaluator
from fhe_ckks.nn.planner import EncryptedModel

from ...errors import CryptoFaceError

__all__ = ["Backend", "GroupResult", "WorkerError", "BackendError", "run_group", "reporting", "make_backend",
           "BACKENDS"]

#: The backends :func:`make_backend` knows by name.
BACKENDS = ("local", "ray")


class WorkerError(CryptoFaceError, RuntimeError):
    """A worker process (or node) failed or died while evaluating a task, and it was not retried."""


class BackendError(CryptoFaceError, RuntimeError):
    """A backend cannot be started: an unknown name, an absent optional package, an unreachable cluster."""


@dataclass
class GroupResult:
    """One task's output ciphertext and the wall time of each of its stages (a patch group: its layers)."""

    ciphertext: Ciphertext
    seconds: dict[str, float] = field(default_factory=dict)


#: Where a running task reports its finished stages (a layer's name): set by the backend around a task run in
#: this process, or in a worker to a pipe back to the backend's process; None: nobody listens.
_reporter: Callable[[str], None] | None = None


@contextmanager
def reporting(to: Callable[[str], None] | None) -> Iterator[None]:
    """Stages finished by tasks run in this process within the block are reported ``to(stage)``."""
    global _reporter
    before, _reporter = _reporter, to
    try:
        yield
    finally:
        _reporter = before


class _Seconds(dict):
    """A stage-times dict that reports each finished stage (a patch network's layers, as they finish)."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if _reporter is not None:
            _reporter(str(key))


def run_group(evaluator: Evaluator, encoder: Encoder, model: EncryptedModel, ct: Ciphertext) -> GroupResult:
    """One patch group's chain on its input: the body of a patch-group task (each layer reported as it
    finishes, see :func:`reporting`)."""
    seconds = _Seconds()
    out = model.run(evaluator, encoder, ct, seconds)
    return GroupResult(out, dict(seconds))


def _run_indexed(evaluator: Evaluator, encoder: Encoder, models: tuple[EncryptedModel, ...],
                 item: tuple[int, Ciphertext]) -> GroupResult:
    """Input ``i``'s chain, ``models[i % len(models)]`` (the task of :meth:`TaskRunner.run_groups`)."""
    i, ct = item
    return run_group(evaluator, encoder, models[i % len(models)], ct)


class TaskRunner:
    """What the backends share: :meth:`run_groups` on top of their own ``run_tasks``."""

    def run_groups(self, models: Sequence[EncryptedModel], evaluator: Evaluator, encoder: Encoder,
                   cts: Sequence[Ciphertext]) -> list[GroupResult]:
        """Chain ``models[i % len(models)]`` on ``cts[i]``, one task each; results in input order."""
        return self.run_tasks(_run_indexed, (evaluator, encoder, tuple(models)), list(enumerate(cts)), evaluator,
                              "patch group")


@runtime_checkable
class Backend(Protocol):
    """Where tasks run.  ``workers``: how many tasks run at once (a local backend's processes, a cluster's
    CPUs as the backend sees them when it starts)."""

    name: str
    workers: int
    #: True when tasks run in this process or in processes forked from it, so that a task may read what this
    #: process can (its objects, a store's file; the server's gallery groups read their own records then);
    #: False on a cluster, where every input travels with the task.
    forks: bool
    #: Called with a short text as work finishes (a layer of a patch group on the local backend, a task on
    #: Ray): progress bars.  None by default.
    progress: Callable[[str], None] | None

    def run_tasks(self, fn: Callable[..., GroupResult], shared: tuple, items: Sequence[Any], evaluator: Evaluator,
                  what: str = "task", setup: Callable[[int], Any] | None = None) -> list[GroupResult]:
        """``fn(*shared, items[i])`` for every i (or ``fn(*shared, setup(i))``, ``setup`` run in the calling
        process just before task i is handed out: what must not leave this process, a database connection,
        is read there); results in item order.  The project's own errors raised by a task are raised here as
        they were raised; a worker that died is retried where the backend can, else a :class:`WorkerError`."""

    def run_groups(self, models: Sequence[EncryptedModel], evaluator: Evaluator, encoder: Encoder,
                   cts: Sequence[Ciphertext]) -> list[GroupResult]:
        """Chain ``models[i % len(models)]`` on ``cts[i]`` for every i (the groups of one face, or of several
        faces one after the other); results in input order."""

    def close(self) -> None:
        """Let go of what the backend holds (worker processes, object-store references)."""


def make_backend(name: str = "local", *, workers: int | None = None, address: str | None = None) -> Backend:
    """A backend by name: ``"local"`` (forked workers on this machine, ``workers`` of them, default one per
    core) or ``"ray"`` (the Ray cluster at ``address``; none: a local Ray instance started for this process;
    needs the ``ray`` extra)."""
    if name == "local":
        if address is not None:
            raise BackendError("--ray-address is for the ray backend")
        from .local import LocalBackend

        return LocalBackend(workers)
    if name == "ray":
        from .ray import RayBackend

        return RayBackend(address=address, workers=workers)
    raise BackendError(f"unknown backend {name!r}: one of {', '.join(BACKENDS)}")
