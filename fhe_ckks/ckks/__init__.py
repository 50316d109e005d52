"""``fhe_ckks.ckks``: the CKKS scheme (Cheon, Kim, Kim, Song, ASIACRYPT 2017),
RNS variant (Cheon, Han, Kim, Kim, Song, SAC 2018).

* :class:`Encoder`: vectors <-> plaintexts (canonical embedding, special FFT).
* :class:`Encryptor` / :class:`Decryptor`: public- or secret-key encryption,
  decryption with optional noise flooding.
* :class:`Evaluator`: arithmetic, rescaling, rotations, from public keys only.
* :mod:`~fhe_ckks.ckks.dot`: the lazily reduced sums behind
  ``Evaluator.plain_dot`` and ``Evaluator.linear_combination``.
"""

from .ciphertext import Ciphertext, Plaintext
from .encoder import Encoder
from .encryptor import Decryptor, Encryptor
from .evaluator import Evaluator
from .precision import precision_bits, expected_precision_bits

__all__ = ["Ciphertext", "Plaintext", "Encoder", "Encryptor", "Decryptor", "Evaluator",
           "precision_bits", "expected_precision_bits"]
