"""Linear transforms against matrix @ vector; depth and rotation plan."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks import Evaluator
from fhe_ckks.circuits.lintrans import LinearTransform, diagonals_of, matrix_of
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import MissingKeyError, ShapeError
from tests.ckks_context import context

NAME = "INSECURE_N10_QP380_L5_S40"


@lru_cache(maxsize=None)
def evaluator_for(steps: tuple[int, ...]) -> Evaluator:
    ctx = context(NAME)
    return Evaluator(ctx.params, ctx.evaluator.relin_key, ctx.keygen.galois_keys(steps))


@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 8, 32, 512]), st.integers(1, 6))
def test_transform_matches_matrix_vector_product(seed, period, ndiag):
    ctx = context(NAME)
    rng = np.random.default_rng(seed)
    offsets = rng.choice(period, size=min(ndiag, period), replace=False)
    diags = {int(k): rng.uniform(-1, 1, period) + 1j * rng.uniform(-1, 1, period) for k in offsets}
    lt = LinearTransform(diags, period)
    ev = evaluator_for(tuple(lt.rotation_steps()))
    v = rng.uniform(-1, 1, period) + 1j * rng.uniform(-1, 1, period)
    ct = ctx.encryptor.encrypt(ctx.encoder.encode(v, slots=period))
    out = lt.evaluate(ev, ctx.encoder, ct)
    want = matrix_of(diags, period) @ v
    np.testing.assert_allclose(lt.evaluate_plain(v), want, atol=1e-9)
    assert ct.level - out.level == lt.depth() == 1
    assert out.scale == pytest.approx(ctx.params.scale_at(out.level), rel=2.0**-40)
    assert precision_bits(want, ctx.decrypt(out, slots=period)) >= ctx.bits(slack=4 + np.log2(len(diags)))


def test_baby_step_choice_minimizes_rotations(rng):
    offsets = [0, 1, 2, 3, 512, 513, 514, 515, 1024, 1025, 1026, 1027]
    lt = LinearTransform({k: np.ones(2048) for k in offsets}, 2048)
    assert lt.key_switches() == 5  # babies 1, 2, 3 and giants 512, 1024
    assert lt.rotation_steps() == [1, 2, 3, 512]  # Horner giants: 1024 -> 512 -> 0 needs one key
    explicit = LinearTransform({k: np.ones(2048) for k in offsets}, 2048, baby=4)
    assert explicit.key_switches() >= lt.key_switches()


def test_dense_matrix_uses_few_rotations(rng):
    period = 64
    lt = LinearTransform(diagonals_of(rng.normal(size=(period, period))), period)
    assert len(lt.rotation_steps()) <= 2 * int(np.sqrt(period)) + 2  # BSGS: ~|B| + |G|


def test_missing_rotation_key_and_bad_shapes(rng):
    ctx = context(NAME)
    lt = LinearTransform({37: np.ones(64)}, 64)  # one rotation by 37: no key for it
    assert lt.rotation_steps() == [37]
    ct = ctx.encryptor.encrypt(ctx.encoder.encode(np.ones(64), slots=64))
    with pytest.raises(MissingKeyError):
        lt.evaluate(ctx.evaluator, ctx.encoder, ct)
    with pytest.raises(ShapeError):
        LinearTransform({0: np.ones(8)}, 16)
    with pytest.raises(ShapeError):
        diagonals_of(np.ones((2, 3)))
