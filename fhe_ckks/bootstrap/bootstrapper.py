"""CKKS bootstrapping: ModRaise -> (SubSum) -> CoeffsToSlots -> EvalMod -> SlotsToCoeffs.

A ciphertext at level 0 has no multiplications left.  Bootstrapping refreshes
it homomorphically, without the secret key (Cheon, Han, Kim, Kim, Song,
EUROCRYPT 2018; Chen, Chillotti, Song, EUROCRYPT 2019; Bossuat, Mouchet,
Troncoso-Pastoriza, Hubaux, EUROCRYPT 2021):

1. :meth:`Bootstrapper.mod_raise`: read the level-0 ciphertext modulo the
   whole chain Q.  It now decrypts to ``t = m + q_0 I`` with I a small integer
   polynomial (``|I| <= K`` with overwhelming probability, K growing with the
   secret's Hamming weight).  Its scale is declared as ``q_0``, so that the
   "coefficient values" are ``t / q_0 = I + m / q_0``.
2. :meth:`Bootstrapper.sub_sum` (sparse slots only): the sum of the
   rotations by multiples of n keeps the coefficients of ``t`` in the subring
   ``Z[X^(N/2n)]`` (times ``N/2n``), the only ones n slots can hold.
3. :meth:`Bootstrapper.coeffs_to_slots`: the inverse special FFT (see
   :mod:`fhe_ckks.circuits.dft`), divided by ``2 (K + 1)`` and the SubSum
   factor, puts ``(I + m/q_0) / (K + 1)`` of the real and imaginary parts in
   the slots; :meth:`Bootstrapper.split` separates them with one conjugation.
4. :meth:`Bootstrapper.eval_mod` on both parts (:mod:`fhe_ckks.circuits.evalmod`):
   ``2 pi m / q_0``.
5. :meth:`Bootstrapper.slots_to_coeffs`: recombine (``re + i im``) and apply
   the special FFT multiplied by ``q_0 / (2 pi Delta)``, which lands on the
   original slot values at a standard scale of the output level.

Range: EvalMod is correct for ``|m / q_0| <= 2^-5`` and ``|I| <= K``.  The
values themselves cannot be read without the secret key, so the bound is a
contract: the caller declares ``input_bound`` (the largest slot magnitude
its circuit can produce, known from its plaintext twin), and
:meth:`Bootstrapper.bootstrap` refuses with :class:`BootstrapRangeError` any
ciphertext whose scale makes ``input_bound * scale`` exceed ``2^-5 q_0``, and
any ciphertext that is not a relinearized one with the configured slot count.
A value above the declared bound is not detected; it decrypts to garbage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ckks.ciphertext import Ciphertext
from ..ckks.encoder import Encoder
from ..ckks.evaluator import Evaluator
from ..circuits.dft import compose_diagonals, dft_transforms
from ..circuits.lintrans import LinearTransform
from ..circuits.evalmod import EvalMod
from ..errors import BootstrapRangeError, LevelError, ParameterError
from ..rlwe.keys import GaloisKeys, SecretKey, SwitchingKey
from ..rlwe.params import Parameters

__all__ = ["BootstrapConfig", "Bootstrapper"]

MESSAGE_RATIO_LOG2 = -5


@dataclass(frozen=True)
class BootstrapConfig:
    """How to bootstrap.

    Attributes:
        slots: slot count n (None: N/2, full slots).
        cts_budget, stc_budget: levels given to CoeffsToSlots / SlotsToCoeffs.
        evalmod: the EvalMod parameters.
        input_bound: the declared largest slot magnitude (see module doc).
        packed: the fast path for sparse slots (``2 slots <= N/2``): the real and
            imaginary parts of the coefficients go to the two halves of a
            2n-slot vector, so that EvalMod runs once instead of twice (the
            last CoeffsToSlots stage runs twice, on the input and on its
            conjugate, with the half-masks folded into its diagonals).  This is
            the "real" bootstrapping of HEAAN and CryptoFace; it serves complex
            messages too, since both parts of every coefficient pair are kept.
    """

    slots: int | None = None
    cts_budget: int = 2
    stc_budget: int = 2
    evalmod: EvalMod = field(default_factory=EvalMod)
    input_bound: float = 1.0
    packed: bool = False


class Bootstrapper:
    """Refreshes level-0 ciphertexts, with public evaluation keys only.

    Args:
        params: the parameters (enough levels for :meth:`depth`).
        relin_key, galois_keys: evaluation keys; ``galois_keys`` must cover
            :meth:`rotation_steps` and conjugation (use
            :func:`required_rotations` before generating them).
        config: the :class:`BootstrapConfig`.
    """

    def __init__(self, params: Parameters, relin_key: SwitchingKey, galois_keys: GaloisKeys,
                 config: BootstrapConfig | None = None):
        for key in (relin_key, galois_keys):
            if isinstance(key, SecretKey):
                raise TypeError("a Bootstrapper never holds a secret key")
        self.params = params
        self.config = config or BootstrapConfig()
        plan = _plan(params, self.config)
        self.slots, self._sub_sum_steps, self._cts, self._stc = plan
        self.evaluator = Evaluator(params, relin_key, galois_keys)
        self.encoder = Encoder(params)
        if self.output_level < 0:
            raise LevelError(f"bootstrapping needs {self.depth()} levels, the parameters have {params.max_level}")
        missing = [k for k in self.rotation_steps() if self.evaluator.galois_keys is None
                   or _galois(params, k) not in self.evaluator.galois_keys]
        if missing:
            raise ParameterError(f"missing Galois keys for rotations {missing[:8]}...; "
                                 "generate them with required_rotations()")

    # ---- the plan -------------------------------------------------------------

    def depth(self) -> int:
        """Levels consumed: CoeffsToSlots + EvalMod + SlotsToCoeffs."""
        return self.config.cts_budget + self.config.evalmod.depth() + self.config.stc_budget

    @property
    def output_level(self) -> int:
        return self.params.max_level - self.depth()

    def rotation_steps(self) -> list[int]:
        return required_rotations(self.params, self.config)

    # ---- the steps --------------------------------------------------------------

    def check_input(self, ct: Ciphertext) -> None:
        """Raise :class:`BootstrapRangeError` unless ``ct`` can be bootstrapped."""
        if not isinstance(ct, Ciphertext) or ct.size != 2:
            raise BootstrapRangeError("bootstrap a relinearized (size-2) ciphertext")
        if ct.slots != self.slots:
            raise BootstrapRangeError(f"this bootstrapper is for {self.slots} slots, the ciphertext has {ct.slots}")
        q0 = self.params.q_primes[0]
        if ct.scale * self.config.input_bound > q0 * 2.0**MESSAGE_RATIO_LOG2:
            raise BootstrapRangeError(
                f"scale 2^{math.log2(ct.scale):.1f} times the declared bound {self.config.input_bound} exceeds "
                f"2^{MESSAGE_RATIO_LOG2} q_0 = 2^{math.log2(q0) + MESSAGE_RATIO_LOG2:.1f}: EvalMod would wrap")

    def mod_raise(self, ct: Ciphertext) -> Ciphertext:
        """Level 0 -> top level, decrypting to ``m + q_0 I``; scale := q_0."""
        p = self.params
        low = self.evaluator.drop_level(ct, ct.level) if ct.level else ct
        q0 = p.q_primes[0]
        coeff = np.ascontiguousarray(low.data[:, 0, :]).copy()
        p.tables_qp.inverse(coeff, rows=np.zeros(2, dtype=np.uint64), check=False)  # both rows mod q_0
        signed = coeff.astype(np.int64)
        signed = np.where(signed > q0 // 2, signed - q0, signed)
        rows = p.max_level + 1
        raised = np.empty((2, rows, p.n), dtype=np.uint64)
        for i, q in enumerate(p.q_primes):
            raised[:, i] = np.mod(signed, np.int64(q)).astype(np.uint64)
        for c in raised:
            p.tables_qp.forward(c, check=False)
        return Ciphertext(raised, float(q0), ct.slots, ct.key_id, ct.params_fingerprint)

    def sub_sum(self, ct: Ciphertext) -> Ciphertext:
        """Sum of the rotations by n, 2n, ..., N/4 (sparse slots only)."""
        for step in self._sub_sum_steps:
            ct = self.evaluator.add(ct, self.evaluator.rotate(ct, step))
        return ct

    def coeffs_to_slots(self, ct: Ciphertext) -> Ciphertext:
        """The inverse DFT.  On the packed path the last stage also separates
        real and imaginary parts into the two halves of 2n slots."""
        head = self._cts[0] if self.config.packed else self._cts
        for lt in head:
            ct = self._apply(lt, ct)
        if not self.config.packed:
            return ct
        _, direct, conjugate = self._cts
        out = self.evaluator.add(self._apply(direct, ct), self._apply(conjugate, self.evaluator.conjugate(ct)))
        out.slots = 2 * self.slots
        return out

    def _apply(self, lt: LinearTransform, ct: Ciphertext, factor: float = 1.0) -> Ciphertext:
        return lt.evaluate(self.evaluator, self.encoder, ct, target_scale=self.params.scale_at(ct.level - 1),
                           factor=factor)

    def split(self, ct: Ciphertext) -> tuple[Ciphertext, Ciphertext]:
        """``(w + conj w, -i (w - conj w))``: twice the real and imaginary
        parts (the 1/2 is folded into CoeffsToSlots).  Not used on the packed
        path, where CoeffsToSlots already separated them."""
        ev = self.evaluator
        conj = ev.conjugate(ct)
        return ev.add(ct, conj), ev.mul_by_i(ev.sub(conj, ct))

    def eval_mod(self, ct: Ciphertext) -> Ciphertext:
        return self.config.evalmod.evaluate(self.evaluator, ct)

    def slots_to_coeffs(self, re: Ciphertext, im: Ciphertext | None, input_scale: float) -> Ciphertext:
        """Recombine ``re + i im`` (on the packed path ``re`` holds both halves
        and ``im`` is None) and apply the DFT times ``q_0 / (2 pi Delta)``."""
        ev = self.evaluator
        ct = re if im is None else ev.add(re, ev.mul_by_i(im))
        q0 = self.params.q_primes[0]
        for idx, lt in enumerate(self._stc):
            ct = self._apply(lt, ct, q0 / (2 * math.pi * input_scale) if idx == 0 else 1.0)
        ct.slots = self.slots
        return ct

    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        """The five steps; returns a ciphertext at :attr:`output_level`, at
        that level's standard scale, holding the same slot values."""
        self.check_input(ct)
        raised = self.mod_raise(ct)
        summed = self.sub_sum(raised)
        w = self.coeffs_to_slots(summed)
        if self.config.packed:
            out = self.slots_to_coeffs(self.eval_mod(w), None, ct.scale)
        else:
            re, im = self.split(w)
            out = self.slots_to_coeffs(self.eval_mod(re), self.eval_mod(im), ct.scale)
        if out.level != self.output_level:  # pragma: no cover - guarded by depth()
            raise LevelError(f"bootstrapping ended at level {out.level}, expected {self.output_level}")
        return out


def _galois(params: Parameters, step: int) -> int:
    from ..ring.automorphism import galois_element

    return galois_element(step, params.log_n)


def _plan(params: Parameters, config: BootstrapConfig):
    n = params.slots if config.slots is None else int(config.slots)
    if n < 2 or n > params.slots or n & (n - 1):
        raise ParameterError(f"bootstrapping slots must be a power of two in [2, {params.slots}], got {n}")
    if config.packed and 2 * n > params.slots:
        raise ParameterError("the packed fast path needs 2 * slots <= N/2 (sparse slots)")
    gap = params.slots // n
    sub_sum = [n << k for k in range(int(math.log2(gap)))]
    normaliser = gap * config.evalmod.normaliser
    if not config.packed:
        cts = dft_transforms(params.log_n, n, True, config.cts_budget, factor=1.0 / (2 * normaliser),
                             factor_on_last=True)
        stc = dft_transforms(params.log_n, n, False, config.stc_budget)
        return n, sub_sum, cts, stc
    cts = dft_transforms(params.log_n, n, True, config.cts_budget, factor=1.0 / normaliser, factor_on_last=True)
    stc = dft_transforms(params.log_n, n, False, config.stc_budget)
    period = 2 * n
    first = np.arange(period) < n
    # y = Re(w) on [0, n), Im(w) on [n, 2n): y = D1 w + D2 conj(w).
    d1 = np.where(first, 0.5, -0.5j)
    d2 = np.where(first, 0.5, 0.5j)
    last = cts[-1].diagonals
    direct = LinearTransform({k: d1 * np.tile(d, 2) for k, d in last.items()}, period)
    conjugate = LinearTransform({k: d2 * np.tile(np.conj(d), 2) for k, d in last.items()}, period)
    # u' = y[k] + i y[k + n], n-periodic, then the first SlotsToCoeffs stage.
    join = {0: np.where(first, 1.0 + 0j, 1j), n: np.where(first, 1j, 1.0 + 0j)}
    stage = {k: np.tile(d, 2) for k, d in stc[0].diagonals.items()}
    stc[0] = LinearTransform(compose_diagonals(join, stage, period), period)
    return n, sub_sum, (cts[:-1], direct, conjugate), stc


def _transforms(cts) -> list[LinearTransform]:
    if isinstance(cts, tuple):
        head, direct, conjugate = cts
        return [*head, direct, conjugate]
    return list(cts)


def rotation_levels(params: Parameters, config: BootstrapConfig | None = None) -> dict[int, int]:
    """``{step: highest level it is used at}`` for every rotation of
    bootstrapping: SubSum and CoeffsToSlots run at the top levels,
    SlotsToCoeffs only below ``L - cts_budget - EvalMod depth``, so its keys
    can be level-aware (smaller)."""
    config = config or BootstrapConfig()
    _, sub_sum, cts, stc = _plan(params, config)
    top = params.max_level
    stc_top = top - config.cts_budget - config.evalmod.depth()
    levels: dict[int, int] = {}
    for step in sub_sum:
        levels[step] = top
    for lt in _transforms(cts):
        for step in lt.rotation_steps():
            levels[step] = top
    for lt in stc:
        for step in lt.rotation_steps():
            levels[step] = max(levels.get(step, 0), stc_top)
    return levels


def generate_keys(keygen, config: BootstrapConfig | None = None) -> tuple[SwitchingKey, GaloisKeys]:
    """The relinearization key and exactly the Galois keys bootstrapping
    needs, each stored only up to the level it is used at."""
    params = keygen.params
    keys = keygen.galois_keys([], conjugate=True)
    by_level: dict[int, list[int]] = {}
    for step, level in rotation_levels(params, config).items():
        by_level.setdefault(level, []).append(step)
    for level, steps in sorted(by_level.items(), reverse=True):
        keygen.galois_keys(steps, max_level=level, into=keys)
    return keygen.relin_key(), keys


def required_rotations(params: Parameters, config: BootstrapConfig | None = None) -> list[int]:
    """Every rotation step bootstrapping uses (conjugation is needed too)."""
    _, sub_sum, cts, stc = _plan(params, config or BootstrapConfig())
    steps = set(sub_sum)
    for lt in (*_transforms(cts), *stc):
        steps.update(lt.rotation_steps())
    return sorted(steps)
