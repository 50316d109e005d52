"""The two roles: a Client that owns the secret key and a Server that never has it.

Everything between them is bytes in the versioned format of
:mod:`fhe_ckks.serialize` (ciphertexts, keys, parameters) or plain JSON (the
server's public description of what it needs).  A session::

    server = Server(model, params)                       # model file + public parameters
    client = Client(params)                              # secret key stays here
    server.install_keys(client.evaluation_keys(server.key_plan()))
    server.enroll("alice", client.encrypt_face(face_a, server.public_info()))      # offline
    answer = server.verify(client.encrypt_face(probe, server.public_info()), "alice")
    same = client.decide(answer)                         # only the sign is learned

The server runs each patch group's chain (placing bootstraps by the plan) in
its own worker process (forked after the keys are installed, so the workers
share them), sums the groups, normalizes, and matches (the tail layers of
:mod:`.matching`, planned like the network).  It accepts a bootstrapper: the real
:class:`fhe_ckks.bootstrap.Bootstrapper` (public keys only) or, only when
``testing=True``, the :class:`~fhe_ckks.bootstrap.SecretKeyBootstrapper`
double, which holds a secret key and so must never be used otherwise.
"""

from __future__ import annotations

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
from fhe_ckks.rlwe.keyplan import KeyPlan
from fhe_ckks.rlwe.keys import KeyGenerator, SecretKey
from fhe_ckks.rlwe.params import Parameters

from ..data import split_patches
from ..errors import ModelError
from ..model import FusedPatchCNN
from .matching import Match, Normalize, scaled_coefficients
from .network import PatchGroup, build_group, group_patches

#: The parameter preset the encrypted pipeline runs at by default: 128-bit, N = 2^16, levelled (29 levels at
#: 2^38: 23 for a patch network, 4 for the 1/sqrt normalization, 2 for matching), so no bootstrap at all.
DEFAULT_PRESET = "N16_QP1762_L29_S38"


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
        # the tail: normalization, then matching against a template; any bootstrap goes before it
        self.normalize = Normalize(model.embedding_dim, self.norm_coefficients)
        self.matcher = Match(model.embedding_dim, self.tau)
        self.tail = EncryptedModel([self.normalize], min(p.output_level for p in self.plans), bootstrapper,
                                   reserve=self.matcher.depth())
        self.gallery: dict[str, Ciphertext] = {}
        self.evaluator: Evaluator | None = None
        self.encoder = Encoder(params)
        self.stats = Stats()
        self.workers = max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))

    # ---- what the client needs to know, and what evaluation costs -------------------------

    def key_plan(self) -> KeyPlan:
        """Every evaluation key of the plan: each rotation step with the highest level it is used at."""
        return KeyPlan.merge([*(m.key_plan() for m in self.models), self.tail.key_plan(),
                              self.matcher.key_plan(self.tail.plan.output_level)])

    def costs(self) -> dict[str, Any]:
        """What one encrypted face costs, read off the plan (nothing is encrypted): per patch group its
        patches, depth, key switches, bootstraps and plaintext diagonals with the same per layer; the
        tail's (normalization, matching); and the Galois keys of the whole key plan."""
        groups = [{"patches": list(g.patches), "depth": m.plan.depth, "key_switches": m.plan.key_switches,
                   "bootstraps": m.plan.bootstraps, "diagonals": m.diagonal_count, "galois_keys": len(m.key_plan()),
                   "layers": m.layer_costs()} for g, m in zip(self.groups, self.models)]
        return {"groups": groups,
                "tail": {"depth": self.tail.plan.depth + self.matcher.depth(),
                         "key_switches": self.tail.plan.key_switches + self.matcher.key_switches(),
                         "bootstraps": self.tail.plan.bootstraps},
                "galois_keys_network": len(KeyPlan.merge(m.key_plan() for m in self.models)),
                "galois_keys": len(self.key_plan())}

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

    def key_memory_bytes(self) -> int:
        """Memory of the installed evaluation keys (both halves expanded), 0 before :meth:`install_keys`."""
        ev = self.evaluator
        if ev is None:
            return 0
        return sum(k.nbytes for k in (ev.relin_key, ev.galois_keys) if k is not None)

    # ---- evaluation ----------------------------------------------------------------------

    def _ev(self) -> Evaluator:
        if self.evaluator is None:
            raise MissingKeyError("install the client's evaluation keys first")
        return self.evaluator

    def embed(self, face: Sequence[bytes | Ciphertext]) -> Ciphertext:
        """Encrypted, normalized embedding of one encrypted face (one ciphertext per patch group)."""
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
            total = out if total is None else ev.add(total, out)
        self.stats.seconds["network"] = time.perf_counter() - t0
        out = self.tail.run(ev, self.encoder, total, self.stats.seconds)
        for plan in (*self.plans, self.tail.plan):
            self.stats.key_switches += plan.key_switches
            self.stats.bootstraps += plan.bootstraps
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
        out = self.matcher.forward(self._ev(), self.encoder, probe, template)
        self.stats.seconds["match"] = time.perf_counter() - t0
        self.stats.key_switches += self.matcher.key_switches()
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

    def evaluation_keys(self, plan: KeyPlan) -> dict[str, bytes]:
        """The relinearization key and the Galois keys of a server's plan, each only up to the level it is
        used at (the plan is validated against the parameters first)."""
        if not isinstance(plan, KeyPlan):
            raise ShapeError(f"expected a KeyPlan, got {type(plan).__name__}")
        keys = self._keygen.evaluation_keys(plan)
        out = {"galois": serialize.dump(keys.galois)}
        if keys.relin is not None:
            out["relin"] = serialize.dump(keys.relin)
        return out

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
