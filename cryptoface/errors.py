"""Typed errors of the cryptoface package (all derive from :class:`CryptoFaceError`)."""

from __future__ import annotations


class CryptoFaceError(Exception):
    """Base class of every error this package raises on bad input."""


class DataError(CryptoFaceError, ValueError):
    """A data file or folder is missing, corrupt, or of the wrong kind or size (the message names it)."""


class ProbeError(DataError):
    """A face the model cannot vouch for: its plaintext forward pass leaves the range the encrypted side
    evaluates correctly (non-finite or overflowing activations, a squared embedding norm outside the range
    where the normalization is accurate), or a decision that came back "invalid" (the encrypted norm
    check failed).  Raised by an honest client."""


class ModelError(CryptoFaceError, ValueError):
    """A model file or checkpoint does not describe a model this code can run."""


class FusionError(ModelError):
    """A trained model cannot be fused into polynomials (e.g. a HerPN's x^2 weight is ~0)."""


class ConfigError(CryptoFaceError, ValueError):
    """A configuration file or a ``--set key=value`` override is invalid."""


class StoreError(CryptoFaceError):
    """A template store or gallery refused a request: an unknown or existing name, a bad name or template, another
    model or parameters, a damaged database."""


class UnknownNameError(StoreError):
    """No template is enrolled under the name asked for."""


class NameTakenError(StoreError):
    """A template is enrolled under that name already (and replacing it was not asked for)."""


class ServiceError(CryptoFaceError):
    """The service refused a request (or could not be reached): ``status`` is the HTTP status (0 when no answer
    came), ``kind`` the server's error type."""

    def __init__(self, message: str, status: int = 0, kind: str = ""):
        super().__init__(message)
        self.status, self.kind = status, kind
