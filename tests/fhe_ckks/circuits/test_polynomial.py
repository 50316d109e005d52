"""Chebyshev polynomial evaluation against evaluate_plain; depth() is what
the evaluation consumes; fitting and caching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.circuits import ChebyshevPolynomial, cached_fit, chebyshev_interpolant, remez_minimax
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import LevelError, ParameterError
from tests.ckks_context import context

NAME = "INSECURE_N12_QP520_L7_S40"


@given(st.integers(0, 2**32 - 1), st.integers(1, 31))
def test_evaluation_matches_plain_and_consumes_depth(seed, degree):
    ctx = context(NAME)
    rng = np.random.default_rng(seed)
    coeffs = rng.uniform(-1, 1, degree + 1) / np.arange(1, degree + 2)
    poly = ChebyshevPolynomial(tuple(coeffs))
    x = rng.uniform(-1, 1, ctx.params.slots)
    ct = ctx.encrypt(x)
    out = poly.evaluate(ctx.evaluator, ct)
    assert ct.level - out.level == poly.depth()
    assert poly.depth() <= int(np.ceil(np.log2(degree + 1))) + 1
    assert precision_bits(poly.evaluate_plain(x), ctx.decrypt(out)) >= ctx.bits(slack=poly.depth() + 2)


def test_interval_affine_map_and_constant_polynomial(rng):
    ctx = context(NAME)
    x = rng.uniform(-3, 3, ctx.params.slots)
    poly = chebyshev_interpolant(np.sin, 9, (-3.0, 3.0))
    out = poly.evaluate(ctx.evaluator, ctx.encrypt(x))
    assert precision_bits(poly.evaluate_plain(x), ctx.decrypt(out)) >= ctx.bits(slack=8)
    assert precision_bits(np.sin(x), poly.evaluate_plain(x)) > 12
    const = ChebyshevPolynomial((0.5,))
    assert precision_bits(0.5, ctx.decrypt(const.evaluate(ctx.evaluator, ctx.encrypt(x)))) >= ctx.bits(slack=1)


def test_fit_on_a_union_of_intervals():
    pieces = [(-2.1, -1.9), (-0.1, 0.1), (1.9, 2.1)]
    poly = chebyshev_interpolant(lambda x: np.round(x), 12, pieces)
    for a, b in pieces:
        x = np.linspace(a, b, 50)
        assert np.max(np.abs(poly.evaluate_plain(x) - np.round(x))) < 1e-2


def test_not_enough_levels_raises(rng):
    ctx = context(NAME)
    poly = chebyshev_interpolant(np.exp, 15)
    ct = ctx.evaluator.drop_level(ctx.encrypt(rng.uniform(-1, 1, 8)), ctx.params.max_level - 2)
    with pytest.raises(LevelError):
        poly.evaluate(ctx.evaluator, ct)


@pytest.mark.parametrize("bad", [dict(coeffs=()), dict(coeffs=(np.nan,)), dict(coeffs=(1.0,), interval=(1.0, 1.0))])
def test_invalid_polynomials(bad):
    with pytest.raises(ParameterError):
        ChebyshevPolynomial(**bad)


def test_cached_fit_stores_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("FHE_CKKS_CACHE", str(tmp_path))
    calls = []

    def fit():
        calls.append(1)
        return chebyshev_interpolant(np.cos, 10)

    key = {"fn": "cos", "degree": 10}
    first = cached_fit(key, fit)
    second = cached_fit(key, fit)
    assert calls == [1]
    assert first.coeffs == second.coeffs
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("fn, degree, interval", [
    (np.abs, 10, (-1.0, 1.0)),
    (lambda x: 1 / np.sqrt(x), 8, (0.5, 4.0)),
    (lambda x: np.cos(10 * x), 15, (-1.0, 1.0)),
])
def test_remez_equioscillates_and_beats_interpolation(fn, degree, interval):
    poly, err = remez_minimax(fn, degree, interval)
    x = np.linspace(*interval, 40001)
    e = poly.evaluate_plain(x) - fn(x)
    assert np.max(np.abs(e)) <= err * (1 + 1e-2)  # err is measured on a 20,000-point grid
    cheb = chebyshev_interpolant(fn, degree, interval)
    assert err <= np.max(np.abs(cheb.evaluate_plain(x) - fn(x)))
    # Chebyshev alternation: at least degree + 2 sign-alternating near-maximal extrema.
    big = np.abs(e) > 0.98 * err
    signs = np.sign(e[big])
    assert 1 + np.count_nonzero(np.diff(signs)) >= degree + 2


def test_remez_never_diverges_at_float_precision():
    poly, err = remez_minimax(np.exp, 30)
    assert err < 1e-14
