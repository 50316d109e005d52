"""Face alignment: the similarity transform (hypothesis, against known transforms), the warp, the one-face rule,
the torch-free reader of MTCNN's weights (against torch's own writer, and refusing foreign pickles), and MTCNN
end to end on a real LFW face placed in a larger photo (its weights downloaded from the facenet-pytorch wheel
by ``cryptoface fetch-mtcnn``; skipped with the reason when that download is impossible)."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data
from cryptoface.align import ARCFACE_TEMPLATE, Face, align_face, pick_face, similarity_transform, warp
from cryptoface.align.weights import read_legacy_state_dict
from cryptoface.errors import DataError


def similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


@settings(max_examples=60, deadline=None)
@given(st.floats(-np.pi, np.pi), st.floats(0.2, 5.0), st.floats(-300, 300), st.floats(-300, 300),
       st.floats(0.0, 2.0))
def test_the_similarity_transform_recovers_a_known_one(angle, scale, tx, ty, noise):
    m = similarity(angle, scale, tx, ty)
    src = ARCFACE_TEMPLATE * 2.0 + 10.0
    got = similarity_transform(src, apply(m, src))
    assert np.allclose(got, m, atol=1e-7 * max(1.0, abs(tx), abs(ty)))
    # with noisy targets: the least-squares fit is no worse than the true transform
    rng = np.random.default_rng(int(1e6 * noise))
    dst = apply(m, src) + rng.normal(scale=noise, size=src.shape)
    fit = similarity_transform(src, dst)
    assert np.sum((apply(fit, src) - dst) ** 2) <= np.sum((apply(m, src) - dst) ** 2) + 1e-9


def test_degenerate_landmarks_are_refused():
    with pytest.raises(DataError):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(DataError):
        similarity_transform(ARCFACE_TEMPLATE[:, :1], ARCFACE_TEMPLATE[:, :1])


def test_warp_and_its_inverse_return_the_crop():
    crop = data.decode_image(data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin").sources[0])
    m = similarity(0.3, 1.7, 40.0, 15.0)
    big = warp(crop, m, 260)
    back = warp(big, np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2], 112)
    assert np.mean(np.abs(back[20:92, 20:92].astype(float) - crop[20:92, 20:92])) < 6.0
    # aligning with the landmarks the transform moved the template to gives the crop back
    again = align_face(big, apply(m, ARCFACE_TEMPLATE))
    assert np.mean(np.abs(again[20:92, 20:92].astype(float) - crop[20:92, 20:92])) < 6.0


def face(x: float, width: float) -> Face:
    return Face(np.array([x, 10.0, x + width, 10.0 + width]), 0.99, np.zeros((5, 2)))


def test_one_face_per_photo():
    with pytest.raises(DataError, match="no face"):
        pick_face([], "p.jpg")
    with pytest.raises(DataError, match="2 faces"):
        pick_face([face(0, 100), face(200, 60)], "p.jpg")
    big = face(0, 100)
    assert pick_face([face(200, 30), big], "p.jpg") is big          # a small face in the background is ignored


# ---- the weight reader ------------------------------------------------------------------------------------

def test_the_weight_reader_reads_torch_legacy_files_and_nothing_else():
    torch = pytest.importorskip("torch", reason="torch writes the reference file")
    state = {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).transpose(0, 2),
             "conv.bias": torch.tensor([1.5, -2.0])}
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    got = read_legacy_state_dict(buf.getvalue())
    assert set(got) == set(state)
    for k, v in state.items():
        assert np.array_equal(got[k], v.numpy()) and got[k].dtype == np.float32
    with pytest.raises(DataError):
        read_legacy_state_dict(buf.getvalue()[:-10])                  # truncated
    with pytest.raises(DataError):
        read_legacy_state_dict(b"not a weight file")
    evil = pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({}) + \
        pickle.dumps(eval)                                            # a pickle that would call a builtin
    with pytest.raises(DataError, match="refers to builtins"):
        read_legacy_state_dict(evil)


# ---- MTCNN end to end -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mtcnn_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("mtcnn") / "mtcnn.npz"
    done = subprocess.run([sys.executable, "-m", "cryptoface.service.cli", "fetch-mtcnn", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.skip(f"the facenet-pytorch wheel (MTCNN's weights) could not be downloaded: {done.stderr[-200:]}")
    return out


@pytest.fixture(scope="module")
def mtcnn(mtcnn_weights):
    from cryptoface.align import MTCNN

    return MTCNN(mtcnn_weights)


def test_mtcnn_finds_the_face_and_its_landmarks_in_a_larger_photo(mtcnn):
    from cryptoface.align import align_photo
    from cryptoface.model import load_model

    crop = data.decode_image(data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin").sources[0])
    m = similarity(np.deg2rad(12), 2.2, 60.0, 20.0)
    photo = warp(crop, m, 300)                                        # rotated, scaled, off centre, black around
    faces = mtcnn.detect(photo)
    assert len(faces) == 1 and faces[0].score > 0.95
    assert np.max(np.abs(faces[0].landmarks - apply(m, ARCFACE_TEMPLATE))) < 6.0      # pixels of the photo
    model = load_model(DEFAULT_MODEL)
    x = data.preprocess(np.stack([crop, align_photo(photo, mtcnn)]), model.input_size)
    e = model.embed(x)
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert float(u[0] @ u[1]) > 0.8                                  # the same face again, far above c = 0.23
    with pytest.raises(DataError, match="no face"):
        align_photo(np.full((200, 200, 3), 128, dtype=np.uint8), mtcnn)
    two = np.concatenate([photo, photo], axis=1)
    with pytest.raises(DataError, match="2 faces"):
        align_photo(two, mtcnn)


def test_the_service_client_aligns_an_ordinary_photo(mtcnn_weights, tmp_path):
    from PIL import Image

    from cryptoface.service.client import read_face

    crop = data.decode_image(data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin").sources[2])
    path = tmp_path / "photo.jpg"
    Image.fromarray(warp(crop, similarity(-0.1, 1.8, 30.0, 40.0), 280)).save(path, quality=95)
    face = read_face(path, 64, mtcnn_weights)
    assert face.shape == (3, 64, 64) and -1.0 <= face.min() and face.max() <= 1.0
    with pytest.raises(DataError, match="fetch-mtcnn"):
        read_face(path, 64, tmp_path / "no-weights.npz")              # no weights: a clear message, typed
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((150, 150, 3), dtype=np.uint8)).save(blank)
    with pytest.raises(DataError, match="no face"):
        read_face(blank, 64, mtcnn_weights)
