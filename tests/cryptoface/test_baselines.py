"""The ResNet baselines' fused numpy twins (issue #16) against the torch networks they come from."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cryptoface.baselines import Activation, relu_bound  # noqa: E402
from cryptoface.errors import ModelError  # noqa: E402
from cryptoface.training.fusion import fuse_resnet  # noqa: E402
from cryptoface.training.models import randomize_batch_norms  # noqa: E402
from cryptoface.training.resnet import ChannelQuadratic, ResNetFace  # noqa: E402


def trained_looking(depth: int, activation: str, seed: int = 0) -> ResNetFace:
    """Batch-norm statistics and quadratic weights drawn like a trained model's (a fresh model's hide mistakes)."""
    torch.manual_seed(seed)
    model = ResNetFace(depth, activation).double()
    randomize_batch_norms(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ChannelQuadratic):
                m.weight.add_(torch.empty_like(m.weight).uniform_(-0.05, 0.05))
            if isinstance(m, torch.nn.Conv2d) and activation == "autofhe":
                m.weight.mul_(0.3)       # untrained quadratics compound: keep the activations in range
    return model.eval()


@pytest.mark.parametrize("depth, activation", [(32, "relu"), (44, "relu"), (32, "autofhe")])
def test_the_fused_resnet_equals_the_torch_network(depth, activation):
    model = trained_looking(depth, activation)
    fused = fuse_resnet(model.state_dict(), depth, activation)
    assert len(fused.activations()) == len(model.activations())
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        want = model.embed(x).numpy()
    got = fused.embed(x.numpy(), polynomial=False)
    assert np.isfinite(want).all()
    assert np.max(np.abs(got - want)) <= 2**-40 * np.max(np.abs(want))
    kinds = [a.kind for a in fused.activations()]
    assert kinds.count("quadratic") == (16 if activation == "autofhe" else 0)
    assert kinds.count("relu") == (len(kinds) if activation == "relu" else 0)


def test_the_app_relu_twin_stays_close_to_the_relu_network():
    """MPCNN's plaintext twin (every ReLU an AppReLU on x / B) against the exact network: the embeddings
    agree to the sign's precision, relative to their norm; without B it refuses."""
    model = trained_looking(32, "relu", seed=1)
    fused = fuse_resnet(model.state_dict(), 32, "relu")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 64, 64))
    with pytest.raises(ModelError, match="ReLU bound"):
        fused.embed(x, polynomial=True)
    fused.relu_bound = relu_bound(fused.activation_peaks(x))
    exact, app = fused.embed(x, polynomial=False), fused.embed(x)
    rel = np.linalg.norm(app - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert rel.max() < 2**-6, rel
    assert np.all(np.sum(app * exact, 1) / np.linalg.norm(app, axis=1) / np.linalg.norm(exact, axis=1) > 0.999)


def test_autofhe_is_polynomial_already():
    model = trained_looking(32, "autofhe", seed=2)
    fused = fuse_resnet(model.state_dict(), 32, "autofhe")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 64))
    assert np.array_equal(fused.embed(x, polynomial=False), fused.embed(x))


def test_bad_activations_and_inputs_are_refused():
    with pytest.raises(ModelError):
        Activation("gelu")
    with pytest.raises(ModelError):
        Activation("quadratic")
    with pytest.raises(ModelError):
        Activation("quadratic", np.full((3, 4), np.nan))
    with pytest.raises(ModelError):
        relu_bound(np.array([np.inf]))
    fused = fuse_resnet(trained_looking(32, "relu").state_dict(), 32, "relu")
    with pytest.raises(ModelError):
        fused.embed(np.zeros((1, 3, 96, 96)))


# ---- the encrypted chains (cryptoface.encrypted.baseline) on a toy ring -----------------------------------

def small_fused(activation: str, seed: int):
    """A ResNet32 on 16x16 faces (the toy ring's 2,048 slots hold its stages), with a small sign composite for
    the toy ring's 7 levels; MPCNN's B from its own ReLU peaks."""
    model = trained_looking(32, activation, seed)
    fused = fuse_resnet(model.state_dict(), 32, activation)
    fused.input_size, fused.sign_degrees, fused.sign_margin = 16, (3, 3), 0.1
    x = np.random.default_rng(seed).uniform(-1, 1, (3, 3, 16, 16))
    if activation == "relu":
        fused.relu_bound = relu_bound(fused.activation_peaks(x))
    return fused, x


@pytest.mark.parametrize("activation", ["relu", "autofhe"])
def test_the_encrypted_baseline_equals_its_plaintext_twin(activation):
    from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
    from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
    from fhe_ckks.nn import EncryptedModel

    from cryptoface.encrypted.baseline import build_baseline

    params = presets.get("INSECURE_N12_QP520_L7_S40", allow_insecure=True)
    kg = KeyGenerator(params, seed=bytes(32))
    boot = SecretKeyBootstrapper(params, kg.secret_key, output_level=params.max_level)
    fused, x = small_fused(activation, seed=3)
    chain = build_baseline(fused, boot)
    twin = fused.embed(x[:1], polynomial=True)[0]
    assert np.max(np.abs(chain.forward_plain(x[0]) - twin)) <= 2**-16 * np.max(np.abs(twin))
    model = EncryptedModel(chain.layers, params.max_level, boot)
    counts = model.counts()
    if activation == "relu":     # MPCNN's design: one bootstrap before each of the 31 AppReLUs
        assert model.plan.inner_bootstraps == 31 and counts["bootstraps"] == 31 + len(model.plan.bootstrap_before)
    ek = kg.evaluation_keys(model.key_plan())
    enc = Encoder(params)
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(chain.input_layout.pack(x[:1], params.slots)))
    out = model.run(Evaluator(params, ek.relin, ek.galois), enc, ct)
    got = chain.output_layout.unpack(np.real(enc.decode(Decryptor(params, kg.secret_key).decrypt(out)))).reshape(-1)
    err = np.max(np.abs(got - twin)) / np.max(np.abs(twin))
    assert err < 2**-12, f"relative error 2^{np.log2(err):.1f}"
    assert boot.calls == counts["bootstraps"]


def test_a_bootstrapped_resnet_runs_with_the_real_bootstrapper():
    """AutoFHE's ResNet32 on the toy twin of the baselines' bootstrapping preset: the planner places the
    bootstraps (16 user levels between them), the real bootstrapper runs them on half the slots (the tensors'
    period) without the secret key, and the embedding stays within 2^-12 of the fused plaintext model."""
    from fhe_ckks import Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, presets
    import dataclasses

    from fhe_ckks.bootstrap import CONFIGS, Bootstrapper, SecretKeyBootstrapper, generate_keys
    from fhe_ckks.nn import EncryptedModel

    from cryptoface.encrypted.baseline import build_baseline

    name = "INSECURE_BOOT_N12_QP1771_L32_S36"
    params = presets.get(name, allow_insecure=True)
    kg = KeyGenerator(params, seed=bytes(32))
    fused, x = small_fused("autofhe", seed=3)
    twin = fused.embed(x[:1], polynomial=True)[0]
    chain = build_baseline(fused)
    plan_only = EncryptedModel(chain.layers, params.max_level, SecretKeyBootstrapper(params, kg.secret_key, 16))
    # the bootstraps' declared input bound, from the twin's values where the planner puts them (the toy faces
    # reach about 2, above the default bound of 1: the first version of this test found that)
    peaks = chain.input_peaks(x)[list(plan_only.plan.bootstrap_before)]
    # sparse slots: the toy face's stages repeat with period 1,024 of the ring's 2,048 slots
    assert max(layer.in_layout.period for layer in chain.layers) == 1024 == params.slots // 2
    config = dataclasses.replace(CONFIGS[name], input_bound=float(1.25 * peaks.max()), slots=1024, packed=True)
    bk = generate_keys(kg, config)
    boot = Bootstrapper(params, bk.relin, bk.galois, config, bk.encapsulation)
    assert boot.output_level == 16
    model = EncryptedModel(chain.layers, params.max_level, boot)
    assert model.plan.bootstrap_before == plan_only.plan.bootstrap_before
    counts = model.counts()
    assert counts["bootstraps"] == len(model.plan.bootstrap_before) >= 2
    enc, dec = Encoder(params), Decryptor(params, kg.secret_key)
    calls, real = [], boot.bootstrap

    def watched(ct):       # the test holds the key: it checks the range contract the bootstrapper relies on
        calls.append((ct.level, np.max(np.abs(enc.decode(dec.decrypt(ct))))))
        return real(ct)

    boot.bootstrap = watched
    ek = kg.evaluation_keys(model.key_plan())
    ct = Encryptor(params, kg.public_key()).encrypt(enc.encode(chain.input_layout.pack(x[:1], params.slots)))
    out = model.run(Evaluator(params, ek.relin, ek.galois), enc, ct)
    got = chain.output_layout.unpack(np.real(enc.decode(dec.decrypt(out)))).reshape(-1)
    err = np.max(np.abs(got - twin)) / np.max(np.abs(twin))
    assert err < 2**-12, f"relative error 2^{np.log2(err):.1f}"
    assert len(calls) == counts["bootstraps"]
    assert all(peak < config.input_bound for _, peak in calls), (calls, config.input_bound)


def test_an_mpcnn_chain_needs_its_bound_and_a_bootstrapper():
    from cryptoface.encrypted.baseline import build_baseline

    fused, _ = small_fused("relu", seed=4)
    with pytest.raises(ModelError):
        build_baseline(fused, None)
    fused.relu_bound = None
    with pytest.raises(ModelError):
        build_baseline(fused, object())


# ---- the baselines' model file --------------------------------------------------------------------------

@pytest.mark.parametrize("depth, activation", [(32, "relu"), (44, "relu"), (32, "autofhe")])
def test_a_baseline_round_trips_through_its_model_file(tmp_path, depth, activation):
    from cryptoface.baselines import load_baseline, save_baseline

    fused = fuse_resnet(trained_looking(depth, activation).state_dict(), depth, activation, name="b")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64))
    if activation == "relu":
        fused.relu_bound = relu_bound(fused.activation_peaks(x))
    back = load_baseline(save_baseline(fused, tmp_path / "b.model.npz"))
    assert (back.arch, back.variant, back.name, back.relu_bound) == (fused.arch, fused.variant, "b", fused.relu_bound)
    assert [a.kind for a in back.activations()] == [a.kind for a in fused.activations()]
    assert np.array_equal(back.embed(x), fused.embed(x))
    assert np.array_equal(back.embed(x, polynomial=False), fused.embed(x, polynomial=False))


def test_damaged_or_inconsistent_baseline_files_are_refused(tmp_path):
    from cryptoface.baselines import load_baseline, save_baseline
    from tests.fhe_ckks.nn.test_modelfile import reseal

    fused = fuse_resnet(trained_looking(32, "autofhe").state_dict(), 32, "autofhe")
    path = save_baseline(fused, tmp_path / "a.model.npz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    (tmp_path / "flip.model.npz").write_bytes(bytes(raw))
    with pytest.raises(ModelError):
        load_baseline(tmp_path / "flip.model.npz")
    edits = [lambda s: s["topology"].update(arch="resnet56"),
             lambda s: s["topology"]["activations"][1].update(kind="relu"),
             lambda s: s["topology"]["activations"][0].update(kind="quadratic"),
             lambda s: s["topology"]["blocks"][5].update(shortcut="identity"),
             lambda s: s["topology"].update(relu={"bound": 1.0, "sign_degrees": [15], "sign_margin": 0.01}),
             lambda s: s["input"].update(size=60), lambda s: s.update(schema_version=2)]
    for edit in edits:
        copy = tmp_path / "copy.model.npz"
        copy.write_bytes(path.read_bytes())
        reseal(copy, manifest_edit=lambda m, edit=edit: edit(m["schema"]))
        with pytest.raises(ModelError, match="copy.model.npz"):
            load_baseline(copy)
    with pytest.raises(ModelError):
        fused.blocks[0].weight1 = fused.blocks[0].weight1[:, :8]
        save_baseline(fused, tmp_path / "bad.model.npz")
    assert not (tmp_path / "bad.model.npz").exists()


# ---- the baselines served like the patch CNNs -----------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "autofhe"])
def test_value_peaks_cover_every_value_the_encrypted_chain_carries(activation):
    from cryptoface.encrypted.baseline import build_baseline
    from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
    from fhe_ckks import KeyGenerator, presets

    params = presets.get("INSECURE_N12_QP520_L7_S40", allow_insecure=True)
    boot = SecretKeyBootstrapper(params, KeyGenerator(params, seed=bytes(32)).secret_key, params.max_level)
    fused, x = small_fused(activation, seed=6)
    chain = build_baseline(fused, boot)
    carried = chain.input_peaks(x)                    # the chain's own twin, layer by layer, in its units
    peaks = fused.value_peaks(x)
    assert peaks.shape == (len(x),)
    assert np.max(carried) <= np.max(peaks) * (1 + 2**-20)
    if activation == "relu":                           # MPCNN's chain runs on x / B: inside [-1, 1] on these faces
        assert fused.bootstrap_bound() == 1.0
        assert np.all(fused.activation_peaks(x) / fused.relu_bound <= 1.0)


@pytest.mark.parametrize("activation", ["relu", "autofhe"])
def test_a_baseline_refuses_faces_beyond_its_bootstraps_range(activation):
    from cryptoface.errors import ProbeError

    fused, x = small_fused(activation, seed=7)
    if activation == "autofhe":
        assert fused.bootstrap_bound() is None          # no recorded value range: the patch CNNs' rule
        fused.info["value_range"] = {"max": float(np.max(fused.value_peaks(x)))}
    bound = fused.bootstrap_bound()
    assert bound is not None and bound > 0
    ok = fused.check_probe(x)
    assert ok.shape == (len(x), fused.embedding_dim)
    for gain in (4.0, 60.0):                             # junk: the same faces, brighter than any face
        loud = x * gain
        assert not np.max(fused.value_peaks(loud)) <= bound     # beyond, or not even finite
        with pytest.raises(ProbeError, match="beyond" if gain == 4.0 else "beyond|not finite"):
            fused.check_probe(loud[:1])
    assert fused.patch_size == fused.input_size and fused.num_patches == 1


def test_a_baseline_digest_follows_its_weights_and_survives_its_file(tmp_path):
    from cryptoface.baselines import load_baseline, save_baseline

    fused, _ = small_fused("relu", seed=8)
    fused.input_size = 64
    first = fused.digest()
    again = load_baseline(save_baseline(fused, tmp_path / "m.model.npz"))
    assert again.digest() == first
    again.blocks[3].bias2 = again.blocks[3].bias2 + 2**-30
    assert again.digest() != first
    fused.relu_bound *= 1.01
    assert fused.digest() != first


def test_a_server_runs_a_bootstrapped_baseline_from_the_clients_keys_alone():
    """AutoFHE's toy ResNet32 through the client/server protocol on the toy twin of the baselines' preset: the
    server builds its network bootstrapper (sparse, 1,024 slots) and the decision's from the client's keys, holds
    no secret key, and its decisions equal the plaintext cosine rule."""
    from cryptoface.encrypted import Client, Server
    from cryptoface.encrypted.matching import embedding_scale
    from cryptoface.encrypted.protocol import HINT_RANGE_LOG2, NetworkBootstrapper, Stats
    from fhe_ckks import presets

    from .toy_model import with_toy_rule

    params = presets.get("INSECURE_BOOT_N12_QP1771_L32_S36", allow_insecure=True)
    fused, x = small_fused("autofhe", seed=3)
    rng = np.random.default_rng(11)
    calib = rng.uniform(-1, 1, (32, 3, 16, 16))
    # the toy's random weights point every embedding the same way (cosines 0.9998-1): centre them, as training
    # spreads a real model's, so that decisions are clear of the threshold
    fused.head_bias = fused.head_bias - fused.embed(calib).mean(axis=0)
    fused.info["value_range"] = {"max": float(np.max(fused.value_peaks(calib)))}
    fused.name = "toy-autofhe"
    with_toy_rule(fused, calib)
    s = embedding_scale(fused.thresholds["lfw"].norm)
    ok = [f for f in calib if 2.0**-HINT_RANGE_LOG2 <= s * s * float(np.sum(fused.embed(f[None]) ** 2))
          <= 2.0**HINT_RANGE_LOG2 and np.max(fused.value_peaks(f[None])) <= fused.bootstrap_bound()]
    assert len(ok) >= 3
    client = Client(params, fused, seed=bytes(range(32)))
    server = Server(fused, params, workers=1)
    assert isinstance(server.bootstrapper, NetworkBootstrapper) and server.bootstrapper.slots == 1024
    assert server.bootstrapper.config.input_bound == fused.bootstrap_bound()
    costs = server.costs()["groups"][0]
    assert costs["bootstraps"] >= 2 and costs["patches"] == [0]
    server.install_keys(client.evaluation_keys(server.key_plan()))
    info = server.public_info()
    assert info["patch_size"] == info["input_size"] == 16 and info["groups"] == [[0]]
    server.enroll("a", client.encrypt_face(ok[0], info))
    e = fused.embed(np.stack(ok))
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    margins = u[1:] @ u[0] - server.cos_threshold
    k = 1 + int(np.argmax(np.abs(margins)))             # the probe farthest from the threshold: a clear decision
    assert abs(margins[k - 1]) > 2**-7
    stats = Stats()
    answer = server.verify(client.encrypt_face(ok[k], info), "a", stats)
    assert client.decide(answer) == (margins[k - 1] >= 0)
    assert stats.bootstraps == costs["bootstraps"] + 1          # the network's, then the decision's
