"""``fhe_ckks.ring``: arithmetic in ``Z_q[X]/(X^N + 1)`` in RNS form.

The lowest layer of the library; it knows nothing about keys or encodings.

* :mod:`~fhe_ckks.ring.modarith`: uint64 Shoup and Barrett kernels, the
  LLVM ``i128`` high-half intrinsic.
* :mod:`~fhe_ckks.ring.primes`: NTT-friendly primes, primitive roots.
* :mod:`~fhe_ckks.ring.ntt`: negacyclic NTT with Harvey lazy butterflies.
* :mod:`~fhe_ckks.ring.rns`: RNS bases, CRT, fast basis conversion, ModUp.
* :mod:`~fhe_ckks.ring.scaling`: division with rounding, ModDown and the
  exact rescale.
* :mod:`~fhe_ckks.ring.automorphism`: ``X -> X^g`` in both domains.
* :mod:`~fhe_ckks.ring.sampling`: SHAKE-256 streams (public expansion,
  fork-safe secret stream) and samplers.
* :mod:`~fhe_ckks.ring.ring`: :class:`Ring`, which ties them together.

Importing this package compiles nothing: every kernel is compiled on first
use and cached on disk (``cache=True``).
"""

from .automorphism import conjugation_element, galois_element
from .ntt import NTTTables
from .parallel import get_num_threads, set_num_threads, using_threads
from .primes import nearest_ntt_primes, ntt_primes, primitive_root_2n
from .ring import Ring
from .rns import BasisConverter, ModUp, RNSBasis
from .sampling import SecretStream, Shake256Stream, fresh_seed
from .scaling import ModDown, Rescaler

__all__ = [
    "Ring",
    "NTTTables",
    "RNSBasis",
    "BasisConverter",
    "ModUp",
    "ModDown",
    "Rescaler",
    "Shake256Stream",
    "SecretStream",
    "fresh_seed",
    "ntt_primes",
    "nearest_ntt_primes",
    "primitive_root_2n",
    "galois_element",
    "conjugation_element",
    "set_num_threads",
    "using_threads",
    "get_num_threads",
]
