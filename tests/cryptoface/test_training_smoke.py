"""One-epoch training smoke runs on tiny data, resume, CLI evaluate/export, config errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from cryptoface import data  # noqa: E402
from cryptoface.errors import ConfigError  # noqa: E402
from cryptoface.model import load_model  # noqa: E402
from cryptoface.training.__main__ import main  # noqa: E402
from cryptoface.training.config import load_config  # noqa: E402
from cryptoface.training.train import train  # noqa: E402


def face(rng, base):
    noise = rng.integers(-20, 20, (112, 112, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 identities x 3 images (ImageFolder), a 6-pair .bin, and fake teacher embeddings."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("tiny")
    bases = [rng.integers(0, 255, (112, 112, 3)) for _ in range(4)]
    paths = []
    for k, base in enumerate(bases):
        (root / "train" / f"id{k}").mkdir(parents=True)
        for i in range(3):
            p = root / "train" / f"id{k}" / f"id{k}_{i:04d}.jpg"
            Image.fromarray(face(rng, base)).save(p, quality=95)
            paths.append(p)
    encoded, issame = [], []
    for k in range(6):
        a, b = bases[k % 4], bases[k % 4] if k % 2 == 0 else bases[(k + 1) % 4]
        for img in (face(rng, a), face(rng, b)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            encoded.append(buf.getvalue())
        issame.append(k % 2 == 0)
    (root / "val").mkdir()
    data.write_verification_bin(root / "val" / "lfw.bin", encoded, issame)
    emb = rng.normal(size=(len(paths), 2, 16)).astype(np.float32)
    np.savez(root / "teacher.npz", paths=np.array([str(p) for p in paths]), embeddings=emb)
    return root


def overrides(tiny, kind="both", epochs=1):
    return [f"data.train={tiny / 'train'}", f"data.val={tiny / 'val'}", f"loss.kind={kind}",
            f"distill.embeddings={tiny / 'teacher.npz'}", "optim.batch_size=4", f"optim.epochs={epochs}",
            "optim.lr_milestones=[1]", f"output={tiny / 'runs'}", "threads=1"]


def test_one_epoch_then_resume(tiny):
    cfg = load_config("pcnn64", overrides(tiny, epochs=1))
    ckpt = train(cfg, progress=False)
    state = torch.load(ckpt, weights_only=False)
    assert set(state) >= {"backbone", "head", "optimizer", "scheduler", "epoch", "test_acc", "jigsaw_weight"}
    assert state["epoch"] == 1 and 0.0 <= state["test_acc"] <= 1.0 and state["classes"] == 4
    # resume for a second epoch from the saved checkpoint
    state["config"]["optim"]["epochs"] = 2
    torch.save(state, ckpt)
    train(state["config"], resume=str(ckpt), progress=False)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2


def test_cli_evaluate_and_export(tiny, tmp_path, capsys):
    cfg = load_config("pcnn64", overrides(tiny, kind="distill"))
    cfg["data"]["val"] = None
    ckpt = train(cfg, progress=False)
    assert main(["evaluate", str(ckpt), "--data", str(tiny / "val"), "--roc", str(tmp_path / "roc.png"),
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert "lfw:" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval.json").read_text())["lfw"]["pairs"] == 6
    out = tmp_path / "tiny.model.npz"
    assert main(["export", str(ckpt), "--data", str(tiny / "val"), "--output", str(out)]) == 0
    model = load_model(out)
    assert model.input_size == 64 and model.num_patches == 4
    assert set(model.thresholds) == {"lfw"} and len(model.thresholds["lfw"].per_fold) == 6
    assert model.info["evaluation"]["lfw"]["pairs"] == 6
    # what the encrypted server needs: the exact cosine rule per fold, and the client's quality floor
    assert -1 < model.thresholds["lfw"].cosine_for_fold(None) < 1 and len(model.thresholds["lfw"].exact_per_fold) == 6
    assert model.info["quality"]["images"] == 12 and model.quality_floor() > 0


def test_config_errors(tiny):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("pcnn64", ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="no such config"):
        load_config("pcnn65")
    assert main(["train", "pcnn64", "--set", "data.train=null"]) == 2


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OPENVINO_TEACHER = (SHARED / "models/openvino_omz/face-reidentification-retail-0095/FP16/"
                    "face-reidentification-retail-0095.xml")


@pytest.mark.skipif(not OPENVINO_TEACHER.exists(), reason="the shared teacher model is not here")
def test_openvino_teacher_separates_people():
    """A real teacher on real faces: same person closer than different people (needs openvino)."""
    pytest.importorskip("openvino")
    from cryptoface.training.teacher import Teacher

    root = SHARED / "lfw" / "aligned_112x112"
    a1, a2 = (data.read_image(root / "Aaron_Peirsol" / f"Aaron_Peirsol_000{i}.jpg") for i in (1, 2))
    b = data.read_image(root / "AJ_Cook" / "AJ_Cook_0001.jpg")
    e = Teacher(OPENVINO_TEACHER)([a1, a2, b])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert e.shape == (3, 256) and e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_bounded_finetune_from_an_init_checkpoint(tiny):
    """bound64: frozen batch norms, jitter, activation penalty, weights from model.init (not a resume)."""
    base = load_config("pcnn64", overrides(tiny, kind="distill"))
    base["data"]["val"] = None
    first = train(base, progress=False)
    cfg = load_config("bound64", overrides(tiny, kind="distill") + [f"model.init={first}", "optim.lr_milestones=[1]"])
    cfg["data"]["val"] = None
    before = torch.load(first, weights_only=False)["backbone"]
    ckpt = train(cfg, progress=False)
    after = torch.load(ckpt, weights_only=False)["backbone"]
    assert after["nets.0.conv.weight"].isfinite().all()
    assert not torch.equal(after["nets.0.conv.weight"], before["nets.0.conv.weight"])
    # frozen batch norms: running statistics unchanged by the fine-tuning
    assert torch.equal(after["nets.0.layers.0.herpn1.bn1.running_mean"],
                       before["nets.0.layers.0.herpn1.bn1.running_mean"])
