"""Recipes: the stages that make one shipped model, run in order, each resumable, by one command.

A recipe (``cryptoface/training/recipes/<name>.yaml``) lists stages, each a training config with overrides;
a stage starts from the previous stage's (or a named stage's) checkpoint through ``model.init``::

    stages:
      - name: distill
        config: distill64_large
      - name: bound
        config: bound64_large
        init: distill            # model.init = <workdir>/distill/model.ckpt

``python -m cryptoface.training recipe cryptofacenet4 --workdir runs/cfn4 --set data.train=...`` runs every
stage in ``<workdir>/<stage>/``; ``--set`` applies to every stage (data paths).  Run the same command again after
an interruption (a signal, ``--stop-after``, a lost session) and it skips the finished stages, resumes the
unfinished one from its checkpoint (inside an epoch too; see :mod:`cryptoface.training.train`) and goes on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable

import yaml

from ..errors import ConfigError
from .config import load_config, set_value

log = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).with_name("recipes")
_STAGE_KEYS = {"name", "config", "set", "init"}


def resolve_recipe(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = RECIPE_DIR / f"{path.name}.yaml"
    if path.parent == Path(".") and candidate.is_file():
        return candidate
    raise ConfigError(f"{name_or_path}: no such recipe (built-in: "
                      f"{', '.join(sorted(p.stem for p in RECIPE_DIR.glob('*.yaml')))})")


def load_recipe(name_or_path: str | Path) -> list[dict]:
    """The stages of a recipe, checked: unique names, known keys, ``init`` naming an earlier stage."""
    path = resolve_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise ConfigError(f"{path}: a recipe is a mapping with a non-empty list of stages")
    stages, seen = [], []
    for i, stage in enumerate(raw["stages"]):
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str) or not stage.get("config"):
            raise ConfigError(f"{path}: stage {i} needs a name and a config")
        unknown = set(stage) - _STAGE_KEYS
        if unknown:
            raise ConfigError(f"{path}: stage {stage['name']!r}: unknown keys {sorted(unknown)}")
        if stage["name"] in seen or not stage["name"].replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{path}: stage name {stage['name']!r} repeats or is not a plain name")
        init = stage.get("init")
        if init is not None and init not in seen:
            raise ConfigError(f"{path}: stage {stage['name']!r} starts from {init!r}, which is not an earlier stage")
        sets = stage.get("set") or []
        if not isinstance(sets, list) or not all(isinstance(x, str) for x in sets):
            raise ConfigError(f"{path}: stage {stage['name']!r}: 'set' is a list of KEY=VALUE strings")
        seen.append(stage["name"])
        stages.append({"name": stage["name"], "config": str(stage["config"]), "set": sets, "init": init})
    return stages


def stage_state(ckpt: Path, epochs: int) -> str:
    """``missing``, ``partial`` (a checkpoint of an unfinished run) or ``done``."""
    if not ckpt.is_file():
        return "missing"
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return "done" if state.get("epoch") == epochs and state.get("partial") is None else "partial"


def run_recipe(recipe: str | Path, workdir: str | Path, overrides: Iterable[str] = (), progress: bool = True,
               budget_s: float | None = None, init: str | None = None) -> Path:
    """Run (or continue) every stage of ``recipe`` under ``workdir``; returns the last stage's checkpoint, or the
    checkpoint of the stage in hand when the budget or a signal stopped it (run again to continue).

    ``init``: a checkpoint the first stage starts from (e.g. a trained CryptoFaceNet4 for a CryptoFaceNet9)."""
    from .train import StopRequest, train

    stages = load_recipe(recipe)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides)
    deadline = None if budget_s is None else time.monotonic() + budget_s
    ckpt, ran = None, False
    for k, stage in enumerate(stages):
        cfg = load_config(stage["config"], stage["set"])
        for item in overrides:
            set_value(cfg, item)
        start_from = workdir / stage["init"] / "model.ckpt" if stage["init"] else None
        if k == 0 and init is not None:
            start_from = Path(init)
        if start_from is not None:
            if not start_from.is_file():
                raise ConfigError(f"stage {stage['name']!r} starts from {start_from}, which does not exist")
            cfg["model"]["init"] = str(start_from)
        run_dir = workdir / stage["name"]
        ckpt = run_dir / "model.ckpt"
        state = stage_state(ckpt, int(cfg["optim"]["epochs"]))
        if state == "done":
            log.info("stage %s: done (%s)", stage["name"], ckpt)
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if remaining == 0.0 and ran:      # a stage ran to its end in this call and spent the budget
            log.info("time budget spent before stage %s; run the same command again to continue", stage["name"])
            return ckpt
        stop = StopRequest(remaining)
        log.info("stage %s: %s (%s)", stage["name"], "resuming" if state == "partial" else "starting",
                 stage["config"])
        if state == "partial":
            import torch

            saved = torch.load(ckpt, map_location="cpu", weights_only=False)["config"]
            changed = sorted(key for key in set(saved) | set(cfg) if saved.get(key) != cfg.get(key))
            if changed:
                log.warning("stage %s: resuming with the configuration it started with; this command's differs "
                            "in %s", stage["name"], ", ".join(changed))
            train(saved, resume=str(ckpt), progress=progress, stop=stop)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "stage.json").write_text(json.dumps({"recipe": str(recipe), **stage}, indent=2))
            train(cfg, progress=progress, stop=stop, run_dir=run_dir)
        ran = True
        if stage_state(ckpt, int(cfg["optim"]["epochs"])) != "done":
            log.info("stage %s stopped; run the same command again to continue", stage["name"])
            return ckpt
    return ckpt

