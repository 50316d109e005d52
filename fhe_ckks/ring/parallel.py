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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import ParameterError

__all__ = ["set_num_threads", "get_num_threads", "run_chunks"]

_threads = 1
_pool: ThreadPoolExecutor | None = None


def set_num_threads(count: int | None) -> None:
    """Use ``count`` threads inside batched kernels (None: every core)."""
    global _threads, _pool
    count = os.cpu_count() or 1 if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 256:
        raise ParameterError(f"thread count must be an int in [1, 256], got {count!r}")
    if count != _threads and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = count


def get_num_threads() -> int:
    return _threads


def run_chunks(fn: Callable[[int, int], None], count: int) -> None:
    """Call ``fn(start, stop)`` on consecutive chunks covering ``[0, count)``,
    one per thread, and wait for all of them."""
    global _pool
    chunks = min(_threads, count)
    if chunks <= 1:
        fn(0, count)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="fhe_ckks")
    bounds = [count * i // chunks for i in range(chunks + 1)]
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, chunks)]
    fn(bounds[0], bounds[1])
    for f in futures:
        f.result()
