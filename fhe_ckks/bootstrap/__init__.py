"""``fhe_ckks.bootstrap``: CKKS bootstrapping (and its secret-key test double)."""

from .bootstrapper import BootstrapConfig, Bootstrapper, generate_keys, required_rotations, rotation_levels
from .sk_bootstrapper import SecretKeyBootstrapper

__all__ = ["BootstrapConfig", "Bootstrapper", "SecretKeyBootstrapper", "generate_keys", "required_rotations",
           "rotation_levels"]
