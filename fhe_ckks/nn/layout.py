"""Slot layouts: where each value of a ``(G, C, H, W)`` tensor sits in the slot vector.

``G`` is the number of independent networks (e.g. patches) sharing a
ciphertext.  A layout is an index array ``index[g, c, y, x] -> slot`` into a
vector of ``period`` slots (a power of two); the vector is repeated to fill all
slots of the ciphertext, so rotations by multiples of ``period`` are free
copies.  Slots no value maps to are "free": layers may leave garbage there, and
every layer reads only mapped slots.

* :meth:`TensorLayout.stacked`: ``slot = ((c G + g) H + y) W + x``: channel blocks
  of ``G H W`` slots; a 3x3 convolution then has ~9 C diagonals.
* :meth:`TensorLayout.multiplexed`: after a stride-``k`` down-sampling, ``k^2``
  channels share each ``k x k`` cell of the full-resolution grid (Lee et al.,
  ICML 2022): channel ``c = k^2 c_hi + k i + j`` at pixel ``(y, x)`` sits at
  row ``k y + i``, column ``k x + j`` of block ``c_hi``.  Down-sampling then moves
  no data.
* :meth:`TensorLayout.vector`: a flat vector per group (e.g. an embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, ShapeError


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


@dataclass(frozen=True, eq=False)
class TensorLayout:
    shape: tuple[int, int, int, int]
    index: np.ndarray
    period: int
    name: str = "layout"

    def __post_init__(self):
        g, c, h, w = self.shape
        if self.index.shape != self.shape:
            raise ShapeError(f"index of shape {self.index.shape} for a tensor of shape {self.shape}")
        if self.period & (self.period - 1) or self.period < 1:
            raise ParameterError(f"period {self.period} is not a power of two")
        flat = self.index.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.period or np.unique(flat).size != flat.size):
            raise ParameterError(f"{self.name}: slots must be distinct and below the period {self.period}")

    # ---- constructors -----------------------------------------------------------------

    @classmethod
    def stacked(cls, groups: int, channels: int, height: int, width: int) -> "TensorLayout":
        g, c, y, x = np.meshgrid(np.arange(groups), np.arange(channels), np.arange(height), np.arange(width),
                                 indexing="ij")
        index = ((c * groups + g) * height + y) * width + x
        return cls((groups, channels, height, width), index.astype(np.int64),
                   _pow2_at_least(groups * channels * height * width), f"stacked{(groups, channels, height, width)}")

    @classmethod
    def multiplexed(cls, groups: int, channels: int, height: int, width: int, gap: int) -> "TensorLayout":
        if gap == 1:
            return cls.stacked(groups, channels, height, width)
        g, c, y, x = np.meshgrid(np.arange(groups), np.arange(channels), np.arange(height), np.arange(width),
                                 indexing="ij")
        hi, lo = divmod(c, gap * gap)
        i, j = divmod(lo, gap)
        full_h, full_w = height * gap, width * gap
        index = ((hi * groups + g) * full_h + gap * y + i) * full_w + gap * x + j
        blocks = -(-channels // (gap * gap))
        return cls((groups, channels, height, width), index.astype(np.int64),
                   _pow2_at_least(blocks * groups * full_h * full_w),
                   f"multiplexed{(groups, channels, height, width)}/gap{gap}")

    @classmethod
    def vector(cls, groups: int, length: int) -> "TensorLayout":
        index = (np.arange(groups)[:, None] * length + np.arange(length)[None, :]).reshape(groups, length, 1, 1)
        return cls((groups, length, 1, 1), index.astype(np.int64), _pow2_at_least(groups * length),
                   f"vector{(groups, length)}")

    # ---- maps -------------------------------------------------------------------------

    @property
    def used(self) -> int:
        return int(self.index.size)

    def check_slots(self, slots: int) -> None:
        if slots % self.period:
            raise ParameterError(f"{self.name} has period {self.period}, which does not divide {slots} slots")

    def pack(self, tensor: np.ndarray, slots: int) -> np.ndarray:
        """``(G, C, H, W)`` -> slot vector of length ``slots`` (free slots zero, repeated with the period)."""
        t = np.asarray(tensor)
        if t.shape != self.shape:
            raise ShapeError(f"{self.name} packs tensors of shape {self.shape}, got {t.shape}")
        self.check_slots(slots)
        v = np.zeros(self.period, dtype=np.result_type(t, np.float64))
        v[self.index] = t
        return np.tile(v, slots // self.period)

    def unpack(self, vector: np.ndarray) -> np.ndarray:
        """Slot vector (first period) -> ``(G, C, H, W)``."""
        v = np.asarray(vector)
        if v.ndim != 1 or v.size < self.period:
            raise ShapeError(f"{self.name} unpacks vectors of at least {self.period} slots, got {v.shape}")
        return v[self.index]

    def per_channel(self, values: np.ndarray, slots: int) -> np.ndarray:
        """A ``(G, C)`` (or ``(C,)``) coefficient per channel, spread over that channel's slots."""
        vals = np.broadcast_to(np.asarray(values, dtype=np.float64), self.shape[:2])
        return self.pack(np.broadcast_to(vals[:, :, None, None], self.shape), slots)
