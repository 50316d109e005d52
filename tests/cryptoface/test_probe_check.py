"""An honest client refuses faces the model cannot vouch for, before it encrypts them (hardening issue, §1).

Without the check, inputs scaled x4, x8 and x256 gave an encrypted "same" where plaintext said "different"
on a toy ring, with no error; stripes overflow the shipped model's activations to 1e100 in plaintext.  Now each
such input is refused by the honest client (ProbeError), or decided under encryption as in plaintext, or, should
the encrypted norm check fail, answered "invalid" (ProbeError again).
"""

from __future__ import annotations

import numpy as np
import pytest

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data
from cryptoface.encrypted import Client
from cryptoface.errors import ModelError, ProbeError
from cryptoface.model import load_model

from .test_protocol import LEVELLED, cosine_rule, faces, session


def test_the_shipped_model_vouches_for_real_faces_and_refuses_overflowing_patterns():
    model = load_model(DEFAULT_MODEL)
    sample = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin").images(model.input_size)
    good = np.sum(model.embed(sample) ** 2, axis=1) >= model.quality_floor()   # all but the lowest-quality one
    assert good.sum() >= len(sample) - 1                                      # (test_shipped_assets checks it)
    assert model.check_probe(sample[good]).shape == (good.sum(), model.embedding_dim)
    stripes = -np.ones((1, 3, model.input_size, model.input_size))
    stripes[..., ::4] = 1.0                           # 8-bit vertical stripes: HerPN overflows to 1e100
    with pytest.raises(ProbeError):
        model.check_probe(stripes)
    lo, hi = model.thresholds["lfw"].norm.lo, model.thresholds["lfw"].norm.hi
    y = float(np.sum(model.embed(sample[:1]) ** 2))
    with pytest.raises(ProbeError):                   # the server's range is the one that counts
        model.check_probe(sample[:1], norm_range=(y * 1.05, hi))
    assert lo < y < hi


def test_no_silent_wrong_decision_for_scaled_inputs_on_a_toy_ring():
    params, model, client, server = session(LEVELLED)
    x = faces(4, seed=21)
    info = server.public_info()
    server.enroll("ref", client.encrypt_face(x[0], info), replace=True)
    silent_wrong = refused = decided = 0
    band = 2 * server.decision.bound * server.decision.sign.margin      # the sign's fuzzy band, in cosine
    for k in (4, 8, 256):
        for probe in x[1:]:
            scaled = np.clip(probe * k, -1e6, 1e6)
            try:
                encrypted = client.decide(server.verify(client.encrypt_face(scaled, info), "ref"))
            except ProbeError:
                refused += 1
                continue
            margin = cosine_rule(model, scaled, x[0], server.cos_threshold)
            decided += 1
            silent_wrong += abs(margin) > band and encrypted != (margin >= 0)
    assert silent_wrong == 0 and refused + decided == 9 and refused > 0


def test_a_client_checks_faces_with_the_servers_model_only():
    params, model, client, server = session(LEVELLED)
    other = load_model(DEFAULT_MODEL)
    with pytest.raises(ModelError):
        Client(params, other).encrypt_face(faces(1)[0], server.public_info())


def test_a_low_quality_face_is_refused_below_the_models_quality_floor(tmp_path):
    """Junk, flat, saturated and noisy images embed at the bottom of the norm range, where they match everyone
    more often than real impostors do: the client refuses a probe below the model's recorded quality floor."""
    from cryptoface.model import QUALITY_QUANTILE, embedding_quality, save_model

    from .toy_model import toy_model

    model = toy_model()
    x = faces(3, seed=31)
    y = np.sum(model.embed(x) ** 2, axis=1)
    q = embedding_quality(model.embed(x), 0.0)
    assert q["min_squared_norm"] == pytest.approx(y.min()) and q["images"] == 3
    assert embedding_quality(np.ones((1000, 1)) * np.arange(1000)[:, None] ** 0.5)["min_squared_norm"] \
        == pytest.approx(QUALITY_QUANTILE * 999)
    wide = (1e-300, 1e300)                                 # no norm range: only the quality floor counts here
    model.check_probe(x, wide)                             # no floor recorded: nothing refused for quality
    model.info["quality"] = {**q, "min_squared_norm": float(np.median(y)), "median_squared_norm": float(y.max())}
    with pytest.raises(ProbeError, match="low-quality"):
        model.check_probe(x[np.argmin(y)][None], wide)
    model.check_probe(x[np.argmax(y)][None], wide)
    # the floor is read back from the file, and a malformed one is refused on load
    model.thresholds["lfw"].accuracy = model.thresholds["lfw"].exact_accuracy = 0.5     # the toy fits none
    loaded = load_model(save_model(model, tmp_path / "q.model.npz"))
    assert loaded.quality_floor() == float(np.median(y))
    for bad in ({**q, "min_squared_norm": -1.0}, {**q, "quantile": 0.7}, {"images": 3}, "high",
                {**q, "min_squared_norm": float(y.max()) * 2, "median_squared_norm": float(y.max())}):
        model.info["quality"] = bad
        with pytest.raises(ModelError):
            save_model(model, tmp_path / "bad.model.npz")      # save_model writes only what load_model accepts


def test_the_shipped_model_records_a_quality_floor_that_keeps_real_faces():
    model = load_model(DEFAULT_MODEL)
    floor = model.quality_floor()
    assert floor is not None and model.info["quality"]["images"] == 4800      # the faces of LFW folds 6-9
    sample = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin").images(model.input_size)
    assert np.sum(np.sum(model.embed(sample) ** 2, axis=1) > floor) >= len(sample) - 1
