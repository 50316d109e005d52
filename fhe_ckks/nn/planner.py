"""Placing bootstraps in a chain of layers, and counting what the chain costs.

:func:`plan_bootstraps` walks the top-level layers with the ciphertext's level
and inserts a bootstrap in front of a layer only when that layer would not
fit in the levels left (as late as possible, so as few as possible).
:class:`EncryptedModel` holds a chain with its plan: it runs it and reports
its operation counts and the evaluation keys (a
:class:`~fhe_ckks.rlwe.keyplan.KeyPlan`) it needs.  The
bootstrapper is anything with ``depth()``, ``output_level`` and
``bootstrap(ct)``: :class:`fhe_ckks.bootstrap.Bootstrapper`, or in tests the
named :class:`~fhe_ckks.bootstrap.SecretKeyBootstrapper` double.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from ..ckks.ciphertext import Ciphertext
from ..ckks.encoder import Encoder
from ..ckks.evaluator import Evaluator
from ..errors import LevelError, ParameterError
from ..rlwe.keyplan import KeyPlan
from .layers import Layer, bootstrap_periodic


class BootstrapperLike(Protocol):
    output_level: int

    def depth(self) -> int: ...

    def bootstrap(self, ct: Ciphertext) -> Ciphertext: ...


@dataclass(frozen=True)
class Plan:
    """Which layers run after a bootstrap, the levels along the way, and what the chain costs.

    Attributes:
        bootstrap_before: indices of the layers a bootstrap runs in front of.
        levels_after: the level after each layer.
        start_level: the level the chain starts at.
        key_switches: rotations and relinearizations of one evaluation (bootstraps not included).
        depth: levels the layers consume (bootstraps not included).
        inner_bootstraps: bootstraps the layers run themselves (:class:`~fhe_ckks.nn.layers.Bootstrap` layers
            placed by the network's design).
    """

    bootstrap_before: tuple[int, ...]
    levels_after: tuple[int, ...]
    start_level: int
    key_switches: int = 0
    depth: int = 0
    inner_bootstraps: int = 0

    @property
    def bootstraps(self) -> int:
        return len(self.bootstrap_before) + self.inner_bootstraps

    @property
    def output_level(self) -> int:
        return self.levels_after[-1] if self.levels_after else self.start_level

    def levels_before(self, output_level_after_bootstrap: int | None) -> list[int]:
        """The level each layer starts at (after its bootstrap, if it has one)."""
        out, level = [], self.start_level
        for i, after in enumerate(self.levels_after):
            out.append(output_level_after_bootstrap if i in self.bootstrap_before else level)
            level = after
        return out

    @property
    def counts(self) -> dict:
        return {"key_switches": self.key_switches, "bootstraps": self.bootstraps, "depth": self.depth}


def plan_bootstraps(layers: Sequence[Layer], start_level: int, output_level_after_bootstrap: int | None,
                    reserve: int = 0) -> Plan:
    """Greedy placement; ``reserve`` levels must remain after the last layer (bootstrapping again if needed)."""
    for name, value in (("start_level", start_level), ("reserve", reserve)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ParameterError(f"{name} must be an int >= 0, got {value!r}")
    depths = [layer.depth() for layer in layers]
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths):
        raise ParameterError(f"layer depths must be ints >= 0, got {depths}")
    if not depths and reserve > start_level:
        raise LevelError(f"an empty chain at level {start_level} cannot keep {reserve} levels in reserve")
    level, before, after = start_level, [], []
    for i, layer in enumerate(list(layers)):
        keep = reserve if i == len(layers) - 1 else 0
        out = _level_after(layer, level, keep)
        if out is None:
            out = None if output_level_after_bootstrap is None else \
                _level_after(layer, output_level_after_bootstrap, keep)
            if out is None:
                need = layer.depth() + keep
                raise LevelError(f"layer {i} ({getattr(layer, 'name', type(layer).__name__)}) needs {need} levels; "
                                 f"{level} left and {output_level_after_bootstrap} after a bootstrap")
            before.append(i)
        level = out
        after.append(level)
    return Plan(tuple(before), tuple(after), start_level, sum(layer.key_switches() for layer in layers),
                sum(layer.depth() for layer in layers),
                sum(getattr(layer, "bootstraps", lambda: 0)() for layer in layers))


def _level_after(layer, level: int, keep: int) -> int | None:
    """The layer's output level from ``level``, or None when it does not fit or leaves fewer than ``keep``
    levels.  Layers that hold :class:`~fhe_ckks.nn.layers.Bootstrap` layers say it through ``level_after``."""
    try:
        out = layer.level_after(level) if hasattr(layer, "level_after") else level - layer.depth()
    except LevelError:
        return None
    return out if out >= keep else None


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
            layout = getattr(layer, "in_layout", None)
            ct = timed(f"bootstrap before {getattr(layer, 'name', i)}",
                       lambda: bootstrapper.bootstrap(ct) if layout is None
                       else bootstrap_periodic(bootstrapper, ct, layout.period))
        ct = timed(getattr(layer, "name", f"layer {i}"), lambda: layer.forward(evaluator, encoder, ct))
    return ct


class EncryptedModel:
    """A chain of layers with its bootstrap plan, from a start level: runs it and says what it costs.

    ``counts()`` gives the key switches (rotations and relinearizations),
    bootstraps, Galois keys, depth and the levels at the start and the end;
    ``key_plan()`` the evaluation keys, each rotation step at the highest
    level it is used at, so the key holder makes each Galois key only that
    deep; ``layer_costs()`` the same per layer, for benchmarks and reports.
    """

    def __init__(self, layers: Sequence[Layer], start_level: int, bootstrapper: BootstrapperLike | None = None,
                 reserve: int = 0):
        self.layers = list(layers)
        self.bootstrapper = bootstrapper
        after = None if bootstrapper is None else bootstrapper.output_level
        self.plan = plan_bootstraps(self.layers, start_level, after, reserve)
        self._levels_before = self.plan.levels_before(after)

    def key_plan(self) -> KeyPlan:
        """The layers' keys at the levels the plan runs them at (bootstrapping's own keys not included)."""
        return KeyPlan.merge(layer.key_plan(level) for layer, level in zip(self.layers, self._levels_before))

    @property
    def diagonal_count(self) -> int:
        return sum(layer.diagonal_count for layer in self.layers)

    def counts(self) -> dict:
        return {**self.plan.counts, "galois_keys": len(self.key_plan()), "start_level": self.plan.start_level,
                "output_level": self.plan.output_level}

    def layer_costs(self) -> list[dict]:
        """Per top-level layer: name, level it starts at, whether a bootstrap runs before it, depth,
        key switches and plaintext diagonals."""
        return [{"layer": getattr(layer, "name", f"layer {i}"), "level": level,
                 "bootstrap_before": i in self.plan.bootstrap_before, "depth": layer.depth(),
                 "key_switches": layer.key_switches(), "diagonals": layer.diagonal_count}
                for i, (layer, level) in enumerate(zip(self.layers, self._levels_before))]

    def run(self, evaluator: Evaluator, encoder: Encoder, ct: Ciphertext,
            seconds: dict[str, float] | None = None) -> Ciphertext:
        if ct.level < self.plan.start_level:
            raise LevelError(f"the plan starts at level {self.plan.start_level}, the ciphertext is at {ct.level}")
        return run_plan(self.layers, self.plan, evaluator, encoder, ct, self.bootstrapper, seconds)
