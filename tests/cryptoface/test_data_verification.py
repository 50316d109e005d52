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


def lfw_tree(tmp_path, rng, people: dict[str, int], pairs_txt: str):
    """``tmp_path/faces/<Name>/<Name>_NNNN.jpg`` (random aligned crops) and ``tmp_path/pairs.txt``."""
    root = tmp_path / "faces"
    for name, n in people.items():
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(jpeg(rng))
    (tmp_path / "pairs.txt").write_text(pairs_txt)
    return root


def test_lfw_folder_pairs_and_people(tmp_path, rng):
    root = lfw_tree(tmp_path, rng, {"Ann_A": 2, "Bob_B": 1}, "1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
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


# --------------------------------------------------------------------------- decoding every mode, strict text files


def encoded(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16B", "TIFF"), ("I;16", "TIFF")])
def test_16_bit_grey_is_scaled_not_clipped(rng, mode, fmt):
    """16-bit samples keep their high byte (v >> 8): v = 257 k (the usual 8 -> 16 scaling) and
    v = 256 k + 255 both give k. Before: Pillow's convert("RGB") clipped everything above 255 to white."""
    k = rng.integers(0, 256, (112, 112), dtype=np.uint16)
    for v in (k * 257, k * 256 + 255):
        img = Image.frombytes(mode, (112, 112), v.astype(">u2" if mode.endswith("B") else "<u2").tobytes())
        blob = encoded(img, fmt)
        assert Image.open(io.BytesIO(blob)).mode.startswith("I;16")
        got = data.decode_image(blob)
        assert got.dtype == np.uint8 and got.shape == (112, 112, 3)
        assert np.array_equal(got, np.repeat(k[:, :, None], 3, axis=2).astype(np.uint8))


def test_32_bit_integer_grey_is_read_as_16_bit_or_refused(rng):
    """Mode "I" (what older Pillow gives 16-bit PNGs): read as 16-bit; samples beyond 0..65535 are refused."""
    k = rng.integers(0, 256, (8, 8))
    got = data.decode_image(encoded(Image.fromarray((k * 257).astype(np.int32)), "TIFF"))
    assert np.array_equal(got[:, :, 0], k) and np.array_equal(got[:, :, 2], k)
    for bad in (-1, 70000):
        with pytest.raises(DataError, match="outside 0..65535"):
            data.decode_image(encoded(Image.fromarray(np.full((8, 8), bad, dtype=np.int32)), "TIFF"), "wide.tif")
    with pytest.raises(DataError, match="f.tif: cannot decode image .*mode F"):
        data.decode_image(encoded(Image.fromarray(np.ones((8, 8), np.float32)), "TIFF"), "f.tif")


def test_other_modes_convert_to_rgb(rng):
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    # palette (with and without a transparent entry): the palette's colours
    pal = Image.fromarray(rgb).quantize(16)
    want = np.asarray(pal.convert("RGB"))
    assert np.array_equal(data.decode_image(encoded(pal)), want)
    assert np.array_equal(data.decode_image(encoded(pal, transparency=0)), want)
    # alpha is dropped, the colour under it kept (RGBA, LA)
    alpha = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)
    assert np.array_equal(data.decode_image(encoded(Image.fromarray(np.concatenate([rgb, alpha], 2)))), rgb)
    grey = rgb[:, :, 0]
    la = Image.fromarray(np.stack([grey, alpha[:, :, 0]], 2), mode="LA")
    assert np.array_equal(data.decode_image(encoded(la)), np.repeat(grey[:, :, None], 3, 2))
    # grey, 1-bit
    assert np.array_equal(data.decode_image(encoded(Image.fromarray(grey))), np.repeat(grey[:, :, None], 3, 2))
    bits = grey > 127
    one = Image.fromarray(bits).convert("1")
    assert one.mode == "1"
    assert np.array_equal(data.decode_image(encoded(one)), np.repeat(np.where(bits, 255, 0)[:, :, None], 3, 2))
    # CMYK (JPEG and TIFF): pure inks give their RGB
    inks = {(0, 255, 255, 0): (255, 0, 0), (255, 0, 255, 0): (0, 255, 0), (0, 0, 0, 255): (0, 0, 0),
            (0, 0, 0, 0): (255, 255, 255)}
    for cmyk, want_rgb in inks.items():
        for fmt in ("JPEG", "TIFF"):
            options = {"quality": 100} if fmt == "JPEG" else {}
            got = data.decode_image(encoded(Image.new("CMYK", (8, 8), cmyk), fmt, **options))
            assert np.abs(got.astype(int) - want_rgb).max() <= 2, (cmyk, fmt, got[0, 0])


def test_undecodable_images_are_typed(rng, tmp_path):
    good = jpeg(rng)
    scan = good.index(b"\xff\xda") + 100
    cases = {"empty": b"", "garbage": b"\x00\x01 not an image", "header only": good[:40], "truncated": good[:scan],
             "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"}
    for name, blob in cases.items():
        with pytest.raises(DataError, match=f"^{name}: cannot decode image"):
            data.decode_image(blob, name)
    # the header probe is cheap: it refuses what has no sound header, and passes a truncated scan
    data.probe_image(good, "good")
    data.probe_image(good[:scan], "truncated")
    with pytest.raises(DataError, match="header only: cannot decode image"):
        data.probe_image(good[:40], "header only")
    with pytest.raises(DataError, match="small: image is 64x64, expected an aligned 112x112"):
        data.probe_image(jpeg(rng, 64), "small")
    with pytest.raises(DataError, match="no such image"):
        data.probe_image(tmp_path / "missing.jpg", "missing.jpg")
    with pytest.raises(DataError, match="not a regular file"):
        data.probe_image(tmp_path, "a folder")
    with pytest.raises(DataError, match="mode F"):
        data.probe_image(encoded(Image.fromarray(np.ones((112, 112), np.float32)), "TIFF"), "float")


def test_check_reads_every_header_and_decodable_images_sorts_out_the_bad(rng, tmp_path):
    root = lfw_tree(tmp_path, rng, {"Ann_A": 3, "Bob_B": 2},
                    "2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\nAnn_A\t2\t3\nAnn_A\t3\tBob_B\t2\n")
    vs = data.load_lfw_dir(root, tmp_path / "pairs.txt")
    vs.check()
    good = (root / "Ann_A" / "Ann_A_0003.jpg").read_bytes()
    (root / "Ann_A" / "Ann_A_0003.jpg").write_bytes(good[:good.index(b"\xff\xda") + 100])   # pairs 2 and 3
    vs.check()                                   # the header is sound: found when decoded
    x, ok, failed = vs.decodable_images(16, range(4))
    assert x.shape == (4, 3, 16, 16) and ok == [0, 1] and sorted(failed) == [2, 3]
    assert "Ann_A_0003.jpg: cannot decode image (image file is truncated" in failed[2]
    assert np.array_equal(x, vs.images(16, [0, 1]))
    (root / "Bob_B" / "Bob_B_0002.jpg").write_bytes(b"junk")
    (root / "Ann_A" / "Ann_A_0001.jpg").write_bytes(jpeg(rng, 100))
    with pytest.raises(DataError, match=r"Ann_A_0001.jpg: image is 100x100.* \(and 1 more bad image\)$"):
        vs.check()
    data.write_verification_bin(tmp_path / "b.bin", [good, good, b"x", good], [True, False])
    with pytest.raises(DataError, match=r"b.bin image 2: cannot decode image"):
        data.load_verification_bin(tmp_path / "b.bin").check()


@pytest.mark.parametrize("content, match", [
    (b"2\t1\nAnn_A\t1\t2\n\xe9\n", r"pairs.txt: not UTF-8 text \(byte 0xe9 at offset 14\)"),   # was UnicodeDecodeError
    (b"", r"pairs.txt: empty"),                                                                 # was IndexError
    (b"\n \r\n", r"pairs.txt: empty"),                                                          # was IndexError
    (b"10\n", r"line 1: expected 'FOLDS PAIRS_PER_FOLD'"),
    (b"0\t1\n", r"line 1: the header's count '0' is not an integer of at least 1"),
    (b"1\t+1\nA\t1\t2\nA\t1\tB\t1\n", r"line 1: the header's count '\+1'"),
    (b"1\t1\nA\t1\t2\n", r"1 pair lines, the header says 1x2x1"),
    (b"1\t1\nA\t1\nA\t1\tB\t1\n", r"line 2: expected 'NAME N1 N2' or 'NAME1 N1 NAME2 N2'"),
    (b"1\t1\nA\t0\t2\nA\t1\tB\t1\n", r"line 2: image number '0'"),
    (b"1\t1\nA\t1\t2\nA\t1\tB\t1234567890\n", r"line 3: image number '1234567890'"),
    (b"1\t1\nA\t1\t2\nA\x00B\t1\tB\t1\n", r"line 3: 'A\\x00B' is not a person's name"),         # was ValueError
    (b"1\t1\nA\t1\t2\n..\t1\tB\t1\n", r"line 3: '..' is not a person's name"),
    (b"1\t1\nA\t1\t2\nx/y\t1\tB\t1\n", r"line 3: 'x/y' is not a person's name"),
])
def test_read_pairs_is_strict(tmp_path, content, match):
    (tmp_path / "pairs.txt").write_bytes(content)
    with pytest.raises(DataError, match=match):
        data.read_pairs(tmp_path / "pairs.txt")


def test_read_pairs_accepts_crlf_and_a_byte_order_mark(tmp_path):
    (tmp_path / "pairs.txt").write_bytes(b"\xef\xbb\xbf1\t1\r\nAnn_A\t1\t2\r\nAnn_A\t1\tBob-O'B\t12\r\n")
    assert data.read_pairs(tmp_path / "pairs.txt") == [("Ann_A", 1, "Ann_A", 2, 0), ("Ann_A", 1, "Bob-O'B", 12, 0)]
    for content, match in ((b"", "people.txt: empty"), (b"1\n1\n\xff\n", "people.txt: not UTF-8")):
        (tmp_path / "people.txt").write_bytes(content)
        with pytest.raises(DataError, match=match):
            data.read_people(tmp_path / "people.txt")
    with pytest.raises(DataError, match="cannot read"):
        data.read_pairs(tmp_path)
