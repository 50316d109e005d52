"""Homomorphic DFT factorisation against the special FFT; EvalMod against
its plaintext model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.circuits.dft import dft_transforms, real_form
from fhe_ckks.circuits.lintrans import LinearTransform
from fhe_ckks.circuits.evalmod import EvalMod
from fhe_ckks.ckks.encoder import special_fft, special_ifft
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import ParameterError
from fhe_ckks.ring.ntt import bit_reverse_indices
from tests.ckks_context import context


@given(st.integers(1, 9), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_factored_dft_equals_the_special_fft_without_bit_reversal(log_slots, budget, seed):
    slots = 1 << log_slots
    budget = min(budget, log_slots)
    rng = np.random.default_rng(seed)
    u = rng.normal(size=slots) + 1j * rng.normal(size=slots)
    br = bit_reverse_indices(log_slots)
    v = u[br]
    for lt in dft_transforms(10, slots, False, budget):
        v = lt.evaluate_plain(v)
    np.testing.assert_allclose(v, special_fft(u, 10), atol=1e-9)
    w = special_fft(u, 10)
    for lt in dft_transforms(10, slots, True, budget, factor=0.5):
        w = lt.evaluate_plain(w)
    np.testing.assert_allclose(w, 0.5 * u[br], atol=1e-9)
    np.testing.assert_allclose(special_ifft(special_fft(u, 10), 10), u, atol=1e-9)


@given(st.integers(0, 6), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_real_form_maps_real_and_imaginary_parts_held_apart(log_period, count, seed):
    # [Re v, Im v] -> [Re M v, Im M v] for any complex M, and on a noisy complex input the real part of the
    # output is the map of the real part alone (its entries are real)
    p = 1 << log_period
    rng = np.random.default_rng(seed)
    offsets = rng.choice(p, size=min(count, p), replace=False)
    lt = LinearTransform({int(k): rng.normal(size=p) + 1j * rng.normal(size=p) for k in offsets}, p)
    rf = real_form(lt)
    assert rf.period == 2 * p and rf.diagonal_count <= 2 * lt.diagonal_count
    assert all(np.all(d.imag == 0) for d in rf.diagonals.values())
    v = rng.normal(size=p) + 1j * rng.normal(size=p)
    mv = lt.evaluate_plain(v)
    np.testing.assert_allclose(rf.evaluate_plain(np.concatenate([v.real, v.imag])),
                               np.concatenate([mv.real, mv.imag]), atol=1e-9)
    noise = 1e-3 * rng.normal(size=2 * p)
    out = rf.evaluate_plain(np.concatenate([v.real, v.imag]) + 1j * noise)
    np.testing.assert_allclose(out.real, np.concatenate([mv.real, mv.imag]), atol=1e-9)


def test_dft_rejects_bad_budgets():
    with pytest.raises(ParameterError):
        dft_transforms(10, 16, True, 5)
    with pytest.raises(ParameterError):
        dft_transforms(10, 1, True, 1)


def test_homomorphic_coeffs_to_slots_matches_the_model(rng):
    ctx = context("INSECURE_N12_QP520_L7_S40")
    slots = 64
    lts = dft_transforms(ctx.params.log_n, slots, True, 2)
    from fhe_ckks import Evaluator

    steps = sorted({s for lt in lts for s in lt.rotation_steps()})
    ev = Evaluator(ctx.params, ctx.evaluator.relin_key, ctx.keygen.galois_keys(steps))
    z = rng.uniform(-1, 1, slots) + 1j * rng.uniform(-1, 1, slots)
    ct = ctx.encryptor.encrypt(ctx.encoder.encode(z, slots=slots))
    want = z
    for lt in lts:
        ct = lt.evaluate(ev, ctx.encoder, ct)
        want = lt.evaluate_plain(want)
    assert ct.level == ctx.params.max_level - 2
    assert precision_bits(want, ctx.decrypt(ct, slots)) >= ctx.bits(slack=6)
    u = special_ifft(z, ctx.params.log_n)
    np.testing.assert_allclose(want, u[bit_reverse_indices(6)], atol=1e-9)


def test_evalmod_plain_model_reduces_modulo_one():
    em = EvalMod(k_bound=12, double_angles=3, degree=30, arcsine=True)
    ints = np.arange(-12, 13)
    e = np.linspace(-2**-6, 2**-6, 7)
    x = (ints[:, None] + e[None, :]).ravel()
    frac = x - np.round(x)
    assert np.max(np.abs(em.evaluate_plain(x) - 2 * np.pi * frac)) < 2**-20
    assert em.depth() == em.cosine_polynomial().depth(needs_affine=False) + 3 + 2


def test_homomorphic_evalmod_matches_its_plaintext_twin(rng):
    ctx = context("INSECURE_BOOT_N12_QP1235_H32")
    em = EvalMod()
    x = rng.integers(-12, 13, ctx.params.slots) + rng.uniform(-2**-6, 2**-6, ctx.params.slots)
    ct = ctx.encrypt(x / em.normalizer)
    out = em.evaluate(ctx.evaluator, ct)
    assert ct.level - out.level == em.depth()
    # Absolute error: the input's noise (2^-41 here) amplified by the slope of
    # the chain, about 2 pi (K + 1) = 2^6.4.
    assert precision_bits(em.evaluate_plain(x), ctx.decrypt(out)) >= 25


def test_evalmod_parameter_validation():
    with pytest.raises(ParameterError):
        EvalMod(k_bound=0)
    with pytest.raises(ParameterError):
        EvalMod(degree=1)


def test_evalmod_remez_fit_is_at_least_as_accurate(tmp_path, monkeypatch):
    monkeypatch.setenv("FHE_CKKS_CACHE", str(tmp_path))
    ints = np.arange(-12, 13)
    x = (ints[:, None] + np.linspace(-2**-6, 2**-6, 9)[None, :]).ravel()
    frac = x - np.round(x)
    errs = {}
    for fit in ("chebyshev", "remez"):
        em = EvalMod(degree=20, fit=fit)
        errs[fit] = np.max(np.abs(em.evaluate_plain(x) - 2 * np.pi * frac))
    assert errs["remez"] <= errs["chebyshev"] * 1.01
    with pytest.raises(ParameterError):
        EvalMod(fit="taylor")
