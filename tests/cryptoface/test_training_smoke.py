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
    # other faces widen the 1/sqrt range: with no trimming it covers every one of their squared norms
    wide = tmp_path / "wide.model.npz"
    assert main(["export", str(ckpt), "--data", str(tiny / "val"), "--output", str(wide), "--norm-faces",
                 str(tiny / "train"), "--norm-faces-count", "5", "--norm-trim", "0"]) == 0
    wide_model = load_model(wide)
    assert wide_model.info["norm_faces"] == {"folders": ["train"], "faces": 5, "trim": 0.0}
    imgs = data.image_folder(tiny / "train")
    y = np.sum(wide_model.embed(data.preprocess([data.read_image(p) for p in imgs.paths], 64)) ** 2, axis=1)
    lo, hi = wide_model.norm.lo, wide_model.norm.hi
    assert np.sum((y >= lo) & (y <= hi)) >= 5 and wide_model.info["evaluation"]["lfw"]["norm_range"] == [lo, hi]


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


def _states_equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_stopped_anywhere_and_resumed_equals_an_uninterrupted_run(tiny):
    """Stopped inside epoch 1 (by its budget hook), again by a real SIGTERM inside epoch 2, resumed each time:
    the same weights, optimizer moments and generator state, bit for bit, as a run never stopped."""
    import os
    import signal

    from cryptoface.training.train import StopRequest

    cfg = load_config("distill64", overrides(tiny, kind="both", epochs=3) + ["optim.lr_milestones=[2]"])
    cfg["data"]["val"] = None
    straight = torch.load(train(cfg, progress=False), weights_only=False)

    ckpt = train(cfg, progress=False, stop=StopRequest(when=lambda epoch, batch: (epoch, batch) == (1, 2)))
    first = torch.load(ckpt, weights_only=False)
    assert first["epoch"] == 0 and first["partial"]["epoch"] == 1 and first["partial"]["batch"] == 2

    def sigterm(epoch, batch):
        if (epoch, batch) == (2, 1):
            os.kill(os.getpid(), signal.SIGTERM)   # handled: the run stops after the next batch
        return False

    handler = signal.getsignal(signal.SIGTERM)
    train(cfg, resume=str(ckpt), progress=False, stop=StopRequest(when=sigterm))
    assert signal.getsignal(signal.SIGTERM) is handler          # the run's handler is gone again
    second = torch.load(ckpt, weights_only=False)
    assert second["epoch"] == 1 and second["partial"]["epoch"] == 2 and second["partial"]["batch"] == 2

    train(cfg, resume=str(ckpt), progress=False)
    resumed = torch.load(ckpt, weights_only=False)
    assert resumed["epoch"] == 3 and resumed["partial"] is None
    assert _states_equal(straight["backbone"], resumed["backbone"])
    assert _states_equal(straight["head"], resumed["head"])
    assert straight["rng"] == resumed["rng"]
    sa, sb = straight["optimizer"]["state"], resumed["optimizer"]["state"]
    assert set(sa) == set(sb) and all(_states_equal(sa[k], sb[k]) for k in sa)


def test_stop_after_a_whole_epoch_resumes_at_the_next(tiny):
    from cryptoface.training.train import StopRequest

    cfg = load_config("pcnn64", overrides(tiny, kind="distill", epochs=2))
    cfg["data"]["val"] = None
    ckpt = train(cfg, progress=False, stop=StopRequest(when=lambda epoch, batch: (epoch, batch) == (2, 0)))
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 1 and state["partial"] is None
    train(cfg, resume=str(ckpt), progress=False)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2


def test_several_sources_and_teacher_files(tiny, tmp_path):
    """Two ImageFolder sources (one filtered by a people list), a teacher file each: classes never merge,
    each image gets its own teacher rows, and a missing or conflicting embedding is a typed error."""
    from cryptoface.errors import ModelError
    from cryptoface.training.teacher import load_embeddings
    from cryptoface.training.train import training_images

    people = tmp_path / "people.txt"
    people.write_text("2\n2\nid0\t3\nid1\t3\n2\nid2\t3\nid3\t3\n")
    cfg = load_config("pcnn64", overrides(tiny, kind="distill"))
    cfg["data"]["train"] = [str(tiny / "train"), {"path": str(tiny / "train"), "people_file": str(people),
                                                  "people_sets": [1]}]
    images = training_images(cfg)
    assert len(images) == 12 + 6 and images.num_classes == 6
    assert images.classes[:4] == ["0:id0", "0:id1", "0:id2", "0:id3"] and images.classes[4:] == ["1:id2", "1:id3"]
    assert list(images.labels[12:]) == [4, 4, 4, 5, 5, 5]

    with np.load(tiny / "teacher.npz") as f:
        paths, emb = f["paths"], f["embeddings"]
    np.savez(tmp_path / "a.npz", paths=paths[:7], embeddings=emb[:7])
    np.savez(tmp_path / "b.npz", paths=paths[5:], embeddings=emb[5:])     # rows 5, 6 in both files
    got = load_embeddings([tmp_path / "a.npz", tmp_path / "b.npz"], images.paths)
    assert got.shape == (18, 2, 16) and np.array_equal(got[:12], emb) and np.array_equal(got[12:], emb[6:])
    with pytest.raises(ModelError, match="no teacher embedding"):
        load_embeddings([tmp_path / "a.npz"], images.paths)
    bad = emb[5:].copy()
    bad[0] += 1
    np.savez(tmp_path / "c.npz", paths=paths[5:], embeddings=bad)
    with pytest.raises(ModelError, match="two different"):
        load_embeddings([tmp_path / "a.npz", tmp_path / "c.npz"], images.paths)
    cfg["data"]["train"] = [{"path": str(tiny / "train"), "people": [1]}]
    with pytest.raises(ConfigError, match="unknown source keys"):
        training_images(cfg)


def test_init_a_larger_grid_from_a_smaller_checkpoint():
    """CryptoFaceNet4 -> CryptoFaceNet9: every patch network starts as the 2x2 network over the same region,
    the linear blocks are the old ones scaled by 4/9, and the jigsaw head stays fresh."""
    from cryptoface.training.models import build_model, trained_looking_model
    from cryptoface.training.train import init_from_checkpoint

    small = trained_looking_model(64).float()
    big = build_model(96)
    jigsaw = big.jigsaw.weight.detach().clone()
    init_from_checkpoint(big, {"backbone": small.state_dict()})
    mapping = {0: 0, 1: 0, 2: 1, 3: 0, 4: 0, 5: 1, 6: 2, 7: 2, 8: 3}
    sd, ss = big.state_dict(), small.state_dict()
    for j, i in mapping.items():
        assert torch.equal(sd[f"nets.{j}.layers.3.conv1.weight"], ss[f"nets.{i}.layers.3.conv1.weight"])
        assert torch.equal(sd[f"nets.{j}.layers.0.herpn1.bn2.running_var"],
                           ss[f"nets.{i}.layers.0.herpn1.bn2.running_var"])
        assert torch.allclose(sd["linear.weight"][:, 256 * j:256 * (j + 1)],
                              ss["linear.weight"][:, 256 * i:256 * (i + 1)] * 4 / 9)
    assert torch.equal(sd["bn.running_var"], ss["bn.running_var"]) and torch.equal(big.jigsaw.weight, jigsaw)


def test_held_out_people_make_an_identity_disjoint_protocol(tmp_path):
    """held_out splits identities by name alone; folder_pairs draws folds of genuine and impostor pairs that
    share no identity across folds, with no pair twice, the same for the same seed; too few people is an error."""
    from cryptoface.errors import DataError

    rng = np.random.default_rng(1)
    for k in range(60):
        d = tmp_path / f"p{k:03d}"
        d.mkdir()
        for i in range(2 + k % 3):
            Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
    names = [f"p{k:03d}" for k in range(60)]
    held = {n for n in names if data.held_out(n, 0.5)}
    assert 0 < len(held) < 60 and held == {n for n in names if data.held_out(n, 0.5)}
    assert not any(data.held_out(n, 0.0) for n in names)
    train = data.image_folder(tmp_path, holdout=0.5)
    test = data.image_folder(tmp_path, holdout=0.5, part="holdout")
    assert set(test.classes) == held and set(train.classes) == set(names) - held

    everyone = data.image_folder(tmp_path)
    vs = data.folder_pairs(everyone, "toy_holdout", folds=5, per_fold=6, seed=3)
    assert len(vs) == 60 and vs.n_folds == 5 and vs.issame.sum() == 30
    person = [Path(p).parent.name for p in vs.sources]
    fold_people = [{person[2 * i], person[2 * i + 1]} for i in range(len(vs))]
    for i in range(len(vs)):
        assert (person[2 * i] == person[2 * i + 1]) == vs.issame[i] and vs.sources[2 * i] != vs.sources[2 * i + 1]
        for j in range(len(vs)):
            if vs.folds[i] != vs.folds[j]:
                assert not fold_people[i] & fold_people[j]
    keys = [(vs.sources[2 * i], vs.sources[2 * i + 1]) for i in range(len(vs))]
    assert len(set(keys)) == len(keys)
    again = data.folder_pairs(everyone, "toy_holdout", folds=5, per_fold=6, seed=3)
    assert again.sources == vs.sources
    with pytest.raises(DataError, match="genuine pairs"):
        data.folder_pairs(everyone, "toy", folds=5, per_fold=100)
    with pytest.raises(DataError, match="identities"):
        data.folder_pairs(everyone, "toy", folds=31)


def test_a_recipe_runs_its_stages_and_continues_after_a_stop(tiny, tmp_path):
    """Two stages, the second from the first's checkpoint; stopped by its budget inside stage one and run
    again, it skips what is done and ends with the same weights as an uninterrupted run of the recipe."""
    from cryptoface.training.recipe import load_recipe, run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - {name: first, config: pcnn64, set: ['loss.kind=distill', 'optim.epochs=2']}\n"
                      "  - {name: second, config: bound64, init: first, set: ['optim.epochs=1']}\n")
    assert [s["name"] for s in load_recipe(recipe)] == ["first", "second"]
    common = [f"data.train={tiny / 'train'}", "data.val=null", f"distill.embeddings={tiny / 'teacher.npz'}",
              "optim.batch_size=4", "optim.lr_milestones=[1]", "threads=1"]
    straight = run_recipe(recipe, tmp_path / "a", common, progress=False)
    assert straight == tmp_path / "a" / "second" / "model.ckpt"
    stopped = run_recipe(recipe, tmp_path / "b", common, progress=False, budget_s=0.0)
    assert stopped == tmp_path / "b" / "first" / "model.ckpt"
    assert torch.load(stopped, weights_only=False)["partial"]["batch"] == 1
    again = run_recipe(recipe, tmp_path / "b", common, progress=False)
    a, b = torch.load(straight, weights_only=False), torch.load(again, weights_only=False)
    assert a["config"]["model"]["init"] == str(tmp_path / "a" / "first" / "model.ckpt")
    assert _states_equal(a["backbone"], b["backbone"])
    assert run_recipe(recipe, tmp_path / "b", common, progress=False) == again    # all done: nothing runs

    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - {name: one, config: pcnn64, init: later}\n")
    with pytest.raises(ConfigError, match="not an earlier stage"):
        load_recipe(bad)
    for name, stages in (("cryptofacenet4", 2), ("cryptofacenet9", 3), ("cryptofacenet16", 3)):
        assert len(load_recipe(name)) == stages and load_recipe(name)[-1]["name"] == "bound"


@pytest.mark.parametrize("config", ["mpcnn_resnet32", "autofhe_resnet32"])
def test_the_resnet_baselines_train_resume_and_evaluate(tiny, tmp_path, config, capsys):
    """Issue #16's baselines go through the same loop: one epoch, a resume, `evaluate` on the checkpoint, and
    `export` to their .model.npz with MPCNN's ReLU bound and the decision rules."""
    from cryptoface.training.checkpoint import load_checkpoint
    from cryptoface.training.resnet import ChannelQuadratic, ResNetFace
    from cryptoface.training.train import herpn_input_maxima

    cfg = load_config(config, overrides(tiny, kind="distill") + [f"output={tmp_path / 'runs'}"])
    ckpt = train(cfg, progress=False)
    state = torch.load(ckpt, weights_only=False)
    state["config"]["optim"]["epochs"] = 2
    torch.save(state, ckpt)
    train(state["config"], resume=str(ckpt), progress=False)
    model = load_checkpoint(ckpt)
    assert isinstance(model, ResNetFace) and model.depth == 32 and not model.training
    quads = sum(isinstance(m, ChannelQuadratic) for m in model.activations())
    assert quads == (16 if config.startswith("autofhe") else 0)
    x = torch.from_numpy(data.load_verification_bin(tiny / "val" / "lfw.bin").images(64)[:4])
    peaks = herpn_input_maxima(model, x)
    assert peaks.shape == (4,) and (peaks > 0).all()
    assert main(["evaluate", str(ckpt), "--data", str(tiny / "val")]) == 0
    assert "lfw:" in capsys.readouterr().out
    from cryptoface.baselines import load_baseline

    assert main(["export", str(ckpt), "--data", str(tiny / "val"), "--output", str(tmp_path / "r.model.npz")]) == 0
    exported = load_baseline(tmp_path / "r.model.npz")
    assert exported.variant == ("autofhe" if config.startswith("autofhe") else "mpcnn")
    assert (exported.relu_bound is not None) == (exported.variant == "mpcnn")
    assert len(exported.thresholds["lfw"].per_fold) == 6 and exported.info["evaluation"]["lfw"]["pairs"] == 6
    if exported.variant == "mpcnn":        # B covers every ReLU input of the fitting faces, with slack
        assert exported.relu_bound >= exported.info["activation_range"]["max"] * 1.2


def test_resnet_baselines_shapes_and_refusals(tiny):
    from cryptoface.training.models import build_model
    from cryptoface.training.resnet import AUTOFHE_RESNET32_BOOT8, ResNetFace, ZeroPadShortcut

    assert len(AUTOFHE_RESNET32_BOOT8) == 31 and AUTOFHE_RESNET32_BOOT8.count(2) == 16
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4) and torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any()
    for depth, params in ((32, 529_296), (44, 723_728)):
        net = build_model(64, arch=f"resnet{depth}", activation="relu")
        assert sum(p.numel() for p in net.parameters()) == params and len(net.activations()) == 6 * (depth // 6) + 1
    with pytest.raises(ValueError):
        build_model(96, arch="resnet32")
    with pytest.raises(ValueError):
        build_model(64, arch="vgg")
    with pytest.raises(ValueError):
        build_model(64, activation="relu")                     # CryptoFaceNet has HerPN
    with pytest.raises(ValueError):
        ResNetFace(32, "autofhe", pattern=(0, 2) * 5)          # 31 activations
    with pytest.raises(ValueError):
        ResNetFace(32, "autofhe", pattern=(1,) * 31)           # depths 0 or 2
    with pytest.raises(ConfigError, match="model"):
        train(load_config("mpcnn_resnet32", overrides(tiny) + ["model.input_size=96"]), progress=False)
