"""Linear transforms of the slot vector, given by their diagonals.

A ``P x P`` complex matrix M acts on slot vectors of period P (P divides the
number of slots; a vector encoded with ``slots=P`` repeats with period P).
Its **generalized diagonals** are ``d_k[i] = M[i, (i + k) mod P]``, so that::

    M v = sum_k d_k * rot(v, k)          (* slot-wise, rot = left rotation)

Worked 4 x 4 example: for ``M = [[a, b, 0, 0], [0, c, d, 0], [0, 0, e, f],
[g, 0, 0, h]]`` the nonzero diagonals are ``d_0 = (a, c, e, h)`` and
``d_1 = (b, d, f, g)``: ``M v = d_0 * v + d_1 * rot(v, 1)``.

**Baby-step giant-step** (Halevi & Shoup, CRYPTO 2014): with a baby size
``n1``, write each offset as ``k = n1 j + b`` and::

    M v = sum_j rot( sum_b rot(d_(n1 j + b), -n1 j) * rot(v, b), n1 j )

The diagonals are pre-rotated in plaintext, the baby rotations ``rot(v, b)``
share one decomposition (hoisting), and only one rotation per giant step
remains: about ``|B| + |G|`` key switches instead of one per diagonal.

The giant steps are applied Horner-style, from the largest ``j`` down::

    acc = inner_(j_max);  acc = rot(acc, n1 (j_prev - j)) + inner_j;  ...;  rot(acc, n1 j_min)

so the Galois keys they need are the *gaps* between consecutive giant steps
(a convolution's giants are evenly spaced: usually one or two gaps), not one
key per giant step; the number of key switches is the same.
Depth 1 (one plaintext product and one rescale).  :meth:`rotation_steps`
lists the Galois keys the plan needs, so keys follow the plan.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..ckks.ciphertext import Ciphertext
from ..ckks.encoder import Encoder
from ..ckks.dot import PlainDot
from ..ckks.evaluator import Evaluator
from ..errors import LevelError, ParameterError, ShapeError

__all__ = ["LinearTransform", "diagonals_of", "matrix_of"]


def diagonals_of(matrix: np.ndarray, tol: float = 0.0) -> dict[int, np.ndarray]:
    """The nonzero generalized diagonals of a square matrix."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ShapeError(f"expected a square matrix, got shape {m.shape}")
    p = m.shape[0]
    idx = np.arange(p)
    out = {}
    for k in range(p):
        d = m[idx, (idx + k) % p]
        if np.max(np.abs(d)) > tol:
            out[k] = d.astype(np.complex128)
    return out


def matrix_of(diagonals: Mapping[int, np.ndarray], period: int) -> np.ndarray:
    """The dense matrix with the given diagonals (for tests and docs)."""
    m = np.zeros((period, period), dtype=np.complex128)
    idx = np.arange(period)
    for k, d in diagonals.items():
        m[idx, (idx + k) % period] += d
    return m


def _horner_rotations(giants) -> list[int]:
    """The rotations of the Horner chain over the giant steps, largest first (the last one may be 0)."""
    g = sorted(set(giants), reverse=True)
    return [a - b for a, b in zip(g, g[1:])] + [g[-1]]


def _best_baby_step(offsets: list[int], period: int) -> int:
    """The power-of-two baby size n1 that minimizes ``key switches + Galois keys / 4``.

    Key switches: ``|{k mod n1} - {0}| + |{k - k mod n1} - {0}|`` (babies hoisted, giants
    Horner-chained); Galois keys: the babies and the gaps between consecutive giants.  Keys
    weigh a quarter of a key switch: at N = 2^16 a Galois key costs tens of MB for the whole
    run, a key switch about 0.1 s every time (a network layer of a 64-channel multiplexed
    convolution gives up 2 key switches to drop 14 keys).  Ties go to fewer key switches.
    """
    best = None
    n1 = 1
    while n1 <= period:
        babies = {k % n1 for k in offsets} - {0}
        giants = {k - k % n1 for k in offsets}
        gaps = set(_horner_rotations(giants)) - {0}
        switches = len(babies) + len(giants - {0})
        cost = (switches + len(babies | gaps) / 4, switches)
        if best is None or cost < best[0]:
            best = (cost, n1)
        n1 *= 2
    return best[1]


class LinearTransform:
    """``v -> M v`` on slot vectors of period ``period``, from M's diagonals.

    Args:
        diagonals: ``{offset: vector of length period}``; offsets are taken
            modulo ``period``.
        period: P, a power of two dividing the number of slots.
        baby: baby-step size n1 (default: see :func:`_best_baby_step`).
        real_dtype: storage of real diagonals: float64, or float32 for a
            network layer whose thousands of diagonals would otherwise hold
            gigabytes (the weights then carry 24 bits, far below the CKKS
            error at the scales used; bootstrapping keeps float64).
    """

    def __init__(self, diagonals: Mapping[int, np.ndarray], period: int, baby: int | None = None,
                 real_dtype: type = np.float64):
        if isinstance(period, bool) or not isinstance(period, int) or period < 1 or period & (period - 1):
            raise ParameterError(f"period must be a power of two, got {period!r}")
        diags: dict[int, np.ndarray] = {}
        for k, d in diagonals.items():
            vec = np.asarray(d)
            if np.iscomplexobj(vec) and not np.any(vec.imag):
                vec = vec.real
            vec = vec.astype(np.complex128 if np.iscomplexobj(vec) else real_dtype)
            if vec.shape != (period,):
                raise ShapeError(f"diagonal {k} has shape {vec.shape}, expected ({period},)")
            key = int(k) % period
            diags[key] = diags.get(key, 0) + vec
        if not diags:
            raise ParameterError("a linear transform needs at least one diagonal")
        self.period = period
        if baby is None:
            baby = _best_baby_step(list(diags), period)
        self.baby = max(1, min(int(baby), period))
        # Only the pre-rotated copies are kept (real diagonals as float64): a network layer has
        # thousands of diagonals of 2^15 slots, and a second copy doubled the memory of a plan.
        self._plan: dict[int, dict[int, np.ndarray]] = {}
        for k in list(diags):
            j, b = divmod(k, self.baby)
            # pre-rotate by -n1 j so the giant rotation can be applied last
            self._plan.setdefault(j * self.baby, {})[b] = np.roll(diags.pop(k), j * self.baby)
        self._encoded: dict[tuple, dict] = {}

    @property
    def diagonals(self) -> dict[int, np.ndarray]:
        """``{offset: diagonal}`` (recomputed from the stored pre-rotated copies)."""
        return {g + b: np.roll(d, -g) for g, group in self._plan.items() for b, d in group.items()}

    @property
    def diagonal_count(self) -> int:
        return sum(len(group) for group in self._plan.values())

    def depth(self) -> int:
        return 1

    def rotation_steps(self) -> list[int]:
        """Every rotation step the evaluation uses (baby and giant)."""
        baby = {b for group in self._plan.values() for b in group if b}
        return sorted(baby | {s for s in self._giant_rotations() if s})

    def key_switches(self) -> int:
        """Key switches of one evaluation: the hoisted babies and the giant chain's rotations."""
        baby = {b for group in self._plan.values() for b in group if b}
        return len(baby) + sum(1 for s in self._giant_rotations() if s)

    def _giant_rotations(self) -> list[int]:
        """The rotations of the Horner chain over the giant steps, in order (the last one may be 0)."""
        return _horner_rotations(self._plan)

    def evaluate_plain(self, v: np.ndarray) -> np.ndarray:
        """``M v`` on one period (the plaintext twin)."""
        v = np.asarray(v, dtype=np.complex128)
        out = np.zeros(self.period, dtype=np.complex128)
        for g, group in self._plan.items():
            for b, d in group.items():
                out += np.roll(d, -g) * np.roll(v, -(g + b))
        return out

    def _plaintexts(self, encoder: Encoder, level: int, scale: float):
        """The diagonals encoded at ``(level, scale)``, kept compact: ``(poly, repeat)`` with ``poly`` of
        ``2 period`` coefficients per prime (:meth:`~fhe_ckks.ckks.encoder.Encoder.encode_compact`), so that
        the cache of a sparse transform (a bootstrap of ``n`` slots) holds ``N / 2n`` times less than
        full plaintexts would."""
        key = (level, scale)
        if key not in self._encoded:
            self._encoded[key] = {
                g: {b: encoder.encode_compact(d, level, scale, self.period) for b, d in group.items()}
                for g, group in self._plan.items()
            }
        return self._encoded[key]

    def evaluate(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext,
                 target_scale: float | None = None, factor: float = 1.0, cache: bool = True) -> Ciphertext:
        """``factor * M`` applied to ``ct``'s slots; one level.

        The diagonals are encoded at the scale that makes the rescaled result
        land on ``target_scale`` (default: the standard scale of the next
        level when ``ct`` is at a standard scale, else ``ct``'s own scale);
        a real ``factor`` is folded into that encoding scale, so it costs
        nothing (bootstrapping uses it for ``q_0 / Delta``).

        ``cache=True`` keeps the encoded diagonals for the next call at the
        same level and scale (bootstrapping: few transforms, many calls);
        ``cache=False`` encodes each diagonal just before its product and
        drops it, so memory stays at one plaintext however many diagonals
        there are (network layers: thousands of diagonals at N = 2^16).
        """
        if ct.level < 1:
            raise LevelError("a linear transform needs one level")
        if self.period > evaluator.params.slots or evaluator.params.slots % self.period:
            raise ParameterError(f"period {self.period} does not divide {evaluator.params.slots} slots")
        q = evaluator.params.q_primes[ct.level]
        if target_scale is None:
            standard = abs(ct.scale / evaluator.params.scale_at(ct.level) - 1) < 2.0**-32
            target_scale = evaluator.params.scale_at(ct.level - 1) if standard else ct.scale
        pt_scale = target_scale * q / ct.scale * float(factor)
        babies = sorted({b for group in self._plan.values() for b in group})
        rotated = evaluator.rotate_hoisted(ct, babies)
        cached = self._plaintexts(encoder, ct.level, pt_scale) if cache else None
        acc, prev = None, 0
        for g, group in sorted(self._plan.items(), reverse=True):     # Horner over the giant steps
            inner = None
            items = list(group.items())
            for start in range(0, len(items), PlainDot.MAX_TERMS):
                dot = evaluator.plain_dot(ct)
                for b, d in items[start:start + PlainDot.MAX_TERMS]:
                    # cached, or encoded just before its product; compact when sparse: NTTs of size 2P, not N
                    poly, repeat = cached[g][b] if cached is not None else \
                        encoder.encode_compact(d, ct.level, pt_scale, self.period)
                    dot.add(rotated[b], poly, pt_scale, repeat)
                part = dot.result()
                inner = part if inner is None else evaluator.add(inner, part)
            acc = inner if acc is None else evaluator.add(evaluator.rotate(acc, prev - g), inner)
            prev = g
        if prev:
            acc = evaluator.rotate(acc, prev)
        # exact up to float rounding: ct.scale * (target q / ct.scale) / q
        return evaluator.rescale(acc).with_metadata(scale=target_scale)
