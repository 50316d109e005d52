"""The encrypted decision: the key holder learns "same", "different" or "invalid", and nothing else.

The embedding leaves the network unnormalized.  The honest client, which runs
the (public) model in plaintext anyway to check its face
(:meth:`~cryptoface.model.FusedPatchCNN.check_probe`), sends with its face
the *normalization hint* ``g = 1 / ||e||`` encrypted in every slot.  The
server never trusts it: it checks under encryption that it normalizes.

Before bootstrapping (at the network's output level ``l``: 3 levels)::

    p   = e * g                                   (1 level: the hinted normalization)
    P   = ||p||^2,  T = ||t||^2,  s = <p, t>      (1 level; t the template, normalized so at enrollment)
    x   = [ (P - 1 + b) / R, (1 + b - P) / R,     the norm checks: |P - 1| < b, |T - 1| < b
            (T - 1 + b) / R, (1 + b - T) / R,
            (s - c) / K,                          the decision: cos >= c
            1/2, 1/2, 1/2 ]                       (1 level: three masked products; 8 slots)

then bootstrapping of those 8 slots (:func:`decision_bootstrap_config`), and
after it (``sign.depth() + 4`` levels)::

    z   = sign(x)                                 (a composite minimax sign, :class:`CompositeSign`)
    y   = z + [1, 1, 1, 1, 0, 0, 0, 0]            (2 for a passed check, 0 for a failed one)
    v   = y0 y1 y2 y3 y4 / 16   in slot 0 only    (three rotate-and-multiply steps; the mask)

so ``v`` is +1 (same), -1 (different) or 0 (a check failed: an invalid probe
or template).  ``R = 1 + b`` and ``K = 2 + |c|`` keep every sign input in
[-1, 1] wherever the norm checks' inputs are (``0 <= P, T <= 2``): a
check that fails never feeds the sign anything outside its domain first.  With a
hint the client got right, ``P = 1`` up to rounding and the decision is the
exact cosine rule of plaintext; a wrong hint, a template or probe whose
normalization is off by more than ``b``, gives "invalid", never "same".

Before the answer leaves, the server adds a public-key encryption of a
Gaussian of ``2^flooding_bits`` (:meth:`~fhe_ckks.ckks.encryptor.Encryptor.encrypt_noise`):
a fresh randomness for the ciphertext and noise that floods what the
circuit's own error says about the inputs (see docs/threat_model.md for
what is left).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fhe_ckks.bootstrap import BootstrapConfig
from fhe_ckks.ckks.ciphertext import Ciphertext
from fhe_ckks.ckks.dot import PlainDot
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.encryptor import Encryptor
from fhe_ckks.ckks.evaluator import Evaluator
from fhe_ckks.circuits.evalmod import EvalMod
from fhe_ckks.circuits.sign import CompositeSign
from fhe_ckks.errors import LevelError, ShapeError
from fhe_ckks.rlwe.keyplan import KeyPlan

from ..errors import ModelError
from .matching import period_of, spread_factor, spread_steps, spread_sum, sum_steps

__all__ = ["DECISION_SLOTS", "GALLERY_BATCHES", "NORM_BAND", "Decision", "DecisionOutcome", "GalleryDecision",
           "TemplateCheck", "decision_bootstrap_config", "gallery_bootstrap_config", "gallery_width"]

#: The slots of the checks and decision vector (and of the answer).
DECISION_SLOTS = 8

#: ``b``: a normalized embedding's squared norm must lie in ``[1 - b, 1 + b]``.
NORM_BAND = 2.0**-5

#: The sign's margin: every input at least this far from 0 comes out within ``2^-SIGN_BITS`` of +-1.
SIGN_MARGIN = 2.0**-8
SIGN_BITS = 14

#: Levels between the sign and the answer: three rotate-and-multiply steps and the mask.
COMBINE_DEPTH = 4

#: Levels before the bootstrap, after the hinted normalization: the products, the masked sum.
PRE_DEPTH = 2

#: The flooding noise's size in the answer's slots (log2, below its scale): errors of about ``2^-4`` on the
#: answer +-1 / 0, read with thresholds at +-1/2.  A sparse answer of n slots decodes 2n coefficients into each
#: slot, so the coefficients get ``2^-(FLOODING_SLOT_BITS + log2(2n) / 2)`` (``2^-6`` for the 8 slots of a
#: verification, ``2^-9`` for the 512 of a gallery group).
FLOODING_SLOT_BITS = 4


def decision_bootstrap_config() -> BootstrapConfig:
    """Bootstrapping of the 8 decision slots on a levelled chain of small primes (the default preset's
    2^38 under a 60-bit q_0): a wide first CoeffsToSlots stage, one-level CoeffsToSlots and SlotsToCoeffs,
    sparse-secret encapsulation (K = 16), the sine as one degree-160 polynomial with the arcsine.
    Depth 13; on ``N16_QP1762_L29_S38`` it leaves 16 levels and gives 15.4 bits."""
    return BootstrapConfig(slots=DECISION_SLOTS, packed=True, cts_budget=1, stc_budget=1, wide_first_stage=True,
                           ephemeral_weight=32, message_ratio_log2=5,
                           evalmod=EvalMod(k_bound=16, double_angles=0, degree=160, arcsine=True))


@dataclass(frozen=True)
class DecisionOutcome:
    """What the client reads off an answer's slot 0: ``same`` (within 1/2 of +1), ``different`` (within 1/2
    of -1), else ``invalid`` (0: a norm check failed; or a value no honest circuit gives, e.g. a sign
    polynomial driven outside its domain by inputs far off the unit sphere)."""

    value: float

    @property
    def kind(self) -> str:
        if abs(self.value - 1.0) < 0.5:
            return "same"
        if abs(self.value + 1.0) < 0.5:
            return "different"
        return "invalid"


class Decision:
    """The thresholded cosine of a hint-normalized probe and a template, checked and bootstrapped.

    Args:
        dim: the embedding dimension.
        cos_threshold: ``c``: "same" when ``cos(probe, template) >= c``.
        sign: the composite sign (default: margin ``2^-8``, error ``2^-14``, depth 12).
        band: ``b`` (:data:`NORM_BAND`).
    """

    def __init__(self, dim: int, cos_threshold: float, sign: CompositeSign | None = None, band: float = NORM_BAND):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ModelError(f"an embedding dimension is an int >= 1, got {dim!r}")
        c = float(cos_threshold)
        if not -1.0 < c < 1.0:
            raise ModelError(f"a cosine threshold lies in (-1, 1), got {cos_threshold!r}")
        if not 0.0 < band <= 0.25:
            raise ModelError(f"the norm band is in (0, 1/4], got {band!r}")
        self.dim, self.c, self.band = dim, c, float(band)
        self.sign = sign if sign is not None else CompositeSign.for_margin(SIGN_MARGIN, SIGN_BITS)
        self.ratio = 1.0 + self.band                       # R
        self.bound = 2.0 + abs(c)                          # K
        b, r, k = self.band, self.ratio, self.bound
        n = DECISION_SLOTS
        self._weights = {"P": _slots({0: 1 / r, 1: -1 / r}, n), "T": _slots({2: 1 / r, 3: -1 / r}, n),
                         "s": _slots({4: 1 / k}, n)}
        self._offset = np.array([-(1 - b) / r, (1 + b) / r, -(1 - b) / r, (1 + b) / r, -c / k, 0.5, 0.5, 0.5])
        self._lift = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])

    # ---- costs ---------------------------------------------------------------------

    def pre_depth(self) -> int:
        """Levels from the normalized probe to the bootstrap's input."""
        return PRE_DEPTH

    def post_depth(self) -> int:
        """Levels the bootstrapped vector needs: the sign and the combination."""
        return self.sign.depth() + COMBINE_DEPTH

    def key_switches(self) -> int:
        """Before the bootstrap: 3 products and 3 rotate-and-sums; after it: the sign's products, the
        three combining products and their rotations (the bootstrap itself not counted)."""
        return 3 + 3 * len(sum_steps(self.dim)) + self.sign.products() + 3 + 3

    def key_plan(self, level: int, post_level: int) -> KeyPlan:
        """The rotate-and-sums below ``level`` (the normalized probe's), the combining rotations 1, 2, 4
        from ``post_level`` (the bootstrap's output) down; relinearization."""
        pre = KeyPlan.rotations_at(sum_steps(self.dim), level - 1, relinearization=True)
        return pre | KeyPlan.rotations_at([1, 2, 4], post_level - self.sign.depth())

    # ---- plaintext twin ------------------------------------------------------------

    def inputs_plain(self, probe: np.ndarray, template: np.ndarray) -> np.ndarray:
        """The 8 sign inputs ``x`` of normalized ``probe`` and ``template`` (dim-vectors)."""
        p, t = (np.asarray(v, dtype=np.float64).reshape(-1)[: self.dim] for v in (probe, template))
        q = {"P": float(p @ p), "T": float(t @ t), "s": float(p @ t)}
        return sum(self._weights[k] * q[k] for k in q) + self._offset

    def forward_plain(self, probe: np.ndarray, template: np.ndarray) -> float:
        """The answer ``v`` in plaintext, through the same sign polynomial."""
        z = self.sign.evaluate_plain(self.inputs_plain(probe, template)) + self._lift
        return float(np.prod(z[:5]) / 16.0)

    def exact(self, probe: np.ndarray, template: np.ndarray) -> str:
        """The outcome of exact arithmetic: "invalid" when a norm check fails, else the cosine rule."""
        x = self.inputs_plain(probe, template)
        if np.any(x[:4] <= 0):
            return "invalid"
        return "same" if x[4] >= 0 else "different"

    # ---- encrypted -----------------------------------------------------------------

    def prepare(self, evaluator: Evaluator, encoder: Encoder, probe: Ciphertext, template: Ciphertext) -> Ciphertext:
        """The 8-slot vector ``x``, at two levels below the normalized probe (the bootstrap's input)."""
        ev = evaluator
        if probe.level < PRE_DEPTH or template.level < probe.level:
            raise LevelError(f"the decision needs the probe at level >= {PRE_DEPTH} and the template at least as "
                             f"high; got {probe.level} and {template.level}")
        t = ev.bring_to(template, probe.level)
        period = period_of(self.dim)
        quantities = {"P": ev.square(probe), "T": ev.square(t), "s": ev.mul(probe, t)}
        level = probe.level - 1
        scale = ev.params.scale_at(level - 1)
        x = None
        for name, prod in quantities.items():
            q = ev.rotate_and_sum(ev.rescale(prod), period)
            w = np.tile(self._weights[name], ev.params.slots // DECISION_SLOTS)
            pt = encoder.encode(w, level=q.level, scale=scale * ev.params.q_primes[q.level] / q.scale)
            term = ev.rescale(ev.mul_plain(q, pt))
            x = term if x is None else ev.add(x, term)
        x = ev.add(x, encoder.encode(np.tile(self._offset, ev.params.slots // DECISION_SLOTS), level=x.level,
                                     scale=x.scale))
        return x.with_metadata(slots=DECISION_SLOTS)

    def finish(self, evaluator: Evaluator, encoder: Encoder, x: Ciphertext) -> Ciphertext:
        """Sign, combine and mask a bootstrapped ``x``: the answer ``v`` in slot 0, zeros elsewhere."""
        ev = evaluator
        if x.level < self.post_depth():
            raise LevelError(f"the decision's sign and combination need {self.post_depth()} levels, the "
                             f"bootstrapped vector has {x.level}")
        y = _signed_product(ev, encoder, self.sign, x, self._lift)
        mask = _slots({0: 1.0 / 16.0}, DECISION_SLOTS)
        pt = encoder.encode(mask, level=y.level, slots=DECISION_SLOTS,
                            scale=ev.params.scale_at(y.level - 1) * ev.params.q_primes[y.level] / y.scale)
        return ev.rescale(ev.mul_plain(y, pt))

    def forward(self, evaluator: Evaluator, encoder: Encoder, probe: Ciphertext, template: Ciphertext,
                bootstrapper, seconds: dict[str, float] | None = None) -> Ciphertext:
        """``prepare``, bootstrap, ``finish``."""
        return _prepare_bootstrap_finish("decision", lambda: self.prepare(evaluator, encoder, probe, template),
                                         bootstrapper, lambda xb: self.finish(evaluator, encoder, xb), seconds)


def _prepare_bootstrap_finish(stage: str, prepare: Callable[[], Ciphertext], bootstrapper,
                              finish: Callable[[Ciphertext], Ciphertext],
                              seconds: dict[str, float] | None) -> Ciphertext:
    """``finish(bootstrap(prepare()))``, the wall time of each step added to ``seconds`` (when given) as
    ``"<stage>: prepare"``, ``"<stage>: bootstrap"`` and ``"<stage>: sign"``: the body of both decisions'
    ``forward``."""
    t0 = time.perf_counter()
    x = prepare()
    t1 = time.perf_counter()
    xb = bootstrapper.bootstrap(x)
    t2 = time.perf_counter()
    out = finish(xb)
    if seconds is not None:
        for name, dt in (("prepare", t1 - t0), ("bootstrap", t2 - t1), ("sign", time.perf_counter() - t2)):
            key = f"{stage}: {name}"
            seconds[key] = seconds.get(key, 0.0) + dt
    return out


def flood(evaluator: Evaluator, encryptor: Encryptor, answer: Ciphertext) -> Ciphertext:
    """``answer`` plus a public-key encryption of a Gaussian whose slot errors are ``2^-FLOODING_SLOT_BITS``
    (the coefficients' deviation scaled by the slot count, see :data:`FLOODING_SLOT_BITS`)."""
    bits = math.log2(answer.scale) - FLOODING_SLOT_BITS - 0.5 * math.log2(2 * answer.slots)
    noise = encryptor.encrypt_noise(answer.level, answer.scale, answer.slots, bits)
    return evaluator.add(answer, noise)


def _signed_product(ev: Evaluator, encoder: Encoder, sign: CompositeSign, x: Ciphertext,
                    lift: np.ndarray) -> Ciphertext:
    """``prod_k (sign(x_k) + lift_k)`` over the 8 slots of ``x``, in every slot (three rotate-and-multiply
    steps): the combination of the verification's decision and of the enrollment check."""
    y = sign.evaluate(ev, x)
    y = ev.add(y, encoder.encode(lift, level=y.level, scale=y.scale, slots=DECISION_SLOTS))
    for step in (1, 2, 4):
        y = ev.rescale(ev.mul(y, ev.rotate(y, step)))
    return y


def _slots(entries: dict[int, float], n: int) -> np.ndarray:
    out = np.zeros(n)
    for k, v in entries.items():
        out[k] = v
    return out


# ---- 1:N: the template check at enrollment and the packed gallery's decision ---------------------------------

#: The enrollment check's band and sign: ``|T - 1| < CHECK_BAND`` for a template's squared norm ``T``; an honest
#: template (``T = 1`` up to 2^-19) sits ``CHECK_BAND / (1 + CHECK_BAND)`` = 0.059 from the check's edges, well
#: outside the sign's margin 2^-5, so a shallow sign (depth 9) decides it.
CHECK_BAND = 2.0**-4
CHECK_MARGIN = 2.0**-5
CHECK_BITS = 14
#: The enrollment check's combination: three rotate-and-multiply steps (the product of its 8 slots).
CHECK_COMBINE_DEPTH = 3
#: Levels the gallery decision takes after its sign: the probe checks' mask, their product, the product with
#: the signs, the product with the templates' checks.
GALLERY_COMBINE_DEPTH = 4
#: Levels the gallery decision takes before its bootstrap, from the spread probe and templates: the masks that
#: pack the gallery, the products, the weights.
GALLERY_PRE_DEPTH = 3


#: Gallery ciphertexts (batches of B spread templates) per bootstrap: their decision vectors, packed two reals to a
#: complex slot, share one bootstrap of ``width / 2`` slots and one sign.
GALLERY_BATCHES = 4


def gallery_width(dim: int, slots: int, batches: int = GALLERY_BATCHES) -> int:
    """``W``: the real decision slots one gallery bootstrap serves (512 at N = 2^16 and 256-dimensional
    embeddings: 4 batches of B = 128).  At most ``slots / 2``, so that the bootstrap has replicas to average
    (see :func:`gallery_bootstrap_config`), and at least two batches (the complex packing needs
    ``W / 2 >= B``)."""
    b = spread_factor(dim, slots)
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 2 or batches & (batches - 1):
        raise ModelError(f"a gallery group is a power of two >= 2 of batches, got {batches!r}")
    batches = min(batches, slots // (2 * b))
    if batches < 2:
        raise ModelError(f"{slots} slots hold {b} spread templates of period {slots // b}: a gallery group needs "
                         "an embedding period of at least 4")
    return b * batches


def gallery_bootstrap_config(width: int) -> BootstrapConfig:
    """:func:`decision_bootstrap_config` for the gallery decision's ``width`` real slots: ``width / 2`` complex
    slots unpacked into ``width`` real ones (the precision of ``width / 2`` slots), with the retrace, so that
    every replica the slot-wise sign sees has that precision.  At the default preset, measured over uniform
    inputs in every replica: 11.1 worst bits for 256 real slots, against 6.7 for 128 slots packed without the
    retrace (which the averaging of the final decode hid)."""
    from dataclasses import replace

    return replace(decision_bootstrap_config(), slots=width // 2, unpack=True, retrace=True)


class TemplateCheck:
    """At enrollment: ``f = 4`` in every slot when the spread template's squared norm ``T`` is within
    :data:`CHECK_BAND` of 1, else ``f = 0``; the packed gallery's decision multiplies each template's answer
    by its ``f / 4``, so a template whose hint did not normalize it never matches (its answers are "invalid").

    Before the decision's 8-slot bootstrap (2 levels from the template): ``T`` (square, sum over the spread
    coordinates), then ``x = [(T - 1 + b) / R, (1 + b - T) / R, 1/2, ..., 1/2]``.  After it (``sign.depth() + 3``):
    ``y = sign(x) + [1, 1, 0, ..., 0]`` and the product of the 8 slots, ``y0 y1`` in every slot."""

    def __init__(self, dim: int, slots: int, sign: CompositeSign | None = None, band: float = CHECK_BAND):
        spread_factor(dim, slots)                          # refuses a layout that does not fit
        if not 0.0 < band <= 0.25:
            raise ModelError(f"the check band is in (0, 1/4], got {band!r}")
        self.dim, self.slots, self.band = dim, slots, float(band)
        self.sign = sign if sign is not None else CompositeSign.for_margin(CHECK_MARGIN, CHECK_BITS)
        r = 1.0 + self.band
        self._weight = _slots({0: 1 / r, 1: -1 / r}, DECISION_SLOTS)
        self._offset = np.array([-(1 - self.band) / r, (1 + self.band) / r] + [0.5] * (DECISION_SLOTS - 2))
        self._lift = _slots({0: 1.0, 1: 1.0}, DECISION_SLOTS)

    def pre_depth(self) -> int:
        return 2

    def post_depth(self) -> int:
        return self.sign.depth() + CHECK_COMBINE_DEPTH

    def key_switches(self) -> int:
        """The square and its spread sums, the sign's products, the three combining products and rotations
        (the bootstrap not counted)."""
        return 1 + len(spread_steps(self.dim, self.slots)) + self.sign.products() + 3 + 3

    def key_plan(self, level: int, post_level: int) -> KeyPlan:
        """The spread sums below ``level`` (the template's); the combining rotations from ``post_level`` down."""
        return KeyPlan.rotations_at(spread_steps(self.dim, self.slots), level - 1, relinearization=True) | \
            KeyPlan.rotations_at([1, 2, 4], post_level - self.sign.depth())

    def value_plain(self, template: np.ndarray) -> float:
        """``f`` of exact arithmetic: 4 or 0."""
        t = np.asarray(template, dtype=np.float64).reshape(-1)[: self.dim]
        return 4.0 if abs(float(t @ t) - 1.0) < self.band else 0.0

    def prepare(self, evaluator: Evaluator, encoder: Encoder, template: Ciphertext) -> Ciphertext:
        ev = evaluator
        if template.level < self.pre_depth():
            raise LevelError(f"the template check needs the template at level >= {self.pre_depth()}, got "
                             f"{template.level}")
        t = spread_sum(ev, ev.rescale(ev.square(template)), self.dim)
        n = ev.params.slots // DECISION_SLOTS
        pt = encoder.encode(np.tile(self._weight, n), level=t.level,
                            scale=ev.params.scale_at(t.level - 1) * ev.params.q_primes[t.level] / t.scale)
        x = ev.rescale(ev.mul_plain(t, pt))
        x = ev.add(x, encoder.encode(np.tile(self._offset, n), level=x.level, scale=x.scale))
        return x.with_metadata(slots=DECISION_SLOTS)

    def finish(self, evaluator: Evaluator, encoder: Encoder, x: Ciphertext) -> Ciphertext:
        """``f`` in every slot of a full-slot ciphertext."""
        ev = evaluator
        if x.level < self.post_depth():
            raise LevelError(f"the template check needs {self.post_depth()} levels after its bootstrap, got "
                             f"{x.level}")
        y = _signed_product(ev, encoder, self.sign, x, self._lift)
        return y.with_metadata(slots=ev.params.slots)        # the 8 equal slots, replicated over all slots


class GalleryDecision:
    """The decisions of one spread probe against a group of up to ``width - 2`` enrolled templates.

    ``B = slots / Dp`` spread templates fit one gallery ciphertext (128 at N = 2^16 and 256-dimensional
    embeddings); a group holds ``width / B`` such batches (:func:`gallery_width`: 4, so 510 templates at
    N = 2^16).  Template ``t`` of the group has the real decision slot ``t``; the probe's norm checks have the
    last two.  Before the bootstrap (:data:`GALLERY_PRE_DEPTH` levels from the spread probe and templates),
    for each batch ``k`` of the group::

        G_k = sum_j mask_j * t_(kB + j)          (1 level: the packed batch, residue class j mod B; one fused dot)
        s_k = sum over coordinates of q * G_k    (1 level: <p, t_(kB + j)> in class j)
        P   = sum over coordinates of q * q

    and (1 level) the decision vector ``x = [(s_t - c) / K for t < width - 2, (P - 1 + b) / R, (1 + b - P) / R]``,
    *packed two reals to a complex slot*: ``x / 2`` goes to ``width / 2`` slots as ``x[:w/2] + i x[w/2:]``.  The
    masks that place each batch (and the factor ``i``) are folded into the weights' plaintexts, so the packing
    costs no level.  The bootstrap (:func:`gallery_bootstrap_config`) unpacks it into ``width`` real slots; after
    it (``sign.depth() + 4``)::

        z   = sign(x / 2 + conj(x / 2))          (the real part of x, exactly, at no level)
        a   = (z_(w-2) + 1) / 2 * (z_(w-1) + 1) / 2, broadcast to every slot    (the probe passed its checks)
        v_t = z_t * a * f_t / 4                  (f_t the template's enrollment check, 4 or 0)

    so ``v_t`` is +1 (same), -1 (different) or 0 (the probe or template ``t`` failed its check: invalid).  One
    bootstrap and one sign serve the whole group: against N people, ``ceil(N / (width - 2))`` of each."""

    def __init__(self, dim: int, slots: int, cos_threshold: float, sign: CompositeSign | None = None,
                 band: float = NORM_BAND, batches: int = GALLERY_BATCHES):
        self.dim, self.slots = dim, slots
        self.batch = spread_factor(dim, slots)
        if self.batch < 4:
            raise ModelError(f"{slots} slots hold {self.batch} spread templates; a gallery needs at least 4")
        self.width = gallery_width(dim, slots, batches)
        self.capacity = self.width - 2
        c = float(cos_threshold)
        if not -1.0 < c < 1.0:
            raise ModelError(f"a cosine threshold lies in (-1, 1), got {cos_threshold!r}")
        self.c, self.band = c, float(band)
        self.sign = sign if sign is not None else CompositeSign.for_margin(SIGN_MARGIN, SIGN_BITS)
        w, cap = self.width, self.capacity
        r, k = 1.0 + self.band, 2.0 + abs(c)
        self._ws = _slots({j: 1 / k for j in range(cap)}, w)
        self._wp = _slots({cap: 1 / r, cap + 1: -1 / r}, w)
        self._offset = _slots({**{j: -c / k for j in range(cap)}, cap: -(1 - self.band) / r,
                               cap + 1: (1 + self.band) / r}, w)
        # the bootstrap gets x / 2 and the sign x / 2 + conj(x / 2): the real part of x, exactly, at no level
        # (the bootstrap's output has imaginary errors, which the sign's steep first stage would turn into
        # outputs far off the real axis, and its second stage into garbage)
        self._lift = _slots({cap: 1.0, cap + 1: 1.0}, w)
        self._half = _slots({cap: 0.5, cap + 1: 0.5}, w)

    def pre_depth(self) -> int:
        return GALLERY_PRE_DEPTH

    def post_depth(self) -> int:
        return self.sign.depth() + GALLERY_COMBINE_DEPTH

    def batches_of(self, templates: int) -> int:
        """The gallery ciphertexts (products) of a group of ``templates``."""
        return -(-int(templates) // self.batch)

    def key_switches(self, templates: int) -> int:
        """Per group of ``templates``, the bootstrap not counted: per batch a product and its spread sums, the
        probe's square and its sums, the conjugation, the sign's products, the combination's two products and
        its rotation, the broadcast's rotations, the products with the signs and the checks."""
        sums = len(spread_steps(self.dim, self.slots))
        return (self.batches_of(templates) + 1) * (1 + sums) + 1 + self.sign.products() + 3 + \
            (self.width.bit_length() - 1) + 1

    def key_plan(self, level: int, post_level: int) -> KeyPlan:
        """The spread sums below ``level`` (the spread probe's); the combination's rotations (1 and the
        broadcast over the group's slots) from ``post_level`` down."""
        post = post_level - self.sign.depth() - 2
        return KeyPlan.rotations_at(spread_steps(self.dim, self.slots), level - 1, relinearization=True) | \
            KeyPlan.rotations_at([1], post + 1) | \
            KeyPlan.rotations_at(Evaluator.rotation_steps_for_sum(self.width), post) | KeyPlan(conjugation=True)

    # ---- plaintext twin ------------------------------------------------------------

    def inputs_plain(self, probe: np.ndarray, templates: Sequence[np.ndarray]) -> np.ndarray:
        """The group's ``width`` sign inputs ``x`` (real slot t: template t; the last two: the probe's checks)."""
        p = np.asarray(probe, dtype=np.float64).reshape(-1)[: self.dim]
        s = np.zeros(self.width)
        for j, t in enumerate(templates):
            s[j] = float(p @ np.asarray(t, dtype=np.float64).reshape(-1)[: self.dim])
        return self._ws * s + self._wp * float(p @ p) + self._offset

    def exact(self, probe: np.ndarray, templates: Sequence[np.ndarray], checks: Sequence[float]) -> list[str]:
        """The outcomes of exact arithmetic, one per template."""
        x = self.inputs_plain(probe, templates)
        ok = x[self.capacity] > 0 and x[self.capacity + 1] > 0
        return ["invalid" if not ok or not f else "same" if x[j] >= 0 else "different"
                for j, f in enumerate(checks)]

    def _complex(self, v: np.ndarray) -> np.ndarray:
        """A real ``width``-vector packed into ``width / 2`` complex slots: ``v[:w/2] + i v[w/2:]``."""
        half = self.width // 2
        return v[:half] + 1j * v[half:]

    # ---- encrypted -----------------------------------------------------------------

    def prepare(self, evaluator: Evaluator, encoder: Encoder, probe: Ciphertext,
                templates: Sequence[Ciphertext]) -> Ciphertext:
        """``x / 2``, packed (the bootstrap's input; :meth:`finish` takes the real part of twice its unpacked
        form) of the spread ``probe`` against up to :attr:`capacity` spread ``templates`` (all at the probe's
        level), at :data:`GALLERY_PRE_DEPTH` levels below it, with ``width / 2`` slots: :meth:`pack` per
        gallery ciphertext, then :meth:`prepare_packed`."""
        if not 0 < len(templates) <= self.capacity:
            raise ShapeError(f"a gallery group holds 1 to {self.capacity} templates, got {len(templates)}")
        if probe.level < self.pre_depth() or any(t.level != probe.level for t in templates):
            raise LevelError(f"the gallery decision needs the probe and its templates at one level >= "
                             f"{self.pre_depth()}")
        b = self.batch
        packed = [(self.pack(evaluator, encoder, templates[i:i + b]), len(templates[i:i + b]))
                  for i in range(0, len(templates), b)]
        return self.prepare_packed(evaluator, encoder, probe, packed)

    def pack(self, evaluator: Evaluator, encoder: Encoder, templates: Sequence[Ciphertext]) -> Ciphertext:
        """One gallery ciphertext: up to B spread templates (at one level), template j masked into the residue
        class j mod B (one fused plaintext dot product, one level).  It does not depend on the probe: a server
        keeps it for as long as its gallery does not change."""
        if not 0 < len(templates) <= self.batch:
            raise ShapeError(f"a gallery ciphertext holds 1 to {self.batch} templates, got {len(templates)}")
        if any(t.level != templates[0].level for t in templates):
            raise LevelError("the templates of a gallery ciphertext are at one level")
        return self._masked_sum(evaluator, encoder, templates, 1.0, self.batch)

    def prepare_packed(self, evaluator: Evaluator, encoder: Encoder, probe: Ciphertext,
                       packed: Sequence[tuple[Ciphertext, int]]) -> Ciphertext:
        """:meth:`prepare` from the group's gallery ciphertexts (:meth:`pack`), each with its template count:
        B each, the last one fewer.  Its products with the probe, their sums and weights: 2 more levels."""
        ev = evaluator
        if probe.level < self.pre_depth():
            raise LevelError(f"the gallery decision needs the probe and its templates at one level >= "
                             f"{self.pre_depth()}")
        counts = [int(n) for _, n in packed]
        if not counts or any(not 0 < n <= self.batch for n in counts) or any(n != self.batch for n in counts[:-1]) \
                or sum(counts) > self.capacity:
            raise ShapeError(f"a gallery group holds 1 to {self.capacity} templates, in gallery ciphertexts of "
                             f"{self.batch} (the last one fewer)")
        level, half = probe.level, self.width // 2
        if any(g.level != level - 1 for g, _ in packed):
            raise LevelError(f"a gallery ciphertext packed from templates at the probe's level {level} is at "
                             f"level {level - 1}")
        target = ev.params.scale_at(level - 3)
        x = None
        for k, (gallery, count) in enumerate(packed):
            s = spread_sum(ev, ev.rescale(ev.mul(ev.bring_to(probe, gallery.level), gallery)), self.dim)
            start = k * self.batch
            w = np.zeros(self.width)
            w[start:start + count] = self._ws[start:start + count]
            term = self._weighted(ev, encoder, s, w, target)
            x = term if x is None else ev.add(x, term)
        norm = spread_sum(ev, ev.rescale(ev.square(probe)), self.dim)
        x = ev.add(x, self._weighted(ev, encoder, ev.bring_to(norm, level - 2), self._wp, target))
        x = ev.add(x, encoder.encode(self._complex(self._offset) / 2, level=x.level, scale=x.scale, slots=half))
        return x.with_metadata(slots=half)

    def _weighted(self, ev: Evaluator, encoder: Encoder, q: Ciphertext, w: np.ndarray, target: float) -> Ciphertext:
        """``q`` times the real weights ``w / 2`` packed into ``width / 2`` complex slots, landing on ``target``."""
        pt = encoder.encode(self._complex(w) / 2, level=q.level, scale=target * ev.params.q_primes[q.level] / q.scale,
                            slots=self.width // 2)
        return ev.rescale(ev.mul_plain(q, pt))

    def combine_checks(self, evaluator: Evaluator, encoder: Encoder, checks: Sequence[Ciphertext],
                       first: int = 0) -> Ciphertext:
        """``sum_t mask_t f_t / 4`` over the enrollment checks (full-slot ciphertexts at one level) of the group's
        templates ``first, first + 1, ...``: one level.  Partial sums over consecutive runs add up."""
        ev = evaluator
        if not 0 < len(checks) or first < 0 or first + len(checks) > self.capacity:
            raise ShapeError(f"a gallery group holds 1 to {self.capacity} checks, got {len(checks)} from {first}")
        wide = [c.with_metadata(slots=ev.params.slots) for c in checks]
        return self._masked_sum(ev, encoder, [ev.bring_to(c, wide[0].level) for c in wide], 0.25, self.width, first)

    def _masked_sum(self, ev: Evaluator, encoder: Encoder, cts: Sequence[Ciphertext], factor: float,
                    period: int, first: int = 0) -> Ciphertext:
        """``sum_j factor * mask_(first + j) * cts[j]`` (``mask_i``: 1 in the residue class i mod ``period``,
        encoded compact), rescaled: one level."""
        like = cts[0]
        pt_scale = ev.params.scale_at(like.level - 1) * ev.params.q_primes[like.level] / like.scale
        out = None
        for start in range(0, len(cts), PlainDot.MAX_TERMS):
            dot = ev.plain_dot(like)
            for j in range(start, min(len(cts), start + PlainDot.MAX_TERMS)):
                mask = np.zeros(period)
                mask[first + j] = factor
                poly, repeat = encoder.encode_compact(mask, like.level, pt_scale, period)
                dot.add(cts[j], poly, pt_scale, repeat)
            part = dot.result()
            out = part if out is None else ev.add(out, part)
        return ev.rescale(out)

    def finish(self, evaluator: Evaluator, encoder: Encoder, x: Ciphertext, checks: Sequence[Ciphertext]) -> Ciphertext:
        """``v`` of a bootstrapped (unpacked, ``width``-slot) ``x`` and the group's enrollment checks ``f_t``
        (full-slot, in order)."""
        if not 0 < len(checks) <= self.capacity:
            raise ShapeError(f"a gallery group holds 1 to {self.capacity} checks, got {len(checks)}")
        return self.finish_combined(evaluator, encoder, x, self.combine_checks(evaluator, encoder, checks))

    def finish_combined(self, evaluator: Evaluator, encoder: Encoder, x: Ciphertext, f: Ciphertext) -> Ciphertext:
        """:meth:`finish` with the checks already combined (:meth:`combine_checks`; partial sums added)."""
        ev = evaluator
        if x.level < self.post_depth():
            raise LevelError(f"the gallery decision needs {self.post_depth()} levels after its bootstrap, got "
                             f"{x.level}")
        if x.slots != self.width:
            raise ShapeError(f"the gallery decision's bootstrapped vector has {self.width} slots, got {x.slots}")
        z = self.sign.evaluate(ev, ev.add(x, ev.conjugate(x)))           # the real part of 2 (x / 2)
        m = ev.add(z, encoder.encode(self._lift, level=z.level, scale=z.scale, slots=self.width))
        pt = encoder.encode(self._half, level=m.level, slots=self.width,
                            scale=ev.params.scale_at(m.level - 1) * ev.params.q_primes[m.level] / m.scale)
        m = ev.rescale(ev.mul_plain(m, pt))
        a = ev.rescale(ev.mul(m, ev.rotate(m, 1)))             # slot w-2: the product of the two checks
        a = ev.rotate_and_sum(a, self.width)                    # ... in every slot
        v = ev.rescale(ev.mul(ev.bring_to(z, a.level), a))
        f = ev.bring_to(f, v.level).with_metadata(slots=self.width)
        return ev.rescale(ev.mul(v, f))

    def forward(self, evaluator: Evaluator, encoder: Encoder, probe: Ciphertext,
                packed: Sequence[tuple[Ciphertext, int]], checks: Ciphertext, bootstrapper,
                seconds: dict[str, float] | None = None) -> Ciphertext:
        """:meth:`prepare_packed`, bootstrap, :meth:`finish_combined` (``checks``: :meth:`combine_checks`'s),
        their seconds added to ``seconds``."""
        return _prepare_bootstrap_finish("gallery", lambda: self.prepare_packed(evaluator, encoder, probe, packed),
                                         bootstrapper, lambda xb: self.finish_combined(evaluator, encoder, xb, checks),
                                         seconds)
