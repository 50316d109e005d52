"""Loading checkpoints: ours, and the original CryptoFace repository's.

Mapping from the original layout (``train.py`` of human-analysis/CryptoFace)::

    original checkpoint key        here
    ckpt["backbone"]               PatchCNN.load_state_dict (identical parameter names:
                                   nets.<i>.conv, nets.<i>.layers.<j>.{herpn1,conv1,herpn2,conv2,shortcut},
                                   nets.<i>.herpnpool.herpn, nets.<i>.bn, linear, bn, jigsaw)
    ckpt["head"]["kernel"]         ArcFace.kernel
    ckpt["optimizer"|"scheduler"|"epoch"|"test_acc"|"jigsaw_weight"]   same keys

The input size is read from the number of patch networks.  A bare state dict
(no ``backbone`` key) is accepted too.  Keys the original adds after
``fuse()`` (``nets.<i>.layers.<j>.weight1``, ``a1``, ... and ``weights``/``bias``)
are dropped: fusion is recomputed from the batch-norm statistics.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import ModelError
from .models import PATCH_SIZE, build_model

_FUSED_KEYS = re.compile(r"(^|\.)(weight1|weight2|a0|a1|a2|b0|b1|weights\.\d+)$|^bias$")


def backbone_state(obj) -> dict:
    """The PatchCNN state dict inside a checkpoint object (ours or the original's)."""
    state = obj.get("backbone", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("nets.") for k in state):
        raise ModelError("checkpoint holds no PatchCNN state (expected a 'backbone' state dict with nets.* keys)")
    return {k: v for k, v in state.items() if not _FUSED_KEYS.search(k)}


def input_size_of(state: dict, patch_size: int = PATCH_SIZE) -> int:
    n = len({k.split(".")[1] for k in state if k.startswith("nets.")})
    grid = int(round(n ** 0.5))
    if grid * grid != n:
        raise ModelError(f"{n} patch networks do not form a square grid")
    return grid * patch_size


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """The model of a checkpoint, in evaluation mode: a CryptoFaceNet (ours or the original's), or one of the
    ResNet baselines when the checkpoint's config names one (``model.arch``)."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such checkpoint") from None
    except Exception as exc:
        raise ModelError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    cfg = obj.get("config") if isinstance(obj, dict) else None
    arch = (cfg.get("model") or {}).get("arch", "cryptofacenet") if isinstance(cfg, dict) else "cryptofacenet"
    if arch != "cryptofacenet":
        try:
            model = build_model(cfg["model"]["input_size"], PATCH_SIZE, arch, cfg["model"].get("activation"))
            model.load_state_dict(obj["backbone"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelError(f"{path}: not a valid {arch} checkpoint ({exc})") from exc
        return model.eval()
    state = backbone_state(obj)
    model = build_model(input_size_of(state))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: state dict does not fit CryptoFaceNet ({exc})") from exc
    return model.eval()
