"""Key plans: which evaluation keys a circuit needs, each only as deep as it is used.

A :class:`KeyPlan` is the one value type that says "rotate by this step, up to
this level": every layer of :mod:`fhe_ckks.nn`, the bootstrapper and the
face-recognition server describe their needs with it, plans compose with
``|`` (:meth:`KeyPlan.union`), and :meth:`KeyGenerator.evaluation_keys
<fhe_ckks.rlwe.keys.KeyGenerator.evaluation_keys>` turns one into keys.

* ``rotations[step] = level``: the highest level at which the circuit rotates
  by ``step`` (slot i receives slot i + step).  A Galois key made for that
  level carries only the primes ``q_0 .. q_level`` and the special primes, so
  keys used deep in a circuit are a fraction of a top-level key.
* ``relinearization``: the circuit multiplies ciphertexts.
* ``conjugation``: it conjugates slots (bootstrapping does).
* ``encapsulation_weight``: bootstrapping through an ephemeral sparse secret
  of this Hamming weight (see :class:`~fhe_ckks.rlwe.keys.EncapsulationKeys`).

A plan is public: a server sends it to the key holder as JSON
(:meth:`KeyPlan.to_json`), and the key holder reads it with
:meth:`KeyPlan.from_json`, which refuses anything malformed, and checks it
against its parameters (:meth:`KeyPlan.validate`) before making a key, so a
plan cannot ask for keys the parameters cannot have, or for unbounded work.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import ParameterError, SerializationError
from .params import Parameters

__all__ = ["KeyPlan", "MAX_ROTATIONS"]

#: The most rotation steps one plan may ask for (a CryptoFaceNet asks for 67,
#: full-slot bootstrapping at N = 2^16 for 23): a bound on the key holder's work.
MAX_ROTATIONS = 1024

#: The largest JSON text :meth:`KeyPlan.from_json` reads.
MAX_JSON_BYTES = 1 << 20


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise SerializationError("a key plan's JSON repeats a field or a rotation step")
    return dict(pairs)


@dataclass(frozen=True)
class KeyPlan:
    """The evaluation keys a circuit needs, and nothing more (see the module docstring).

    Frozen and hashable; build plans with the constructor, :meth:`rotations_at`
    and ``|``.
    """

    rotations: Mapping[int, int] = field(default_factory=dict)
    relinearization: bool = False
    conjugation: bool = False
    encapsulation_weight: int | None = None

    def __post_init__(self):
        if not isinstance(self.rotations, Mapping):
            raise ParameterError(f"rotations map steps to levels, got a {type(self.rotations).__name__}")
        rot = {}
        for step, level in self.rotations.items():
            if not _is_int(step) or not _is_int(level) or level < 0:
                raise ParameterError(f"a key plan maps int rotation steps to levels >= 0, got {step!r}: {level!r}")
            rot[int(step)] = int(level)
        if not isinstance(self.relinearization, bool) or not isinstance(self.conjugation, bool):
            raise ParameterError("relinearization and conjugation are booleans")
        w = self.encapsulation_weight
        if w is not None and (not _is_int(w) or w < 1):
            raise ParameterError(f"an encapsulation weight is a positive int, got {w!r}")
        object.__setattr__(self, "rotations", MappingProxyType(dict(sorted(rot.items()))))

    # ---- building -------------------------------------------------------------

    @classmethod
    def rotations_at(cls, steps, level: int, **flags) -> KeyPlan:
        """Every step in ``steps`` (integers) used up to ``level``."""
        return cls({s: level for s in steps}, **flags)

    def union(self, other: KeyPlan) -> KeyPlan:
        """Everything either plan needs: a step shared by both is kept at the higher level."""
        if not isinstance(other, KeyPlan):
            raise ParameterError(f"a key plan unites with a key plan, not a {type(other).__name__}")
        rot = dict(self.rotations)
        for step, level in other.rotations.items():
            rot[step] = max(rot.get(step, -1), level)
        a, b = self.encapsulation_weight, other.encapsulation_weight
        if a is not None and b is not None and a != b:
            raise ParameterError(f"two plans bootstrap through ephemeral secrets of weights {a} and {b}")
        return KeyPlan(rot, self.relinearization or other.relinearization, self.conjugation or other.conjugation,
                       a if a is not None else b)

    def __or__(self, other: KeyPlan) -> KeyPlan:
        return self.union(other) if isinstance(other, KeyPlan) else NotImplemented

    @classmethod
    def merge(cls, plans) -> KeyPlan:
        """The union of any number of plans (the empty plan for none)."""
        out = cls()
        for plan in plans:
            out = out | plan
        return out

    # ---- reading ----------------------------------------------------------------

    @property
    def steps(self) -> list[int]:
        """The rotation steps, sorted."""
        return list(self.rotations)

    def by_level(self) -> dict[int, list[int]]:
        """``{level: sorted steps used up to that level}``, highest level first."""
        out: dict[int, list[int]] = {}
        for step, level in self.rotations.items():
            out.setdefault(level, []).append(step)
        return dict(sorted(out.items(), reverse=True))

    def __len__(self) -> int:
        return len(self.rotations)

    def __hash__(self) -> int:
        return hash((tuple(self.rotations.items()), self.relinearization, self.conjugation,
                     self.encapsulation_weight))

    def __eq__(self, other) -> bool:
        if not isinstance(other, KeyPlan):
            return NotImplemented
        return (dict(self.rotations) == dict(other.rotations) and self.relinearization == other.relinearization
                and self.conjugation == other.conjugation and self.encapsulation_weight == other.encapsulation_weight)

    def __reduce__(self):
        # the read-only view of the rotations does not pickle; the plan does (worker processes, clusters)
        return (KeyPlan, (dict(self.rotations), self.relinearization, self.conjugation, self.encapsulation_weight))

    def __repr__(self) -> str:
        return (f"KeyPlan({len(self)} rotations, relinearization={self.relinearization}, "
                f"conjugation={self.conjugation}, encapsulation_weight={self.encapsulation_weight})")

    def validate(self, params: Parameters, max_rotations: int = MAX_ROTATIONS) -> KeyPlan:
        """Raise :class:`~fhe_ckks.errors.ParameterError` unless ``params`` can serve the plan within bounds:
        at most ``max_rotations`` steps, each in ``(-N/2, N/2)`` and up to a level the chain has, special
        primes for any key switching, and an encapsulation weight at most N.  Returns the plan."""
        if not isinstance(params, Parameters):
            raise ParameterError(f"expected Parameters, got {type(params).__name__}")
        if len(self.rotations) > max_rotations:
            raise ParameterError(f"a key plan of {len(self.rotations)} rotations exceeds the bound {max_rotations}")
        for step, level in self.rotations.items():
            if not -params.slots < step < params.slots:
                raise ParameterError(f"rotation step {step} outside (-{params.slots}, {params.slots})")
            if level > params.max_level:
                raise ParameterError(f"rotation step {step} at level {level}; the chain has {params.max_level}")
        wants_keys = bool(self.rotations) or self.relinearization or self.conjugation \
            or self.encapsulation_weight is not None
        if wants_keys and not params.p_primes:
            raise ParameterError("these parameters have no special primes: no key switching")
        if self.encapsulation_weight is not None and self.encapsulation_weight > params.n:
            raise ParameterError(f"encapsulation weight {self.encapsulation_weight} exceeds N = {params.n}")
        return self

    # ---- JSON -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"rotations": {str(k): v for k, v in self.rotations.items()},
                "relinearization": self.relinearization, "conjugation": self.conjugation,
                "encapsulation_weight": self.encapsulation_weight}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyPlan:
        """Parse :meth:`to_json`'s output; anything else raises :class:`~fhe_ckks.errors.SerializationError`."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise SerializationError(f"a key plan is JSON text, got {type(text).__name__}")
        size = len(text.encode("utf-8", "replace")) if isinstance(text, str) else len(text)
        if size > MAX_JSON_BYTES:
            raise SerializationError(f"a key plan of {size} bytes exceeds {MAX_JSON_BYTES}")
        try:
            d = json.loads(text, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise SerializationError(f"unreadable key plan: {type(exc).__name__}") from None
        if not isinstance(d, dict) or set(d) != {"rotations", "relinearization", "conjugation",
                                                 "encapsulation_weight"}:
            raise SerializationError("a key plan has exactly the fields rotations, relinearization, conjugation "
                                     "and encapsulation_weight")
        rot = d["rotations"]
        if not isinstance(rot, dict) or len(rot) > MAX_ROTATIONS:
            raise SerializationError("rotations must be an object of at most "
                                     f"{MAX_ROTATIONS} steps")
        parsed: dict[int, int] = {}
        for key, level in rot.items():
            try:
                step = int(key, 10)
            except ValueError:
                raise SerializationError(f"rotation step {key!r} is not an integer") from None
            if str(step) != key or not _is_int(level):
                raise SerializationError(f"malformed rotation entry {key!r}: {level!r}")
            parsed[step] = level
        try:
            return cls(parsed, d["relinearization"], d["conjugation"], d["encapsulation_weight"])
        except ParameterError as exc:
            raise SerializationError(f"invalid key plan: {exc}") from None
