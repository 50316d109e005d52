"""``fhe_ckks.bootstrap``: CKKS bootstrapping (and its secret-key test double)."""

from .bootstrapper import BootstrapConfig, Bootstrapper, generate_keys, required_rotations, rotation_levels
from .sk_bootstrapper import SecretKeyBootstrapper
from ..circuits.evalmod import EvalMod

#: The bootstrapping configuration that goes with each bootstrapping preset
#: of :mod:`fhe_ckks.presets`.
CONFIGS: dict[str, BootstrapConfig] = {
    # Dense secret: |I| has standard deviation ~60, max ~290 over N = 2^16
    # coefficients; K = 512 leaves a wide margin.
    "BOOT_N16_QP1735_L25_S55": BootstrapConfig(
        slots=4096, packed=True, cts_budget=3, stc_budget=3,
        evalmod=EvalMod(k_bound=512, double_angles=7, degree=60)),
    "INSECURE_BOOT_N12_QP1235_H32": BootstrapConfig(),
}

__all__ = ["CONFIGS", "BootstrapConfig", "Bootstrapper", "SecretKeyBootstrapper", "generate_keys", "required_rotations",
           "rotation_levels"]
