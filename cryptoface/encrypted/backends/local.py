"""The local backend: the patch groups of one face in forked worker processes on this machine.

Each group's chain runs in a child forked for that call only, after the
evaluation keys are installed, so every child shares the parent's keys and
plaintext diagonals (copy-on-write, read only) instead of copying them.  The
child receives its chain, evaluator and input through the fork itself (no
pickling and no module-level state: two servers, or two threads each with
their own server, never see each other's models), and sends back its
group's output ciphertext in the serialized format through a pipe.

A child that dies or raises is reported as a :class:`WorkerError` naming the
group; nothing is returned half-computed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from functools import partial
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

from fhe_ckks import serialize
from fhe_ckks.ckks.evaluator import Evaluator

from fhe_ckks.errors import FheError
from fhe_ckks.ring.parallel import using_threads

from ...errors import CryptoFaceError
from . import base
from .base import GroupResult, TaskRunner, WorkerError, reporting

__all__ = ["LocalBackend"]


def _child(task: Callable[[], GroupResult], conn: Connection, report: bool, threads: int = 1) -> None:
    """The body of one forked worker: run the task with ``threads`` threads in its kernels (sending
    ``("progress", stage)`` as stages finish, when asked), then send ``("ok", blob, seconds)`` or
    ``("error", exc, text)``."""
    base._reporter = (lambda stage: conn.send(("progress", stage))) if report else None
    try:
        with using_threads(threads):
            res = task()
        conn.send(("ok", serialize.dump(res.ciphertext), res.seconds))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it typed
        text = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
        try:
            conn.send(("error", exc if isinstance(exc, (FheError, CryptoFaceError)) else None, text))
        except Exception:  # noqa: BLE001 - an exception that does not pickle travels as text
            conn.send(("error", None, text))
    finally:
        conn.close()


class LocalBackend(TaskRunner):
    """Runs patch groups on this machine: in this process (``workers=1``, or where ``fork`` is unavailable)
    or in up to ``workers`` forked processes at a time (default: one per core).

    Cores that no task would use go to the kernels' threads
    (:func:`fhe_ckks.ring.parallel.using_threads`): a single task (a verification's decision) runs in this
    process with ``workers`` threads, and fewer tasks than workers run with ``workers // tasks`` threads
    each.  Results do not depend on the thread count."""

    name = "local"
    forks = True

    def __init__(self, workers: int | None = None, progress: Callable[[str], None] | None = None):
        self.workers = max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))
        self.progress = progress

    def close(self) -> None:
        """Nothing to let go of: a worker lives for one task."""

    def run_tasks(self, fn: Callable[..., GroupResult], shared: tuple, items: Sequence[Any], evaluator: Evaluator,
                  what: str = "task", setup: Callable[[int], Any] | None = None) -> list[GroupResult]:
        """``fn(*shared, item)`` per item, each in a worker forked for it (``fn``, ``shared`` and the item reach
        it through the fork, never pickled); results in item order.  ``setup(i)``, when given, runs in this
        process just before task i's worker starts and replaces ``items[i]``: what must not be touched in a
        forked child (a database connection) is read there.  The server's gallery batches run this way."""
        count = len(items)
        workers = min(self.workers, count)

        def ready(i: int) -> Callable[[], GroupResult]:           # in this process
            return partial(fn, *shared, setup(i) if setup is not None else items[i])

        threads = max(1, self.workers // max(1, workers))
        if workers <= 1 or "fork" not in mp.get_all_start_methods():
            with reporting(self.progress), using_threads(self.workers if count == 1 else 1):
                return [ready(i)() for i in range(count)]
        ctx = mp.get_context("fork")
        results: list[GroupResult | None] = [None] * count
        pending = list(range(count))
        running: dict[Connection, tuple[int, mp.process.BaseProcess]] = {}
        try:
            while pending or running:
                while pending and len(running) < workers:
                    i = pending.pop(0)
                    task = ready(i)                              # the setup here, before the fork
                    recv, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_child, args=(task, send, self.progress is not None, threads),
                                       name=f"{what}-{i}".replace(" ", "-"), daemon=True)
                    proc.start()
                    del task                                     # the child has it: the next setup's inputs
                    send.close()                                 # are not held here beside this one's
                    running[recv] = (i, proc)
                for conn in wait(list(running)):
                    message = self._message(conn)
                    if message is not None and message[0] == "progress":
                        if self.progress is not None:
                            self.progress(message[1])
                        continue
                    i, proc = running.pop(conn)
                    results[i] = self._receive(message, conn, proc, i, evaluator, what)
        finally:
            for conn, (_, proc) in running.items():      # only after a failure: stop the other workers
                proc.kill()
                proc.join()
                conn.close()
        return results

    @staticmethod
    def _message(conn: Connection):
        """The next message of a worker, None if it died (its pipe closed without a result)."""
        try:
            return conn.recv()
        except (EOFError, OSError):
            return None

    @staticmethod
    def _receive(message, conn: Connection, proc, i: int, evaluator: Evaluator, what: str) -> GroupResult:
        """Task i's result from its worker's last message: the project's own errors are raised as they were
        raised in the child, anything else (or a dead worker) as a :class:`WorkerError`."""
        conn.close()
        proc.join()
        if message is None:
            raise WorkerError(f"the worker of {what} {i} died (exit code {proc.exitcode})")
        if message[0] != "ok":
            _, exc, text = message
            if exc is not None:
                raise exc
            raise WorkerError(f"{what} {i} failed in its worker: {text}")
        _, blob, seconds = message
        return GroupResult(serialize.load(blob, evaluator.params), dict(seconds))
