"""cryptoface.encrypted: the CryptoFace pipeline under CKKS (numpy + fhe_ckks, never torch).

* :mod:`.network`: the fused model as chains of encrypted layers, several patch
  networks per ciphertext;
* :mod:`.matching`: the embedding's vector layout and scale;
* :mod:`.decision`: the encrypted decision: norm checks of the hinted
  normalization, the exact cosine rule, an 8-slot bootstrap and a composite
  sign, so that the key holder learns only same / different / invalid;
* :mod:`.protocol`: the :class:`Client` (secret key) and :class:`Server`
  (model, evaluation keys, encrypted gallery; no secret key) roles, talking
  in the versioned serialization format, and :data:`DEFAULT_PRESET`, the
  parameters they run at by default;
* :mod:`.measuring`: :class:`MeasuringHarness`, both roles in one process for
  the benchmarks only (it decrypts embeddings to report their error); it is
  not exported here, so a deployment that imports this package never reaches it.
"""

from .decision import Decision, DecisionOutcome
from .network import PatchGroup, build_group, group_patches
from .protocol import BASELINE_PRESET, DEFAULT_PRESET, Client, Server, Stats

__all__ = ["BASELINE_PRESET", "DEFAULT_PRESET", "Client", "Decision", "DecisionOutcome", "PatchGroup", "Server", "Stats",
           "build_group", "group_patches"]
