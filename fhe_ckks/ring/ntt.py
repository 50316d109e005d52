"""Negacyclic number-theoretic transform (NTT) over an RNS basis.

For a prime ``q = 1 (mod 2N)`` with a primitive 2N-th root of unity psi, the
negacyclic NTT maps ``a(X)`` in ``Z_q[X]/(X^N + 1)`` to its values at the N
roots of ``X^N + 1``, which are the odd powers ``psi^(2j+1)``::

    NTT(a)[k] = a(psi^(2*brv(k) + 1)) = sum_i a_i * psi^((2*brv(k) + 1) * i)  (mod q)

where ``brv`` reverses the ``log2 N`` bits of k.  That output order
("bit-reversed") is what the in-place Cooley-Tukey butterflies produce, and
the Gentleman-Sande inverse consumes it, so no permutation pass is ever done.
In the NTT domain the negacyclic product is the pointwise product.

Kernels (Longa & Naehrig, CANS 2016, with Harvey's lazy reduction):

* forward: ``log2 N`` stages of Cooley-Tukey butterflies
  ``(x, y) -> (x + w*y, x - w*y)`` with ``w`` read from ``psi_rev`` (the powers
  of psi in bit-reversed order).  Values stay in ``[0, 4q)`` between stages:
  ``x`` is brought to ``[0, 2q)`` by one conditional subtraction, ``w*y`` is a
  lazy Shoup product in ``[0, 2q)``.  One final pass reduces to ``[0, q)``.
* inverse: Gentleman-Sande butterflies ``(x, y) -> (x + y, w*(x - y))`` with
  values in ``[0, 2q)``; the last stage also multiplies by ``N^-1``.

All loop indices are ``uint64``: with signed indices Numba emits wraparound
checks and the transform runs about twice as slowly.

Every kernel has a pure-Python reference that evaluates the definition above
directly (``O(N^2)``), and the tests check they agree.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, ShapeError
from .checks import check_poly_array, check_reduced
from .parallel import run_chunks
from .modarith import U64, check_modulus, mul_shoup_lazy, njit, shoup_precompute
from .primes import check_log_n, primitive_root_2n

__all__ = [
    "bit_reverse",
    "bit_reverse_indices",
    "NTTTables",
    "ntt_forward_reference",
    "ntt_inverse_reference",
]


def bit_reverse(k: int, bits: int) -> int:
    """Reverse the lowest ``bits`` bits of ``k``."""
    return int(format(k, f"0{bits}b")[::-1], 2) if bits else 0


def bit_reverse_indices(log_n: int) -> np.ndarray:
    """``brv(k)`` for k in ``[0, 2^log_n)`` as an int64 array."""
    n = 1 << log_n
    idx = np.arange(n, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    for b in range(log_n):
        out |= ((idx >> b) & 1) << (log_n - 1 - b)
    return out


# --------------------------------------------------------------------------
# Pure-Python references: the definition, evaluated directly.
# --------------------------------------------------------------------------


def ntt_forward_reference(a, q: int, psi: int) -> list[int]:
    """``NTT(a)[k] = sum_i a_i psi^((2 brv(k) + 1) i) mod q`` (O(N^2))."""
    n = len(a)
    log_n = n.bit_length() - 1
    out = []
    for k in range(n):
        root = pow(psi, 2 * bit_reverse(k, log_n) + 1, q)
        acc, power = 0, 1
        for coeff in a:
            acc = (acc + int(coeff) * power) % q
            power = power * root % q
        out.append(acc)
    return out


def ntt_inverse_reference(values, q: int, psi: int) -> list[int]:
    """Interpolation ``a_i = N^-1 sum_k A_k psi^(-(2 brv(k) + 1) i) mod q``."""
    n = len(values)
    log_n = n.bit_length() - 1
    psi_inv = pow(psi, -1, q)
    n_inv = pow(n, -1, q)
    out = []
    for i in range(n):
        acc = 0
        for k, v in enumerate(values):
            acc += int(v) * pow(psi_inv, (2 * bit_reverse(k, log_n) + 1) * i, q)
        out.append(acc * n_inv % q)
    return out


# --------------------------------------------------------------------------
# Numba kernels.  ``a`` is one limb (length N), reduced as documented.
# --------------------------------------------------------------------------


@njit
def _forward_limb_lazy(a, psi, psi_shoup, q):
    """In-place forward NTT of one limb: input and output in ``[0, 4q)``."""
    n = U64(a.shape[0])
    two_q = q + q
    t = n
    m = U64(1)
    while m < n:
        t >>= U64(1)
        for i in range(m):
            w = psi[m + i]
            ws = psi_shoup[m + i]
            j1 = U64(2) * i * t
            for j in range(j1, j1 + t):
                x = a[j]
                if x >= two_q:
                    x -= two_q
                y = mul_shoup_lazy(a[j + t], w, ws, q)
                a[j] = x + y
                a[j + t] = x + (two_q - y)
        m <<= U64(1)


@njit
def _reduce_4q(a, q):
    two_q = q + q
    for j in range(U64(a.shape[0])):
        x = a[j]
        if x >= two_q:
            x -= two_q
        if x >= q:
            x -= q
        a[j] = x


@njit
def _inverse_limb_lazy(a, ipsi, ipsi_shoup, q, n_inv, n_inv_shoup, last_w, last_ws):
    """In-place inverse NTT of one limb: input in ``[0, 2q)``, output in
    ``[0, 2q)``.  ``last_w = ipsi[1] * N^-1`` merges the scaling by ``N^-1``
    into the last stage."""
    n = U64(a.shape[0])
    two_q = q + q
    t = U64(1)
    m = n
    while m > U64(2):
        h = m >> U64(1)
        j1 = U64(0)
        for i in range(h):
            w = ipsi[h + i]
            ws = ipsi_shoup[h + i]
            for j in range(j1, j1 + t):
                x = a[j]
                y = a[j + t]
                u = x + y
                if u >= two_q:
                    u -= two_q
                a[j] = u
                a[j + t] = mul_shoup_lazy(x + (two_q - y), w, ws, q)
            j1 += t + t
        t <<= U64(1)
        m = h
    # Last stage (m = 2): one butterfly group spanning the whole limb, with
    # both outputs also multiplied by N^-1.
    for j in range(t):
        x = a[j]
        y = a[j + t]
        a[j] = mul_shoup_lazy(x + y, n_inv, n_inv_shoup, q)
        a[j + t] = mul_shoup_lazy(x + (two_q - y), last_w, last_ws, q)


@njit
def _reduce_2q(a, q):
    for j in range(U64(a.shape[0])):
        x = a[j]
        if x >= q:
            x -= q
        a[j] = x


@njit
def _forward_batch(a, a_rows, rows, psi, psi_shoup, moduli, lazy_out):
    """Forward NTT of limb ``a[a_rows[k]]`` with the tables of row ``rows[k]``."""
    for k in range(U64(rows.shape[0])):
        r = rows[k]
        limb = a[a_rows[k]]
        _forward_limb_lazy(limb, psi[r], psi_shoup[r], moduli[r])
        if not lazy_out:
            _reduce_4q(limb, moduli[r])


@njit
def _inverse_batch(a, a_rows, rows, ipsi, ipsi_shoup, moduli, scal, lazy_out):
    """Inverse NTT of limb ``a[a_rows[k]]`` with the tables of row ``rows[k]``."""
    for k in range(U64(rows.shape[0])):
        r = rows[k]
        q = moduli[r]
        limb = a[a_rows[k]]
        _inverse_limb_lazy(limb, ipsi[r], ipsi_shoup[r], q, scal[r, 0], scal[r, 1], scal[r, 2], scal[r, 3])
        if not lazy_out:
            _reduce_2q(limb, q)


# --------------------------------------------------------------------------
# Tables and the public interface.
# --------------------------------------------------------------------------


class NTTTables:
    """Precomputed twiddle factors for the negacyclic NTT over a list of primes.

    Attributes:
        log_n: ring degree exponent, N = 2^log_n.
        moduli: uint64 array of the primes, shape ``(L,)``.
        psi: the primitive 2N-th root used for each prime (Python ints).
        psi_rev, psi_rev_shoup: ``psi^brv(k)`` and Shoup companions, ``(L, N)``.
        ipsi_rev, ipsi_rev_shoup: ``psi^-brv(k)`` and Shoup companions, ``(L, N)``.
    """

    def __init__(self, log_n: int, moduli):
        self.log_n = check_log_n(log_n)
        self.n = n = 1 << log_n
        primes = [check_modulus(q) for q in moduli]
        if len(primes) == 0:
            raise ParameterError("an NTT table needs at least one prime")
        self.moduli = np.array(primes, dtype=np.uint64)
        self.psi = [primitive_root_2n(q, log_n) for q in primes]
        rev = bit_reverse_indices(log_n)
        count = len(primes)
        self.psi_rev = np.empty((count, n), dtype=np.uint64)
        self.psi_rev_shoup = np.empty((count, n), dtype=np.uint64)
        self.ipsi_rev = np.empty((count, n), dtype=np.uint64)
        self.ipsi_rev_shoup = np.empty((count, n), dtype=np.uint64)
        # Per prime: N^-1, its Shoup companion, psi^-brv(1) * N^-1 and its companion.
        self._inv_scalars = np.empty((count, 4), dtype=np.uint64)
        for k, (q, psi) in enumerate(zip(primes, self.psi)):
            powers = _powers(psi, n, q)
            ipowers = _powers(pow(psi, -1, q), n, q)
            fwd = np.array(powers, dtype=object)[rev]
            inv = np.array(ipowers, dtype=object)[rev]
            self.psi_rev[k] = fwd
            self.psi_rev_shoup[k] = (fwd << 64) // q  # shoup_precompute, vectorized
            self.ipsi_rev[k] = inv
            self.ipsi_rev_shoup[k] = (inv << 64) // q
            n_inv = pow(n, -1, q)
            last = int(inv[1]) * n_inv % q
            self._inv_scalars[k] = [n_inv, shoup_precompute(n_inv, q), last, shoup_precompute(last, q)]
        self._prefix_rows = np.arange(count, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.moduli)

    def rows_for(self, limbs) -> np.ndarray:
        """The table rows a transform uses: ``limbs`` may be an int (the first
        ``limbs`` primes, the usual case of a ciphertext at a lower level) or a
        sequence of row indices (any subset, as hybrid key switching needs)."""
        if isinstance(limbs, (int, np.integer)):
            if not 0 < int(limbs) <= len(self.moduli):
                raise ShapeError(f"{limbs} limbs requested, the tables have {len(self.moduli)}")
            return self._prefix_rows[: int(limbs)]
        rows = np.asarray(limbs, dtype=np.uint64)
        if rows.ndim != 1 or rows.size == 0 or int(rows.max()) >= len(self.moduli):
            raise ShapeError(f"invalid limb selection {limbs!r} for {len(self.moduli)} primes")
        return rows

    def _prepare(self, a: np.ndarray, rows, check: bool, bound: int) -> np.ndarray:
        if rows is None:
            if not (isinstance(a, np.ndarray) and a.ndim == 2):
                check_poly_array(a, 1, self.n)  # raises the typed error
            rows = a.shape[0]
        rows = self.rows_for(rows)
        if check:
            check_poly_array(a, len(rows), self.n)
            check_reduced(a, self.moduli[rows], bound)
        return rows

    # ---- transforms -------------------------------------------------------

    def forward(self, a: np.ndarray, rows=None, *, check: bool = True) -> None:
        """In-place forward NTT of every limb of ``a`` (shape ``(L', N)``).

        Limb k uses prime ``rows[k]`` (by default the first L' primes).  Input
        and output are reduced, in ``[0, q)``.  Cost: ``(N/2) log2 N``
        butterflies per limb, one Shoup product each.
        """
        rows = self._prepare(a, rows, check, 1)
        self._run(_forward_batch, a, self._prefix_rows, rows, False)

    def forward_lazy(self, a: np.ndarray, rows=None, *, check: bool = True) -> None:
        """In-place forward NTT; input and output in ``[0, 4q)``."""
        rows = self._prepare(a, rows, check, 4)
        self._run(_forward_batch, a, self._prefix_rows, rows, True)

    def inverse(self, a: np.ndarray, rows=None, *, check: bool = True) -> None:
        """In-place inverse NTT of every limb of ``a``: reduced input and
        output, the scaling by ``N^-1`` included."""
        rows = self._prepare(a, rows, check, 1)
        self._run(_inverse_batch, a, self._prefix_rows, rows, False)

    def inverse_lazy(self, a: np.ndarray, rows=None, *, check: bool = True) -> None:
        """In-place inverse NTT; input and output in ``[0, 2q)``."""
        rows = self._prepare(a, rows, check, 2)
        self._run(_inverse_batch, a, self._prefix_rows, rows, True)

    def forward_select(self, a: np.ndarray, a_rows: np.ndarray, rows: np.ndarray) -> None:
        """In-place forward NTT of the limbs ``a[a_rows[k]]`` with prime
        ``rows[k]``, other limbs untouched (no input check: a hot path of key
        switching, whose callers own the arrays).  Reduced input and output."""
        self._run(_forward_batch, a, a_rows, rows, False)

    def inverse_select(self, a: np.ndarray, a_rows: np.ndarray, rows: np.ndarray) -> None:
        """In-place inverse NTT of the limbs ``a[a_rows[k]]`` with prime
        ``rows[k]`` (see :meth:`forward_select`)."""
        self._run(_inverse_batch, a, a_rows, rows, False)

    def _run(self, kernel, a, a_rows, rows, lazy_out: bool) -> None:
        """Run a batch kernel over the selected limbs, split across threads."""
        a_rows = a_rows[: len(rows)]

        def chunk(start: int, stop: int) -> None:
            if kernel is _forward_batch:
                kernel(a, a_rows[start:stop], rows[start:stop], self.psi_rev, self.psi_rev_shoup, self.moduli,
                       lazy_out)
            else:
                kernel(a, a_rows[start:stop], rows[start:stop], self.ipsi_rev, self.ipsi_rev_shoup, self.moduli,
                       self._inv_scalars, lazy_out)

        run_chunks(chunk, len(rows))


def _powers(base: int, count: int, q: int) -> list[int]:
    out = [1] * count
    for i in range(1, count):
        out[i] = out[i - 1] * base % q
    return out
