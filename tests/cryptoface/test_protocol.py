"""Client/server verification on a toy ring: encrypted decisions equal plaintext ones; roles stay separate."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from cryptoface.encrypted import Client, Server
from cryptoface.errors import ModelError
from cryptoface.model import decisions
from fhe_ckks import presets, serialize
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.encryptor import Decryptor
from fhe_ckks.errors import LevelError, SecurityError, ShapeError
from fhe_ckks.rlwe.keyplan import KeyPlan
from fhe_ckks.rlwe.keys import SecretKey

from .toy_model import toy_model

LEVELLED = "INSECURE_N12_QP900_L18_S40"
SHORT = "INSECURE_N12_QP520_L7_S40"


@lru_cache(maxsize=None)
def session(preset: str, with_sk_bootstrapper: bool = False, per_ct: int | None = None, workers: int = 1):
    params = presets.get(preset, allow_insecure=True)
    model = toy_model()
    client = Client(params, seed=bytes(range(32)))
    boot = SecretKeyBootstrapper(params, client.secret_key) if with_sk_bootstrapper else None
    server = Server(model, params, bootstrapper=boot, patches_per_ciphertext=per_ct, testing=with_sk_bootstrapper,
                    workers=workers)
    plan = KeyPlan.from_json(server.key_plan().to_json())      # it crosses the wire as JSON
    server.install_keys(client.evaluation_keys(plan))
    return params, model, client, server


def faces(n: int, seed: int = 5):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 16, 16))


def test_encrypted_embedding_matches_the_fused_model():
    params, model, client, server = session(LEVELLED)
    x = faces(1)
    ct = server.embed(client.encrypt_face(x[0], server.public_info()))
    got = np.real(Encoder(params).decode(Decryptor(params, client.secret_key).decrypt(ct)))[:model.embedding_dim]
    want = model.norm.normalize(model.embed(x))[0]
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < 2**-12, f"relative error 2^{np.log2(err):.1f}"
    assert server.stats.bootstraps == 0 and server.stats.key_switches > 0


def test_verification_decisions_equal_plaintext():
    params, model, client, server = session(LEVELLED)
    x = faces(6, seed=7)
    info = server.public_info()
    server.enroll("a", client.encrypt_face(x[0], info))
    server.enroll("b", client.encrypt_face(x[1], info))
    tau = model.thresholds["lfw"].tau
    for probe in x[2:]:
        answers = server.identify(client.encrypt_face(probe, info))
        for name, ref in (("a", x[0]), ("b", x[1])):
            e = model.embed(np.stack([probe, ref]))
            want = decisions(model, e[:1], e[1:], "lfw", [None])[0]
            d = np.sum((model.norm.normalize(e[:1]) - model.norm.normalize(e[1:])) ** 2)
            if abs(d - tau) > 1e-6 * max(1.0, tau):       # not on the threshold itself
                assert client.decide(answers[name]) == want
            assert client.score(answers[name]) == pytest.approx(0.0, abs=17 * abs(d - tau) + 1e-3)


def test_patch_groups_in_forked_processes_give_the_same_embedding():
    params, model, client, _ = session(LEVELLED)
    x = faces(1, seed=3)
    got = []
    for workers in (1, 2):
        _, _, _, server = session(LEVELLED, per_ct=1, workers=workers)
        assert len(server.groups) > 1
        ct = server.embed(client.encrypt_face(x[0], server.public_info()))
        got.append(np.real(Encoder(params).decode(Decryptor(params, client.secret_key).decrypt(ct))))
        assert any(k.startswith("group 1: ") for k in server.stats.seconds)
    want = model.norm.normalize(model.embed(x))[0]
    assert np.max(np.abs(got[0] - got[1])) < 2**-20 * np.max(np.abs(want))


def test_plan_places_bootstraps_with_the_secret_key_double():
    params, model, client, server = session(SHORT, with_sk_bootstrapper=True, per_ct=2)
    assert len(server.groups) == 2 and all(p.bootstraps >= 1 for p in server.plans)
    x = faces(2, seed=9)
    info = server.public_info()
    server.enroll("a", client.encrypt_face(x[0], info))
    answer = server.verify(client.encrypt_face(x[1], info), "a")
    e = model.embed(x)
    assert client.decide(answer) == decisions(model, e[1:], e[:1], "lfw", [None])[0]
    assert server.bootstrapper.calls == sum(p.bootstraps for p in server.plans) * 2 + 2


def test_keys_follow_the_plan_and_its_levels():
    params, model, client, server = session(LEVELLED)
    plan = server.key_plan()
    assert plan.relinearization and not plan.conjugation and plan.encapsulation_weight is None
    assert all(0 <= level <= params.max_level for level in plan.rotations.values())
    assert max(plan.rotations.values()) == params.max_level          # conv0 rotates at the top
    assert min(plan.rotations.values()) < params.max_level - 5       # the head and the matching far below
    galois = serialize.load(client.evaluation_keys(plan)["galois"], params)
    from fhe_ckks.rlwe.keys import galois_element

    assert len(galois.keys) == len(plan)
    for step, level in plan.rotations.items():
        assert galois.keys[galois_element(step, params.log_n)].max_level == level


def test_roles_and_bad_input():
    params, model, client, server = session(LEVELLED)
    # the server holds no secret key anywhere
    assert not any(isinstance(v, SecretKey) for v in vars(server).values())
    with pytest.raises(SecurityError):
        Server(model, params, bootstrapper=SecretKeyBootstrapper(params, client.secret_key))
    with pytest.raises(SecurityError):
        server.install_keys({"relin": serialize.dump(client.secret_key, include_secret=True),
                             "galois": serialize.dump(client.secret_key, include_secret=True)})
    with pytest.raises(ShapeError):
        client.encrypt_face(np.zeros((3, 32, 32)), server.public_info())
    with pytest.raises(ShapeError):
        server.embed([])
    with pytest.raises(ModelError, match="cfp_fp"):
        Server(model, params, dataset="cfp_fp")
    short = presets.get(SHORT, allow_insecure=True)
    with pytest.raises(LevelError):
        Server(model, short)        # too deep for 7 levels without a bootstrapper
