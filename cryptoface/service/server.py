"""``cryptoface serve``: the encrypted pipeline's :class:`~cryptoface.encrypted.Server` over HTTP (FastAPI).

The service holds the model, the key holder's evaluation keys (public material, kept in the state folder
so that a restart needs no new upload) and the template store (SQLite, in the same folder).  It never
holds a secret key.  Every body is binary: a face or the keys are a :mod:`.wire` bundle of objects in
:mod:`fhe_ckks.serialize`'s format, an answer is one serialized ciphertext (verification) or a bundle of
them by name (identification).

======  ==================  ===============================================  ==================
method  path                body                                             answer
======  ==================  ===============================================  ==================
GET     /health             --                                               JSON status
GET     /info               --                                               JSON: the server's public info, its model digest
GET     /params             --                                               the serialized parameters
GET     /model              --                                               the model file
GET     /key-plan           --                                               the key plan, JSON
PUT     /keys               bundle relin, galois, public[, encapsulation]    204
GET     /templates          --                                               JSON names
POST    /enroll?name=N      face bundle (``&replace=true`` to replace)       201
POST    /verify?name=N      face bundle                                      answer ciphertext
POST    /identify           face bundle                                      bundle: names k, answer k per batch
DELETE  /templates?name=N   --                                               204
======  ==================  ===============================================  ==================

Bad input gets a 4xx with ``{"error": type, "message": ...}``: a malformed body 400, a body over its
limit 413 (faces: what the parameters allow; keys: what the key plan allows), a face or key of other
parameters, levels or shape 422, an unknown name 404, a name taken or keys not installed 409.  The
:class:`~cryptoface.encrypted.Server` runs one evaluation at a time (its lock) while health, info
and the listing stay answerable; requests are served from FastAPI's thread pool.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run time.)
"""


import json
import logging
import mmap
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from fhe_ckks import serialize
from fhe_ckks.errors import (
    FheError,
    KeyMismatchError,
    LevelError,
    MissingKeyError,
    ParameterError,
    ScaleMismatchError,
    SecurityError,
    SerializationError,
    ShapeError,
)
from fhe_ckks.rlwe.keys import PublicKey
from fhe_ckks.rlwe.params import Parameters

from ..encrypted import Server
from ..errors import CryptoFaceError, NameTakenError, ProbeError, StoreError, UnknownNameError
from ..model import FusedPatchCNN
from ..store import SQLiteStore
from ..encrypted import wire

log = logging.getLogger(__name__)

__all__ = ["ServiceState", "create_app", "pack_identification", "status_of", "unpack_identification"]

KEYS_FILE = "evaluation_keys.bundle"
STORE_FILE = "templates.sqlite"
#: Slack over the largest honest body: framing, headers of the serialized objects.
BODY_SLACK = 1 << 20


def status_of(exc: BaseException) -> int:
    """The HTTP status of a typed error."""
    if isinstance(exc, UnknownNameError):
        return 404
    if isinstance(exc, (NameTakenError, MissingKeyError)):
        return 409
    if isinstance(exc, (KeyMismatchError, LevelError, ScaleMismatchError, ShapeError, ProbeError)):
        return 422
    if isinstance(exc, (SerializationError, SecurityError, ParameterError, StoreError)):
        return 400
    return 400


class ServiceState:
    """The :class:`~cryptoface.encrypted.Server` a service runs, with its keys and store in ``state_dir``.

    ``server_options`` go to the :class:`~cryptoface.encrypted.Server` (``dataset``, ``fold``, ``workers``,
    ``patches_per_ciphertext``); a store of another model, parameters or rule is refused there."""

    def __init__(self, model: FusedPatchCNN, params: Parameters, state_dir: str | os.PathLike,
                 **server_options: Any):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.model, self.params = model, params
        self.server = Server(model, params, store=SQLiteStore(self.state_dir / STORE_FILE), **server_options)
        self.key_id: bytes | None = None
        self._keys_lock = threading.Lock()
        self.face_limit = self._face_limit()
        self.key_limit = self._key_limit()
        path = self.state_dir / KEYS_FILE
        if path.is_file():
            self.install_key_file(path)
            log.info("installed the evaluation keys kept in %s", path)

    def _face_limit(self) -> int:
        p = self.params
        ct = 2 * (p.max_level + 1) * p.n * 8                 # a size-2 ciphertext at the top, both halves expanded
        return (len(self.server.groups) + 1) * (ct + BODY_SLACK) + BODY_SLACK

    def _key_limit(self) -> int:
        p = self.params
        plan = self.server.key_plan()
        rows = p.max_level + 1 + len(p.p_primes)
        per_key = 2 * p.digits * rows * p.n * 8 + BODY_SLACK   # a switching key, both halves expanded
        keys = len(plan.steps) + 2                           # the rotations, conjugation, relinearization
        extra = 0 if plan.encapsulation_weight is None else 2 * per_key
        return keys * per_key + extra + 2 * (p.max_level + 1) * p.n * 8 + BODY_SLACK

    def install_keys(self, body: bytes | memoryview, keep: Path | None = None) -> None:
        """Install a key bundle.  Keys under another secret key are refused while templates made under the
        installed ones are stored (delete them first).  ``keep``: the file ``body`` was read from, renamed to
        the state folder's key file once the keys are installed (what a restart installs again)."""
        entries = wire.unpack(body, copy=False)
        public = entries.get("public")
        if public is None:
            raise SerializationError("the key bundle has no 'public' entry")
        pk = serialize.load(public, self.params)
        if not isinstance(pk, PublicKey):
            raise SerializationError(f"the 'public' entry holds a {type(pk).__name__}")
        with self._keys_lock:
            if self.key_id is not None and pk.key_id != self.key_id and len(self.server.store):
                raise NameTakenError(f"{len(self.server.store)} templates are stored under the installed keys; "
                                     "delete them before installing another key holder's keys")
            self.server.install_keys(entries)
            self.key_id = pk.key_id
            if keep is not None:
                os.replace(keep, self.state_dir / KEYS_FILE)

    def install_key_file(self, path: Path) -> None:
        """Install the keys of a bundle file, memory-mapped (a multi-GB bundle is not read into memory)."""
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise SerializationError("an empty key bundle")
            error = None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    self.install_keys(view, keep=None if path == self.state_dir / KEYS_FILE else path)
                except (CryptoFaceError, FheError) as exc:
                    error = exc.with_traceback(None)    # its frames held slices of the mapping
                view.release()
            if error is not None:
                raise error

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model.name, "params": self.params.fingerprint.hex(),
                "keys_installed": self.key_id is not None, "enrolled": len(self.server.store)}

    def info(self) -> dict[str, Any]:
        return {**self.server.public_info(), "model_digest": self.model.digest(), "preset": self.params.name,
                "face_limit": self.face_limit, "key_limit": self.key_limit}

    def face(self, body: bytes) -> list[bytes]:
        return wire.unpack_list(body)




def pack_identification(batches) -> bytes:
    """:meth:`Server.identify`'s ``[(names, answer), ...]`` as one bundle: ``names k`` (a JSON list) and ``answer k``
    per batch."""
    entries: dict[str, bytes] = {}
    for k, (names, answer) in enumerate(batches):
        entries[f"names {k}"] = json.dumps(list(names)).encode()
        entries[f"answer {k}"] = answer
    return wire.pack(entries)


def unpack_identification(body: bytes) -> list[tuple[list[str], bytes]]:
    """The inverse of :func:`pack_identification`, every field checked."""
    entries = wire.unpack(body)
    count = len(entries) // 2
    if set(entries) != {f"{kind} {k}" for k in range(count) for kind in ("names", "answer")}:
        raise SerializationError("an identification answer holds 'names k' and 'answer k' for k = 0, 1, ...")
    out = []
    for k in range(count):
        try:
            names = json.loads(entries[f"names {k}"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise SerializationError(f"batch {k}'s names are not a JSON list") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SerializationError(f"batch {k}'s names are not a list of strings")
        out.append((names, entries[f"answer {k}"]))
    return out


def create_app(state: ServiceState, model_file: bytes):
    """The FastAPI application serving ``state`` (``model_file``: the bytes ``GET /model`` gives)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response
        from starlette.concurrency import run_in_threadpool
    except ImportError as exc:        # an optional extra
        raise ImportError("the service needs the 'service' extra: pip install 'cryptoface[service]'") from exc

    app = FastAPI(title="cryptoface", summary="encrypted face verification and identification")
    server = state.server

    class TooLarge(Exception):
        pass

    @app.exception_handler(CryptoFaceError)
    @app.exception_handler(FheError)
    async def typed_error(request, exc):
        log.info("%s %s refused: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(TooLarge)
    async def too_large(request, exc):
        return JSONResponse({"error": "RequestTooLarge", "message": str(exc)}, status_code=413)

    async def body(request: Request, limit: int, into=None) -> bytes:
        """The request's body (or written to the file ``into``), refused past ``limit`` bytes: from the
        declared length before reading, else as it streams in."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"the body has {int(declared)} bytes, this endpoint takes at most {limit}")
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the body exceeds the {limit} bytes this endpoint takes")
            if into is not None:
                into.write(chunk)
            else:
                parts.append(chunk)
        return b"".join(parts)

    def octets(data: bytes, status: int = 200) -> Response:
        return Response(content=data, media_type="application/octet-stream", status_code=status)

    @app.get("/health")
    def health():
        return state.health()

    @app.get("/info")
    def info():
        return state.info()

    @app.get("/params")
    def params():
        return octets(serialize.dump(state.params))

    @app.get("/model")
    def model():
        return octets(model_file)

    @app.get("/key-plan")
    def key_plan():
        return Response(content=server.key_plan().to_json(), media_type="application/json")

    @app.put("/keys", status_code=204)
    async def keys(request: Request):
        # streamed to a file beside the kept keys (a multi-GB body never sits in memory), installed from it
        # memory-mapped, and kept in place of the old keys only once installed
        fd, name = tempfile.mkstemp(dir=state.state_dir, prefix=KEYS_FILE + ".upload.")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                await body(request, state.key_limit, f)
                f.flush()
                os.fsync(f.fileno())
            await run_in_threadpool(state.install_key_file, path)
        finally:
            path.unlink(missing_ok=True)
        return Response(status_code=204)

    @app.get("/templates")
    def templates():
        return {"names": server.names()}

    @app.post("/enroll", status_code=201)
    async def enroll(request: Request, name: str, replace: bool = False):
        face = state.face(await body(request, state.face_limit))
        await run_in_threadpool(server.enroll, name, face, None, replace)
        return JSONResponse({"name": name}, status_code=201)

    @app.post("/verify")
    async def verify(request: Request, name: str):
        face = state.face(await body(request, state.face_limit))
        return octets(await run_in_threadpool(server.verify, face, name))

    @app.post("/identify")
    async def identify(request: Request):
        face = state.face(await body(request, state.face_limit))
        batches = await run_in_threadpool(server.identify, face)
        return octets(pack_identification(batches))

    @app.delete("/templates", status_code=204)
    def delete(name: str):
        server.delete(name)
        return Response(status_code=204)

    return app


def serve(state: ServiceState, model_file: bytes, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError("the service needs the 'service' extra: pip install 'cryptoface[service]'") from exc
    log.info("serving %s at %s on http://%s:%d (state in %s)", state.model.name, state.params.name, host, port,
             state.state_dir)
    uvicorn.run(create_app(state, model_file), host=host, port=port, log_level="info")

