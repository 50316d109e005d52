"""The encrypted template store: SQLite writes are atomic (a child killed mid-enrollment leaves the previous
state), names are refused or replaced only when asked, a store refuses another model or parameters, and a
gallery reloaded after a restart verifies exactly as before."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3

import numpy as np
import pytest

from cryptoface.encrypted import Client, Server
from cryptoface.errors import StoreError
from cryptoface.store import SQLiteStore, TemplateStore
from fhe_ckks import presets, serialize
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper

from .test_protocol import LEVELLED, faces
from .toy_model import toy_model

IDENTITY = {"model": "m1", "params": "p1", "rule": "r1"}


def test_put_get_replace_delete(tmp_path):
    with SQLiteStore(tmp_path / "g.db") as store:
        assert isinstance(store, TemplateStore)
        store.bind(IDENTITY)
        store.put("alice", b"one")
        with pytest.raises(StoreError, match="enrolled already"):
            store.put("alice", b"two")
        assert store.get("alice") == b"one"
        store.put("alice", b"two", replace=True)
        store.put("bob", b"three")
        assert store.get("alice") == b"two" and store.names() == ["alice", "bob"] == list(store) and len(store) == 2
        assert "bob" in store and "carol" not in store and 5 not in store
        store.delete("bob")
        with pytest.raises(StoreError):
            store.delete("bob")
        with pytest.raises(StoreError):
            store.get("bob")
        for bad in ("", "a\nb", "x" * 257, 5, None):
            with pytest.raises(StoreError):
                store.put(bad, b"blob")
        with pytest.raises(StoreError):
            store.put("empty", b"")
    with SQLiteStore(tmp_path / "g.db") as again:                    # persisted, and bound to its identity
        assert again.names() == ["alice"] and again.identity() == IDENTITY
        again.bind(IDENTITY)
        for other in ({**IDENTITY, "model": "m2"}, {**IDENTITY, "params": "p2"}, {"model": "m1"}):
            with pytest.raises(StoreError, match="another"):
                again.bind(other)


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(junk)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE templates (name TEXT, picture BLOB)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="columns"):
        SQLiteStore(other)


def test_the_schema_is_plain_sql(tmp_path):
    SQLiteStore(tmp_path / "g.db").close()
    db = sqlite3.connect(tmp_path / "g.db")
    sql = " ".join(row[0] for row in db.execute("SELECT sql FROM sqlite_master WHERE type = 'table'"))
    db.close()
    assert "templates" in sql and "store_meta" in sql
    for sqlite_only in ("WITHOUT ROWID", "AUTOINCREMENT", "STRICT", "ANY"):
        assert sqlite_only not in sql.upper()


def _killed_mid_put(path, name, blob, replace):
    """Runs in a child: the put dies after its transaction began (and, replacing, deleted the old row)."""
    import time

    store = SQLiteStore(path)
    time.strftime = lambda *a: os._exit(9)       # put() reads the clock between its DELETE and its INSERT
    store.put(name, blob, replace=replace)
    os._exit(0)                                  # not reached


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("replace", [False, True])
def test_a_process_killed_mid_enrollment_leaves_the_previous_state(tmp_path, replace):
    path = tmp_path / "g.db"
    with SQLiteStore(path) as store:
        store.bind(IDENTITY)
        store.put("alice", b"old template")
    child = multiprocessing.get_context("fork").Process(
        target=_killed_mid_put, args=(path, "alice" if replace else "bob", b"new" * 1000, replace))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    with SQLiteStore(path) as store:
        assert store.names() == ["alice"] and store.get("alice") == b"old template"
        store.put("bob", b"after the crash")                      # the database is not left locked
        assert store.names() == ["alice", "bob"]


def make_server(params, model, client, store):
    return Server(model, params, testing=True, workers=1, store=store,
                  decision_bootstrapper=SecretKeyBootstrapper(params, client.secret_key))


def test_a_gallery_reloaded_after_a_restart_verifies_as_before(tmp_path):
    params = presets.get(LEVELLED, allow_insecure=True)
    model = toy_model()
    client = Client(params, model, seed=bytes(range(32)))
    x = faces(3, seed=41)
    path = tmp_path / "gallery.db"
    server = make_server(params, model, client, SQLiteStore(path))
    keys = client.evaluation_keys(server.key_plan())
    server.install_keys(keys)
    info = server.public_info()
    server.enroll("alice", client.encrypt_face(x[0], info))
    server.enroll("bob", client.encrypt_face(x[1], info))
    with pytest.raises(StoreError, match="enrolled already"):
        server.enroll("alice", client.encrypt_face(x[2], info))
    probe = client.encrypt_face(x[2], info)
    before = {n: client.outcome(server.verify(probe, n)).kind for n in ("alice", "bob")}
    stored = server.store.get("alice")
    server.store.close()
    del server                                                     # the server goes away ...

    restarted = make_server(params, model, client, SQLiteStore(path))   # ... and comes back on the same file
    restarted.install_keys(keys)
    assert restarted.names() == ["alice", "bob"] and restarted.store.get("alice") == stored
    after = {n: client.outcome(restarted.verify(probe, n)).kind for n in ("alice", "bob")}
    assert after == before and set(after.values()) <= {"same", "different"}
    restarted.delete("bob")
    with pytest.raises(StoreError):
        restarted.verify(probe, "bob")
    # the store refuses another model, and a template that is not one of this server's
    with pytest.raises(StoreError, match="another"):
        make_server(params, toy_model(seed=1), client, SQLiteStore(path))
    restarted.store.put("mallory", serialize.dump(serialize.load(probe[0], params)))
    with pytest.raises(StoreError, match="mallory"):
        restarted.verify(probe, "mallory")
    restarted.store.close()


def test_the_default_gallery_refuses_and_replaces_like_a_store():
    params = presets.get(LEVELLED, allow_insecure=True)
    model = toy_model()
    client = Client(params, model, seed=bytes(range(32)))
    server = make_server(params, model, client, None)
    server.install_keys(client.evaluation_keys(server.key_plan()))
    x = faces(2, seed=43)
    info = server.public_info()
    server.enroll("a", client.encrypt_face(x[0], info))
    with pytest.raises(StoreError):
        server.enroll("a", client.encrypt_face(x[1], info))
    server.enroll("a", client.encrypt_face(x[1], info), replace=True)
    assert server.names() == ["a"]
    with pytest.raises(StoreError):
        server.verify(client.encrypt_face(x[0], info), "nobody")
    with pytest.raises(StoreError):
        server.enroll("", client.encrypt_face(x[0], info))
    for bad in ("", "a\nb", "x" * 257, 7):            # refused before any evaluation: the face is not even read
        with pytest.raises(StoreError, match="template name"):
            server.enroll(bad, [])
    assert np.isfinite(len(server.store))


def _get_in_child(path, name, want):
    os._exit(0 if _STORE.get(name) == want else 3)


_STORE = None


def test_a_forked_process_opens_its_own_connection_and_lock(tmp_path):
    # a lock another thread holds at the fork, or the parent's connection, is never used in the child
    global _STORE
    path = tmp_path / "g.db"
    _STORE = store = SQLiteStore(path)
    store.bind(IDENTITY)
    store.put("alice", b"template")
    with store._lock:                                   # as if another thread were inside the store at the fork
        child = multiprocessing.get_context("fork").Process(target=_get_in_child, args=(path, "alice", b"template"))
        child.start()
        child.join(60)
    assert child.exitcode == 0
    assert store.get("alice") == b"template"            # the parent's connection is untouched
    store.put("bob", b"more")
    assert store.names() == ["alice", "bob"]
    store.close()
    _STORE = None


def test_forked_gallery_workers_read_their_own_records_from_the_store(tmp_path):
    """Two groups of a gallery in a SQLite store, in two forked workers: each reads its group's records itself,
    a gallery ciphertext at a time; the answers are as with one process."""
    from .test_protocol import gallery_of_one_face

    params = presets.get(LEVELLED, allow_insecure=True)
    model = toy_model()
    client = Client(params, model, seed=bytes(range(32)))
    store = SQLiteStore(tmp_path / "gallery.db")
    store._db.execute("PRAGMA synchronous = OFF")       # a thousand test writes without a thousand fsyncs
    server = Server(model, params, testing=True, workers=2, store=store,
                    decision_bootstrapper=SecretKeyBootstrapper(params, client.secret_key))
    server.install_keys(client.evaluation_keys(server.key_plan()))
    face = client.encrypt_face(faces(1, seed=3)[0], server.public_info())
    cap = server.gallery.capacity
    names = [f"n{i:04d}" for i in range(cap + 3)]
    gallery_of_one_face(server, face, names)
    answers = server.identify(face)
    assert [len(b) for b, _ in answers] == [cap, 3]
    got = client.identification(answers)
    assert {o.kind for o in got.values()} == {"same"}
    assert server.stats.seconds["gallery: read"] > 0 and server.stats.bootstraps == 2
    server.delete(names[0])                              # the server's own connection still works
    assert len(server.names()) == cap + 2


def test_the_version_changes_with_every_write_from_any_connection(tmp_path):
    path = tmp_path / "g.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    one.bind(IDENTITY)
    two.bind(IDENTITY)
    seen = [one.version()]
    one.put("alice", b"t1")
    seen.append(one.version())
    two.put("bob", b"t2")                               # another connection (another server on the same file)
    seen.append(one.version())
    two.put("bob", b"t3", replace=True)
    seen.append(one.version())
    two.delete("alice")
    seen.append(one.version())
    assert len(set(seen)) == len(seen)
    assert one.version() == seen[-1]                    # and reading changes nothing
    one.get("bob")
    assert one.version() == seen[-1]
    one.close()
    two.close()
