"""The CKKS evaluator: homomorphic arithmetic, rescaling, rotations.

An :class:`Evaluator` is built from *public* evaluation keys only (a
relinearization key and Galois keys); it refuses a secret key, so a server
holding one can compute on ciphertexts but never decrypt them.

Levels and scales
    A ciphertext at level l lives modulo ``q_0 ... q_l``.  Multiplying two
    ciphertexts multiplies their scales; :meth:`Evaluator.rescale` divides by
    ``q_l`` (exactly, with rounding) and drops to level l-1.  The parameters fix
    a standard scale per level (``Parameters.scale_at``) such that "multiply two
    standard ciphertexts of level l, rescale" gives exactly the standard scale
    of level l-1.  :meth:`Evaluator.mul_const` and plaintexts encoded by
    default keep that property (their constant is scaled by ``q_l``).

Automatic alignment
    Operands at different levels are aligned to the lower level.  A
    ciphertext at a standard scale is brought down to another level's standard
    scale by one multiplication by an integer constant and a rescale (the
    constant is ``round(Delta_target * q / Delta)``, relative error below
    2^-40); otherwise levels are dropped.  Adding operands whose scales still
    differ by more than ``scale_tolerance`` (relative) raises
    :class:`~fhe_ckks.errors.ScaleMismatchError`.

Costs (N = 2^16, level l, K special primes, dnum digits): add O(lN);
plaintext multiplication O(lN); ciphertext multiplication 4 products plus
one key switch; rotation one key switch plus a permutation; ``k`` hoisted
rotations share one decomposition (the most expensive step).

Neighbours: the lazily reduced sums (:class:`~fhe_ckks.ckks.dot.PlainDot`,
the body of :meth:`Evaluator.linear_combination`) are in
:mod:`fhe_ckks.ckks.dot`; key switching is
:class:`~fhe_ckks.rlwe.keyswitch.KeySwitcher`; the exact rescale is
:meth:`fhe_ckks.ring.Ring.rescale`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import KeyMismatchError, LevelError, MissingKeyError, ParameterError, ScaleMismatchError, SecurityError
from ..ring.automorphism import automorphism_ntt, conjugation_element, galois_element
from ..rlwe.keys import GaloisKeys, SecretKey, SwitchingKey
from ..rlwe.keyswitch import KeySwitcher
from ..rlwe.params import Parameters
from . import dot
from .ciphertext import Ciphertext, Plaintext
from .dot import PlainDot

__all__ = ["Evaluator"]

Operand = Ciphertext | Plaintext | numbers.Number


class Evaluator:
    """Homomorphic operations with public evaluation keys.

    Args:
        params: the parameters.
        relin_key: relinearization key (needed by :meth:`mul`, :meth:`square`).
        galois_keys: Galois keys (needed by rotations and conjugation).
        scale_tolerance: largest relative scale difference :meth:`add`
            accepts (default 2^-32).

    Raises:
        SecurityError: when handed a secret key.
    """

    def __init__(self, params: Parameters, relin_key: SwitchingKey | None = None,
                 galois_keys: GaloisKeys | None = None, *, scale_tolerance: float = 2.0**-32):
        for key in (relin_key, galois_keys):
            if isinstance(key, SecretKey):
                raise SecurityError("an Evaluator never holds a secret key")
        if relin_key is not None and (not isinstance(relin_key, SwitchingKey) or relin_key.kind != "relin"):
            raise ParameterError("relin_key must be a relinearization SwitchingKey")
        if galois_keys is not None and not isinstance(galois_keys, GaloisKeys):
            raise ParameterError("galois_keys must be GaloisKeys")
        ids = {k.key_id for k in (relin_key, galois_keys) if k is not None}
        if len(ids) > 1:
            raise KeyMismatchError("the relinearization and Galois keys come from different secret keys")
        for k in (relin_key, galois_keys):
            if k is not None and k.params.fingerprint != params.fingerprint:
                raise KeyMismatchError("evaluation key generated under other parameters")
        self.params = params
        self.relin_key = relin_key
        self.galois_keys = galois_keys
        self.key_id = ids.pop() if ids else None
        self.scale_tolerance = float(scale_tolerance)
        self._switcher = KeySwitcher(params) if params.p_primes else None
        self._ring = params.ring_q
        self._imag_unit: np.ndarray | None = None

    # ---- checks and helpers -------------------------------------------------

    def _check(self, ct: Ciphertext) -> None:
        if not isinstance(ct, Ciphertext):
            raise ParameterError(f"expected a Ciphertext, got {type(ct).__name__}")
        if ct.params_fingerprint != self.params.fingerprint:
            raise KeyMismatchError("ciphertext of other parameters")
        if self.key_id is not None and ct.key_id != self.key_id:
            raise KeyMismatchError("ciphertext encrypted under another key than the evaluation keys")

    def _new(self, data: np.ndarray, scale: float, like: Ciphertext) -> Ciphertext:
        return Ciphertext(data, float(scale), like.slots, like.key_id, like.params_fingerprint)

    def _same_scale(self, a: float, b: float) -> bool:
        return abs(a / b - 1.0) <= self.scale_tolerance

    def _switcher_or_raise(self) -> KeySwitcher:
        if self._switcher is None:
            raise MissingKeyError("these parameters have no special primes: no key switching")
        return self._switcher

    def _imag(self, level: int) -> np.ndarray:
        """NTT values of the monomial X^(N/2), which encodes i in every slot."""
        if self._imag_unit is None:
            n = self.params.n
            mono = np.zeros((len(self.params.q_primes), n), dtype=np.uint64)
            mono[:, n // 2] = 1
            self.params.tables_qp.forward(mono, check=False)
            self._imag_unit = mono
        return self._imag_unit[: level + 1]

    @staticmethod
    def _residues(value: int, primes) -> list[int]:
        return [int(value) % q for q in primes]

    # ---- levels and scales ---------------------------------------------------

    def drop_level(self, ct: Ciphertext, count: int = 1) -> Ciphertext:
        """Drop ``count`` levels without rescaling (scale unchanged)."""
        self._check(ct)
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 <= count <= ct.level:
            raise LevelError(f"cannot drop {count} levels from level {ct.level}")
        return self._new(ct.data[:, : ct.level + 1 - count].copy(), ct.scale, ct)

    def rescale(self, ct: Ciphertext) -> Ciphertext:
        """Divide by ``q_level`` with rounding: level - 1, scale / q_level."""
        self._check(ct)
        if ct.level < 1:
            raise LevelError("no level left to rescale: the ciphertext is at level 0")
        q = self.params.q_primes[ct.level]
        data = np.stack([self._ring.rescale(c, ntt_domain=True, check=False) for c in ct.data])
        return self._new(data, ct.scale / q, ct)

    def bring_to(self, ct: Ciphertext, level: int, scale: float | None = None) -> Ciphertext:
        """Move ``ct`` down to ``level``, landing on ``scale`` (default: the
        standard scale of that level when ``ct`` has its level's standard
        scale, else ``ct``'s own scale).

        Costs nothing but dropped limbs when the scale already matches, else
        one integer-constant multiplication and one rescale (so it needs
        ``ct.level > level``)."""
        self._check(ct)
        if not 0 <= level <= ct.level:
            raise LevelError(f"cannot bring a ciphertext at level {ct.level} to level {level}")
        if scale is None:
            standard = self._same_scale(ct.scale, self.params.scale_at(ct.level))
            scale = self.params.scale_at(level) if standard else ct.scale
        if self._same_scale(ct.scale, scale):
            return self.drop_level(ct, ct.level - level) if level < ct.level else ct
        if level == ct.level:
            raise ScaleMismatchError(f"scale 2^{np.log2(ct.scale):.4f} cannot become 2^{np.log2(scale):.4f} "
                                     "without a level to spend")
        top = self.drop_level(ct, ct.level - level - 1)
        q = self.params.q_primes[level + 1]
        factor = int(round(scale * q / ct.scale))
        if factor < 2**20:
            raise ScaleMismatchError(f"scale ratio too small to correct precisely (factor {factor})")
        return self.rescale(self.mul_int(top, factor)).with_metadata(scale=ct.scale * factor / q)

    def align(self, a: Ciphertext, b: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        """Bring the higher operand down to the other's level *and scale*
        (see :meth:`bring_to`), so that the two can be added."""
        if a.level > b.level:
            return self.bring_to(a, b.level, b.scale), b
        if b.level > a.level:
            return a, self.bring_to(b, a.level, a.scale)
        return a, b

    # ---- addition --------------------------------------------------------------

    def add(self, a: Ciphertext, b: Operand) -> Ciphertext:
        """``a + b`` for a ciphertext, plaintext or number ``b``."""
        return self._add_sub(a, b, negate=False)

    def sub(self, a: Ciphertext, b: Operand) -> Ciphertext:
        """``a - b`` for a ciphertext, plaintext or number ``b``."""
        return self._add_sub(a, b, negate=True)

    def negate(self, a: Ciphertext) -> Ciphertext:
        """``-a``."""
        self._check(a)
        return self._new(np.stack([self._ring.neg(c, check=False) for c in a.data]), a.scale, a)

    def _add_sub(self, a: Ciphertext, b: Operand, negate: bool) -> Ciphertext:
        self._check(a)
        op = self._ring.sub if negate else self._ring.add
        if isinstance(b, Ciphertext):
            self._check(b)
            if a.key_id != b.key_id:
                raise KeyMismatchError("operands encrypted under different keys")
            a, b = self.align(a, b)
            if not self._same_scale(a.scale, b.scale):
                raise ScaleMismatchError(f"scales 2^{np.log2(a.scale):.6f} and 2^{np.log2(b.scale):.6f} differ")
            size = max(a.size, b.size)
            data = np.zeros((size, a.level + 1, self.params.n), dtype=np.uint64)
            data[: a.size] = a.data
            for i in range(b.size):
                op(data[i], b.data[i], data[i], check=False)
            return self._new(data, a.scale, a)
        if isinstance(b, Plaintext):
            if b.params_fingerprint != self.params.fingerprint:
                raise KeyMismatchError("plaintext of other parameters")
            if b.level < a.level:
                a = self.drop_level(a, a.level - b.level)
            if not self._same_scale(a.scale, b.scale):
                raise ScaleMismatchError(f"plaintext scale 2^{np.log2(b.scale):.6f} differs from the "
                                         f"ciphertext's 2^{np.log2(a.scale):.6f}")
            data = a.data.copy()
            op(data[0], np.ascontiguousarray(b.poly[: a.level + 1]), data[0], check=False)
            return self._new(data, a.scale, a)
        if isinstance(b, numbers.Number):
            c = complex(b)
            if not np.isfinite(c):
                raise ParameterError("cannot add a non-finite constant")
            sign = -1 if negate else 1
            data = a.data.copy()
            primes = self.params.q_primes[: a.level + 1]
            re = int(round(c.real * a.scale)) * sign
            self._add_constant(data[0], self._residues(re, primes))
            if c.imag:
                im = int(round(c.imag * a.scale)) * sign
                term = self._ring.mul_scalar(self._imag(a.level), self._residues(im, primes), check=False)
                self._ring.add(data[0], term, data[0], check=False)
            return self._new(data, a.scale, a)
        raise ParameterError(f"cannot add a {type(b).__name__} to a ciphertext")

    def _add_constant(self, poly: np.ndarray, residues: list[int]) -> None:
        # A constant polynomial has the same value at every NTT point.
        for i, r in enumerate(residues):
            q = np.uint64(self.params.q_primes[i])
            row = poly[i] + np.uint64(r)
            row[row >= q] -= q
            poly[i] = row

    # ---- multiplication --------------------------------------------------------

    def mul_int(self, a: Ciphertext, k: int) -> Ciphertext:
        """``k * a`` for an integer k (exact; scale and level unchanged)."""
        self._check(a)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise ParameterError(f"mul_int takes an int, got {type(k).__name__}")
        res = self._residues(int(k), self.params.q_primes[: a.level + 1])
        return self._new(np.stack([self._ring.mul_scalar(c, res, check=False) for c in a.data]), a.scale, a)

    def mul_const(self, a: Ciphertext, c: numbers.Number, scale: float | None = None) -> Ciphertext:
        """``c * a`` for a real or complex constant, as integer multiples of
        ``a`` and of ``X^(N/2) a`` (i in every slot).

        The constant is scaled by ``scale``; the result has scale
        ``a.scale * scale`` and must be rescaled.  By default the scale is
        chosen so that the rescaled result lands exactly where a plaintext
        product would: on the standard scale of level - 1 when ``a`` has its
        level's standard scale, otherwise back on ``a.scale`` (the constant is
        then scaled by ``q_level``).
        """
        self._check(a)
        cc = complex(c)
        if not np.isfinite(cc):
            raise ParameterError("cannot multiply by a non-finite constant")
        if scale is None:
            if a.level < 1:
                raise LevelError("mul_const needs a level to rescale into; pass scale= at level 0")
            q = float(self.params.q_primes[a.level])
            if self._same_scale(a.scale, self.params.scale_at(a.level)):
                scale = self.params.scale_at(a.level - 1) * q / a.scale
            else:
                scale = q
        primes = self.params.q_primes[: a.level + 1]
        re = self._residues(int(round(cc.real * scale)), primes)
        data = np.stack([self._ring.mul_scalar(x, re, check=False) for x in a.data])
        if cc.imag:
            im = self._residues(int(round(cc.imag * scale)), primes)
            unit = self._imag(a.level)
            for i in range(a.size):
                shifted = self._ring.mul(a.data[i], unit, check=False)
                self._ring.add(data[i], self._ring.mul_scalar(shifted, im, check=False), data[i], check=False)
        return self._new(data, a.scale * scale, a)

    def linear_combination(self, terms: Sequence[tuple[Ciphertext, numbers.Real]], scale: float) -> Ciphertext:
        """``sum c_i a_i`` for real constants, not rescaled, at the lowest level
        of the ``a_i`` and at ``scale``: constant i is the integer
        ``round(c_i scale / a_i.scale)``, so terms of any levels and scales
        add up exactly.  One lazily reduced pass over the inputs (no dropped
        or scaled copies, see :func:`fhe_ckks.ckks.dot.linear_combination`);
        ``scale`` should be about ``q_level`` times the wanted scale after the
        rescale that follows."""
        return dot.linear_combination(self, terms, scale)

    def mul_by_i(self, a: Ciphertext, power: int = 1) -> Ciphertext:
        """``i^power * a``, exactly: multiplication by the monomial
        ``X^(power N/2)`` (i in every slot); no level, no scale change."""
        self._check(a)
        power = int(power) % 4
        if power == 0:
            return a.copy()
        unit = self._imag(a.level)
        data = np.stack([self._ring.mul(c, unit, check=False) for c in a.data])
        out = self._new(data, a.scale, a)
        return self.mul_by_i(out, power - 1) if power > 1 else out

    def mul_plain(self, a: Ciphertext, pt: Plaintext) -> Ciphertext:
        """``a * pt`` slot-wise; scale ``a.scale * pt.scale`` (rescale after)."""
        self._check(a)
        if not isinstance(pt, Plaintext) or pt.params_fingerprint != self.params.fingerprint:
            raise KeyMismatchError("expected a Plaintext of these parameters")
        if pt.level < a.level:
            a = self.drop_level(a, a.level - pt.level)
        m = np.ascontiguousarray(pt.poly[: a.level + 1])
        return self._new(np.stack([self._ring.mul(c, m, check=False) for c in a.data]), a.scale * pt.scale, a)

    def plain_dot(self, like: Ciphertext) -> PlainDot:
        """An accumulator for ``sum_i ct_i * pt_i`` over ciphertexts at ``like``'s level and scale:
        the products are added in 128 bits and reduced once (see :class:`PlainDot`)."""
        self._check(like)
        return PlainDot(self, like)

    def mul(self, a: Ciphertext, b: Ciphertext, relinearize: bool = True) -> Ciphertext:
        """``a * b`` slot-wise: tensor product, then relinearization (unless
        ``relinearize=False``).  Scale ``a.scale * b.scale``; rescale after."""
        self._check(a)
        self._check(b)
        if a.size != 2 or b.size != 2:
            raise ParameterError("multiply relinearized (size-2) ciphertexts")
        if a.key_id != b.key_id:
            raise KeyMismatchError("operands encrypted under different keys")
        a, b = self.align(a, b)
        ring = self._ring
        d0 = ring.mul(a.data[0], b.data[0], check=False)
        d1 = ring.mul(a.data[0], b.data[1], check=False)
        ring.mul_add(a.data[1], b.data[0], d1, check=False)
        d2 = ring.mul(a.data[1], b.data[1], check=False)
        out = self._new(np.stack([d0, d1, d2]), a.scale * b.scale, a)
        return self.relinearize(out) if relinearize else out

    def square(self, a: Ciphertext, relinearize: bool = True) -> Ciphertext:
        """``a * a`` (one product fewer than :meth:`mul`)."""
        self._check(a)
        if a.size != 2:
            raise ParameterError("square a relinearized (size-2) ciphertext")
        ring = self._ring
        d0 = ring.mul(a.data[0], a.data[0], check=False)
        d1 = ring.mul(a.data[0], a.data[1], check=False)
        ring.add(d1, d1, d1, check=False)
        d2 = ring.mul(a.data[1], a.data[1], check=False)
        out = self._new(np.stack([d0, d1, d2]), a.scale * a.scale, a)
        return self.relinearize(out) if relinearize else out

    def relinearize(self, a: Ciphertext) -> Ciphertext:
        """``(d0, d1, d2) -> (d0, d1) + KeySwitch(d2, s^2 -> s)``."""
        self._check(a)
        if a.size == 2:
            return a
        if self.relin_key is None:
            raise MissingKeyError("relinearization needs a relinearization key")
        data = np.empty((2,) + a.data.shape[1:], dtype=np.uint64)
        ks0, ks1 = self._switcher_or_raise().switch(a.data[2], self.relin_key, out=data)
        ring = self._ring
        ring.add(ks0, a.data[0], ks0, check=False)
        ring.add(ks1, a.data[1], ks1, check=False)
        return self._new(data, a.scale, a)

    def switch_key(self, a: Ciphertext, key: SwitchingKey) -> Ciphertext:
        """``(c0, c1) -> (c0, 0) + KeySwitch(c1, key)``: the same message under
        the key's target secret (bootstrapping's encapsulation, for one)."""
        self._check(a)
        if a.size != 2:
            raise ParameterError("switch the key of a relinearized (size-2) ciphertext")
        if key.key_id != a.key_id:
            raise KeyMismatchError("the switching key belongs to another key set")
        data = np.empty_like(a.data)
        ks0, _ = self._switcher_or_raise().switch(a.data[1], key, out=data)
        self._ring.add(ks0, a.data[0], ks0, check=False)
        return self._new(data, a.scale, a)

    # ---- rotations ---------------------------------------------------------------

    def _galois_key(self, g: int) -> SwitchingKey:
        if self.galois_keys is None or g not in self.galois_keys:
            raise MissingKeyError(f"no Galois key for element {g}; generate it with galois_keys([...])")
        return self.galois_keys[g]

    def _apply_galois(self, a: Ciphertext, g: int, dec=None) -> Ciphertext:
        key = self._galois_key(g)
        switcher = self._switcher_or_raise()
        if dec is None:
            dec = switcher.decompose(a.data[1])
        perm = self._ring.galois_permutation(g)
        c0 = automorphism_ntt(a.data[0], g, perm)  # a was checked; no second scan of its limbs
        data = np.empty_like(a.data)
        ks0, _ = switcher.apply(dec, key, perm, out=data)
        self._ring.add(ks0, c0, ks0, check=False)
        return self._new(data, a.scale, a)

    def rotate(self, a: Ciphertext, step: int) -> Ciphertext:
        """Rotate the slots left by ``step`` (slot i receives slot i + step).

        Needs the Galois key of ``5^step mod 2N``; step 0 returns a copy."""
        self._check(a)
        if a.size != 2:
            raise ParameterError("rotate a relinearized (size-2) ciphertext")
        g = galois_element(int(step), self.params.log_n)
        if g == 1:
            return a.copy()
        return self._apply_galois(a, g)

    def conjugate(self, a: Ciphertext) -> Ciphertext:
        """Complex-conjugate every slot (Galois element 2N - 1)."""
        self._check(a)
        return self._apply_galois(a, conjugation_element(self.params.log_n))

    def rotate_hoisted(self, a: Ciphertext, steps: Iterable[int]) -> dict[int, Ciphertext]:
        """Several rotations of one ciphertext sharing one decomposition.

        Returns ``{step: rotate(a, step)}``; about the cost of one rotation
        plus, per step, one inner product and one ModDown."""
        self._check(a)
        if a.size != 2:
            raise ParameterError("rotate a relinearized (size-2) ciphertext")
        steps = list(dict.fromkeys(int(k) for k in steps))
        out: dict[int, Ciphertext] = {}
        dec = None
        for k in steps:
            g = galois_element(k, self.params.log_n)
            if g == 1:
                out[k] = a.copy()
                continue
            self._galois_key(g)  # fail before any work if a key is missing
        for k in steps:
            if k in out:
                continue
            if dec is None:
                dec = self._switcher_or_raise().decompose(a.data[1])
            out[k] = self._apply_galois(a, galois_element(k, self.params.log_n), dec)
        return out

    def rotate_and_sum(self, a: Ciphertext, count: int) -> Ciphertext:
        """Slot i receives ``sum_{j < count} slot (i + j)`` (count a power of
        two), with log2(count) rotations by 1, 2, 4, ..."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1 or count & (count - 1):
            raise ParameterError(f"count must be a power of two, got {count!r}")
        acc = a
        step = 1
        while step < count:
            acc = self.add(acc, self.rotate(acc, step))
            step *= 2
        return acc

    @staticmethod
    def rotation_steps_for_sum(count: int) -> list[int]:
        """The rotation steps :meth:`rotate_and_sum` needs."""
        return [1 << i for i in range(max(0, count.bit_length() - 1))]
