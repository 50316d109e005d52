"""NTT-friendly primes and primitive roots of unity.

The negacyclic NTT of length N modulo q needs a primitive 2N-th root of unity
psi (so that psi^N = -1), which exists exactly when ``q = 1 (mod 2N)``.  Such
primes are found by walking the arithmetic progression ``k*2N + 1`` away from a
power of two and testing primality (sympy's deterministic-for-64-bit
Miller-Rabin/BPSW ``isprime``).

A prime is "of b bits" when ``2^(b-1) < q < 2^b``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sympy

from ..errors import ParameterError
from .modarith import MAX_MODULUS_BITS

__all__ = [
    "check_log_n",
    "is_ntt_prime",
    "ntt_primes",
    "nearest_ntt_primes",
    "nearest_ntt_prime",
    "primitive_root_2n",
]

MAX_LOG_N = 17


def check_log_n(log_n: int) -> int:
    """Validate a ring degree exponent (N = 2^log_n, 1 <= log_n <= 17)."""
    if isinstance(log_n, bool) or not isinstance(log_n, int) or not 1 <= log_n <= MAX_LOG_N:
        raise ParameterError(f"log_n must be an integer in [1, {MAX_LOG_N}], got {log_n!r}")
    return log_n


def is_ntt_prime(q: int, n: int) -> bool:
    """True when q is a prime below 2^61 with ``q = 1 (mod 2n)``."""
    q = int(q)
    return (
        2 < q
        and q.bit_length() <= MAX_MODULUS_BITS
        and q % (2 * n) == 1
        and bool(sympy.isprime(q))
    )


def _check_bits(bits: int, log_n: int) -> None:
    if not isinstance(bits, int) or not log_n + 2 <= bits <= MAX_MODULUS_BITS:
        raise ParameterError(
            f"prime size {bits!r} bits must be in [{log_n + 2}, {MAX_MODULUS_BITS}] for N = 2^{log_n}"
        )


def ntt_primes(log_n: int, bit_sizes: Sequence[int], exclude: Iterable[int] = ()) -> list[int]:
    """Distinct NTT-friendly primes, one of each requested bit size.

    For each size b the largest unused prime ``q = 1 (mod 2N)`` below 2^b is
    taken, so repeated sizes give successive primes going down.

    Args:
        log_n: ring degree exponent, N = 2^log_n.
        bit_sizes: bit size of each prime, in the order wanted.
        exclude: primes that must not be returned (for example the primes of
            another basis that this one must stay coprime to).

    Returns:
        The primes, in the order of ``bit_sizes``.

    Raises:
        ParameterError: on an invalid size or when the progression runs out
            of b-bit primes.
    """
    check_log_n(log_n)
    two_n = 2 << log_n
    used = {int(p) for p in exclude}
    out: list[int] = []
    for bits in bit_sizes:
        _check_bits(bits, log_n)
        lo = 1 << (bits - 1)
        candidate = ((1 << bits) - 1) // two_n * two_n + 1
        while candidate > lo and (candidate in used or not sympy.isprime(candidate)):
            candidate -= two_n
        if candidate <= lo:
            raise ParameterError(f"no more {bits}-bit primes = 1 mod 2^{log_n + 1}")
        used.add(candidate)
        out.append(candidate)
    return out


def nearest_ntt_primes(
    log_n: int, log_target: int, count: int, exclude: Iterable[int] = ()
) -> list[int]:
    """``count`` distinct NTT-friendly primes closest to ``2^log_target``.

    Candidates are taken alternately just above and just below the target,
    keeping the product of the primes close to ``2^(count*log_target)``.  CKKS
    uses this for the primes that rescaling divides by, so that the scale
    stays near 2^log_target level after level.
    """
    check_log_n(log_n)
    if not isinstance(count, int) or count < 0:
        raise ParameterError(f"count must be a non-negative int, got {count!r}")
    _check_bits(log_target, log_n)
    if log_target + 1 > MAX_MODULUS_BITS:
        raise ParameterError(f"target 2^{log_target} leaves no room above it below 2^{MAX_MODULUS_BITS}")
    two_n = 2 << log_n
    used = {int(p) for p in exclude}
    target = 1 << log_target
    up = target + 1  # = 1 mod 2N
    down = target - two_n + 1
    out: list[int] = []
    take_up = True
    while len(out) < count:
        if up.bit_length() > MAX_MODULUS_BITS and down <= target >> 1:
            raise ParameterError(f"ran out of NTT primes near 2^{log_target}")
        cand = up if take_up else down
        if take_up:
            up += two_n
        else:
            down -= two_n
        if cand > target >> 1 and cand.bit_length() <= MAX_MODULUS_BITS and cand not in used and sympy.isprime(cand):
            used.add(cand)
            out.append(cand)
            take_up = not take_up
    return out


def nearest_ntt_prime(log_n: int, target: int, exclude: Iterable[int] = ()) -> int:
    """The NTT-friendly prime (``q = 1 mod 2N``) nearest to the integer ``target``.

    CKKS uses it to choose each rescaling prime from the scale it must
    divide (``q_l ~ Delta_l^2 / Delta``), so that a long chain of equal-size
    primes keeps its scales near ``Delta`` instead of drifting (the drift of
    ``Delta_{l-1} = Delta_l^2 / q_l`` doubles at every level).
    """
    check_log_n(log_n)
    two_n = 2 << log_n
    used = {int(p) for p in exclude}
    target = int(target)
    if target.bit_length() > MAX_MODULUS_BITS or target < two_n:
        raise ParameterError(f"no NTT prime search around {target} for N = 2^{log_n}")
    below = target - ((target - 1) % two_n)          # largest candidate <= target
    above = below + two_n
    while True:
        for cand in sorted((below, above), key=lambda c: abs(c - target)):
            if cand > two_n and cand.bit_length() <= MAX_MODULUS_BITS and cand not in used \
                    and sympy.isprime(cand):
                return cand
        below, above = below - two_n, above + two_n
        if below <= two_n and above.bit_length() > MAX_MODULUS_BITS:
            raise ParameterError(f"ran out of NTT primes near {target}")


def primitive_root_2n(q: int, log_n: int) -> int:
    """The primitive 2N-th root of unity ``g^((q-1)/2N) mod q`` where g is the
    smallest generator of ``(Z/qZ)^*`` (deterministic, so tables and
    known-answer vectors are reproducible).

    Raises:
        ParameterError: if q is not an NTT-friendly prime for this N.
    """
    check_log_n(log_n)
    n = 1 << log_n
    if not is_ntt_prime(q, n):
        raise ParameterError(f"{q} is not a prime below 2^61 with q = 1 mod 2N (N = {n})")
    g = int(sympy.primitive_root(q))
    psi = pow(g, (q - 1) // (2 * n), q)
    if pow(psi, n, q) != q - 1:  # pragma: no cover - mathematically impossible
        raise ParameterError(f"no primitive 2N-th root found modulo {q}")
    return psi
