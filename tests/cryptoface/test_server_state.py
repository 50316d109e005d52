"""Servers share no state: two servers in two threads, one server in two threads, dead workers, bad answers.

Hardening issue, sections 3 and 4: the forked workers used to find their server through a module-global,
so two servers used from two threads ran each other's models (relative error ~1, no error raised), and one
server used from two threads double-counted its stats.  The client used to decrypt any ciphertext it was
sent as an answer; now it reads only slot 0 of an 8-slot answer at level 0 and its standard scale.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from cryptoface.encrypted import Client, Server, Stats
from cryptoface.encrypted.backends import LocalBackend, WorkerError
from fhe_ckks import presets, serialize
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.encryptor import Decryptor
from fhe_ckks.errors import KeyMismatchError, LevelError, ScaleMismatchError, SecurityError, ShapeError

from .test_protocol import LEVELLED, faces, session, unit
from .toy_model import toy_model


def decrypt_embedding(params, client, ct, dim):
    return np.real(Encoder(params).decode(Decryptor(params, client.secret_key).decrypt(ct)))[:dim]


def relative_error(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def in_threads(*calls):
    """Run the calls in as many threads, started together; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return out


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_two_servers_in_two_threads_run_their_own_models():
    params = presets.get(LEVELLED, allow_insecure=True)
    models = [toy_model(seed=0), toy_model(seed=1)]
    clients = [Client(params, model, seed=bytes(range(32))) for model in models]   # one secret key
    servers = []
    for model, client in zip(models, clients):
        server = Server(model, params, patches_per_ciphertext=2, workers=2, testing=True,
                        decision_bootstrapper=SecretKeyBootstrapper(params, client.secret_key))
        server.install_keys(client.evaluation_keys(server.key_plan()))
        servers.append(server)
    x = faces(1, seed=11)[0]
    for trial in range(2):
        cts = in_threads(*(lambda s=s, c=c: s.embed(c.encrypt_face(x, s.public_info()))
                           for s, c in zip(servers, clients)))
        for model, ct in zip(models, cts):
            assert not isinstance(ct, BaseException), ct
            want = unit(model.embed(x[None]))[0]
            err = relative_error(decrypt_embedding(params, clients[0], ct, model.embedding_dim), want)
            assert err < 2**-12, f"trial {trial}: relative error 2^{np.log2(err):.1f}"


def test_one_server_in_two_threads_counts_each_call_once():
    params, model, client, server = session(LEVELLED)
    x = faces(2, seed=12)
    info = server.public_info()
    server.enroll("t", client.encrypt_face(x[0], info), replace=True)
    per_call = sum(p.key_switches for p in server.plans) + 1 + server.decision.key_switches()
    stats = [Stats(), Stats()]
    answers = in_threads(*(lambda st=st: server.verify(client.encrypt_face(x[1], info), "t", st) for st in stats))
    assert all(isinstance(a, bytes) for a in answers), answers
    assert [st.key_switches for st in stats] == [per_call, per_call]
    assert server.stats.key_switches == per_call             # the last completed call's, not a sum
    assert client.outcome(answers[0]).kind == client.outcome(answers[1]).kind != "invalid"
    assert [st.bootstraps for st in stats] == [1, 1]                # the decision's, for each call


class _DyingLayer:
    """A stand-in chain whose evaluation kills its worker process (a crash mid-group)."""

    def run(self, *args, **kwargs):
        os._exit(3)


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork")
def test_a_dead_worker_is_a_typed_error():
    params, model, client, server = session(LEVELLED)
    ct = serialize.load(client.encrypt_face(faces(1)[0], server.public_info())[0], params)
    with pytest.raises(WorkerError, match="died"):
        LocalBackend(workers=2).run_groups([_DyingLayer(), _DyingLayer()], server.evaluator, server.encoder,
                                           [ct, ct])


def _reports_threads(item):
    """A task that reports the kernels' thread count it runs with (in its seconds)."""
    from cryptoface.encrypted.backends import GroupResult
    from fhe_ckks.ring import get_num_threads

    return GroupResult(item, {"threads": float(get_num_threads())})


def test_spare_cores_go_to_the_kernels_threads():
    """A single task runs in this process with every worker's core as a kernel thread; fewer tasks than
    workers share the workers' cores; as many tasks as workers run one thread each; this process's own
    count is unchanged afterwards."""
    from fhe_ckks.ring import get_num_threads

    params, model, client, server = session(LEVELLED)
    ct = serialize.load(client.encrypt_face(faces(1)[0], server.public_info())[0], params)
    four = LocalBackend(workers=4)
    assert [r.seconds["threads"] for r in four.run_tasks(_reports_threads, (), [ct], server.evaluator)] == [4.0]
    forked = "fork" in __import__("multiprocessing").get_all_start_methods()
    two = four.run_tasks(_reports_threads, (), [ct, ct], server.evaluator)
    assert [r.seconds["threads"] for r in two] == ([2.0, 2.0] if forked else [1.0, 1.0])
    six = four.run_tasks(_reports_threads, (), [ct] * 6, server.evaluator)
    assert {r.seconds["threads"] for r in six} == {1.0}
    assert [r.seconds["threads"] for r in LocalBackend(workers=1).run_tasks(_reports_threads, (), [ct],
                                                                           server.evaluator)] == [1.0]
    assert get_num_threads() == 1


def test_the_client_checks_an_answer_before_decrypting():
    params, model, client, server = session(LEVELLED)
    x = faces(2, seed=13)
    info = server.public_info()
    server.enroll("t", client.encrypt_face(x[0], info), replace=True)
    probe = client.encrypt_face(x[1], info)
    answer = server.verify(probe, "t")
    assert isinstance(client.decide(answer), bool)
    ct = serialize.load(answer, params)
    assert ct.slots == 8 and ct.level == 0
    ev = server.evaluator
    # a malicious server returns the client's own face ciphertext: slot 0 would be a pixel's sign
    with pytest.raises(SecurityError):
        client.decide(probe[0])
    # ... or brings it down to the answer's level and slots: the scale gives it away
    face_low = ev.drop_level(serialize.load(probe[0], params), params.max_level).with_metadata(slots=8)
    with pytest.raises(ScaleMismatchError):
        client.decide(serialize.dump(face_low))
    with pytest.raises(ScaleMismatchError):
        client.decide(serialize.dump(ct.with_metadata(scale=ct.scale * 2)))
    with pytest.raises(SecurityError):
        client.decide(serialize.dump(ct.with_metadata(slots=params.slots)))    # a full-slot answer: refused
    with pytest.raises(SecurityError):
        client.decide(serialize.dump(ct.with_metadata(slots=4)))
    with pytest.raises(SecurityError):
        client.decide(serialize.dump(params))
    other = Client(params, model, seed=bytes(32))
    with pytest.raises(KeyMismatchError):
        other.decide(answer)


def test_the_server_checks_a_face_before_evaluating():
    params, model, client, server = session(LEVELLED)
    face = [serialize.load(b, params) for b in client.encrypt_face(faces(1, seed=14)[0], server.public_info())]
    with pytest.raises(ScaleMismatchError):
        server.embed([ct.with_metadata(scale=ct.scale * 4) for ct in face])
    with pytest.raises(ScaleMismatchError):                          # the hint alone at another scale
        server.embed([*face[:-1], face[-1].with_metadata(scale=face[-1].scale * 4)])
    with pytest.raises(ShapeError):
        server.embed([ct.with_metadata(slots=params.slots // 2) for ct in face])
    with pytest.raises(ShapeError):
        server.embed(face[:-1])                                      # no hint
    with pytest.raises(LevelError):                                  # the hint at the top level
        server.embed([*face[:-1], face[0]])
    info = server.public_info()
    for broken in ({k: v for k, v in info.items() if k != "hint_level"}, {**info, "embedding_scale": "1"},
                   {**info, "hint_level": params.max_level + 1}, None):
        with pytest.raises(ShapeError):
            client.encrypt_face(faces(1, seed=14)[0], broken)
    other = Client(params, model, seed=bytes(32))
    with pytest.raises(KeyMismatchError):
        server.embed(other.encrypt_face(faces(1, seed=14)[0], server.public_info()))
