"""Intra-operation parallelism over RNS limbs, with threads.

Every Numba kernel of the ring layer is compiled with ``nogil=True``, so
Python threads run them truly in parallel.  The heavy batched kernels (NTT,
fast basis conversion, the key-switching inner product) split their limbs
into one chunk per thread through :func:`run_chunks`.  The default is one
thread: figures stay single-threaded unless :func:`set_num_threads` asks
otherwise, and results never depend on the thread count (chunks write
disjoint rows).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ..errors import ParameterError

__all__ = ["set_num_threads", "get_num_threads", "using_threads", "run_chunks"]

_threads = 1
_local = threading.local()              # a calling thread's own count (using_threads), over the default
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 256:
        raise ParameterError(f"thread count must be an int in [1, 256], got {count!r}")
    return count


def set_num_threads(count: int | None) -> None:
    """Use ``count`` threads inside batched kernels (None: every core), the process-wide default."""
    global _threads
    _threads = _check_count(os.cpu_count() or 1 if count is None else count)


def get_num_threads() -> int:
    """The thread count the calling thread's kernels use: its :func:`using_threads`, else the default."""
    return getattr(_local, "threads", None) or _threads


@contextmanager
def using_threads(count: int) -> Iterator[None]:
    """Kernels called from this thread use ``count`` threads inside the block; other threads keep theirs.

    For a process that has its cores to itself for a while (a server's single decision, a worker that
    runs alone), without changing what concurrent callers use."""
    count = _check_count(count)
    previous = getattr(_local, "threads", None)
    _local.threads = count
    try:
        yield
    finally:
        _local.threads = previous


def _pool(count: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(count)
        if pool is None:
            pool = _pools[count] = ThreadPoolExecutor(max_workers=count - 1, thread_name_prefix="fhe_ckks")
        return pool


def _forget_pools_after_fork() -> None:
    """A forked child has none of its parent's pool threads: work queued on an inherited pool would wait
    forever, so the child starts its own."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


def run_chunks(fn: Callable[[int, int], None], count: int) -> None:
    """Call ``fn(start, stop)`` on consecutive chunks covering ``[0, count)``,
    one per thread (this one runs the first), and wait for all of them."""
    threads = get_num_threads()
    chunks = min(threads, count)
    if chunks <= 1:
        fn(0, count)
        return
    pool = _pool(threads)
    bounds = [count * i // chunks for i in range(chunks + 1)]
    futures = [pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, chunks)]
    fn(bounds[0], bounds[1])
    for f in futures:
        f.result()
