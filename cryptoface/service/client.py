"""The key holder's side of the service: a folder of keys and an HTTP client (httpx).

:class:`KeyHome` is the key holder's folder (default ``~/.cryptoface``, or ``$CRYPTOFACE_HOME``)::

    secret.key      the secret key, in fhe_ckks.serialize's format, mode 0600, never sent anywhere
    params.bin      the parameters the server announced (refused when insecure, unless asked)
    model.npz       the server's public model file (its digest checked against the server's)
    server.json     the server's address and its model's digest

:class:`ServiceClient` makes the keys (:meth:`~ServiceClient.keygen`: the secret key stays in the folder,
the evaluation keys go to the server), then enrolls, verifies and identifies photos: it reads the photo,
checks and encrypts the face (:class:`~cryptoface.encrypted.Client`), sends the ciphertexts and decrypts
the decision.  A photo is an aligned 112 x 112 crop (the ArcFace template) or an ordinary photo, which the
client aligns itself (:mod:`cryptoface.align`: MTCNN and a similarity transform).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fhe_ckks import serialize
from fhe_ckks.rlwe.keyplan import KeyPlan
from fhe_ckks.rlwe.keys import SecretKey
from fhe_ckks.rlwe.params import Parameters

from ..data import ALIGNED_SIZE, check_aligned, preprocess, read_image
from ..encrypted import Client
from ..errors import ModelError, ServiceError
from ..model import load_model
from ..encrypted import wire

log = logging.getLogger(__name__)

__all__ = ["KeyHome", "ServiceClient", "default_home", "read_face"]

SECRET_KEY = "secret.key"


def default_home() -> Path:
    return Path(os.environ.get("CRYPTOFACE_HOME") or Path.home() / ".cryptoface")


@dataclass
class KeyHome:
    """The key holder's folder (see the module docstring)."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    @property
    def exists(self) -> bool:
        return (self.path / SECRET_KEY).is_file()

    def save(self, secret_key: SecretKey, params: Parameters, model_file: bytes, server: dict[str, Any],
             force: bool = False) -> None:
        """Write the folder; the secret key with mode 0600, created exclusively unless ``force``."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = self.path / SECRET_KEY
        if force:
            key_path.unlink(missing_ok=True)
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ServiceError(f"{key_path} exists: a secret key is never overwritten unless asked (--force)") \
                from None
        with os.fdopen(fd, "wb") as f:
            f.write(serialize.dump(secret_key, include_secret=True))
        os.chmod(key_path, 0o600)                          # whatever the umask
        (self.path / "params.bin").write_bytes(serialize.dump(params))
        (self.path / "model.npz").write_bytes(model_file)
        (self.path / "server.json").write_text(json.dumps(server, indent=1, sort_keys=True))

    def server(self) -> dict[str, Any]:
        path = self.path / "server.json"
        if not path.is_file():
            raise ServiceError(f"{self.path} holds no keys: run 'cryptoface keygen' first")
        return json.loads(path.read_text())

    def client(self, allow_insecure: bool = False) -> Client:
        """The :class:`~cryptoface.encrypted.Client` of the saved key, parameters and model."""
        key_path = self.path / SECRET_KEY
        if not key_path.is_file():
            raise ServiceError(f"no secret key in {self.path}: run 'cryptoface keygen' first")
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ServiceError(f"{key_path} is readable by others (mode {mode:o}): chmod 600 it")
        params = serialize.load((self.path / "params.bin").read_bytes(), allow_insecure=allow_insecure)
        key = serialize.load(key_path.read_bytes(), params)
        if not isinstance(key, SecretKey):
            raise ServiceError(f"{key_path} does not hold a secret key")
        model = load_model(self.path / "model.npz")
        return Client(params, model, secret_key=key)


def read_face(photo: str | os.PathLike, size: int, mtcnn: str | os.PathLike | None = None) -> np.ndarray:
    """A photo -> the model's input ``(3, size, size)`` in [-1, 1].  A 112 x 112 image is taken as an aligned
    crop; any other is aligned first (:func:`cryptoface.align.align_photo`: MTCNN with the weights at ``mtcnn``,
    default ``~/.cryptoface/mtcnn.npz``); no face or several faces raise :class:`~cryptoface.errors.DataError`."""
    image = read_image(photo)
    if image.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
        from ..align import MTCNN, align_photo

        image = align_photo(image, MTCNN(mtcnn), str(photo))
    return preprocess(check_aligned(image, str(photo))[None], size)[0]


class ServiceClient:
    """Talks to a ``cryptoface serve`` over HTTP with the keys of a :class:`KeyHome`.

    Args:
        url: the server (default: the one the home was made for).
        home: the key holder's folder.
        allow_insecure: accept ``INSECURE_`` parameters from the server (toy tests only).
        timeout: seconds per request (None: no limit; encrypted evaluation takes minutes at 128 bits).
        transport: an httpx transport (tests).
    """

    def __init__(self, url: str | None = None, home: KeyHome | str | os.PathLike | None = None,
                 allow_insecure: bool = False, timeout: float | None = None, transport=None,
                 mtcnn: str | os.PathLike | None = None):
        try:
            import httpx
        except ImportError as exc:
            raise ImportError("the service client needs the 'service' extra: pip install 'cryptoface[service]'") \
                from exc
        self.home = home if isinstance(home, KeyHome) else KeyHome(default_home() if home is None else home)
        if url is None:
            url = self.home.server()["url"]
        self.url = url.rstrip("/")
        self.allow_insecure, self.mtcnn = allow_insecure, mtcnn
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._httpx = httpx
        self._client: Client | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- HTTP -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs):
        try:
            resp = self._http.request(method, path, **kwargs)
        except self._httpx.HTTPError as exc:
            raise ServiceError(f"{self.url}{path}: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            try:
                err = resp.json()
                kind, message = str(err.get("error", "")), str(err.get("message", err))
            except (ValueError, AttributeError):
                kind, message = "", resp.text[:200]
            raise ServiceError(f"{method} {path}: {resp.status_code} {kind}: {message}", resp.status_code, kind)
        return resp

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()

    def info(self) -> dict[str, Any]:
        return self._request("GET", "/info").json()

    def names(self) -> list[str]:
        return list(self._request("GET", "/templates").json()["names"])

    # ---- keys -----------------------------------------------------------------------

    def keygen(self, force: bool = False) -> None:
        """A new secret key in the home folder (0600), and the evaluation keys the server's plan asks for
        uploaded to it.  The parameters are refused when insecure (unless ``allow_insecure``) and the model
        file when its digest is not the server's."""
        info = self.info()
        params = serialize.load(self._request("GET", "/params").content, allow_insecure=self.allow_insecure)
        if not isinstance(params, Parameters) or params.fingerprint.hex() != info.get("params"):
            raise ServiceError("the server's parameters do not match its public info")
        model_file = self._request("GET", "/model").content
        plan = KeyPlan.from_json(self._request("GET", "/key-plan").text)
        probe_dir = self.home.path
        probe_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = probe_dir / "model.npz.download"
        tmp.write_bytes(model_file)
        try:
            model = load_model(tmp)
        finally:
            tmp.unlink(missing_ok=True)
        if model.digest() != info.get("model_digest"):
            raise ModelError("the server's model file does not have the digest the server announces")
        if self.home.exists and not force:
            raise ServiceError(f"{self.home.path} holds a secret key already (keygen --force replaces it)")
        client = Client(params, model)
        log.info("making the evaluation keys of %d rotations for %s", len(plan.steps), params.name)
        keys = client.evaluation_keys(plan)
        self._request("PUT", "/keys", content=wire.iter_pack(keys))     # streamed: gigabytes at 128 bits
        self.home.save(client.secret_key, params, model_file, {"url": self.url, "model_digest": info["model_digest"]},
                       force=force)
        self._client = client

    def _ready(self) -> tuple[Client, dict[str, Any]]:
        if self._client is None:
            self._client = self.home.client(self.allow_insecure)
        info = self.info()
        if info.get("model_digest") != self._client.model.digest():
            raise ModelError("the server now runs another model than the one these keys were made for")
        return self._client, info

    def _face(self, photo) -> tuple[Client, bytes]:
        client, info = self._ready()
        face = read_face(photo, info["input_size"], self.mtcnn) if not isinstance(photo, np.ndarray) else photo
        return client, wire.pack_list(client.encrypt_face(face, info))

    # ---- the calls ------------------------------------------------------------------

    def enroll(self, name: str, photo, replace: bool = False) -> None:
        """Enroll ``photo`` (a path to an aligned crop, or a preprocessed ``(3, S, S)`` face) as ``name``."""
        _, body = self._face(photo)
        self._request("POST", "/enroll", params={"name": name, "replace": str(bool(replace)).lower()},
                      content=body)

    def verify(self, name: str, photo) -> str:
        """``"same"`` or ``"different"`` (an invalid answer raises :class:`~cryptoface.errors.ProbeError`)."""
        client, body = self._face(photo)
        answer = self._request("POST", "/verify", params={"name": name}, content=body).content
        return "same" if client.decide(answer) else "different"

    def identify(self, photo) -> dict[str, str]:
        """``{name: "same" | "different" | "invalid"}`` over the enrolled names."""
        from .server import unpack_identification

        client, body = self._face(photo)
        batches = unpack_identification(self._request("POST", "/identify", content=body).content)
        return {name: outcome.kind for name, outcome in client.identification(batches).items()}

    def delete(self, name: str) -> None:
        self._request("DELETE", "/templates", params={"name": name})
