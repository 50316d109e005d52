"""YAML configuration with inheritance (``base: other.yaml``) and ``--set key=value`` overrides.

Configs hold hyper-parameters only: no paths and no dataset constants (the
number of classes comes from the data).  Paths arrive on the command line,
e.g. ``--set data.train=/data/WebFace4M``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import ConfigError

CONFIG_DIR = Path(__file__).with_name("configs")


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"{name_or_path}: no such config (built-in: "
                      f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))})")


def load_config(name_or_path: str | Path, overrides: Iterable[str] = (), _seen: tuple = ()) -> dict[str, Any]:
    path = resolve(name_or_path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' inheritance loops")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    base = raw.pop("base", None)
    config = _merge(load_config(path.parent / base, (), _seen + (path.resolve(),)), raw) if base else raw
    for item in overrides:
        set_value(config, item)
    return config


def set_value(config: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override; the key must already exist (typos are errors)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"override {key!r}: no section {part!r}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"override {key!r}: unknown key (known here: {', '.join(sorted(node))})")
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: bad value ({exc})") from exc
