"""The measuring harness: both roles in one process, for the benchmarks and ``benchmarks/run_lfw.py`` only.

A real deployment keeps :class:`~cryptoface.encrypted.protocol.Client` and
:class:`~cryptoface.encrypted.protocol.Server` on different machines.  To
*measure* encrypted verification, :class:`MeasuringHarness` holds both, runs one
pair as the protocol does (the first face enrolled offline, the second
verified online, the client learning only the decision) and then,
because it also holds the secret key, decrypts the probe's normalized
embedding to report its error against the fused plaintext model.

On ``INSECURE_`` presets (tests only: too few levels for a real 8-slot
bootstrap after the network) the decision's bootstrap is the secret-key
double, and every result says so (``decision_bootstrap``).  Nothing in
the server path sees that decryption: no module of the protocol, the network or
the matching imports this one (``tests/test_architecture.py`` checks it), and a
:class:`Server` never holds a reference to a harness.  Never deploy it.
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fhe_ckks import serialize
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.encryptor import Decryptor
from fhe_ckks.rlwe.params import Parameters

from fhe_ckks.ckks.ciphertext import Ciphertext

from ..errors import ProbeError
from ..model import FusedPatchCNN
from .protocol import Client, Server, Stats


@dataclass
class EmbeddedFace:
    """One face encrypted by the client and embedded by the server, with what it cost; kept to be used in
    every pair that names it (each distinct image is embedded once)."""

    ciphertext: Ciphertext
    unit: np.ndarray                   # the plaintext model's unit embedding of the same face
    error_bits: float                  # -log2 of the max error of the decrypted normalized embedding
    encrypt_seconds: float
    embed_seconds: float               # wall time of the embedding call it was part of
    batch: int                         # faces embedded in that call (side by side on a cluster)
    layer_seconds: dict[str, float]
    key_switches: int
    bootstraps: int
    upload_bytes: int


@dataclass
class PairResult:
    """One encrypted verification and what it cost."""

    decision_encrypted: bool           # the encrypted outcome is "same"
    decision_plaintext: bool           # the exact cosine rule in plaintext says "same"
    outcome: str                       # the encrypted outcome: "same", "different" or "invalid"
    plaintext_margin: float            # c - cos(a, b) in plaintext (negative: same person)
    embedding_error_bits: float        # -log2 of the max error of the decrypted normalized probe embedding
    enrollment_seconds: dict[str, float]
    verification_seconds: dict[str, float]
    layer_seconds: dict[str, float]
    key_switches: int
    bootstraps: int
    upload_bytes: int                  # the probe's ciphertexts, client -> server
    answer_bytes: int                  # the answer, server -> client
    decision_bootstrap: str = "real"   # or "secret-key double" (INSECURE_ presets only)

    @property
    def agrees(self) -> bool:
        return self.outcome == ("same" if self.decision_plaintext else "different")

    def as_dict(self) -> dict[str, Any]:
        return {"decision_encrypted": self.decision_encrypted, "decision_plaintext": self.decision_plaintext,
                "outcome": self.outcome, "agrees": self.agrees, "plaintext_margin": self.plaintext_margin,
                "embedding_error_bits": self.embedding_error_bits,
                "enrollment_seconds": self.enrollment_seconds, "verification_seconds": self.verification_seconds,
                "layer_seconds": self.layer_seconds, "key_switches": self.key_switches,
                "bootstraps": self.bootstraps, "upload_bytes": self.upload_bytes, "answer_bytes": self.answer_bytes,
                "decision_bootstrap": self.decision_bootstrap}


class MeasuringHarness:
    """A client and a server in one process, to measure one pair at a time (never a deployment: see the
    module docstring)."""

    def __init__(self, model: FusedPatchCNN, params: Parameters, *, workers: int | None = None,
                 dataset: str = "lfw", fold: int | None = None, seed: bytes | None = None, backend=None,
                 keygen_progress: Callable[[int, int], None] | None = None):
        """``backend``: where the server's tasks run (a :class:`~cryptoface.encrypted.backends.Backend` or
        its name; default local); ``keygen_progress(done, total)``: called after each evaluation key."""
        self.model, self.params, self.dataset, self.fold = model, params, dataset, fold
        self.setup_seconds: dict[str, float] = {}
        self.client = Client(params, model, seed=seed)      # an honest client checks its faces
        testing = params.name.startswith("INSECURE_")
        # the double returns on the user levels, where a real decision bootstrap lands (Parameters.user_top)
        double = SecretKeyBootstrapper(params, self.client.secret_key, params.user_top) if testing else None
        self.decision_bootstrap = "secret-key double" if testing else "real"
        t0 = time.perf_counter()
        self.server = Server(model, params, workers=workers, dataset=dataset, fold=fold, testing=testing,
                             decision_bootstrapper=double, backend=backend)
        self.setup_seconds["server_plan"] = time.perf_counter() - t0
        self.key_plan = self.server.key_plan()
        t0 = time.perf_counter()
        keys = self.client.evaluation_keys(self.key_plan, keygen_progress)
        self.setup_seconds["keygen"] = time.perf_counter() - t0
        self.key_bytes = {name: len(blob) for name, blob in keys.items()}
        t0 = time.perf_counter()
        self.server.install_keys(keys)
        self.setup_seconds["install_keys"] = time.perf_counter() - t0
        self.server_key_bytes = self.server.key_memory_bytes()
        self._encoder, self._decryptor = Encoder(params), Decryptor(params, self.client.secret_key)

    def verify_pair(self, first: np.ndarray, second: np.ndarray,
                    online: AbstractContextManager | None = None) -> PairResult:
        """Enroll ``first`` (offline), verify ``second`` against it (online); preprocessed (3, S, S) faces.

        ``online``: a context the online verification runs in (e.g. a memory sampler).
        """
        info = self.server.public_info()
        enroll: dict[str, float] = {}
        verify: dict[str, float] = {}

        def timed(into, name, fn):
            t0 = time.perf_counter()
            out = fn()
            into[name] = time.perf_counter() - t0
            return out

        template = timed(enroll, "encrypt", lambda: self.client.encrypt_face(first, info))
        timed(enroll, "embed", lambda: self.server.enroll("template", template, replace=True))
        stats = Stats()     # the online verification's own counts: embedding and decision
        with online if online is not None else nullcontext():
            t_all = time.perf_counter()
            probe = timed(verify, "encrypt", lambda: self.client.encrypt_face(second, info))
            emb = timed(verify, "embed", lambda: self.server.embed(probe, stats))
            layers = dict(stats.seconds)
            answer = timed(verify, "match", lambda: self.server.match(emb, "template", stats))
            outcome = timed(verify, "decrypt", lambda: self.client.outcome(answer)).kind
            verify["total"] = time.perf_counter() - t_all
        layers.update({k: v for k, v in stats.seconds.items() if k.startswith("decision")})

        got = np.real(self._encoder.decode(self._decryptor.decrypt(emb)))[:self.model.embedding_dim]
        e = self.model.embed(np.stack([second, first]))
        unit = e / np.linalg.norm(e, axis=1, keepdims=True)
        err = float(np.max(np.abs(got - unit[0])))          # the unit vector's entries: an absolute error
        margin = float(self.server.cos_threshold - unit[0] @ unit[1])
        return PairResult(
            decision_encrypted=outcome == "same", decision_plaintext=bool(margin <= 0), outcome=outcome,
            plaintext_margin=margin, embedding_error_bits=-math.log2(err) if err > 0 else 64.0,
            enrollment_seconds=enroll, verification_seconds=verify, layer_seconds=layers,
            key_switches=stats.key_switches, bootstraps=stats.bootstraps,
            upload_bytes=sum(len(c) for c in probe), answer_bytes=len(answer),
            decision_bootstrap=self.decision_bootstrap)


    def embed_faces(self, faces: Sequence[np.ndarray]) -> list[EmbeddedFace | ProbeError]:
        """Encrypt each preprocessed ``(3, S, S)`` face (the client) and embed them all in one call (the
        server: on a cluster, side by side); a face the honest client refuses comes back as its
        :class:`~cryptoface.errors.ProbeError`."""
        info = self.server.public_info()
        blobs: list[list[bytes]] = []
        encrypt: list[float] = []
        out: list[EmbeddedFace | ProbeError | None] = []
        for face in faces:
            t0 = time.perf_counter()
            try:
                blobs.append(self.client.encrypt_face(face, info))
            except ProbeError as exc:
                out.append(exc)
                continue
            encrypt.append(time.perf_counter() - t0)
            out.append(None)
        stats = [Stats() for _ in blobs]
        t0 = time.perf_counter()
        cts = self.server.embed_many(blobs, stats) if blobs else []
        wall = time.perf_counter() - t0
        kept = [f for f, o in zip(faces, out) if o is None]
        e = self.model.embed(np.stack(kept)) if kept else np.empty((0, self.model.embedding_dim))
        units = e / np.linalg.norm(e, axis=1, keepdims=True)
        made = iter(zip(cts, units, encrypt, blobs, stats))
        for j, o in enumerate(out):
            if o is not None:
                continue
            ct, unit, enc_s, blob, st = next(made)
            got = np.real(self._encoder.decode(self._decryptor.decrypt(ct)))[:self.model.embedding_dim]
            err = float(np.max(np.abs(got - unit)))
            out[j] = EmbeddedFace(ct, unit, -math.log2(err) if err > 0 else 64.0, enc_s, wall, len(blobs),
                                  dict(st.seconds), st.key_switches, st.bootstraps, sum(len(c) for c in blob))
        return out

    def decide(self, pairs: Sequence[tuple[EmbeddedFace, EmbeddedFace, int | None]]) -> list[PairResult]:
        """``(probe, template, fold)`` triples of embedded faces decided in one call (on a cluster, side by
        side), each with the rule's threshold for its fold (the server's own when None), and the client's
        reading of each answer.  A pair's costs: the template's embedding as its enrollment, the probe's
        embedding, the decision and the decryption as its online verification."""
        stats = [Stats() for _ in pairs]
        t0 = time.perf_counter()
        answers = self.server.match_many([(p.ciphertext, t.ciphertext) for p, t, _ in pairs], stats,
                                         [f for _, _, f in pairs])
        match = time.perf_counter() - t0
        out = []
        for (probe, template, fold), answer, st in zip(pairs, answers, stats):
            t0 = time.perf_counter()
            outcome = self.client.outcome(answer).kind
            decrypt = time.perf_counter() - t0
            margin = float(self.server.decision_for(fold).c - probe.unit @ template.unit)
            verify = {"encrypt": probe.encrypt_seconds, "embed": probe.embed_seconds, "match": match,
                      "decrypt": decrypt}
            verify["total"] = sum(verify.values())
            layers = {**probe.layer_seconds, **{k: v for k, v in st.seconds.items() if k.startswith("decision")}}
            out.append(PairResult(
                decision_encrypted=outcome == "same", decision_plaintext=bool(margin <= 0), outcome=outcome,
                plaintext_margin=margin, embedding_error_bits=probe.error_bits,
                enrollment_seconds={"encrypt": template.encrypt_seconds, "embed": template.embed_seconds},
                verification_seconds=verify, layer_seconds=layers, key_switches=probe.key_switches + st.key_switches,
                bootstraps=probe.bootstraps + st.bootstraps, upload_bytes=probe.upload_bytes,
                answer_bytes=len(answer), decision_bootstrap=self.decision_bootstrap))
        return out


def gallery_record(harness: MeasuringHarness, embedding: np.ndarray) -> bytes:
    """A stored template record encrypted by the key holder from a plaintext embedding (benchmarks only: a
    1,000-person gallery enrolled through the server would take days here).  It holds what
    :meth:`Server.enroll` stores for that face up to the network's error (2^-19): the unit embedding in the
    replicated layout, its spread, and the enrollment check's value 4 (a valid template) in every slot.  The
    identification under measurement runs on it exactly as on enrolled templates."""
    from . import wire
    from .matching import spread_plain

    server, client = harness.server, harness.client
    e = np.asarray(embedding, dtype=np.float64).reshape(-1)
    e = e / np.linalg.norm(e)
    dim, slots = harness.model.embedding_dim, harness.params.slots
    period = slots // server.gallery.batch
    replicated = np.zeros(period)
    replicated[:dim] = e
    enc, encryptor = client._encoder, client._encryptor

    def ct(values, level):
        return serialize.dump(encryptor.encrypt(enc.encode(values, level=level)))

    return wire.pack({"template": ct(np.tile(replicated, slots // period), server.hint_level - 1),
                      "spread": ct(spread_plain(e, dim, slots), server.hint_level - 2),
                      "check": ct(np.full(slots, 4.0), server.check_level)})
