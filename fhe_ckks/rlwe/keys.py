"""RLWE keys and their generation.

Notation (all polynomials in ``R = Z[X]/(X^N + 1)``, NTT domain):

* secret key ``s``: ternary, dense or of fixed Hamming weight.
* public key ``(b, a)`` over Q: ``a`` uniform (expanded from a public seed),
  ``b = -a*s + e``.
* switching key from ``s'`` to ``s`` (hybrid, ``dnum`` digits, over Q·P): for
  digit j with CRT idempotent ``Q~_j`` (``= 1`` modulo the primes of digit j,
  ``= 0`` modulo the other ciphertext primes)::

      b_j = -a_j*s + e_j + P * Q~_j * s'      a_j uniform from a seed

  A relinearization key has ``s' = s^2``; a Galois key for ``g`` has
  ``s' = s(X^g)``.

Every key records the fingerprint of its parameters and a random public
``key_id`` shared by all keys of one :class:`KeyGenerator`, so that mixing
keys, ciphertexts or parameters raises a typed error instead of decrypting
garbage.  The uniform halves are stored as seeds (``seed``) and expanded
once, on first use; the serialized form keeps only the seed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import ParameterError
from ..ring import Ring, SecretStream, Shake256Stream
from ..ring.automorphism import check_galois_element, conjugation_element, galois_element, ntt_permutation
from ..ring.sampling import discrete_gaussian, hamming_ternary, ternary, uniform_mod
from .keyplan import KeyPlan
from .params import Parameters

__all__ = [
    "SecretKey",
    "PublicKey",
    "SwitchingKey",
    "GaloisKeys",
    "EncapsulationKeys",
    "EvaluationKeys",
    "KeyGenerator",
    "signed_to_ntt",
]


def signed_to_ntt(params: Parameters, coeffs: np.ndarray, rows: int) -> np.ndarray:
    """Small signed coefficients -> NTT values modulo the first ``rows`` primes
    of ``params.tables_qp`` (``Q`` then ``P``)."""
    moduli = params.moduli_qp[:rows]
    out = np.empty((rows, params.n), dtype=np.uint64)
    vals = coeffs.astype(np.int64)
    for i, q in enumerate(moduli):
        out[i] = np.mod(vals, np.int64(q)).astype(np.uint64)
    params.tables_qp.forward(out, check=False)
    return out


def _uniform_qp(params: Parameters, seed: bytes, domain: bytes, rows) -> np.ndarray:
    """Uniform NTT values over the first ``rows`` table rows (an int) or over
    the given table rows (a sequence), expanded from the public ``seed``: the
    same in every process, forked or not."""
    moduli = params.moduli_qp[:rows] if isinstance(rows, (int, np.integer)) else \
        params.moduli_qp[np.asarray(rows, dtype=np.int64)]
    return uniform_mod(Shake256Stream(seed, domain), moduli, params.n)


@dataclass(eq=False)
class SecretKey:
    """The secret ``s``: its ternary coefficients and NTT values over Q·P.

    Never give this object to a server: an :class:`~fhe_ckks.ckks.Evaluator`
    refuses it.
    """

    params: Parameters = field(repr=False)
    key_id: bytes
    coeffs: np.ndarray = field(repr=False)  # int8, shape (N,)
    ntt: np.ndarray = field(repr=False)  # (L + 1 + K, N)


@dataclass(eq=False)
class PublicKey:
    """``(b, a)`` with ``b = -a*s + e`` over Q, ``a`` expanded from ``seed``."""

    params: Parameters = field(repr=False)
    key_id: bytes
    seed: bytes = field(repr=False)
    b: np.ndarray = field(repr=False)  # (L + 1, N) NTT
    _a: np.ndarray | None = field(default=None, repr=False)

    @property
    def a(self) -> np.ndarray:
        if self._a is None:
            self._a = _uniform_qp(self.params, self.seed, b"fhe_ckks.pk", self.params.max_level + 1)
        return self._a


@dataclass(eq=False)
class SwitchingKey:
    """Hybrid key-switching key from ``s'`` to ``s``: one pair ``(b_j, a_j)``
    per digit, ``a_j`` expanded from ``seed``.

    A *level-aware* key (``max_level < L``) lives only over
    ``q_0 .. q_max_level`` and the special primes, with the digits that meet
    those primes: it serves key switching at levels up to ``max_level`` and
    is ``(max_level + 1 + K) / (L + 1 + K)`` of the size (less again in
    digits).  Bootstrapping's SlotsToCoeffs keys, used only at low levels, are
    stored this way.

    Attributes:
        kind: ``"relin"`` or ``"galois"``.
        galois_element: g for a Galois key, else None.
        max_level: the highest level the key serves.
    """

    params: Parameters = field(repr=False)
    key_id: bytes
    kind: str
    galois_element: int | None
    seed: bytes = field(repr=False)
    b: np.ndarray = field(repr=False)  # (digits, max_level + 1 + K, N)
    _a: np.ndarray | None = field(default=None, repr=False)
    max_level: int | None = None

    def __post_init__(self):
        if self.max_level is None:
            self.max_level = self.params.max_level

    def table_rows(self) -> np.ndarray:
        """The rows of ``params.tables_qp`` the key's rows stand for."""
        return self.params.qp_rows(self.max_level)

    @property
    def a(self) -> np.ndarray:
        if self._a is None:
            rows = self.table_rows()
            self._a = np.stack([
                _uniform_qp(self.params, self.seed, b"fhe_ckks.swk.%d" % j, rows) for j in range(self.b.shape[0])
            ])
        return self._a

    @property
    def nbytes(self) -> int:
        """Memory of the expanded key (both halves)."""
        return 2 * self.b.nbytes

    @property
    def serialized_nbytes(self) -> int:
        """Size of the key on the wire: ``b`` plus a 32-byte seed."""
        return self.b.nbytes + len(self.seed)


@dataclass(eq=False)
class GaloisKeys:
    """Galois keys by Galois element (rotations ``5^k mod 2N``, conjugation
    ``2N - 1``)."""

    params: Parameters = field(repr=False)
    key_id: bytes
    keys: dict[int, SwitchingKey] = field(default_factory=dict, repr=False)

    def __contains__(self, g: int) -> bool:
        return g in self.keys

    def __getitem__(self, g: int) -> SwitchingKey:
        return self.keys[g]

    def elements(self) -> list[int]:
        return sorted(self.keys)

    def uncovered(self, plan: KeyPlan) -> list[int]:
        """The rotation steps of ``plan`` this set has no key for, or only a key shallower than the level the
        plan uses the step at (step 0 needs none)."""
        log_n = self.params.log_n
        return [step for step, level in plan.rotations.items()
                if (g := galois_element(step, log_n)) != 1 and (g not in self.keys or self.keys[g].max_level < level)]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes for k in self.keys.values())


@dataclass(eq=False)
class EncapsulationKeys:
    """Sparse-secret encapsulation keys (Bossuat, Troncoso-Pastoriza, Hubaux,
    ACNS 2022, ePrint 2022/024), for bootstrapping.

    The client draws an *ephemeral* secret ``s'`` of small Hamming weight h
    and publishes two switching keys:

    * ``down`` (``s -> s'``) at the smallest modulus there is, ``q_0 * p_0``
      (the first ciphertext prime and the first special prime)::

          down_b = -down_a * s' + e + p_0 * s      (mod q_0 p_0)

      It is the only RLWE sample under the sparse secret, and its modulus is
      tiny (about 120 bits against the 1772 the HE standard allows a dense
      secret at N = 2^16): the construction and its security argument are
      the paper's.
    * ``up`` (``s' -> s``): an ordinary hybrid key over Q·P under the dense
      secret, so the HE standard's bound covers it.

    Bootstrapping switches a level-0 ciphertext to ``s'`` before ModRaise and
    back to ``s`` right after it: the overflow ``I`` of ModRaise then has the
    sparse secret's small range, while every other key and ciphertext keeps
    the dense secret.
    """

    params: Parameters = field(repr=False)
    key_id: bytes
    weight: int
    seed: bytes = field(repr=False)
    down_b: np.ndarray = field(repr=False)  # (2, N) NTT modulo (q_0, p_0)
    up: SwitchingKey = field(repr=False)
    _down_a: np.ndarray | None = field(default=None, repr=False)

    @staticmethod
    def down_rows(params: Parameters) -> np.ndarray:
        """The rows of ``params.tables_qp`` of ``q_0`` and ``p_0``."""
        return np.array([0, len(params.q_primes)], dtype=np.uint64)

    @property
    def down_a(self) -> np.ndarray:
        if self._down_a is None:
            self._down_a = _uniform_qp(self.params, self.seed, b"fhe_ckks.encap", self.down_rows(self.params))
        return self._down_a

    @property
    def nbytes(self) -> int:
        return 2 * self.down_b.nbytes + self.up.nbytes


class EvaluationKeys(NamedTuple):
    """The public evaluation keys of one :class:`~fhe_ckks.rlwe.keyplan.KeyPlan`
    (:meth:`KeyGenerator.evaluation_keys`): a server may hold all of them."""

    relin: SwitchingKey | None
    galois: GaloisKeys
    encapsulation: EncapsulationKeys | None


class KeyGenerator:
    """Generates a secret key and the public and evaluation keys under it.

    Args:
        params: the parameters.
        seed: 32 secret bytes to derive every secret (tests only); by
            default they come from the OS CSPRNG.  The stream is a
            :class:`~fhe_ckks.ring.SecretStream`: reproducible in this
            process, reseeded in a forked child, so that two children never
            make the same key.

    Attributes:
        secret_key: the :class:`SecretKey` (keep it on the client).
    """

    def __init__(self, params: Parameters, seed: bytes | None = None):
        if not isinstance(params, Parameters):
            raise ParameterError(f"expected Parameters, got {type(params).__name__}")
        self.params = params
        self._stream = SecretStream(seed, b"fhe_ckks.keygen")
        self._key_id = secrets.token_bytes(16) if seed is None else self._stream.read(16)
        rows = len(params.q_primes) + len(params.p_primes)
        if params.hamming_weight is None:
            coeffs = ternary(self._stream, params.n)
        else:
            coeffs = hamming_ternary(self._stream, params.n, params.hamming_weight)
        self.secret_key = SecretKey(params, self._key_id, coeffs.astype(np.int8), signed_to_ntt(params, coeffs, rows))

    @classmethod
    def from_secret_key(cls, secret_key: SecretKey) -> KeyGenerator:
        """A generator of more keys under an existing secret key (one read back from the key holder's file):
        the same key id, fresh randomness from the OS CSPRNG for every new key."""
        if not isinstance(secret_key, SecretKey):
            raise ParameterError(f"expected a SecretKey, got {type(secret_key).__name__}")
        self = cls.__new__(cls)
        self.params = secret_key.params
        self._stream = SecretStream(None, b"fhe_ckks.keygen")
        self._key_id = secret_key.key_id
        self.secret_key = secret_key
        return self

    # ---- helpers -------------------------------------------------------------

    def _public_seed(self) -> bytes:
        # Public seeds come from the secret stream too, so a fixed test seed
        # makes every key reproducible (and a forked child draws its own);
        # they are revealed with the key.
        return self._stream.read(32)

    def _error_ntt(self, rows: int) -> np.ndarray:
        return signed_to_ntt(self.params, discrete_gaussian(self._stream, self.params.n, self.params.sigma), rows)

    # ---- keys ----------------------------------------------------------------

    def public_key(self) -> PublicKey:
        """A fresh public key ``(-a*s + e, a)`` over Q."""
        p = self.params
        rows = p.max_level + 1
        seed = self._public_seed()
        a = _uniform_qp(p, seed, b"fhe_ckks.pk", rows)
        ring = p.ring_q
        b = ring.sub(self._error_ntt(rows), ring.mul(a, self.secret_key.ntt[:rows], check=False), check=False)
        return PublicKey(p, self._key_id, seed, b, a)

    def _switching_key(self, target_ntt: np.ndarray, kind: str, g: int | None,
                       max_level: int | None = None) -> SwitchingKey:
        p = self.params
        if not p.p_primes:
            raise ParameterError("these parameters have no special primes: no key switching")
        level = p.max_level if max_level is None else int(max_level)
        if not 0 <= level <= p.max_level:
            raise ParameterError(f"max_level {max_level} outside [0, {p.max_level}]")
        rows = p.qp_rows(level).astype(np.int64)
        ring = p.ring_qp if level == p.max_level else Ring.pointwise(p.log_n, p.moduli_qp[rows].tolist())
        seed = self._public_seed()
        big_p = 1
        for q in p.p_primes:
            big_p *= q
        digits = len(p.digit_positions(level))
        b = np.empty((digits, len(rows), p.n), dtype=np.uint64)
        a_all = np.empty_like(b)
        s = np.ascontiguousarray(self.secret_key.ntt[rows])
        target = np.ascontiguousarray(target_ntt[rows])
        full_rows = len(p.q_primes) + len(p.p_primes)
        for j in range(digits):
            a = _uniform_qp(p, seed, b"fhe_ckks.swk.%d" % j, rows)
            a_all[j] = a
            error = np.ascontiguousarray(self._error_ntt(full_rows)[rows])
            bj = ring.sub(error, ring.mul(a, s, check=False), check=False)
            # + P * Q~_j * s': Q~_j is 1 modulo the primes of digit j and 0
            # modulo every other prime (P itself is 0 modulo the special primes).
            consts = [big_p % p.q_primes[i] if j * p.alpha <= i < (j + 1) * p.alpha else 0
                      for i in range(level + 1)] + [0] * len(p.p_primes)
            ring.add(bj, ring.mul_scalar(target, consts, check=False), bj, check=False)
            b[j] = bj
        return SwitchingKey(p, self._key_id, kind, g, seed, b, a_all, level)

    def relin_key(self) -> SwitchingKey:
        """The relinearization key (switching from ``s^2`` to ``s``)."""
        s = self.secret_key.ntt
        return self._switching_key(self.params.ring_qp.mul(s, s, check=False), "relin", None)

    def galois_key(self, g: int, max_level: int | None = None) -> SwitchingKey:
        """The switching key for the automorphism ``X -> X^g`` (serving levels
        up to ``max_level``, default all)."""
        g = check_galois_element(g, self.params.log_n)
        s_g = self.secret_key.ntt[:, ntt_permutation(g, self.params.log_n)]
        return self._switching_key(np.ascontiguousarray(s_g), "galois", g, max_level)

    def encapsulation_keys(self, weight: int = 32) -> EncapsulationKeys:
        """Sparse-secret encapsulation keys for a fresh ephemeral secret of
        Hamming weight ``weight`` (see :class:`EncapsulationKeys`); the
        ephemeral secret itself is dropped once the keys exist."""
        p = self.params
        if not p.p_primes:
            raise ParameterError("these parameters have no special primes: no key switching")
        full_rows = len(p.q_primes) + len(p.p_primes)
        sparse = signed_to_ntt(p, hamming_ternary(self._stream, p.n, int(weight)), full_rows)
        up = self._switching_key(sparse, "encapsulation", None)
        rows = EncapsulationKeys.down_rows(p)
        idx = rows.astype(np.int64)
        ring = Ring.pointwise(p.log_n, p.moduli_qp[idx].tolist())
        seed = self._public_seed()
        a = _uniform_qp(p, seed, b"fhe_ckks.encap", rows)
        error = np.ascontiguousarray(self._error_ntt(full_rows)[idx])
        b = ring.sub(error, ring.mul(a, np.ascontiguousarray(sparse[idx]), check=False), check=False)
        p0 = p.p_primes[0]
        # + p_0 * s: p_0 is 0 modulo itself.
        ring.add(b, ring.mul_scalar(np.ascontiguousarray(self.secret_key.ntt[idx]), [p0 % p.q_primes[0], 0],
                                    check=False), b, check=False)
        return EncapsulationKeys(p, self._key_id, int(weight), seed, b, up, a)

    def evaluation_keys(self, plan: KeyPlan, progress=None) -> EvaluationKeys:
        """Exactly the keys of ``plan``, each Galois key only as deep as the plan uses it.

        The plan is validated against the parameters first (bounded size,
        levels the chain has).  Keys are made in a fixed order: conjugation,
        then the rotations from the highest level down, then the encapsulation
        keys, then the relinearization key.  ``progress(done, total)``, when
        given, is called after each key (a progress bar: at N = 2^16 a key
        takes about a second).
        """
        if not isinstance(plan, KeyPlan):
            raise ParameterError(f"expected a KeyPlan, got {type(plan).__name__}")
        plan.validate(self.params)
        made = [0]
        total = (len({galois_element(int(k), self.params.log_n) for k in plan.steps} - {1})
                 + bool(plan.conjugation) + (plan.encapsulation_weight is not None) + bool(plan.relinearization))

        def tick():
            made[0] += 1
            if progress is not None:
                progress(made[0], total)

        galois = self.galois_keys([], conjugate=plan.conjugation, on_key=tick)
        for level, steps in plan.by_level().items():
            self.galois_keys(steps, max_level=level, into=galois, on_key=tick)
        encapsulation = None
        if plan.encapsulation_weight is not None:
            encapsulation = self.encapsulation_keys(plan.encapsulation_weight)
            tick()
        relin = None
        if plan.relinearization:
            relin = self.relin_key()
            tick()
        return EvaluationKeys(relin, galois, encapsulation)

    def galois_keys(self, steps, conjugate: bool = False, max_level: int | None = None,
                    into: GaloisKeys | None = None, on_key=None) -> GaloisKeys:
        """Galois keys for the given rotation steps (and conjugation), serving
        levels up to ``max_level`` (default: all).

        Only the requested keys are generated: key generation follows the
        plan of the circuit, never "all rotations".  With ``into``, the keys
        are added to an existing set (a key already there is kept when it
        serves at least ``max_level``).  ``on_key()``, when given, is called
        after each key made.
        """
        out = GaloisKeys(self.params, self._key_id) if into is None else into
        level = self.params.max_level if max_level is None else max_level
        elements = [galois_element(int(k), self.params.log_n) for k in steps]
        if conjugate:
            elements.append(conjugation_element(self.params.log_n))
        for g in dict.fromkeys(elements):
            if g != 1 and (g not in out.keys or out.keys[g].max_level < level):
                out.keys[g] = self.galois_key(g, level)
                if on_key is not None:
                    on_key()
        return out
