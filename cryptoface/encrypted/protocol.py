"""The two roles: a Client that owns the secret key and a Server that never has it.

Everything between them is bytes in the versioned format of
:mod:`fhe_ckks.serialize` (ciphertexts, keys, parameters) or plain JSON (the
server's public description of what it needs).  A session::

    server = Server(model, params)                       # model file + public parameters
    client = Client(params)                              # secret key stays here
    client = Client(params, model)                       # secret key stays here; the model file is public
    server.install_keys(client.evaluation_keys(server.key_plan()))
    server.enroll("alice", client.encrypt_face(face_a, server.public_info()))      # offline
    answer = server.verify(client.encrypt_face(probe, server.public_info()), "alice")
    same = client.decide(answer)                         # only the decision is learned
    found = client.identification(server.identify(client.encrypt_face(probe, server.public_info())))

A face is one ciphertext per patch group and the *normalization hint*
``1 / (s ||e||)`` (``s`` the embedding scale folded into the network's last
layer), which the honest client computes from the public model while it
checks the face in plaintext.  The server runs each patch group's chain
(placing bootstraps by the plan) in its own worker process (forked after the
keys are installed, so the workers share them), sums the groups, multiplies by
the hint, and answers with the encrypted decision of :mod:`.decision`: it
checks under encryption that the hint normalizes probe and template, decides
the exact cosine rule, bootstraps those 8 slots, takes a composite sign, and
floods the answer's noise.  The key holder learns "same", "different" or
"invalid" and nothing else (docs/threat_model.md).  Enrollment also keeps the
template's spread layout and its encrypted norm check, so that identification
decides the probe against 510 templates per packed answer, bootstrap and sign
(:class:`~.decision.GalleryDecision`, docs/identification.md).  The gallery lives in a
template store (``store=``: :class:`cryptoface.store.SQLiteStore`, or in memory
by default), bound to the model, the parameters and the rule (docs/store.md).

It accepts a bootstrapper for the network, and one for the decision's 8 slots
(by default a real :class:`fhe_ckks.bootstrap.Bootstrapper` built from the
installed keys with :func:`~.decision.decision_bootstrap_config`): the real
one (public keys only) or, only when ``testing=True``, the
:class:`~fhe_ckks.bootstrap.SecretKeyBootstrapper` double, which holds a
secret key and so must never be used otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from fhe_ckks import serialize
from fhe_ckks.bootstrap import Bootstrapper, LandedBootstrapper
from fhe_ckks.bootstrap.bootstrapper import MIN_CTS_DIAGONAL_BITS, BootstrapConfig, BootstrapPlan
from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
from fhe_ckks.ckks.ciphertext import Ciphertext
from fhe_ckks.ckks.encoder import Encoder
from fhe_ckks.ckks.encryptor import Decryptor, Encryptor
from fhe_ckks.ckks.evaluator import Evaluator
from fhe_ckks.circuits.sign import CompositeSign
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
from fhe_ckks.nn.layout import TensorLayout
from fhe_ckks.nn.planner import EncryptedModel, Plan
from fhe_ckks.rlwe.keyplan import KeyPlan
from fhe_ckks.rlwe.keys import EncapsulationKeys, GaloisKeys, KeyGenerator, PublicKey, SecretKey, SwitchingKey
from fhe_ckks.rlwe.params import Parameters

from ..data import split_patches
from ..errors import ModelError, NameTakenError, ProbeError, StoreError, UnknownNameError
from ..baselines import FusedResNet
from ..model import FusedPatchCNN
from .backends import Backend, GroupResult, make_backend, run_group
from . import wire
from .decision import (
    DECISION_SLOTS,
    GALLERY_PRE_DEPTH,
    PRE_DEPTH,
    Decision,
    DecisionOutcome,
    GalleryDecision,
    TemplateCheck,
    decision_bootstrap_config,
    flood,
    gallery_bootstrap_config,
    gallery_width,
)
from .matching import embedding_scale, spread_transform
from .baseline import build_baseline, chain_period
from .network import PatchGroup, build_group, group_patches

#: The parameter preset the encrypted pipeline runs at by default: 128-bit, N = 2^16, 29 levels at 2^38: 23 for
#: a patch network, 1 for the hint, 2 for the decision's checks, then the decision's 8-slot bootstrap (13 levels)
#: and its sign and combination (16), so the network itself needs no bootstrap.
DEFAULT_PRESET = "N16_QP1762_L29_S38"
#: The parameters of the bootstrapped ResNet baselines (issue #16): 16 user levels between bootstraps.
BASELINE_PRESET = "BOOT_N16_QP1771_L32_S36"


#: Levels each patch network leaves below it: the hint's product, the spread, and the gallery decision's masks,
#: products and weights.
TAIL_RESERVE = 2 + GALLERY_PRE_DEPTH

#: Answers leave the server at level 0 and its standard scale, with the decision's 8 slots, the decision in
#: slot 0: the client refuses anything else before decrypting.
ANSWER_LEVEL = 0

#: The squared embedding norms a client hints for: ``s^2 ||e||^2`` within ``2^(+-HINT_RANGE_LOG2)`` of 1 (the
#: embedding scale ``s`` puts the model's typical faces near 1; real faces of several sets lie within 2^+-2).
#: Outside it the encrypted embedding keeps too few bits relative to its norm (the hint multiplies the
#: network's absolute error by up to 2^4), or grows too large; an honest client refuses such a face (ProbeError).
HINT_RANGE_LOG2 = 8


@dataclass
class Stats:
    """Operation counts and timings of one call (the server keeps the last completed call's as ``stats``)."""

    seconds: dict[str, float] = field(default_factory=dict)
    key_switches: int = 0
    bootstraps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "key_switches": self.key_switches, "bootstraps": self.bootstraps}

    def add_seconds(self, seconds: dict[str, float]) -> None:
        """Add a task's stage times to this call's (stages of the same name sum)."""
        for key, dt in seconds.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + dt


def _check_name(name: object) -> str:
    """A template name: a non-empty printable ``str`` of at most 256 characters (what every store takes)."""
    if not isinstance(name, str) or not name or not name.isprintable() or len(name) > 256:
        raise StoreError(f"a template name is a non-empty printable str of at most 256 characters, got {name!r:.60}")
    return name


class _MemoryGallery:
    """The default gallery: templates in a dict, nothing persists (the interface of
    :class:`cryptoface.store.TemplateStore`)."""

    def __init__(self):
        self._blobs: dict[str, bytes] = {}
        self._identity: dict[str, str] | None = None
        self._version = 0

    def version(self) -> int:
        """Changes with every put and delete."""
        return self._version

    def bind(self, identity: dict[str, str]) -> None:
        if self._identity is not None and self._identity != identity:
            raise StoreError("this gallery holds templates of another model, parameters or rule")
        self._identity = dict(identity)

    def put(self, name: str, blob: bytes, replace: bool = False) -> None:
        _check_name(name)
        if name in self._blobs and not replace:
            raise NameTakenError(f"{name!r} is enrolled already; enroll with replace=True to replace it")
        self._blobs[name] = bytes(blob)
        self._version += 1

    def get(self, name: str) -> bytes:
        if not isinstance(name, str) or name not in self._blobs:
            raise UnknownNameError(f"no template enrolled as {name!r:.60}")
        return self._blobs[name]

    def delete(self, name: str) -> None:
        self.get(name)
        del self._blobs[name]
        self._version += 1

    def names(self) -> list[str]:
        return sorted(self._blobs)

    def __contains__(self, name: object) -> bool:
        return name in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def __iter__(self):
        return iter(self.names())


def checked_bootstrap_plan(params: Parameters, config: BootstrapConfig) -> BootstrapPlan:
    """The plan of a bootstrap of ``config``'s slots, refused early (typed) where the chain cannot bootstrap them:
    CoeffsToSlots diagonals encoded with fewer than ``MIN_CTS_DIAGONAL_BITS`` bits."""
    plan = BootstrapPlan.build(params, config)
    bits = plan.cts_diagonal_bits(params)
    if bits < MIN_CTS_DIAGONAL_BITS:
        raise ParameterError(f"these parameters bootstrap {config.slots} slots with {bits:.1f}-bit "
                             f"CoeffsToSlots diagonals (at least {MIN_CTS_DIAGONAL_BITS} needed)")
    return plan


class NetworkBootstrapper:
    """The bootstrapper of a bootstrapped network (the ResNet baselines) before the client's keys arrive: its
    plan now (output level, slots, keys), so that the chain can be built and planned and its keys asked for,
    and the real :class:`~fhe_ckks.bootstrap.Bootstrapper` once :meth:`Server.install_keys` makes it from them.

    ``config``: the preset's bootstrapping configuration (:data:`fhe_ckks.bootstrap.CONFIGS`) with the chain's
    slots (sparse and packed where the tensors fill fewer than the ring's) and the model's declared bound."""

    def __init__(self, params: Parameters, config: BootstrapConfig):
        self.params, self.config = params, config
        self.plan = checked_bootstrap_plan(params, config)
        self.output_level = min(params.max_level - self.plan.depth, params.user_top)
        self.slots = self.output_slots = config.slots or params.slots
        self.real: Bootstrapper | LandedBootstrapper | None = None

    def key_plan(self) -> KeyPlan:
        return self.plan.key_plan()

    def install(self, relin: SwitchingKey, galois: GaloisKeys, encapsulation: EncapsulationKeys | None
                ) -> Bootstrapper:
        """The real bootstrapper from the client's keys (not yet in use: :meth:`Server.install_keys` swaps it
        in with the other keys), landing on the user levels (:func:`landed`)."""
        return landed(Bootstrapper(self.params, relin, galois, self.config, encapsulation), self.output_level)

    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        if self.real is None:
            raise MissingKeyError("install the client's evaluation keys first")
        return self.real.bootstrap(ct)


def landed(boot: Bootstrapper, level: int) -> Bootstrapper | LandedBootstrapper:
    """``boot``, or ``boot`` brought down to ``level`` when it ends above it (its output in a run of larger
    primes: the sign after the decision's 13-level bootstrap would rescale across runs)."""
    return boot if boot.output_level <= level else LandedBootstrapper(boot, level)


def network_bootstrap_config(model: FusedResNet, params: Parameters) -> BootstrapConfig:
    """How a server bootstraps a baseline's chain: the preset's configuration (:data:`fhe_ckks.bootstrap.CONFIGS`,
    refused for a preset without one), on the chain's slots (:func:`chain_period`; packed when sparse), declared
    for the model's :meth:`~cryptoface.baselines.FusedResNet.bootstrap_bound`, the largest value a probe the
    client's check lets through can carry."""
    from fhe_ckks.bootstrap import CONFIGS

    if params.name not in CONFIGS:
        raise ParameterError(f"{params.name} is not a bootstrapping preset; {model.name} bootstraps "
                             f"(use one of {sorted(k for k in CONFIGS if not k.startswith('INSECURE_'))})")
    bound = model.bootstrap_bound()
    if bound is None:
        raise ModelError(f"model {model.name} records no value range (export it with verification data): its "
                         "bootstraps' bound is unknown")
    slots = chain_period(model)
    if slots > params.slots:
        raise ParameterError(f"the chain of {model.name} needs {slots} slots; {params.name} has {params.slots}")
    return dataclasses.replace(CONFIGS[params.name], slots=slots, packed=2 * slots <= params.slots,
                               input_bound=float(bound))


class Server:
    """Holds the model, the evaluation keys and the encrypted gallery; cannot decrypt.

    Safe to call from several threads: calls that evaluate or change the gallery run one at a time
    (a lock; the patch groups of one call still run in parallel, in the backend's workers), and each
    call counts its own :class:`Stats`.
    """

    def __init__(self, model: FusedPatchCNN | FusedResNet, params: Parameters, bootstrapper=None,
                 patches_per_ciphertext: int | None = None, dataset: str = "lfw", fold: int | None = None,
                 testing: bool = False, workers: int | None = None, backend: Backend | str | None = None,
                 decision_bootstrapper=None, decision_sign: CompositeSign | None = None, store=None,
                 ray_address: str | None = None):
        """``dataset`` and ``fold`` pick the decision rule: the exact cosine threshold fitted for that dataset
        (on the folds other than ``fold``, for honest k-fold figures; on all folds when ``None``).
        ``workers``: processes for the patch groups (default: one per core, at most one per group; 1 runs
        them in this process); ``backend``: where the patch groups, the decisions and the gallery batches run:
        a :class:`~cryptoface.encrypted.backends.Backend`, or its name, ``"local"`` (the default: forked
        workers on this machine, ``workers`` of them) or ``"ray"`` (the Ray cluster at ``ray_address``, or
        a local Ray instance; the ``ray`` extra).  ``bootstrapper``: for the
        network's chains (None: levelled); ``decision_bootstrapper``: for the decision's 8 slots (None: a
        real :class:`~fhe_ckks.bootstrap.Bootstrapper` made from the installed keys); ``decision_sign``: the
        decision's composite sign (default: margin 2^-8, error 2^-14, 12 levels; a shallower one only for tests
        on short toy chains).  ``store``: where the gallery lives (a :class:`cryptoface.store.TemplateStore`,
        e.g. :class:`cryptoface.store.SQLiteStore`; default: in memory); it is bound to
        :meth:`store_identity` and refuses another model, parameters or rule."""
        for boot in (bootstrapper, decision_bootstrapper):
            if isinstance(boot, SecretKeyBootstrapper) and not testing:
                raise SecurityError("the SecretKeyBootstrapper holds a secret key: servers accept it only with "
                                    "testing=True")
        if dataset not in model.thresholds:
            raise ModelError(f"model {model.name} has no threshold for {dataset!r}; export it with verification data")
        self.model, self.params, self.bootstrapper = model, params, bootstrapper
        rule = model.thresholds[dataset]
        self.cos_threshold = rule.cosine_for_fold(fold)          # ModelError when the model has no exact rule
        self.embedding_scale = embedding_scale(rule.norm)
        self.decision = Decision(model.embedding_dim, self.cos_threshold, decision_sign)
        self.dataset, self._sign = dataset, decision_sign
        self.gallery = GalleryDecision(model.embedding_dim, params.slots, self.cos_threshold, decision_sign)
        self.check = TemplateCheck(model.embedding_dim, params.slots, decision_sign)
        self.spread = spread_transform(model.embedding_dim, params.slots)
        if isinstance(model, FusedResNet):
            # one face, one chain, its bootstraps part of the design: a real bootstrapper made from the client's
            # keys (NetworkBootstrapper), or the given one (the secret-key double, in tests)
            if bootstrapper is None:
                bootstrapper = self.bootstrapper = NetworkBootstrapper(params, network_bootstrap_config(model, params))
            chain = build_baseline(model, bootstrapper, output_scale=self.embedding_scale)
            self.groups: list[PatchGroup] = [PatchGroup([0], chain.layers, chain.input_layout, chain.output_layout)]
        else:
            self.groups = [build_group(model, g, self.embedding_scale)
                           for g in group_patches(model, params.slots, patches_per_ciphertext)]
        # each chain leaves its levels to the hint's product, the spread and the gallery decision (which needs
        # more than the verification's checks); any bootstrap goes in front
        self.models = [EncryptedModel(g.layers, params.max_level, bootstrapper, reserve=TAIL_RESERVE)
                       for g in self.groups]
        self.plans: list[Plan] = [m.plan for m in self.models]
        self.hint_level = min(p.output_level for p in self.plans)
        self.decision_bootstrapper = decision_bootstrapper   # a real one replaces None in install_keys
        self._decision_plan = None if decision_bootstrapper is not None else self._plan_decision_bootstrap()
        # a real bootstrap that ends above the user levels is brought down to them (landed); a given one must end
        # there (the sign after it would rescale across runs of prime sizes)
        if decision_bootstrapper is not None and decision_bootstrapper.output_level > params.user_top:
            raise ParameterError(f"the decision's bootstrapper ends at level {decision_bootstrapper.output_level}, "
                                 f"above these parameters' user levels (up to {params.user_top})")
        post = (decision_bootstrapper.output_level if decision_bootstrapper is not None
                else min(params.max_level - self._decision_plan.depth, params.user_top))
        for what, need in (("decision", self.decision.post_depth()), ("enrollment check", self.check.post_depth()),
                           ("gallery decision", self.gallery.post_depth())):
            if post < need:
                raise LevelError(f"the {what}'s sign needs {need} levels after its bootstrap, these parameters "
                                 f"leave {post}")
        self.decision_level = post
        self.check_level = post - self.check.post_depth()       # the level of a stored template's check
        # the gallery's bootstrap unpacks its complex slots: a given (test) bootstrapper in its unpacking form
        self.gallery_bootstrapper = None if decision_bootstrapper is None else _unpacking(decision_bootstrapper)
        self._gallery_plan = None if decision_bootstrapper is not None else \
            self._plan_decision_bootstrap(gallery_bootstrap_config(self.gallery.width))
        self.store = _MemoryGallery() if store is None else store
        self.store.bind(self.store_identity())
        self.evaluator: Evaluator | None = None
        self.encoder = Encoder(params)
        self.stats = Stats()
        self.backend = make_backend(backend or "local", workers=workers, address=ray_address) \
            if backend is None or isinstance(backend, str) else backend
        self.workers = self.backend.workers
        self._flooder: Encryptor | None = None
        self._state: _TaskState | None = None
        self._lock = threading.RLock()
        self._packed: dict[tuple[str, ...], tuple[list[tuple[Ciphertext, int]], Ciphertext]] = {}
        self._packed_token: Any = None

    def store_identity(self) -> dict[str, str]:
        """What the gallery's templates belong to: the model's digest, the parameters, the decision rule and the
        level templates are stored at."""
        rule = {"cos_threshold": self.cos_threshold, "band": self.decision.band, "embedding_scale":
                self.embedding_scale, "template_level": self.hint_level - 1, "check_band": self.check.band,
                "check_level": self.check_level}
        return {"model": self.model.digest(), "params": self.params.fingerprint.hex(),
                "rule": json.dumps(rule, sort_keys=True), "protocol": "hinted-cosine-decision+spread-gallery"}

    def _plan_decision_bootstrap(self, config=None) -> BootstrapPlan:
        """The plan of the decision's bootstrap (or of ``config``'s: the gallery's), refused early (typed) where
        the chain cannot bootstrap its slots."""
        return checked_bootstrap_plan(self.params, decision_bootstrap_config() if config is None else config)

    # ---- what the client needs to know, and what evaluation costs -------------------------

    def key_plan(self) -> KeyPlan:
        """Every evaluation key of the plan: each rotation step with the highest level it is used at, the
        decision's bootstrap included (with its encapsulation weight) unless a double was given."""
        probe = self.hint_level - 1
        parts = [*(m.key_plan() for m in self.models),
                 self.decision.key_plan(probe, self.decision_level),
                 KeyPlan.rotations_at(self.spread.rotation_steps(), probe),
                 self.check.key_plan(probe - 1, self.decision_level),
                 self.gallery.key_plan(probe - 1, self.decision_level)]
        for plan in (self._decision_plan, self._gallery_plan):
            if plan is not None:
                parts.append(plan.key_plan())
        if isinstance(self.bootstrapper, NetworkBootstrapper):
            parts.append(self.bootstrapper.key_plan())
        return KeyPlan.merge(parts)

    def costs(self) -> dict[str, Any]:
        """What one encrypted face costs, read off the plan (nothing is encrypted): per patch group its
        patches, depth, key switches, bootstraps and plaintext diagonals with the same per layer; the
        tail's (the hint's product and the decision, its bootstrap counted apart); and the Galois keys of
        the whole key plan."""
        groups = [{"patches": list(g.patches), "depth": m.plan.depth, "key_switches": m.plan.key_switches,
                   "bootstraps": m.plan.bootstraps, "diagonals": m.diagonal_count, "galois_keys": len(m.key_plan()),
                   "layers": m.layer_costs()} for g, m in zip(self.groups, self.models)]
        boot_depth = self.params.max_level - self.decision_level
        spread_ks = self.spread.key_switches()
        return {"groups": groups,
                "tail": {"depth": 1 + self.decision.pre_depth() + boot_depth + self.decision.post_depth(),
                         "key_switches": 1 + self.decision.key_switches(), "bootstraps": 1},
                "enrollment": {"key_switches": spread_ks + self.check.key_switches(), "bootstraps": 1},
                "gallery": {"capacity": self.gallery.capacity, "spread_key_switches": spread_ks,
                            "key_switches_per_group": self.gallery.key_switches(self.gallery.capacity),
                            "bootstraps_per_group": 1},
                "galois_keys_network": len(KeyPlan.merge(m.key_plan() for m in self.models)),
                "galois_keys": len(self.key_plan())}

    def public_info(self) -> dict[str, Any]:
        """What a client needs to encrypt for this server: the model's name and sizes, the patch groups, the
        parameter fingerprint, the hint's level and embedding scale, and the squared-norm range it hints for."""
        s2 = self.embedding_scale ** 2
        return {"model": self.model.name, "input_size": self.model.input_size, "patch_size": self.model.patch_size,
                "groups": [g.patches for g in self.groups], "params": self.params.fingerprint.hex(),
                "hint_level": self.hint_level, "embedding_scale": self.embedding_scale,
                "norm_range": [2.0**-HINT_RANGE_LOG2 / s2, 2.0**HINT_RANGE_LOG2 / s2]}

    def install_keys(self, keys: dict[str, bytes]) -> None:
        """Install the client's evaluation keys: ``{"relin", "galois", "public"}`` blobs in the serialized
        format, and ``"encapsulation"`` when :meth:`key_plan` has an encapsulation weight (the decision's
        bootstrap).  The public key only floods answers.

        Refuses (typed, before changing anything) a secret key, blobs of the wrong kind or in the wrong
        place, keys of other parameters or of different key sets, and a key set that does not cover
        :meth:`key_plan`.
        """
        plan = self.key_plan()
        names = {"relin", "galois", "public"} | ({"encapsulation"} if plan.encapsulation_weight is not None else set())
        if not isinstance(keys, dict) or set(keys) != names:
            raise SerializationError(f"evaluation keys are a dict with exactly the entries {sorted(names)}")
        loaded = {name: serialize.load(keys[name], self.params) for name in sorted(names)}
        if any(isinstance(k, SecretKey) for k in loaded.values()):
            raise SecurityError("a server never takes a secret key")
        kinds = {"relin": SwitchingKey, "galois": GaloisKeys, "public": PublicKey, "encapsulation": EncapsulationKeys}
        for name, key in loaded.items():
            if not isinstance(key, kinds[name]) or (name == "relin" and key.kind != "relin"):
                raise SerializationError(f"the {name!r} entry holds a {type(key).__name__}, not the {name} key")
        relin, galois, public = loaded["relin"], loaded["galois"], loaded["public"]
        if len({k.key_id for k in loaded.values()}) != 1:
            raise KeyMismatchError("the evaluation keys belong to different secret keys")
        evaluator = Evaluator(self.params, relin, galois)
        missing = galois.uncovered(plan)
        if missing:
            raise MissingKeyError(f"the Galois keys do not cover the plan: rotations {missing[:8]} are missing "
                                  "or too shallow")
        boot = self.decision_bootstrapper if self._decision_plan is None else landed(
            Bootstrapper(self.params, relin, galois, decision_bootstrap_config(), loaded.get("encapsulation")),
            self.decision_level)
        gallery_boot = self.gallery_bootstrapper if self._gallery_plan is None else landed(
            Bootstrapper(self.params, relin, galois, gallery_bootstrap_config(self.gallery.width),
                         loaded.get("encapsulation")), self.decision_level)
        network = self.bootstrapper
        network_boot = network.install(relin, galois, loaded.get("encapsulation")) \
            if isinstance(network, NetworkBootstrapper) else None
        for key in (relin, *galois.keys.values()):
            _ = key.a  # expand the seeded halves now: forked workers then share them instead of each expanding
        with self._lock:
            self.evaluator, self._flooder, self.decision_bootstrapper = evaluator, Encryptor(self.params, public), boot
            self.gallery_bootstrapper = gallery_boot
            if network_boot is not None:
                network.real = network_boot
            self._packed, self._packed_token = {}, None          # built under the keys installed before

    def key_memory_bytes(self) -> int:
        """Memory of the installed evaluation keys (both halves expanded), 0 before :meth:`install_keys`."""
        ev = self.evaluator
        if ev is None:
            return 0
        total = sum(k.nbytes for k in (ev.relin_key, ev.galois_keys) if k is not None)
        enc = getattr(self.decision_bootstrapper, "encapsulation", None)
        return total + (enc.nbytes if isinstance(enc, EncapsulationKeys) else 0)

    # ---- evaluation ----------------------------------------------------------------------

    def _ev(self) -> Evaluator:
        if self.evaluator is None:
            raise MissingKeyError("install the client's evaluation keys first")
        return self.evaluator

    def _task_state(self) -> "_TaskState":
        """Everything the backend's tasks share, as one object: a distributed backend puts it in its object
        store once, and the keys the evaluator and the bootstrappers share are stored once in it."""
        parts = (self._ev(), self.encoder, tuple(self.models), self.decision_bootstrapper,
                 self.gallery_bootstrapper, self._flooder, self.gallery)
        state = self._state
        same = state is not None and all(
            (len(a) == len(b) and all(x is y for x, y in zip(a, b))) if isinstance(a, tuple) else a is b
            for a, b in zip(state.parts(), parts))
        if not same:
            state = self._state = _TaskState(*parts)
        return state

    def _face(self, face: Sequence[bytes | Ciphertext], ev: Evaluator) -> tuple[list[Ciphertext], Ciphertext]:
        """One fresh ciphertext per patch group and the hint, each checked (parameters, key, level, scale,
        slots, size)."""
        if isinstance(face, (bytes, bytearray, str)) or not isinstance(face, Sequence) \
                or len(face) != len(self.groups) + 1:
            raise ShapeError(f"expected {len(self.groups) + 1} ciphertexts (one per patch group, then the hint)")
        levels = [self.params.max_level] * len(self.groups) + [self.hint_level]
        cts = [self._checked(blob, ev, level, "the hint" if i == len(self.groups) else "a face ciphertext")
               for i, (blob, level) in enumerate(zip(face, levels))]
        return cts[:-1], cts[-1]

    def _checked(self, blob, ev: Evaluator, level: int, what: str) -> Ciphertext:
        ct = serialize.load(blob, self.params) if isinstance(blob, (bytes, bytearray, memoryview)) else blob
        if not isinstance(ct, Ciphertext):
            raise ShapeError(f"{what} is not a ciphertext but a {type(ct).__name__}")
        if ct.params_fingerprint != self.params.fingerprint or ct.key_id != ev.key_id:
            raise KeyMismatchError(f"{what} of other parameters or another key")
        if ct.level != level:
            raise LevelError(f"{what} is sent at level {level}, got {ct.level}")
        if ct.size != 2 or ct.slots != self.params.slots:
            raise ShapeError(f"{what} has size 2 and {self.params.slots} slots")
        standard = self.params.scale_at(level)
        if not abs(ct.scale / standard - 1.0) <= 2.0**-32:
            raise ScaleMismatchError(f"{what} is encoded at level {level}'s standard scale "
                                     f"2^{np.log2(standard):.3f}, got 2^{np.log2(ct.scale):.3f}")
        return ct

    def embed(self, face: Sequence[bytes | Ciphertext], stats: Stats | None = None) -> Ciphertext:
        """The encrypted, hint-normalized embedding of one encrypted face (one ciphertext per patch group,
        then the hint), one level below the hint's.

        ``stats``: the call's counts and timings are added there (a fresh :class:`Stats` by default); the
        server keeps them as :attr:`stats` once the call completes."""
        stats = Stats() if stats is None else stats
        return self.embed_many([face], [stats])[0]

    def embed_many(self, faces: Sequence[Sequence[bytes | Ciphertext]],
                   stats: Sequence[Stats] | None = None) -> list[Ciphertext]:
        """:meth:`embed` for several faces in one call to the backend: the patch groups of all of them are
        handed out together, so a cluster runs as many at once as it has CPUs.  Every face is checked
        before any evaluation.  ``stats``: one per face (each face's own counts and layer times)."""
        stats = [Stats() for _ in faces] if stats is None else list(stats)
        if len(stats) != len(faces):
            raise ShapeError("one Stats per face")
        with self._lock:
            ev = self._ev()
            checked = [self._face(face, ev) for face in faces]
            t0 = time.perf_counter()
            results = self.backend.run_tasks(_group_task, (self._task_state(),),
                                             list(enumerate(ct for cts, _ in checked for ct in cts)), ev, "patch group")
            network = time.perf_counter() - t0
            out, k = [], len(self.groups)
            for f, ((_, hint), st) in enumerate(zip(checked, stats)):
                total = None
                for i, res in enumerate(results[f * k:(f + 1) * k]):
                    for name, sec in res.seconds.items():
                        st.seconds[f"group {i}: {name}"] = sec
                    total = res.ciphertext if total is None else ev.add(total, res.ciphertext)
                st.seconds["network"] = network
                t1 = time.perf_counter()
                out.append(ev.rescale(ev.mul(ev.bring_to(total, self.hint_level), hint)))
                st.seconds["hint"] = time.perf_counter() - t1
                for plan in self.plans:
                    st.key_switches += plan.key_switches
                    st.bootstraps += plan.bootstraps
                st.key_switches += 1
            if stats:
                self.stats = stats[-1]
            return out

    def enroll(self, name: str, face: Sequence[bytes | Ciphertext], stats: Stats | None = None,
               replace: bool = False) -> None:
        """Embed ``face`` and store it as ``name``'s template (atomically, in the store).  An existing name is
        refused (:class:`~cryptoface.errors.StoreError`, before any evaluation) unless ``replace``."""
        _check_name(name)                               # before the expensive part
        if not replace and name in self.store:
            raise NameTakenError(f"{name!r} is enrolled already; enroll with replace=True to replace it")
        stats = Stats() if stats is None else stats
        template = self.embed(face, stats)
        with self._lock:
            ev = self._ev()
            t0 = time.perf_counter()
            spread = self._spread(template)
            t1 = time.perf_counter()
            check = self.check.finish(ev, self.encoder, self.decision_bootstrapper.bootstrap(
                self.check.prepare(ev, self.encoder, spread)))
            stats.seconds["spread"] = t1 - t0
            stats.seconds["enrollment check"] = time.perf_counter() - t1
            stats.bootstraps += 1
            record = {"template": serialize.dump(template), "spread": serialize.dump(spread),
                      "check": serialize.dump(check)}
            self.store.put(name, wire.pack(record), replace=replace)
            self.stats = stats

    def _spread(self, embedding: Ciphertext) -> Ciphertext:
        """The spread layout of a hint-normalized embedding (one level; the gallery's layout)."""
        return self.spread.evaluate(self._ev(), self.encoder, embedding, cache=False)

    def delete(self, name: str) -> None:
        """Remove ``name``'s template (:class:`~cryptoface.errors.StoreError` if there is none)."""
        with self._lock:
            self.store.delete(name)

    def names(self) -> list[str]:
        """The enrolled names."""
        return self.store.names()

    def verify(self, face: Sequence[bytes | Ciphertext], name: str, stats: Stats | None = None) -> bytes:
        template = self._template(name)
        stats = Stats() if stats is None else stats
        return self._answer(self.embed(face, stats), template, stats)

    def match(self, probe: Ciphertext, name: str, stats: Stats | None = None) -> bytes:
        """The answer for an already embedded probe (:meth:`embed`) against one template."""
        return self._answer(probe, self._template(name), Stats() if stats is None else stats)

    def identify(self, face: Sequence[bytes | Ciphertext], stats: Stats | None = None) -> list[tuple[list[str], bytes]]:
        """1:N: the probe's decisions against every enrolled template, packed: one answer per group of up to
        :attr:`GalleryDecision.capacity` names (510 at N = 2^16), as ``[(names, answer), ...]``; answer slot
        ``j`` is the decision for ``names[j]`` (:meth:`Client.identification`).  Costs one embedding, its spread
        and per group one packed product per 128 names, one bootstrap of the group's slots and one sign."""
        stats = Stats() if stats is None else stats
        if not len(self.store):                                  # before the expensive part
            raise UnknownNameError("no template is enrolled: nothing to identify against")
        return self.identify_embedded(self.embed(face, stats), stats)

    def identify_embedded(self, probe: Ciphertext, stats: Stats | None = None,
                          names: Sequence[str] | None = None) -> list[tuple[list[str], bytes]]:
        """:meth:`identify` for an already embedded probe (:meth:`embed`), against every enrolled name or only
        ``names`` (a watch list: enrolled names, each once)."""
        stats = Stats() if stats is None else stats
        if names is None:
            names = self.store.names()
        else:
            names = [_check_name(n) for n in names]
            if len(set(names)) != len(names):
                raise StoreError("a watch list names each template once")
            for n in names:
                if n not in self.store:
                    raise UnknownNameError(f"no template enrolled as {n!r:.60}")
        if not names:
            raise UnknownNameError("no template is enrolled: nothing to identify against")
        with self._lock:
            ev = self._ev()
            t0 = time.perf_counter()
            spread = self._spread(probe)
            stats.seconds["spread"] = time.perf_counter() - t0
            cap = self.gallery.capacity
            groups = [names[start:start + cap] for start in range(0, len(names), cap)]
            packed = self._packed_groups(groups, stats)
            # the groups run in the backend's workers, two at a time on two cores
            results = self.backend.run_tasks(_gallery_task, (self._task_state(),), groups, ev, "gallery group",
                                             setup=lambda i: (spread, *packed[i]))
            out = []
            for batch, res in zip(groups, results):
                stats.add_seconds(res.seconds)
                stats.key_switches += self.gallery.key_switches(len(batch))
                stats.bootstraps += 1
                out.append((batch, serialize.dump(res.ciphertext)))
            self.stats = stats
            return out

    def _packed_groups(self, groups: Sequence[Sequence[str]], stats: Stats
                       ) -> list[tuple[list[tuple[Ciphertext, int]], Ciphertext]]:
        """Per group: its gallery ciphertexts (:meth:`GalleryDecision.pack`, 128 templates each) with their
        template counts, and its combined enrollment checks.  None of it depends on the probe, so the server keeps
        them while the store's :meth:`~cryptoface.store.SQLiteStore.version` stays the same (never for a store
        without one), for at most :data:`PACKED_GROUPS_KEPT` groups.  The missing ones are built in the
        backend's workers, one task per 128 names for the templates and one for their checks; a forked worker
        reads its records itself (the store opens its own connection there), on a cluster they are read here."""
        version = getattr(self.store, "version", None)
        token = version() if version is not None else None
        kept = self._packed if token is not None and token == self._packed_token else {}
        b = self.gallery.batch
        tasks = []                                  # (group, kind, names, offset in the group)
        for g, names in enumerate(groups):
            if tuple(names) not in kept:
                for start in range(0, len(names), b):
                    tasks += [(g, kind, names[start:start + b], start) for kind in ("spread", "check")]
        if tasks:
            t0 = time.perf_counter()
            if self.backend.forks:
                setup = lambda i: (tasks[i][1], tasks[i][2], tasks[i][3], self._gallery_record)   # noqa: E731
            else:
                setup = lambda i: (tasks[i][1], [self._gallery_record(n) for n in tasks[i][2]],   # noqa: E731
                                   tasks[i][3], None)
            results = self.backend.run_tasks(_pack_task, (self._task_state(),), tasks, self._ev(), "gallery pack",
                                             setup=setup)
            built: dict[int, tuple[list[tuple[Ciphertext, int]], Ciphertext | None]] = {}
            ev = self._ev()
            for (g, kind, names, _), res in zip(tasks, results):
                gallery, f = built.setdefault(g, ([], None))
                if kind == "spread":
                    gallery.append((res.ciphertext, len(names)))
                else:
                    built[g] = (gallery, res.ciphertext if f is None else ev.add(f, res.ciphertext))
                stats.add_seconds(res.seconds)
            stats.seconds["gallery: packing (wall)"] = time.perf_counter() - t0
            kept = dict(kept)
            for g, entry in built.items():
                kept[tuple(groups[g])] = entry
            if token is not None and version() == token:         # nothing changed while they were built
                while len(kept) > PACKED_GROUPS_KEPT:
                    kept.pop(next(iter(kept)))
                self._packed, self._packed_token = kept, token
        return [kept[tuple(names)] for names in groups]

    def _gallery_record(self, name: str) -> dict[str, Ciphertext]:
        """What the gallery decision reads of ``name``'s record: its spread and its check."""
        return self._record(name, ("spread", "check"))

    def _template(self, name: str) -> Ciphertext:
        """``name``'s template (for verification) from the store, checked as a face is."""
        return self._record(name)["template"]

    def _record(self, name: str, fields: Sequence[str] = ("template", "spread", "check")) -> dict[str, Ciphertext]:
        """The ``fields`` of ``name``'s stored record: the template (for verification), its spread (for the
        gallery) and its enrollment check, each checked as a face is (parameters, key, level, scale, slots,
        size)."""
        blob = self.store.get(name)
        ev = self._ev()
        what = f"the template of {name!r:.40}"
        levels = {"template": self.hint_level - 1, "spread": self.hint_level - 2, "check": self.check_level}
        try:
            parts = wire.unpack(blob, copy=False)
            if set(parts) != set(levels):
                raise SerializationError("a template record holds a template, its spread and its check")
            return {f: self._checked(parts[f], ev, levels[f], f"{what} ({f})") for f in fields}
        except FheError as exc:
            raise StoreError(f"the stored template of {name!r:.40} is not one of this server's: {exc}") from None

    def _answer(self, probe: Ciphertext, template: Ciphertext, stats: Stats) -> bytes:
        return self.match_many([(probe, template)], [stats])[0]

    def match_many(self, pairs: Sequence[tuple[Ciphertext, Ciphertext]], stats: Sequence[Stats] | None = None,
                   folds: Sequence[int | None] | None = None) -> list[bytes]:
        """The answers for ``(probe, template)`` pairs of already embedded faces (each as :meth:`embed`
        returns it: one level below the hint's), in one call to the backend: a cluster decides them side by
        side.  Each embedding is checked as a stored template is.  ``folds``: per pair, decide with the
        rule's threshold for that fold (fitted on the other folds: honest k-fold figures); None, or a None
        entry: the server's own threshold (:attr:`cos_threshold`)."""
        stats = [Stats() for _ in pairs] if stats is None else list(stats)
        folds = [None] * len(pairs) if folds is None else list(folds)
        if len(stats) != len(pairs) or len(folds) != len(pairs):
            raise ShapeError("one Stats and one fold per pair")
        decisions = {f: self.decision_for(f) for f in set(folds)}
        with self._lock:
            ev = self._ev()
            level = self.hint_level - 1
            items = [(decisions[f], self._checked(p, ev, level, "a probe embedding"),
                      self._checked(t, ev, level, "a template")) for (p, t), f in zip(pairs, folds)]
            t0 = time.perf_counter()
            results = self.backend.run_tasks(_decision_task, (self._task_state(),), items, ev, "decision")
            wall = time.perf_counter() - t0
            out = []
            for res, st in zip(results, stats):
                st.add_seconds(res.seconds)
                st.add_seconds({"match": wall})
                st.key_switches += self.decision.key_switches()
                st.bootstraps += 1
                out.append(serialize.dump(res.ciphertext))
            if stats:
                self.stats = stats[-1]
            return out

    def decision_for(self, fold: int | None) -> Decision:
        """The verification decision with the threshold of ``fold`` (the server's own when None)."""
        if fold is None:
            return self.decision
        c = self.model.thresholds[self.dataset].cosine_for_fold(int(fold))
        return self.decision if c == self.cos_threshold else Decision(self.model.embedding_dim, c, self._sign)


@dataclass(frozen=True)
class _TaskState:
    """What the server's tasks share (see :meth:`Server._task_state`)."""

    evaluator: Evaluator
    encoder: Encoder
    models: tuple[EncryptedModel, ...]
    decision_bootstrapper: Any
    gallery_bootstrapper: Any
    flooder: Encryptor | None
    gallery: GalleryDecision

    def parts(self) -> tuple:
        return (self.evaluator, self.encoder, self.models, self.decision_bootstrapper, self.gallery_bootstrapper,
                self.flooder, self.gallery)


def _group_task(state: _TaskState, item: tuple[int, Ciphertext]) -> GroupResult:
    """Patch group ``i``'s chain on its input (the body of a patch-group task; ``i`` counts over several faces)."""
    i, ct = item
    return run_group(state.evaluator, state.encoder, state.models[i % len(state.models)], ct)


def _decision_task(state: _TaskState, item: tuple[Decision, Ciphertext, Ciphertext]) -> GroupResult:
    """One verification's flooded answer (the body of a decision task in the backend)."""
    decision, probe, template = item
    ev, seconds = state.evaluator, {}
    out = decision.forward(ev, state.encoder, probe, template, state.decision_bootstrapper, seconds)
    return GroupResult(flood(ev, state.flooder, ev.bring_to(out, ANSWER_LEVEL)), seconds)


def _unpacking(bootstrapper):
    """The gallery's form of a given decision bootstrapper (see :func:`~.decision.gallery_bootstrap_config`)."""
    form = getattr(bootstrapper, "unpacking", None)
    if form is None:
        raise ParameterError("a given decision bootstrapper serves the gallery too: it needs an unpacking() form "
                             "(as SecretKeyBootstrapper has); give None for the real ones")
    return form()


def _pack_task(state: _TaskState, item: tuple[str, list, int, Callable[[str], dict] | None]) -> GroupResult:
    """One gallery ciphertext (``kind`` "spread": :meth:`GalleryDecision.pack` of up to 128 templates) or the
    combined enrollment checks of the same names (``kind`` "check", at their offset in the group).  ``item``:
    the kind, the names with the function that reads one's record (a forked worker) or the records themselves
    and None, and the offset."""
    kind, entries, first, read = item
    ev, encoder, gallery = state.evaluator, state.encoder, state.gallery
    t0 = time.perf_counter()
    records = [read(n) for n in entries] if read is not None else entries
    t1 = time.perf_counter()
    cts = [r[kind] for r in records]
    out = gallery.pack(ev, encoder, cts) if kind == "spread" else gallery.combine_checks(ev, encoder, cts, first)
    return GroupResult(out, {"gallery: read": t1 - t0, "gallery: pack": time.perf_counter() - t1})


def _gallery_task(state: _TaskState, item: tuple[Ciphertext, list[tuple[Ciphertext, int]], Ciphertext]
                  ) -> GroupResult:
    """One gallery group's flooded answer and the seconds of its stages (the body of a gallery task).  ``item``:
    the spread probe, the group's gallery ciphertexts with their template counts, and its combined checks."""
    spread, packed, f = item
    ev, encoder, gallery, boot, flooder = (state.evaluator, state.encoder, state.gallery, state.gallery_bootstrapper,
                                           state.flooder)
    seconds: dict[str, float] = {}
    v = gallery.forward(ev, encoder, spread, packed, f, boot, seconds)
    return GroupResult(flood(ev, flooder, ev.bring_to(v, ANSWER_LEVEL)), seconds)


#: How many groups' packed gallery ciphertexts a server keeps (about 20 MB each at N = 2^16: 4 gallery ciphertexts
#: at level 3 and the combined checks).
PACKED_GROUPS_KEPT = 16


#: What :meth:`Server.public_info` gives and :meth:`Client.encrypt_face` reads.
_INFO_FIELDS = frozenset({"model", "input_size", "patch_size", "groups", "params", "hint_level", "embedding_scale",
                          "norm_range"})


class Client:
    """Owns the secret key: makes the keys a server asks for, checks and encrypts faces, reads decisions."""

    def __init__(self, params: Parameters, model: FusedPatchCNN | FusedResNet, seed: bytes | None = None,
                 secret_key: SecretKey | None = None):
        """``model``: the server's (public) model file.  :meth:`encrypt_face` runs it in plaintext on the
        face: to refuse a face the model cannot vouch for (:meth:`FusedPatchCNN.check_probe`,
        :class:`~cryptoface.errors.ProbeError`) before anything is encrypted, and to compute the
        normalization hint.  ``secret_key``: the key holder's existing key (read back with
        :func:`fhe_ckks.serialize.load`); by default a new one (from ``seed``, tests only, or the OS CSPRNG)."""
        if not isinstance(model, (FusedPatchCNN, FusedResNet)):
            raise ModelError("a client needs the server's model file (a FusedPatchCNN or a FusedResNet), got "
                             f"{type(model).__name__}")
        self.params, self.model = params, model
        if secret_key is None:
            self._keygen = KeyGenerator(params, seed=seed)
        elif seed is not None or not isinstance(secret_key, SecretKey):
            raise ParameterError("give a Client either a seed or an existing SecretKey, not both")
        elif secret_key.params.fingerprint != params.fingerprint:
            raise KeyMismatchError("the secret key belongs to other parameters")
        else:
            self._keygen = KeyGenerator.from_secret_key(secret_key)
        self._encoder = Encoder(params)
        self._encryptor = Encryptor(params, self._keygen.secret_key)      # symmetric: half the upload
        self._decryptor = Decryptor(params, self._keygen.secret_key)

    @property
    def secret_key(self) -> SecretKey:
        return self._keygen.secret_key

    def evaluation_keys(self, plan: KeyPlan, progress: Callable[[int, int], None] | None = None) -> dict[str, bytes]:
        """The relinearization key, the Galois keys of a server's plan (each only up to the level it is
        used at; the plan is validated against the parameters first), the encapsulation keys when the plan
        bootstraps through a sparse secret, and the public key (the server floods answers with it).
        ``progress(done, total)``: called after each key."""
        keys = self._keygen.evaluation_keys(plan, progress)     # refuses anything but a valid KeyPlan
        out = {"galois": serialize.dump(keys.galois), "public": serialize.dump(self._keygen.public_key())}
        if keys.relin is not None:
            out["relin"] = serialize.dump(keys.relin)
        if keys.encapsulation is not None:
            out["encapsulation"] = serialize.dump(keys.encapsulation)
        return out

    def encrypt_face(self, image: np.ndarray, info: dict[str, Any]) -> list[bytes]:
        """One aligned, preprocessed face ``(3, S, S)`` in [-1, 1] -> one ciphertext per patch group, then the
        normalization hint ``1 / (s ||e||)`` in every slot at ``info["hint_level"]``.

        The face is first checked in plaintext (:meth:`FusedPatchCNN.check_probe` with the server's hint
        range): a face the model cannot vouch for raises :class:`~cryptoface.errors.ProbeError`."""
        missing = _INFO_FIELDS - set(info) if isinstance(info, dict) else _INFO_FIELDS
        if missing:
            raise ShapeError(f"a server's public info has the fields {sorted(_INFO_FIELDS)}; missing {sorted(missing)}")
        x = np.asarray(image, dtype=np.float64)
        size, patch = info["input_size"], info["patch_size"]
        if x.shape != (3, size, size):
            raise ShapeError(f"the server's model takes (3, {size}, {size}) faces, got {x.shape}")
        if info["params"] != self.params.fingerprint.hex():
            raise KeyMismatchError("the server uses other parameters")
        if info["model"] != self.model.name:
            raise ModelError(f"the server runs {info['model']!r}, this client checks faces with {self.model.name!r}")
        scale, level = info["embedding_scale"], info["hint_level"]
        if not isinstance(scale, float) or not (np.isfinite(scale) and scale > 0) or isinstance(level, bool) or not isinstance(level, int) \
                or not 0 <= level <= self.params.max_level:
            raise ShapeError(f"the server's hint scale {scale!r} or level {level!r} is not valid")
        embedding = self.model.check_probe(x[None], info["norm_range"])[0]
        hint = 1.0 / (scale * float(np.linalg.norm(embedding)))
        patches = split_patches(x[None], patch)[:, 0]
        out = []
        for group in info["groups"]:
            layout = TensorLayout.stacked(len(group), 3, patch, patch)
            pt = self._encoder.encode(layout.pack(patches[group], self.params.slots))
            out.append(serialize.dump(self._encryptor.encrypt(pt)))
        pt = self._encoder.encode(np.full(self.params.slots, hint), level=level)
        out.append(serialize.dump(self._encryptor.encrypt(pt)))
        return out

    def outcome(self, answer: bytes) -> DecisionOutcome:
        """The decision in slot 0 of a server's answer, after checking the answer against the protocol
        (:data:`ANSWER_LEVEL`, its standard scale, the decision's 8 slots, size 2, this client's key); the
        decryption is noise-flooded and only slot 0 is read."""
        return DecisionOutcome(float(self._answer_values(answer, DECISION_SLOTS)[0]))

    def identification(self, answers: Sequence[tuple[Sequence[str], bytes]]) -> dict[str, DecisionOutcome]:
        """``{name: outcome}`` from :meth:`Server.identify`'s packed answers: slot ``j`` of each group's answer
        is the decision for its ``j``-th name (each answer checked as :meth:`outcome` checks one, with the
        gallery's slot count; the names of one identification unique)."""
        width = gallery_width(self.model.embedding_dim, self.params.slots)
        out: dict[str, DecisionOutcome] = {}
        for names, answer in answers:
            names = list(names)
            if not 0 < len(names) <= width - 2 or not all(isinstance(n, str) for n in names):
                raise ShapeError(f"a gallery answer decides 1 to {width - 2} names, got {len(names)}")
            values = self._answer_values(answer, width)
            for j, name in enumerate(names):
                if name in out:
                    raise SecurityError(f"the name {name!r:.40} is answered twice")
                out[name] = DecisionOutcome(float(values[j]))
        return out

    def _answer_values(self, answer: bytes, slots: int) -> np.ndarray:
        ct = serialize.load(answer, self.params)
        if not isinstance(ct, Ciphertext):
            raise SecurityError(f"an answer is a ciphertext, got a {type(ct).__name__}")
        if ct.key_id != self._keygen.secret_key.key_id:
            raise KeyMismatchError("the answer is encrypted under another key")
        if ct.level != ANSWER_LEVEL or ct.size != 2 or ct.slots != slots:
            raise SecurityError(f"an answer is a size-2 ciphertext at level {ANSWER_LEVEL} with "
                                f"{slots} slots; got size {ct.size}, level {ct.level}, "
                                f"{ct.slots} slots")
        standard = self.params.scale_at(ANSWER_LEVEL)
        # the server's arithmetic lands on the standard scale up to float rounding; a ciphertext dropped
        # from another level without rescaling is off by the chain's drift (2^-22 on a toy chain)
        if not abs(ct.scale / standard - 1.0) <= 2.0**-32:
            raise ScaleMismatchError(f"an answer has the standard scale 2^{np.log2(standard):.3f} of level "
                                     f"{ANSWER_LEVEL}; got 2^{np.log2(ct.scale):.3f}")
        return np.real(self._encoder.decode(self._decryptor.decrypt(ct, flooding_bits=20)))

    def decide(self, answer: bytes) -> bool:
        """True = the same person.  An "invalid" answer (the hint did not normalize the probe or the
        template under encryption) raises :class:`~cryptoface.errors.ProbeError`."""
        kind = self.outcome(answer).kind
        if kind == "invalid":
            raise ProbeError("the server's decision says invalid: the probe's or the template's normalization "
                             "failed its encrypted check")
        return kind == "same"
