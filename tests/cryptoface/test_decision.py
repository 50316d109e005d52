"""The encrypted decision: its plaintext twin against the exact rule (hypothesis), and on a toy ring (the
secret-key bootstrapper double for its 8-slot bootstrap) against the twin: same, different, invalid; zeros
outside slot 0; the noise flooding."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoface.encrypted.decision import DECISION_SLOTS, Decision, DecisionOutcome, flood
from cryptoface.errors import ModelError
from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
from fhe_ckks.errors import LevelError, ParameterError, ShapeError

PRESET = "INSECURE_N12_QP900_L18_S40"
DIM = 8


@lru_cache(maxsize=None)
def decision(c: float = 0.3) -> Decision:
    return Decision(DIM, c)


@lru_cache(maxsize=None)
def toy():
    params = presets.get(PRESET, allow_insecure=True)
    kg = KeyGenerator(params, seed=bytes(range(32)))
    keys = kg.evaluation_keys(decision().key_plan(6, params.max_level))   # the decision's own plan suffices
    ev = Evaluator(params, keys.relin, keys.galois)
    return (params, ev, Encoder(params), Encryptor(params, kg.secret_key, seed=bytes(32)),
            Decryptor(params, kg.secret_key), SecretKeyBootstrapper(params, kg.secret_key),
            Encryptor(params, kg.public_key()))


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


vectors = st.lists(st.floats(-1, 1), min_size=DIM, max_size=DIM).filter(lambda v: np.linalg.norm(v) > 0.1)


@settings(max_examples=60, deadline=None)
@given(vectors, vectors, st.floats(0.7, 1.3), st.floats(0.7, 1.3), st.floats(-0.5, 0.5))
def test_the_plaintext_twin_reads_the_exact_rule_outside_the_margins(p, t, sp, st_, c):
    d = decision(round(c, 3))
    p, t = unit(p) * np.sqrt(sp), unit(t) * np.sqrt(st_)
    x = d.inputs_plain(p, t)
    assert np.all(np.abs(x) <= 1)                    # every sign input in the sign's domain
    if np.min(np.abs(x[:5])) < d.sign.margin:
        return                                       # within a margin: the twin may read either way
    v = d.forward_plain(p, t)
    want = {"same": 1.0, "different": -1.0, "invalid": 0.0}[d.exact(p, t)]
    assert v == pytest.approx(want, abs=2**-10)
    if d.exact(p, t) != "invalid":
        assert (d.exact(p, t) == "same") == (unit(p) @ unit(t) >= d.c)


def test_the_inputs_stay_in_the_signs_domain_whenever_the_norm_checks_are_in_theirs():
    d = decision(-0.6)
    for scale in (0.0, 2.0):
        x = d.inputs_plain(np.sqrt(scale) * unit(np.ones(DIM)), -np.sqrt(scale) * unit(np.ones(DIM)))
        assert np.all(np.abs(x) <= 1 + 1e-12)


@pytest.mark.parametrize("case", range(6))
def test_encrypted_outcomes_equal_the_exact_rule(case):
    params, ev, enc, encryptor, decryptor, boot, _ = toy()
    d = decision()
    rng = np.random.default_rng(case)
    p, t = unit(rng.normal(size=DIM)), unit(rng.normal(size=DIM))
    if case == 1:
        t = unit(p + 0.3 * t)                        # a likely match
    if case == 4:
        p = p * 1.1                                  # a hint that does not normalize: |p|^2 = 1.21
    if case == 5:
        t = t * 0.9
    ct = lambda v: encryptor.encrypt(enc.encode(np.tile(v, params.slots // DIM), level=5))  # noqa: E731
    out = d.forward(ev, enc, ct(p), ct(t), boot)
    assert out.slots == DECISION_SLOTS and out.level == params.max_level - d.post_depth()
    values = np.real(enc.decode(decryptor.decrypt(out)))
    want = d.exact(p, t)
    assert DecisionOutcome(values[0]).kind == want
    assert values[0] == pytest.approx(d.forward_plain(p, t), abs=2**-8)
    assert np.max(np.abs(values[1:])) < 2**-8       # nothing but the answer: the mask zeroes the other slots
    assert want == ("invalid" if case >= 4 else "same" if p @ t >= d.c else "different")


def test_flooding_adds_noise_of_the_stated_size_and_needs_the_public_key():
    params, ev, enc, encryptor, decryptor, _, pk = toy()
    zero = encryptor.encrypt(enc.encode(np.zeros(DECISION_SLOTS), level=0, slots=DECISION_SLOTS))
    samples = np.concatenate([np.real(enc.decode(decryptor.decrypt(flood(ev, pk, zero)))) for _ in range(8)])
    assert 2**-6 < np.std(samples) < 2**-2          # about 2^-4: decoded with thresholds at +-1/2
    assert np.max(np.abs(samples)) < 0.5
    with pytest.raises(ParameterError, match="public key"):
        flood(ev, encryptor, zero)


def test_bad_arguments_and_levels_are_refused():
    with pytest.raises(ModelError):
        Decision(0, 0.2)
    with pytest.raises(ModelError):
        Decision(8, 1.5)
    params, ev, enc, encryptor, _, _, _ = toy()
    low = encryptor.encrypt(enc.encode(np.zeros(params.slots), level=1))
    with pytest.raises(LevelError):
        decision().prepare(ev, enc, low, low)
    with pytest.raises(LevelError):
        decision().finish(ev, enc, low.with_metadata(slots=DECISION_SLOTS))


def test_the_embedding_layout_and_scale():
    from cryptoface.encrypted.matching import embedding_scale, period_of, sum_steps
    from cryptoface.model import NormPolynomial

    assert [period_of(d) for d in (1, 2, 3, 8, 9, 256)] == [1, 2, 4, 8, 16, 256]
    assert sorted(sum_steps(8)) == [1, 2, 4]
    poly = NormPolynomial([1.0, -0.5, 0.25], 2.0, 8.0)
    assert embedding_scale(poly) == pytest.approx(0.5)         # 1 / sqrt(sqrt(2 * 8))
    for bad in (0, -3, True, 2.0):
        with pytest.raises(ModelError):
            period_of(bad)
    with pytest.raises(ModelError):
        embedding_scale(NormPolynomial([1.0, 0.0, 0.0], 4.0, 4.0))


# ---- 1:N: the enrollment check and the packed gallery ---------------------------------------------------------


@lru_cache(maxsize=None)
def gallery_toy():
    from cryptoface.encrypted.decision import GalleryDecision, TemplateCheck
    from cryptoface.encrypted.matching import spread_transform
    from fhe_ckks.rlwe.keyplan import KeyPlan

    params = presets.get(PRESET, allow_insecure=True)
    gallery, check = GalleryDecision(DIM, params.slots, 0.3), TemplateCheck(DIM, params.slots)
    spread = spread_transform(DIM, params.slots)
    top = 8
    kg = KeyGenerator(params, seed=bytes(range(32)))
    plan = KeyPlan.merge([KeyPlan.rotations_at(spread.rotation_steps(), top, relinearization=True),
                          gallery.key_plan(top - 1, params.max_level), check.key_plan(top - 1, params.max_level)])
    keys = kg.evaluation_keys(plan)
    ev = Evaluator(params, keys.relin, keys.galois)
    return (params, ev, Encoder(params), Encryptor(params, kg.secret_key, seed=bytes(32)),
            Decryptor(params, kg.secret_key), SecretKeyBootstrapper(params, kg.secret_key), gallery, check, spread, top)


@settings(max_examples=40, deadline=None)
@given(vectors, st.lists(vectors, min_size=1, max_size=6), st.floats(0.8, 1.2), st.floats(-0.5, 0.5))
def test_the_gallery_twin_reads_the_exact_rule(p, ts, sp, c):
    from cryptoface.encrypted.decision import GalleryDecision

    g = GalleryDecision(DIM, 2048, round(c, 3))
    p = unit(p) * np.sqrt(sp)
    ts = [unit(t) for t in ts]
    x = g.inputs_plain(p, ts)
    assert np.all(np.abs(x) <= 1)                     # the sign's domain wherever the probe's check is in its own
    out = g.exact(p, ts, [4.0] * len(ts))
    valid = abs(sp - 1) < g.band
    for j, t in enumerate(ts):
        if not valid:
            assert out[j] == "invalid"
        else:
            assert out[j] == ("same" if p @ t >= g.c else "different")
    assert g.exact(p, ts, [0.0] * len(ts)) == ["invalid"] * len(ts)


def test_spread_then_check_then_gallery_decisions_equal_the_exact_rule():
    params, ev, enc, encryptor, decryptor, boot, gallery, check, spread, top = gallery_toy()
    from cryptoface.encrypted.matching import spread_plain

    rng = np.random.default_rng(4)
    p = unit(rng.normal(size=DIM))
    ts = [unit(p + 0.2 * rng.normal(size=DIM)), unit(rng.normal(size=DIM)), 1.3 * unit(rng.normal(size=DIM)),
          unit(-p + 0.1 * rng.normal(size=DIM)), 0.8 * unit(p)]
    q = spread.evaluate(ev, enc, encryptor.encrypt(enc.encode(np.tile(p, params.slots // DIM), level=top)),
                        cache=False)
    got = np.real(enc.decode(decryptor.decrypt(q)))
    assert np.max(np.abs(got - spread_plain(p, DIM, params.slots))) < 2**-20
    templates = [encryptor.encrypt(enc.encode(spread_plain(t, DIM, params.slots), level=q.level)) for t in ts]
    checks = [check.finish(ev, enc, boot.bootstrap(check.prepare(ev, enc, t))) for t in templates]
    for ct, t in zip(checks, ts):
        values = np.real(enc.decode(decryptor.decrypt(ct)))
        assert ct.slots == params.slots and np.max(np.abs(values - check.value_plain(t))) < 2**-8
    # a full group: the five above at slots in each of its batches (the last one beside the probe's checks),
    # random templates with a valid check everywhere else
    assert gallery.width == 4 * gallery.batch == 1024 and gallery.capacity == 1022
    places = [0, 1, gallery.batch + 44, 2 * gallery.batch + 3, gallery.capacity - 1]
    group = [unit(rng.normal(size=DIM)) for _ in range(gallery.capacity)]
    group_cts, group_checks = [], []
    four = encryptor.encrypt(enc.encode(np.full(params.slots, 4.0), level=checks[0].level))
    for t in group:
        group_cts.append(encryptor.encrypt(enc.encode(spread_plain(t, DIM, params.slots), level=q.level)))
        group_checks.append(four)
    for place, t, ct, f in zip(places, ts, templates, checks):
        group[place], group_cts[place], group_checks[place] = t, ct, f
    x = gallery.prepare(ev, enc, q, group_cts)
    assert x.slots == gallery.width // 2 and x.level == q.level - gallery.pre_depth()
    xs = enc.decode(decryptor.decrypt(x))                       # x / 2, two reals to a complex slot
    assert np.max(np.abs(2 * np.concatenate([xs.real, xs.imag]) - gallery.inputs_plain(p, group))) < 2**-16
    unpacking = boot.unpacking()
    xb = unpacking.bootstrap(x)
    assert xb.slots == gallery.width
    with pytest.raises(ShapeError):
        gallery.finish(ev, enc, boot.bootstrap(x), group_checks)   # not unpacked
    out = gallery.finish(ev, enc, xb, group_checks)
    values = np.real(enc.decode(decryptor.decrypt(out)))
    want = gallery.exact(p, group, [check.value_plain(t) for t in group])
    assert [DecisionOutcome(values[j]).kind for j in places] == [want[j] for j in places] == \
        ["same", "different", "invalid", "different", "invalid"]
    band = gallery.sign.margin * (2.0 + abs(gallery.c))
    outside = [j for j, t in enumerate(group) if abs(p @ t - gallery.c) > band]
    assert len(outside) > 1000 and {"same", "different"} <= {want[j] for j in outside}
    assert [DecisionOutcome(values[j]).kind for j in outside] == [want[j] for j in outside]
    # fewer templates than a group: no template there, 0
    out = gallery.finish(ev, enc, unpacking.bootstrap(gallery.prepare(ev, enc, q, templates)), checks)
    values = np.real(enc.decode(decryptor.decrypt(out)))
    assert [DecisionOutcome(v).kind for v in values[:len(ts)]] == ["same", "different", "invalid", "different",
                                                                   "invalid"]
    assert np.max(np.abs(values[len(ts):])) < 2**-8
    # a probe off the unit sphere: every decision invalid
    q2 = spread.evaluate(ev, enc, encryptor.encrypt(enc.encode(np.tile(1.2 * p, params.slots // DIM), level=top)),
                         cache=False)
    out = gallery.finish(ev, enc, unpacking.bootstrap(gallery.prepare(ev, enc, q2, templates)), checks)
    assert np.max(np.abs(np.real(enc.decode(decryptor.decrypt(out))))) < 2**-8


def test_gallery_bad_batches_and_levels_are_refused():
    params, ev, enc, encryptor, _, _, gallery, check, _, _ = gallery_toy()
    from cryptoface.encrypted.decision import GalleryDecision

    low = encryptor.encrypt(enc.encode(np.zeros(params.slots), level=2))
    with pytest.raises(ShapeError):
        gallery.prepare(ev, enc, low, [])
    with pytest.raises(ShapeError):
        gallery.prepare(ev, enc, low, [low] * (gallery.capacity + 1))
    with pytest.raises(LevelError):
        gallery.prepare(ev, enc, low, [low])
    with pytest.raises(LevelError):
        check.prepare(ev, enc, encryptor.encrypt(enc.encode(np.zeros(params.slots), level=1)))
    with pytest.raises(ModelError):
        GalleryDecision(DIM, 16, 0.2)                   # 16 slots hold 2 templates
    with pytest.raises(ModelError):
        GalleryDecision(DIM, params.slots, 1.2)


@pytest.mark.slow
def test_a_gallery_group_at_the_default_preset_with_the_real_bootstrap():
    """510 templates around a probe at N = 2^16 (N16_QP1762_L29_S38), the real bootstrap (256 complex slots
    unpacked into 512 real ones): every decision outside the sign's margin band equals the exact rule (the
    imaginary part of the bootstrap's error would break them without the real-part step; about 4 minutes)."""
    from cryptoface.encrypted.decision import GalleryDecision, gallery_bootstrap_config
    from cryptoface.encrypted.matching import spread_plain
    from fhe_ckks.bootstrap import Bootstrapper
    from fhe_ckks.bootstrap.bootstrapper import BootstrapPlan
    from fhe_ckks.rlwe.keyplan import KeyPlan

    params = presets.get("N16_QP1762_L29_S38")
    dim, slots, level = 256, params.slots, 4
    g = GalleryDecision(dim, slots, 0.2279)
    config = gallery_bootstrap_config(g.width)
    plan = BootstrapPlan.build(params, config)
    kg = KeyGenerator(params)
    keys = kg.evaluation_keys(KeyPlan.merge([g.key_plan(level, params.max_level - plan.depth), plan.key_plan()]))
    ev, enc = Evaluator(params, keys.relin, keys.galois), Encoder(params)
    encryptor, decryptor = Encryptor(params, kg.secret_key), Decryptor(params, kg.secret_key)
    boot = Bootstrapper(params, keys.relin, keys.galois, config, keys.encapsulation)
    rng = np.random.default_rng(0)
    p = unit(rng.normal(size=dim))
    ts = [unit(p + rng.normal(size=dim) * (1 + 3 * (j % 3)) * 0.9 / np.sqrt(dim)) for j in range(g.capacity)]
    q = encryptor.encrypt(enc.encode(spread_plain(p, dim, slots), level=level))
    templates = [encryptor.encrypt(enc.encode(spread_plain(t, dim, slots), level=level)) for t in ts]
    checks = [encryptor.encrypt(enc.encode(np.full(slots, 4.0), level=level))] * len(ts)
    packed = [(g.pack(ev, enc, templates[i:i + g.batch]), len(templates[i:i + g.batch]))
              for i in range(0, len(templates), g.batch)]
    seconds: dict[str, float] = {}
    out = g.forward(ev, enc, q, packed, g.combine_checks(ev, enc, checks), boot, seconds)
    print(seconds)
    values = np.real(enc.decode(decryptor.decrypt(out)))
    want = g.exact(p, ts, [4.0] * len(ts))
    band = g.sign.margin * (2.0 + abs(g.c))
    outside = [j for j, t in enumerate(ts) if abs(p @ t - g.c) > band]
    assert len(outside) > 400 and {"same", "different"} <= set(want)
    assert [DecisionOutcome(values[j]).kind for j in outside] == [want[j] for j in outside]


def test_a_gallery_group_is_a_power_of_two_of_batches_that_leaves_the_bootstrap_replicas():
    from cryptoface.encrypted.decision import GALLERY_BATCHES, gallery_bootstrap_config, gallery_width

    assert GALLERY_BATCHES == 4 and gallery_width(256, 2**15) == 512      # the default preset: 510 names
    assert gallery_width(8, 2048) == 1024 and gallery_width(8, 2048, 2) == 512
    assert gallery_width(4, 2048) == 1024                 # 512 per ciphertext, capped at half the slots: 2 batches
    for bad in (1, 3, True, 2.0):
        with pytest.raises(ModelError):
            gallery_width(8, 2048, bad)
    with pytest.raises(ModelError):
        gallery_width(2, 2048)                            # one batch in half the slots: no complex packing
    config = gallery_bootstrap_config(512)
    assert config.slots == 256 and config.unpack and config.retrace and config.packed
