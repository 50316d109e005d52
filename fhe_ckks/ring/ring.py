"""The ring ``R_Q = Z_Q[X]/(X^N + 1)`` in RNS form, with its NTT tables.

A :class:`Ring` fixes N and an ordered list of primes ``q_0, ..., q_{L-1}``.
Polynomials are plain ``(l, N)`` uint64 arrays whose limb i is reduced modulo
``q_i``; an array with ``l < L`` limbs lives in the sub-ring of the first l
primes (a CKKS ciphertext at a lower level).  The ring does not remember the
domain of an array (coefficients or NTT values): the caller does, as every
method's docstring says which domain it expects.

Pointwise operations (add, sub, neg, mul, scalar mul) are valid in either
domain except ``mul``, which is the negacyclic product only in the NTT domain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ParameterError, ShapeError
from .automorphism import automorphism_coeff, automorphism_ntt, check_galois_element, ntt_permutation
from .checks import check_poly_array, check_reduced
from .modarith import U64, barrett_precompute, mul_barrett, mul_shoup, njit, shoup_precompute
from .ntt import NTTTables
from .primes import check_log_n
from .rns import RNSBasis
from .scaling import Rescaler
from .sampling import (
    Shake256Stream,
    centered_binomial,
    discrete_gaussian,
    hamming_ternary,
    ternary,
    uniform_mod,
)

__all__ = ["Ring"]


@njit
def _add_kernel(a, b, moduli, out):
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        for c in range(U64(a.shape[1])):
            x = a[i, c] + b[i, c]
            if x >= q:
                x -= q
            out[i, c] = x


@njit
def _sub_kernel(a, b, moduli, out):
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        for c in range(U64(a.shape[1])):
            x = a[i, c] + (q - b[i, c])
            if x >= q:
                x -= q
            out[i, c] = x


@njit
def _neg_kernel(a, moduli, out):
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        for c in range(U64(a.shape[1])):
            x = a[i, c]
            out[i, c] = q - x if x != U64(0) else x


@njit
def _mul_kernel(a, b, moduli, ratios, out):
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        r1 = ratios[i, 0]
        r0 = ratios[i, 1]
        for c in range(U64(a.shape[1])):
            out[i, c] = mul_barrett(a[i, c], b[i, c], q, r1, r0)


@njit
def _mul_add_kernel(a, b, moduli, ratios, acc):
    """``acc += a * b`` pointwise."""
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        r1 = ratios[i, 0]
        r0 = ratios[i, 1]
        for c in range(U64(a.shape[1])):
            x = acc[i, c] + mul_barrett(a[i, c], b[i, c], q, r1, r0)
            if x >= q:
                x -= q
            acc[i, c] = x


@njit
def _mul_scalar_kernel(a, consts, consts_shoup, moduli, out):
    for i in range(U64(a.shape[0])):
        q = moduli[i]
        w = consts[i]
        ws = consts_shoup[i]
        for c in range(U64(a.shape[1])):
            out[i, c] = mul_shoup(a[i, c], w, ws, q)


class Ring:
    """``Z_Q[X]/(X^N + 1)`` for ``Q = q_0 ... q_{L-1}``: NTT tables, CRT data
    and the arithmetic on ``(l, N)`` uint64 limb arrays, ``1 <= l <= L``.

    Args:
        log_n: N = 2^log_n.
        moduli: distinct NTT-friendly primes (``q = 1 mod 2N``, below 2^61).
        tables: NTT tables to share, whose first primes are ``moduli`` (for
            example the tables of ``Q ∪ P`` serving the ring of Q).

    Attributes:
        n, log_n: the ring degree and its log.
        moduli: uint64 array of the primes.
        basis: the :class:`~fhe_ckks.ring.rns.RNSBasis` of all primes.
        tables: the :class:`~fhe_ckks.ring.ntt.NTTTables`.
    """

    def __init__(self, log_n: int, moduli: Sequence[int], tables: NTTTables | None = None):
        self.log_n = check_log_n(log_n)
        self.n = 1 << log_n
        self.basis = RNSBasis(moduli)
        self.moduli = self.basis.moduli
        if tables is None:
            tables = NTTTables(log_n, self.basis.primes)
        elif tables.log_n != log_n or tables.moduli[: len(self.moduli)].tolist() != self.moduli.tolist():
            raise ParameterError("shared NTT tables must start with this ring's primes")
        self.tables = tables
        self._ratios = np.array([barrett_precompute(q) for q in self.basis.primes], dtype=np.uint64)
        self._bases: dict[int, RNSBasis] = {len(self.basis): self.basis}
        self._rescalers: dict[int, Rescaler] = {}
        self._perms: dict[int, np.ndarray] = {}

    @property
    def barrett_ratios(self) -> np.ndarray:
        """``barrett_precompute(q)`` per prime, shape ``(limbs, 2)`` (read only: shared by every user)."""
        return self._ratios

    @classmethod
    def pointwise(cls, log_n: int, moduli: Sequence[int]) -> Ring:
        """A ring without NTT tables, for pointwise arithmetic on NTT values
        over any set of primes (key generation over a subset of Q·P).  Its
        ``ntt``, ``intt``, ``rescale`` and NTT-domain automorphisms raise."""
        out = object.__new__(cls)
        out.log_n = check_log_n(log_n)
        out.n = 1 << log_n
        out.basis = RNSBasis(moduli)
        out.moduli = out.basis.moduli
        out.tables = None
        out._ratios = np.array([barrett_precompute(q) for q in out.basis.primes], dtype=np.uint64)
        out._bases = {len(out.basis): out.basis}
        out._rescalers = {}
        out._perms = {}
        return out

    def __len__(self) -> int:
        return len(self.moduli)

    def __repr__(self) -> str:
        return f"Ring(N=2^{self.log_n}, {len(self)} primes, log2 Q={self.basis.product.bit_length()})"

    # ---- bookkeeping -------------------------------------------------------

    def basis_at(self, limbs: int) -> RNSBasis:
        """The RNS basis of the first ``limbs`` primes (cached)."""
        if not 0 < limbs <= len(self):
            raise ShapeError(f"{limbs} limbs requested, the ring has {len(self)}")
        if limbs not in self._bases:
            self._bases[limbs] = RNSBasis(self.basis.primes[:limbs])
        return self._bases[limbs]

    def zeros(self, limbs: int | None = None) -> np.ndarray:
        """The zero polynomial with ``limbs`` limbs (all of them by default)."""
        limbs = len(self) if limbs is None else limbs
        self.basis_at(limbs)
        return np.zeros((limbs, self.n), dtype=np.uint64)

    def check(self, a: np.ndarray, limbs: int | None = None) -> int:
        """Validate a reduced limb array; return its number of limbs."""
        if not isinstance(a, np.ndarray) or a.ndim != 2:
            raise ShapeError(f"expected a (limbs, N) uint64 array, got {getattr(a, 'shape', type(a).__name__)}")
        count = a.shape[0] if limbs is None else limbs
        if not 0 < count <= len(self):
            raise ShapeError(f"{count} limbs, the ring has {len(self)}")
        check_poly_array(a, count, self.n)
        check_reduced(a, self.moduli[:count])
        return count

    def _binary(self, a, b, out, check):
        if check:
            self.check(a)
            self.check(b, a.shape[0])
        if out is None:
            out = np.empty_like(a)
        elif check:
            check_poly_array(out, a.shape[0], self.n)
        return out

    def _ntt_tables(self) -> NTTTables:
        if self.tables is None:
            raise ParameterError("this ring was built for pointwise arithmetic only: it has no NTT tables")
        return self.tables

    # ---- domain changes ----------------------------------------------------

    def ntt(self, a: np.ndarray, *, check: bool = True) -> None:
        """In place: coefficients -> NTT values (bit-reversed order)."""
        self._ntt_tables().forward(a, check=check)

    def intt(self, a: np.ndarray, *, check: bool = True) -> None:
        """In place: NTT values -> coefficients."""
        self._ntt_tables().inverse(a, check=check)

    # ---- pointwise arithmetic (either domain, except mul) -------------------

    def add(self, a, b, out=None, *, check: bool = True) -> np.ndarray:
        """``a + b`` limb by limb."""
        out = self._binary(a, b, out, check)
        _add_kernel(a, b, self.moduli, out)
        return out

    def sub(self, a, b, out=None, *, check: bool = True) -> np.ndarray:
        """``a - b`` limb by limb."""
        out = self._binary(a, b, out, check)
        _sub_kernel(a, b, self.moduli, out)
        return out

    def neg(self, a, out=None, *, check: bool = True) -> np.ndarray:
        """``-a`` limb by limb."""
        if check:
            self.check(a)
        out = np.empty_like(a) if out is None else out
        _neg_kernel(a, self.moduli, out)
        return out

    def mul(self, a, b, out=None, *, check: bool = True) -> np.ndarray:
        """Pointwise product; the negacyclic product when both are NTT values."""
        out = self._binary(a, b, out, check)
        _mul_kernel(a, b, self.moduli, self._ratios, out)
        return out

    def mul_add(self, a, b, acc, *, check: bool = True) -> np.ndarray:
        """``acc += a * b`` pointwise (NTT domain for a ring product)."""
        if check:
            self._binary(a, b, acc, check)
            self.check(acc, a.shape[0])
        _mul_add_kernel(a, b, self.moduli, self._ratios, acc)
        return acc

    def mul_scalar(self, a, scalar: int | Sequence[int], out=None, *, check: bool = True) -> np.ndarray:
        """``a * c`` for an integer c (any size and sign), or for one residue
        per limb when a sequence is given.  Valid in either domain."""
        if check:
            self.check(a)
        limbs = a.shape[0]
        primes = self.basis.primes[:limbs]
        if isinstance(scalar, (int, np.integer)):
            consts = [int(scalar) % q for q in primes]
        else:
            consts = [int(c) % q for c, q in zip(scalar, primes, strict=True)]
        w = np.array(consts, dtype=np.uint64)
        ws = np.array([shoup_precompute(c, q) for c, q in zip(consts, primes)], dtype=np.uint64)
        out = np.empty_like(a) if out is None else out
        _mul_scalar_kernel(a, w, ws, self.moduli, out)
        return out

    # ---- automorphisms ------------------------------------------------------

    def galois_permutation(self, g: int) -> np.ndarray:
        """The NTT-domain index map of ``X -> X^g`` (cached per element)."""
        perm = self._perms.get(g)
        if perm is None:
            perm = self._perms[g] = ntt_permutation(g, self.log_n)
        return perm

    def automorphism(self, a: np.ndarray, g: int, *, ntt_domain: bool, out=None) -> np.ndarray:
        """``a(X^g)``; the NTT-domain index map is cached per Galois element."""
        g = check_galois_element(g, self.log_n)
        if not ntt_domain:
            return automorphism_coeff(a, g, self.moduli[: a.shape[0]], out)
        self.check(a)
        return automorphism_ntt(a, g, self.galois_permutation(g), out)

    # ---- rescale and drop ---------------------------------------------------

    def rescaler(self, limbs: int) -> Rescaler:
        """The :class:`Rescaler` that divides by prime ``limbs - 1`` (cached)."""
        if limbs not in self._rescalers:
            self._rescalers[limbs] = Rescaler(self.basis_at(limbs))
        return self._rescalers[limbs]

    def rescale(self, a: np.ndarray, *, ntt_domain: bool, out: np.ndarray | None = None,
                check: bool = True) -> np.ndarray:
        """``round(a / q_last)`` on ``l - 1`` limbs, exactly (into ``out`` when
        given, which must not overlap ``a``).

        In the NTT domain the last limb is brought back to coefficients (one
        inverse NTT), reduced modulo each remaining prime and transformed
        again (``l - 1`` forward NTTs); the rest is pointwise.
        """
        limbs = self.check(a) if check else a.shape[0]
        if limbs < 2:
            raise ShapeError("cannot rescale a polynomial with a single limb")
        resc = self.rescaler(limbs)
        last = a[limbs - 1: limbs].copy()
        if ntt_domain:
            self._ntt_tables().inverse(last, rows=[limbs - 1], check=False)
        corr = resc.correction(last[0])
        if ntt_domain:
            self._ntt_tables().forward(corr, check=False)
        if out is None:
            out = np.empty((limbs - 1, self.n), dtype=np.uint64)
        elif check:
            check_poly_array(out, limbs - 1, self.n)
        resc.finish(a[: limbs - 1], corr, out)
        return out

    @staticmethod
    def drop_limbs(a: np.ndarray, count: int = 1) -> np.ndarray:
        """The first ``l - count`` limbs of ``a`` (a copy): the same value in
        the sub-ring of fewer primes (a CKKS level drop, either domain)."""
        if not isinstance(count, (int, np.integer)) or not 0 <= count < a.shape[0]:
            raise ShapeError(f"cannot drop {count} of {a.shape[0]} limbs")
        return a[: a.shape[0] - count].copy()

    # ---- conversions and sampling ------------------------------------------

    def from_signed(self, values, limbs: int | None = None) -> np.ndarray:
        """Residues of small signed integers (e.g. a secret or an error),
        coefficient domain, shape ``(limbs, N)``."""
        limbs = len(self) if limbs is None else limbs
        vals = np.asarray(values)
        if vals.shape != (self.n,) or vals.dtype.kind not in "iu":
            raise ShapeError(f"expected {self.n} integers, got shape {vals.shape} dtype {vals.dtype}")
        vals = vals.astype(np.int64)
        out = np.empty((limbs, self.n), dtype=np.uint64)
        for i, q in enumerate(self.basis.primes[:limbs]):
            out[i] = np.mod(vals, q).astype(np.uint64)
        return out

    def sample_uniform(self, seed: bytes, limbs: int | None = None, domain: bytes = b"fhe_ckks.uniform") -> np.ndarray:
        """A uniform polynomial expanded from a (public) 32-byte ``seed``; read
        it as NTT values, so that storing the seed stores the polynomial."""
        limbs = len(self) if limbs is None else limbs
        return uniform_mod(Shake256Stream(seed, domain), self.basis.primes[:limbs], self.n)

    def sample_secret(self, stream: Shake256Stream, hamming_weight: int | None = None) -> np.ndarray:
        """Ternary secret coefficients (int64): dense uniform, or exactly
        ``hamming_weight`` nonzero ones."""
        if hamming_weight is None:
            return ternary(stream, self.n)
        return hamming_ternary(stream, self.n, hamming_weight)

    def sample_error(self, stream: Shake256Stream, sigma: float = 3.2, *, binomial: bool = False) -> np.ndarray:
        """Error coefficients (int64): discrete Gaussian (default) or
        centred binomial with eta = round(2 sigma^2)."""
        if binomial:
            eta = int(round(2 * sigma * sigma))
            if eta < 1:
                raise ParameterError(f"sigma {sigma} too small for a binomial sampler")
            return centered_binomial(stream, self.n, eta)
        return discrete_gaussian(stream, self.n, sigma)
