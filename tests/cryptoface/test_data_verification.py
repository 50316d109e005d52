"""Data readers (InsightFace .bin with real JPEG bytes, LFW pairs/people), preprocessing and metrics."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cryptoface import data, verification
from cryptoface.errors import DataError


def jpeg(rng, size=112) -> bytes:
    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_bin_round_trip_with_real_jpeg(tmp_path, rng):
    encoded = [jpeg(rng) for _ in range(8)]
    path = data.write_verification_bin(tmp_path / "lfw.bin", encoded, [True, False, True, False])
    vs = data.load_verification_bin(path, n_folds=2)
    assert len(vs) == 4 and vs.issame.tolist() == [True, False, True, False]
    assert vs.folds.tolist() == [0, 0, 1, 1]
    x = vs.images(64)
    assert x.shape == (8, 3, 64, 64) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    direct = np.asarray(Image.open(io.BytesIO(encoded[3])).convert("RGB"))
    assert np.allclose(vs.images(112, [1])[1], direct.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)


def test_bin_reader_refuses_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([Evil()], [True])))
    with pytest.raises(DataError, match="evil.bin"):
        data.load_verification_bin(tmp_path / "evil.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="junk.bin"):
        data.load_verification_bin(tmp_path / "junk.bin")
    with pytest.raises(DataError, match="missing.bin"):
        data.load_verification_bin(tmp_path / "missing.bin")
    data.write_verification_bin(tmp_path / "corrupt.bin", [b"\xff\xd8garbage", b"x"], [True])
    with pytest.raises(DataError, match="corrupt.bin image 0"):
        data.load_verification_bin(tmp_path / "corrupt.bin").images(64)


def test_wrong_image_size_is_named(tmp_path, rng):
    path = data.write_verification_bin(tmp_path / "big.bin", [jpeg(rng, 112), jpeg(rng, 250)], [True])
    with pytest.raises(DataError, match=r"big.bin image 1: image is 250x250, expected an aligned 112x112"):
        data.load_verification_bin(path).images(64)


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        data.load_verification_dir(tmp_path, ["imagenet"])
    with pytest.raises(DataError, match="nowhere"):
        data.load_verification_dir(tmp_path / "nowhere", ["lfw"])


def test_lfw_folder_pairs_and_people(tmp_path, rng):
    root = tmp_path / "faces"
    for name, n in (("Ann_A", 2), ("Bob_B", 1)):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(jpeg(rng))
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    vs = data.load_lfw_dir(root, tmp_path / "pairs.txt")
    assert vs.issame.tolist() == [True, False] and vs.images(32).shape == (4, 3, 32, 32)
    (tmp_path / "people.txt").write_text("2\n1\nAnn_A\t2\n1\nBob_B\t1\n")
    assert data.read_people(tmp_path / "people.txt") == [{"Ann_A": 2}, {"Bob_B": 1}]
    assert data.lfw_people(tmp_path / "people.txt", [1]) == ["Bob_B"]
    images = data.image_folder(root, ["Ann_A"])
    assert len(images) == 2 and images.num_classes == 1
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t3\nAnn_A\t1\tBob_B\t1\n")
    with pytest.raises(DataError, match="Ann_A_0003.jpg"):
        data.load_lfw_dir(root, tmp_path / "pairs.txt")


@settings(deadline=None)
@given(st.sampled_from([(64, 32), (96, 32), (128, 32), (8, 4)]), st.integers(1, 3))
def test_split_merge_patches_inverse(size_patch, batch):
    size, patch = size_patch
    x = np.arange(batch * 3 * size * size, dtype=np.float32).reshape(batch, 3, size, size)
    p = data.split_patches(x, patch)
    g = size // patch
    assert p.shape == (g * g, batch, 3, patch, patch)
    assert np.array_equal(p[g + 1 if g > 1 else 0, 0], x[0, :, (g > 1) * patch:(g > 1) * patch + patch,
                                                        (g > 1) * patch:(g > 1) * patch + patch])
    assert np.array_equal(data.merge_patches(p), x)


@settings(deadline=None)
@given(st.lists(st.floats(0, 4, allow_nan=False), min_size=4, max_size=60), st.randoms(use_true_random=False))
def test_best_threshold_is_optimal(distances, random):
    d = np.array(distances)
    y = np.array([random.random() < 0.5 for _ in d])
    t, acc = verification.best_threshold(d, y)
    assert acc == pytest.approx(np.mean((d < t) == y))
    # no threshold does better (brute force over all cuts)
    for c in np.concatenate([[-1.0], np.unique(d) + 1e-9]):
        assert np.mean((d < c) == y) <= acc + 1e-12


def test_kfold_accuracy_separable_and_random(rng):
    y = np.tile([True] * 30 + [False] * 30, 10)
    d = np.where(y, rng.uniform(0, 1, y.size), rng.uniform(2, 3, y.size))
    r = verification.kfold_accuracy(d, y)
    assert r.accuracy == 1.0 and len(r.thresholds) == 10 and all(1 <= t <= 2 for t in r.thresholds)
    r = verification.kfold_accuracy(rng.uniform(0, 1, y.size), y)
    assert 0.35 < r.accuracy < 0.65


def test_roc_plot_written(tmp_path, rng):
    y = rng.random(200) < 0.5
    d = rng.normal(np.where(y, 0.5, 1.5), 0.3)
    fpr, tpr, area = verification.roc(d, y)
    assert 0.9 < area <= 1.0
    path = verification.plot_roc({"toy": (fpr, tpr, area)}, tmp_path / "roc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
