"""Encrypted layers on slot layouts, each with a plaintext twin, a depth and its rotation steps.

Every layer maps one ciphertext in ``in_layout`` to one in ``out_layout`` and
offers three views of the same computation:

* ``forward_plain(tensor)``: the numpy twin on ``(G, C, H, W)`` tensors;
* ``forward_slots(vector)``: the slot-level twin (exactly what the encrypted
  layer computes, garbage in free slots included), used by the tests;
* ``forward(evaluator, encoder, ct)``: the encrypted layer.

``depth()`` is the number of levels it consumes, ``key_switches()`` its
rotations and relinearizations, ``diagonal_count`` its plaintext diagonals,
and ``key_plan(level)`` the evaluation keys it needs when it starts at
``level`` (a :class:`~fhe_ckks.rlwe.keyplan.KeyPlan`), so keys follow the
network's plan.  Scales stay on the
parameters' standard chain (:meth:`Parameters.scale_at`), so layers compose
without scale bookkeeping.

Linear layers (convolutions, per-channel scalings, pooling, dense maps) are
all :class:`SlotLinear`: a sparse slot-to-slot matrix given by
``(out_slot, in_slot, weight)`` triples, turned into generalized diagonals and
evaluated by :class:`fhe_ckks.circuits.lintrans.LinearTransform` with
baby-step giant-step and hoisted rotations (one level).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..ckks.ciphertext import Ciphertext
from ..ckks.encoder import Encoder
from ..ckks.evaluator import Evaluator
from ..circuits.lintrans import LinearTransform
from ..errors import LevelError, ParameterError, ShapeError
from ..rlwe.keyplan import KeyPlan
from . import plain
from .layout import TensorLayout


class Layer(ABC):
    in_layout: TensorLayout
    out_layout: TensorLayout

    @abstractmethod
    def depth(self) -> int: ...

    def rotation_steps(self) -> list[int]:
        return []

    @abstractmethod
    def forward_plain(self, tensor: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def forward_slots(self, vector: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def forward(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext) -> Ciphertext: ...

    def key_switches(self) -> int:
        """Key switches of one encrypted evaluation (rotations and relinearizations)."""
        return len(self.rotation_steps())

    def key_plan(self, level: int) -> KeyPlan:
        """The evaluation keys of one evaluation that starts at ``level``: each rotation step at the
        highest level it is used at (Galois keys need only reach that level, so keys used deep in a
        block are smaller)."""
        return KeyPlan.rotations_at(self.rotation_steps(), level)

    @property
    def diagonal_count(self) -> int:
        """Plaintext diagonals one evaluation encodes (0 for a layer with no linear transform)."""
        return 0

    def level_after(self, level: int) -> int:
        """The level of the output for an input at ``level``; :class:`LevelError` when the layer does not fit.
        ``level - depth()``, except for layers that hold a :class:`Bootstrap`."""
        if level < self.depth():
            raise LevelError(f"{getattr(self, 'name', type(self).__name__)} needs {self.depth()} level(s), "
                             f"the input is at {level}")
        return level - self.depth()

    def bootstraps(self) -> int:
        """Bootstraps one evaluation runs inside this layer (:class:`Bootstrap` layers)."""
        return 0

    def _need_levels(self, ct: Ciphertext) -> None:
        self.level_after(ct.level)


def bootstrap_periodic(bootstrapper, ct: Ciphertext, period: int) -> Ciphertext:
    """Bootstrap ``ct``, whose slots repeat with ``period``, with a bootstrapper of ``n`` slots, ``period <= n
    <= ct.slots`` (sparse-slot bootstrapping where a tensor fills fewer slots than the ciphertext has).

    A slot vector that repeats with period n is the n-slot encoding of the same polynomial (the encoder's
    sparse packing is exactly that repetition), so ``ct`` is read as an n-slot ciphertext, bootstrapped (its
    SubSum removes what the noise put outside the subring) and read back with ``ct.slots``: the output repeats
    with period n, which every layout of period ``period`` dividing n reads unchanged.  A bootstrapper without
    a ``slots`` attribute (the secret-key test double) works at ``ct.slots``.

    Raises:
        ParameterError: n below the period, not dividing ``ct.slots``, or a bootstrapper whose output has
            another slot count than its input (``BootstrapConfig.unpack``: its real form is a layout change).
    """
    n = getattr(bootstrapper, "slots", None)
    if n is None or n == ct.slots:
        return bootstrapper.bootstrap(ct)
    if period > n or n % period or ct.slots % n:
        raise ParameterError(f"a {n}-slot bootstrapper cannot refresh a tensor of period {period} in a "
                             f"{ct.slots}-slot ciphertext")
    if getattr(bootstrapper, "output_slots", n) != n:
        raise ParameterError("an unpacking bootstrapper changes the layout; a network's bootstrap keeps it")
    return bootstrapper.bootstrap(ct.with_metadata(slots=n)).with_metadata(slots=ct.slots)


class Bootstrap(Layer):
    """A bootstrap at a chosen place of a network (inside a residual branch too), for networks whose bootstraps
    sit where their design puts them (MPCNN: before every AppReLU) rather than where the greedy planner would.
    ``bootstrapper``: anything with ``output_level`` and ``bootstrap(ct)`` (:class:`fhe_ckks.bootstrap.
    Bootstrapper`, or in tests the named ``SecretKeyBootstrapper`` double).  Its keys are the bootstrapper's
    own (:func:`fhe_ckks.bootstrap.bootstrap_key_plan`), not in :meth:`key_plan`."""

    def __init__(self, layout: TensorLayout, bootstrapper, name: str = "bootstrap"):
        if not isinstance(getattr(bootstrapper, "output_level", None), int) or not hasattr(bootstrapper, "bootstrap"):
            raise ParameterError("Bootstrap needs a bootstrapper with an int output_level and bootstrap(ct)")
        self.in_layout = self.out_layout = layout
        self.bootstrapper, self.name = bootstrapper, name

    def depth(self) -> int:
        return 0

    def level_after(self, level: int) -> int:
        if level < 0:
            raise LevelError(f"{self.name}: no ciphertext at level {level}")
        return self.bootstrapper.output_level

    def bootstraps(self) -> int:
        return 1

    def key_switches(self) -> int:
        return 0

    def key_plan(self, level: int) -> KeyPlan:
        return KeyPlan()

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        return np.asarray(tensor, dtype=np.float64)

    def forward_slots(self, vector: np.ndarray) -> np.ndarray:
        return np.asarray(vector, dtype=np.float64)

    def forward(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext) -> Ciphertext:
        return bootstrap_periodic(self.bootstrapper, ct, self.in_layout.period)


class SlotLinear(Layer):
    """``y = M x (+ bias)`` for a sparse slot matrix M given as triples; one level.

    ``M[out, in] = weight`` for each triple; both slot indices are within one
    period of their layouts.  The transform's period is the larger of the two
    layouts' periods; the input is periodic with its own period, so a triple may
    read any copy of its input slot, and the copy that keeps the diagonal
    offsets shared by all output copies is chosen.

    When the output's period m is smaller than the input's period n (a wide
    matrix: pooling, the dense head, some stride-2 convolutions), each triple
    is moved to the copy of its output slot that lies in the same length-m
    block as its input slot, so every offset is below m in size (at most 2m
    diagonals instead of up to n), and the n/m partial sums are then folded
    with log2(n/m) rotations by m, 2m, ...: the output comes out replicated
    with period m, as the layout wants.

    When the input's period is the smaller one (it is replicated over the
    output's period), offsets are taken modulo the input's period: reading
    any copy of the input is the same rotation.
    """

    def __init__(self, in_layout: TensorLayout, out_layout: TensorLayout, out_slots: np.ndarray,
                 in_slots: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None, name: str = "linear"):
        self.in_layout, self.out_layout, self.name = in_layout, out_layout, name
        period = max(in_layout.period, out_layout.period)
        out_slots = np.asarray(out_slots, dtype=np.int64)
        in_slots = np.asarray(in_slots, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if not (out_slots.shape == in_slots.shape == weights.shape):
            raise ShapeError("triples must have equal shapes")
        keep = weights != 0
        out_slots, in_slots, weights = out_slots[keep], in_slots[keep], weights[keep]
        m = out_layout.period
        self.fold_steps: list[int] = []
        if m < in_layout.period:
            o = out_slots + m * (in_slots // m)
            offsets = (in_slots - o) % period
            w_all = weights
            step = m
            while step < period:
                self.fold_steps.append(step)
                step *= 2
        else:
            copies = period // m
            outs, offs = [], []
            for k in range(copies):
                o = out_slots + k * m
                shift = k * m
                i = in_slots + (shift if shift % in_layout.period == 0 else 0)
                outs.append(o)
                offs.append((i - o) % period)
            o, offsets = np.concatenate(outs), np.concatenate(offs)
            w_all = np.tile(weights, copies)
            # The input repeats with its own period, so rot(x, k) = rot(x, k mod p_in): offsets that agree
            # modulo p_in share one diagonal (conv0 reads a 3-channel input replicated 4 times: 144 -> 36).
            offsets = offsets % in_layout.period
        keys, ids = np.unique(offsets, return_inverse=True)
        dense = np.bincount(ids * period + o, w_all, minlength=keys.size * period)
        diags = {int(r): row for r, row in zip(keys, dense.reshape(keys.size, period))}
        if not diags:
            diags[0] = np.zeros(period)
        # float32 storage: a CryptoFaceNet plan holds ~6,000 diagonals per patch group; 24-bit weights
        # are far below the CKKS error of a layer (about 2^-30 relative at scale 2^38)
        self.transform = LinearTransform(diags, period, real_dtype=np.float32)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float64)
        if self.bias is not None and self.bias.shape != out_layout.shape:
            raise ShapeError(f"bias of shape {self.bias.shape} for output {out_layout.shape}")

    def depth(self) -> int:
        return 1

    def rotation_steps(self) -> list[int]:
        return sorted(set(self.transform.rotation_steps()) | set(self.fold_steps))

    def key_switches(self) -> int:
        return self.transform.key_switches() + len(self.fold_steps)

    def key_plan(self, level: int) -> KeyPlan:
        # the fold runs after the rescale, one level down
        return KeyPlan.rotations_at(self.transform.rotation_steps(), level) | \
            KeyPlan.rotations_at(self.fold_steps, level - 1)

    @property
    def diagonal_count(self) -> int:
        return self.transform.diagonal_count

    def forward_slots(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float64)
        p = self.transform.period
        out = np.real(self.transform.evaluate_plain(v[:p]))
        for step in self.fold_steps:
            out = out + np.roll(out, -step)
        if self.bias is not None:
            out = out + self.out_layout.pack(self.bias, p)
        return np.tile(out, v.size // p)

    def forward(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext) -> Ciphertext:
        self._need_levels(ct)
        out = self.transform.evaluate(evaluator, encoder, ct, cache=False)
        for step in self.fold_steps:
            out = evaluator.add(out, evaluator.rotate(out, step))
        if self.bias is not None:
            slots = evaluator.params.slots
            out = evaluator.add(out, encoder.encode(self.out_layout.pack(self.bias, slots), level=out.level,
                                                    scale=out.scale))
        return out

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        return self.out_layout.unpack(self.forward_slots(self.in_layout.pack(tensor, self.transform.period)))


class Conv2d(SlotLinear):
    """2-D convolution (cross-correlation, zero padding) between two layouts; one level.

    ``weight`` is ``(O, C, k, k)`` (shared by all groups) or ``(G, O, C, k, k)``
    (one network per group, e.g. per patch); ``bias`` is ``(O,)`` or ``(G, O)``.
    The output layout's spatial size must be the strided input size.
    """

    def __init__(self, in_layout: TensorLayout, out_layout: TensorLayout, weight: np.ndarray, stride: int = 1,
                 padding: int | None = None, bias: np.ndarray | None = None, name: str = "conv"):
        g, c, h, w = in_layout.shape
        wt = np.asarray(weight, dtype=np.float64)
        if wt.ndim == 4:
            wt = np.broadcast_to(wt, (g,) + wt.shape)
        if wt.ndim != 5 or wt.shape[0] != g or wt.shape[2] != c or wt.shape[3] != wt.shape[4]:
            raise ShapeError(f"weight of shape {np.shape(weight)} for input {in_layout.shape}")
        o, k = wt.shape[1], wt.shape[3]
        pad = k // 2 if padding is None else padding
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        if out_layout.shape != (g, o, ho, wo):
            raise ShapeError(f"conv output is {(g, o, ho, wo)}, output layout holds {out_layout.shape}")
        self.weight, self.stride, self.padding = wt, stride, pad
        self.conv_bias = None if bias is None else np.broadcast_to(np.asarray(bias, dtype=np.float64), (g, o))
        gg, oo, cc, ky, kx, yy, xx = np.meshgrid(np.arange(g), np.arange(o), np.arange(c), np.arange(k), np.arange(k),
                                                 np.arange(ho), np.arange(wo), indexing="ij", sparse=False)
        iy, ix = yy * stride + ky - pad, xx * stride + kx - pad
        valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        gg, oo, cc, ky, kx, yy, xx, iy, ix = (a[valid] for a in (gg, oo, cc, ky, kx, yy, xx, iy, ix))
        full_bias = None
        if self.conv_bias is not None:
            full_bias = np.broadcast_to(self.conv_bias[:, :, None, None], out_layout.shape)
        super().__init__(in_layout, out_layout, out_layout.index[gg, oo, yy, xx], in_layout.index[gg, cc, iy, ix],
                         wt[gg, oo, cc, ky, kx], full_bias, name)

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        t = np.asarray(tensor, dtype=np.float64)
        out = np.stack([plain.conv2d(t[i:i + 1], self.weight[i], self.stride, self.padding)[0]
                        for i in range(t.shape[0])])
        if self.conv_bias is not None:
            out = out + self.conv_bias[:, :, None, None]
        return out


class ChannelScale(SlotLinear):
    """``y[g, c] = s[g, c] * x[g, c]`` (+ bias), possibly into another layout of the same shape; one level."""

    def __init__(self, in_layout: TensorLayout, out_layout: TensorLayout, scale: np.ndarray,
                 bias: np.ndarray | None = None, name: str = "scale"):
        if in_layout.shape != out_layout.shape:
            raise ShapeError(f"channel scaling keeps the shape: {in_layout.shape} vs {out_layout.shape}")
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), in_layout.shape[:2])
        self.scale = s
        full = np.broadcast_to(s[:, :, None, None], in_layout.shape)
        self.channel_bias = None if bias is None else np.broadcast_to(np.asarray(bias, dtype=np.float64),
                                                                     in_layout.shape[:2])
        full_bias = None if bias is None else np.broadcast_to(self.channel_bias[:, :, None, None], in_layout.shape)
        super().__init__(in_layout, out_layout, out_layout.index.reshape(-1), in_layout.index.reshape(-1),
                         full.reshape(-1), full_bias, name)


class ZeroPadShortcut(SlotLinear):
    """The parameter-free ResNet shortcut of a down-sampling block ("option A"): every ``stride``-th pixel, the
    ``C`` input channels at ``offset .. offset + C - 1`` of the output's zero channels (default offset: centered,
    ``(O - C) // 2``, as the common CIFAR ResNets pad); one level (a 0/1 slot matrix).

    With a multiplexed output layout whose gap is the stride, the kept pixels do not move within their channel.
    """

    def __init__(self, in_layout: TensorLayout, out_layout: TensorLayout, stride: int = 2, offset: int | None = None,
                 name: str = "zero_pad"):
        g, c, h, w = in_layout.shape
        o = out_layout.shape[1]
        off = (o - c) // 2 if offset is None else offset
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1 or h % stride \
                or w % stride:
            raise ShapeError(f"stride {stride!r} does not divide the input {h}x{w}")
        if out_layout.shape != (g, o, h // stride, w // stride) or not 0 <= off <= o - c:
            raise ShapeError(f"zero-pad shortcut from {in_layout.shape} (stride {stride}, offset {off}) cannot fill "
                             f"{out_layout.shape}")
        self.stride, self.offset = int(stride), int(off)
        gg, cc, yy, xx = np.meshgrid(np.arange(g), np.arange(c), np.arange(h // stride), np.arange(w // stride),
                                     indexing="ij")
        super().__init__(in_layout, out_layout, out_layout.index[gg, cc + off, yy, xx],
                         in_layout.index[gg, cc, yy * stride, xx * stride], np.ones(gg.shape), None, name)

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        return plain.zero_pad_shortcut(np.asarray(tensor, dtype=np.float64), self.out_layout.shape[1], self.stride,
                                       self.offset)


class ChannelQuadratic(Layer):
    """Per-channel ``a2 x^2 + a1 x + a0`` with any ``a2`` (AutoFHE's layer-wise quadratic activation; channels
    with ``a2 = 0`` are affine).  Two levels and one relinearization; one level and none when every ``a2`` is 0.

    Evaluated as ``(a2 x + a1) * x + a0``: ``a2 x`` is a plaintext product whose scale is chosen so that the final
    rescaled product lands on the standard scale two levels down; the other factor is ``x`` brought down one
    level (an integer constant and a rescale).  The monic :class:`Quadratic` (a fused HerPN, ``a2`` moved into
    the next linear layer) costs one level; this form is for networks with no such layer to absorb ``a2``.
    Free slots get 0.
    """

    def __init__(self, layout: TensorLayout, a2: np.ndarray, a1: np.ndarray, a0: np.ndarray,
                 name: str = "channel_quadratic"):
        self.in_layout = self.out_layout = layout
        shape = layout.shape[:2]
        try:
            self.a2, self.a1, self.a0 = (np.array(np.broadcast_to(np.asarray(a, dtype=np.float64), shape))
                                         for a in (a2, a1, a0))
        except ValueError as exc:
            raise ShapeError(f"coefficients do not broadcast to (groups, channels) {shape}: {exc}") from None
        if not all(np.isfinite(a).all() for a in (self.a2, self.a1, self.a0)):
            raise ParameterError("quadratic coefficients must be finite")
        self.affine = not np.any(self.a2)
        self.name = name

    def depth(self) -> int:
        return 1 if self.affine else 2

    def key_switches(self) -> int:
        return 0 if self.affine else 1

    def key_plan(self, level: int) -> KeyPlan:
        return KeyPlan() if self.affine else KeyPlan(relinearization=True)

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        t = np.asarray(tensor, dtype=np.float64)
        return np.stack([plain.channel_quadratic(t[g:g + 1], self.a2[g], self.a1[g], self.a0[g])[0]
                         for g in range(t.shape[0])])

    def forward_slots(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float64)
        a2, a1, a0 = (self.in_layout.per_channel(a, v.size) for a in (self.a2, self.a1, self.a0))
        return (a2 * v + a1) * v + a0

    def forward(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext) -> Ciphertext:
        self._need_levels(ct)
        params, slots, level = evaluator.params, evaluator.params.slots, ct.level
        per = self.in_layout.per_channel
        if self.affine:
            a1 = encoder.encode(per(self.a1, slots), level=level,
                                scale=params.scale_at(level - 1) * params.q_primes[level] / ct.scale)
            out = evaluator.rescale(evaluator.mul_plain(ct, a1)).with_metadata(scale=params.scale_at(level - 1))
        else:
            x = evaluator.bring_to(ct, level - 1, params.scale_at(level - 1))
            target = params.scale_at(level - 2) * params.q_primes[level - 1] / x.scale   # scale of (a2 x + a1)
            a2 = encoder.encode(per(self.a2, slots), level=level, scale=target * params.q_primes[level] / ct.scale)
            u = evaluator.rescale(evaluator.mul_plain(ct, a2)).with_metadata(scale=target)
            u = evaluator.add(u, encoder.encode(per(self.a1, slots), level=level - 1, scale=target))
            out = evaluator.rescale(evaluator.mul(u, x)).with_metadata(scale=params.scale_at(level - 2))
        return evaluator.add(out, encoder.encode(per(self.a0, slots), level=out.level, scale=out.scale))


class AppReLU(Layer):
    """MPCNN's approximate ReLU on inputs scaled into [-1, 1]: ``u * (1 + p(u)) / 2`` for a composite minimax
    sign ``p`` (:class:`~fhe_ckks.circuits.sign.CompositeSign`, e.g. ``CompositeSign.mpcnn()``, degrees
    15, 15, 27).  ``sign.depth() + 1`` levels.

    ReLU is positively homogeneous, so a network whose pre-activations lie in [-B, B] runs on ``x / B``
    throughout (its biases divided by B) and multiplies by B once at its end.  Within 2^-bits of ReLU: for
    ``|u| >= margin`` the error is ``|u| * error / 2``; below the margin at most ``|u|``.
    """

    def __init__(self, layout: TensorLayout, sign, name: str = "app_relu"):
        from ..circuits.sign import CompositeSign

        if not isinstance(sign, CompositeSign):
            raise ParameterError(f"AppReLU takes a CompositeSign, got {type(sign).__name__}")
        self.in_layout = self.out_layout = layout
        self.sign, self.name = sign, name

    def depth(self) -> int:
        return self.sign.depth() + 1

    def key_switches(self) -> int:
        return self.sign.products() + 1

    def key_plan(self, level: int) -> KeyPlan:
        return KeyPlan(relinearization=True)

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        t = np.asarray(tensor, dtype=np.float64)
        return t * self.sign.step_plain(t)

    def forward_slots(self, vector: np.ndarray) -> np.ndarray:
        return self.forward_plain(vector)

    def forward(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext) -> Ciphertext:
        self._need_levels(ct)
        params = evaluator.params
        step = self.sign.step(evaluator, ct)                      # standard scale, sign.depth() levels down
        x = evaluator.bring_to(ct, step.level, params.scale_at(step.level))
        out = evaluator.rescale(evaluator.mul(x, step))
        return out.with_metadata(scale=params.scale_at(out.level))


class Quadratic(Layer):
    """Per-channel monic quadratic ``x^2 + a1 x + a0`` (a fused HerPN); one level, one relinearization.

    ``x^2`` (ciphertext square) and ``a1 x`` (plaintext product, ``a1`` encoded
    at the input's scale) both land on ``scale^2 / q`` after one rescale, so
    they add exactly; ``a0`` is then added as a plaintext.  Free slots get 0.
    """

    def __init__(self, layout: TensorLayout, a1: np.ndarray, a0: np.ndarray, name: str = "quadratic"):
        self.in_layout = self.out_layout = layout
        self.a1 = np.broadcast_to(np.asarray(a1, dtype=np.float64), layout.shape[:2])
        self.a0 = np.broadcast_to(np.asarray(a0, dtype=np.float64), layout.shape[:2])
        self.name = name

    def depth(self) -> int:
        return 1

    def key_switches(self) -> int:
        return 1

    def key_plan(self, level: int) -> KeyPlan:
        return KeyPlan(relinearization=True)

    def forward_plain(self, tensor: np.ndarray) -> np.ndarray:
        t = np.asarray(tensor, dtype=np.float64)
        return t * t + self.a1[:, :, None, None] * t + self.a0[:, :, None, None]

    def forward_slots(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float64)
        return v * v + self.in_layout.per_channel(self.a1, v.size) * v + self.in_layout.per_channel(self.a0, v.size)

    def forward(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext) -> Ciphertext:
        self._need_levels(ct)
        slots = evaluator.params.slots
        sq = evaluator.rescale(evaluator.square(ct))
        a1 = encoder.encode(self.in_layout.per_channel(self.a1, slots), level=ct.level, scale=ct.scale)
        # equal by construction (ct.scale^2 / q on both sides): declare the square's scale exactly
        lin = evaluator.rescale(evaluator.mul_plain(ct, a1)).with_metadata(scale=sq.scale)
        out = evaluator.add(sq, lin)
        a0 = encoder.encode(self.in_layout.per_channel(self.a0, slots), level=out.level, scale=out.scale)
        return evaluator.add(out, a0)


class Sequential(Layer):
    def __init__(self, layers: Sequence[Layer], name: str = "sequential"):
        if not layers:
            raise ParameterError("an empty Sequential")
        for a, b in zip(layers, layers[1:]):
            if a.out_layout is not b.in_layout and a.out_layout.shape != b.in_layout.shape:
                raise ShapeError(f"{getattr(a, 'name', a)} -> {getattr(b, 'name', b)}: "
                                 f"{a.out_layout.shape} vs {b.in_layout.shape}")
        self.layers = list(layers)
        self.in_layout, self.out_layout, self.name = layers[0].in_layout, layers[-1].out_layout, name

    def depth(self) -> int:
        return sum(layer.depth() for layer in self.layers)

    def rotation_steps(self) -> list[int]:
        return sorted({s for layer in self.layers for s in layer.rotation_steps()})

    def key_switches(self) -> int:
        return sum(layer.key_switches() for layer in self.layers)

    def key_plan(self, level: int) -> KeyPlan:
        plans = []
        for layer in self.layers:
            plans.append(layer.key_plan(level))
            level = layer.level_after(level)
        return KeyPlan.merge(plans)

    def level_after(self, level: int) -> int:
        for layer in self.layers:
            level = layer.level_after(level)
        return level

    def bootstraps(self) -> int:
        return sum(layer.bootstraps() for layer in self.layers)

    @property
    def diagonal_count(self) -> int:
        return sum(layer.diagonal_count for layer in self.layers)

    def forward_plain(self, tensor):
        for layer in self.layers:
            tensor = layer.forward_plain(tensor)
        return tensor

    def forward_slots(self, vector):
        for layer in self.layers:
            vector = layer.forward_slots(vector)
        return vector

    def forward(self, evaluator, encoder, ct):
        self._need_levels(ct)
        for layer in self.layers:
            ct = layer.forward(evaluator, encoder, ct)
        return ct


class Residual(Layer):
    """``body(x) + shortcut(x)``; the shallower branch is brought down to the deeper one's level and scale."""

    def __init__(self, body: Layer, shortcut: Layer, name: str = "residual"):
        if body.in_layout.shape != shortcut.in_layout.shape or body.out_layout.shape != shortcut.out_layout.shape:
            raise ShapeError(f"residual branches disagree: {body.out_layout.shape} vs {shortcut.out_layout.shape}")
        if body.out_layout is not shortcut.out_layout and not np.array_equal(body.out_layout.index,
                                                                             shortcut.out_layout.index):
            raise ShapeError("residual branches must end in the same layout")
        self.body, self.shortcut, self.name = body, shortcut, name
        self.in_layout, self.out_layout = body.in_layout, body.out_layout

    def depth(self) -> int:
        extra = 1 if self.shortcut.depth() < self.body.depth() else 0   # bring_to may spend one level
        return max(self.body.depth(), self.shortcut.depth() + extra)

    def rotation_steps(self) -> list[int]:
        return sorted(set(self.body.rotation_steps()) | set(self.shortcut.rotation_steps()))

    def key_switches(self) -> int:
        return self.body.key_switches() + self.shortcut.key_switches()

    def key_plan(self, level: int) -> KeyPlan:
        return self.body.key_plan(level) | self.shortcut.key_plan(level)

    def level_after(self, level: int) -> int:
        # the higher branch is brought down to the other's level (free on the standard scales)
        return min(self.body.level_after(level), self.shortcut.level_after(level))

    def bootstraps(self) -> int:
        return self.body.bootstraps() + self.shortcut.bootstraps()

    @property
    def diagonal_count(self) -> int:
        return self.body.diagonal_count + self.shortcut.diagonal_count

    def forward_plain(self, tensor):
        return self.body.forward_plain(tensor) + self.shortcut.forward_plain(tensor)

    def forward_slots(self, vector):
        return self.body.forward_slots(vector) + self.shortcut.forward_slots(vector)

    def forward(self, evaluator, encoder, ct):
        self._need_levels(ct)
        a = self.body.forward(evaluator, encoder, ct)
        b = self.shortcut.forward(evaluator, encoder, ct)
        return evaluator.add(a, b)
