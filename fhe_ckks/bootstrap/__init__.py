"""``fhe_ckks.bootstrap``: CKKS bootstrapping (and its secret-key test double)."""

from .bootstrapper import (
    MIN_CTS_DIAGONAL_BITS,
    MIN_MESSAGE_RATIO_LOG2,
    BootstrapConfig,
    BootstrapKeys,
    BootstrapPlan,
    Bootstrapper,
    LandedBootstrapper,
    bootstrap_key_plan,
    generate_keys,
    required_rotations,
    rotation_levels,
)
from .sk_bootstrapper import SecretKeyBootstrapper
from ..circuits.evalmod import EvalMod

# Dense secret, sparse-secret encapsulation: the ephemeral secret of weight 32
# bounds |I| by (32 + 1) / 2, so K = 16 never fails.  The message is prescaled
# to 2^-5 q_0 (its declared bound 1).  The sine is one degree-160 interpolant,
# no double angle: double angles multiply the polynomial's CKKS error by up to
# 2^r, and a dense secret's rescaling error is what limits the precision here
# (see docs/bootstrapping.md).
_ENCAPSULATED = BootstrapConfig(
    cts_budget=3, stc_budget=3, ephemeral_weight=32, message_ratio_log2=5,
    evalmod=EvalMod(k_bound=16, double_angles=0, degree=160, arcsine=True))

#: The bootstrapping configuration that goes with each bootstrapping preset
#: of :mod:`fhe_ckks.presets`.
CONFIGS: dict[str, BootstrapConfig] = {
    "BOOT_N16_QP1737_L24_S40": _ENCAPSULATED,
    "BOOT_N16_QP1771_L32_S36": _ENCAPSULATED,
    "INSECURE_BOOT_N12_QP1235_H32": BootstrapConfig(),
    "INSECURE_BOOT_N12_QP1354_L19_S40": _ENCAPSULATED,  # the same design at N = 2^12, for the tests
    "INSECURE_BOOT_N12_QP1771_L32_S36": _ENCAPSULATED,
}

__all__ = ["CONFIGS", "MIN_CTS_DIAGONAL_BITS", "MIN_MESSAGE_RATIO_LOG2", "BootstrapConfig", "BootstrapKeys",
           "BootstrapPlan", "Bootstrapper", "LandedBootstrapper", "SecretKeyBootstrapper", "bootstrap_key_plan",
           "generate_keys", "required_rotations", "rotation_levels"]
