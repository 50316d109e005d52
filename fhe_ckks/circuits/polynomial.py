"""Polynomial evaluation in the Chebyshev basis with baby-step giant-step.

A polynomial ``p(x) = sum_k c_k T_k(y)``, ``y = (2x - a - b) / (b - a)`` the
affine map of the interval ``[a, b]`` onto ``[-1, 1]``, is evaluated on a
ciphertext as follows (Han & Ki, CT-RSA 2020; Bossuat et al., EUROCRYPT 2021):

1. **affine map** to y (one level, skipped when ``[a, b] = [-1, 1]``);
2. **baby steps** ``T_1 .. T_l`` with ``l = 2^ceil(log2(d + 1) / 2)``, from
   ``T_2k = 2 T_k^2 - 1`` and ``T_2k+1 = 2 T_k T_k+1 - T_1``, each formed only
   when a leaf (or a giant step) uses it;
3. **giant steps** ``T_l, T_2l, T_4l, ...`` by repeated doubling;
4. **recursion**: with ``m`` the largest giant step below the degree,
   ``p = q * T_m + r`` where, from ``T_(m+j) = 2 T_m T_j - T_(m-j)``,
   ``q_0 = c_m``, ``q_j = 2 c_(m+j)`` and ``r_(m-j) -= c_(m+j)``; q and r are
   evaluated the same way, and polynomials of degree below ``l`` are linear
   combinations of the baby steps (one constant multiplication each).

Depth: ``ceil(log2(d + 1)) + 1`` levels (+1 for the affine map); the last
level pays for the constant multiplications of the leaves.  Every operation
keeps exact scale bookkeeping through the :class:`~fhe_ckks.ckks.Evaluator`.

:class:`LevelSimulator` runs the same algorithm on levels alone, so that
:meth:`ChebyshevPolynomial.depth` is what the evaluation really consumes, not a
formula that could drift from the code.

Fitting: :func:`chebyshev_interpolant` interpolates a function at the
Chebyshev nodes of ``[a, b]`` (near-minimax), on one interval or a union of
intervals (where nodes are spread over the union and the fit is by least
squares in the Chebyshev basis).  Results are cached on disk by
:func:`cached_fit`, so that nothing is refitted at every start.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..ckks.ciphertext import Ciphertext
from ..ckks.evaluator import Evaluator
from ..errors import LevelError, ParameterError

__all__ = [
    "ChebyshevPolynomial",
    "LevelSimulator",
    "chebyshev_interpolant",
    "remez_minimax",
    "cached_fit",
]


@dataclass(frozen=True)
class ChebyshevPolynomial:
    """``sum_k coeffs[k] T_k((2x - a - b) / (b - a))`` on ``[a, b]``."""

    coeffs: tuple[float, ...]
    interval: tuple[float, float] = (-1.0, 1.0)
    _trimmed: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        c = [float(x) for x in self.coeffs]
        if not c or not all(math.isfinite(x) for x in c):
            raise ParameterError("a polynomial needs finite coefficients")
        a, b = (float(v) for v in self.interval)
        if not a < b:
            raise ParameterError(f"invalid interval [{a}, {b}]")
        while len(c) > 1 and c[-1] == 0.0:
            c.pop()
        object.__setattr__(self, "coeffs", tuple(float(x) for x in self.coeffs))
        object.__setattr__(self, "interval", (a, b))
        object.__setattr__(self, "_trimmed", tuple(c))

    @property
    def degree(self) -> int:
        return len(self._trimmed) - 1

    def _affine(self) -> tuple[float, float]:
        a, b = self.interval
        return 2.0 / (b - a), -(a + b) / (b - a)

    def evaluate_plain(self, x) -> np.ndarray:
        """The polynomial on numbers (the plaintext twin of :meth:`evaluate`)."""
        alpha, beta = self._affine()
        return np.polynomial.chebyshev.chebval(alpha * np.asarray(x) + beta, np.array(self._trimmed))

    def baby_size(self) -> int:
        d = max(self.degree, 1)
        return max(2, 1 << math.ceil(math.log2(d + 1) / 2))

    def depth(self, needs_affine: bool | None = None) -> int:
        """Levels :meth:`evaluate` consumes (from a level simulation)."""
        sim = LevelSimulator(start=10_000)
        out = self._run(sim, sim.fresh(), needs_affine)
        return 10_000 - sim.level_of(out)

    def evaluate(self, evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        """``p`` applied slot-wise to ``ct``."""
        need = self.depth()
        if ct.level < need:
            raise LevelError(f"degree-{self.degree} polynomial needs {need} levels, the ciphertext has {ct.level}")
        return self._run(_CkksOps(evaluator), ct, None)

    # ---- the algorithm, on any "ops" backend --------------------------------

    def _run(self, ops, ct, needs_affine: bool | None):
        alpha, beta = self._affine()
        if needs_affine is None:
            needs_affine = not (alpha == 1.0 and beta == 0.0)
        c = list(self._trimmed)
        if len(c) == 1:
            return ops.constant_like(ct, c[0])
        y = ops.add_const(ops.mul_const(ct, alpha), beta) if needs_affine else ct
        l = self.baby_size()
        baby = _BabySteps(ops, y)
        giants: dict[int, object] = {l: baby[l]}
        m = l
        while 2 * m <= self.degree:
            giants[2 * m] = ops.add_const(ops.mul_int(ops.square(giants[m]), 2), -1.0)
            m *= 2
        return self._recurse(ops, c, baby, giants, l)

    def _recurse(self, ops, c: list[float], baby, giants, l: int):
        degree = len(c) - 1
        if degree < l:
            return self._leaf(ops, c, baby)
        m = max(g for g in giants if g <= degree)
        q = [0.0] * (degree - m + 1)
        r = list(c[:m])
        q[0] = c[m]
        for j in range(1, degree - m + 1):
            q[j] = 2.0 * c[m + j]
            r[m - j] -= c[m + j]
        while len(r) > 1 and r[-1] == 0.0:
            r.pop()
        prod = ops.mul(self._recurse(ops, q, baby, giants, l), giants[m])
        if len(r) == 1 and r[0] == 0.0:
            return prod
        return ops.add(prod, self._recurse(ops, r, baby, giants, l))

    @staticmethod
    def _leaf(ops, c: list[float], baby):
        terms = [(baby[i], c[i]) for i in range(1, len(c)) if c[i] != 0.0]
        if not terms:
            return ops.constant_like(baby[1], c[0])
        acc = ops.linear(terms)
        return ops.add_const(acc, c[0]) if c[0] != 0.0 else acc


class _BabySteps:
    """``T_1 .. T_l``, each computed on first use (with the ones it needs):
    ``T_2k = 2 T_k^2 - 1``, ``T_2k+1 = 2 T_k T_k+1 - T_1``.  An odd
    polynomial's leaves use only odd indices, so T_10, T_12, T_14 of a
    16-step basis are never formed."""

    def __init__(self, ops, y):
        self.ops = ops
        self.steps: dict[int, object] = {1: y}

    def __getitem__(self, i: int):
        if i not in self.steps:
            ops, h = self.ops, i // 2
            if i % 2 == 0:
                self.steps[i] = ops.add_const(ops.mul_int(ops.square(self[h]), 2), -1.0)
            else:
                self.steps[i] = ops.sub(ops.mul_int(ops.mul(self[h], self[h + 1]), 2), self[1])
        return self.steps[i]


class _CkksOps:
    """The operations the algorithm needs, on real ciphertexts."""

    def __init__(self, evaluator: Evaluator):
        self.ev = evaluator

    def mul(self, a, b):
        return self.ev.rescale(self.ev.mul(a, b))

    def square(self, a):
        return self.ev.rescale(self.ev.square(a))

    def mul_const(self, a, c):
        return self.ev.rescale(self.ev.mul_const(a, c))

    def linear(self, terms):
        """``sum c_i a_i`` with one rescale: the products are summed at the
        lowest level among the a_i and at one scale (the constants absorb the
        differences), then rescaled onto the standard scale of the level
        below."""
        params = self.ev.params
        low = min(a.level for a, _ in terms)
        target = params.scale_at(low - 1) * params.q_primes[low]
        return self.ev.rescale(self.ev.linear_combination(terms, target))

    def mul_int(self, a, k):
        return self.ev.mul_int(a, int(k))

    def add(self, a, b):
        return self.ev.add(a, b)

    def sub(self, a, b):
        return self.ev.sub(a, b)

    def add_const(self, a, c):
        return self.ev.add(a, c)

    def constant_like(self, a, c):
        zero = self.ev.mul_int(a, 0)
        return self.ev.add(zero, c)


class LevelSimulator:
    """A stand-in for ciphertexts that tracks levels only (Lattigo's
    ``SimEvaluator``): it runs the same code path as the real evaluation."""

    def __init__(self, start: int):
        self.start = start

    def fresh(self) -> int:
        return self.start

    @staticmethod
    def level_of(x: int) -> int:
        return x

    def mul(self, a, b):
        return min(a, b) - 1

    def square(self, a):
        return a - 1

    def mul_const(self, a, c):
        return a - 1

    @staticmethod
    def linear(terms):
        return min(a for a, _ in terms) - 1

    def mul_int(self, a, k):
        return a

    def add(self, a, b):
        return min(a, b)

    sub = add

    def add_const(self, a, c):
        return a

    def constant_like(self, a, c):
        return a


# --------------------------------------------------------------------------
# Fitting.
# --------------------------------------------------------------------------


def chebyshev_interpolant(fn: Callable[[np.ndarray], np.ndarray], degree: int,
                          intervals: Sequence[tuple[float, float]] | tuple[float, float] = (-1.0, 1.0),
                          domain: tuple[float, float] | None = None) -> ChebyshevPolynomial:
    """Fit ``fn`` by a degree-``degree`` polynomial in the Chebyshev basis.

    One interval: interpolation at the ``degree + 1`` Chebyshev nodes (within
    a factor ``2 + (2/pi) log(d + 1)`` of minimax).  A union of intervals:
    weighted least squares on Chebyshev nodes of each piece, over the
    enclosing ``domain`` (default: the hull of the pieces).
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= 4096:
        raise ParameterError(f"degree must be an int in [0, 4096], got {degree!r}")
    pieces = [intervals] if isinstance(intervals[0], (int, float)) else list(intervals)
    pieces = [(float(a), float(b)) for a, b in pieces]
    lo = min(a for a, _ in pieces) if domain is None else float(domain[0])
    hi = max(b for _, b in pieces) if domain is None else float(domain[1])
    if len(pieces) == 1 and pieces[0] == (lo, hi):
        k = np.arange(degree + 1)
        y = np.cos(np.pi * (k + 0.5) / (degree + 1))
        x = 0.5 * (hi - lo) * y + 0.5 * (hi + lo)
        coeffs = np.polynomial.chebyshev.chebfit(y, fn(x), degree)
        return ChebyshevPolynomial(tuple(coeffs), (lo, hi))
    per_piece = 2 * (degree + 1)
    xs = []
    for a, b in pieces:
        k = np.arange(per_piece)
        xs.append(0.5 * (b - a) * np.cos(np.pi * (k + 0.5) / per_piece) + 0.5 * (a + b))
    x = np.concatenate(xs)
    y = (2 * x - lo - hi) / (hi - lo)
    coeffs = np.polynomial.chebyshev.chebfit(y, fn(x), degree)
    return ChebyshevPolynomial(tuple(coeffs), (lo, hi))


def remez_minimax(fn: Callable[[np.ndarray], np.ndarray], degree: int,
                  interval: tuple[float, float] = (-1.0, 1.0), *, iterations: int = 30,
                  grid: int = 20_000, dps: int = 50) -> tuple[ChebyshevPolynomial, float]:
    """The degree-``degree`` minimax approximation of ``fn`` on ``interval``
    by the Remez exchange algorithm; returns it and its max error.

    Each round solves ``sum_k c_k T_k(x_i) + (-1)^i E = f(x_i)`` on ``d + 2``
    reference points with mpmath at ``dps`` digits (the system is
    ill-conditioned in float64 at high degree), then moves the references to
    the alternating extrema of the error found on a dense grid.  It stops when
    the extrema equioscillate to 1e-6 relative, or when the error reaches
    float64 precision (then the exchange has nothing left to balance).  It
    starts from the Chebyshev interpolant and never returns anything worse.
    """
    import mpmath

    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= 256:
        raise ParameterError(f"degree must be an int in [1, 256], got {degree!r}")
    lo, hi = float(interval[0]), float(interval[1])
    to_y = lambda x: (2 * np.asarray(x) - lo - hi) / (hi - lo)  # noqa: E731
    k = np.arange(degree + 2)
    refs = 0.5 * (hi - lo) * -np.cos(np.pi * k / (degree + 1)) + 0.5 * (hi + lo)
    xs = np.linspace(lo, hi, grid)
    fx = fn(xs)
    start = chebyshev_interpolant(fn, degree, (lo, hi))
    best = (np.array(start.coeffs), float(np.max(np.abs(start.evaluate_plain(xs) - fx))))
    floor = 64 * np.finfo(np.float64).eps * max(1.0, float(np.max(np.abs(fx))))
    with mpmath.workdps(dps):
        for _ in range(iterations):
            ys = to_y(refs)
            rows = [[mpmath.cos(j * mpmath.acos(mpmath.mpf(float(y)))) for j in range(degree + 1)] + [(-1) ** i]
                    for i, y in enumerate(ys)]
            sol = mpmath.lu_solve(mpmath.matrix(rows), mpmath.matrix([float(v) for v in fn(refs)]))
            coeffs = np.array([float(sol[j]) for j in range(degree + 1)])
            err = np.polynomial.chebyshev.chebval(to_y(xs), coeffs) - fx
            # alternating extrema: split the grid at sign changes, take each run's peak
            sign = np.sign(err)
            sign[sign == 0] = 1
            cuts = np.flatnonzero(np.diff(sign)) + 1
            runs = np.split(np.arange(grid), cuts)
            peaks = [r[np.argmax(np.abs(err[r]))] for r in runs]
            while len(peaks) > degree + 2:  # drop the smallest end peak
                peaks = peaks[1:] if abs(err[peaks[0]]) < abs(err[peaks[-1]]) else peaks[:-1]
            err_max = float(np.max(np.abs(err)))
            if err_max < best[1]:
                best = (coeffs, err_max)
            elif err_max > 2 * best[1]:
                break  # the exchange lost track (error at float precision): keep the best
            if len(peaks) < degree + 2 or err_max <= floor:
                break
            refs = xs[np.array(peaks)]
            levels = np.abs(err[np.array(peaks)])
            if levels.max() - levels.min() <= 1e-6 * levels.max():
                break
    return ChebyshevPolynomial(tuple(best[0]), (lo, hi)), best[1]


def _cache_dir() -> Path:
    base = os.environ.get("FHE_CKKS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "fhe_ckks")
    return Path(base)


def cached_fit(key: dict, fit: Callable[[], ChebyshevPolynomial]) -> ChebyshevPolynomial:
    """Return the polynomial cached under ``key`` (a JSON-able description of
    the fit), computing and storing it with ``fit()`` on a miss.  The cache
    lives in ``$FHE_CKKS_CACHE`` (default ``~/.cache/fhe_ckks``); an
    unreadable or unwritable cache only costs a refit."""
    blob = json.dumps(key, sort_keys=True).encode()
    path = _cache_dir() / f"poly-{hashlib.sha256(blob).hexdigest()[:24]}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("key") == json.loads(blob):
            return ChebyshevPolynomial(tuple(data["coeffs"]), tuple(data["interval"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    poly = fit()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": json.loads(blob), "coeffs": list(poly.coeffs),
                                   "interval": list(poly.interval)}))
        tmp.replace(path)
    except OSError:
        pass
    return poly
