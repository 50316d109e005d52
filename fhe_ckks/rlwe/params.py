"""RLWE parameters: a plain literal, validated into a frozen object.

A :class:`ParametersLiteral` is what a person writes: ring degree, the bit
sizes of the ciphertext primes (``log_q``) and of the special primes
(``log_p``), the default scale, the secret distribution, the error width and
the number of key-switching digits.  :meth:`Parameters.from_literal` checks it,
finds the primes, and checks **128-bit security** against the table of the
Homomorphic Encryption Standard (Albrecht et al., "Homomorphic Encryption
Security Standard", HomomorphicEncryption.org, 2018, Table 1: uniform ternary
secret, error sigma = 3.2, classical 128-bit), extended to N = 2^16 with the
value OpenFHE uses (1772 bits).  A set that fails is refused with
:class:`~fhe_ckks.errors.SecurityError` unless its name starts with
``INSECURE_`` *and* the caller passes ``allow_insecure=True``.

Primes: ``q_0`` is the largest ``log_q[0]``-bit NTT prime (it holds the final
message, so it is usually larger than the scale); the other ciphertext primes
are the NTT primes *nearest* to ``2^log_q[i]``, alternately above and below, so
that rescaling by them keeps the scale close to ``2^log_scale``; the special
primes are the largest ``log_p[j]``-bit NTT primes not already used.

Hybrid key switching (Han & Ki, CT-RSA 2020) splits the L ciphertext primes
into ``digits`` groups of ``alpha = ceil(L / digits)`` consecutive primes.  The
key-switching noise grows with ``Q_digit / P``, so the special modulus P must
be at least half the largest digit's product (checked).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError, SecurityError
from ..ring import Ring
from ..ring.ntt import NTTTables
from ..ring.primes import check_log_n, nearest_ntt_prime, ntt_primes

__all__ = ["ParametersLiteral", "Parameters", "HE_STANDARD_MAX_LOG_QP", "max_log_qp"]

#: Largest log2(QP) for 128-bit classical security with a uniform ternary
#: secret and sigma = 3.2, by ring degree (HE Standard 2018, Table 1;
#: N = 2^16 from OpenFHE's ``StdLatticeParm`` table).
HE_STANDARD_MAX_LOG_QP = {
    1 << 10: 27,
    1 << 11: 54,
    1 << 12: 109,
    1 << 13: 218,
    1 << 14: 438,
    1 << 15: 881,
    1 << 16: 1772,
}

#: Sparse-secret bounds are accepted only with a citation; none is registered
#: by default.  Keys: (log_n, hamming_weight) -> (max log QP, source).
SPARSE_SECRET_MAX_LOG_QP: dict[tuple[int, int], tuple[int, str]] = {}


def max_log_qp(log_n: int, hamming_weight: int | None) -> tuple[int, str]:
    """The 128-bit bound on log2(QP) and its source, or raise
    :class:`SecurityError` when no cited bound exists."""
    n = 1 << log_n
    if hamming_weight is None:
        if n not in HE_STANDARD_MAX_LOG_QP:
            raise SecurityError(f"the HE standard gives no 128-bit bound for N = {n}")
        return HE_STANDARD_MAX_LOG_QP[n], "HE Standard 2018, Table 1 (ternary, 128-bit classical)"
    key = (log_n, int(hamming_weight))
    if key not in SPARSE_SECRET_MAX_LOG_QP:
        raise SecurityError(
            f"no cited 128-bit estimate for a sparse secret of Hamming weight {hamming_weight} at N = {n}"
        )
    return SPARSE_SECRET_MAX_LOG_QP[key]


@dataclass(frozen=True)
class ParametersLiteral:
    """Unchecked parameters, as a person writes them.

    Attributes:
        log_n: ring degree N = 2^log_n.
        log_q: bit sizes of the ciphertext primes q_0, q_1, ... (level L =
            ``len(log_q) - 1`` is the top level).
        log_p: bit sizes of the special primes (empty: no key switching).
        log_scale: default scale 2^log_scale of fresh encodings.
        hamming_weight: None for a dense uniform ternary secret, else the
            exact number of nonzero secret coefficients.
        sigma: standard deviation of the discrete Gaussian error.
        digits: number of key-switching digits (dnum); default
            ``ceil(len(log_q) / len(log_p))``.
        name: preset name; ``INSECURE_`` marks a set below 128-bit security.
    """

    log_n: int
    log_q: tuple[int, ...]
    log_p: tuple[int, ...]
    log_scale: int
    hamming_weight: int | None = None
    sigma: float = 3.2
    digits: int | None = None
    name: str = ""

    def __post_init__(self):
        # Lists (as JSON gives them) become tuples; anything else is left for from_literal to refuse.
        for name in ("log_q", "log_p"):
            if isinstance(getattr(self, name), (list, tuple, range)):
                object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True, eq=False)
class Parameters:
    """Validated, immutable RLWE/CKKS parameters with their primes and rings.

    Attributes:
        literal: the literal it came from.
        log_n, n: ring degree.
        q_primes, p_primes: the ciphertext and special primes.
        max_level: L = len(q_primes) - 1.
        scale: default scale 2^log_scale.
        digits, alpha: number of key-switching digits and primes per digit.
        log_qp: log2 of the product of all primes.
        security: "128-bit (source)" or "INSECURE".
        ring_q: the :class:`~fhe_ckks.ring.Ring` of Q.
        ring_qp: the ring of Q·P (the same object as ``ring_q`` without
            special primes); both share ``tables_qp``.
        tables_qp: NTT tables over Q then P (rows 0..L for Q, L+1.. for P).
        fingerprint: 16 bytes identifying this parameter set (serialized
            objects carry it, so that they cannot be loaded under other
            parameters).
    """

    literal: ParametersLiteral
    q_primes: tuple[int, ...]
    p_primes: tuple[int, ...]
    security: str
    max_log_qp: int | None
    tables_qp: NTTTables = field(repr=False)
    ring_q: Ring = field(repr=False)
    ring_qp: Ring = field(repr=False)

    @classmethod
    def from_literal(cls, literal: ParametersLiteral, *, allow_insecure: bool = False) -> Parameters:
        """Validate ``literal`` and build the parameters.

        Raises:
            ParameterError: on any invalid field.
            SecurityError: when the set is below 128-bit security and is not
                both named ``INSECURE_*`` and allowed by ``allow_insecure``.
        """
        lit = literal
        if not isinstance(lit, ParametersLiteral):
            raise ParameterError(f"expected a ParametersLiteral, got {type(lit).__name__}")
        log_n = check_log_n(lit.log_n)
        _check_literal_types(lit)
        if not lit.log_q:
            raise ParameterError("log_q needs at least one prime")
        for b in (*lit.log_q, *lit.log_p):
            if not log_n + 2 <= b <= 61:
                raise ParameterError(f"prime size {b!r} must be an int in [{log_n + 2}, 61]")
        if not 1 <= lit.log_scale <= 60:
            raise ParameterError(f"log_scale {lit.log_scale!r} must be an int in [1, 60]")
        if lit.log_q[0] <= lit.log_scale and len(lit.log_q) > 1:
            raise ParameterError(f"q_0 ({lit.log_q[0]} bits) must exceed the scale (2^{lit.log_scale}) "
                                 "so that a message survives at level 0")
        if lit.hamming_weight is not None and not 0 < lit.hamming_weight <= (1 << log_n):
            raise ParameterError(f"Hamming weight {lit.hamming_weight} must be in [1, N]")
        if not 0.5 <= lit.sigma <= 64:
            raise ParameterError(f"sigma {lit.sigma} must be in [0.5, 64]")

        q_primes = _ciphertext_primes(log_n, lit.log_q, lit.log_scale)
        p_primes = tuple(ntt_primes(log_n, list(lit.log_p), exclude=q_primes)) if lit.log_p else ()
        log_qp = sum(math.log2(q) for q in (*q_primes, *p_primes))

        digits = lit.digits
        if p_primes:
            if digits is None:
                digits = math.ceil(len(q_primes) / len(p_primes))
            if not 1 <= digits <= len(q_primes):
                raise ParameterError(f"digits {digits!r} must be in [1, {len(q_primes)}]")
            alpha = math.ceil(len(q_primes) / digits)
            big_p = math.prod(p_primes)
            for j in range(digits):
                digit = q_primes[j * alpha:(j + 1) * alpha]
                if digit and math.prod(digit) > 2 * big_p:
                    raise ParameterError(
                        f"key-switching digit {j} ({sum(math.log2(q) for q in digit):.1f} bits) exceeds the "
                        f"special modulus P ({math.log2(big_p):.1f} bits): add special primes or digits"
                    )
        elif digits not in (None, 0):
            raise ParameterError("digits needs special primes (log_p)")

        try:
            bound, source = max_log_qp(log_n, lit.hamming_weight)
            secure = log_qp <= bound
        except SecurityError:
            bound, source, secure = None, "no cited estimate", False
        if secure:
            security = f"128-bit ({source}: log2 QP = {log_qp:.1f} <= {bound})"
        elif lit.name.startswith("INSECURE_") and allow_insecure:
            security = f"INSECURE (log2 QP = {log_qp:.1f}; 128-bit bound {bound} from {source})"
        else:
            raise SecurityError(
                f"parameters {lit.name or '(unnamed)'} with N = 2^{log_n}, log2 QP = {log_qp:.1f} are below "
                f"128-bit security (bound {bound}, {source}); only sets named INSECURE_* may be used, "
                "and only with allow_insecure=True"
            )

        tables = NTTTables(log_n, (*q_primes, *p_primes))
        ring_q = Ring(log_n, q_primes, tables=tables)
        ring_qp = Ring(log_n, (*q_primes, *p_primes), tables=tables) if p_primes else ring_q
        obj = cls(literal=lit, q_primes=q_primes, p_primes=p_primes, security=security, max_log_qp=bound,
                  tables_qp=tables, ring_q=ring_q, ring_qp=ring_qp)
        object.__setattr__(obj, "_digits", digits or 0)
        return obj

    # ---- derived quantities --------------------------------------------------

    @property
    def log_n(self) -> int:
        return self.literal.log_n

    @property
    def n(self) -> int:
        return 1 << self.literal.log_n

    @property
    def slots(self) -> int:
        """Maximal number of complex slots, N/2."""
        return self.n // 2

    @property
    def max_level(self) -> int:
        return len(self.q_primes) - 1

    @property
    def user_top(self) -> int:
        """The top level of the lowest run of rescaling primes (levels 1 and up; ``max_level`` for a uniform
        chain, 0 when there is no level): where circuits run after a bootstrap.  A ciphertext-ciphertext
        product rescaled from one run into the next misses the lower run's standard scale, so a bootstrap
        whose output lands above this level is brought down to it first (``LandedBootstrapper``)."""
        if self.max_level < 1:
            return 0
        return min(_run_tops(self.literal.log_q))

    @property
    def scale(self) -> float:
        return float(2 ** self.literal.log_scale)

    def scale_at(self, level: int) -> float:
        """The standard scale of a ciphertext at ``level``.

        ``Delta_{l-1} = Delta_l^2 / q_l`` (Kim, Papadimitriou, Polyakov,
        "Approximate homomorphic encryption with reduced approximation error",
        CT-RSA 2022): multiplying two ciphertexts at level l and rescaling
        lands *exactly* on the scale of level l - 1, so ciphertexts at one
        level always share one scale and additions need no correction.  The
        primes are chosen so that the scales stay on their target (see
        :func:`_ciphertext_primes`).

        A chain may mix prime sizes in runs (a bootstrapping preset keeps its
        user levels on small primes and bootstrapping's own levels on large
        ones).  The top level of each run restarts the chain at
        ``2^log_scale`` for a run of that size and at ``2^size`` for any other
        run; ``Delta_0 = Delta_1^2 / q_1``.  A uniform chain is one run.
        """
        scales = self.__dict__.get("_scales")
        if scales is None:
            scales = _standard_scales(self.q_primes, self.literal.log_q, self.literal.log_scale)
            object.__setattr__(self, "_scales", scales)
        if not 0 <= level < len(scales):
            raise ParameterError(f"level {level} outside [0, {len(scales) - 1}]")
        return scales[level]

    @property
    def digits(self) -> int:
        return self._digits  # type: ignore[attr-defined]

    @property
    def alpha(self) -> int:
        return math.ceil(len(self.q_primes) / self.digits) if self.digits else 0

    @property
    def log_qp(self) -> float:
        return sum(math.log2(q) for q in (*self.q_primes, *self.p_primes))

    @property
    def is_secure(self) -> bool:
        return self.security.startswith("128-bit")

    @property
    def sigma(self) -> float:
        return float(self.literal.sigma)

    @property
    def hamming_weight(self) -> int | None:
        return self.literal.hamming_weight

    @property
    def name(self) -> str:
        return self.literal.name

    @property
    def moduli_qp(self) -> np.ndarray:
        return self.tables_qp.moduli

    def qp_rows(self, level: int) -> np.ndarray:
        """Rows of ``tables_qp`` used by a key-switching polynomial at
        ``level``: q_0..q_level, then every special prime."""
        rows = list(range(level + 1)) + list(range(len(self.q_primes), len(self.q_primes) + len(self.p_primes)))
        return np.array(rows, dtype=np.uint64)

    def digit_positions(self, level: int) -> list[list[int]]:
        """The prime indices of each nonempty digit restricted to ``level``."""
        out = []
        for j in range(self.digits):
            pos = [i for i in range(j * self.alpha, min((j + 1) * self.alpha, len(self.q_primes))) if i <= level]
            if pos:
                out.append(pos)
        return out

    @property
    def fingerprint(self) -> bytes:
        h = hashlib.sha256()
        h.update(repr((self.log_n, self.q_primes, self.p_primes, self.literal.log_scale,
                       self.literal.hamming_weight, float(self.literal.sigma), self.digits)).encode())
        return h.digest()[:16]

    def describe(self) -> str:
        """One paragraph: sizes, levels, security."""
        return (f"{self.name or 'parameters'}: N = 2^{self.log_n}, {len(self.q_primes)} ciphertext primes "
                f"({'/'.join(str(q.bit_length()) for q in self.q_primes)} bits), {len(self.p_primes)} special "
                f"primes, log2 QP = {self.log_qp:.1f}, scale 2^{self.literal.log_scale}, dnum = {self.digits}, "
                f"secret {'dense ternary' if self.hamming_weight is None else f'h = {self.hamming_weight}'}; "
                f"{self.security}")

    def __repr__(self) -> str:
        return f"Parameters({self.describe()})"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_literal_types(lit: ParametersLiteral) -> None:
    """Every field of the literal has its declared type: ints (never bools) for the sizes and counts, a
    real ``sigma`` (not NaN), a str ``name``; the ranges are checked by :meth:`Parameters.from_literal`."""
    for name in ("log_q", "log_p"):
        sizes = getattr(lit, name)
        if not isinstance(sizes, tuple) or not all(_is_int(b) for b in sizes):
            raise ParameterError(f"{name} must be a sequence of ints, got {sizes!r:.80}")
    if not _is_int(lit.log_scale):
        raise ParameterError(f"log_scale must be an int, got {lit.log_scale!r:.40}")
    for name in ("hamming_weight", "digits"):
        value = getattr(lit, name)
        if value is not None and not _is_int(value):
            raise ParameterError(f"{name} must be None or an int, got {value!r:.40}")
    if not isinstance(lit.sigma, (int, float)) or isinstance(lit.sigma, bool) or not math.isfinite(lit.sigma):
        raise ParameterError(f"sigma must be a finite real number, got {lit.sigma!r:.40}")
    if not isinstance(lit.name, str):
        raise ParameterError(f"name must be a str, got {type(lit.name).__name__}")


def _run_tops(log_q: tuple[int, ...]) -> set[int]:
    """Levels (>= 1) at the top of a run of equal prime sizes."""
    top = len(log_q) - 1
    return {lvl for lvl in range(1, top + 1) if lvl == top or log_q[lvl + 1] != log_q[lvl]}


def _run_target(bits: int, log_scale: int) -> float:
    return float(2 ** (log_scale if bits == log_scale else bits))


def _standard_scales(q_primes, log_q: tuple[int, ...], log_scale: int) -> list[float]:
    """The standard scale of every level (see :meth:`Parameters.scale_at`)."""
    top = len(q_primes) - 1
    tops = _run_tops(log_q)
    scales = [0.0] * (top + 1)
    scales[top] = _run_target(log_q[top], log_scale)
    for lvl in range(top, 0, -1):
        nxt = lvl - 1
        if nxt in tops:
            scales[nxt] = _run_target(log_q[nxt], log_scale)
        else:
            scales[nxt] = scales[lvl] * scales[lvl] / q_primes[lvl]
    return scales


def _ciphertext_primes(log_n: int, log_q: tuple[int, ...], log_scale: int) -> tuple[int, ...]:
    """q_0: the largest prime of its size.  The others are chosen from the top
    of each run of equal sizes down, so that the standard scales track the
    run's target (``2^log_scale``, or ``2^size`` for a run of another size;
    see :meth:`Parameters.scale_at`): ``q_l`` is the prime nearest to
    ``Delta_l^2 / target``.  Primes merely alternating around the power of two
    let the scale drift, since ``Delta_{l-1} = Delta_l^2 / q_l`` doubles its
    error at every level: harmless for 20 levels of 50-bit primes, fatal for
    29 levels of 40-bit ones.  The last prime of a run (above another run, or
    above q_0) only sets the scale of the level below it and is chosen the
    same way.
    """
    q0 = ntt_primes(log_n, [log_q[0]])[0]
    top = len(log_q) - 1
    tops = _run_tops(log_q)
    out: list[int] = [0] * (top + 1)
    out[0] = q0
    used = {q0}
    delta = 0.0
    for lvl in range(top, 0, -1):               # from the top level down
        target = _run_target(log_q[lvl], log_scale)
        if lvl in tops:
            delta = target                      # the float chain of _standard_scales
        out[lvl] = nearest_ntt_prime(log_n, int(delta * delta / target), exclude=used)
        used.add(out[lvl])
        delta = delta * delta / out[lvl]
    return tuple(out)
