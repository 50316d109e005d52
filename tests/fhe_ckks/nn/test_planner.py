"""Bootstrap placement and the encrypted-model wrapper.

``plan_bootstraps`` is checked against a brute-force reference over every placement of bootstraps in
short chains of fake layers (validity, minimal count, each bootstrap as late as possible, the levels
along the way); ``EncryptedModel`` against the union of its layers' key plans at the levels they run
at, and end to end on a toy ring with real layers and the secret-key bootstrapper double.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
from fhe_ckks.errors import LevelError
from fhe_ckks.nn import EncryptedModel, plan_bootstraps
from fhe_ckks.nn.layers import Conv2d, Quadratic
from fhe_ckks.nn.layout import TensorLayout
from fhe_ckks.nn.planner import Plan, run_plan
from fhe_ckks.rlwe.keyplan import KeyPlan

PRESET = "INSECURE_N10_QP380_L5_S40"


# ---- fakes ------------------------------------------------------------------------------------------------


@dataclass
class FakeCt:
    level: int


@dataclass
class FakeLayer:
    """Just what the planner reads: depth, key switches, rotation steps, key plan, diagonals, name; its
    ``forward`` on a :class:`FakeCt` checks the level and records the call."""

    d: int
    steps: tuple[int, ...] = ()
    relin: bool = False
    diagonals: int = 0
    name: str = "fake"
    trace: list = field(default_factory=list, repr=False)

    def depth(self) -> int:
        return self.d

    def rotation_steps(self) -> list[int]:
        return list(self.steps)

    def key_switches(self) -> int:
        return len(self.steps) + int(self.relin)

    def key_plan(self, level: int) -> KeyPlan:
        return KeyPlan.rotations_at(self.steps, level, relinearization=self.relin)

    @property
    def diagonal_count(self) -> int:
        return self.diagonals

    def forward(self, evaluator, encoder, ct):
        assert ct.level >= self.d, f"{self.name} run at level {ct.level} < its depth {self.d}"
        self.trace.append((self.name, ct.level))
        return FakeCt(ct.level - self.d)


@dataclass
class FakeBootstrapper:
    output_level: int
    trace: list = field(default_factory=list, repr=False)
    calls: int = 0

    def depth(self) -> int:
        return 99

    def bootstrap(self, ct):
        self.calls += 1
        self.trace.append(("bootstrap", ct.level))
        return FakeCt(self.output_level)


def fake_chain(depths, trace=None):
    trace = [] if trace is None else trace
    return [FakeLayer(d, name=f"L{i}", trace=trace) for i, d in enumerate(depths)]


# ---- a plain reference --------------------------------------------------------------------------------------


def simulate(depths, start, out, reserve, boots):
    """Levels before and after each layer when bootstrapping (to ``out``) in front of the layers in ``boots``;
    None when some layer does not fit or fewer than ``reserve`` levels remain at the end."""
    level, before, after = start, [], []
    for i, d in enumerate(depths):
        if i in boots:
            if out is None:
                return None
            level = out
        before.append(level)
        level -= d
        if level < (reserve if i == len(depths) - 1 else 0):
            return None
        after.append(level)
    if not depths and level < reserve:      # an empty chain keeps its start level in reserve
        return None
    return before, after


def valid_placements(depths, start, out, reserve):
    n = len(depths)
    sizes = range(n + 1) if out is not None else [0]
    return [set(c) for k in sizes for c in itertools.combinations(range(n), k)
            if simulate(depths, start, out, reserve, set(c)) is not None]


chains = st.lists(st.integers(0, 5), max_size=8)


@given(chains, st.integers(0, 16), st.none() | st.integers(0, 10), st.integers(0, 3))
def test_plan_bootstraps_against_a_brute_force_reference(depths, start, out, reserve):
    layers = fake_chain(depths)
    valid = valid_placements(depths, start, out, reserve)
    if not valid:
        with pytest.raises(LevelError):
            plan_bootstraps(layers, start, out, reserve)
        return
    plan = plan_bootstraps(layers, start, out, reserve)
    boots = plan.bootstrap_before
    assert list(boots) == sorted(set(boots)) and all(0 <= i < len(depths) for i in boots)
    # valid, with the levels of the reference
    before, after = simulate(depths, start, out, reserve, set(boots))
    assert list(plan.levels_after) == after
    assert plan.levels_before(out) == before
    assert plan.output_level == (after[-1] if after else start)
    assert plan.start_level == start
    # as few bootstraps as any placement
    assert plan.bootstraps == len(boots) == min(len(v) for v in valid)
    # each as late as possible: without it, its layer (or the reserve) would not fit
    for i in boots:
        level = before[i - 1] - depths[i - 1] if i else start
        need = depths[i] + (reserve if i == len(depths) - 1 else 0)
        assert need > level
    # counts
    assert plan.depth == sum(depths)
    assert plan.counts == {"key_switches": 0, "bootstraps": len(boots), "depth": sum(depths)}


@given(chains.filter(bool), st.integers(0, 16), st.integers(0, 10), st.integers(0, 3))
def test_run_follows_the_plan(depths, start, out, reserve):
    """run_plan bootstraps exactly in front of the planned layers and runs each layer at its planned level."""
    trace: list = []
    layers = fake_chain(depths, trace)
    boot = FakeBootstrapper(out, trace)
    try:
        model = EncryptedModel(layers, start, boot, reserve)
    except LevelError:
        assert not valid_placements(depths, start, out, reserve)
        return
    plan = model.plan
    result = model.run(None, None, FakeCt(start))
    assert result.level == plan.output_level
    assert boot.calls == plan.bootstraps
    want, level = [], start
    for i, name_level in enumerate(plan.levels_before(out)):
        if i in plan.bootstrap_before:
            want.append(("bootstrap", level))
        want.append((f"L{i}", name_level))
        level = plan.levels_after[i]
    assert trace == want
    # a higher ciphertext is accepted (the plan starts at start_level regardless), a lower one is not
    assert model.run(None, None, FakeCt(start + 3)).level >= plan.output_level
    if start > 0:
        with pytest.raises(LevelError):
            model.run(None, None, FakeCt(start - 1))


# ---- known answers --------------------------------------------------------------------------------------


def test_no_bootstrap_when_the_chain_fits():
    for out in (None, 0, 3):
        plan = plan_bootstraps(fake_chain([1, 2, 0, 3]), 6, out)
        assert plan.bootstrap_before == () and plan.bootstraps == 0
        assert plan.levels_after == (5, 3, 3, 0) and plan.output_level == 0
    empty = plan_bootstraps([], 4, None, reserve=2)
    assert empty.levels_after == () and empty.output_level == 4 and empty.bootstraps == 0 and empty.depth == 0


def test_bootstraps_are_placed_as_late_as_possible():
    # start at 5, bootstraps give 4: 5 -2-> 3 -2-> 1 | boot 4 -2-> 2 -1-> 1 -1-> 0 | boot 4 -3-> 1
    plan = plan_bootstraps(fake_chain([2, 2, 2, 1, 1, 3]), 5, 4)
    assert plan.bootstrap_before == (2, 5)
    assert plan.levels_after == (3, 1, 2, 1, 0, 1)
    assert plan.levels_before(4) == [5, 3, 4, 2, 1, 4]
    assert plan.output_level == 1 and plan.depth == 11
    # a layer that exactly uses up the levels left needs no bootstrap
    assert plan_bootstraps(fake_chain([3, 2]), 5, 4).bootstrap_before == ()
    assert plan_bootstraps(fake_chain([3, 3]), 5, 4).bootstrap_before == (1,)


def test_reserve_forces_a_bootstrap_before_the_last_layer():
    layers = fake_chain([2, 2])
    assert plan_bootstraps(layers, 5, 4).bootstrap_before == ()
    assert plan_bootstraps(layers, 5, 4, reserve=1).bootstrap_before == ()        # 5 -> 3 -> 1
    plan = plan_bootstraps(layers, 5, 4, reserve=2)                                # 1 < 2: bootstrap first
    assert plan.bootstrap_before == (1,) and plan.output_level == 2
    with pytest.raises(LevelError):
        plan_bootstraps(layers, 5, 4, reserve=3)       # 4 - 2 < 3 even right after a bootstrap
    with pytest.raises(LevelError):
        plan_bootstraps(layers, 5, None, reserve=2)    # no bootstrapper to make room
    # the reserve concerns the last layer only
    assert plan_bootstraps(fake_chain([2, 0]), 2, 3, reserve=1).bootstrap_before == (1,)


def test_level_errors():
    with pytest.raises(LevelError):
        plan_bootstraps(fake_chain([2, 5]), 6, 4)          # the second layer needs more than a bootstrap gives
    with pytest.raises(LevelError):
        plan_bootstraps(fake_chain([1, 1, 1]), 2, None)    # no bootstrapper
    with pytest.raises(LevelError):
        plan_bootstraps(fake_chain([3]), 2, 2)
    with pytest.raises(LevelError):
        EncryptedModel(fake_chain([1, 1, 1]), 2)
    # a deep first layer fits when the start level is high enough, whatever the bootstrapper gives
    assert plan_bootstraps(fake_chain([6, 1]), 7, 2).bootstrap_before == ()


def test_run_plan_without_a_bootstrapper_refuses_a_plan_that_bootstraps():
    layers = fake_chain([1, 1])
    plan = Plan((1,), (0, 2), 1)
    with pytest.raises(LevelError):
        run_plan(layers, plan, None, None, FakeCt(1), None)
    seconds: dict[str, float] = {}
    out = run_plan(layers, plan, None, None, FakeCt(1), FakeBootstrapper(3), seconds)
    assert out.level == 2
    assert set(seconds) == {"L0", "L1", "bootstrap before L1"} and all(v >= 0 for v in seconds.values())


# ---- the model's key plan and costs ----------------------------------------------------------------------


layer_specs = st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(-8, 8), max_size=4, unique=True),
                                 st.booleans(), st.integers(0, 50)), min_size=1, max_size=7)


@given(layer_specs, st.integers(3, 12), st.integers(3, 8), st.integers(0, 2))
def test_model_key_plan_is_the_union_at_the_levels_layers_start_at(specs, start, out, reserve):
    layers = [FakeLayer(d, tuple(steps), relin, diag, name=f"L{i}") for i, (d, steps, relin, diag) in enumerate(specs)]
    depths = [d for d, *_ in specs]
    try:
        model = EncryptedModel(layers, start, FakeBootstrapper(out), reserve)
    except LevelError:
        assert not valid_placements(depths, start, out, reserve)
        return
    before, after = simulate(depths, start, out, reserve, set(model.plan.bootstrap_before))
    want_rot: dict[int, int] = {}
    for (d, steps, relin, _), level in zip(specs, before):
        for s in steps:
            want_rot[s] = max(want_rot.get(s, level), level)
    kp = model.key_plan()
    assert dict(kp.rotations) == want_rot
    assert kp.relinearization == any(relin for _, _, relin, _ in specs)
    assert not kp.conjugation and kp.encapsulation_weight is None
    assert kp == KeyPlan.merge(layer.key_plan(level) for layer, level in zip(layers, before))
    counts = model.counts()
    assert counts == {"key_switches": sum(len(s) + r for _, s, r, _ in specs), "bootstraps": model.plan.bootstraps,
                      "depth": sum(depths), "galois_keys": len(want_rot), "start_level": start,
                      "output_level": after[-1]}
    assert model.diagonal_count == sum(diag for *_, diag in specs)
    costs = model.layer_costs()
    assert [c["layer"] for c in costs] == [f"L{i}" for i in range(len(specs))]
    assert [c["level"] for c in costs] == before
    assert [c["bootstrap_before"] for c in costs] == [i in model.plan.bootstrap_before for i in range(len(specs))]
    assert [c["depth"] for c in costs] == depths
    assert [c["key_switches"] for c in costs] == [len(s) + r for _, s, r, _ in specs]
    assert [c["diagonals"] for c in costs] == [diag for *_, diag in specs]


def test_model_key_plan_known_answer():
    # 6 -1-> 5 -3-> 2 | boot 4 -3-> 1 -1-> 0: step 1 at 6 and 4 (kept at 6), step 2 only after the bootstrap
    layers = [FakeLayer(1, (1,), name="a"), FakeLayer(3, (), True, name="b"), FakeLayer(3, (1, 2), name="c"),
              FakeLayer(1, (-3,), name="d")]
    model = EncryptedModel(layers, 6, FakeBootstrapper(4))
    assert model.plan.bootstrap_before == (2,)
    assert model.key_plan() == KeyPlan({1: 6, 2: 4, -3: 1}, relinearization=True)
    assert [c["level"] for c in model.layer_costs()] == [6, 5, 4, 1]
    assert model.counts()["output_level"] == 0 and model.counts()["galois_keys"] == 3
    assert [c["bootstrap_before"] for c in model.layer_costs()] == [False, False, True, False]
    # layers without a name are named by their index
    model = EncryptedModel([Bare(), Bare()], 2)
    assert [c["layer"] for c in model.layer_costs()] == ["layer 0", "layer 1"]


class Bare:
    """A layer with no name attribute."""

    def depth(self):
        return 1

    def key_switches(self):
        return 0

    def key_plan(self, level):
        return KeyPlan()

    diagonal_count = 0


# ---- end to end on a toy ring ------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def keys():
    params = presets.get(PRESET, allow_insecure=True)
    return params, KeyGenerator(params, seed=bytes(range(32)))


def real_chain(rng):
    """Conv (stride 2, folded) -> HerPN -> conv -> HerPN -> conv -> HerPN -> conv: depth 7 on 5 levels."""
    lin = TensorLayout.stacked(1, 2, 8, 8)
    mid = TensorLayout.multiplexed(1, 4, 4, 4, 2)
    small = lambda *shape, s=0.25: rng.normal(size=shape) * s  # noqa: E731
    chain = [Conv2d(lin, mid, small(4, 2, 3, 3), stride=2, bias=small(4), name="conv0")]
    for k in range(3):
        chain.append(Quadratic(mid, small(1, 4, s=0.5), small(1, 4, s=0.2), name=f"herpn{k}"))
        chain.append(Conv2d(mid, mid, small(4, 4, 3, 3, s=0.2), name=f"conv{k + 1}"))
    assert chain[0].fold_steps                             # a rotation one level below the layer's start
    return lin, mid, chain


@pytest.mark.parametrize("reserve, bootstraps", [(0, 1), (2, 2)])
def test_encrypted_model_runs_a_chain_through_the_secret_key_bootstrapper(reserve, bootstraps):
    params, kg = keys()
    rng = np.random.default_rng(11)
    lin, mid, chain = real_chain(rng)
    boot = SecretKeyBootstrapper(params, kg.secret_key, output_level=3)
    model = EncryptedModel(chain, params.max_level, boot, reserve=reserve)
    plan = model.plan
    assert plan.bootstraps == bootstraps and plan.depth == 7
    assert plan.output_level >= reserve
    # keys made from the model's plan suffice: each Galois key only as deep as the plan says
    kp = model.key_plan()
    assert kp.relinearization and max(kp.rotations.values()) == params.max_level
    levels = plan.levels_before(boot.output_level)
    assert kp == KeyPlan.merge(layer.key_plan(level) for layer, level in zip(chain, levels))
    fold = chain[0].fold_steps[0]
    assert fold not in chain[0].transform.rotation_steps()
    assert kp.rotations[fold] == params.max_level - 1                # the fold runs after conv0's rescale
    assert min(kp.rotations.values()) <= boot.output_level          # the convs after a bootstrap, lower
    ek = kg.evaluation_keys(kp)
    ev = Evaluator(params, ek.relin, ek.galois)
    enc = Encoder(params)
    x = rng.uniform(-1, 1, lin.shape)
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(lin.pack(x, params.slots)))
    seconds: dict[str, float] = {}
    out = model.run(ev, enc, ct, seconds)
    assert boot.calls == plan.bootstraps
    assert out.level == plan.output_level
    assert sum(k.startswith("bootstrap before") for k in seconds) == plan.bootstraps
    got = mid.unpack(np.real(enc.decode(Decryptor(params, kg.secret_key).decrypt(out))))
    want = x
    for layer in chain:
        want = layer.forward_plain(want)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < 2**-18, f"relative error 2^{np.log2(err):.1f}"
    # a ciphertext below the start level is refused before any work
    calls = boot.calls
    with pytest.raises(LevelError):
        model.run(ev, enc, ev.drop_level(ct, 1))
    assert boot.calls == calls


def test_keys_of_a_lower_plan_do_not_serve_the_chain():
    """The key plan is tight: keys made one level too shallow for the first layer fail on it."""
    params, kg = keys()
    rng = np.random.default_rng(12)
    lin, mid, chain = real_chain(rng)
    model = EncryptedModel(chain[:2], params.max_level)
    kp = model.key_plan()
    shallow = KeyPlan({s: min(level, params.max_level - 1) for s, level in kp.rotations.items()},
                      relinearization=True)
    ek = kg.evaluation_keys(shallow)
    enc = Encoder(params)
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(lin.pack(rng.uniform(-1, 1, lin.shape),
                                                                        params.slots)))
    with pytest.raises(LevelError):
        model.run(Evaluator(params, ek.relin, ek.galois), enc, ct)


def test_plans_that_would_go_below_level_zero_are_refused():
    from fhe_ckks.errors import ParameterError

    with pytest.raises(ParameterError):
        plan_bootstraps(fake_chain([2]), 1, None, reserve=-1)
    with pytest.raises(ParameterError):
        plan_bootstraps(fake_chain([-2]), 0, None)
    with pytest.raises(ParameterError):
        plan_bootstraps(fake_chain([1]), -1, None)
    with pytest.raises(LevelError):
        plan_bootstraps([], 0, None, reserve=5)


# ---- bootstraps placed by the network's design (fhe_ckks.nn.layers.Bootstrap) ------------------------------


def test_a_bootstrap_inside_a_residual_branch_runs_where_the_design_puts_it():
    """MPCNN's placement: a bootstrap in the middle of a block's body, the shortcut kept at its own level.
    PRESET has 5 levels: conv0 (1) -> [conv (1) | boot -> 3 | quadratic (1) -> conv (1)] + zero-pad (1) ->
    quadratic (1); without the inner bootstrap the block would need more than the 4 levels left."""
    from fhe_ckks.nn.layers import Bootstrap, ChannelQuadratic, Residual, Sequential, ZeroPadShortcut

    params, kg = keys()
    rng = np.random.default_rng(5)
    lin = TensorLayout.stacked(1, 2, 8, 8)
    mid = TensorLayout.stacked(1, 2, 8, 8)
    out = TensorLayout.multiplexed(1, 4, 4, 4, 2)
    boot = SecretKeyBootstrapper(params, kg.secret_key, output_level=3)
    small = lambda *shape, s=0.3: rng.normal(size=shape) * s  # noqa: E731
    body = Sequential([Conv2d(mid, out, small(4, 2, 3, 3), stride=2, name="conv1"),
                       ChannelQuadratic(out, small(1, 4), 1.0, small(1, 4), name="act1"),
                       Bootstrap(out, boot, name="boot1"),
                       ChannelQuadratic(out, small(1, 4), 1.0, small(1, 4), name="act2"),
                       Conv2d(out, out, small(4, 4, 3, 3), name="conv2")])
    chain = [Conv2d(lin, mid, small(2, 2, 3, 3), name="conv0"),
             Residual(body, ZeroPadShortcut(mid, out, 2), name="block"),
             ChannelQuadratic(out, 0.2, 1.0, 0.0, name="act3")]
    # levels: 5 -> 4 | conv1 3, act1 1, boot 3, act2 1, conv2 0; shortcut 3 | min 0 -> act3 does not fit
    assert body.level_after(4) == 0 and chain[1].level_after(4) == 0 and body.bootstraps() == 1
    with pytest.raises(LevelError):
        EncryptedModel(chain, params.max_level)                   # no bootstrapper for the last layer
    model = EncryptedModel(chain, params.max_level, boot)
    plan = model.plan
    assert plan.bootstrap_before == (2,) and plan.bootstraps == 2 and plan.inner_bootstraps == 1
    assert plan.levels_after == (4, 0, 1) and model.counts()["bootstraps"] == 2
    kp = model.key_plan()
    assert kp == KeyPlan.merge([chain[0].key_plan(5), body.key_plan(4), chain[1].shortcut.key_plan(4),
                                chain[2].key_plan(3)])
    # conv2 runs after the inner bootstrap, at level 1: its keys are that shallow
    assert all(kp.rotations[s] >= 1 for s in body.layers[4].rotation_steps())
    ek = kg.evaluation_keys(kp)
    ev = Evaluator(params, ek.relin, ek.galois)
    enc = Encoder(params)
    x = rng.uniform(-1, 1, lin.shape)
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(lin.pack(x, params.slots)))
    res = model.run(ev, enc, ct)
    assert boot.calls == 2 and res.level == 1
    got = out.unpack(np.real(enc.decode(Decryptor(params, kg.secret_key).decrypt(res))))
    want = x
    for layer in chain:
        want = layer.forward_plain(want)
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2**-18


def test_bootstrap_layers_refuse_what_is_not_a_bootstrapper():
    from fhe_ckks.errors import ParameterError
    from fhe_ckks.nn.layers import Bootstrap

    with pytest.raises(ParameterError):
        Bootstrap(TensorLayout.stacked(1, 1, 2, 2), object())
    layer = Bootstrap(TensorLayout.stacked(1, 1, 2, 2), FakeBootstrapper(3))
    assert layer.level_after(0) == 3 and layer.depth() == 0 and layer.key_plan(5) == KeyPlan()
