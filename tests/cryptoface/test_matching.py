"""The pipeline's tail as layers: encrypted L2 normalization and blinded thresholded matching.

Plaintext twins against hand-written formulas (hypothesis); the encrypted layers on a toy ring
against their twins, with keys made from their own key plans (so the plans are shown sufficient),
and their depths against the levels the ciphertexts actually lose.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptoface.encrypted.matching import Match, Normalize, period_of, scaled_coefficients, sum_steps
from cryptoface.errors import ModelError
from cryptoface.model import NormPolynomial
from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
from fhe_ckks.errors import LevelError
from fhe_ckks.nn import EncryptedModel
from fhe_ckks.nn.layers import Layer
from fhe_ckks.nn.layout import TensorLayout
from fhe_ckks.rlwe.keyplan import KeyPlan

#: 7 levels: a normalization (4) and a match (2) fit one after the other.
PRESET = "INSECURE_N12_QP520_L7_S40"


@lru_cache(maxsize=None)
def context():
    params = presets.get(PRESET, allow_insecure=True)
    kg = KeyGenerator(params, seed=bytes(range(32)))
    return params, kg, Encoder(params), Encryptor(params, kg.public_key(), seed=bytes(32)), \
        Decryptor(params, kg.secret_key)


def evaluator_for(plan: KeyPlan) -> Evaluator:
    params, kg, *_ = context()
    keys = kg.evaluation_keys(plan)
    return Evaluator(params, keys.relin, keys.galois)


def encrypt(vector: np.ndarray, level: int | None = None):
    params, _, enc, encryptor, _ = context()
    return encryptor.encrypt(enc.encode(vector, level=level))


def decrypt(ct) -> np.ndarray:
    _, _, enc, _, dec = context()
    return np.real(enc.decode(dec.decrypt(ct)))


def pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


@lru_cache(maxsize=None)
def fitted(dim: int) -> tuple[NormPolynomial, float, list[float]]:
    """A 1/sqrt fit on the squared norms of random embeddings of ``dim`` entries of size ~2, rescaled."""
    e = np.random.default_rng(dim).normal(size=(256, dim)) * 2
    poly = NormPolynomial.fit(np.sum(e * e, axis=1))
    s, q = scaled_coefficients(poly)
    return poly, s, q


def embedding(dim: int, seed: int) -> np.ndarray:
    """An embedding in the fitted range of :func:`fitted`, pre-scaled by ``s`` (so ``|e_s|^2 ~ 1``)."""
    _, s, _ = fitted(dim)
    return s * np.random.default_rng(1000 + seed).normal(size=dim) * 2


coefficient_lists = st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3)


# ---- plaintext twins ------------------------------------------------------------------------------------


@given(st.integers(1, 40), coefficient_lists, st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_normalize_plain_is_e_times_q_of_the_squared_norm(dim, coeffs, batch, seed):
    e = np.random.default_rng(seed).uniform(-1, 1, (batch, dim))
    layer = Normalize(dim, coeffs)
    got = layer.forward_plain(e)
    for b in range(batch):
        y = sum(float(x) ** 2 for x in e[b])
        q = coeffs[0] + coeffs[1] * y + coeffs[2] * y * y
        np.testing.assert_allclose(got[b], e[b] * q, rtol=1e-12, atol=1e-12)
    # the layout's tensor shape (1, dim, 1, 1) works too, and is kept
    t = e[:1].reshape(layer.in_layout.shape)
    out = layer.forward_plain(t)
    assert out.shape == t.shape
    np.testing.assert_allclose(out.reshape(-1), got[0], rtol=1e-12, atol=1e-12)


@given(st.integers(1, 40), coefficient_lists, st.integers(0, 2**32 - 1), st.sampled_from([64, 128, 2048]))
def test_normalize_slot_twin_agrees_with_the_plain_twin(dim, coeffs, seed, slots):
    layer = Normalize(dim, coeffs)
    lay = layer.in_layout
    assert lay.shape == (1, dim, 1, 1) and lay.period == pow2_at_least(dim) == period_of(dim)
    t = np.random.default_rng(seed).uniform(-1, 1, lay.shape)
    v = lay.pack(t, slots)
    out = layer.forward_slots(v)
    assert out.shape == (slots,)
    np.testing.assert_allclose(lay.unpack(out), layer.forward_plain(t), rtol=1e-12, atol=1e-12)
    free = np.ones(slots, dtype=bool)
    free[np.arange(slots) % lay.period < dim] = False
    assert np.all(out[free] == 0)                                   # free slots stay zero
    assert np.array_equal(out, np.tile(out[: lay.period], slots // lay.period))   # still replicated


def test_normalize_slot_twin_reads_free_slots():
    """Garbage in the free slots of a period enters the sum of squares (as in the encrypted layer)."""
    layer = Normalize(3, [0.0, 1.0, 0.0])                           # q(y) = y: e * |e|^2
    v = np.array([1.0, 2.0, 0.0, 5.0] * 2)                           # period 4, slot 3 free but not zero
    want_y = 1 + 4 + 25
    np.testing.assert_allclose(layer.forward_slots(v), v * want_y)


@given(st.integers(1, 40), st.floats(0.05, 50), st.floats(1.5, 400), coefficient_lists,
       st.integers(0, 2**32 - 1))
def test_scaled_coefficients_give_the_original_polynomial(dim, lo, ratio, coeffs, seed):
    poly = NormPolynomial([c / max(lo, 1) ** k for k, c in enumerate(coeffs)], lo, lo * ratio)
    s, q = scaled_coefficients(poly)
    m = np.sqrt(poly.lo * poly.hi)
    assert s == pytest.approx(1 / np.sqrt(m), rel=1e-12)
    e = np.random.default_rng(seed).uniform(-1, 1, (3, dim)) * np.sqrt(poly.hi / dim)
    want = poly.normalize(e)
    got = Normalize(dim, q).forward_plain(s * e)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.max(np.abs(want)) + 1e-300)


def test_scaled_coefficients_known_answer():
    # lo * hi = 16: m = 4, s = 1/2, q_k = 2 * c_k * 4^k
    s, q = scaled_coefficients(NormPolynomial([1.0, -0.5, 0.25], 2.0, 8.0))
    assert s == 0.5
    assert q == pytest.approx([2.0, -4.0, 8.0])


def test_scaled_coefficients_are_of_moderate_size_for_a_fit():
    for dim in (8, 16, 64):
        poly, s, q = fitted(dim)
        assert max(abs(c) for c in poly.coefficients[1:]) < 0.1       # raw c1, c2 would round away
        assert 0.05 < max(abs(c) for c in q) < 20                      # the rescaled ones are O(1)


@pytest.mark.parametrize("coefficients", [[], [1.0], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [0.0] * 5])
def test_non_quadratic_polynomials_are_refused(coefficients):
    with pytest.raises(ModelError):
        scaled_coefficients(NormPolynomial(coefficients, 1.0, 4.0))
    with pytest.raises(ModelError):
        Normalize(8, coefficients)


@given(st.integers(1, 40), st.integers(1, 3), st.floats(0, 4), st.integers(0, 2**32 - 1))
def test_match_plain_is_the_squared_distance_minus_tau(dim, batch, tau, seed):
    rng = np.random.default_rng(seed)
    p, t = rng.uniform(-1, 1, (2, batch, dim))
    got = Match(dim, tau).forward_plain(p, t)
    assert got.shape == (batch,)
    for b in range(batch):
        want = sum((float(x) - float(y)) ** 2 for x, y in zip(p[b], t[b])) - tau
        assert got[b] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert Match(dim, tau).forward_plain(p[0], p[0]) == pytest.approx(-tau, abs=1e-15)


# ---- depths, key switches and key plans -----------------------------------------------------------------------


@given(st.integers(1, 300))
def test_key_switches_and_rotation_steps(dim):
    period = pow2_at_least(dim)
    log_period = period.bit_length() - 1
    norm, match = Normalize(dim, [1.0, 0.0, 0.0]), Match(dim, 0.5)
    steps = [1 << i for i in range(log_period)]
    assert period_of(dim) == period and sum_steps(dim) == steps
    assert norm.rotation_steps() == steps == match.rotation_steps()
    assert norm.key_switches() == 2 + log_period
    assert match.key_switches() == 1 + log_period
    assert norm.depth() == 4 and match.depth() == 2


@given(st.integers(1, 300), st.integers(1, 30))
def test_key_plans_rotate_one_level_below_the_start(dim, level):
    steps = [1 << i for i in range(pow2_at_least(dim).bit_length() - 1)]
    want = KeyPlan({s: level - 1 for s in steps}, relinearization=True)
    assert Normalize(dim, [1.0, 0.0, 0.0]).key_plan(level) == want
    assert Match(dim, 0.5).key_plan(level) == want


def test_normalize_is_a_layer_the_planner_can_place():
    layer = Normalize(8, [1.0, 0.0, 0.0])
    assert isinstance(layer, Layer)
    model = EncryptedModel([layer], 4)
    assert model.plan.bootstraps == 0 and model.plan.output_level == 0
    assert model.key_plan() == layer.key_plan(4)
    with pytest.raises(LevelError):
        EncryptedModel([layer], 3)


# ---- encrypted ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, level", [(8, None), (5, None), (16, 4), (1, None)])
def test_encrypted_normalize_matches_the_plain_twin(dim, level):
    params, *_ = context()
    _, _, q = fitted(dim)
    layer = Normalize(dim, q)
    start = params.max_level if level is None else level
    ev = evaluator_for(layer.key_plan(start))                       # the layer's own plan suffices
    e = embedding(dim, seed=dim).reshape(layer.in_layout.shape)
    ct = encrypt(layer.in_layout.pack(e, params.slots), level=start)
    out = layer.forward(ev, context()[2], ct)
    assert out.level == ct.level - layer.depth()                    # depth = levels lost
    assert abs(out.scale / params.scale_at(out.level) - 1) < 2**-30
    slots = decrypt(out)
    got = layer.in_layout.unpack(slots)
    want = layer.forward_plain(e)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < 2**-12, f"relative error 2^{np.log2(err):.1f}"
    # and the result is near a unit vector (the fit is good to a few percent here)
    assert 0.7 < np.linalg.norm(got) < 1.3
    # free slots of each period stay (near) zero
    free = np.arange(params.slots) % layer.in_layout.period >= dim
    if free.any():
        assert np.max(np.abs(slots[free])) < 2**-20


def test_encrypted_normalize_matches_the_slot_twin_with_garbage_in_free_slots():
    params, *_ = context()
    dim = 5
    _, _, q = fitted(dim)
    layer = Normalize(dim, q)
    period = layer.in_layout.period
    rng = np.random.default_rng(3)
    block = np.zeros(period)
    block[:dim] = embedding(dim, seed=3)
    block[dim:] = rng.uniform(-0.1, 0.1, period - dim)
    v = np.tile(block, params.slots // period)
    ev = evaluator_for(layer.key_plan(params.max_level))
    got = decrypt(layer.forward(ev, context()[2], encrypt(v)))
    want = layer.forward_slots(v)
    assert np.max(np.abs(got - want)) < 2**-12 * np.max(np.abs(want))


def test_keys_below_the_plan_do_not_serve_normalize():
    """The plan's level is needed: Galois keys one level lower fail on the first rotation."""
    params, *_ = context()
    layer = Normalize(8, fitted(8)[2])
    top = params.max_level
    ev = evaluator_for(KeyPlan.rotations_at(layer.rotation_steps(), top - 2, relinearization=True))
    ct = encrypt(layer.in_layout.pack(embedding(8, 1).reshape(layer.in_layout.shape), params.slots))
    with pytest.raises(LevelError):
        layer.forward(ev, context()[2], ct)
    with pytest.raises(LevelError):                                  # and a ciphertext without 4 levels
        layer.forward(evaluator_for(layer.key_plan(3)), context()[2], encrypt(np.zeros(params.slots), level=3))


def unit_pair(dim: int, seed: int, near: bool):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=dim)
    t = p + rng.normal(size=dim) * 0.2 if near else rng.normal(size=dim)
    return p / np.linalg.norm(p), t / np.linalg.norm(t)


@pytest.mark.parametrize("dim, seed, near", [(8, 0, True), (8, 1, False), (5, 2, True), (16, 3, False),
                                             (1, 4, True)])
def test_encrypted_match_with_unit_blinding_is_the_plain_score_in_slot_zero(dim, seed, near):
    params, _, enc, *_ = context()
    tau = 1.0
    match = Match(dim, tau)
    lay = TensorLayout.vector(1, dim)
    p, t = unit_pair(dim, seed, near)
    start = params.max_level - 1
    ev = evaluator_for(match.key_plan(start))
    cp = encrypt(lay.pack(p.reshape(lay.shape), params.slots), level=start)
    ctt = encrypt(lay.pack(t.reshape(lay.shape), params.slots), level=start)
    out = match.forward(ev, enc, cp, ctt, blinding=1.0)
    assert out.level == start - match.depth()
    slots = decrypt(out)
    want = match.forward_plain(p, t)
    assert abs(slots[0] - want) < 2**-18
    assert np.max(np.abs(slots[1:])) < 2**-20                        # every other slot is masked away


def test_encrypted_match_blinds_but_keeps_the_sign():
    params, _, enc, *_ = context()
    dim, tau = 8, 0.6
    match = Match(dim, tau)
    lay = TensorLayout.vector(1, dim)
    ev = evaluator_for(match.key_plan(params.max_level))
    seen_ratios = set()
    for seed in range(6):
        p, t = unit_pair(dim, 20 + seed, near=seed % 2 == 0)
        want = match.forward_plain(p, t)
        assert abs(want) > 0.01
        out = match.forward(ev, enc, encrypt(lay.pack(p.reshape(lay.shape), params.slots)),
                            encrypt(lay.pack(t.reshape(lay.shape), params.slots)))
        got = decrypt(out)
        assert np.sign(got[0]) == np.sign(want)
        ratio = got[0] / want
        assert 1 - 2**-12 < ratio < 17 + 2**-12                      # r in [1, 17)
        seen_ratios.add(round(ratio, 6))
        assert np.max(np.abs(got[1:])) < 2**-16
    assert len(seen_ratios) > 1                                       # a fresh r each time


def test_normalize_then_match_end_to_end():
    """Two raw embeddings, normalized and matched under encryption: the decision of the plaintext pipeline."""
    params, _, enc, *_ = context()
    dim = 8
    poly, s, q = fitted(dim)
    norm, match = Normalize(dim, q), Match(dim, 0.8)
    top = params.max_level
    ev = evaluator_for(norm.key_plan(top) | match.key_plan(top - norm.depth()))
    lay = norm.in_layout
    rng = np.random.default_rng(8)
    a = rng.normal(size=dim) * 2
    for b in (a + rng.normal(size=dim) * 0.3, rng.normal(size=dim) * 2):
        cts = [norm.forward(ev, enc, encrypt(lay.pack((s * x).reshape(lay.shape), params.slots))) for x in (a, b)]
        out = match.forward(ev, enc, *cts, blinding=1.0)
        assert out.level == top - norm.depth() - match.depth()
        want = match.forward_plain(poly.normalize(a), poly.normalize(b))
        assert abs(want) > 0.05
        assert abs(decrypt(out)[0] - want) < 2**-12


def test_meaningless_dimensions_are_refused():
    from cryptoface.errors import ModelError as _ModelError

    for dim in (0, -1, 2.7, True, "8"):
        with pytest.raises(_ModelError):
            Normalize(dim, [1.0, 0.0, 0.0])
        with pytest.raises(_ModelError):
            Match(dim, 1.0)
