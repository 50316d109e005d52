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

The shipped default model and a small sample of LFW pairs live in
``cryptoface/assets`` (see ``docs/training.md`` for how they were made).
"""

from pathlib import Path

ASSETS = Path(__file__).with_name("assets")
DEFAULT_MODEL = ASSETS / "cryptofacenet4.model.npz"
DEFAULT_SAMPLE = ASSETS / "lfw_sample"
