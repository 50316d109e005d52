"""The HTTP service end to end over loopback, on a toy ring with the decision's real 8-slot bootstrap (the
server holds public keys only): serve, keygen (secret key at 0600, never on the server), enroll, verify,
identify, restart and verify again; bad requests (wrong kind, other parameters, truncated or oversized
bodies, unknown or taken names) get their 4xx; two clients at once.  The bundle format's own checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cryptoface.errors import ServiceError
from cryptoface.model import save_model
from cryptoface.encrypted import wire
from fhe_ckks import presets, serialize
from fhe_ckks.errors import SecurityError, SerializationError

from .toy_model import toy_model

httpx = pytest.importorskip("httpx", reason="the service extra (httpx) is not installed")
pytest.importorskip("fastapi", reason="the service extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

from cryptoface.service.cli import DIFFERENT, ERROR, SAME, main  # noqa: E402
from cryptoface.service.client import ServiceClient  # noqa: E402

PRESET = "INSECURE_N12_QP1642_L29_S38"
ROOT = Path(__file__).resolve().parents[2]


# ---- the bundle format ------------------------------------------------------------------

def test_bundles_round_trip_and_refuse_damage():
    entries = {"0": b"abc", "1": b"", "hint": bytes(range(256))}
    blob = wire.pack(entries)
    assert wire.unpack(blob) == entries
    assert wire.unpack_list(wire.pack_list([b"x", b"y"])) == [b"x", b"y"]
    for bad in (blob[:-1], blob[:20], b"", b"CFBUNDLX" + blob[8:], blob + b"\0", bytes(len(blob))):
        with pytest.raises(SerializationError):
            wire.unpack(bad)
    flipped = bytearray(blob)
    flipped[30] ^= 1
    with pytest.raises(SerializationError, match="checksum"):
        wire.unpack(bytes(flipped))
    with pytest.raises(SerializationError):
        wire.unpack_list(wire.pack({"1": b"a", "0": b"b"}))            # a list is numbered in order
    for name in ("", "a\nb", 3):
        with pytest.raises(SerializationError):
            wire.pack({name: b"x"})
    with pytest.raises(SerializationError):
        wire.unpack("not bytes")


# ---- the service --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``cryptoface serve`` in a child process, on a loopback port."""

    def __init__(self, model_file: Path, state: Path):
        self.model_file, self.state, self.port = model_file, state, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "cryptoface.service.cli", "serve", "--model", str(self.model_file),
               "--preset", PRESET, "--insecure", "--state", str(self.state), "--port", str(self.port),
               "--workers", "1"]
        self.log = open(self.state.parent / f"serve-{time.time_ns()}.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the server did not come up in 300 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()


def _photos(model, n: int, seed: int) -> list[np.ndarray]:
    """``n`` aligned 112x112 'photos' (random black-and-white 8x8 images, each pixel a 14x14 square: the toy model
    tells them apart after the resize to its 16x16 input) whose toy embeddings lie well inside the hint
    range, so the honest client accepts them."""
    from cryptoface.data import preprocess
    from cryptoface.encrypted.matching import embedding_scale

    rng = np.random.default_rng(seed)
    s2 = embedding_scale(model.thresholds["lfw"].norm) ** 2
    out = []
    while len(out) < n:
        small = rng.choice([0, 255], (8, 8, 3)).astype(np.uint8)
        image = np.kron(small, np.ones((14, 14, 1), dtype=np.uint8))
        x = preprocess(image[None], model.input_size)
        if 2.0**-4 <= s2 * float(np.sum(model.embed(x) ** 2)) <= 2.0**4:
            out.append(image)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from PIL import Image

    from cryptoface.data import preprocess

    tmp = tmp_path_factory.mktemp("service")
    model = toy_model()
    rule = model.thresholds["lfw"]
    rule.accuracy = rule.exact_accuracy = 0.5           # a model file records them; the toy's are not measured
    model_file = save_model(model, tmp / "toy.model.npz")
    images = _photos(model, 12, seed=3)
    e = model.embed(preprocess(np.stack(images), model.input_size))
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    c = model.thresholds["lfw"].cosine_for_fold(None)
    # alice and bob: far apart; alice's second photo: close to her first
    a = 0
    b = next(j for j in range(1, len(images)) if u[a] @ u[j] < c - 0.15)
    paths = {}
    for key, i in (("alice", a), ("bob", b)):
        paths[key] = tmp / f"{key}.png"
        Image.fromarray(images[i]).save(paths[key])
    service = Service(model_file, tmp / "state")
    service.start()
    yield {"tmp": tmp, "service": service, "paths": paths, "home": tmp / "home", "model": model}
    service.stop()


def cli(world, *args: str) -> int:
    return main([*args, "--home", str(world["home"]), "--insecure"])


def test_end_to_end_keygen_enroll_verify_identify_restart(world, capsys):
    service, paths, home = world["service"], world["paths"], world["home"]
    assert cli(world, "keygen", "--server", service.url) == SAME
    key = home / "secret.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    # the server's state holds public keys only: no secret-key object anywhere in it
    for f in (service.state).rglob("*"):
        if f.is_file():
            assert b'"secret_key"' not in f.read_bytes()
    assert cli(world, "keygen") == ERROR                  # never overwritten unless asked
    assert "secret key already" in capsys.readouterr().err

    assert cli(world, "enroll", "alice", str(paths["alice"])) == SAME
    assert cli(world, "enroll", "bob", str(paths["bob"])) == SAME
    assert cli(world, "enroll", "bob", str(paths["bob"])) == ERROR   # a taken name: refused, 409
    assert "409" in capsys.readouterr().err
    assert cli(world, "verify", "alice", str(paths["alice"])) == SAME
    assert cli(world, "verify", "bob", str(paths["alice"])) == DIFFERENT
    capsys.readouterr()
    assert cli(world, "identify", str(paths["bob"])) == SAME
    assert capsys.readouterr().out.split() == ["bob"]
    assert cli(world, "names") == SAME
    assert capsys.readouterr().out.split() == ["alice", "bob"]

    service.stop()                                          # a restart keeps the keys and the templates
    service.start()
    with ServiceClient(home=home, allow_insecure=True) as client:
        assert client.health()["keys_installed"] and client.health()["enrolled"] == 2
        assert client.verify("alice", paths["alice"]) == "same"
        assert client.verify("alice", paths["bob"]) == "different"


def test_bad_requests_get_their_4xx(world):
    service, paths, home = world["service"], world["paths"], world["home"]
    if not (home / "secret.key").is_file():
        pytest.skip("needs the keys of the end-to-end test")
    url = service.url
    with ServiceClient(home=home, allow_insecure=True) as client:
        _, good = client._face(paths["alice"])
        # an unknown name
        with pytest.raises(ServiceError) as err:
            client.verify("nobody", paths["alice"])
        assert err.value.status == 404 and err.value.kind == "UnknownNameError"
    post = lambda path, body, **kw: httpx.post(url + path, content=body, timeout=60, **kw)  # noqa: E731
    # a wrong kind: the parameters where a face bundle belongs, a bundle of parameters where ciphertexts belong
    params_blob = serialize.dump(presets.get(PRESET, allow_insecure=True))
    r = post("/verify", params_blob, params={"name": "alice"})
    assert r.status_code == 400 and r.json()["error"] == "SerializationError"
    r = post("/verify", wire.pack_list([params_blob] * 3), params={"name": "alice"})
    assert r.status_code in (400, 422), r.text
    # truncated
    r = post("/verify", good[:-100], params={"name": "alice"})
    assert r.status_code == 400 and "checksum" in r.json()["message"]
    # a face of other parameters
    from cryptoface.encrypted import Client

    other = presets.get("INSECURE_N12_QP900_L18_S40", allow_insecure=True)
    stranger = Client(other, world["model"])
    faces = wire.unpack_list(good)
    ct = stranger._encryptor.encrypt(stranger._encoder.encode(np.zeros(other.slots)))
    r = post("/verify", wire.pack_list([serialize.dump(ct)] + faces[1:]), params={"name": "alice"})
    assert r.status_code == 422 and r.json()["error"] == "KeyMismatchError", r.text
    # the wrong number of ciphertexts
    r = post("/verify", wire.pack_list(faces[:-1]), params={"name": "alice"})
    assert r.status_code == 422 and r.json()["error"] == "ShapeError"
    # a body over the limit: refused from its declared length, or while it streams in (chunked, no length)
    limit = httpx.get(url + "/info").json()["face_limit"]
    assert limit < 64 << 20
    r = post("/verify", b"\0" * (limit + 1), params={"name": "alice"})
    assert r.status_code == 413
    r = post("/verify", (b"\0" * (1 << 20) for _ in range(limit // (1 << 20) + 2)), params={"name": "alice"})
    assert r.status_code == 413
    # keys of other parameters; keys of another key holder while templates made under ours are stored
    r = httpx.put(url + "/keys", content=wire.pack({"public": serialize.dump(stranger._keygen.public_key())}))
    assert r.status_code == 422 and r.json()["error"] == "KeyMismatchError"
    rival = Client(presets.get(PRESET, allow_insecure=True), world["model"])
    r = httpx.put(url + "/keys", content=wire.pack({"public": serialize.dump(rival._keygen.public_key())}))
    assert r.status_code == 409 and "delete them" in r.json()["message"]
    # a bad name, a missing parameter
    r = post("/enroll", good, params={"name": "a\tb"})
    assert r.status_code == 400 and r.json()["error"] == "StoreError"
    assert httpx.delete(url + "/templates", params={"name": "nobody"}).status_code == 404
    assert httpx.get(url + "/health").json()["enrolled"] == 2             # nothing above changed the gallery


def test_two_clients_at_once_and_delete(world):
    service, paths, home = world["service"], world["paths"], world["home"]
    if not (home / "secret.key").is_file():
        pytest.skip("needs the keys of the end-to-end test")
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def run(tag: str, name: str, photo: Path) -> None:
        try:
            with ServiceClient(home=home, allow_insecure=True) as client:
                results[tag] = client.verify(name, photo)
        except BaseException as exc:          # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("a", "alice", paths["alice"])),
               threading.Thread(target=run, args=("b", "bob", paths["alice"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    if errors:
        raise errors[0]
    assert results == {"a": "same", "b": "different"}
    assert cli(world, "delete", "bob") == SAME
    with ServiceClient(home=home, allow_insecure=True) as client:
        assert client.names() == ["alice"]
        with pytest.raises(ServiceError) as err:
            client.verify("bob", paths["alice"])
        assert err.value.status == 404


def test_the_client_refuses_a_readable_key_and_insecure_parameters(world, tmp_path):
    home = world["home"]
    if not (home / "secret.key").is_file():
        pytest.skip("needs the keys of the end-to-end test")
    with pytest.raises(SecurityError):                # toy parameters are refused unless asked for
        ServiceClient(home=home).home.client(allow_insecure=False)
    copy = tmp_path / "home"
    copy.mkdir()
    for f in home.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    os.chmod(copy / "secret.key", 0o644)
    with pytest.raises(ServiceError, match="readable by others"):
        ServiceClient(home=copy, allow_insecure=True).home.client(allow_insecure=True)
