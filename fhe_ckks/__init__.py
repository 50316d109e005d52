"""fhe_ckks: a from-scratch RNS-CKKS library in Python and Numba.

Layers, each importing only those before it (checked by
``tests/test_architecture.py``)::

    ring  <-  rlwe  <-  ckks  <-  circuits  <-  bootstrap  <-  nn

``fhe_ckks.errors`` is the one leaf every layer may import.  Importing this
package compiles nothing: Numba kernels are compiled on first use and cached
on disk.
"""

from . import errors, ring
from .errors import FheError

__version__ = "0.1.0"

__all__ = ["errors", "ring", "FheError", "__version__"]
