"""The encrypted patch-group network: plaintext twins equal the fused model; encrypted equals plaintext."""

from __future__ import annotations

import numpy as np
import pytest

from cryptoface.encrypted.network import build_group, group_patches
from cryptoface.errors import ModelError

from .toy_model import toy_model


@pytest.mark.parametrize("per_ct", [1, 2, 4])
def test_group_twins_sum_to_the_fused_embedding(per_ct):
    model = toy_model()
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 16, 16))
    patches = model.patches(x)[:, 0]                       # (P, 3, 8, 8)
    groups = group_patches(model, 2048, per_ct)
    assert sum(len(g) for g in groups) == 4
    total = sum(build_group(model, g).forward_plain(patches[g]) for g in groups)
    want = model.embed(x)[0]
    assert np.allclose(total, want, atol=1e-10)


def test_grouping_refuses_what_does_not_fit():
    model = toy_model()
    with pytest.raises(ModelError):
        group_patches(model, 128)
    with pytest.raises(ModelError):
        group_patches(model, 512, per_ciphertext=4)
