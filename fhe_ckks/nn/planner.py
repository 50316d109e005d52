"""Placing bootstraps in a chain of layers, and counting what the chain costs.

:func:`plan_bootstraps` walks the top-level layers with the ciphertext's level
and inserts a bootstrap in front of a layer only when that layer would not
fit in the levels left (as late as possible, so as few as possible).
:class:`EncryptedModel` holds a chain with its plan: it runs it and reports
its operation counts and the Galois keys (with their levels) it needs.  The
bootstrapper is anything with ``depth()``, ``output_level`` and
``bootstrap(ct)``: :class:`fhe_ckks.bootstrap.Bootstrapper`, or in tests the
named :class:`~fhe_ckks.bootstrap.SecretKeyBootstrapper` double.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ..ckks.ciphertext import Ciphertext
from ..ckks.encoder import Encoder
from ..ckks.evaluator import Evaluator
from ..errors import LevelError
from .layers import Layer


class BootstrapperLike(Protocol):
    output_level: int

    def depth(self) -> int: ...

    def bootstrap(self, ct: Ciphertext) -> Ciphertext: ...


@dataclass
class Plan:
    """Which layers run after a bootstrap, and the levels along the way."""

    bootstrap_before: list[int]
    levels_after: list[int]
    start_level: int
    counts: dict = field(default_factory=dict)

    @property
    def bootstraps(self) -> int:
        return len(self.bootstrap_before)

    @property
    def output_level(self) -> int:
        return self.levels_after[-1] if self.levels_after else self.start_level


def plan_bootstraps(layers: Sequence[Layer], start_level: int, output_level_after_bootstrap: int | None,
                    reserve: int = 0) -> Plan:
    """Greedy placement; ``reserve`` levels must remain after the last layer (bootstrapping again if needed)."""
    level, before, after = start_level, [], []
    for i, layer in enumerate(list(layers)):
        need = layer.depth() + (reserve if i == len(layers) - 1 else 0)
        if need > level:
            if output_level_after_bootstrap is None or need > output_level_after_bootstrap:
                raise LevelError(f"layer {i} ({getattr(layer, 'name', type(layer).__name__)}) needs {need} levels; "
                                 f"{level} left and {output_level_after_bootstrap} after a bootstrap")
            before.append(i)
            level = output_level_after_bootstrap
        level -= layer.depth()
        after.append(level)
    counts = {"key_switches": sum(layer.key_switches() for layer in layers), "bootstraps": len(before),
              "depth": sum(layer.depth() for layer in layers)}
    return Plan(before, after, start_level, counts)


def run_plan(layers: Sequence[Layer], plan: Plan, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext,
             bootstrapper: BootstrapperLike | None, seconds: dict[str, float] | None = None) -> Ciphertext:
    """Run the chain; with ``seconds``, the wall time of each layer (and bootstrap) is added under its name."""
    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return out

    for i, layer in enumerate(layers):
        if i in plan.bootstrap_before:
            if bootstrapper is None:
                raise LevelError(f"the plan bootstraps before layer {i} but no bootstrapper was given")
            ct = timed(f"bootstrap before {getattr(layer, 'name', i)}", lambda: bootstrapper.bootstrap(ct))
        ct = timed(getattr(layer, "name", f"layer {i}"), lambda: layer.forward(evaluator, encoder, ct))
    return ct


class EncryptedModel:
    """A chain of layers with its bootstrap plan, from a start level: runs it and says what it costs.

    ``counts()`` gives the key switches (rotations and relinearisations),
    bootstraps, Galois keys, depth and the levels at the start and the end;
    ``key_levels()`` the highest level each rotation step is used at, so the
    key holder makes each Galois key only that deep.
    """

    def __init__(self, layers: Sequence[Layer], start_level: int, bootstrapper: BootstrapperLike | None = None,
                 reserve: int = 0):
        self.layers = list(layers)
        self.bootstrapper = bootstrapper
        after = None if bootstrapper is None else bootstrapper.output_level
        self.plan = plan_bootstraps(self.layers, start_level, after, reserve)

    def key_levels(self) -> dict[int, int]:
        levels: dict[int, int] = {}
        level = self.plan.start_level
        for i, layer in enumerate(self.layers):
            if i in self.plan.bootstrap_before:
                level = self.bootstrapper.output_level
            for step, lvl in layer.key_levels(level).items():
                levels[step] = max(levels.get(step, -1), lvl)
            level -= layer.depth()
        return levels

    def counts(self) -> dict:
        return {**self.plan.counts, "galois_keys": len(self.key_levels()), "start_level": self.plan.start_level,
                "output_level": self.plan.output_level}

    def run(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext,
            seconds: dict[str, float] | None = None) -> Ciphertext:
        if ct.level < self.plan.start_level:
            raise LevelError(f"the plan starts at level {self.plan.start_level}, the ciphertext is at {ct.level}")
        return run_plan(self.layers, self.plan, evaluator, encoder, ct, self.bootstrapper, seconds)
