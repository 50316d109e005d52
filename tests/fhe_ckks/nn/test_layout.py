"""Slot layouts: index formulas against explicit loops, pack/unpack, replication, per-channel spreads, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.errors import ParameterError, ShapeError
from fhe_ckks.nn.layout import TensorLayout

groups_st = st.integers(1, 3)
channels_st = st.integers(1, 9)
size_st = st.integers(1, 6)
gap_st = st.integers(1, 3)


@st.composite
def layouts(draw) -> TensorLayout:
    kind = draw(st.sampled_from(["stacked", "multiplexed", "vector"]))
    g = draw(groups_st)
    if kind == "vector":
        return TensorLayout.vector(g, draw(st.integers(1, 40)))
    c, h, w = draw(channels_st), draw(size_st), draw(size_st)
    if kind == "stacked":
        return TensorLayout.stacked(g, c, h, w)
    return TensorLayout.multiplexed(g, c, h, w, draw(gap_st))


def is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def check_index_set(layout: TensorLayout) -> None:
    flat = layout.index.reshape(-1)
    assert layout.index.shape == layout.shape and layout.used == flat.size == int(np.prod(layout.shape))
    assert is_pow2(layout.period)
    assert flat.min() >= 0 and flat.max() < layout.period
    assert np.unique(flat).size == flat.size


# ---- index formulas -----------------------------------------------------------------------------------


@given(groups_st, channels_st, size_st, size_st)
def test_stacked_index_is_channel_blocks_of_group_images(groups, channels, height, width):
    lay = TensorLayout.stacked(groups, channels, height, width)
    assert lay.shape == (groups, channels, height, width)
    slot = 0
    for c in range(channels):                      # channel-major, then group, row, column
        for g in range(groups):
            for y in range(height):
                for x in range(width):
                    assert lay.index[g, c, y, x] == slot
                    slot += 1
    check_index_set(lay)
    used = groups * channels * height * width
    assert lay.period >= used and (lay.period == 1 or lay.period // 2 < used)   # the smallest power of two


@given(groups_st, channels_st, size_st, size_st, gap_st)
def test_multiplexed_index_interleaves_channels_in_cells(groups, channels, height, width, gap):
    lay = TensorLayout.multiplexed(groups, channels, height, width, gap)
    full_h, full_w = gap * height, gap * width
    for g in range(groups):
        for c in range(channels):
            hi, lo = divmod(c, gap * gap)
            i, j = divmod(lo, gap)
            for y in range(height):
                for x in range(width):
                    row, col = gap * y + i, gap * x + j
                    assert lay.index[g, c, y, x] == ((hi * groups + g) * full_h + row) * full_w + col
    check_index_set(lay)
    blocks = -(-channels // (gap * gap))
    used = blocks * groups * full_h * full_w
    assert lay.period >= used and (lay.period == 1 or lay.period // 2 < used)


@given(groups_st, channels_st, size_st, size_st, gap_st)
def test_multiplexed_is_a_sub_layout_of_the_full_resolution_stacked_one(groups, channels, height, width, gap):
    """Channel c at pixel (y, x) sits where the full-resolution stacked layout of ceil(C / k^2) channels
    keeps channel c // k^2 at pixel (k y + i, k x + j): a stride-k down-sampling moves no data."""
    lay = TensorLayout.multiplexed(groups, channels, height, width, gap)
    blocks = -(-channels // (gap * gap))
    full = TensorLayout.stacked(groups, blocks, gap * height, gap * width)
    assert lay.period == full.period
    c = np.arange(channels)
    hi, lo = divmod(c, gap * gap)
    i, j = divmod(lo, gap)
    y, x = np.arange(height), np.arange(width)
    want = full.index[:, hi[:, None, None], gap * y[None, :, None] + i[:, None, None],
                      gap * x[None, None, :] + j[:, None, None]]
    np.testing.assert_array_equal(lay.index, want)


def test_multiplexed_with_gap_one_is_stacked_and_known_answers():
    a, b = TensorLayout.multiplexed(2, 3, 4, 5, 1), TensorLayout.stacked(2, 3, 4, 5)
    np.testing.assert_array_equal(a.index, b.index)
    assert a.period == b.period == 128 and a.used == 120
    # 4 channels, gap 2, 2x2 pixels: one 4x4 block, channels at (i, j) offsets of each 2x2 cell
    m = TensorLayout.multiplexed(1, 4, 2, 2, 2)
    np.testing.assert_array_equal(m.index[0, :, 0, 0], [0, 1, 4, 5])
    np.testing.assert_array_equal(m.index[0, 0], [[0, 2], [8, 10]])
    assert m.period == 16 and sorted(m.index.reshape(-1).tolist()) == list(range(16))
    # 5 channels with gap 2 need a second block: 2 blocks of 16 slots
    m5 = TensorLayout.multiplexed(1, 5, 2, 2, 2)
    np.testing.assert_array_equal(m5.index[0, 4], [[16, 18], [24, 26]])
    assert m5.period == 32


@given(groups_st, st.integers(1, 40))
def test_vector_layout_is_one_flat_block_per_group(groups, length):
    lay = TensorLayout.vector(groups, length)
    assert lay.shape == (groups, length, 1, 1)
    np.testing.assert_array_equal(lay.index[:, :, 0, 0], np.arange(groups * length).reshape(groups, length))
    check_index_set(lay)
    assert lay.period >= groups * length > lay.period // 2 or lay.period == 1


def test_period_is_the_smallest_power_of_two_at_edges():
    assert TensorLayout.vector(1, 1).period == 1
    assert TensorLayout.vector(1, 2).period == 2
    assert TensorLayout.vector(1, 3).period == 4
    assert TensorLayout.vector(1, 64).period == 64
    assert TensorLayout.vector(1, 65).period == 128
    assert TensorLayout.stacked(3, 3, 3, 3).period == 128


# ---- pack / unpack ----------------------------------------------------------------------------------------


@given(layouts(), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_pack_places_values_zeroes_free_slots_and_replicates(lay, copies_log, seed):
    t = np.random.default_rng(seed).normal(size=lay.shape)
    slots = lay.period << copies_log
    v = lay.pack(t, slots)
    assert v.shape == (slots,) and v.dtype == np.float64
    blocks = v.reshape(-1, lay.period)
    for k in range(blocks.shape[0]):                   # every copy is the same vector
        np.testing.assert_array_equal(blocks[k], blocks[0])
    free = np.ones(lay.period, dtype=bool)
    free[lay.index.reshape(-1)] = False
    assert np.all(blocks[0][free] == 0)
    for g, c, y, x in np.ndindex(*lay.shape):
        assert blocks[0][lay.index[g, c, y, x]] == t[g, c, y, x]
    np.testing.assert_array_equal(lay.unpack(v), t)
    # any copy unpacks to the tensor; free-slot garbage does not leak
    np.testing.assert_array_equal(lay.unpack(v[(slots - lay.period):]), t)
    noisy = v + np.where(np.tile(free, slots // lay.period), 1e9, 0)
    np.testing.assert_array_equal(lay.unpack(noisy), t)


@given(layouts(), st.integers(0, 2**32 - 1))
def test_complex_tensors_round_trip_and_integers_pack_as_floats(lay, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=lay.shape) + 1j * rng.normal(size=lay.shape)
    v = lay.pack(z, 2 * lay.period)
    assert np.iscomplexobj(v)
    np.testing.assert_array_equal(lay.unpack(v), z)
    k = rng.integers(-5, 5, size=lay.shape)
    vk = lay.pack(k, lay.period)
    assert vk.dtype == np.float64
    np.testing.assert_array_equal(lay.unpack(vk), k)


def test_unpack_reads_only_the_first_period():
    lay = TensorLayout.stacked(1, 2, 2, 2)            # period 8
    v = np.arange(32, dtype=np.float64)
    np.testing.assert_array_equal(lay.unpack(v).reshape(-1), np.arange(8))


# ---- per-channel spreads ----------------------------------------------------------------------------------


@given(layouts(), st.booleans(), st.integers(0, 2**32 - 1))
def test_per_channel_spreads_each_value_over_its_channel(lay, per_group, seed):
    g, c = lay.shape[:2]
    rng = np.random.default_rng(seed)
    vals = rng.uniform(1, 2, size=(g, c) if per_group else (c,))
    v = lay.per_channel(vals, 2 * lay.period)
    full = np.broadcast_to(vals, (g, c))
    for gi in range(g):
        for ci in range(c):
            assert np.all(v[lay.index[gi, ci].reshape(-1)] == full[gi, ci])
    free = np.ones(lay.period, dtype=bool)
    free[lay.index.reshape(-1)] = False
    assert np.all(v[: lay.period][free] == 0)
    np.testing.assert_array_equal(v[: lay.period], v[lay.period:])


def test_per_channel_known_answer():
    lay = TensorLayout.stacked(2, 2, 1, 2)            # slots: (c0 g0) (c0 g1) (c1 g0) (c1 g1), two pixels each
    np.testing.assert_array_equal(lay.per_channel([3.0, 5.0], 8), [3, 3, 3, 3, 5, 5, 5, 5])
    np.testing.assert_array_equal(lay.per_channel([[1, 2], [3, 4]], 16),
                                  np.tile([1, 1, 3, 3, 2, 2, 4, 4], 2))
    with pytest.raises(ValueError):
        lay.per_channel([1.0, 2.0, 3.0], 8)          # three values for two channels


# ---- errors ----------------------------------------------------------------------------------------------


def test_pack_and_unpack_refuse_wrong_shapes_and_slot_counts():
    lay = TensorLayout.stacked(1, 2, 4, 4)            # period 32
    with pytest.raises(ShapeError):
        lay.pack(np.zeros((1, 2, 4, 5)), 64)
    with pytest.raises(ShapeError):
        lay.pack(np.zeros((2, 4, 4)), 64)
    with pytest.raises(ShapeError):
        lay.unpack(np.zeros(16))                      # shorter than a period
    with pytest.raises(ShapeError):
        lay.unpack(np.zeros((2, 32)))
    for slots in (16, 48, 33):
        with pytest.raises(ParameterError):
            lay.pack(np.zeros(lay.shape), slots)
        with pytest.raises(ParameterError):
            lay.check_slots(slots)
    lay.check_slots(96)                               # any multiple of the period will do
    assert lay.pack(np.ones(lay.shape), 96).shape == (96,)


def test_constructor_validates_the_index():
    good = np.arange(4, dtype=np.int64).reshape(1, 1, 2, 2)
    assert TensorLayout((1, 1, 2, 2), good, 4).used == 4
    with pytest.raises(ShapeError):
        TensorLayout((1, 1, 2, 2), good.reshape(1, 1, 4, 1), 4)
    for period in (0, 3, 6, -4):
        with pytest.raises(ParameterError):
            TensorLayout((1, 1, 2, 2), good, period)
    with pytest.raises(ParameterError):
        TensorLayout((1, 1, 2, 2), good, 2)           # slots beyond the period
    with pytest.raises(ParameterError):
        TensorLayout((1, 1, 2, 2), np.array([0, 1, 1, 2]).reshape(1, 1, 2, 2), 4)   # a repeated slot
    with pytest.raises(ParameterError):
        TensorLayout((1, 1, 2, 2), np.array([-1, 0, 1, 2]).reshape(1, 1, 2, 2), 4)  # a negative slot
