"""Parameter validation, security check, primes and standard scales."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks import presets
from fhe_ckks.errors import ParameterError, SecurityError
from fhe_ckks.rlwe import HE_STANDARD_MAX_LOG_QP, Parameters, ParametersLiteral

TOY = ParametersLiteral(log_n=10, log_q=(60, 40, 40), log_p=(60,), log_scale=40, name="INSECURE_TOY")


def test_he_standard_table_values():
    # HE Standard 2018 Table 1 (ternary, 128-bit classical) and OpenFHE's N = 2^16 entry.
    assert HE_STANDARD_MAX_LOG_QP[1 << 14] == 438
    assert HE_STANDARD_MAX_LOG_QP[1 << 15] == 881
    assert HE_STANDARD_MAX_LOG_QP[1 << 16] == 1772


@pytest.mark.parametrize("name", presets.names(include_insecure=False))
def test_secure_presets_meet_the_standard(name):
    lit = presets.LITERALS[name]
    if lit.log_n == 16:
        pytest.importorskip("numba")  # cheap; the build itself takes a few seconds
    p = presets.get(name)
    assert p.is_secure
    assert p.log_qp <= HE_STANDARD_MAX_LOG_QP[p.n]
    assert str(round(p.log_qp)) in name


def test_insecure_sets_need_both_name_and_flag():
    with pytest.raises(SecurityError):
        Parameters.from_literal(TOY)
    with pytest.raises(SecurityError):
        Parameters.from_literal(ParametersLiteral(**{**TOY.__dict__, "name": "TOY"}), allow_insecure=True)
    assert not Parameters.from_literal(TOY, allow_insecure=True).is_secure
    with pytest.raises(SecurityError):
        presets.get("INSECURE_N10_QP380_L5_S40")


def test_too_large_modulus_is_refused_even_at_n_2_15():
    lit = ParametersLiteral(log_n=15, log_q=(60,) * 14, log_p=(60, 60), log_scale=50, name="BIG")
    with pytest.raises(SecurityError):
        Parameters.from_literal(lit)


@pytest.mark.parametrize("field, value", [
    ("log_n", 0), ("log_n", 18), ("log_q", ()), ("log_q", (60, 62)), ("log_scale", 0), ("log_scale", 70),
    ("hamming_weight", 0), ("sigma", 0.1), ("digits", 7), ("log_q", (30, 40, 40)),
])
def test_invalid_literals_raise_parameter_errors(field, value):
    with pytest.raises(ParameterError):
        Parameters.from_literal(ParametersLiteral(**{**TOY.__dict__, field: value}), allow_insecure=True)


def test_special_modulus_must_cover_each_digit():
    lit = ParametersLiteral(log_n=10, log_q=(60, 40, 40, 40), log_p=(30,), log_scale=40, digits=1,
                            name="INSECURE_SMALL_P")
    with pytest.raises(ParameterError):
        Parameters.from_literal(lit, allow_insecure=True)


@given(st.integers(2, 8), st.sampled_from([30, 40, 50]))
def test_primes_are_distinct_ntt_primes_near_the_scale(count, log_scale):
    lit = ParametersLiteral(log_n=10, log_q=(60,) + (log_scale,) * count, log_p=(60, 60), log_scale=log_scale,
                            name="INSECURE_P")
    p = Parameters.from_literal(lit, allow_insecure=True)
    primes = p.q_primes + p.p_primes
    assert len(set(primes)) == len(primes)
    assert all(q % (2 * p.n) == 1 for q in primes)
    for q in p.q_primes[1:]:
        assert abs(math.log2(q) - log_scale) < 0.01


@given(st.sampled_from(["INSECURE_N10_QP380_L5_S40", "INSECURE_N12_QP520_L7_S40"]))
def test_standard_scales_chain_exactly(name):
    p = presets.get(name, allow_insecure=True)
    for level in range(p.max_level, 0, -1):
        s = p.scale_at(level)
        assert s * s / p.q_primes[level] == p.scale_at(level - 1)
        assert abs(math.log2(s) - p.literal.log_scale) < 0.1


def test_fingerprint_separates_parameter_sets():
    a = presets.get("INSECURE_N10_QP380_L5_S40", allow_insecure=True)
    b = presets.get("INSECURE_N12_QP520_L7_S40", allow_insecure=True)
    assert a.fingerprint != b.fingerprint
    assert Parameters.from_literal(a.literal, allow_insecure=True).fingerprint == a.fingerprint


def test_a_chain_of_several_runs_restarts_its_scale_at_each_run_top():
    # 2 user levels at 2^40, 3 levels of 50 bits, 14 of 60 bits (a bootstrapping chain).
    p = presets.get("INSECURE_BOOT_N12_QP1354_L19_S40", allow_insecure=True)
    sizes = p.literal.log_q
    for level in range(p.max_level, 0, -1):
        s = p.scale_at(level)
        run_top = level == p.max_level or sizes[level + 1] != sizes[level]
        target = 2.0 ** (p.literal.log_scale if sizes[level] == p.literal.log_scale else sizes[level])
        if run_top:
            assert s == target
        else:
            assert s == p.scale_at(level + 1) ** 2 / p.q_primes[level + 1]
        assert abs(math.log2(s / target)) < 0.01
    assert p.scale_at(0) == p.scale_at(1) ** 2 / p.q_primes[1]


@pytest.mark.parametrize("field, value", [
    ("name", 5), ("name", None), ("name", b"INSECURE_TOY"), ("log_n", True), ("log_n", 10.0), ("log_n", "10"),
    ("log_q", 60), ("log_q", "abc"), ("log_q", None), ("log_q", (60, True)), ("log_q", (60.0, 40)),
    ("log_q", ((60,), 40)), ("log_p", (60, None)), ("log_scale", True), ("log_scale", 40.0),
    ("hamming_weight", True), ("hamming_weight", 32.0), ("hamming_weight", "32"), ("sigma", float("nan")),
    ("sigma", float("inf")), ("sigma", True), ("sigma", "3.2"), ("sigma", None), ("digits", True),
    ("digits", 2.0), ("digits", "2"),
])
def test_literals_of_the_wrong_types_raise_parameter_errors(field, value):
    with pytest.raises(ParameterError):
        Parameters.from_literal(ParametersLiteral(**{**TOY.__dict__, field: value}), allow_insecure=True)


def test_a_literal_takes_lists_and_an_int_sigma():
    lit = ParametersLiteral(**{**TOY.__dict__, "log_q": [60, 40, 40], "log_p": [60], "sigma": 3})
    assert lit.log_q == (60, 40, 40) and lit.log_p == (60,)
    assert Parameters.from_literal(lit, allow_insecure=True).sigma == 3.0
