"""Key plans: the algebra of ``|``, the value-type contract, JSON, validation, and the keys a plan makes.

The plan algebra is checked against a plain-dict reference; ``from_json`` against a list of malformed
inputs that must all be refused with :class:`SerializationError` (never an untyped error);
:meth:`KeyGenerator.evaluation_keys` on a toy ring (N = 32) against the Galois elements and levels the
plan names, and once on the bootstrapping toy preset for the encapsulation keys.
"""

from __future__ import annotations

import copy
import json
import pickle
from functools import lru_cache, reduce

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks import presets
from fhe_ckks.errors import FheError, ParameterError, SerializationError
from fhe_ckks.rlwe import Parameters, ParametersLiteral
from fhe_ckks.rlwe.keyplan import MAX_JSON_BYTES, MAX_ROTATIONS, KeyPlan
from fhe_ckks.rlwe.keys import EncapsulationKeys, EvaluationKeys, GaloisKeys, KeyGenerator, SwitchingKey

LOG_N = 5
N = 1 << LOG_N
SLOTS = N // 2
TWO_N = 2 * N
SEED = bytes(range(32))

#: 5 ciphertext primes (levels 0..4), 2 special primes, dnum = 3: key generation takes milliseconds.
TOY = ParametersLiteral(log_n=LOG_N, log_q=(50, 40, 40, 40, 40), log_p=(55, 55), log_scale=40, digits=3,
                        name="INSECURE_TEST_KEYPLAN")
TOY_MAX_LEVEL = len(TOY.log_q) - 1


@lru_cache(maxsize=None)
def toy_params(special: bool = True) -> Parameters:
    lit = ParametersLiteral(**{**TOY.__dict__, "log_p": TOY.log_p if special else (),
                               "digits": TOY.digits if special else None})
    return Parameters.from_literal(lit, allow_insecure=True)


# ---- strategies -------------------------------------------------------------------------------------

weights = st.none() | st.integers(1, 64)


@st.composite
def plans(draw, steps=st.integers(-10**6, 10**6), levels=st.integers(0, 40), max_size=8, weight=weights):
    rot = draw(st.dictionaries(steps, levels, max_size=max_size))
    return KeyPlan(rot, draw(st.booleans()), draw(st.booleans()), draw(weight))


#: plans the toy parameters can serve
toy_plans = plans(steps=st.integers(-(SLOTS - 1), SLOTS - 1), levels=st.integers(0, TOY_MAX_LEVEL), max_size=6,
                  weight=st.none() | st.integers(1, N))

#: plans without an encapsulation weight (so any two of them have a union)
plain_plans = plans(weight=st.none())


def reference_union(a: KeyPlan, b: KeyPlan) -> dict:
    rot = {}
    for plan in (a, b):
        for step, level in plan.rotations.items():
            rot[step] = max(rot.get(step, level), level)
    return rot


# ---- the algebra of | -------------------------------------------------------------------------------------


@given(plain_plans, plain_plans)
def test_union_keeps_the_higher_level_of_each_step_and_ors_the_flags(a, b):
    u = a | b
    assert isinstance(u, KeyPlan)
    assert dict(u.rotations) == reference_union(a, b)
    assert set(u.steps) == set(a.steps) | set(b.steps)
    for step in u.steps:
        assert u.rotations[step] == max(a.rotations.get(step, -1), b.rotations.get(step, -1))
    assert u.relinearization == (a.relinearization or b.relinearization)
    assert u.conjugation == (a.conjugation or b.conjugation)
    assert u.encapsulation_weight is None
    assert a.union(b) == u


@given(plain_plans, plain_plans, plain_plans)
def test_union_is_commutative_associative_and_idempotent(a, b, c):
    assert a | b == b | a
    assert (a | b) | c == a | (b | c)
    assert a | a == a
    assert a | KeyPlan() == a == KeyPlan() | a
    # the union covers both: adding either again changes nothing
    assert (a | b) | a == a | b


@given(plans(), weights)
def test_union_carries_one_encapsulation_weight(a, w):
    b = KeyPlan(encapsulation_weight=w)
    a_plain = KeyPlan(a.rotations, a.relinearization, a.conjugation)
    assert (a_plain | b).encapsulation_weight == w
    assert (b | a_plain).encapsulation_weight == w
    assert (a | KeyPlan(encapsulation_weight=a.encapsulation_weight)).encapsulation_weight == a.encapsulation_weight


@pytest.mark.parametrize("a, b", [(1, 2), (32, 16), (64, 1)])
def test_conflicting_encapsulation_weights_are_refused(a, b):
    pa, pb = KeyPlan(encapsulation_weight=a), KeyPlan({1: 2}, encapsulation_weight=b)
    with pytest.raises(ParameterError):
        pa | pb
    with pytest.raises(ParameterError):
        pb.union(pa)
    with pytest.raises(ParameterError):
        KeyPlan.merge([pa, KeyPlan({3: 0}), pb])


def test_union_with_something_else_is_not_a_plan():
    with pytest.raises(TypeError):
        KeyPlan({1: 2}) | {1: 3}
    with pytest.raises(TypeError):
        KeyPlan.merge([KeyPlan(), {1: 3}])


@given(st.lists(plain_plans, max_size=5))
def test_merge_is_the_union_of_all_and_empty_for_none(ps):
    merged = KeyPlan.merge(ps)
    assert merged == reduce(lambda x, y: x | y, ps, KeyPlan())
    assert KeyPlan.merge(iter(ps)) == merged                  # any iterable, consumed once
    want = {}
    for p in ps:
        for step, level in p.rotations.items():
            want[step] = max(want.get(step, level), level)
    assert dict(merged.rotations) == want
    assert merged.relinearization == any(p.relinearization for p in ps)
    assert merged.conjugation == any(p.conjugation for p in ps)


def test_merge_of_nothing_is_the_empty_plan():
    empty = KeyPlan.merge([])
    assert empty == KeyPlan() and len(empty) == 0 and empty.steps == [] and empty.by_level() == {}
    assert not empty.relinearization and not empty.conjugation and empty.encapsulation_weight is None


def test_union_known_answer():
    a = KeyPlan({1: 5, 2: 3, -4: 0}, relinearization=True)
    b = KeyPlan({2: 4, 8: 1, -4: 0}, conjugation=True, encapsulation_weight=32)
    u = a | b
    assert dict(u.rotations) == {-4: 0, 1: 5, 2: 4, 8: 1}
    assert u.relinearization and u.conjugation and u.encapsulation_weight == 32
    assert u.steps == [-4, 1, 2, 8] and len(u) == 4
    assert u.by_level() == {5: [1], 4: [2], 1: [8], 0: [-4]}


@given(st.lists(st.integers(-100, 100), max_size=10), st.integers(0, 30), st.booleans(), st.booleans())
def test_rotations_at_puts_every_step_at_one_level(steps, level, relin, conj):
    p = KeyPlan.rotations_at(steps, level, relinearization=relin, conjugation=conj)
    assert dict(p.rotations) == {s: level for s in steps}
    assert p.relinearization == relin and p.conjugation == conj
    # numpy integers (what layers compute) become plain ints
    q = KeyPlan.rotations_at(np.asarray(steps, dtype=np.int64), np.int64(level))
    assert dict(q.rotations) == dict(p.rotations)
    assert all(type(s) is int and type(v) is int for s, v in q.rotations.items())


# ---- the value type ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotations", [
    {True: 1}, {False: 0}, {1: True}, {1: False}, {1: -1}, {-3: -100}, {1.0: 2}, {1: 2.0}, {1.5: 2},
    {"1": 2}, {1: "2"}, {None: 1}, {1: None}, {(1,): 2}, {np.float64(1): 2}, {1: float("nan")},
])
def test_constructor_refuses_bad_steps_and_levels(rotations):
    with pytest.raises(ParameterError):
        KeyPlan(rotations)


@pytest.mark.parametrize("kwargs", [
    {"relinearization": 1}, {"relinearization": None}, {"relinearization": "yes"}, {"conjugation": 0},
    {"conjugation": []}, {"encapsulation_weight": 0}, {"encapsulation_weight": -1},
    {"encapsulation_weight": True}, {"encapsulation_weight": 2.0}, {"encapsulation_weight": "32"},
])
def test_constructor_refuses_bad_flags_and_weights(kwargs):
    with pytest.raises(ParameterError):
        KeyPlan({1: 0}, **kwargs)


def test_a_plan_is_frozen_and_owns_its_rotations():
    src = {3: 1, -1: 2}
    p = KeyPlan(src)
    src[5] = 7
    assert dict(p.rotations) == {-1: 2, 3: 1}                      # a copy, not a view of the caller's dict
    with pytest.raises(TypeError):
        p.rotations[3] = 4                                           # read-only mapping
    with pytest.raises(AttributeError):
        p.relinearization = True                                     # frozen dataclass
    assert list(p.rotations) == [-1, 3] == p.steps                  # sorted
    p.steps.append(99)                                               # a fresh list each time
    assert p.steps == [-1, 3]


@given(plans())
def test_equal_plans_hash_equal_whatever_the_insertion_order(p):
    items = list(p.rotations.items())
    q = KeyPlan(dict(reversed(items)), p.relinearization, p.conjugation, p.encapsulation_weight)
    assert q == p and hash(q) == hash(p)
    assert len({p, q}) == 1 and {p: 1}[q] == 1
    assert p != dict(p.rotations) and p != None  # noqa: E711
    # changing any one field makes another plan
    assert KeyPlan(p.rotations, not p.relinearization, p.conjugation, p.encapsulation_weight) != p
    assert KeyPlan(p.rotations, p.relinearization, not p.conjugation, p.encapsulation_weight) != p
    assert KeyPlan(p.rotations, p.relinearization, p.conjugation,
                   1 + (p.encapsulation_weight or 0)) != p
    bumped = {**p.rotations, 10**7: 0}
    assert KeyPlan(bumped, p.relinearization, p.conjugation, p.encapsulation_weight) != p
    if items:
        step, level = items[0]
        higher = {**p.rotations, step: level + 1}
        assert KeyPlan(higher, p.relinearization, p.conjugation, p.encapsulation_weight) != p


@given(plans())
def test_pickle_and_copy_round_trip(p):
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p), copy.copy(p)):
        assert q == p and hash(q) == hash(p) and type(q) is KeyPlan
        with pytest.raises(TypeError):
            q.rotations[0] = 1                                       # still read-only after the trip


@given(plans(max_size=12))
def test_by_level_groups_steps_highest_level_first(p):
    groups = p.by_level()
    levels = list(groups)
    assert levels == sorted(set(p.rotations.values()), reverse=True)
    seen = []
    for level, steps in groups.items():
        assert steps == sorted(steps) and steps
        assert all(p.rotations[s] == level for s in steps)
        seen += steps
    assert sorted(seen) == p.steps and len(seen) == len(p)


def test_repr_names_the_counts():
    r = repr(KeyPlan({1: 2, 3: 4}, relinearization=True, encapsulation_weight=5))
    assert "2 rotations" in r and "relinearization=True" in r and "encapsulation_weight=5" in r


# ---- JSON ---------------------------------------------------------------------------------------------------


@given(plans(steps=st.integers(-2**40, 2**40), levels=st.integers(0, 2**40), max_size=20))
def test_json_round_trip(p):
    text = p.to_json()
    assert isinstance(text, str)
    q = KeyPlan.from_json(text)
    assert q == p and hash(q) == hash(p)
    assert KeyPlan.from_json(text.encode()) == p
    assert KeyPlan.from_json(bytearray(text.encode())) == p
    assert q.to_json() == text                                        # canonical: one text per plan
    d = json.loads(text)
    assert set(d) == {"rotations", "relinearization", "conjugation", "encapsulation_weight"}
    assert d["rotations"] == {str(k): v for k, v in p.rotations.items()}


def test_json_known_answer():
    p = KeyPlan({-1: 0, 2: 3}, relinearization=True, conjugation=False, encapsulation_weight=32)
    assert p.to_json() == ('{"rotations":{"-1":0,"2":3},"relinearization":true,"conjugation":false,'
                           '"encapsulation_weight":32}')
    assert KeyPlan().to_json() == ('{"rotations":{},"relinearization":false,"conjugation":false,'
                                   '"encapsulation_weight":null}')


def plan_text(rotations="{}", relin="false", conj="false", weight="null", extra=""):
    return (f'{{"rotations":{rotations},"relinearization":{relin},"conjugation":{conj},'
            f'"encapsulation_weight":{weight}{extra}}}')


MALFORMED = [
    # not JSON at all
    "", " ", "{", "}", "not json", "{'rotations': {}}", plan_text()[:-1], plan_text() + "x",
    b"\xff\xfe\x00", b'{"rotations":{}}\xff', "\ud800",
    # JSON, but not an object with exactly the four fields
    "null", "5", "1.5", "true", '"plan"', "[]", "[1, 2]", "{}", '{"rotations":{}}',
    '{"rotations":{},"relinearization":false,"conjugation":false}',
    plan_text(extra=',"x":1'), plan_text(extra=',"Rotations":{}'),
    '{"rotation":{},"relinearization":false,"conjugation":false,"encapsulation_weight":null}',
    # rotations that are not an object
    plan_text("[]"), plan_text("null"), plan_text('"1:2"'), plan_text("[[1,2]]"), plan_text("3"),
    # step keys that are not canonical decimal integers
    plan_text('{"1.5":2}'), plan_text('{"01":2}'), plan_text('{" 1":2}'), plan_text('{"1 ":2}'),
    plan_text('{"+1":2}'), plan_text('{"-0":2}'), plan_text('{"1_0":2}'), plan_text('{"":2}'),
    plan_text('{"0x10":2}'), plan_text('{"1e3":2}'), plan_text('{"one":2}'), plan_text('{"\\u0661":2}'),
    plan_text('{"%s":2}' % ("9" * 5000)), plan_text('{"NaN":2}'), plan_text('{"-":2}'),
    # levels that are not non-negative integers
    plan_text('{"1":true}'), plan_text('{"1":false}'), plan_text('{"1":-1}'), plan_text('{"1":2.0}'),
    plan_text('{"1":2.5}'), plan_text('{"1":"2"}'), plan_text('{"1":null}'), plan_text('{"1":[2]}'),
    plan_text('{"1":{}}'), plan_text('{"1":NaN}'), plan_text('{"1":Infinity}'), plan_text('{"1":1e999}'),
    plan_text('{"1":%s}' % ("9" * 5000)),
    # flags and weights of the wrong type or range
    plan_text(relin="1"), plan_text(relin="null"), plan_text(relin='"true"'), plan_text(conj="0"),
    plan_text(conj="[]"), plan_text(weight="0"), plan_text(weight="-32"), plan_text(weight="true"),
    plan_text(weight="32.0"), plan_text(weight='"32"'), plan_text(weight="NaN"), plan_text(weight="{}"),
    # a nesting bomb (100k deep) and deep nesting inside a field
    "[" * 100_000, '{"a":' * 100_000, plan_text("[" * 100_000),
    # too many rotations, too much text
    plan_text(json.dumps({str(i): 0 for i in range(MAX_ROTATIONS + 1)})),
    plan_text() + " " * MAX_JSON_BYTES,
    b" " * (MAX_JSON_BYTES + 1),
]


@pytest.mark.parametrize("text", MALFORMED, ids=lambda t: repr(t)[:40])
def test_from_json_refuses_malformed_input_with_a_typed_error(text):
    with pytest.raises(SerializationError):
        KeyPlan.from_json(text)


@pytest.mark.parametrize("value", [None, 5, 1.5, True, [], {}, {"rotations": {}}, KeyPlan(), object(),
                                   memoryview(b"{}")])
def test_from_json_refuses_what_is_not_text(value):
    with pytest.raises(SerializationError):
        KeyPlan.from_json(value)


def test_from_json_accepts_the_bounds_themselves():
    text = plan_text(json.dumps({str(i): 0 for i in range(MAX_ROTATIONS)}, separators=(",", ":")))
    assert len(KeyPlan.from_json(text)) == MAX_ROTATIONS
    padded = plan_text('{"-7":3}')
    padded += " " * (MAX_JSON_BYTES - len(padded))                  # whitespace up to the limit exactly
    assert KeyPlan.from_json(padded) == KeyPlan({-7: 3})
    # insignificant whitespace and field order do not matter
    assert KeyPlan.from_json(' { "encapsulation_weight" : 4 , "conjugation" : true , "relinearization" : false ,'
                             ' "rotations" : { "3" : 1 } } ') == KeyPlan({3: 1}, False, True, 4)


@given(st.text(max_size=60) | st.binary(max_size=60))
def test_from_json_never_raises_an_untyped_error(text):
    try:
        KeyPlan.from_json(text)
    except SerializationError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=4),
                    max_leaves=12),
       st.sampled_from(["rotations", "relinearization", "conjugation", "encapsulation_weight"]))
def test_any_json_value_in_a_field_is_parsed_or_refused_typed(value, field_name):
    d = {"rotations": {}, "relinearization": False, "conjugation": False, "encapsulation_weight": None,
         field_name: value}
    try:
        plan = KeyPlan.from_json(json.dumps(d))
    except SerializationError:
        return
    assert plan.to_dict() == d                                       # accepted only as written


# ---- validation against parameters ----------------------------------------------------------------------


@given(toy_plans)
def test_validate_accepts_what_the_parameters_serve(p):
    assert p.validate(toy_params()) is p


@pytest.mark.parametrize("plan", [
    KeyPlan({SLOTS: 0}), KeyPlan({-SLOTS: 0}), KeyPlan({SLOTS + 1: 0}), KeyPlan({-10**9: 0}),
    KeyPlan({1: TOY_MAX_LEVEL + 1}), KeyPlan({1: 0, 2: 10**6}),
    KeyPlan(encapsulation_weight=N + 1), KeyPlan({1: 0}, encapsulation_weight=10**6),
    KeyPlan({i: 0 for i in range(MAX_ROTATIONS + 1)}),
])
def test_validate_refuses_what_the_parameters_cannot_serve(plan):
    with pytest.raises(ParameterError):
        plan.validate(toy_params())


def test_validate_edges():
    params = toy_params()
    KeyPlan({SLOTS - 1: TOY_MAX_LEVEL, -(SLOTS - 1): 0, 0: 0}, True, True, N).validate(params)
    # the bound on the number of rotations is a parameter
    all_steps = KeyPlan({i: 0 for i in range(-(SLOTS - 1), SLOTS)})
    assert len(all_steps) == 2 * SLOTS - 1
    all_steps.validate(params)
    all_steps.validate(params, max_rotations=len(all_steps))
    with pytest.raises(ParameterError):
        all_steps.validate(params, max_rotations=len(all_steps) - 1)
    with pytest.raises(ParameterError):
        KeyPlan({1: 0}).validate(params, max_rotations=0)
    KeyPlan().validate(params, max_rotations=0)
    # not parameters
    for other in (TOY, None, "INSECURE_TEST_KEYPLAN", {"log_n": 5}):
        with pytest.raises(ParameterError):
            KeyPlan().validate(other)


@pytest.mark.parametrize("plan", [KeyPlan({1: 0}), KeyPlan(relinearization=True), KeyPlan(conjugation=True),
                                  KeyPlan(encapsulation_weight=4)])
def test_validate_refuses_key_switching_without_special_primes(plan):
    params = toy_params(special=False)
    assert params.p_primes == ()
    with pytest.raises(ParameterError):
        plan.validate(params)
    KeyPlan().validate(params)                                       # asking for nothing is fine


def test_validate_on_a_preset():
    params = presets.get("INSECURE_N10_QP380_L5_S40", allow_insecure=True)
    KeyPlan({params.slots - 1: params.max_level, 1: 0}, True, True, params.n).validate(params)
    with pytest.raises(ParameterError):
        KeyPlan({params.slots: 0}).validate(params)
    with pytest.raises(ParameterError):
        KeyPlan({1: params.max_level + 1}).validate(params)


# ---- evaluation keys of a plan ---------------------------------------------------------------------------


def element(step: int) -> int:
    return pow(5, step % SLOTS, TWO_N)


def expected_elements(plan: KeyPlan) -> dict[int, int]:
    """Galois element -> the level its key must serve: the highest level of the steps that map to it."""
    out: dict[int, int] = {}
    for step, level in plan.rotations.items():
        g = element(step)
        if g != 1:
            out[g] = max(out.get(g, level), level)
    if plan.conjugation:
        out[TWO_N - 1] = TOY_MAX_LEVEL
    return out


def check_keys(params: Parameters, plan: KeyPlan, keys: EvaluationKeys, key_id: bytes,
               expected: dict[int, int]) -> None:
    assert isinstance(keys, EvaluationKeys) and isinstance(keys.galois, GaloisKeys)
    assert keys.galois.elements() == sorted(expected)
    for g, level in expected.items():
        key = keys.galois[g]
        assert isinstance(key, SwitchingKey) and key.kind == "galois" and key.galois_element == g
        assert key.max_level == level and key.key_id == key_id
        assert key.b.shape[1] == level + 1 + len(params.p_primes)     # only as deep as the plan uses it
    if plan.relinearization:
        assert keys.relin.kind == "relin" and keys.relin.max_level == params.max_level
        assert keys.relin.key_id == key_id
    else:
        assert keys.relin is None
    if plan.encapsulation_weight is None:
        assert keys.encapsulation is None
    else:
        assert isinstance(keys.encapsulation, EncapsulationKeys)
        assert keys.encapsulation.weight == plan.encapsulation_weight and keys.encapsulation.key_id == key_id


@given(toy_plans)
def test_evaluation_keys_are_exactly_the_plans(plan):
    kg = KeyGenerator(toy_params(), seed=SEED)
    ticks = []
    keys = kg.evaluation_keys(plan, lambda done, total: ticks.append((done, total)))
    check_keys(toy_params(), plan, keys, kg.secret_key.key_id, expected_elements(plan))
    made = len(keys.galois.elements()) + (keys.relin is not None) + (keys.encapsulation is not None)
    assert ticks == [(i, made) for i in range(1, made + 1)]          # one tick per key, against the true total


def test_evaluation_keys_known_answer():
    params = toy_params()
    kg = KeyGenerator(params, seed=SEED)
    # 0 and SLOTS-equivalent steps share elements: -1 and SLOTS - 1 are one key, at the higher level
    plan = KeyPlan({0: 4, 1: 2, -1: 1, SLOTS - 1: 3, 2: 0}, relinearization=False, conjugation=True)
    keys = kg.evaluation_keys(plan)
    want = {5: 2, pow(5, SLOTS - 1, TWO_N): 3, 25: 0, TWO_N - 1: TOY_MAX_LEVEL}
    check_keys(params, plan, keys, kg.secret_key.key_id, want)
    assert 1 not in keys.galois                                      # no key for the identity
    empty = kg.evaluation_keys(KeyPlan())
    assert empty.galois.elements() == [] and empty.relin is None and empty.encapsulation is None


toy_plans_without_weight = toy_plans.map(lambda p: KeyPlan(p.rotations, p.relinearization, p.conjugation))


@given(toy_plans_without_weight, toy_plans_without_weight)
def test_keys_depend_on_the_plan_not_on_how_it_was_built(pa, pb):
    k1 = KeyGenerator(toy_params(), seed=SEED).evaluation_keys(pa | pb)
    k2 = KeyGenerator(toy_params(), seed=SEED).evaluation_keys(pb | pa)
    assert k1.galois.elements() == k2.galois.elements()
    for g in k1.galois.elements():
        assert k1.galois[g].max_level == k2.galois[g].max_level
        assert k1.galois[g].b.tobytes() == k2.galois[g].b.tobytes()      # same order of generation
    assert (k1.relin is None) == (k2.relin is None)
    if k1.relin is not None:
        assert k1.relin.b.tobytes() == k2.relin.b.tobytes()


def test_evaluation_keys_with_encapsulation_on_the_bootstrapping_preset():
    params = presets.get("INSECURE_BOOT_N12_QP1354_L19_S40", allow_insecure=True)
    kg = KeyGenerator(params, seed=SEED)
    top, low = params.max_level, 2
    plan = KeyPlan({1: top, 2: top, -4: low, 16: 0}, relinearization=True, conjugation=True,
                   encapsulation_weight=32)
    keys = kg.evaluation_keys(plan)
    two_n = 2 * params.n
    want = {pow(5, s % params.slots, two_n): lvl for s, lvl in plan.rotations.items()}
    want[two_n - 1] = top
    assert keys.galois.elements() == sorted(want)
    for g, lvl in want.items():
        assert keys.galois[g].max_level == lvl
    assert keys.galois[pow(5, 16, two_n)].nbytes < keys.galois[5].nbytes
    assert keys.relin is not None and keys.relin.max_level == top
    enc = keys.encapsulation
    assert isinstance(enc, EncapsulationKeys) and enc.weight == 32 and enc.up.max_level == top
    assert enc.down_b.shape == (2, params.n)


@pytest.mark.parametrize("plan", [None, {1: 2}, KeyPlan({1: 2}).to_json(), [KeyPlan()], (KeyPlan(),)])
def test_evaluation_keys_refuse_what_is_not_a_plan(plan):
    with pytest.raises(ParameterError):
        KeyGenerator(toy_params(), seed=SEED).evaluation_keys(plan)


@pytest.mark.parametrize("plan", [KeyPlan({SLOTS: 0}), KeyPlan({1: TOY_MAX_LEVEL + 1}),
                                  KeyPlan(encapsulation_weight=N + 1),
                                  KeyPlan({i: 0 for i in range(MAX_ROTATIONS + 1)})])
def test_evaluation_keys_refuse_an_invalid_plan_before_any_work(plan):
    kg = KeyGenerator(toy_params(), seed=SEED)
    with pytest.raises(ParameterError):
        kg.evaluation_keys(plan)
    # nothing was drawn from the generator's stream: the next key equals a fresh generator's
    assert kg.relin_key().b.tobytes() == KeyGenerator(toy_params(), seed=SEED).relin_key().b.tobytes()


def test_evaluation_keys_refuse_key_switching_without_special_primes():
    kg = KeyGenerator(toy_params(special=False), seed=SEED)
    with pytest.raises(ParameterError):
        kg.evaluation_keys(KeyPlan({1: 0}))
    keys = kg.evaluation_keys(KeyPlan())
    assert keys.galois.elements() == [] and keys.relin is None


def test_errors_are_typed():
    assert issubclass(SerializationError, FheError) and issubclass(ParameterError, FheError)


def test_review_findings_are_refused_with_typed_errors():
    # rotations that are not a mapping, steps and levels that are not integers, even through rotations_at
    for bad in (None, 5, "ab", [(1, 2)]):
        with pytest.raises(ParameterError):
            KeyPlan(bad)
    for steps, level in (([1.5], 2), ([True], 1), (["7"], 3), ([1], 2.7), ([1], "3"), ([1], True)):
        with pytest.raises(ParameterError):
            KeyPlan.rotations_at(steps, level)
    assert KeyPlan.rotations_at([np.int64(3)], np.int64(2)).rotations == {3: 2}
    with pytest.raises(ParameterError):
        KeyPlan().union(5)
    # a wire format refuses repeated fields and steps instead of keeping the last one
    for text in ('{"rotations":{"1":5,"1":0},"relinearization":false,"conjugation":false,'
                 '"encapsulation_weight":null}',
                 '{"rotations":{},"rotations":{},"relinearization":false,"conjugation":false,'
                 '"encapsulation_weight":null}'):
        with pytest.raises(SerializationError):
            KeyPlan.from_json(text)
    with pytest.raises(SerializationError):          # the bound counts UTF-8 bytes, not characters
        KeyPlan.from_json("\u00e9" * (MAX_JSON_BYTES // 2 + 1))
