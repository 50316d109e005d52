"""CKKS plaintexts and ciphertexts: polynomials plus level and scale metadata.

Both live in the NTT domain over the first ``level + 1`` ciphertext primes.
A ciphertext ``(c0, c1)`` decrypts to ``m = c0 + c1 * s``; before
relinearization a product has a third component, ``c0 + c1 s + c2 s^2``.
The **scale** Delta is the factor the message was multiplied by
(``m ~ Delta * z``); **slots** is the number of slots the message uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Plaintext", "Ciphertext"]


@dataclass(eq=False)
class Plaintext:
    """An encoded message ``poly`` (``(level + 1, N)`` uint64, NTT domain)."""

    poly: np.ndarray = field(repr=False)
    scale: float
    slots: int
    params_fingerprint: bytes = field(repr=False)

    @property
    def level(self) -> int:
        return self.poly.shape[0] - 1

    def __repr__(self) -> str:
        return f"Plaintext(level={self.level}, scale=2^{np.log2(self.scale):.3f}, slots={self.slots})"


@dataclass(eq=False)
class Ciphertext:
    """An encryption: ``data`` has shape ``(size, level + 1, N)`` (size 2, or
    3 before relinearization), NTT domain.

    Attributes:
        scale: the message scale.
        slots: slots in use.
        key_id: identifier of the key it is encrypted under.
        params_fingerprint: identifier of its parameters.
        c1_seed: for a fresh symmetric encryption, the public seed that
            ``data[1]`` expands from (serialization then stores 32 bytes
            instead of a polynomial); None otherwise.
    """

    data: np.ndarray = field(repr=False)
    scale: float
    slots: int
    key_id: bytes = field(repr=False)
    params_fingerprint: bytes = field(repr=False)
    c1_seed: bytes | None = field(default=None, repr=False)

    @property
    def level(self) -> int:
        return self.data.shape[1] - 1

    @property
    def size(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def copy(self) -> Ciphertext:
        return Ciphertext(self.data.copy(), self.scale, self.slots, self.key_id, self.params_fingerprint,
                          self.c1_seed)

    def with_metadata(self, *, scale: float | None = None, slots: int | None = None) -> Ciphertext:
        """The same polynomials (shared, not copied) under a new declared ``scale`` and/or ``slots``.

        Metadata never changes in place: a circuit that knows a ciphertext's
        scale or slot count better than the arithmetic that produced it (a
        rescaled product whose exact scale is known, bootstrapping's slot
        doubling) asks for a new ciphertext instead, so no other holder of the
        object sees its meaning change.
        """
        return Ciphertext(self.data, float(self.scale if scale is None else scale),
                          int(self.slots if slots is None else slots), self.key_id, self.params_fingerprint,
                          self.c1_seed)

    def __repr__(self) -> str:
        return (f"Ciphertext(size={self.size}, level={self.level}, scale=2^{np.log2(self.scale):.3f}, "
                f"slots={self.slots})")
