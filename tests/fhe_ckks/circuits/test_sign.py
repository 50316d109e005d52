"""Composite minimax sign: every stage is odd and minimax (alternation), the
composite's error, peak, depth and products are what it claims, the degree
search is optimal on a case small enough to search by hand, the polishing
cubic squares the error, the homomorphic evaluation follows the plain one
within the CKKS error, and bad requests raise ParameterError."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks.circuits import ChebyshevPolynomial, CompositeSign, sign_minimax
from fhe_ckks.circuits.sign import ERROR_FLOOR, POLISH, polynomial_range
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import LevelError, ParameterError
from tests.ckks_context import context

# 18 levels: the MPCNN composite (15) polished once (17), the interval check of a depth-8 composite (10).
NAME = "INSECURE_N12_QP900_L18_S40"


@lru_cache(maxsize=None)
def composite(name: str) -> CompositeSign:
    if name == "mpcnn":
        return CompositeSign.mpcnn()
    if name == "margin 2^-8, 20 bits":
        return CompositeSign.for_margin(2.0**-8, 20)
    if name == "margin 2^-4, 12 bits":
        return CompositeSign.for_margin(2.0**-4, 12)
    raise KeyError(name)


NAMES = ["mpcnn", "margin 2^-8, 20 bits", "margin 2^-4, 12 bits"]


def dense(lo: float, hi: float, n: int = 100_001) -> np.ndarray:
    """Uniform and geometric (towards lo) points of [lo, hi]."""
    return np.union1d(np.linspace(lo, hi, n), lo + (hi - lo) * np.geomspace(1e-12, 1.0, n))


def alternations(err: np.ndarray, level: float, rel: float = 1e-3) -> int:
    """1 + sign changes among the points where |err| is within rel of level."""
    signs = np.sign(err[np.abs(err) >= (1 - rel) * level])
    return 1 + int(np.count_nonzero(np.diff(signs))) if signs.size else 0


def check_minimax_stage(poly: ChebyshevPolynomial, fitted_on: float, error_on_fit: float, rel: float = 1e-3):
    """Odd; error within the claim on [fitted_on, 1] and equioscillating there
    (de la Vallee Poussin: no odd polynomial of the degree does better than
    (1 - rel) * error); increasing on [0, fitted_on]; |p| <= 1 + error on [0, 1]."""
    d = poly.degree
    assert d % 2 == 1 and all(c == 0.0 for c in poly.coeffs[0::2])
    x = dense(fitted_on, 1.0)
    np.testing.assert_array_equal(poly.evaluate_plain(-x), -poly.evaluate_plain(x))
    err = poly.evaluate_plain(x) - 1.0
    assert np.max(np.abs(err)) <= error_on_fit * (1 + 1e-9) + 1e-15
    assert np.max(np.abs(err)) >= error_on_fit * (1 - 1e-4)  # the claim is the maximum, not a loose bound
    assert alternations(err, error_on_fit, rel) >= d // 2 + 2
    gap = poly.evaluate_plain(dense(0.0, fitted_on, 20_001))
    assert np.all(np.diff(gap) >= -1e-15)
    assert np.max(np.abs(poly.evaluate_plain(np.linspace(0, 1, 100_001)))) <= 1 + error_on_fit * (1 + 1e-9) + 1e-15


@pytest.mark.parametrize("degree, margin", [(3, 0.3), (7, 2.0**-6), (15, 2.0**-9), (27, 0.03), (59, 0.01),
                                            (63, 0.3), (15, 2.0**-20)])
def test_sign_minimax_is_odd_and_equioscillates(degree, margin):
    poly, err = sign_minimax(degree, margin)
    assert poly.degree == degree and 0 < err < 1
    check_minimax_stage(poly, margin, err)


def test_cubic_fit_is_not_beaten_by_a_brute_force_search():
    """Degree 3 has two coefficients: search them on shrinking grids."""
    for margin in (0.1, 0.5):
        x = dense(margin, 1.0, 2001)
        t1, t3 = x, 4 * x**3 - 3 * x
        a, b, span = 1.0, 0.0, 2.0
        for _ in range(12):
            ga, gb = np.meshgrid(np.linspace(a - span, a + span, 41), np.linspace(b - span, b + span, 41))
            worst = np.max(np.abs(ga.ravel()[:, None] * t1 + gb.ravel()[:, None] * t3 - 1), axis=1)
            k = int(np.argmin(worst))
            a, b, span = ga.ravel()[k], gb.ravel()[k], span / 5
        fine = dense(margin, 1.0)
        searched = np.max(np.abs(a * fine + b * (4 * fine**3 - 3 * fine) - 1))  # its true maximum, near enough
        _, err = sign_minimax(3, margin)
        assert err <= searched * (1 + 1e-9)
        assert searched <= err * (1 + 1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_every_stage_is_a_minimax_polynomial_of_its_input(name):
    comp = composite(name)
    eps = comp.margin
    for i, stage in enumerate(comp.stages):
        assert stage.kind == "minimax" and stage.margin == pytest.approx(eps, rel=1e-9)
        q = ChebyshevPolynomial(tuple(c / stage.gain for c in stage.poly.coeffs))
        check_minimax_stage(q, stage.fitted_on, stage.error)
        last = i == len(comp.stages) - 1
        assert (stage.gain == 1.0) == last  # inner stages are divided by their peak, the last is not
        low, high = polynomial_range(stage.poly, eps, 1.0)
        if not last:
            assert high <= 1.0 + 1e-12 and low == pytest.approx((1 - stage.error) / (1 + stage.error), rel=1e-9)
        eps = low


@pytest.mark.parametrize("name", NAMES)
@given(u=st.floats(0.0, 1.0), negative=st.booleans())
def test_composite_error_on_the_margin(name, u, negative):
    comp = composite(name)
    x = comp.margin + u * (1 - comp.margin)
    x = -x if negative else x
    assert abs(float(comp.evaluate_plain(x)) - math.copysign(1.0, x)) <= comp.error * (1 + 1e-9) + 1e-15


@pytest.mark.parametrize("name", NAMES)
@given(x=st.floats(-1.0, 1.0))
def test_composite_is_bounded_on_the_whole_interval(name, x):
    comp = composite(name)
    assert abs(float(comp.evaluate_plain(x))) <= comp.peak() * (1 + 1e-12) + 1e-15
    assert comp.peak() <= 1 + comp.error * (1 + 1e-9) + 1e-15


@pytest.mark.parametrize("name", NAMES)
def test_error_bound_is_the_true_maximum(name):
    comp = composite(name)
    assert comp.error_bound(comp.margin) == comp.error
    bounds = []
    for eps in (comp.margin / 4, comp.margin / 2, comp.margin, min(4 * comp.margin, 0.9)):
        x = dense(eps, 1.0)
        worst = np.max(np.abs(comp.evaluate_plain(x) - 1))
        bound = comp.error_bound(eps)
        assert worst <= bound * (1 + 1e-9) + 1e-15
        assert worst >= bound * (1 - 1e-4)
        bounds.append(bound)
    assert bounds == sorted(bounds, reverse=True)
    assert bounds[0] > comp.error  # below the margin the guarantee is lost


def test_mpcnn_preset_figures():
    comp = composite("mpcnn")
    assert comp.degrees == (15, 15, 27) and comp.margin == 2.0**-9
    assert comp.depth() == 15 == sum(s.poly.depth() for s in comp.stages)
    assert comp.products() == 24
    assert 13.2 < comp.bits < 13.4  # alpha = 13 at margin 2^-9
    x = np.linspace(-1, 1, 400_001)
    relu_error = np.max(np.abs(x * (1 + comp.evaluate_plain(x)) / 2 - np.maximum(x, 0)))
    assert relu_error <= 2.0**-13
    assert CompositeSign.mpcnn(2.0**-13).bits < 1.2  # the same degrees at margin 2^-13 (see the docstring)


def test_for_margin_target():
    comp = composite("margin 2^-8, 20 bits")
    assert comp.margin == 2.0**-8 and comp.bits >= 20
    assert comp.degrees == (3, 27, 59) and comp.depth() == 13 and comp.products() == 27


def test_for_margin_is_optimal_against_a_search_of_every_plan():
    """Degrees up to 7: every plan of depth <= the found one, fitted and measured."""
    margin, bits = 0.2, 12
    found = CompositeSign.for_margin(margin, bits, max_degree=7)
    assert found.bits >= bits
    depth = {3: 2, 5: 3, 7: 4}
    best = None
    for k in range(1, found.depth() // 2 + 1):
        for plan in itertools.product(depth, repeat=k):
            if sum(depth[d] for d in plan) > found.depth():
                continue
            comp = CompositeSign.fit(plan, margin)
            assert comp.depth() == sum(depth[d] for d in plan)
            if comp.error <= 2.0**-bits:
                cost = (comp.depth(), comp.products())
                best = cost if best is None else min(best, cost)
    assert best == (found.depth(), found.products())


def test_polishing_squares_the_error():
    comp = composite("mpcnn")
    d = comp.error
    once = comp.polished()
    assert once.error == pytest.approx(1.5 * d**2 + 0.5 * d**3, rel=1e-9)
    assert once.error <= 2 * d**2 and once.bits >= 2 * comp.bits - math.log2(1.5) - 1e-3
    assert once.depth() == comp.depth() + 2 and once.products() == comp.products() + 2
    assert once.stages[-1].kind == "polish" and once.stages[-1].poly == POLISH
    x = dense(comp.margin, 1.0)
    y = once.evaluate_plain(x)
    assert np.max(np.abs(y - 1)) <= once.error * (1 + 1e-9) + 1e-15
    assert np.max(np.abs(once.evaluate_plain(np.linspace(-1, 1, 100_001)))) <= 1 + 1e-15  # never beyond +-1
    twice = comp.polished(2)
    assert twice.error == pytest.approx(1.5 * once.error**2, rel=1e-6) and twice.bits > 50
    t = np.linspace(-2, 2, 1001)
    np.testing.assert_allclose(POLISH.evaluate_plain(t), (3 * t - t**3) / 2, atol=1e-14)


def test_widening_at_the_float_floor():
    """Degree 59 on [0.9, 1] would be far below 2^-40: it is fitted on a wider
    interval instead, still minimax there, bounded and monotone on the gap."""
    with pytest.raises(ParameterError):
        sign_minimax(59, 0.9)
    comp = CompositeSign.fit((59,), 0.9)
    stage = comp.stages[0]
    assert stage.fitted_on < 0.9 and ERROR_FLOOR * 0.99 <= stage.error <= ERROR_FLOOR * 1.1
    err_on_fit = max(abs(v - 1) for v in polynomial_range(stage.poly, stage.fitted_on, 1.0))
    assert ERROR_FLOOR <= err_on_fit <= ERROR_FLOOR * 1.1
    check_minimax_stage(stage.poly, stage.fitted_on, err_on_fit, rel=1e-2)  # levelled to 2^-49 absolute


def test_depth_per_degree_is_what_the_evaluator_spends():
    """The table of the module docstring, from the evaluator's own depth()."""
    rng = np.random.default_rng(1)
    table = {3: 2, 5: 3, **{d: 4 for d in range(7, 14, 2)}, **{d: 5 for d in range(15, 28, 2)},
             **{d: 6 for d in range(29, 60, 2)}, **{d: 7 for d in range(61, 120, 2)},
             **{d: 8 for d in range(121, 248, 2)}, 249: 9, 255: 9}
    for d, levels in table.items():
        coeffs = rng.uniform(0.5, 1.5, d + 1) * (np.arange(d + 1) % 2)
        assert ChebyshevPolynomial(tuple(coeffs)).depth() == levels, d


def _slots(ctx, comp, rng, gap: int = 64):
    n = ctx.params.slots
    x = rng.uniform(comp.margin, 1.0, n) * rng.choice([-1.0, 1.0], n)
    x[:gap] = rng.uniform(-comp.margin, comp.margin, gap)  # a few inputs in the gap
    x[gap: gap + 4] = [comp.margin, -comp.margin, 1.0, -1.0]
    return x


def test_homomorphic_sign_matches_plain_and_spends_its_depth(rng):
    """Precision against evaluate_plain: at least the fresh precision less 2
    bits where |x| >= margin (the flat part: measured 24.2 bits against
    23 - 2 = 21), and less 2 + log2(max slope) in the gap (slope 1167: 10.8
    bits required, 15.3 measured)."""
    ctx = context(NAME)
    comp = composite("mpcnn")
    x = _slots(ctx, comp, rng)
    ct = ctx.encrypt(x)
    out = comp.evaluate(ctx.evaluator, ct)
    assert ct.level - out.level == comp.depth()
    assert out.scale == pytest.approx(ctx.params.scale_at(out.level), rel=2.0**-32)
    y = ctx.decrypt(out).real
    plain = comp.evaluate_plain(x)
    outside = slice(64, None)
    assert precision_bits(plain[outside], y[outside]) >= ctx.bits(slack=2)
    g = np.linspace(-1, 1, 400_001)
    slope = np.max(np.abs(np.diff(comp.evaluate_plain(g))) / np.diff(g))
    assert precision_bits(plain, y) >= ctx.bits(slack=2 + math.log2(slope))
    assert np.all(np.sign(y[outside]) == np.sign(x[outside]))
    assert np.max(np.abs(y[outside] - np.sign(x[outside]))) <= comp.error + 2.0 ** -ctx.bits(slack=2)
    # polished: 2 more levels, the deviation from +-1 squared (plus the CKKS error)
    once = comp.polished()
    out = once.evaluate(ctx.evaluator, ct)
    assert ct.level - out.level == once.depth() == 17
    y = ctx.decrypt(out).real
    assert np.max(np.abs(y[outside] - np.sign(x[outside]))) <= once.error + 2.0 ** -ctx.bits(slack=2)
    with pytest.raises(LevelError):
        once.evaluate(ctx.evaluator, ctx.evaluator.drop_level(ct, ct.level - once.depth() + 1))


def test_interval_check_is_a_product_of_two_steps(rng):
    ctx = context(NAME)
    comp = composite("margin 2^-4, 12 bits")
    lo, hi, bound = -0.25, 0.5, 1.0
    w = bound + max(abs(lo), abs(hi))
    x = rng.uniform(-bound, bound, ctx.params.slots)
    x[:4] = [lo, hi, -bound, bound]
    inside = ((x >= lo) & (x <= hi)).astype(float)
    far = (np.abs(x - lo) >= comp.margin * w) & (np.abs(x - hi) >= comp.margin * w)
    plain = comp.in_interval_plain(x, lo, hi, bound)
    assert np.max(np.abs(plain - inside)[far]) <= comp.error + comp.error**2 / 4
    ct = ctx.encrypt(x)
    out = comp.in_interval(ctx.evaluator, ct, lo, hi, bound)
    assert ct.level - out.level == comp.interval_depth() == comp.depth() + 2
    y = ctx.decrypt(out).real
    assert precision_bits(plain, y) >= ctx.bits(slack=2 + 8)  # slope of the steps up to about 2^8 in the gaps
    assert np.all(np.round(y[far]) == inside[far])
    with pytest.raises(ParameterError):
        comp.in_interval_plain(x, hi, lo, bound)
    with pytest.raises(ParameterError):
        comp.in_interval_plain(x, lo, hi, 0.0)


@pytest.mark.parametrize("call", [
    lambda: CompositeSign.fit((15,), 0.0),
    lambda: CompositeSign.fit((15,), 1.0),
    lambda: CompositeSign.fit((15,), -0.5),
    lambda: CompositeSign.fit((15,), 1.5),
    lambda: CompositeSign.fit((15,), float("nan")),
    lambda: CompositeSign.fit((15,), True),
    lambda: CompositeSign.fit((14,), 0.1),
    lambda: CompositeSign.fit((15, 16), 0.1),
    lambda: CompositeSign.fit((1,), 0.1),
    lambda: CompositeSign.fit((257,), 0.1),
    lambda: CompositeSign.fit((15.0,), 0.1),
    lambda: CompositeSign.fit((), 0.1),
    lambda: CompositeSign.fit(15, 0.1),
    lambda: CompositeSign.fit((3,), 2.0**-8, bits=20),  # degrees too small for the target
    lambda: CompositeSign.fit((15, 15, 27), 2.0**-13, bits=13),
    lambda: CompositeSign.for_margin(0.0, 20),
    lambda: CompositeSign.for_margin(2.0**-8, 0),
    lambda: CompositeSign.for_margin(2.0**-8, 37),
    lambda: CompositeSign.for_margin(2.0**-8, 20, max_degree=4),
    lambda: sign_minimax(4, 0.1),
    lambda: sign_minimax(15, 0.0),
    lambda: composite("mpcnn").polished(0),
    lambda: composite("mpcnn").polished(True),
    lambda: composite("mpcnn").error_bound(0.0),
    lambda: composite("mpcnn").error_bound(1.5),
    lambda: CompositeSign(()),
])
def test_invalid_requests_raise(call):
    with pytest.raises(ParameterError):
        call()
