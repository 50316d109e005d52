"""Randomness for RLWE: SHAKE-256 keystreams and the samplers built on them.

All randomness of the library is SHAKE-256 in counter mode over a 32-byte
seed (block i is ``SHAKE-256(domain || 0x00 || seed || i)``), in one of two
kinds of stream that the API keeps apart:

* :class:`Shake256Stream`, the **public expansion**: the ``a`` half of keys
  and of symmetric ciphertexts is expanded from a seed that is stored instead
  of the polynomial, halving the size of keys and fresh ciphertexts.  Anyone
  can re-expand it: the seed is public, and the expansion is a pure function
  of it, the same in every process (a forked server worker re-expands keys
  and must get the very same polynomial).
* :class:`SecretStream`, the **secret stream**: secret keys, errors,
  encryption randomness, flooding noise, and the public seeds those draw
  (a fresh key's or ciphertext's seed).  Its seed comes from the OS CSPRNG
  (:func:`fresh_seed`); tests may pass a fixed one for reproducible keys,
  nothing on a default path does.  It is never shared by two processes: in a
  forked child (or in a copy made by ``copy``/``pickle``) it reseeds before
  its next read, from fresh OS entropy, the pid and its current state, so a
  child never repeats its parent's or a sibling's output.  Within one
  process it is bit-identical to the :class:`Shake256Stream` of its seed.

Samplers (each returns int64 coefficients or reduced residues):

* :func:`uniform_mod`: uniform modulo each prime, by rejection of 64-bit
  words masked to the prime's bit length (no modulo bias).
* :func:`ternary`: uniform over {-1, 0, 1} (dense secret).
* :func:`hamming_ternary`: exactly h nonzero coefficients in {-1, 1}
  (sparse secret), positions by a rejection-sampled partial Fisher-Yates
  shuffle (never out of bounds, unlike the CryptoFace SEAL fork).
* :func:`discrete_gaussian`: the discrete Gaussian of standard deviation
  sigma (3.2 by default, as the HE standard), truncated at 6 sigma, by
  inversion of a 64-bit cumulative table computed with 128-bit precision; the
  statistical distance to the truncated distribution is below 2^-60.
* :func:`centered_binomial`: the difference of two sums of ``eta`` bits
  (variance eta/2; eta = 21 gives sigma = 3.24), the cheaper alternative.

This is Python: none of these samplers is constant-time.  See the README's
security note.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from functools import lru_cache

import numpy as np

from ..errors import ParameterError

__all__ = [
    "SEED_BYTES",
    "fresh_seed",
    "Shake256Stream",
    "SecretStream",
    "uniform_mod",
    "ternary",
    "hamming_ternary",
    "discrete_gaussian",
    "centered_binomial",
    "gaussian_cdt",
    "rounded_gaussian",
]

SEED_BYTES = 32
_BLOCK = 1 << 16


def fresh_seed() -> bytes:
    """32 bytes from the operating system's CSPRNG (``secrets``)."""
    return secrets.token_bytes(SEED_BYTES)


class Shake256Stream:
    """Deterministic keystream: SHAKE-256 in counter mode.

    The same seed and domain give the same bytes in every process, forked or
    not: use it to expand *public* seeds.  Secrets are drawn from a
    :class:`SecretStream`.

    Args:
        seed: 32 bytes.
        domain: a label separating independent uses of the same seed.
    """

    #: Whether the stream reseeds in a forked child (see :class:`SecretStream`).
    secret = False

    def __init__(self, seed: bytes, domain: bytes = b""):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ParameterError(f"a seed is {SEED_BYTES} bytes, got {type(seed).__name__} of length "
                                 f"{len(seed) if hasattr(seed, '__len__') else '?'}")
        if not isinstance(domain, (bytes, bytearray)) or b"\x00" in domain:
            raise ParameterError("the domain label must be bytes without NUL")
        self._domain = bytes(domain)
        self._rekey(bytes(seed))

    def _rekey(self, seed: bytes) -> None:
        """Restart the stream at block 0 of ``seed`` (same domain)."""
        self._prefix = self._domain + b"\x00" + seed
        self._counter = 0
        self._buffer = b""

    def read(self, nbytes: int) -> bytes:
        """The next ``nbytes`` bytes of the stream."""
        chunks = [self._buffer]
        have = len(self._buffer)
        while have < nbytes:
            block = hashlib.shake_256(self._prefix + self._counter.to_bytes(8, "little")).digest(_BLOCK)
            self._counter += 1
            chunks.append(block)
            have += len(block)
        data = b"".join(chunks)
        self._buffer = data[nbytes:]
        return data[:nbytes]

    def uint64(self, count: int) -> np.ndarray:
        """``count`` uniform 64-bit words."""
        return np.frombuffer(self.read(8 * count), dtype="<u8").astype(np.uint64)

    def uint8(self, count: int) -> np.ndarray:
        """``count`` uniform bytes."""
        return np.frombuffer(self.read(count), dtype=np.uint8).copy()


# Bumped in every forked child (os.register_at_fork), so that a secret stream
# notices a fork even where the child's pid equals the pid it last saw (a
# grandchild given its dead grandparent's pid).  The pid check covers forks
# that bypass Python's fork hooks (fork() called from C).
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _process_mark() -> tuple[int, int]:
    """Which process (and which fork of it) this is."""
    return os.getpid(), _fork_generation


class SecretStream(Shake256Stream):
    """Keystream for secret material and fresh randomness, never shared by
    two processes.

    In the process that made it (and as long as it is not copied) it is the
    :class:`Shake256Stream` of its seed, bit for bit: a fixed test seed stays
    reproducible.  In a forked child, or in a copy made by ``copy`` or
    ``pickle``, it first reseeds: the new seed is SHAKE-256 of 32 fresh bytes
    from the OS CSPRNG, the pid and the current state, and the stream restarts
    from it (same domain).

    Args:
        seed: 32 secret bytes; by default (None) :func:`fresh_seed`.
        domain: a label separating independent uses of the same seed.
    """

    secret = True

    def __init__(self, seed: bytes | None = None, domain: bytes = b""):
        super().__init__(fresh_seed() if seed is None else seed, domain)
        self._mark = _process_mark()

    def read(self, nbytes: int) -> bytes:
        """The next ``nbytes`` bytes of the stream (reseeded first if this is
        not the process, or the object, that last read it)."""
        if self._mark != _process_mark():
            self._reseed()
        return super().read(nbytes)

    def _reseed(self) -> None:
        mark = _process_mark()
        state = self._prefix + self._counter.to_bytes(8, "little") + len(self._buffer).to_bytes(4, "little")
        seed = hashlib.shake_256(b"fhe_ckks.reseed\x00" + fresh_seed() + mark[0].to_bytes(8, "little")
                                 + state).digest(SEED_BYTES)
        self._rekey(seed)
        self._mark = mark

    def __setstate__(self, state: dict) -> None:
        # A copy (copy.copy, deepcopy, pickle) must not continue the original.
        self.__dict__.update(state)
        self._mark = None


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ParameterError(f"sample count must be a positive int, got {n!r}")
    return int(n)


def uniform_mod(stream: Shake256Stream, moduli, n: int) -> np.ndarray:
    """A uniform polynomial modulo each prime: ``(len(moduli), n)`` uint64.

    Each limb draws 64-bit words, masks them to ``q.bit_length()`` bits and
    keeps those below q (acceptance probability above 1/2, so the expected
    cost is under two words per coefficient).  Since a uniform polynomial is
    uniform in either domain, the result may be read as NTT-domain values.
    """
    n = _check_n(n)
    primes = [int(q) for q in moduli]
    out = np.empty((len(primes), n), dtype=np.uint64)
    for k, q in enumerate(primes):
        mask = np.uint64((1 << q.bit_length()) - 1)
        filled = 0
        while filled < n:
            need = n - filled
            words = stream.uint64(need + need // 8 + 16) & mask
            words = words[words < np.uint64(q)][:need]
            out[k, filled:filled + words.shape[0]] = words
            filled += words.shape[0]
    return out


def ternary(stream: Shake256Stream, n: int) -> np.ndarray:
    """``n`` coefficients uniform over {-1, 0, 1} (int64), from bytes below
    255 taken modulo 3."""
    n = _check_n(n)
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        b = stream.uint8(n - filled + 16)
        b = b[b < 255][: n - filled]
        out[filled:filled + b.shape[0]] = (b % 3).astype(np.int64) - 1
        filled += b.shape[0]
    return out


def _uniform_below(stream: Shake256Stream, bound: int) -> int:
    """One integer uniform in ``[0, bound)`` by rejection (bound < 2^63)."""
    mask = (1 << max(1, (bound - 1).bit_length())) - 1
    while True:
        v = int(stream.uint64(1)[0]) & mask
        if v < bound:
            return v


def hamming_ternary(stream: Shake256Stream, n: int, h: int) -> np.ndarray:
    """``n`` coefficients with exactly ``h`` of them in {-1, 1}, the rest 0.

    Positions: the first h steps of a Fisher-Yates shuffle of ``range(n)``,
    each index drawn uniformly in ``[i, n)`` by rejection; signs: one bit each.
    """
    n = _check_n(n)
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 0 < h <= n:
        raise ParameterError(f"Hamming weight must be in [1, {n}], got {h!r}")
    idx = np.arange(n, dtype=np.int64)
    for i in range(int(h)):
        j = i + _uniform_below(stream, n - i)
        idx[i], idx[j] = idx[j], idx[i]
    signs = (stream.uint8(int(h)) & 1).astype(np.int64) * 2 - 1
    out = np.zeros(n, dtype=np.int64)
    out[idx[:h]] = signs
    return out


@lru_cache(maxsize=8)
def gaussian_cdt(sigma: float, tail: int) -> np.ndarray:
    """Cumulative table of ``|x|`` for the discrete Gaussian truncated at
    ``|x| <= tail``, as uint64 thresholds scaled by 2^64 (128-bit precision).

    ``P(|x| = 0) ∝ 1`` and ``P(|x| = k) ∝ 2 exp(-k^2 / (2 sigma^2))`` for
    ``1 <= k <= tail``; entry k is ``floor(2^64 P(|x| <= k))``, the last
    entry being saturated to ``2^64 - 1``.
    """
    import mpmath

    with mpmath.workprec(128):
        weights = [mpmath.mpf(1)] + [2 * mpmath.exp(-mpmath.mpf(k) ** 2 / (2 * mpmath.mpf(sigma) ** 2))
                                     for k in range(1, tail + 1)]
        total = mpmath.fsum(weights)
        acc = mpmath.mpf(0)
        table = []
        for w in weights:
            acc += w
            table.append(min(int(mpmath.floor(acc / total * 2**64)), 2**64 - 1))
    table[-1] = 2**64 - 1
    return np.array(table, dtype=np.uint64)


def discrete_gaussian(stream: Shake256Stream, n: int, sigma: float = 3.2) -> np.ndarray:
    """``n`` samples of the discrete Gaussian with parameter ``sigma``,
    truncated at ``ceil(6 sigma)`` (int64)."""
    n = _check_n(n)
    if not 0.5 <= float(sigma) <= 64:
        raise ParameterError(f"sigma must be in [0.5, 64], got {sigma!r}")
    tail = int(np.ceil(6 * float(sigma)))
    table = gaussian_cdt(float(sigma), tail)
    u = stream.uint64(n)
    mag = np.searchsorted(table, u, side="right").astype(np.int64)
    mag = np.minimum(mag, tail)  # u = 2^64 - 1 exactly
    sign = (stream.uint8(n) & 1).astype(np.int64) * 2 - 1
    return mag * sign


def centered_binomial(stream: Shake256Stream, n: int, eta: int = 21) -> np.ndarray:
    """``n`` samples of ``sum(eta bits) - sum(eta bits)`` (int64), variance
    ``eta / 2``."""
    n = _check_n(n)
    if isinstance(eta, bool) or not isinstance(eta, int) or not 1 <= eta <= 64:
        raise ParameterError(f"eta must be an int in [1, 64], got {eta!r}")
    bits = np.unpackbits(stream.uint8((2 * eta * n + 7) // 8))[: 2 * eta * n]
    bits = bits.reshape(n, 2, eta).sum(axis=2, dtype=np.int64)
    return bits[:, 0] - bits[:, 1]


def rounded_gaussian(stream: Shake256Stream, n: int, sigma: float) -> np.ndarray:
    """``n`` samples of a continuous Gaussian of standard deviation ``sigma``
    rounded to integers (float64), by Box-Muller on 53-bit uniforms.

    For wide distributions (noise flooding, sigma up to 2^60) where a
    cumulative table is impractical; statistical quality only, like every
    sampler here not constant-time.
    """
    n = _check_n(n)
    if not 0 < float(sigma) < 2.0**62:
        raise ParameterError(f"sigma must be in (0, 2^62), got {sigma!r}")
    words = stream.uint64(2 * ((n + 1) // 2))
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
    return np.rint(z * float(sigma))
