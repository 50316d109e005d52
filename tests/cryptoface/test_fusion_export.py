"""Fusion equals the unfused network (float64), export -> load round trip, checkpoint mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cryptoface.errors import FusionError, ModelError  # noqa: E402
from cryptoface.model import NormPolynomial, Threshold, load_model, save_model  # noqa: E402
from cryptoface.training.checkpoint import backbone_state, load_checkpoint  # noqa: E402
from cryptoface.training.fusion import fuse, herpn_coefficients  # noqa: E402
from cryptoface.training.models import HerPN, trained_looking_model  # noqa: E402


def bits_of_agreement(a, b):
    return -math.log2(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("input_size", [64, 96])
def test_fused_model_equals_unfused_float64(input_size):
    model = trained_looking_model(input_size)
    x = torch.rand(3, 3, input_size, input_size, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        want = model.embed(x).numpy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse(model.state_dict(), input_size)
    got = fused.embed(x.numpy())
    assert bits_of_agreement(got, want) > 40, "fused and unfused models differ beyond float64 rounding"
    # fusion is pure: the module's state is untouched
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_herpn_coefficients_match_module():
    torch.manual_seed(1)
    h = HerPN(5).double()
    with torch.no_grad():
        for bn in (h.bn0, h.bn1, h.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3)
        h.weight.uniform_(-1, 1)
        h.bias.uniform_(-1, 1)
    h.eval()
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    a2, a1, a0 = herpn_coefficients({f"h.{k}": v for k, v in h.state_dict().items()}, "h")
    c = lambda v: torch.from_numpy(v).reshape(1, -1, 1, 1)  # noqa: E731
    assert torch.allclose(h(x), c(a2) * x * x + c(a1) * x + c(a0), atol=1e-12)


def test_fusion_refuses_vanishing_a2_and_nudges_when_asked():
    model = trained_looking_model(64)
    state = model.state_dict()
    state["nets.0.layers.2.herpn2.weight"][3] = 0.0
    with pytest.raises(FusionError, match="layers.2.herpn2"):
        fuse(state, 64)
    fused = fuse(state, 64, min_abs_a2=1e-6)
    assert fused.info["fusion"]["nudged"] == [{"herpn": "nets.0.layers.2.herpn2", "channel": 3, "a2": 0.0}]


def test_export_round_trip(tmp_path):
    fused = fuse(trained_looking_model(64).state_dict(), 64, name="toy")
    fused.norm = NormPolynomial.fit(np.random.default_rng(0).uniform(100, 400, 500))
    path = save_model(fused, tmp_path / "toy.model.npz")
    with np.load(path, allow_pickle=False) as f:   # readable with numpy alone
        assert "p0.conv0.weight" in f.files
    back = load_model(path)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 64))
    assert np.array_equal(back.embed(x), fused.embed(x))
    assert back.norm.coefficients == fused.norm.coefficients
    # a flipped byte is refused, naming the file
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "bad.model.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="bad.model.npz"):
        load_model(bad)


def test_export_refuses_what_the_loader_would_refuse(tmp_path):
    fused = fuse(trained_looking_model(64).state_dict(), 64, name="toy")
    fused.norm = NormPolynomial.fit(np.random.default_rng(0).uniform(100, 400, 500))
    for tau, accuracy in ((1e6, 0.9), (-1.0, 0.9), (0.5, float("nan"))):
        fused.thresholds["lfw"] = Threshold(tau, fused.norm, accuracy=accuracy)
        with pytest.raises(ModelError):
            save_model(fused, tmp_path / "bad.model.npz")
        assert not (tmp_path / "bad.model.npz").exists()
    fused.thresholds["lfw"] = Threshold(0.5, fused.norm, {3: (0.75, fused.norm)}, accuracy=0.9)
    back = load_model(save_model(fused, tmp_path / "ok.model.npz"))
    assert back.thresholds["lfw"].tau == 0.5 and back.thresholds["lfw"].for_fold(3) == (0.75, back.norm)


def test_original_checkpoint_layout_loads(tmp_path):
    """The original train.py saves {"backbone": state_dict, "head": {"kernel"}, ...}, plus fused extras."""
    model = trained_looking_model(64)
    state = dict(model.state_dict())
    state["nets.0.layers.0.weight1"] = torch.zeros(1)  # what the original's fuse() adds as parameters
    state["bias"] = torch.zeros(256)
    ckpt = {"backbone": state, "head": {"kernel": torch.zeros(256, 10)}, "epoch": 26, "test_acc": 0.9,
            "jigsaw_weight": 0.005}
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    loaded = load_checkpoint(path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.embed(x), model.float().embed(x), atol=1e-5)
    with pytest.raises(ModelError):
        backbone_state({"head": {}})
