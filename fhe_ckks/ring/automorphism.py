"""Ring automorphisms ``X -> X^g`` of ``Z_q[X]/(X^N + 1)`` for odd g.

In CKKS the slots of a plaintext are the values of the message polynomial at
the primitive 2N-th roots ``zeta^(5^j)``; the automorphism ``X -> X^(5^k)``
therefore rotates the slot vector by k positions, and ``X -> X^(2N-1)``
(``X -> X^-1``) conjugates every slot.  The ring layer only permutes
coefficients; the meaning for slots is the encoder's business.

Coefficient domain
    ``a(X^g) = sum_i a_i X^(i*g)``, and ``X^(i*g) = (-1)^floor(i*g / N) X^(i*g mod N)``:
    a signed permutation of the coefficients.

NTT domain (bit-reversed order, see :mod:`fhe_ckks.ring.ntt`)
    Slot k holds ``a(psi^e_k)`` with ``e_k = 2 brv(k) + 1``, so
    ``b(X) = a(X^g)`` has ``b(psi^e_k) = a(psi^(g e_k))``: a plain permutation
    ``out[k] = in[j]`` with ``e_j = g e_k mod 2N``.  No sign, no arithmetic.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .checks import check_poly_array, check_reduced
from .modarith import U64, njit
from .ntt import bit_reverse_indices
from .primes import check_log_n

__all__ = [
    "galois_element",
    "conjugation_element",
    "check_galois_element",
    "automorphism_coeff",
    "automorphism_ntt",
    "ntt_permutation",
    "automorphism_coeff_reference",
]


def galois_element(step: int, log_n: int) -> int:
    """Galois element of a rotation by ``step`` slots: ``5^step mod 2N``.

    Negative steps rotate the other way; steps are taken modulo N/2 (the
    order of 5 in ``(Z/2NZ)^*``).
    """
    check_log_n(log_n)
    two_n = 2 << log_n
    return pow(5, int(step) % max(1, (1 << log_n) // 2), two_n)


def conjugation_element(log_n: int) -> int:
    """Galois element of complex conjugation of the slots: ``2N - 1``."""
    check_log_n(log_n)
    return (2 << log_n) - 1


def check_galois_element(g: int, log_n: int) -> int:
    """Require an odd ``g`` in ``[1, 2N)`` (an element of ``(Z/2NZ)^*``)."""
    two_n = 2 << check_log_n(log_n)
    g = int(g)
    if not (0 < g < two_n and g % 2 == 1):
        raise ParameterError(f"Galois element {g} must be odd and in [1, {two_n})")
    return g


def automorphism_coeff_reference(a, g: int, q: int) -> list[int]:
    """``a(X^g) mod (X^N + 1, q)`` (pure Python, one limb)."""
    n = len(a)
    out = [0] * n
    for i, coeff in enumerate(a):
        e = i * g % (2 * n)
        if e < n:
            out[e] = (out[e] + int(coeff)) % q
        else:
            out[e - n] = (out[e - n] - int(coeff)) % q
    return out


@njit
def _automorphism_coeff_kernel(a, g, moduli, out):
    n = U64(a.shape[1])
    mask = n + n - U64(1)
    for k in range(U64(a.shape[0])):
        q = moduli[k]
        src = a[k]
        dst = out[k]
        for i in range(n):
            e = (i * g) & mask
            v = src[i]
            if e >= n:
                e -= n
                if v != U64(0):
                    v = q - v
            dst[e] = v


@njit
def _ntt_permutation_kernel(brv, g, perm):
    n = U64(brv.shape[0])
    mask = n + n - U64(1)
    for k in range(n):
        e = (g * (U64(2) * brv[k] + U64(1))) & mask
        perm[k] = brv[(e - U64(1)) >> U64(1)]


@njit
def _permute_rows(a, perm, out):
    for k in range(U64(a.shape[0])):
        src = a[k]
        dst = out[k]
        for i in range(U64(a.shape[1])):
            dst[i] = src[perm[i]]


_BRV_CACHE: dict[int, np.ndarray] = {}


def ntt_permutation(g: int, log_n: int) -> np.ndarray:
    """Index map of ``X -> X^g`` in the NTT domain: ``out[k] = in[perm[k]]``."""
    g = check_galois_element(g, log_n)
    brv = _BRV_CACHE.get(log_n)
    if brv is None:
        brv = _BRV_CACHE[log_n] = bit_reverse_indices(log_n).astype(np.uint64)
    perm = np.empty(1 << log_n, dtype=np.uint64)
    _ntt_permutation_kernel(brv, U64(g), perm)
    return perm


def _validate(a, moduli, log_n):
    check_log_n(log_n)
    check_poly_array(a, len(moduli), 1 << log_n)
    check_reduced(a, moduli)


def automorphism_coeff(a: np.ndarray, g: int, moduli: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a(X^g)`` for coefficient-domain limbs ``a`` (shape ``(L, N)``,
    reduced modulo ``moduli``); returns a new array (or fills ``out``)."""
    log_n = int(a.shape[-1]).bit_length() - 1 if isinstance(a, np.ndarray) else 0
    _validate(a, moduli, log_n)
    g = check_galois_element(g, log_n)
    if out is None:
        out = np.empty_like(a)
    _automorphism_coeff_kernel(a, U64(g), moduli, out)
    return out


def automorphism_ntt(a: np.ndarray, g: int, perm: np.ndarray | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
    """``a(X^g)`` for NTT-domain limbs ``a`` (shape ``(L, N)``).

    ``perm`` may be passed to reuse :func:`ntt_permutation` across calls.
    """
    if not isinstance(a, np.ndarray) or a.ndim != 2:
        check_poly_array(a, 1, 1)  # raises the typed error
    log_n = int(a.shape[1]).bit_length() - 1
    if a.shape[1] != 1 << log_n:
        raise ParameterError(f"ring degree {a.shape[1]} is not a power of two")
    check_poly_array(a, a.shape[0], a.shape[1])
    if perm is None:
        perm = ntt_permutation(g, log_n)
    if out is None:
        out = np.empty_like(a)
    _permute_rows(a, perm, out)
    return out
