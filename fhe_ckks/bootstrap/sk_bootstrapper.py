"""A *test double* for bootstrapping: decrypt and re-encrypt with the secret key.

Never use it outside tests: it needs the secret key, so a server holding it
could decrypt everything.  It exists so that higher layers (the encrypted CNN)
can be tested in milliseconds behind the same interface as
:class:`~fhe_ckks.bootstrap.Bootstrapper` (``bootstrap``, ``depth``,
``output_level``), as Lattigo's ``SecretKeyBootstrapper`` does.  It counts its
calls, so tests can assert how many bootstraps a circuit performs.  Its
:meth:`~SecretKeyBootstrapper.unpacking` form stands in for a bootstrapper with
``BootstrapConfig(unpack=True)``.
"""

from __future__ import annotations

import numpy as np

from ..ckks.ciphertext import Ciphertext
from ..ckks.encoder import Encoder
from ..ckks.encryptor import Decryptor, Encryptor
from ..errors import LevelError
from ..rlwe.keys import SecretKey
from ..rlwe.params import Parameters

__all__ = ["SecretKeyBootstrapper"]


class SecretKeyBootstrapper:
    """Decrypt, decode, re-encode at ``output_level``, encrypt.  Tests only."""

    def __init__(self, params: Parameters, secret_key: SecretKey, output_level: int | None = None,
                 depth: int = 0, unpack: bool = False):
        self.params, self.unpack = params, bool(unpack)
        self._secret_key = secret_key
        self._encoder = Encoder(params)
        self._decryptor = Decryptor(params, secret_key)
        self._encryptor = Encryptor(params, secret_key)
        self.output_level = params.max_level - depth if output_level is None else output_level
        if not 0 <= self.output_level <= params.max_level:
            raise LevelError(f"output level {self.output_level} outside [0, {params.max_level}]")
        self._depth = params.max_level - self.output_level
        self.calls = 0

    def depth(self) -> int:
        return self._depth

    def unpacking(self) -> SecretKeyBootstrapper:
        """The same double, unpacking as ``BootstrapConfig(unpack=True)`` does: n complex input slots come out
        as 2n real ones, the real parts first."""
        return SecretKeyBootstrapper(self.params, self._secret_key, self.output_level, unpack=True)

    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        self.calls += 1
        values = self._encoder.decode(self._decryptor.decrypt(ct), ct.slots)
        if self.unpack:
            values = np.concatenate([values.real, values.imag])
        return self._encryptor.encrypt(self._encoder.encode(values, level=self.output_level, slots=len(values)))
