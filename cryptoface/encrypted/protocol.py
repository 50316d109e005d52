"""The two roles: a Client that owns the secret key and a Server that never has it.

Everything between them is bytes in the versioned format of
:mod:`fhe_ckks.serialize` (ciphertexts, keys, parameters) or plain JSON (the
server's public description of what it needs).  A session::

    server = Server(model, params)                       # model file + public parameters
    client = Client(params)                              # secret key stays here
    server.install_keys(client.evaluation_keys(server.key_request()))
    server.enroll("alice", client.encrypt_face(face_a, server.public_info()))      # offline
    answer = server.verify(client.encrypt_face(probe, server.public_info()), "alice")
    same = client.decide(answer)                         # only the sign is learned

The server runs each patch group's chain (placing bootstraps by the plan) in
its own worker process (forked after the keys are installed, so the workers
share them), sums the groups, normalises, and matches.  It accepts a bootstrapper: the real
:class:`fhe_ckks.bootstrap.Bootstrapper` (public keys only) or, only when
``testing=True``, the :class:`~fhe_ckks.bootstrap.SecretKeyBootstrapper`
double, which holds a secret key and so must never be used otherwise.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fhe_ckks import serialize
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
from fhe_ckks.ckks.ciphertext import Ciphertext
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.encryptor import Decryptor, Encryptor
from fhe_ckks.ckks.evaluator import Evaluator
from fhe_ckks.errors import KeyMismatchError, LevelError, MissingKeyError, SecurityError, ShapeError
from fhe_ckks.nn.layout import TensorLayout
from fhe_ckks.nn.planner import EncryptedModel, Plan
from fhe_ckks.rlwe.keys import KeyGenerator, SecretKey
from fhe_ckks.rlwe.params import Parameters

from ..data import split_patches
from ..errors import ModelError
from ..model import FusedPatchCNN
from .matching import MATCH_DEPTH, NORMALISE_DEPTH, match_score, normalise, scaled_coefficients, sum_steps
from .network import PatchGroup, build_group, group_patches


@dataclass
class KeyRequest:
    """The evaluation keys a server's plan needs, and nothing more.

    ``levels[step]`` is the highest level at which the plan rotates by ``step``; a key
    generated for that level only carries the primes it needs (a key for the last
    layers is a fraction of a top-level key).
    """

    rotations: list[int]
    relinearisation: bool = True
    conjugation: bool = False
    levels: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"rotations": self.rotations, "relinearisation": self.relinearisation,
                           "conjugation": self.conjugation, "levels": {str(k): v for k, v in self.levels.items()}})

    @classmethod
    def from_json(cls, text: str) -> "KeyRequest":
        d = json.loads(text)
        return cls([int(s) for s in d["rotations"]], bool(d["relinearisation"]), bool(d["conjugation"]),
                   {int(k): int(v) for k, v in d.get("levels", {}).items()})


@dataclass
class Stats:
    """Operation counts and timings of the server's last evaluation."""

    seconds: dict[str, float] = field(default_factory=dict)
    key_switches: int = 0
    bootstraps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "key_switches": self.key_switches, "bootstraps": self.bootstraps}


class Server:
    """Holds the model, the evaluation keys and the encrypted gallery; cannot decrypt."""

    def __init__(self, model: FusedPatchCNN, params: Parameters, bootstrapper=None,
                 patches_per_ciphertext: int | None = None, dataset: str = "lfw", fold: int | None = None,
                 testing: bool = False, workers: int | None = None):
        """``dataset`` and ``fold`` pick the decision rule: the 1/sqrt polynomial and threshold fitted for that
        dataset (on the folds other than ``fold``, for honest k-fold figures; on all folds when ``None``).
        ``workers``: processes for the patch groups (default: one per core, at most one per group; 1 runs
        them in this process)."""
        if isinstance(bootstrapper, SecretKeyBootstrapper) and not testing:
            raise SecurityError("the SecretKeyBootstrapper holds a secret key: servers accept it only with testing=True")
        if dataset not in model.thresholds:
            raise ModelError(f"model {model.name} has no threshold for {dataset!r}; export it with verification data")
        self.model, self.params, self.bootstrapper = model, params, bootstrapper
        self.tau, self.norm = model.thresholds[dataset].for_fold(fold)
        self.output_scale, self.norm_coefficients = scaled_coefficients(self.norm)
        self.groups: list[PatchGroup] = [build_group(model, g, self.output_scale)
                                         for g in group_patches(model, params.slots, patches_per_ciphertext)]
        self.models = [EncryptedModel(g.layers, params.max_level, bootstrapper) for g in self.groups]
        self.plans: list[Plan] = [m.plan for m in self.models]
        self.gallery: dict[str, Ciphertext] = {}
        self.evaluator: Evaluator | None = None
        self.encoder = Encoder(params)
        self.stats = Stats()
        self.workers = max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))

    # ---- what the client needs to know -------------------------------------------------

    def key_request(self) -> KeyRequest:
        """Every rotation step of the plan, each with the highest level it is used at."""
        levels: dict[int, int] = {}

        def need(steps, level):
            for step in steps:
                levels[step] = max(levels.get(step, -1), level)

        for m in self.models:
            for step, lvl in m.key_levels().items():
                need((step,), lvl)
        end = min(m.plan.output_level for m in self.models)
        if end < NORMALISE_DEPTH + MATCH_DEPTH and self.bootstrapper is not None:
            end = self.bootstrapper.output_level
        need(sum_steps(self.model.embedding_dim), end)
        return KeyRequest(sorted(levels), levels=levels)

    def public_info(self) -> dict[str, Any]:
        return {"model": self.model.name, "input_size": self.model.input_size, "patch_size": self.model.patch_size,
                "groups": [g.patches for g in self.groups], "params": self.params.fingerprint.hex()}

    def install_keys(self, keys: dict[str, bytes]) -> None:
        relin = serialize.load(keys["relin"], self.params)
        galois = serialize.load(keys["galois"], self.params)
        if isinstance(relin, SecretKey) or isinstance(galois, SecretKey):
            raise SecurityError("a server never takes a secret key")
        for key in (relin, *galois.keys.values()):
            _ = key.a  # expand the seeded halves now: forked workers then share them instead of each expanding
        self.evaluator = Evaluator(self.params, relin, galois)

    # ---- evaluation ----------------------------------------------------------------------

    def _ev(self) -> Evaluator:
        if self.evaluator is None:
            raise MissingKeyError("install the client's evaluation keys first")
        return self.evaluator

    def embed(self, face: Sequence[bytes | Ciphertext]) -> Ciphertext:
        """Encrypted, normalised embedding of one encrypted face (one ciphertext per patch group)."""
        ev = self._ev()
        if len(face) != len(self.groups):
            raise ShapeError(f"expected {len(self.groups)} ciphertexts (one per patch group), got {len(face)}")
        self.stats = Stats()
        cts = []
        for blob in face:
            ct = serialize.load(blob, self.params) if isinstance(blob, (bytes, bytearray)) else blob
            if not isinstance(ct, Ciphertext):
                raise ShapeError("a face is a list of ciphertexts")
            if ct.level < self.params.max_level:
                raise LevelError(f"a fresh face ciphertext is at level {self.params.max_level}, got {ct.level}")
            cts.append(ct)
        t0 = time.perf_counter()
        total = None
        for i, (out, seconds) in enumerate(self._run_groups(cts)):
            for name, sec in seconds.items():
                self.stats.seconds[f"group {i}: {name}"] = sec
            self.stats.key_switches += self.plans[i].counts["key_switches"]
            self.stats.bootstraps += self.plans[i].bootstraps
            total = out if total is None else ev.add(total, out)
        self.stats.seconds["network"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if total.level < NORMALISE_DEPTH + MATCH_DEPTH:
            if self.bootstrapper is None:
                raise LevelError(f"{total.level} levels left, normalising and matching need "
                                 f"{NORMALISE_DEPTH + MATCH_DEPTH}; give the server a bootstrapper")
            total = self.bootstrapper.bootstrap(total)
            self.stats.bootstraps += 1
        out = normalise(ev, total, self.model.embedding_dim, self.norm_coefficients)
        self.stats.seconds["normalise"] = time.perf_counter() - t0
        self.stats.key_switches += 2 + len(sum_steps(self.model.embedding_dim))
        return out

    def _run_group(self, i: int, ct: Ciphertext) -> tuple[Ciphertext, dict[str, float]]:
        seconds: dict[str, float] = {}
        out = self.models[i].run(self._ev(), self.encoder, ct, seconds)
        return out, seconds

    def _run_groups(self, cts: list[Ciphertext]) -> list[tuple[Ciphertext, dict[str, float]]]:
        """Each patch group's chain; in ``workers`` forked processes when there are several groups.

        The children are forked after the keys are installed, so they share the parent's
        evaluation keys and plaintext diagonals (copy-on-write, read only) instead of copying
        them; each sends back its group's output ciphertext in the serialized format.
        """
        workers = min(self.workers, len(cts))
        if workers <= 1 or "fork" not in mp.get_all_start_methods():
            return [self._run_group(i, ct) for i, ct in enumerate(cts)]
        global _FORKED_SERVER
        _FORKED_SERVER = self
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                results = pool.starmap(_group_in_child, [(i, serialize.dump(ct)) for i, ct in enumerate(cts)],
                                       chunksize=1)
        finally:
            _FORKED_SERVER = None
        return [(serialize.load(blob, self.params), seconds) for blob, seconds in results]

    def enroll(self, name: str, face: Sequence[bytes | Ciphertext]) -> None:
        self.gallery[name] = self.embed(face)

    def verify(self, face: Sequence[bytes | Ciphertext], name: str) -> bytes:
        if name not in self.gallery:
            raise KeyError(f"no template enrolled as {name!r}")
        return self.match(self.embed(face), name)

    def match(self, probe: Ciphertext, name: str) -> bytes:
        """The blinded answer for an already embedded probe (:meth:`embed`) against one template."""
        if name not in self.gallery:
            raise KeyError(f"no template enrolled as {name!r}")
        return self._answer(probe, self.gallery[name])

    def identify(self, face: Sequence[bytes | Ciphertext]) -> dict[str, bytes]:
        probe = self.embed(face)
        return {name: self._answer(probe, tpl) for name, tpl in self.gallery.items()}

    def _answer(self, probe: Ciphertext, template: Ciphertext) -> bytes:
        t0 = time.perf_counter()
        out = match_score(self._ev(), self.encoder, probe, template, self.model.embedding_dim, self.tau)
        self.stats.seconds["match"] = time.perf_counter() - t0
        self.stats.key_switches += 1 + len(sum_steps(self.model.embedding_dim))
        return serialize.dump(out)


_FORKED_SERVER: "Server | None" = None


def _group_in_child(i: int, blob: bytes) -> tuple[bytes, dict[str, float]]:
    server = _FORKED_SERVER
    assert server is not None, "runs only in a child forked by Server._run_groups"
    out, seconds = server._run_group(i, serialize.load(blob, server.params))
    return serialize.dump(out), seconds


class Client:
    """Owns the secret key: makes the keys a server asks for, encrypts faces, decrypts decisions."""

    def __init__(self, params: Parameters, seed: bytes | None = None):
        self.params = params
        self._keygen = KeyGenerator(params, seed=seed)
        self._encoder = Encoder(params)
        self._encryptor = Encryptor(params, self._keygen.secret_key)      # symmetric: half the upload
        self._decryptor = Decryptor(params, self._keygen.secret_key)

    @property
    def secret_key(self) -> SecretKey:
        return self._keygen.secret_key

    def evaluation_keys(self, request: KeyRequest) -> dict[str, bytes]:
        """The relinearisation key and the requested Galois keys, each only up to the level it is used at."""
        by_level: dict[int | None, list[int]] = {}
        for step in request.rotations:
            by_level.setdefault(request.levels.get(step), []).append(step)
        galois = None
        for level, steps in sorted(by_level.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
            galois = self._keygen.galois_keys(steps, max_level=level, into=galois)
        if galois is None or request.conjugation:
            galois = self._keygen.galois_keys([], conjugate=request.conjugation, into=galois)
        return {"relin": serialize.dump(self._keygen.relin_key()), "galois": serialize.dump(galois)}

    def encrypt_face(self, image: np.ndarray, info: dict[str, Any]) -> list[bytes]:
        """One aligned, preprocessed face ``(3, S, S)`` in [-1, 1] -> one ciphertext per patch group."""
        x = np.asarray(image, dtype=np.float64)
        size, patch = info["input_size"], info["patch_size"]
        if x.shape != (3, size, size):
            raise ShapeError(f"the server's model takes (3, {size}, {size}) faces, got {x.shape}")
        if info["params"] != self.params.fingerprint.hex():
            raise KeyMismatchError("the server uses other parameters")
        patches = split_patches(x[None], patch)[:, 0]
        out = []
        for group in info["groups"]:
            layout = TensorLayout.stacked(len(group), 3, patch, patch)
            pt = self._encoder.encode(layout.pack(patches[group], self.params.slots))
            out.append(serialize.dump(self._encryptor.encrypt(pt)))
        return out

    def score(self, answer: bytes) -> float:
        ct = serialize.load(answer, self.params)
        return float(np.real(self._encoder.decode(self._decryptor.decrypt(ct, flooding_bits=20))[0]))

    def decide(self, answer: bytes) -> bool:
        """True = the same person (the blinded score is negative)."""
        return self.score(answer) < 0
