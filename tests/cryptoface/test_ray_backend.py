"""The Ray backend on a toy ring, on a two-node Ray cluster simulated on this machine
(``ray.cluster_utils.Cluster``): the same embeddings as the local backend bit for bit, the same decisions
and the same 1:N answers; a worker killed mid-task and a node removed mid-run are survived (the task runs
again); the project's own errors come back typed.  Skipped, with the reason, where Ray is not installed;
the backend's selection and its refusal without Ray are tested either way."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cryptoface.encrypted.backends import BackendError, GroupResult, LocalBackend, WorkerError, make_backend
from fhe_ckks import serialize
from fhe_ckks.errors import ShapeError

from .test_protocol import LEVELLED, cosine_rule, faces, gallery_of_one_face, session

ROOT = Path(__file__).resolve().parents[2]


def test_backends_by_name_and_a_missing_ray_is_a_typed_error(monkeypatch):
    assert isinstance(make_backend("local", workers=2), LocalBackend)
    with pytest.raises(BackendError, match="unknown backend"):
        make_backend("spark")
    with pytest.raises(BackendError, match="ray backend"):
        make_backend("local", address="127.0.0.1:6379")
    monkeypatch.setitem(sys.modules, "ray", None)          # as if the extra were not installed
    with pytest.raises(BackendError, match=r"pip install"):
        make_backend("ray")


ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]'); the Ray backend "
                                        "is not tested")


@pytest.fixture(scope="module")
def cluster():
    """A head node and one more, one CPU each, small object stores; the tests' package importable on both."""
    from ray.cluster_utils import Cluster

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old] if old else []))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 400 * 2**20})
    node = c.add_node(num_cpus=1, object_store_memory=400 * 2**20)
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield c, node
    ray.shutdown()
    c.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def backend(cluster):
    from cryptoface.encrypted.backends.ray import RayBackend

    b = RayBackend(address=cluster[0].address)
    assert b.workers == 2
    return b


def test_the_same_embeddings_bit_for_bit_and_the_same_decisions_as_local(backend):
    params, model, client, server = session(LEVELLED, per_ct=1)
    assert len(server.groups) == 4
    info = server.public_info()
    x = faces(3, seed=21)
    probes = [client.encrypt_face(f, info) for f in x]
    local = server.embed_many(probes)
    server.backend = backend
    try:
        before = dict(backend.traffic)
        remote = server.embed_many(probes)
        assert [serialize.dump(c) for c in remote] == [serialize.dump(c) for c in local]
        moved = backend.traffic["task_inputs"] - before["task_inputs"]
        assert backend.traffic["tasks"] - before["tasks"] == 12 and moved > 0
        again = dict(backend.traffic)
        server.embed(probes[0])                 # the keys and chains are in the object store already
        assert backend.traffic["shared_put"] == again["shared_put"]
        answers = server.match_many([(remote[1], remote[0]), (remote[2], remote[0]), (remote[0], remote[0])])
    finally:
        server.backend = LocalBackend(1)
    for (p, t), answer in zip([(1, 0), (2, 0), (0, 0)], answers):
        margin = cosine_rule(model, x[p], x[t], server.cos_threshold)
        assert client.outcome(answer).kind == ("same" if margin >= 0 else "different"), margin


def test_identification_batches_run_as_ray_tasks(backend):
    params, model, client, server = session(LEVELLED, workers=1)
    cap = server.gallery.capacity
    face = client.encrypt_face(faces(1, seed=3)[0], server.public_info())
    names = [f"n{i:04d}" for i in range(cap + 2)]
    gallery_of_one_face(server, face, names)
    server.backend = backend
    try:
        answers = server.identify(face)
    finally:
        server.backend = LocalBackend(1)
        for n in names:
            server.delete(n)
    assert [len(b) for b, _ in answers] == [cap, 2]
    assert {o.kind for o in client.identification(answers).values()} == {"same"}


def _dies_once(marker: str, item):
    """A task whose first attempt kills its worker process (a crash mid-task)."""
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(7)
    return GroupResult(item, {"attempt": 2.0})


def _sleeps(seconds: float, item):
    time.sleep(seconds)
    return GroupResult(item, {"node": 1.0})


def _raises(item):
    raise ShapeError("a typed error from inside a task")


def test_a_killed_worker_is_survived_and_a_typed_error_comes_back_typed(backend, tmp_path):
    params, model, client, server = session(LEVELLED)
    ct = serialize.load(client.encrypt_face(faces(1)[0], server.public_info())[0], params)
    out = backend.run_tasks(_dies_once, (str(tmp_path / "marker"),), [ct], server.evaluator, "dying task")
    assert out[0].seconds == {"attempt": 2.0} and serialize.dump(out[0].ciphertext) == serialize.dump(ct)
    with pytest.raises(ShapeError, match="typed error"):
        backend.run_tasks(_raises, (), [ct], server.evaluator)
    from cryptoface.encrypted.backends.ray import RayBackend

    fragile = RayBackend(max_retries=0)             # joins the running cluster
    with pytest.raises(WorkerError, match="died"):
        fragile.run_tasks(_dies_once, (str(tmp_path / "marker2"),), [ct], server.evaluator, "dying task")


def test_a_node_removed_mid_run_is_survived(cluster, backend):
    c, node = cluster
    params, model, client, server = session(LEVELLED)
    ct = serialize.load(client.encrypt_face(faces(1)[0], server.public_info())[0], params)
    killer = threading.Timer(2.0, c.remove_node, args=(node,))
    killer.start()
    try:
        out = backend.run_tasks(_sleeps, (6.0,), [ct, ct], server.evaluator, "long task")
    finally:
        killer.join()
    assert len(out) == 2 and all(serialize.dump(r.ciphertext) == serialize.dump(ct) for r in out)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 1


def test_run_lfw_on_the_cluster_decides_as_the_local_backend(cluster, tmp_path):
    """The same two LFW pairs through run_lfw locally and on the two-node cluster (both pairs in one batch:
    four faces' patch groups and two decisions as Ray tasks, the keys put once): the same decisions and the
    precision (each run makes its own keys and encryptions, so bit-for-bit equality is the server-level test
    above, on the same ciphertexts)."""
    from tests.benchmarks.test_run_lfw import PRESET, load_script
    from tests.cryptoface.toy_model import toy_model
    from cryptoface import DEFAULT_SAMPLE, data
    from cryptoface.model import fit_exact_thresholds, fit_thresholds, poly_distances, save_model

    model = toy_model()
    vs = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    meta = __import__("json").loads((DEFAULT_SAMPLE / "pairs.json").read_text())
    folds = np.array([p["fold"] for p in meta["pairs"]])
    e = model.embed(vs.images(model.input_size))
    model.thresholds["lfw"] = fit_exact_thresholds(
        fit_thresholds(poly_distances, e[0::2], e[1::2], vs.issame, folds), e[0::2], e[1::2], vs.issame, folds)
    toy = save_model(model, tmp_path / "toy.model.npz")
    script = load_script()
    records = {}
    for backend in ("local", "ray"):
        out = tmp_path / backend
        extra = ["--backend", "ray", "--batch", "2"] if backend == "ray" else ["--workers", "1"]
        assert script.main(["--model", str(toy), "--preset", PRESET, "--no-progress", "--output", str(out),
                            "--pairs", "0:1,5:6", *extra]) == 0
        records[backend] = __import__("json").loads((out / "results.jsonl").read_text())
    local, remote = (records[b]["datasets"]["lfw"]["encrypted"] for b in ("local", "ray"))
    assert records["ray"]["backend"] == "ray" and remote["setup"]["pairs_per_batch"] == 2
    traffic = remote["setup"]["ray_traffic_bytes"]
    groups = records["ray"]["model"]["patch_networks"]            # at most; a toy group holds several patches
    assert 2 < traffic["tasks"] <= 4 * groups + 2                 # the groups of 4 distinct faces, 2 decisions
    assert traffic["shared_put"] > traffic["task_inputs"] > 0
    for a, b in zip(local["pair_records"], remote["pair_records"]):
        assert (a["pair"], a["outcome"], a["decision_plaintext"]) == (b["pair"], b["outcome"], b["decision_plaintext"])
        assert abs(a["embedding_error_bits"] - b["embedding_error_bits"]) < 2 and b["embedding_error_bits"] > 12
