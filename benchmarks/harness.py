"""Timing helpers shared by the benchmark scripts (not part of the library).

Conventions (see ../shared/bench/REFERENCE.md): every measured call is
preceded by an untimed warm-up call (Numba compilation or cache load), the
figure reported is the median over repeats of the *thread CPU time* (robust on
a shared, noisy machine; the kernels are single-threaded), and the wall-clock
median and the best CPU time are reported beside it (on a machine shared with
noisy neighbours, whole runs can be 50% slower; the best run is the closest
to the hardware floor).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def measure(fn: Callable[[], object], repeats: int = 15, min_seconds: float = 0.5) -> dict[str, float]:
    """Median CPU and wall time of ``fn()`` in milliseconds, after one warm-up call.

    Runs at least ``repeats`` times and at least ``min_seconds`` in total.
    """
    fn()  # warm-up: JIT compile or cache load, first-touch page faults
    cpu, wall = [], []
    start = time.perf_counter()
    while len(cpu) < repeats or (time.perf_counter() - start < min_seconds and len(cpu) < 10 * repeats):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"cpu_ms": 1e3 * statistics.median(cpu), "wall_ms": 1e3 * statistics.median(wall),
            "best_cpu_ms": 1e3 * min(cpu), "runs": len(cpu)}


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = ""
    mhz = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": model or platform.processor(),
        "cpu_mhz": mhz,
        "cores": os.cpu_count(),
    }


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_at_revision(revision: str, script: str, args: list[str], timeout: float = 3600.0) -> dict:
    """Run ``benchmarks/<script> --json <args>`` from another commit of this repository and return its record.

    The commit is checked out (detached) in a temporary ``git worktree`` and its script runs there in a
    child process with that tree first on ``PYTHONPATH``, so it measures that commit's code, on this
    machine, in this run: the same-run baseline that ratios need on a machine whose speed drifts by tens
    of percent from day to day.  Numba compiles the old code into its own cache (the untimed warm-up
    each benchmark does absorbs it).  Raises ``RuntimeError`` when the revision is unknown or its run
    fails.
    """
    repo = Path(__file__).resolve().parent.parent
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], cwd=repo,
                         capture_output=True, text=True, timeout=30)
    if rev.returncode:
        raise RuntimeError(f"unknown revision {revision!r}")
    commit = rev.stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    tree = tmp / "tree"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), commit], cwd=repo,
                       check=True, capture_output=True, timeout=120)
        env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run([sys.executable, str(tree / "benchmarks" / script), "--json", *args], cwd=tree,
                             env=env, capture_output=True, text=True, timeout=timeout)
        if out.returncode:
            raise RuntimeError(f"{script} at {commit[:10]} failed ({out.returncode}): {out.stderr[-2000:]}")
        start = out.stdout.find("{")
        record = json.loads(out.stdout[start:])
        record["revision"] = commit
        return record
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True,
                       timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def emit(record: dict, as_json: bool) -> None:
    """Print the record (with the machine and git revision added) as one
    JSON object, or as an aligned table."""
    record.setdefault("machine", machine())
    record.setdefault("git_revision", git_revision())
    if as_json:
        print(json.dumps(record, indent=2, default=str))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:<{width}}  {value}")


class TreeMemory:
    """Peak memory of this process and its children (forked workers), sampled in a thread.

    Sums the *proportional* set size (``Pss`` in ``/proc/<pid>/smaps_rollup``):
    pages that forked workers share with the parent (keys, plaintext
    diagonals) count once, not once per process.  Linux only; elsewhere the
    peak stays ``None``.

        with TreeMemory() as mem:
            ...
        mem.peak_gb
    """

    def __init__(self, interval: float = 1.0):
        import threading

        self.interval, self.peak_bytes = interval, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            for task in Path(f"/proc/{p}/task").glob("*/children"):
                try:
                    todo += [int(c) for c in task.read_text().split()]
                except OSError:
                    pass
        return out

    def sample(self) -> int | None:
        total = 0
        try:
            for pid in self._tree(os.getpid()):
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                except OSError:
                    pass
        except OSError:
            return None
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = self.sample()
            if now is not None:
                self.peak_bytes = max(self.peak_bytes or 0, now)

    def __enter__(self) -> "TreeMemory":
        self.peak_bytes = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / 1e9
