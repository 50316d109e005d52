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
    assert model.check_probe(sample).shape == (len(sample), model.embedding_dim)
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
    server.enroll("ref", client.encrypt_face(x[0], info))
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
