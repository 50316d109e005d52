"""The Ray backend: tasks on a Ray cluster (an optional extra, ``pip install "cryptoface-fhe[ray]"``).

Each shared object of a call (the evaluator with the evaluation keys, the planned chains, a bootstrapper)
is put in Ray's object store **once** and passed to every task by reference: Ray copies it to a node the
first time a task there needs it and keeps it there, and the workers of a node read its NumPy arrays
zero-copy from the node's shared memory (read only).  A later call with the same objects reuses the same
references (kept by identity, the most recent :data:`KEPT_OBJECTS`).  The per-task input, one ciphertext or
one batch of records, goes by value.  A task sends back its output in the serialized format, as a forked
local worker does, so both backends give the same ciphertexts bit for bit.

Faults: a task whose worker process or node dies is run again (``max_retries``, Ray's own retry of system
failures; the task is a pure function of its inputs, so a rerun gives the same result).  One that still
fails is a :class:`~.base.WorkerError` naming the task; the project's own errors raised inside a task are
raised again here, typed.
"""

from __future__ import annotations

import copy
import logging
import pickle
from collections import OrderedDict
from typing import Any, Callable, Sequence

from fhe_ckks import serialize
from fhe_ckks.ckks.evaluator import Evaluator
from fhe_ckks.errors import FheError

from ...errors import CryptoFaceError
from .base import BackendError, GroupResult, TaskRunner, WorkerError

__all__ = ["RayBackend", "KEPT_OBJECTS", "pickled_bytes"]

log = logging.getLogger(__name__)

#: How many shared objects a backend keeps in the object store between calls (by identity, least recently
#: used dropped first): the evaluator, the chains, the encoder, the bootstrappers of one server, and room.
KEPT_OBJECTS = 16


def pickled_bytes(obj: object) -> int:
    """What ``obj`` occupies in the object store: its pickle (protocol 5) with the NumPy buffers counted,
    not copied (Ray stores them out of band, the same way)."""
    sizes: list[int] = []

    def buffer(b: pickle.PickleBuffer) -> bool:
        sizes.append(b.raw().nbytes)
        return False

    return len(pickle.dumps(obj, protocol=5, buffer_callback=buffer)) + sum(sizes)


def _task(fn: Callable[..., GroupResult], *args: Any) -> tuple[bytes, dict[str, float]]:
    """The body of a Ray task: ``fn(*shared, item)`` (Ray has resolved the shared references).  The shared
    objects stay as Ray hands them, read-only views of the node's shared memory; the item is copied into
    this worker (its ciphertexts are evaluated in place)."""
    *shared, item = args
    res = fn(*shared, copy.deepcopy(item))
    return serialize.dump(res.ciphertext), dict(res.seconds)


class RayBackend(TaskRunner):
    """Runs tasks on the Ray cluster at ``address`` (None: a Ray instance started for this process on this
    machine, or the one this process already joined).  ``workers``: tasks in flight at once (default: the
    cluster's CPUs when the backend starts; each task takes one CPU).  ``max_retries``: reruns of a task
    whose worker or node died.  ``init``: more keywords for ``ray.init`` (e.g. ``object_store_memory``)."""

    name = "ray"
    forks = False

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 3,
                 progress: Callable[[str], None] | None = None, **init: Any):
        try:
            import ray
        except ImportError:
            raise BackendError("the ray backend needs Ray: pip install 'cryptoface-fhe[ray]'") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, **init)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise BackendError(f"cannot reach the Ray cluster at {address or 'this machine'}: {exc}") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.address = address
        self.workers = max(1, cpus if workers is None else int(workers))
        self.max_retries = int(max_retries)
        self.progress = progress
        self._remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_task)
        self._kept: OrderedDict[object, tuple[object, Any]] = OrderedDict()
        #: bytes put in the object store as shared objects, sent as task inputs and received as outputs,
        #: since the backend started (a shared object is copied once to each node that runs a task on it)
        self.traffic = {"shared_put": 0, "task_inputs": 0, "task_outputs": 0, "tasks": 0}
        log.info("ray backend: %d CPUs in the cluster (%d node(s)), %d task(s) in flight", cpus,
                 len([n for n in ray.nodes() if n.get("Alive")]), self.workers)

    # ---- the object store ------------------------------------------------------------------

    def _ref(self, obj: object):
        """The object-store reference of a shared object, put on first use (a tuple, such as a server's
        chains, by the identity of its elements: each call may build a new tuple of the same chains)."""
        key = ("tuple", *map(id, obj)) if type(obj) is tuple else id(obj)
        kept = self._kept.get(key)
        if kept is not None and (all(a is b for a, b in zip(kept[0], obj)) if type(obj) is tuple else kept[0] is obj):
            self._kept.move_to_end(key)
            return self._kept[key][1]
        ref = self._ray.put(obj)
        self.traffic["shared_put"] += pickled_bytes(obj)
        self._kept[key] = (obj, ref)          # the object is held too: its id is not reused while kept
        while len(self._kept) > KEPT_OBJECTS:
            self._kept.popitem(last=False)
        return ref

    def close(self) -> None:
        """Drop the object-store references (and stop the Ray instance this backend started)."""
        self._kept.clear()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False

    # ---- tasks -----------------------------------------------------------------------------

    def run_tasks(self, fn: Callable[..., GroupResult], shared: tuple, items: Sequence[Any], evaluator: Evaluator,
                  what: str = "task", setup: Callable[[int], Any] | None = None) -> list[GroupResult]:
        """``fn(*shared, item)`` per item as Ray tasks, at most :attr:`workers` in flight (``setup(i)``, when
        given, runs here just before task i is submitted and replaces ``items[i]``); results in item order."""
        ray = self._ray
        refs = [self._ref(obj) for obj in shared]
        count = len(items)
        results: list[GroupResult | None] = [None] * count
        pending = list(range(count))
        running: dict[Any, int] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    i = pending.pop(0)
                    item = setup(i) if setup is not None else items[i]
                    self.traffic["task_inputs"] += pickled_bytes(item)
                    self.traffic["tasks"] += 1
                    ref = self._remote.options(name=f"{what} {i}").remote(fn, *refs, item)
                    running[ref] = i
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i = running.pop(ref)
                    results[i] = self._receive(ref, i, evaluator, what)
                    if self.progress is not None:
                        self.progress(f"{what} {i}")
        finally:
            for ref in running:              # only after a failure: stop the other tasks
                ray.cancel(ref, force=True)
        return results

    def _receive(self, ref, i: int, evaluator: Evaluator, what: str) -> GroupResult:
        ray = self._ray
        try:
            blob, seconds = ray.get(ref)
            self.traffic["task_outputs"] += len(blob)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (FheError, CryptoFaceError)):
                raise cause from None
            raise WorkerError(f"{what} {i} failed in its Ray worker: {exc}") from None
        except ray.exceptions.RayError as exc:       # a worker or node that died more often than retried
            raise WorkerError(f"the Ray worker of {what} {i} died ({type(exc).__name__}, after "
                              f"{self.max_retries} retries): {str(exc).splitlines()[0] if str(exc) else ''}") from None
        return GroupResult(serialize.load(blob, evaluator.params), dict(seconds))
