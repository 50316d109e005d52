"""Encrypted layers against their plaintext twins (toy ring), layouts, depths and rotation plans."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
from fhe_ckks.errors import LevelError, ParameterError, ShapeError
from fhe_ckks.nn import plain
from fhe_ckks.circuits.sign import CompositeSign
from fhe_ckks.nn.layers import (AppReLU, ChannelQuadratic, ChannelScale, Conv2d, Quadratic, Residual, Sequential,
                                ZeroPadShortcut)
from fhe_ckks.nn.layout import TensorLayout

PRESET = "INSECURE_N12_QP520_L7_S40"


@lru_cache(maxsize=None)
def keys():
    params = presets.get(PRESET, allow_insecure=True)
    return params, KeyGenerator(params, seed=bytes(range(32)))


def run_encrypted(layer, tensor):
    params, kg = keys()
    enc = Encoder(params)
    ev = Evaluator(params, kg.relin_key(), kg.galois_keys(layer.rotation_steps()))
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(layer.in_layout.pack(tensor, params.slots)))
    out = layer.forward(ev, enc, ct)
    assert out.level == params.max_level - layer.depth()
    assert abs(out.scale / params.scale_at(out.level) - 1) < 2**-30
    return layer.out_layout.unpack(np.real(enc.decode(Decryptor(params, kg.secret_key).decrypt(out))))


@settings(deadline=None, max_examples=20)
@given(st.integers(1, 3), st.integers(1, 6), st.sampled_from([4, 6, 8]), st.sampled_from([1, 2]))
def test_layout_pack_unpack_inverse(groups, channels, size, gap):
    layout = TensorLayout.multiplexed(groups, channels, size // gap, size // gap, gap)
    t = np.random.default_rng(0).normal(size=layout.shape)
    slots = max(layout.period, 512)
    v = layout.pack(t, slots)
    assert np.array_equal(layout.unpack(v), t)
    assert np.array_equal(v[: layout.period], v[-layout.period:])   # replicated copies


@settings(deadline=None, max_examples=15)
@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.sampled_from([(1, 3), (2, 3), (1, 1), (2, 1)]),
       st.booleans())
def test_conv_slot_twin_equals_tensor_conv(groups, cin, cout, stride_k, multiplex):
    """The slot matrix built from diagonals computes the convolution (plain, any layouts)."""
    stride, k = stride_k
    rng = np.random.default_rng(groups * 100 + cin * 10 + cout)
    lin = TensorLayout.stacked(groups, cin, 8, 8)
    lout = (TensorLayout.multiplexed(groups, cout, 8 // stride, 8 // stride, stride) if multiplex
            else TensorLayout.stacked(groups, cout, 8 // stride, 8 // stride))
    w = rng.normal(size=(groups, cout, cin, k, k))
    conv = Conv2d(lin, lout, w, stride)
    x = rng.normal(size=lin.shape)
    want = np.stack([plain.conv2d(x[g:g + 1], w[g], stride)[0] for g in range(groups)])
    assert np.allclose(conv.forward_plain(x), want, atol=1e-12)
    # the slot-level twin reads only mapped slots: garbage in free slots does not leak (its diagonals
    # are stored as float32, so it agrees to ~2^-24 relative)
    v = lin.pack(x, 1024) + np.where(np.isin(np.arange(1024) % lin.period, lin.index), 0, 1e3)
    got = lout.unpack(conv.forward_slots(v))
    assert np.max(np.abs(got - want)) <= 2**-20 * np.sum(np.abs(w)) * np.max(np.abs(x))


def test_encrypted_conv_and_quadratic_match_plain():
    rng = np.random.default_rng(1)
    lin = TensorLayout.stacked(2, 4, 8, 8)
    lout = TensorLayout.multiplexed(2, 8, 4, 4, 2)
    conv = Conv2d(lin, lout, rng.normal(size=(2, 8, 4, 3, 3)) * 0.3, stride=2, bias=rng.normal(size=(2, 8)) * 0.1)
    quad = Quadratic(lout, rng.normal(size=(2, 8)), rng.normal(size=(2, 8)))
    net = Sequential([conv, quad])
    x = rng.uniform(-1, 1, lin.shape)
    got = run_encrypted(net, x)
    want = net.forward_plain(x)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < 2**-20, f"relative error 2^{np.log2(err):.1f}"
    assert net.depth() == 2 and net.key_switches() == conv.key_switches() + 1
    assert len(conv.rotation_steps()) <= conv.key_switches()      # Horner giants share keys


def test_encrypted_residual_block_matches_plain():
    """HerPN -> conv -> HerPN -> conv, plus a channel-scaled shortcut (CryptoFaceNet's identity block)."""
    rng = np.random.default_rng(2)
    lay = TensorLayout.stacked(2, 4, 8, 8)
    q1 = Quadratic(lay, rng.normal(size=(2, 4)) * 0.5, rng.normal(size=(2, 4)) * 0.5)
    body = Sequential([Conv2d(lay, lay, rng.normal(size=(2, 4, 4, 3, 3)) * 0.2),
                       Quadratic(lay, rng.normal(size=(2, 4)) * 0.5, rng.normal(size=(2, 4)) * 0.5),
                       Conv2d(lay, lay, rng.normal(size=(2, 4, 4, 3, 3)) * 0.2)])
    block = Sequential([q1, Residual(body, ChannelScale(lay, lay, rng.uniform(0.5, 1.5, (2, 4))))])
    assert block.depth() == 4
    x = rng.uniform(-1, 1, lay.shape)
    want = block.forward_plain(x)
    got = run_encrypted(block, x)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2**-18


def test_bad_shapes_and_levels_are_refused():
    lay = TensorLayout.stacked(1, 2, 4, 4)
    with pytest.raises(ShapeError):
        Conv2d(lay, TensorLayout.stacked(1, 3, 4, 4), np.ones((2, 2, 3, 3)))
    with pytest.raises(ShapeError):
        lay.pack(np.zeros((1, 2, 4, 5)), 64)
    params, kg = keys()
    enc = Encoder(params)
    quad = Quadratic(lay, [1, 1], [0, 0])
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(np.zeros(8), level=0))
    with pytest.raises(LevelError):
        quad.forward(Evaluator(params, kg.relin_key()), enc, ct)


def test_encrypted_conv_from_a_replicated_input_shares_diagonals():
    """conv0's case: a 3-channel input of period 512 replicated over the output's period 1024; offsets are
    reduced modulo the input period (one diagonal serves every copy), and the result is still the conv."""
    rng = np.random.default_rng(4)
    lin = TensorLayout.stacked(2, 3, 8, 8)
    lout = TensorLayout.stacked(2, 8, 8, 8)
    assert lin.period < lout.period
    conv = Conv2d(lin, lout, rng.normal(size=(2, 8, 3, 3, 3)) * 0.3)
    assert conv.diagonal_count <= 9 * (lin.period // 128)          # 4 channel blocks x 9 taps, not 8 x 9
    x = rng.uniform(-1, 1, lin.shape)
    got = run_encrypted(conv, x)
    want = conv.forward_plain(x)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2**-20


def test_encrypted_model_runs_its_plan_and_counts_its_keys():
    from fhe_ckks.errors import LevelError
    from fhe_ckks.nn import EncryptedModel

    rng = np.random.default_rng(6)
    lay = TensorLayout.stacked(2, 4, 8, 8)
    chain = [Conv2d(lay, lay, rng.normal(size=(2, 4, 4, 3, 3)) * 0.2),
             Quadratic(lay, rng.normal(size=(2, 4)) * 0.5, rng.normal(size=(2, 4)) * 0.5),
             Conv2d(lay, lay, rng.normal(size=(2, 4, 4, 3, 3)) * 0.2)]
    params, kg = keys()
    model = EncryptedModel(chain, params.max_level)
    counts = model.counts()
    assert counts["bootstraps"] == 0 and counts["depth"] == 3
    assert counts["key_switches"] == sum(layer.key_switches() for layer in chain)
    levels = model.key_plan().rotations
    assert counts["galois_keys"] == len(levels) == len(set(chain[0].rotation_steps()) | set(chain[2].rotation_steps()))
    assert max(levels.values()) == params.max_level and counts["output_level"] == params.max_level - 3
    enc = Encoder(params)
    ev = Evaluator(params, kg.relin_key(), kg.galois_keys(sorted(levels)))
    x = rng.uniform(-1, 1, lay.shape)
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(lay.pack(x, params.slots)))
    seconds: dict[str, float] = {}
    out = model.run(ev, enc, ct, seconds)
    got = lay.unpack(np.real(enc.decode(Decryptor(params, kg.secret_key).decrypt(out))))
    want = x
    for layer in chain:
        want = layer.forward_plain(want)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2**-18
    assert len(seconds) >= 1
    with pytest.raises(LevelError):
        model.run(ev, enc, ev.drop_level(ct, 1))


# ---- the ResNet baselines' layers (issue #16): zero-padded shortcuts, channel-wise quadratics -----------------

@settings(deadline=None, max_examples=20)
@given(st.integers(1, 2), st.integers(1, 4), st.integers(0, 4), st.sampled_from([1, 2]), st.booleans(),
       st.integers(0, 2**16))
def test_zero_pad_shortcut_slot_twin_equals_the_tensor_shortcut(groups, cin, extra, stride, multiplex, seed):
    rng = np.random.default_rng(seed)
    lin = TensorLayout.stacked(groups, cin, 8, 8)
    cout = cin + extra
    lout = (TensorLayout.multiplexed(groups, cout, 8 // stride, 8 // stride, stride) if multiplex
            else TensorLayout.stacked(groups, cout, 8 // stride, 8 // stride))
    offset = int(rng.integers(0, extra + 1))
    layer = ZeroPadShortcut(lin, lout, stride, offset)
    x = rng.normal(size=lin.shape)
    want = plain.zero_pad_shortcut(x, cout, stride, offset)
    assert np.array_equal(layer.forward_plain(x), want)
    assert np.array_equal(want[:, offset:offset + cin], x[:, :, ::stride, ::stride])
    assert not want[:, :offset].any() and not want[:, offset + cin:].any()
    # garbage in the input's free slots never reaches the output
    v = lin.pack(x, 1024) + np.where(np.isin(np.arange(1024) % lin.period, lin.index), 0, 1e3)
    assert np.allclose(lout.unpack(layer.forward_slots(v)), want, atol=2**-20)
    assert layer.depth() == 1


@settings(deadline=None, max_examples=30)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**16), st.booleans())
def test_channel_quadratic_slot_twin_equals_the_tensor_quadratic(groups, channels, seed, with_zeros):
    rng = np.random.default_rng(seed)
    lay = TensorLayout.stacked(groups, channels, 4, 4)
    a2, a1, a0 = rng.normal(size=(3, groups, channels))
    if with_zeros:
        a2[rng.random((groups, channels)) < 0.5] = 0.0           # identity-like and affine channels
    layer = ChannelQuadratic(lay, a2, a1, a0)
    x = rng.normal(size=lay.shape)
    want = a2[:, :, None, None] * x ** 2 + a1[:, :, None, None] * x + a0[:, :, None, None]
    assert np.allclose(layer.forward_plain(x), want, rtol=1e-12, atol=1e-12)
    assert np.allclose(lay.unpack(layer.forward_slots(lay.pack(x, 512))), want, rtol=1e-12, atol=1e-12)
    assert layer.depth() == (1 if not a2.any() else 2)


@pytest.mark.parametrize("kind", ["quadratic", "mixed", "affine"])
def test_encrypted_channel_quadratic_matches_plain_and_lands_on_the_standard_scale(kind):
    rng = np.random.default_rng(7)
    lay = TensorLayout.stacked(2, 4, 8, 8)
    a2, a1, a0 = rng.normal(size=(3, 2, 4))
    if kind == "mixed":
        a2[:, ::2] = 0.0
    if kind == "affine":
        a2[:] = 0.0
    layer = ChannelQuadratic(lay, a2, a1, a0)
    assert layer.depth() == (1 if kind == "affine" else 2) and layer.key_switches() == (kind != "affine")
    x = rng.uniform(-2, 2, lay.shape)
    got = run_encrypted(layer, x)                      # checks the output level and scale too
    want = layer.forward_plain(x)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2**-20


def test_encrypted_down_sampling_basic_block_with_a_zero_padded_shortcut():
    """A CIFAR ResNet basic block under encryption: stride-2 conv -> quadratic -> conv, plus the zero-padded
    shortcut (channels 4 -> 8, centered), then a quadratic: equal to the tensor block."""
    rng = np.random.default_rng(3)
    lin = TensorLayout.stacked(1, 4, 8, 8)
    lout = TensorLayout.multiplexed(1, 8, 4, 4, 2)
    body = Sequential([Conv2d(lin, lout, rng.normal(size=(1, 8, 4, 3, 3)) * 0.2, stride=2),
                       ChannelQuadratic(lout, rng.normal(size=(1, 8)) * 0.3, rng.normal(size=(1, 8)),
                                        rng.normal(size=(1, 8)) * 0.1),
                       Conv2d(lout, lout, rng.normal(size=(1, 8, 8, 3, 3)) * 0.2)])
    shortcut = ZeroPadShortcut(lin, lout, stride=2)
    assert shortcut.offset == 2
    block = Sequential([Residual(body, shortcut), ChannelQuadratic(lout, 0.2, 1.0, 0.0)])
    assert block.depth() == 6
    x = rng.uniform(-1, 1, lin.shape)
    want = block.forward_plain(x)
    ref = plain.conv2d(plain.channel_quadratic(plain.conv2d(x, body.layers[0].weight[0], 2),
                                               body.layers[1].a2[0], body.layers[1].a1[0], body.layers[1].a0[0]),
                       body.layers[2].weight[0]) + plain.zero_pad_shortcut(x, 8, 2, 2)
    assert np.allclose(want, 0.2 * ref ** 2 + ref, atol=1e-5)        # (diagonals are float32)
    got = run_encrypted(block, x)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2**-18


def test_bad_shortcuts_and_coefficients_are_refused():
    lin = TensorLayout.stacked(1, 4, 8, 8)
    with pytest.raises(ShapeError):
        ZeroPadShortcut(lin, TensorLayout.stacked(1, 8, 8, 8), stride=2)          # wrong output size
    with pytest.raises(ShapeError):
        ZeroPadShortcut(lin, TensorLayout.stacked(1, 8, 4, 4), stride=2, offset=5)  # channels do not fit
    with pytest.raises(ShapeError):
        ZeroPadShortcut(lin, TensorLayout.stacked(1, 2, 4, 4), stride=2)          # fewer output channels
    with pytest.raises(ShapeError):
        ZeroPadShortcut(TensorLayout.stacked(1, 4, 7, 7), TensorLayout.stacked(1, 8, 3, 3), stride=2)
    with pytest.raises(ShapeError):
        ChannelQuadratic(lin, np.ones(3), 0, 0)
    with pytest.raises(ParameterError):
        ChannelQuadratic(lin, [1, np.nan, 1, 1], 0, 0)
    params, kg = keys()
    enc = Encoder(params)
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(np.zeros(8), level=1))
    with pytest.raises(LevelError):
        ChannelQuadratic(lin, 1, 0, 0).forward(Evaluator(params, kg.relin_key()), enc, ct)


@settings(deadline=None, max_examples=60)
@given(st.floats(-1.0, 1.0, allow_nan=False))
def test_app_relu_is_within_its_stated_bound_of_relu(u):
    """MPCNN's AppReLU (degrees 15, 15, 27 at margin 2^-9): ``|u| error / 2`` off ReLU outside the margin,
    at most ``|u|`` inside it."""
    sign = CompositeSign.mpcnn()
    layer = AppReLU(TensorLayout.stacked(1, 1, 1, 1), sign)
    got = float(layer.forward_plain(np.full((1, 1, 1, 1), u))[0, 0, 0, 0])
    bound = abs(u) * sign.error / 2 if abs(u) >= sign.margin else abs(u)
    assert abs(got - max(u, 0.0)) <= bound * (1 + 1e-9) + 1e-15
    assert layer.depth() == 16


@pytest.mark.parametrize("degrees", [(3, 3), (7,)])
def test_encrypted_app_relu_matches_its_plain_twin(degrees):
    rng = np.random.default_rng(11)
    lay = TensorLayout.stacked(2, 3, 4, 4)
    sign = CompositeSign.fit(degrees, 0.1)
    layer = AppReLU(lay, sign)
    assert layer.depth() == sign.depth() + 1 and layer.key_switches() == sign.products() + 1
    x = rng.uniform(-1, 1, lay.shape)
    got = run_encrypted(Sequential([ChannelScale(lay, lay, 1.0), layer]), x)   # free slots: 0 after a linear
    want = layer.forward_plain(x)
    assert np.max(np.abs(got - want)) < 2**-18
    with pytest.raises(ParameterError):
        AppReLU(lay, sign.stages[0])


class _Relabelling:
    """A stand-in bootstrapper that records what it is given and returns it: the test is of the slot
    bookkeeping around a sparse bootstrap, not of bootstrapping (tests/cryptoface/test_baselines.py runs the
    real one)."""

    output_level = 0

    def __init__(self, slots, output_slots=None):
        self.slots, self.output_slots, self.seen = slots, output_slots or slots, []

    def bootstrap(self, ct):
        self.seen.append(ct.slots)
        return ct


def test_a_sparse_bootstrap_reads_a_periodic_tensor_with_fewer_slots_and_hands_back_all():
    from fhe_ckks.nn.layers import Bootstrap, bootstrap_periodic

    params, kg = keys()
    enc = Encoder(params)
    layout = TensorLayout.stacked(1, 2, 8, 8)                      # period 128 of the toy ring's 2,048 slots
    t = np.random.default_rng(5).normal(size=layout.shape)
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(layout.pack(t, params.slots)))
    for n in (128, 512):
        boot = _Relabelling(n)
        out = Bootstrap(layout, boot).forward(None, enc, ct)
        assert boot.seen == [n] and out.slots == params.slots and out.data is ct.data
    full = _Relabelling(params.slots)
    assert bootstrap_periodic(full, ct, layout.period).slots == params.slots and full.seen == [params.slots]
    with pytest.raises(ParameterError):
        bootstrap_periodic(_Relabelling(64), ct, layout.period)           # fewer slots than the period
    with pytest.raises(ParameterError):
        bootstrap_periodic(_Relabelling(96), ct, 32)                      # does not divide the slots
    with pytest.raises(ParameterError):
        bootstrap_periodic(_Relabelling(256, output_slots=512), ct, layout.period)   # unpacking changes layout
