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

import threading
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
from fhe_ckks.errors import (
    KeyMismatchError,
    LevelError,
    MissingKeyError,
    ScaleMismatchError,
    SecurityError,
    SerializationError,
    ShapeError,
)
from fhe_ckks.nn.layout import TensorLayout
from fhe_ckks.nn.planner import EncryptedModel, Plan
from fhe_ckks.rlwe.keyplan import KeyPlan
from fhe_ckks.rlwe.keys import GaloisKeys, KeyGenerator, SecretKey, SwitchingKey
from fhe_ckks.rlwe.params import Parameters

from ..data import split_patches
from ..errors import ModelError
from ..model import FusedPatchCNN
from .backends import LocalBackend
from .matching import Match, Normalize, scaled_coefficients
from .network import PatchGroup, build_group, group_patches

#: The parameter preset the encrypted pipeline runs at by default: 128-bit, N = 2^16, levelled (29 levels at
#: 2^38: 23 for a patch network, 4 for the 1/sqrt normalization, 2 for matching), so no bootstrap at all.
DEFAULT_PRESET = "N16_QP1762_L29_S38"


#: Answers leave the server at level 0 and its standard scale, the full slot count, the blinded score in slot 0:
#: the client refuses anything else before decrypting.
ANSWER_LEVEL = 0


@dataclass
class Stats:
    """Operation counts and timings of one call (the server keeps the last completed call's as ``stats``)."""

    seconds: dict[str, float] = field(default_factory=dict)
    key_switches: int = 0
    bootstraps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "key_switches": self.key_switches, "bootstraps": self.bootstraps}


class Server:
    """Holds the model, the evaluation keys and the encrypted gallery; cannot decrypt.

    Safe to call from several threads: calls that evaluate or change the gallery run one at a time
    (a lock; the patch groups of one call still run in parallel, in the backend's workers), and each
    call counts its own :class:`Stats`.
    """

    def __init__(self, model: FusedPatchCNN, params: Parameters, bootstrapper=None,
                 patches_per_ciphertext: int | None = None, dataset: str = "lfw", fold: int | None = None,
                 testing: bool = False, workers: int | None = None, backend: LocalBackend | None = None):
        """``dataset`` and ``fold`` pick the decision rule: the 1/sqrt polynomial and threshold fitted for that
        dataset (on the folds other than ``fold``, for honest k-fold figures; on all folds when ``None``).
        ``workers``: processes for the patch groups (default: one per core, at most one per group; 1 runs
        them in this process); ``backend``: where the patch groups run (default: a
        :class:`~cryptoface.encrypted.backends.LocalBackend` with ``workers``)."""
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
        self.backend = LocalBackend(workers) if backend is None else backend
        self.workers = self.backend.workers
        self._lock = threading.RLock()

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
        """What a client needs to encrypt for this server: the model's name and sizes, the patch groups, the
        parameter fingerprint, and the squared-norm range its decision rule normalizes accurately."""
        return {"model": self.model.name, "input_size": self.model.input_size, "patch_size": self.model.patch_size,
                "groups": [g.patches for g in self.groups], "params": self.params.fingerprint.hex(),
                "norm_range": [self.norm.lo, self.norm.hi]}

    def install_keys(self, keys: dict[str, bytes]) -> None:
        """Install the client's evaluation keys: ``{"relin": blob, "galois": blob}`` in the serialized format.

        Refuses (typed, before changing anything) a secret key, blobs of the wrong kind or in the wrong
        place, keys of other parameters, and a key set that does not cover :meth:`key_plan`.
        """
        if not isinstance(keys, dict) or set(keys) != {"relin", "galois"}:
            raise SerializationError("evaluation keys are a dict with exactly the entries 'relin' and 'galois'")
        relin, galois = (serialize.load(keys[name], self.params) for name in ("relin", "galois"))
        if isinstance(relin, SecretKey) or isinstance(galois, SecretKey):
            raise SecurityError("a server never takes a secret key")
        if not isinstance(relin, SwitchingKey) or relin.kind != "relin":
            raise SerializationError(f"the 'relin' entry holds a {type(relin).__name__}, not a relinearization key")
        if not isinstance(galois, GaloisKeys):
            raise SerializationError(f"the 'galois' entry holds a {type(galois).__name__}, not Galois keys")
        evaluator = Evaluator(self.params, relin, galois)
        missing = galois.uncovered(self.key_plan())
        if missing:
            raise MissingKeyError(f"the Galois keys do not cover the plan: rotations {missing[:8]} are missing "
                                  "or too shallow")
        for key in (relin, *galois.keys.values()):
            _ = key.a  # expand the seeded halves now: forked workers then share them instead of each expanding
        with self._lock:
            self.evaluator = evaluator

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

    def _face(self, face: Sequence[bytes | Ciphertext], ev: Evaluator) -> list[Ciphertext]:
        """One fresh ciphertext per patch group, each checked (parameters, key, level, slots, size)."""
        if isinstance(face, (bytes, bytearray, str)) or not isinstance(face, Sequence) \
                or len(face) != len(self.groups):
            raise ShapeError(f"expected {len(self.groups)} ciphertexts (one per patch group)")
        cts = []
        for blob in face:
            ct = serialize.load(blob, self.params) if isinstance(blob, (bytes, bytearray)) else blob
            if not isinstance(ct, Ciphertext):
                raise ShapeError("a face is a list of ciphertexts")
            if ct.params_fingerprint != self.params.fingerprint or ct.key_id != ev.key_id:
                raise KeyMismatchError("a face ciphertext of other parameters or another key")
            if ct.level < self.params.max_level:
                raise LevelError(f"a fresh face ciphertext is at level {self.params.max_level}, got {ct.level}")
            if ct.size != 2 or ct.slots != self.params.slots:
                raise ShapeError(f"a face ciphertext has size 2 and {self.params.slots} slots")
            top = self.params.scale_at(self.params.max_level)
            if not abs(ct.scale / top - 1.0) <= 2.0**-32:
                raise ScaleMismatchError(f"a face ciphertext is encoded at the top level's scale 2^{np.log2(top):.3f}, "
                                         f"got 2^{np.log2(ct.scale):.3f}")
            cts.append(ct)
        return cts

    def embed(self, face: Sequence[bytes | Ciphertext], stats: Stats | None = None) -> Ciphertext:
        """Encrypted, normalized embedding of one encrypted face (one ciphertext per patch group).

        ``stats``: the call's counts and timings are added there (a fresh :class:`Stats` by default); the
        server keeps them as :attr:`stats` once the call completes."""
        stats = Stats() if stats is None else stats
        with self._lock:
            ev = self._ev()
            cts = self._face(face, ev)
            t0 = time.perf_counter()
            total = None
            for i, res in enumerate(self.backend.run_groups(self.models, ev, self.encoder, cts)):
                for name, sec in res.seconds.items():
                    stats.seconds[f"group {i}: {name}"] = sec
                total = res.ciphertext if total is None else ev.add(total, res.ciphertext)
            stats.seconds["network"] = time.perf_counter() - t0
            out = self.tail.run(ev, self.encoder, total, stats.seconds)
            for plan in (*self.plans, self.tail.plan):
                stats.key_switches += plan.key_switches
                stats.bootstraps += plan.bootstraps
            self.stats = stats
            return out

    def enroll(self, name: str, face: Sequence[bytes | Ciphertext], stats: Stats | None = None) -> None:
        template = self.embed(face, stats)
        with self._lock:
            self.gallery[name] = template

    def verify(self, face: Sequence[bytes | Ciphertext], name: str, stats: Stats | None = None) -> bytes:
        self._template(name)
        stats = Stats() if stats is None else stats
        return self.match(self.embed(face, stats), name, stats)

    def match(self, probe: Ciphertext, name: str, stats: Stats | None = None) -> bytes:
        """The blinded answer for an already embedded probe (:meth:`embed`) against one template."""
        return self._answer(probe, self._template(name), Stats() if stats is None else stats)

    def identify(self, face: Sequence[bytes | Ciphertext], stats: Stats | None = None) -> dict[str, bytes]:
        stats = Stats() if stats is None else stats
        probe = self.embed(face, stats)
        with self._lock:
            gallery = dict(self.gallery)
        return {name: self._answer(probe, tpl, stats) for name, tpl in gallery.items()}

    def _template(self, name: str) -> Ciphertext:
        with self._lock:
            if name not in self.gallery:
                raise KeyError(f"no template enrolled as {name!r}")
            return self.gallery[name]

    def _answer(self, probe: Ciphertext, template: Ciphertext, stats: Stats) -> bytes:
        with self._lock:
            ev = self._ev()
            t0 = time.perf_counter()
            out = ev.bring_to(self.matcher.forward(ev, self.encoder, probe, template), ANSWER_LEVEL)
            stats.seconds["match"] = stats.seconds.get("match", 0.0) + time.perf_counter() - t0
            stats.key_switches += self.matcher.key_switches()
            self.stats = stats
            return serialize.dump(out)


class Client:
    """Owns the secret key: makes the keys a server asks for, encrypts faces, decrypts decisions."""

    def __init__(self, params: Parameters, seed: bytes | None = None, model: FusedPatchCNN | None = None):
        """``model``: the server's (public) model file; with it, :meth:`encrypt_face` first checks in
        plaintext that the model can vouch for the face (:meth:`FusedPatchCNN.check_probe`) and refuses it
        with :class:`~cryptoface.errors.ProbeError` otherwise, before anything is encrypted."""
        self.params, self.model = params, model
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
        keys = self._keygen.evaluation_keys(plan)     # refuses anything but a valid KeyPlan
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
        if self.model is not None:
            if info["model"] != self.model.name:
                raise ModelError(f"the server runs {info['model']!r}, this client checks faces with "
                                 f"{self.model.name!r}")
            self.model.check_probe(x[None], info.get("norm_range"))
        patches = split_patches(x[None], patch)[:, 0]
        out = []
        for group in info["groups"]:
            layout = TensorLayout.stacked(len(group), 3, patch, patch)
            pt = self._encoder.encode(layout.pack(patches[group], self.params.slots))
            out.append(serialize.dump(self._encryptor.encrypt(pt)))
        return out

    def score(self, answer: bytes) -> float:
        """The blinded score in slot 0 of a server's answer, after checking the answer against the
        protocol (:data:`ANSWER_LEVEL`, its standard scale, the full slot count, size 2, this client's
        key); the decryption is noise-flooded and only slot 0 is read."""
        ct = serialize.load(answer, self.params)
        if not isinstance(ct, Ciphertext):
            raise SecurityError(f"an answer is a ciphertext, got a {type(ct).__name__}")
        if ct.key_id != self._keygen.secret_key.key_id:
            raise KeyMismatchError("the answer is encrypted under another key")
        if ct.level != ANSWER_LEVEL or ct.size != 2 or ct.slots != self.params.slots:
            raise SecurityError(f"an answer is a size-2 ciphertext at level {ANSWER_LEVEL} with "
                                f"{self.params.slots} slots; got size {ct.size}, level {ct.level}, "
                                f"{ct.slots} slots")
        standard = self.params.scale_at(ANSWER_LEVEL)
        # the server's arithmetic lands on the standard scale up to float rounding; a ciphertext dropped
        # from another level without rescaling is off by the chain's drift (2^-22 on a toy chain)
        if not abs(ct.scale / standard - 1.0) <= 2.0**-32:
            raise ScaleMismatchError(f"an answer has the standard scale 2^{np.log2(standard):.3f} of level "
                                     f"{ANSWER_LEVEL}; got 2^{np.log2(ct.scale):.3f}")
        values = self._encoder.decode(self._decryptor.decrypt(ct, flooding_bits=20))
        return float(np.real(values[0]))

    def decide(self, answer: bytes) -> bool:
        """True = the same person (the blinded score is negative)."""
        return self.score(answer) < 0
