"""CKKS bootstrapping: ModRaise -> (SubSum) -> CoeffsToSlots -> EvalMod -> SlotsToCoeffs.

A ciphertext at level 0 has no multiplications left.  Bootstrapping refreshes
it homomorphically, without the secret key (Cheon, Han, Kim, Kim, Song,
EUROCRYPT 2018; Chen, Chillotti, Song, EUROCRYPT 2019; Bossuat, Mouchet,
Troncoso-Pastoriza, Hubaux, EUROCRYPT 2021):

0. :meth:`Bootstrapper.prescale`: drop to level 0 and multiply by the integer
   that makes the message fill ``2^-5`` of q_0 (optional; see
   :class:`BootstrapConfig`).
1. :meth:`Bootstrapper.mod_raise`: read the level-0 ciphertext modulo the
   whole chain Q.  It now decrypts to ``t = m + q_0 I`` with I a small integer
   polynomial (``|I| <= (h + 1) / 2`` for a secret of Hamming weight h; with
   sparse-secret encapsulation (Bossuat, Troncoso-Pastoriza, Hubaux, ACNS
   2022) h is that of an ephemeral secret of weight 32, used only at modulus
   ``q_0 p_0``, so ``|I| <= 16 = K``).  Its scale is declared as ``q_0``, so
   that the "coefficient values" are ``t / q_0 = I + m / q_0``.
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
from functools import cached_property
import numpy as np

from ..ckks.ciphertext import Ciphertext
from ..ckks.encoder import Encoder
from ..ckks.evaluator import Evaluator
from ..circuits.dft import compose_diagonals, dft_transforms, real_form
from ..circuits.lintrans import LinearTransform
from ..circuits.evalmod import EvalMod
from ..errors import BootstrapRangeError, KeyMismatchError, LevelError, ParameterError, SecurityError
from ..ring import Ring
from ..ring.modarith import signed_residues
from ..rlwe.keyplan import KeyPlan
from ..rlwe.keys import EncapsulationKeys, EvaluationKeys, GaloisKeys, SecretKey, SwitchingKey
from ..rlwe.params import Parameters

__all__ = ["BootstrapConfig", "BootstrapKeys", "BootstrapPlan", "Bootstrapper", "LandedBootstrapper",
           "MIN_CTS_DIAGONAL_BITS", "MIN_MESSAGE_RATIO_LOG2", "bootstrap_key_plan"]

#: EvalMod is correct for messages up to ``2^-MIN_MESSAGE_RATIO_LOG2 q_0``.  Every ratio in this module
#: is written this way, as a positive r for a bound of ``2^-r q_0`` (``BootstrapConfig.message_ratio_log2``
#: too, which must be at least this one).
MIN_MESSAGE_RATIO_LOG2 = 5

#: The fewest bits a CoeffsToSlots diagonal may be encoded with (log2 of its largest entry times its encoding
#: scale).  Below it the rounded diagonals are noise: on a chain of 38-bit primes under a 60-bit q_0 the first
#: stage is encoded at 2^(38 + 38 - 60) = 2^16 and, with 4 slots, carries the factor 2^-17: the integers are
#: 0 or +-1 and the bootstrap returned 0.7 bits without complaint.  Bootstrapping needs the top of its chain in
#: primes of about q_0's size (as ``BOOT_N16_QP1737_L24_S40``).
MIN_CTS_DIAGONAL_BITS = 30


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
        ephemeral_weight: sparse-secret encapsulation (see
            :class:`~fhe_ckks.rlwe.keys.EncapsulationKeys`): ModRaise runs
            under an ephemeral secret of this Hamming weight h, so that
            ``|I| <= (h + 1) / 2`` always (K = 16 never fails for h = 32)
            while every other key keeps the dense secret.  None: ModRaise
            under the key's own secret (K must then cover it).
        message_ratio_log2: r, or None.  With r, :meth:`Bootstrapper.prescale`
            multiplies the level-0 ciphertext by the integer that brings
            ``input_bound * scale`` up to ``2^-r q_0`` (r >=
            :data:`MIN_MESSAGE_RATIO_LOG2` = 5): a message
            encoded at 2^40 under a 60-bit q_0 would otherwise use 20 bits of
            q_0 for nothing, and EvalMod's error is relative to ``m / q_0``.
        wide_first_stage: the first CoeffsToSlots stage lands on
            ``scale_at(l - 2) * q_(l-1)`` and is rescaled twice, so that its
            diagonals are encoded with one more prime's worth of bits (one more
            level).  A chain of small primes under a large q_0 needs it: on
            38-bit primes under a 60-bit q_0 the first stage would encode at
            ``2^(38 + 38 - 60)`` times a largest entry of ``1 / (2 (K + 1) gap)``
            (2^-19 for 8 slots), far below :data:`MIN_CTS_DIAGONAL_BITS`; wide,
            it encodes at ``2^(38 + 76 - 60)``.
        retrace: after SlotsToCoeffs (sparse slots only), sum the rotations by
            n, 2n, ..., N/4 again, with ``1 / gap`` folded into SlotsToCoeffs:
            the output then holds the mean of its ``gap = N / 2n`` replicas,
            which averages the noise of EvalMod and SlotsToCoeffs (log2 gap
            rotations at the output level, no level, no new key: SubSum's keys
            at the top serve them).
        unpack: (packed path only) bootstrap 2n real values for the price of
            n complex slots.  The input's n slots hold ``z = a + i b``; the
            output has 2n slots, ``a`` in ``[0, n)`` and ``b`` in ``[n, 2n)``,
            each real.  SlotsToCoeffs runs in real form
            (:func:`~fhe_ckks.circuits.dft.real_form`) on EvalMod's 2n real
            values, so it needs no join and no conjugation: the same depth, and
            at most the same number of diagonals.  The precision is that of n
            slots, which a 2n-slot bootstrap would not reach (it has twice the
            coefficients and half the replicas).
    """

    slots: int | None = None
    cts_budget: int = 2
    stc_budget: int = 2
    evalmod: EvalMod = field(default_factory=EvalMod)
    input_bound: float = 1.0
    packed: bool = False
    ephemeral_weight: int | None = None
    message_ratio_log2: int | None = None
    wide_first_stage: bool = False
    retrace: bool = False
    unpack: bool = False


#: The evaluation keys of one bootstrapping plan (:func:`generate_keys`): relin, galois, encapsulation.
BootstrapKeys = EvaluationKeys


class Bootstrapper:
    """Refreshes level-0 ciphertexts, with public evaluation keys only.

    Args:
        params: the parameters (enough levels for :meth:`depth`).
        relin_key, galois_keys: evaluation keys; ``galois_keys`` must cover
            :meth:`rotation_steps` and conjugation (use
            :func:`required_rotations` before generating them).
        config: the :class:`BootstrapConfig`.
        encapsulation: the sparse-secret encapsulation keys, required when
            ``config.ephemeral_weight`` is set.
    """

    def __init__(self, params: Parameters, relin_key: SwitchingKey, galois_keys: GaloisKeys,
                 config: BootstrapConfig | None = None, encapsulation: EncapsulationKeys | None = None):
        for key in (relin_key, galois_keys, encapsulation):
            if isinstance(key, SecretKey):
                raise SecurityError("a Bootstrapper never holds a secret key")
        self.params = params
        self.config = config or BootstrapConfig()
        self.plan = BootstrapPlan.build(params, self.config)
        self.slots = self.plan.slots
        bits = self.plan.cts_diagonal_bits(params)
        if bits < MIN_CTS_DIAGONAL_BITS:
            raise ParameterError(f"CoeffsToSlots would encode its diagonals with {bits:.1f} bits (at least "
                                 f"{MIN_CTS_DIAGONAL_BITS} needed): the top of this chain is too small against q_0 "
                                 "for bootstrapping; use a chain whose top primes are about q_0's size")
        self.evaluator = Evaluator(params, relin_key, galois_keys)
        self.encoder = Encoder(params)
        if self.output_level < 0:
            raise LevelError(f"bootstrapping needs {self.depth()} levels, the parameters have {params.max_level}")
        weight = self.config.ephemeral_weight
        if weight is not None and (encapsulation is None or encapsulation.weight != weight):
            raise ParameterError(f"this configuration bootstraps through an ephemeral secret of weight {weight}: "
                                 "give the matching encapsulation keys (generate_keys)")
        if encapsulation is not None and (encapsulation.key_id != relin_key.key_id
                                          or encapsulation.params.fingerprint != params.fingerprint):
            raise KeyMismatchError("the encapsulation keys belong to another key set or parameters")
        self.encapsulation = encapsulation if weight is not None else None
        galois = self.evaluator.galois_keys
        missing = self.rotation_steps() if galois is None else galois.uncovered(self.key_plan())
        if missing:
            raise ParameterError(f"missing Galois keys for rotations {missing[:8]}...; "
                                 "generate them with required_rotations()")

    # ---- the plan -------------------------------------------------------------

    def depth(self) -> int:
        """Levels consumed: CoeffsToSlots (one more when its first stage is wide) + EvalMod + SlotsToCoeffs."""
        return self.plan.depth

    @property
    def output_level(self) -> int:
        return self.params.max_level - self.depth()

    @property
    def output_slots(self) -> int:
        """The output's slot count: :attr:`slots`, or twice it with ``config.unpack``."""
        return self.plan.output_slots

    def rotation_steps(self) -> list[int]:
        return self.key_plan().steps

    def key_plan(self) -> KeyPlan:
        """The evaluation keys this bootstrapper needs (see :meth:`BootstrapPlan.key_plan`)."""
        return self.plan.key_plan()

    # ---- the steps --------------------------------------------------------------

    def check_input(self, ct: Ciphertext) -> None:
        """Raise :class:`BootstrapRangeError` unless ``ct`` can be bootstrapped."""
        if not isinstance(ct, Ciphertext) or ct.size != 2:
            raise BootstrapRangeError("bootstrap a relinearized (size-2) ciphertext")
        if ct.slots != self.slots:
            raise BootstrapRangeError(f"this bootstrapper is for {self.slots} slots, the ciphertext has {ct.slots}")
        q0 = self.params.q_primes[0]
        if ct.scale * self.config.input_bound > q0 * 2.0**-MIN_MESSAGE_RATIO_LOG2:
            raise BootstrapRangeError(
                f"scale 2^{math.log2(ct.scale):.1f} times the declared bound {self.config.input_bound} exceeds "
                f"2^-{MIN_MESSAGE_RATIO_LOG2} q_0 = 2^{math.log2(q0) - MIN_MESSAGE_RATIO_LOG2:.1f}: "
                "EvalMod would wrap")

    def prescale(self, ct: Ciphertext) -> Ciphertext:
        """Drop to level 0 and, with ``config.message_ratio_log2 = r``,
        multiply by the integer ``k = floor(2^-r q_0 / (input_bound *
        scale))`` (the scale is multiplied by k too: the message is the same,
        only larger relative to q_0)."""
        low = self.evaluator.drop_level(ct, ct.level) if ct.level else ct
        ratio = self.config.message_ratio_log2
        if ratio is None:
            return low
        k = int(self.params.q_primes[0] * 2.0**-ratio / (self.config.input_bound * low.scale))
        if k <= 1:
            return low
        return self.evaluator.mul_int(low, k).with_metadata(scale=low.scale * k)

    def mod_raise(self, ct: Ciphertext) -> Ciphertext:
        """Level 0 -> top level, decrypting to ``m + q_0 I``; scale := q_0.

        With sparse-secret encapsulation, the level-0 ciphertext first moves
        to the ephemeral secret (:meth:`switch_to_sparse`), is raised there,
        and comes back to the dense secret at the top level
        (:meth:`switch_to_dense`), so that I has the sparse secret's range.
        """
        low = self.evaluator.drop_level(ct, ct.level) if ct.level else ct
        if self.encapsulation is None:
            return self._raise(low.data, ct)
        return self.switch_to_dense(self._raise(self.switch_to_sparse(low), ct))

    def _raise(self, data: np.ndarray, like: Ciphertext) -> Ciphertext:
        p = self.params
        q0 = p.q_primes[0]
        coeff = np.ascontiguousarray(data[:, 0, :]).copy()
        p.tables_qp.inverse(coeff, rows=np.zeros(2, dtype=np.uint64), check=False)  # both rows mod q_0
        signed = _centered(coeff, q0)
        ring = p.ring_q
        raised = np.stack([signed_residues(half, ring.moduli, ring.barrett_ratios) for half in signed])
        for c in raised:
            p.tables_qp.forward(c, check=False)
        return Ciphertext(raised, float(q0), like.slots, like.key_id, like.params_fingerprint)

    def switch_to_sparse(self, low: Ciphertext) -> np.ndarray:
        """Key-switch a level-0 ciphertext from ``s`` to the ephemeral ``s'``
        with the key modulo ``q_0 p_0``: ``c1`` is lifted to ``p_0``, multiplied
        by the key, and the product divided by ``p_0`` with rounding.  Returns
        the (2, 1, N) NTT data modulo q_0."""
        p, key = self.params, self.encapsulation
        q0, p0 = p.q_primes[0], p.p_primes[0]
        rows = EncapsulationKeys.down_rows(p)
        tables = p.tables_qp
        ring = self._down_ring
        ext = np.empty((2, p.n), dtype=np.uint64)
        ext[0] = low.data[1, 0]
        coeff = ext[:1].copy()
        tables.inverse(coeff, rows=rows[:1], check=False)
        ext[1] = signed_residues(_centered(coeff[0], q0), [p0])[0]
        tables.forward(ext[1:], rows=rows[1:], check=False)
        out = np.empty((2, 1, p.n), dtype=np.uint64)
        inv_p0 = pow(p0, -1, q0)
        for half, k in enumerate((key.down_b, key.down_a)):
            acc = ring.mul(ext, k, check=False)
            low_p = acc[1:].copy()
            tables.inverse(low_p, rows=rows[1:], check=False)
            corr = signed_residues(_centered(low_p[0], p0), [q0])
            tables.forward(corr, rows=rows[:1], check=False)
            q_ring = self._q0_ring
            out[half] = q_ring.mul_scalar(q_ring.sub(acc[:1], corr, check=False), [inv_p0], check=False)
        out[0] = self._q0_ring.add(out[0], low.data[0], check=False)
        return out

    def switch_to_dense(self, raised: Ciphertext) -> Ciphertext:
        """Key-switch the raised ciphertext from ``s'`` back to ``s`` (one key
        switch at the top level)."""
        return self.evaluator.switch_key(raised, self.encapsulation.up)

    @cached_property
    def _down_ring(self) -> Ring:
        p = self.params
        return Ring.pointwise(p.log_n, [p.q_primes[0], p.p_primes[0]])

    @cached_property
    def _q0_ring(self) -> Ring:
        return Ring.pointwise(self.params.log_n, [self.params.q_primes[0]])

    def sub_sum(self, ct: Ciphertext, period: int = 0) -> Ciphertext:
        """Sum of the rotations by n, 2n, ..., N/4 (sparse slots only); with ``period``, only by the steps of
        at least it (the retrace of a ``period``-slot output)."""
        for step in self.plan.sub_sum_steps:
            if step >= period:
                ct = self.evaluator.add(ct, self.evaluator.rotate(ct, step))
        return ct

    def coeffs_to_slots(self, ct: Ciphertext) -> Ciphertext:
        """The inverse DFT.  On the packed path the last stage also separates
        real and imaginary parts into the two halves of 2n slots."""
        plan = self.plan
        wide = plan.wide_first_stage
        for lt in plan.coeffs_to_slots:
            ct = self._apply(lt, ct, wide=wide)
            if wide:
                ct, wide = self.evaluator.rescale(ct), False
        if not plan.packed:
            return ct
        out = self.evaluator.add(self._apply(plan.packed_direct, ct, wide=wide),
                                 self._apply(plan.packed_conjugate, self.evaluator.conjugate(ct), wide=wide))
        if wide:
            out = self.evaluator.rescale(out)
        return out.with_metadata(slots=2 * self.slots)

    def _apply(self, lt: LinearTransform, ct: Ciphertext, factor: float = 1.0, wide: bool = False) -> Ciphertext:
        """One stage, landing on :func:`_stage_target` (``wide``: the caller rescales once more)."""
        return lt.evaluate(self.evaluator, self.encoder, ct, target_scale=_stage_target(self.params, ct.level, wide),
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
        out_slots = self.plan.output_slots
        gap = self.params.slots // out_slots if self.plan.retrace else 1
        first = q0 / (2 * math.pi * input_scale) / gap
        for idx, lt in enumerate(self.plan.slots_to_coeffs):
            ct = self._apply(lt, ct, first if idx == 0 else 1.0)
        ct = ct.with_metadata(slots=out_slots)
        if self.plan.retrace:
            ct = self.sub_sum(ct, out_slots)      # the mean of the replicas (1 / gap was folded into the first stage)
        return ct

    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        """The five steps; returns a ciphertext at :attr:`output_level`, at
        that level's standard scale, holding the same slot values (with
        ``config.unpack``: their real and imaginary parts, in
        :attr:`output_slots` slots)."""
        self.check_input(ct)
        ct = self.prescale(ct)
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


class LandedBootstrapper:
    """A bootstrapper whose output is brought down to ``level`` on that level's standard scale (one integer
    constant and one rescale, :meth:`~fhe_ckks.ckks.evaluator.Evaluator.bring_to`): for a bootstrap that ends
    in a run of larger primes above the user levels (:attr:`Parameters.user_top`), where a polynomial would
    rescale across the run boundary and leave the standard scales.  Everything else is the inner one's."""

    def __init__(self, inner: Bootstrapper, level: int):
        if not 0 <= level < inner.output_level:
            raise LevelError(f"a bootstrap that ends at level {inner.output_level} cannot land at level {level}")
        self.inner, self.output_level = inner, level

    def __getattr__(self, name: str):
        if name == "inner":                       # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def depth(self) -> int:
        return self.inner.params.max_level - self.output_level

    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        return self.inner.evaluator.bring_to(self.inner.bootstrap(ct), self.output_level)


def _stage_target(params: Parameters, level: int, wide: bool) -> float:
    """Where a linear stage at ``level`` lands: the standard scale of the level below, or, ``wide``, that of two
    levels below times ``q_(level-1)`` (rescaled once more, it is the standard scale there)."""
    if wide:
        return params.scale_at(level - 2) * params.q_primes[level - 1]
    return params.scale_at(level - 1)


def _centered(x: np.ndarray, q: int) -> np.ndarray:
    """Residues modulo q as signed integers in (-q/2, q/2]."""
    signed = x.astype(np.int64)
    return np.where(signed > q // 2, signed - np.int64(q), signed)


@dataclass(frozen=True, eq=False)
class BootstrapPlan:
    """The linear transforms, rotations and levels of one bootstrapping configuration, built once.

    Attributes:
        slots: the slot count n.
        sub_sum_steps: SubSum's rotations (sparse slots only; empty for full slots).
        coeffs_to_slots: CoeffsToSlots' stages; on the packed path all but the last.
        packed_direct, packed_conjugate: the packed path's last CoeffsToSlots stage, applied to the input
            and to its conjugate (None otherwise).
        slots_to_coeffs: SlotsToCoeffs' stages (on the packed path the first one also joins the halves).
        top_level: where SubSum and CoeffsToSlots run (the chain's top).
        stc_level: the highest level SlotsToCoeffs runs at (below CoeffsToSlots and EvalMod).
        ephemeral_weight: the configuration's sparse-secret encapsulation weight, or None.
        wide_first_stage: the first CoeffsToSlots stage takes two levels (see :class:`BootstrapConfig`).
        retrace: SubSum once more after SlotsToCoeffs (see :class:`BootstrapConfig`).
        depth: the levels bootstrapping consumes.
        unpack: SlotsToCoeffs in real form, 2n real output slots (see :class:`BootstrapConfig`).
    """

    slots: int
    sub_sum_steps: tuple[int, ...]
    coeffs_to_slots: tuple[LinearTransform, ...]
    packed_direct: LinearTransform | None
    packed_conjugate: LinearTransform | None
    slots_to_coeffs: tuple[LinearTransform, ...]
    top_level: int
    stc_level: int
    ephemeral_weight: int | None
    wide_first_stage: bool = False
    retrace: bool = False
    depth: int = 0
    unpack: bool = False

    @property
    def output_slots(self) -> int:
        return 2 * self.slots if self.unpack else self.slots

    @property
    def packed(self) -> bool:
        return self.packed_direct is not None

    def cts_transforms(self) -> list[LinearTransform]:
        """Every CoeffsToSlots transform, the packed path's two last ones included."""
        extra = [self.packed_direct, self.packed_conjugate] if self.packed else []
        return [*self.coeffs_to_slots, *extra]

    def cts_diagonal_bits(self, params: Parameters) -> float:
        """The fewest bits any CoeffsToSlots diagonal is encoded with: each stage lands on the standard scale of
        the level below it, so it encodes at ``scale_at(l - 1) * q_l / input scale`` (the raised ciphertext's
        scale is q_0), times its largest entry (the folded 1 / (2 (K + 1) gap) included)."""
        level, scale, bits = self.top_level, float(params.q_primes[0]), math.inf
        stages = [[lt] for lt in self.coeffs_to_slots]
        if self.packed:
            stages.append([self.packed_direct, self.packed_conjugate])
        for idx, stage in enumerate(stages):
            wide = idx == 0 and self.wide_first_stage
            target = _stage_target(params, level, wide)
            pt_scale = target * params.q_primes[level] / scale
            largest = max(float(np.max(np.abs(d))) for lt in stage for d in lt.diagonals.values())
            bits = min(bits, math.log2(pt_scale * largest))
            level = level - 2 if wide else level - 1
            scale = params.scale_at(level)
        return bits

    def key_plan(self) -> KeyPlan:
        """Bootstrapping's keys: SubSum and CoeffsToSlots rotate at the top, SlotsToCoeffs only from
        ``stc_level`` down (its keys are level-aware, smaller); conjugation, relinearization (EvalMod),
        and the encapsulation keys when the configuration asks for them."""
        top = KeyPlan.rotations_at(self.sub_sum_steps, self.top_level).union(KeyPlan.merge(
            KeyPlan.rotations_at(lt.rotation_steps(), self.top_level) for lt in self.cts_transforms()))
        stc = KeyPlan.merge(KeyPlan.rotations_at(lt.rotation_steps(), self.stc_level) for lt in self.slots_to_coeffs)
        return top | stc | KeyPlan(relinearization=True, conjugation=True,
                                   encapsulation_weight=self.ephemeral_weight)

    @classmethod
    def build(cls, params: Parameters, config: BootstrapConfig) -> BootstrapPlan:
        n = params.slots if config.slots is None else int(config.slots)
        if n < 2 or n > params.slots or n & (n - 1):
            raise ParameterError(f"bootstrapping slots must be a power of two in [2, {params.slots}], got {n}")
        ratio = config.message_ratio_log2
        if ratio is not None and not (isinstance(ratio, int) and MIN_MESSAGE_RATIO_LOG2 <= ratio <= 30):
            raise ParameterError(f"message_ratio_log2 must be an int in [{MIN_MESSAGE_RATIO_LOG2}, 30], "
                                 f"got {ratio!r}")
        if config.packed and 2 * n > params.slots:
            raise ParameterError("the packed fast path needs 2 * slots <= N/2 (sparse slots)")
        if config.unpack and not config.packed:
            raise ParameterError("unpack is a form of the packed fast path: set packed=True")
        gap = params.slots // n
        sub_sum = tuple(n << k for k in range(int(math.log2(gap))))
        if config.retrace and (2 * n if config.unpack else n) >= params.slots:
            raise ParameterError("retrace averages the replicas of sparse slots: full slots have none")
        normalizer = gap * config.evalmod.normalizer
        top = params.max_level
        cts_levels = config.cts_budget + bool(config.wide_first_stage)
        levels = dict(top_level=top, stc_level=top - cts_levels - config.evalmod.depth(),
                      ephemeral_weight=config.ephemeral_weight, wide_first_stage=bool(config.wide_first_stage),
                      retrace=bool(config.retrace), unpack=bool(config.unpack),
                      depth=cts_levels + config.evalmod.depth() + config.stc_budget)
        stc = dft_transforms(params.log_n, n, False, config.stc_budget)
        if not config.packed:
            cts = dft_transforms(params.log_n, n, True, config.cts_budget, factor=1.0 / (2 * normalizer),
                                 factor_on_last=True)
            return cls(n, sub_sum, tuple(cts), None, None, tuple(stc), **levels)
        cts = dft_transforms(params.log_n, n, True, config.cts_budget, factor=1.0 / normalizer, factor_on_last=True)
        period = 2 * n
        first = np.arange(period) < n
        # y = Re(w) on [0, n), Im(w) on [n, 2n): y = D1 w + D2 conj(w).
        d1 = np.where(first, 0.5, -0.5j)
        d2 = np.where(first, 0.5, 0.5j)
        last = cts[-1].diagonals
        direct = LinearTransform({k: d1 * np.tile(d, 2) for k, d in last.items()}, period)
        conjugate = LinearTransform({k: d2 * np.tile(np.conj(d), 2) for k, d in last.items()}, period)
        if config.unpack:
            # EvalMod's y = [Re u, Im u] is already the real form of u: every stage acts on it in real form
            return cls(n, sub_sum, tuple(cts[:-1]), direct, conjugate, tuple(real_form(lt) for lt in stc), **levels)
        # u' = y[k] + i y[k + n], n-periodic, then the first SlotsToCoeffs stage.
        join = {0: np.where(first, 1.0 + 0j, 1j), n: np.where(first, 1j, 1.0 + 0j)}
        stage = {k: np.tile(d, 2) for k, d in stc[0].diagonals.items()}
        stc[0] = LinearTransform(compose_diagonals(join, stage, period), period)
        return cls(n, sub_sum, tuple(cts[:-1]), direct, conjugate, tuple(stc), **levels)


def bootstrap_key_plan(params: Parameters, config: BootstrapConfig | None = None) -> KeyPlan:
    """The :class:`~fhe_ckks.rlwe.keyplan.KeyPlan` of bootstrapping with ``config`` (before any
    :class:`Bootstrapper` exists: the key holder makes the keys from it)."""
    return BootstrapPlan.build(params, config or BootstrapConfig()).key_plan()


def rotation_levels(params: Parameters, config: BootstrapConfig | None = None) -> dict[int, int]:
    """``{step: highest level it is used at}`` for every rotation of bootstrapping (see
    :meth:`BootstrapPlan.key_plan`)."""
    return dict(bootstrap_key_plan(params, config).rotations)


def generate_keys(keygen, config: BootstrapConfig | None = None) -> BootstrapKeys:
    """The relinearization key, exactly the Galois keys bootstrapping needs
    (each stored only up to the level it is used at), and the encapsulation
    keys when the configuration asks for an ephemeral secret."""
    return keygen.evaluation_keys(bootstrap_key_plan(keygen.params, config))


def required_rotations(params: Parameters, config: BootstrapConfig | None = None) -> list[int]:
    """Every rotation step bootstrapping uses (conjugation is needed too)."""
    return bootstrap_key_plan(params, config).steps
