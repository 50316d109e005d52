"""cryptoface: encrypted face verification built on :mod:`fhe_ckks`.

* :mod:`cryptoface.data`, :mod:`cryptoface.verification`, :mod:`cryptoface.model`:
  face data readers, verification metrics and the fused model with its file
  format (numpy, Pillow, scikit-learn; never torch).
* :mod:`cryptoface.training` (PyTorch): CryptoFaceNet, training, distillation,
  fusion and export to ``<name>.model.npz``.
* :mod:`cryptoface.encrypted` (numpy + fhe_ckks, never torch) runs exported
  models under encryption: the patch networks as encrypted layers, the
  normalization and matching tail, and the :class:`~cryptoface.encrypted.Client`
  and :class:`~cryptoface.encrypted.Server` roles (see docs/architecture.md).

The shipped models and a small sample of LFW pairs live in ``cryptoface/assets``
(see ``docs/training.md`` for how they were made); :func:`model_path` finds a
shipped model by its name (``cryptofacenet4``, ``cryptofacenet9``, ``cryptofacenet16``).
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).with_name("assets")
DEFAULT_MODEL = ASSETS / "cryptofacenet4.model.npz"
DEFAULT_SAMPLE = ASSETS / "lfw_sample"
#: The shipped CryptoFaceNet of each input size.
MODEL_BY_INPUT_SIZE = {64: "cryptofacenet4", 96: "cryptofacenet9", 128: "cryptofacenet16"}
MODEL_SUFFIX = ".model.npz"


def shipped_models() -> list[str]:
    """Names of the models in ``cryptoface/assets``."""
    return sorted(p.name[: -len(MODEL_SUFFIX)] for p in ASSETS.glob(f"*{MODEL_SUFFIX}"))


def model_path(name_or_path: str | os.PathLike) -> Path:
    """The file of a model given by path, or by the name of a shipped model (``cryptofacenet16``).

    An existing file wins; otherwise a bare name (no folder, with or without ``.model.npz``) is looked up in
    the assets.  Raises :class:`~cryptoface.errors.ModelError` naming the shipped models when neither exists.
    """
    from .errors import ModelError

    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name[: -len(MODEL_SUFFIX)] if path.name.endswith(MODEL_SUFFIX) else path.name
    if path.parent == Path(".") and name:
        shipped = ASSETS / f"{name}{MODEL_SUFFIX}"
        if shipped.is_file():
            return shipped
    raise ModelError(f"{name_or_path}: no such file, and no shipped model of that name "
                     f"(shipped: {', '.join(shipped_models()) or 'none'})")
