"""CKKS encryption and decryption.

* Public-key encryption (client or anyone): ``(v*b + e0 + m, v*a + e1)`` with
  ``v`` a fresh dense ternary polynomial and ``e0, e1`` Gaussian errors.
* Secret-key encryption (the key holder): ``(-a*s + e + m, a)`` with ``a``
  expanded from a fresh public seed, which the ciphertext keeps: serialized,
  a fresh symmetric ciphertext is half the size.
* Decryption: ``m = c0 + c1*s (+ c2*s^2)``.  With ``flooding_bits`` a rounded
  Gaussian of standard deviation ``2^flooding_bits`` is added to m before
  anything is returned ("noise flooding").  Use it whenever a decrypted value
  is shared with another party: without it, CKKS decryptions can reveal the
  secret key (Li & Micciancio, "On the security of homomorphic encryption on
  approximate numbers", EUROCRYPT 2021).  Pick ``flooding_bits`` at least
  ``log2(noise bound) + s/2`` for s bits of statistical security; the result
  then keeps about ``log2(scale) - flooding_bits - log_n/2`` bits of precision.
"""

from __future__ import annotations

import numpy as np

from ..errors import KeyMismatchError, LevelError, ParameterError
from ..ring import SecretStream
from ..ring.sampling import discrete_gaussian, rounded_gaussian, ternary
from ..rlwe.keys import PublicKey, SecretKey, signed_to_ntt
from ..rlwe.params import Parameters
from .ciphertext import Ciphertext, Plaintext

__all__ = ["Encryptor", "Decryptor"]


def _check_key(params: Parameters, key, kinds: tuple, what: str) -> None:
    """A key of the right kind, generated under ``params``."""
    if not isinstance(key, kinds):
        raise ParameterError(f"expected a {what}, got {type(key).__name__}")
    if key.params.fingerprint != params.fingerprint:
        raise KeyMismatchError("key generated under other parameters")


def _check_plaintext(params: Parameters, pt: Plaintext) -> None:
    if not isinstance(pt, Plaintext):
        raise ParameterError(f"expected a Plaintext, got {type(pt).__name__}")
    if pt.params_fingerprint != params.fingerprint:
        raise KeyMismatchError("plaintext encoded under other parameters")


def _flooding_noise(params: Parameters, stream: SecretStream, bits: float, rows: int) -> np.ndarray:
    """A rounded Gaussian polynomial of standard deviation ``2^bits`` (``bits`` in [0, 55]), NTT form, ``rows``
    primes: the flooding noise of a decryption and of :meth:`Encryptor.encrypt_noise`."""
    if not 0 <= float(bits) <= 55:
        raise ParameterError(f"flooding_bits must be in [0, 55], got {bits}")
    noise = rounded_gaussian(stream, params.n, 2.0 ** float(bits)).astype(np.int64)
    return signed_to_ntt(params, noise, rows)


class Encryptor:
    """Encrypts plaintexts under a public key, or a secret key (symmetric).

    Args:
        params: the parameters.
        key: a :class:`PublicKey` (anyone) or a :class:`SecretKey` (the key
            holder; seeded ciphertexts of half the size).
        seed: 32 bytes for reproducible encryption randomness (tests only);
            by default the OS CSPRNG seeds it.  Either way the randomness is
            a :class:`~fhe_ckks.ring.SecretStream`: an encryptor inherited by
            a forked child reseeds there, so no two processes ever encrypt
            with the same randomness.
    """

    def __init__(self, params: Parameters, key: PublicKey | SecretKey, seed: bytes | None = None):
        _check_key(params, key, (PublicKey, SecretKey), "PublicKey or SecretKey")
        self.params = params
        self.key = key
        self._stream = SecretStream(seed, b"fhe_ckks.encrypt")

    def _error(self, rows: int) -> np.ndarray:
        return signed_to_ntt(self.params, discrete_gaussian(self._stream, self.params.n, self.params.sigma), rows)

    def encrypt(self, pt: Plaintext) -> Ciphertext:
        """Encrypt ``pt`` at its level and scale."""
        p = self.params
        _check_plaintext(p, pt)
        rows = pt.level + 1
        ring = p.ring_q
        if isinstance(self.key, PublicKey):
            v = signed_to_ntt(p, ternary(self._stream, p.n), rows)
            c0 = ring.mul(v, np.ascontiguousarray(self.key.b[:rows]), check=False)
            ring.add(c0, self._error(rows), c0, check=False)
            ring.add(c0, pt.poly, c0, check=False)
            c1 = ring.mul(v, np.ascontiguousarray(self.key.a[:rows]), check=False)
            ring.add(c1, self._error(rows), c1, check=False)
            return Ciphertext(np.stack([c0, c1]), pt.scale, pt.slots, self.key.key_id, p.fingerprint)
        seed = self._stream.read(32)
        c1 = ring.sample_uniform(seed, rows, domain=b"fhe_ckks.ct")
        c0 = ring.mul(c1, np.ascontiguousarray(self.key.ntt[:rows]), check=False)
        ring.sub(self._error(rows), c0, c0, check=False)
        ring.add(c0, pt.poly, c0, check=False)
        return Ciphertext(np.stack([c0, c1]), pt.scale, pt.slots, self.key.key_id, p.fingerprint, seed)

    def encrypt_noise(self, level: int, scale: float, slots: int, bits: float) -> Ciphertext:
        """A public-key encryption of a rounded Gaussian polynomial of standard deviation ``2^bits``
        (nothing else), at ``level``, declared at ``scale`` with ``slots``: added to a result before it leaves
        an evaluator, it rerandomizes the ciphertext and floods the result's own noise (circuit privacy).
        Only with a public key: the evaluator has no other."""
        p = self.params
        if not isinstance(self.key, PublicKey):
            raise ParameterError("noise flooding encrypts under the key holder's public key")
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= p.max_level:
            raise LevelError(f"level {level!r} outside [0, {p.max_level}]")
        poly = _flooding_noise(p, self._stream, bits, level + 1)
        return self.encrypt(Plaintext(poly, float(scale), int(slots), p.fingerprint))


class Decryptor:
    """Decrypts ciphertexts with the secret key (client side only).

    Args:
        params: the parameters.
        secret_key: the :class:`SecretKey`.
        seed: 32 bytes for reproducible flooding noise (tests only); by
            default the OS CSPRNG seeds it.  The noise is a
            :class:`~fhe_ckks.ring.SecretStream`, reseeded in a forked child.
    """

    def __init__(self, params: Parameters, secret_key: SecretKey, seed: bytes | None = None):
        _check_key(params, secret_key, (SecretKey,), "SecretKey")
        self.params = params
        self.secret_key = secret_key
        self._stream = SecretStream(seed, b"fhe_ckks.flood")

    def decrypt(self, ct: Ciphertext, flooding_bits: float | None = None) -> Plaintext:
        """``c0 + c1*s (+ c2*s^2)`` as a plaintext, optionally flooded."""
        p = self.params
        if not isinstance(ct, Ciphertext):
            raise ParameterError(f"expected a Ciphertext, got {type(ct).__name__}")
        if ct.params_fingerprint != p.fingerprint:
            raise KeyMismatchError("ciphertext of other parameters")
        if ct.key_id != self.secret_key.key_id:
            raise KeyMismatchError("ciphertext encrypted under another key")
        if not 2 <= ct.size <= 3 or not 0 <= ct.level <= p.max_level:
            raise LevelError(f"cannot decrypt a ciphertext of size {ct.size} at level {ct.level}")
        rows = ct.level + 1
        ring = p.ring_q
        s = np.ascontiguousarray(self.secret_key.ntt[:rows])
        m = ct.data[0].copy()
        ring.mul_add(ct.data[1], s, m, check=False)
        if ct.size == 3:
            ring.mul_add(ct.data[2], ring.mul(s, s, check=False), m, check=False)
        if flooding_bits is not None:
            ring.add(m, _flooding_noise(p, self._stream, flooding_bits, rows), m, check=False)
        return Plaintext(m, ct.scale, ct.slots, p.fingerprint)
