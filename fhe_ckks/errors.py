"""Typed errors raised by every layer of :mod:`fhe_ckks`.

This module is the one leaf that every layer may import.  Each error derives
from :class:`FheError` and from the closest built-in exception, so callers can
catch either ``FheError`` (anything this library refuses) or the familiar
built-in (``ValueError`` for a bad value, ``TypeError`` for a bad dtype).

Validation never uses ``assert`` (stripped under ``python -O``): a function that
refuses its input raises one of these with the offending values in the message.
"""

from __future__ import annotations

__all__ = [
    "FheError",
    "ParameterError",
    "SecurityError",
    "ShapeError",
    "DTypeError",
    "RangeError",
    "KeyMismatchError",
    "MissingKeyError",
    "LevelError",
    "ScaleMismatchError",
    "SerializationError",
    "BootstrapRangeError",
]


class FheError(Exception):
    """Base class of every error raised on purpose by :mod:`fhe_ckks`."""


class ParameterError(FheError, ValueError):
    """A parameter is invalid: non-power-of-two ring degree, a modulus that is
    not NTT-friendly or too large, an impossible prime request, ..."""


class SecurityError(ParameterError):
    """A parameter set is below the 128-bit security level and was not
    explicitly allowed as ``INSECURE_``."""


class ShapeError(FheError, ValueError):
    """An array has the wrong shape (wrong ring degree or number of limbs)."""


class DTypeError(FheError, TypeError):
    """An array has the wrong dtype (the ring layer works on ``uint64``)."""


class RangeError(FheError, ValueError):
    """A value lies outside the range a kernel requires, for example a
    coefficient that is not reduced modulo its prime."""


class KeyMismatchError(FheError, ValueError):
    """Objects that must share a key (or a parameter set) do not."""


class MissingKeyError(FheError, KeyError):
    """An operation needs an evaluation key that was not provided (for
    example a rotation by a step whose Galois key was not generated)."""


class LevelError(FheError, ValueError):
    """A level is invalid for the operation: no level left to rescale or
    drop, or operands at levels that cannot be aligned."""


class ScaleMismatchError(FheError, ValueError):
    """Operands of an addition have scales that differ beyond tolerance."""


class SerializationError(FheError, ValueError):
    """Serialized bytes are truncated, corrupted, of an unknown version, or
    belong to other parameters."""


class BootstrapRangeError(FheError, ValueError):
    """A ciphertext cannot be bootstrapped: its scale leaves no room for the
    declared value bound below q_0, or it is not in a bootstrappable state."""
