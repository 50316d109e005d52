"""cryptoface.encrypted: the CryptoFace pipeline under CKKS (numpy + fhe_ckks, never torch).

* :mod:`.network`: the fused model as chains of encrypted layers, several patch
  networks per ciphertext;
* :mod:`.matching`: encrypted L2 normalisation (the exported 1/sqrt
  polynomial) and the thresholded distance that reveals only a sign;
* :mod:`.protocol`: the :class:`Client` (secret key) and :class:`Server`
  (model, evaluation keys, encrypted gallery; no secret key) roles, talking
  in the versioned serialization format.
"""

from .network import PatchGroup, build_group, group_patches

__all__ = ["PatchGroup", "build_group", "group_patches"]
