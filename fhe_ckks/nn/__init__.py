"""fhe_ckks.nn: generic encrypted neural-network layers (no face knowledge, no torch).

The first piece is :mod:`fhe_ckks.nn.modelfile`, the one on-disk format for
trained weights: a ``.npz`` of named arrays plus a JSON manifest with
checksums, readable with numpy alone.
"""

from .modelfile import FORMAT, FORMAT_VERSION, ModelFile, read_arrays, read_model_file, write_model_file
from .planner import EncryptedModel, plan_bootstraps

__all__ = ["FORMAT", "FORMAT_VERSION", "EncryptedModel", "ModelFile", "plan_bootstraps", "read_arrays",
           "read_model_file", "write_model_file"]
