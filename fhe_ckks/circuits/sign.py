"""Homomorphic sign (comparison) by composite minimax polynomials.

sign(x) jumps at 0, so no polynomial approximates it on all of [-1, 1]; a
polynomial p approximates it on ``[-1, -eps] U [eps, 1]`` for a *margin*
eps > 0, with an error ``max |p(x) - sign(x)|`` there.  One polynomial of low
error at a small margin needs a degree of order ``log(1/err) / eps``; a
composition ``p_k o ... o p_1`` of low-degree polynomials reaches the same
error at a depth of order ``log(1/eps) + log(log(1/err))`` (Lee, Lee, Kim, No,
"Minimax approximation of sign function by composite polynomial for
homomorphic comparison", IEEE TDSC 2021).

Each stage is **odd** (sign is odd) and **minimax**: p_i is the odd polynomial
of degree d_i that minimizes ``max |p_i - 1|`` on ``[eps_i, 1]`` (the error on
the negative side is the mirror image).  It is fitted by :func:`sign_minimax`,
a Remez exchange in the basis ``T_1, T_3, ..., T_(d_i)`` on the one interval
``[eps_i, 1]``: oddness turns the two intervals of the sign into one, and the
odd Chebyshev polynomials restricted to ``x > 0`` form a Haar system, so the
minimax polynomial is the one whose error equioscillates at
``(d_i + 3) / 2`` points of ``[eps_i, 1]``.  Counting the roots of ``p_i'``
(all at those points and their mirror images) shows that p_i is increasing on
``[-eps_i, eps_i]`` and stays within ``[-1 - err_i, 1 + err_i]`` on [-1, 1].

Stage i maps ``[eps_i, 1]`` into ``[1 - err_i, 1 + err_i]``.  The inner stages
are divided by ``1 + err_i`` (free: it only changes coefficients), so that
every stage receives its input in [-1, 1], as the Chebyshev evaluator wants;
the next margin is then ``eps_(i+1) = (1 - err_i) / (1 + err_i)``.  Sign is
invariant under scaling, so this composite is the same function as the
paper's, which fits stage i+1 on ``[1 - err_i, 1 + err_i]`` unscaled.  The
last stage is not divided: its error is the composite's.

Float64 limits the fit: the error of a stage is measured as ``p(x) - 1`` in
float64, and below about 2^-40 the Remez system is too ill-conditioned to pin
the polynomial between its reference points (it may then blow up on the gap).
A stage whose minimax error on ``[eps_i, 1]`` would be below
:data:`ERROR_FLOOR` is therefore fitted on a wider interval ``[eps', 1]``
chosen so that its error is just above the floor (within a few percent):
still an exact minimax polynomial (bounded and monotone on the gap), with
about the same error on ``[eps_i, 1]``.

Below the floor, :meth:`CompositeSign.polished` appends the cubic
``f(x) = (3x - x^3) / 2`` (2 levels, 2 products): ``f(1) = 1``, ``f'(1) = 0``,
so an input ``1 +- u`` leaves as ``1 - (3/2) u^2 -+ u^3 / 2``: the error is
squared (times 3/2) and the result never exceeds 1 in absolute value (f maps
[-2, 2] into [-1, 1]).  Two polishes take 2^-20 to about 2^-78, far below the
CKKS noise, so that a flooded decryption reveals the decision and nothing
else.

Depth and products are measured by running the project's evaluator
(:class:`~fhe_ckks.circuits.polynomial.ChebyshevPolynomial`) on a level
simulator: for odd polynomials it uses 2 levels for degree 3, 3 for 5, 4 for
7 to 13, 5 for 15 to 27, 6 for 29 to 59, 7 for 61 to 119, 8 for 121 to 247
and 9 up to 255: ``ceil(log2(d + 1))``, plus one at d = 7, 15, 29 to 31,
61 to 63, 121 to 127 and 249 to 255 (the leaves' constant products take a
level of their own there).

Errors and images are propagated exactly (up to float64): the image of an
interval under a stage is found from the stage's critical points
(:func:`polynomial_range`), so :meth:`CompositeSign.error_bound` is the true
maximum of ``|p(x) - sign(x)|`` on ``[eps, 1]`` for any eps, not an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from numpy.polynomial import chebyshev as cheb

from ..ckks.ciphertext import Ciphertext
from ..ckks.evaluator import Evaluator
from ..errors import LevelError, ParameterError
from .polynomial import ChebyshevPolynomial, LevelSimulator

__all__ = ["CompositeSign", "SignStage", "sign_minimax", "polynomial_range", "ERROR_FLOOR", "POLISH"]

#: The smallest stage error that is fitted as such (see the module docstring).
#: A stage that would do better is fitted on a wider interval, to about this error.
ERROR_FLOOR = 2.0**-40
#: The polishing cubic ``(3x - x^3) / 2 = (9/8) T_1 - (1/8) T_3``.
POLISH = ChebyshevPolynomial((0.0, 9.0 / 8.0, 0.0, -1.0 / 8.0))
#: Largest degree of a fitted stage.
MAX_DEGREE = 255
#: Margins below this are refused (the first stage would be all gap).
MIN_MARGIN = 2.0**-30
#: Largest output precision a target may ask of the fitted stages (some room above the floor).
MAX_BITS = 36


class _FitFailed(Exception):
    """The exchange lost the alternation or did not level (float64 floor)."""


# --------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------


def _check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.floating)):
        raise ParameterError(f"margin must be a number in (0, 1), got {margin!r}")
    margin = float(margin)
    if not (MIN_MARGIN <= margin < 1.0):
        raise ParameterError(f"margin must lie in [2^-30, 1), got {margin!r}")
    return margin


def _check_degree(degree) -> int:
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)):
        raise ParameterError(f"a stage degree must be an int, got {degree!r}")
    degree = int(degree)
    if degree % 2 == 0 or not 3 <= degree <= MAX_DEGREE:
        raise ParameterError(f"a stage degree must be odd and in [3, {MAX_DEGREE}], got {degree}")
    return degree


def _check_bits(bits) -> float:
    if isinstance(bits, bool) or not isinstance(bits, (int, float, np.floating)) or not 0 < float(bits) <= MAX_BITS:
        raise ParameterError(f"bits must be a number in (0, {MAX_BITS}] (polish for more), got {bits!r}")
    return float(bits)


# --------------------------------------------------------------------------
# Ranges of a polynomial over an interval.
# --------------------------------------------------------------------------


def _critical_points(coeffs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Roots of p' in ``(lo, hi)``: sign changes of p' on a grid, bisected,
    then Newton-polished.  The grid is dense enough that no two roots share a
    cell: Chebyshev points of ``[lo, hi]`` (the extrema crowd towards the
    ends) and a geometric run towards ``lo`` (the features of a sign
    polynomial shrink with its margin)."""
    d1 = cheb.chebder(coeffs)
    if not hi > lo or len(d1) < 2 or not np.any(d1[1:]):
        return np.empty(0)
    xs = lo + (hi - lo) * _grid_offsets(16 * len(coeffs) + 256)
    slope = cheb.chebval(xs, d1)
    at = np.flatnonzero(np.sign(slope[1:]) * np.sign(slope[:-1]) < 0)
    left, right, s_left = xs[at], xs[at + 1], np.sign(slope[at])
    for _ in range(16):
        mid = 0.5 * (left + right)
        same = np.sign(cheb.chebval(mid, d1)) == s_left
        left, right = np.where(same, mid, left), np.where(same, right, mid)
    # then Newton inside the (now tiny) brackets: the roots are simple
    x, d2 = 0.5 * (left + right), cheb.chebder(d1)
    for _ in range(3):
        curv = cheb.chebval(x, d2)
        step = np.divide(cheb.chebval(x, d1), curv, out=np.zeros_like(x), where=curv != 0)
        x = np.clip(x - step, left, right)
    zeros = xs[1:-1][slope[1:-1] == 0]
    return np.concatenate([x, zeros])


@lru_cache(maxsize=64)
def _grid_offsets(n: int) -> np.ndarray:
    """Points of [0, 1]: n Chebyshev-Lobatto points and n geometric ones from 2^-50."""
    return np.union1d(0.5 - 0.5 * np.cos(np.pi * np.arange(n) / (n - 1)), np.geomspace(2.0**-50, 1.0, n))


def polynomial_range(poly: ChebyshevPolynomial, lo: float, hi: float) -> tuple[float, float]:
    """``(min, max)`` of ``poly`` over ``[lo, hi]``: the largest and smallest
    value at the ends and at the roots of the derivative."""
    if not lo <= hi:
        raise ParameterError(f"empty interval [{lo}, {hi}]")
    a, b = poly.interval
    coeffs = np.array(poly.coeffs)
    to_y = lambda x: (2.0 * np.asarray(x) - a - b) / (b - a)  # noqa: E731
    y_lo, y_hi = float(to_y(lo)), float(to_y(hi))
    points = np.concatenate([[y_lo, y_hi], _critical_points(coeffs, y_lo, y_hi)])
    values = cheb.chebval(points, coeffs)
    return float(values.min()), float(values.max())


# --------------------------------------------------------------------------
# The odd minimax fit.
# --------------------------------------------------------------------------


def _exchange_points(coeffs: np.ndarray, grid: np.ndarray, count: int) -> np.ndarray:
    """The new references: one extremum of the error ``p - 1`` per run of
    constant sign on the grid (moved onto the true extremum by Newton steps on
    p', kept inside its run), then the ``count`` consecutive ones that hold
    the largest error and, among those, the largest smallest one."""
    err = cheb.chebval(grid, coeffs) - 1.0
    positive = err >= 0
    starts = np.concatenate([[0], np.flatnonzero(positive[1:] != positive[:-1]) + 1])
    ends = np.append(starts[1:], len(grid))
    if len(starts) < count:
        raise _FitFailed(f"{len(starts)} alternations, {count} needed")
    magnitude = np.abs(err)
    run = np.cumsum(np.concatenate([[0], positive[1:] != positive[:-1]]))
    hits = np.flatnonzero(magnitude == np.maximum.reduceat(magnitude, starts)[run])
    peaks = hits[np.unique(run[hits], return_index=True)[1]]  # the first largest point of each run
    x = grid[peaks]
    run_lo, run_hi = grid[np.maximum(peaks - 1, starts)], grid[np.minimum(peaks + 1, ends - 1)]
    d1 = cheb.chebder(coeffs)
    d2 = cheb.chebder(d1)
    moved = x.copy()
    for _ in range(3):
        curv = cheb.chebval(moved, d2)
        step = np.divide(cheb.chebval(moved, d1), curv, out=np.zeros_like(moved), where=curv != 0)
        moved = np.clip(moved - step, run_lo, run_hi)
    moved_err = cheb.chebval(moved, coeffs) - 1.0
    better = (np.abs(moved_err) >= np.abs(err[peaks])) & ((moved_err >= 0) == positive[peaks])
    x = np.where(better, moved, x)
    level = np.abs(cheb.chebval(x, coeffs) - 1.0)
    top = int(np.argmax(level))
    windows = [w for w in range(len(x) - count + 1) if w <= top < w + count]
    best = max(windows, key=lambda w: level[w: w + count].min())
    return x[best: best + count]


def _remez_odd_sign(degree: int, margin: float, iterations: int = 40) -> tuple[np.ndarray, float]:
    """The exchange itself on ``[margin, 1]``; returns the Chebyshev
    coefficients (even ones exactly zero) and the levelled error."""
    m = (degree + 1) // 2
    odd = 2 * np.arange(m) + 1
    signs = (-1.0) ** np.arange(m + 1)
    # Start from the extrema of the Chebyshev polynomial of degree m in t = x^2 on [margin^2, 1].
    t = 0.5 * (1 + margin**2) - 0.5 * (1 - margin**2) * np.cos(np.pi * np.arange(m + 1) / m)
    refs = np.sqrt(t)
    grid = margin + (1.0 - margin) * _grid_offsets(24 * (degree + 1) + 2000)
    coeffs = np.zeros(degree + 1)
    for _ in range(iterations):
        system = np.column_stack([np.cos(np.outer(np.arccos(np.clip(refs, -1, 1)), odd)), signs])
        try:
            solution = np.linalg.solve(system, np.ones(m + 1))
        except np.linalg.LinAlgError as exc:
            raise _FitFailed("singular reference system") from exc
        coeffs[1::2] = solution[:m]
        refs = _exchange_points(coeffs, grid, m + 1)
        level = np.abs(cheb.chebval(refs, coeffs) - 1.0)
        if level.max() - level.min() <= max(1e-9 * level.max(), 2.0**-49):
            return coeffs.copy(), float(level.max())
    raise _FitFailed("the references did not level")


def _validated(coeffs: np.ndarray, margin: float) -> float:
    """The fit's max error on ``[margin, 1]``; raises :class:`_FitFailed`
    unless it equioscillates and is increasing on ``[0, margin]``."""
    poly = ChebyshevPolynomial(tuple(coeffs))
    low, high = polynomial_range(poly, margin, 1.0)
    error = max(1.0 - low, high - 1.0)
    if len(_critical_points(coeffs, 0.0, margin)) or polynomial_range(poly, 0.0, margin)[1] > 1.0 + error * (1 + 1e-6):
        raise _FitFailed("not monotone on the gap")
    return error


def sign_minimax(degree: int, margin: float) -> tuple[ChebyshevPolynomial, float]:
    """The odd degree-``degree`` minimax approximation of sign on
    ``[-1, -margin] U [margin, 1]`` and its max error there (computed from
    the critical points, not from a grid).

    Raises:
        ParameterError: an even or out-of-range degree, a margin outside
            ``[2^-30, 1)``, or a fit that float64 cannot make (an error at
            about 2^-42 or below: use a smaller margin or a lower degree;
            :meth:`CompositeSign.fit` widens the interval by itself).
    """
    degree, margin = _check_degree(degree), _check_margin(margin)
    try:
        coeffs, _ = _remez_odd_sign(degree, margin)
        return ChebyshevPolynomial(tuple(coeffs)), _validated(coeffs, margin)
    except _FitFailed as exc:
        raise ParameterError(f"degree-{degree} sign fit on [{margin}, 1] failed in float64: {exc}") from exc


@lru_cache(maxsize=4096)
def _stage_fit(degree: int, margin: float) -> tuple[tuple[float, ...], float]:
    """``(coefficients, fitted margin)`` of the minimax stage for
    ``[margin, 1]``, widened as the module docstring says when its error
    would fall below :data:`ERROR_FLOOR`.  Cached: the degree search asks for
    the same stages many times."""

    def attempt(eps: float):
        try:
            coeffs, _ = _remez_odd_sign(degree, eps)
            error = _validated(coeffs, eps)
        except _FitFailed:
            return None
        return coeffs if error >= ERROR_FLOOR else None

    found = attempt(margin)
    if found is not None:
        return tuple(found), margin
    # Widen: step the margin down in logit(eps) = log(eps / (1 - eps)) (halving the gap 1 - eps near 1,
    # halving eps near 0) until the error is above the floor, then bisect back towards the margin.
    logit = lambda e: math.log(e / (1.0 - e))  # noqa: E731
    margin_of = lambda u: 1.0 / (1.0 + math.exp(-u))  # noqa: E731
    narrow = wide = logit(margin)
    while found is None:
        narrow, wide = wide, wide - math.log(2.0)
        if margin_of(wide) < MIN_MARGIN:
            raise ParameterError(f"no float64 fit of degree {degree} at or below margin {margin}")
        found = attempt(margin_of(wide))
    best = (found, margin_of(wide))
    for _ in range(6):
        mid = 0.5 * (narrow + wide)
        trial = attempt(margin_of(mid))
        if trial is None:
            narrow = mid
        else:
            wide, best = mid, (trial, margin_of(mid))
    return tuple(best[0]), best[1]


# --------------------------------------------------------------------------
# Stages and the composite.
# --------------------------------------------------------------------------


class _ProductCounter(LevelSimulator):
    """A level simulator that also counts ciphertext products."""

    def __init__(self):
        super().__init__(start=1 << 20)
        self.products = 0

    def mul(self, a, b):
        self.products += 1
        return super().mul(a, b)

    def square(self, a):
        self.products += 1
        return super().square(a)


@lru_cache(maxsize=None)
def _cost_of_degree(degree: int) -> tuple[int, int]:
    """(levels, ciphertext products) of an odd polynomial of this degree with
    generic odd coefficients (no cancellation in the giant-step splits),
    measured on the evaluator's own code path."""
    odd = np.random.default_rng(degree).uniform(0.5, 1.5, degree + 1) * (np.arange(degree + 1) % 2)
    return _cost(ChebyshevPolynomial(tuple(odd)))


def _cost(poly: ChebyshevPolynomial) -> tuple[int, int]:
    counter = _ProductCounter()
    out = poly._run(counter, counter.fresh(), False)  # the evaluator's algorithm, on levels
    return counter.start - out, counter.products


@dataclass(frozen=True)
class SignStage:
    """One stage of a composite.

    Attributes:
        poly: the odd polynomial evaluated (on [-1, 1], Chebyshev basis).
        kind: ``"minimax"`` or ``"polish"``.
        margin: the stage's input is designed to be ``[-hi, -margin] U
            [margin, hi]``.
        error: max ``|q(x) - 1|`` on ``[margin, hi]``, where q is the stage's
            approximation of sign before the division by ``gain`` (the
            minimax error; for the polish, its output deviation).
        gain: the factor ``poly = gain * q`` (``1 / max q`` on an inner
            stage, 1 on the last one).
        fitted_on: the minimax polynomial was fitted on ``[fitted_on, 1]``
            (below ``margin`` when widened at the floor; 0 for the polish).
        hi: the upper end of the designed input (1, or ``1 + err`` after an
            undivided stage).
    """

    poly: ChebyshevPolynomial
    kind: str
    margin: float
    error: float
    gain: float = 1.0
    fitted_on: float = 0.0
    hi: float = 1.0

    @property
    def degree(self) -> int:
        return self.poly.degree

    def depth(self) -> int:
        """Levels the evaluation of this stage consumes (measured)."""
        return self.poly.depth(needs_affine=False)

    def products(self) -> int:
        """Ciphertext-ciphertext products (mul and square) it performs."""
        return _cost(self.poly)[1]

    def image(self, lo: float, hi: float) -> tuple[float, float]:
        """``poly([lo, hi])`` as ``(min, max)``."""
        return polynomial_range(self.poly, lo, hi)


def _minimax_stage(degree: int, margin: float, last: bool) -> tuple[SignStage, float]:
    """The stage fitted at ``margin`` and the lower end of its image of
    ``[margin, 1]`` (the next margin)."""
    coeffs, fitted_on = _stage_fit(degree, margin)
    q = np.array(coeffs)
    points = np.concatenate([[0.0, margin, 1.0], _critical_points(q, 0.0, 1.0)])
    values = cheb.chebval(points, q)
    inside = values[points >= margin]
    error = float(max(1.0 - inside.min(), inside.max() - 1.0))
    gain = 1.0 if last else 1.0 / float(values.max())  # the peak over [0, 1]
    poly = ChebyshevPolynomial(tuple(gain * c for c in coeffs))
    return SignStage(poly, "minimax", margin, error, gain, float(fitted_on)), gain * float(inside.min())


def _polish_deviation(low_dev: float, high_dev: float) -> float:
    """Output deviation of the cubic on inputs ``[1 - low_dev, 1 + high_dev]``
    (``0 <= low_dev <= 1``, ``0 <= high_dev <= 1``), in closed form so that
    squared errors far below float64's resolution of 1 stay exact:
    ``1 - f(1 - u) = 3u^2/2 - u^3/2`` and ``1 - f(1 + u) = 3u^2/2 + u^3/2``."""
    return max(1.5 * low_dev**2 - 0.5 * low_dev**3, 1.5 * high_dev**2 + 0.5 * high_dev**3)


@dataclass(frozen=True)
class CompositeSign:
    """``p_k o ... o p_1 ~ sign`` on ``[-1, -margin] U [margin, 1]``.

    Build one with :meth:`fit` (given degrees), :meth:`for_margin` (given a
    margin and an error, degrees chosen for the least depth, then the fewest
    products) or :meth:`mpcnn` (degrees 15, 15, 27); then :meth:`polished`
    to add error-squaring cubics.
    """

    stages: tuple[SignStage, ...]

    def __post_init__(self):
        if not self.stages or not all(isinstance(s, SignStage) for s in self.stages):
            raise ParameterError("a composite needs at least one SignStage")
        object.__setattr__(self, "stages", tuple(self.stages))

    # ---- constructors ---------------------------------------------------------

    @classmethod
    def fit(cls, degrees: Sequence[int], margin: float, *, bits: float | None = None) -> CompositeSign:
        """Fit the stages of the given odd degrees at ``margin``, each the
        minimax approximation on the image of the previous one.

        Raises:
            ParameterError: bad degrees or margin, or, with ``bits``, an
                error above ``2^-bits`` (degrees too small for the target).
        """
        margin = _check_margin(margin)
        if isinstance(degrees, (int, np.integer)) or not len(degrees):
            raise ParameterError(f"degrees must be a non-empty sequence of odd ints, got {degrees!r}")
        degrees = [_check_degree(d) for d in degrees]
        target = None if bits is None else _check_bits(bits)
        stages, eps = [], margin
        for i, d in enumerate(degrees):
            stage, low = _minimax_stage(d, eps, last=i == len(degrees) - 1)
            stages.append(stage)
            # the next stage sees [eps, 1]; a margin within the floor of 1 is fitted as 1 - floor (a superset)
            eps = min(low, 1.0 - ERROR_FLOOR)
            if not 0.0 < eps:
                raise ParameterError(f"stage {i} (degree {d}) leaves no margin")
        out = cls(tuple(stages))
        if target is not None and not out.error <= 2.0**-target:
            raise ParameterError(f"degrees {tuple(degrees)} reach 2^{-out.bits:.2f} at margin {margin}, "
                                 f"not 2^-{target:g}")
        return out

    @classmethod
    def mpcnn(cls, margin: float = 2.0**-9) -> CompositeSign:
        """Degrees (15, 15, 27), the sign of the MPCNN ReLU (Lee et al., ICML
        2022, precision alpha = 13).

        What this fit achieves: at the default margin 2^-9 the error is
        2^-13.30 (alpha = 13 holds down to a margin of 2^-9.04), at a depth
        of 15 and 24 products, and ``x (1 + p(x)) / 2`` is within 2^-13.08 of
        ReLU on all of [-1, 1].  At a margin of 2^-13 the same degrees give
        only 2^-1.17 (error 0.44), and no polynomial of degree
        15 * 15 * 27 = 6075 gets below about 0.33 there (for small margins
        the minimax error of degree 2m + 1 depends on ``m * margin`` alone;
        degrees 49, 95, 191 at the same ``m * margin = 0.37`` give 0.32 to
        0.33), so alpha = 13 cannot mean a margin of 2^-13 for these degrees.
        """
        return cls.fit((15, 15, 27), margin)

    @classmethod
    def for_margin(cls, margin: float, bits: float, *, max_degree: int = 63) -> CompositeSign:
        """The composite of degrees at most ``max_degree`` with the least
        depth whose error at ``margin`` is at most ``2^-bits``, and among
        those the fewest ciphertext products (both exact, see
        :func:`_plan`).  A few seconds for usual targets (a few hundred
        fits), cached within the process."""
        margin, target = _check_margin(margin), _check_bits(bits)
        max_degree = _check_degree(max_degree)
        return cls.fit(_plan(margin, target, max_degree), margin, bits=target)

    def polished(self, times: int = 1) -> CompositeSign:
        """This composite followed by ``times`` polishing cubics."""
        if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= 8:
            raise ParameterError(f"times must be an int in [1, 8], got {times!r}")
        if not self.error < 1.0:
            raise ParameterError("nothing to polish: the error is not below 1")
        stages = list(self.stages)
        low, high = self._deviations(self.margin)
        for _ in range(times):
            error = _polish_deviation(low, high)
            stages.append(SignStage(POLISH, "polish", 1.0 - low, error, 1.0, 0.0, 1.0 + high))
            low, high = error, 0.0
        return CompositeSign(tuple(stages))

    # ---- figures -----------------------------------------------------------------

    @property
    def degrees(self) -> tuple[int, ...]:
        return tuple(s.degree for s in self.stages)

    @property
    def margin(self) -> float:
        """The margin the composite was built for."""
        return self.stages[0].margin

    @cached_property
    def error(self) -> float:
        """``max |p(x) - sign(x)|`` for ``margin <= |x| <= 1``."""
        return self.error_bound(self.margin)

    @property
    def bits(self) -> float:
        """``-log2(error)``: the output precision at the margin."""
        return -math.log2(self.error) if self.error > 0 else math.inf

    def depth(self) -> int:
        """Levels :meth:`evaluate` consumes."""
        return sum(s.depth() for s in self.stages)

    def products(self) -> int:
        """Ciphertext-ciphertext products :meth:`evaluate` performs."""
        return sum(s.products() for s in self.stages)

    def _deviations(self, eps: float) -> tuple[float, float]:
        """``(a, b)`` with ``p([eps, 1]) = [1 - a, 1 + b]``: the image pushed
        stage by stage (closed form through the polishing cubics)."""
        lo, hi = eps, 1.0
        low, high = 1.0 - eps, 0.0
        for stage in self.stages:
            if stage.kind == "polish" and low <= 1.0 and high <= 1.0:
                low, high = _polish_deviation(low, high), 0.0
            else:
                lo, hi = stage.image(lo, hi)
                low, high = 1.0 - lo, max(hi - 1.0, 0.0)
            lo, hi = 1.0 - low, 1.0 + high
        return low, high

    def error_bound(self, eps: float) -> float:
        """``max |p(x) - sign(x)|`` over ``eps <= |x| <= 1``, for any eps in
        (0, 1] (above 1 means the sign itself may be wrong there)."""
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 0.0 < float(eps) <= 1.0:
            raise ParameterError(f"eps must lie in (0, 1], got {eps!r}")
        return max(self._deviations(float(eps)))

    def peak(self) -> float:
        """``max |p(x)|`` over [-1, 1] (at most ``1 + error``)."""
        lo, hi = 0.0, 1.0
        for stage in self.stages:
            lo, hi = stage.image(lo, hi)
        return max(abs(lo), abs(hi))

    def summary(self) -> list[dict]:
        """One row per stage: kind, degree, depth, products, margin, error."""
        return [dict(kind=s.kind, degree=s.degree, depth=s.depth(), products=s.products(), margin=s.margin,
                     error=s.error, bits=-math.log2(s.error) if s.error > 0 else math.inf) for s in self.stages]

    # ---- evaluation ----------------------------------------------------------------

    def evaluate_plain(self, x) -> np.ndarray:
        """The composite on numbers (the plaintext twin of :meth:`evaluate`)."""
        y = np.asarray(x, dtype=np.float64)
        for stage in self.stages:
            y = stage.poly.evaluate_plain(y)
        return y

    def evaluate(self, evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        """The composite slot-wise on ``ct`` (real slots in [-1, 1]); the
        output is at ``ct.level - depth()``, on the standard scale."""
        return self._apply(self._polys(step=False), evaluator, ct)

    def step_plain(self, x) -> np.ndarray:
        """``(1 + p(x)) / 2 ~ [x > 0]`` on numbers (the plaintext twin of :meth:`step`)."""
        y = np.asarray(x, dtype=np.float64)
        for poly in self._polys(step=True):
            y = poly.evaluate_plain(y)
        return y

    def step(self, evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        """``(1 + p) / 2`` slot-wise (the step ``[x > 0]``; real slots in [-1, 1]), at the depth of
        :meth:`evaluate` (only the last stage's coefficients change)."""
        return self._apply(self._polys(step=True), evaluator, ct)

    # ---- interval check: a product of two steps ------------------------------------

    def _polys(self, step: bool) -> list[ChebyshevPolynomial]:
        """The stages' polynomials; with ``step`` the last is ``(1 + p) / 2``
        (coefficients only: same depth)."""
        polys = [s.poly for s in self.stages]
        if step:
            last = [0.5 * c for c in polys[-1].coeffs]
            last[0] += 0.5
            polys[-1] = ChebyshevPolynomial(tuple(last))
        return polys

    def _apply(self, polys, evaluator: Evaluator, ct: Ciphertext) -> Ciphertext:
        need = sum(p.depth(needs_affine=False) for p in polys)
        if ct.level < need:
            raise LevelError(f"the sign composite needs {need} levels, the ciphertext has {ct.level}")
        for poly in polys:
            ct = poly.evaluate(evaluator, ct)
        return ct

    @staticmethod
    def _interval_width(lo: float, hi: float, bound: float) -> float:
        if not all(isinstance(v, (int, float, np.floating)) and math.isfinite(v) for v in (lo, hi, bound)):
            raise ParameterError("lo, hi and bound must be finite numbers")
        if not (lo < hi and bound > 0):
            raise ParameterError(f"need lo < hi and bound > 0, got {lo}, {hi}, {bound}")
        return float(bound) + max(abs(lo), abs(hi))

    def interval_depth(self) -> int:
        """Levels :meth:`in_interval` consumes: the composite plus 2."""
        return self.depth() + 2

    def in_interval_plain(self, x, lo: float, hi: float, bound: float) -> np.ndarray:
        """The plaintext twin of :meth:`in_interval`."""
        w = self._interval_width(lo, hi, bound)
        x = np.asarray(x, dtype=np.float64)
        steps = []
        for y in ((x - lo) / w, (hi - x) / w):
            for poly in self._polys(step=True):
                y = poly.evaluate_plain(y)
            steps.append(y)
        return steps[0] * steps[1]

    def in_interval(self, evaluator: Evaluator, ct: Ciphertext, lo: float, hi: float, bound: float) -> Ciphertext:
        """About 1 where ``lo <= x <= hi`` and 0 elsewhere, for slots with
        ``|x| <= bound``: ``step((x - lo) / w) * step((hi - x) / w)`` with
        ``step = (1 + p) / 2`` and ``w = bound + max(|lo|, |hi|)`` (so both
        arguments lie in [-1, 1]).  Within ``error + error^2 / 4`` of the
        indicator where x is at least ``margin * w`` away from lo and hi.
        Depth :meth:`interval_depth`: one level for the scaling, the
        composite (the two steps side by side), one for the product."""
        w = self._interval_width(lo, hi, bound)
        if ct.level < self.interval_depth():
            raise LevelError(f"the interval check needs {self.interval_depth()} levels, the ciphertext has {ct.level}")
        scaled = evaluator.rescale(evaluator.mul_const(ct, 1.0 / w))
        above = evaluator.sub(scaled, lo / w)
        below = evaluator.add(evaluator.negate(scaled), hi / w)
        polys = self._polys(step=True)
        steps = [self._apply(polys, evaluator, c) for c in (above, below)]
        return evaluator.rescale(evaluator.mul(steps[0], steps[1]))


# --------------------------------------------------------------------------
# The degree search of for_margin.
# --------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _planned_margin(degree: int, eps: float) -> float:
    """The margin after an inner stage of this degree at eps, for planning:
    ``(1 - E) / (1 + E)`` from the levelled error E of the exchange (1 when E
    is below the floor: the target is then met), the full fit when the
    exchange alone fails."""
    try:
        coeffs, level = _remez_odd_sign(degree, eps)
    except _FitFailed:
        stage, low = _minimax_stage(degree, eps, last=False)
        return low if stage.error >= ERROR_FLOOR else 1.0
    return 1.0 if level < ERROR_FLOOR else (1.0 - level) / (1.0 + level)


@lru_cache(maxsize=256)
def _plan(margin: float, bits: float, max_degree: int) -> tuple[int, ...]:
    """Degrees for :meth:`CompositeSign.for_margin`.

    Every stage but the last is divided by its peak, so a plan is a walk
    ``eps -> g_d(eps) = (1 - E_d(eps)) / (1 + E_d(eps))`` of margins, E_d the
    minimax error, and the target ``E <= 2^-bits`` of the last stage reads
    ``g_d(eps) >= goal``.  Each g_d increases with eps, and with d at a fixed
    eps (the odd polynomials of degree d are among those of degree d + 2).
    Both steps below are exact dynamic programs because of that monotonicity:
    whatever the last stage, the best prefix is the best start for it.

    1. *Least depth T*: ``best[t]``, the largest margin reachable in depth t,
       is the largest of ``best[t - 1]`` and of ``g_d(best[t - k])``, d the
       largest degree of depth k (the largest degree of a depth is never
       worse); T is the first t with ``best[t] >= goal``.
    2. *Fewest products at depth T*: ``cell[t][c]``, the largest margin with
       depth <= t and products <= c, is the largest of ``cell[t - 1][c]``,
       ``cell[t][c - 1]`` and ``g_d(cell[t - depth_d][c - products_d])``
       over the degrees that are the largest of their (depth, products)
       pair; the answer is the first c with ``cell[T][c] >= goal`` (c is at
       most the products of step 1's plan).  Ties go to fewer stages.

    Depth and products per degree are measured on the evaluator's code path.
    The fits come from :func:`_planned_margin` (cached), a few hundred for
    usual targets.
    """
    goal = (1.0 - 2.0**-bits * (1 - 1e-6)) / (1.0 + 2.0**-bits * (1 - 1e-6))
    costs = {d: _cost_of_degree(d) for d in range(3, max_degree + 1, 2)}
    top: dict[int, int] = {}
    front: dict[tuple[int, int], int] = {}
    for d, (k, p) in costs.items():  # degrees ascend: the last one of a class is its largest
        top[k] = d
        front[(k, p)] = d

    def key(option):
        eps, plan = option
        return min(eps, goal), -len(plan), eps

    best: list[tuple[float, tuple[int, ...]]] = [(margin, ())]
    while best[-1][0] < goal:
        t = len(best)
        if t > 96:
            raise ParameterError(f"no composite of degrees <= {max_degree} reaches 2^-{bits:g} at margin {margin} "
                                 "within depth 96")
        options = [best[t - 1]] + [(_planned_margin(d, best[t - k][0]), best[t - k][1] + (d,))
                                   for k, d in top.items() if k <= t]
        best.append(max(options, key=key))
    depth = len(best) - 1
    most = sum(costs[d][1] for d in best[-1][1])
    rows = [[(margin, ())] * (most + 1)]
    for t in range(1, depth + 1):
        row: list[tuple[float, tuple[int, ...]]] = []
        for c in range(most + 1):
            options = [rows[t - 1][c]] + ([row[c - 1]] if c else [])
            for (k, p), d in front.items():
                if k <= t and p <= c and rows[t - k][c - p][0] < goal:
                    eps, plan = rows[t - k][c - p]
                    options.append((_planned_margin(d, eps), plan + (d,)))
            row.append(max(options, key=key))
        rows.append(row)
    return next(plan for eps, plan in rows[depth] if eps >= goal)
