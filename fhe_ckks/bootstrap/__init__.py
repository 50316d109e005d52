"""``fhe_ckks.bootstrap``: CKKS bootstrapping (and its secret-key test double)."""

from .bootstrapper import BootstrapConfig, Bootstrapper, required_rotations
from .sk_bootstrapper import SecretKeyBootstrapper

__all__ = ["BootstrapConfig", "Bootstrapper", "SecretKeyBootstrapper", "required_rotations"]
