"""Serialization: round trips for every kind; corrupted, truncated or foreign
bytes raise typed errors and never return an object."""

from __future__ import annotations

import hashlib
import io
import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhe_ckks import presets, serialize
from fhe_ckks.ckks import precision_bits
from fhe_ckks.errors import FheError, KeyMismatchError, SerializationError
from tests.ckks_context import context

NAME = "INSECURE_N10_QP380_L5_S40"


def objects():
    ctx = context(NAME)
    rng = np.random.default_rng(5)
    z = ctx.random_slots(rng)
    pt = ctx.encoder.encode(z, level=3)
    gk = ctx.evaluator.galois_keys
    return {
        "parameters": ctx.params,
        "plaintext": pt,
        "ciphertext": ctx.encryptor.encrypt(pt),
        "seeded_ciphertext": ctx.sk_encryptor.encrypt(pt),
        "public_key": ctx.encryptor.key,
        "relin_key": ctx.evaluator.relin_key,
        "galois_keys": type(gk)(gk.params, gk.key_id, {g: gk[g] for g in gk.elements()[:2]}),
        "secret_key": ctx.keygen.secret_key,
    }


def load(data):
    return serialize.load(data, context(NAME).params, allow_insecure=True)


@pytest.mark.parametrize("kind", list(objects()))
def test_round_trip(kind):
    obj = objects()[kind]
    data = serialize.dump(obj, include_secret=True)
    back = load(data)
    assert type(back) is type(obj)
    if kind == "parameters":
        assert back.fingerprint == obj.fingerprint
    elif kind in ("plaintext",):
        np.testing.assert_array_equal(back.poly, obj.poly)
        assert (back.scale, back.slots) == (obj.scale, obj.slots)
    elif "ciphertext" in kind:
        np.testing.assert_array_equal(back.data, obj.data)
        assert (back.scale, back.slots, back.key_id) == (obj.scale, obj.slots, obj.key_id)
    elif kind == "galois_keys":
        assert back.elements() == obj.elements()
        for g in obj.elements():
            np.testing.assert_array_equal(back[g].b, obj[g].b)
            np.testing.assert_array_equal(back[g].a, obj[g].a)
    elif kind == "secret_key":
        np.testing.assert_array_equal(back.ntt, obj.ntt)
    else:
        np.testing.assert_array_equal(back.b, obj.b)
        np.testing.assert_array_equal(back.a, obj.a)


def test_loaded_objects_still_compute():
    ctx = context(NAME)
    z = ctx.random_slots(np.random.default_rng(1))
    ct = load(serialize.dump(ctx.encrypt(z)))
    out = ctx.evaluator.rescale(ctx.evaluator.mul(ct, ct))
    assert precision_bits(z * z, ctx.decrypt(out)) >= ctx.bits(slack=2)


def test_seeds_halve_keys_and_fresh_symmetric_ciphertexts():
    obj = objects()
    assert len(serialize.dump(obj["seeded_ciphertext"])) < 0.55 * len(serialize.dump(obj["ciphertext"]))
    key = obj["relin_key"]
    assert len(serialize.dump(key)) < 0.55 * key.nbytes


def test_secret_key_needs_explicit_consent():
    with pytest.raises(SerializationError):
        serialize.dump(context(NAME).keygen.secret_key)


def test_file_objects_work():
    buf = io.BytesIO()
    serialize.dump(objects()["plaintext"], buf)
    buf.seek(0)
    assert load(buf).level == 3


def test_other_parameters_are_refused():
    data = serialize.dump(objects()["ciphertext"])
    with pytest.raises(KeyMismatchError):
        serialize.load(data, presets.get("INSECURE_N12_QP520_L7_S40", allow_insecure=True))
    with pytest.raises(SerializationError):
        serialize.load(data)  # no parameters given


@given(st.sampled_from(list(objects())), st.data())
def test_byte_flips_raise_typed_errors(kind, data):
    blob = bytearray(serialize.dump(objects()[kind], include_secret=True))
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FheError):
        load(bytes(blob))


@given(st.sampled_from(list(objects())), st.data())
def test_truncations_raise_typed_errors(kind, data):
    blob = serialize.dump(objects()[kind], include_secret=True)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SerializationError):
        load(blob[:cut])


def reseal(blob: bytes, header_edit=None, payload_edit=None) -> bytes:
    """Rewrite a serialized object with a valid checksum (simulating a
    malicious rather than accidental change)."""
    body = blob[:-32]
    magic, version, hlen = struct.unpack_from("<8sHI", body)
    header = json.loads(body[14:14 + hlen])
    payload = bytearray(body[14 + hlen:])
    if header_edit:
        header_edit(header)
    if payload_edit:
        payload_edit(payload)
    h = json.dumps(header).encode()
    new = struct.pack("<8sHI", magic, version, len(h)) + h + bytes(payload)
    return new + hashlib.sha256(new).digest()


def test_unreduced_residue_with_valid_checksum_is_refused():
    blob = serialize.dump(objects()["ciphertext"])

    def bump(payload):
        payload[0:8] = (2**64 - 1).to_bytes(8, "little")

    with pytest.raises(SerializationError):
        load(reseal(blob, payload_edit=bump))


@pytest.mark.parametrize("edit", [
    lambda h: h.update(kind="bogus"),
    lambda h: h["meta"].update(scale=-1.0),
    lambda h: h["meta"].update(slots=3),
    lambda h: h["meta"].update(key_id="zz"),
    lambda h: h["arrays"][0].update(shape=[1, 2, 3]),
    lambda h: h["arrays"][0].update(dtype="float64"),
])
def test_malformed_headers_with_valid_checksum_are_refused(edit):
    with pytest.raises(SerializationError):
        load(reseal(serialize.dump(objects()["ciphertext"]), header_edit=edit))


def test_unknown_version_is_refused():
    blob = bytearray(serialize.dump(objects()["plaintext"]))
    blob[8:10] = (99).to_bytes(2, "little")
    body = bytes(blob[:-32])
    with pytest.raises(SerializationError):
        load(body + hashlib.sha256(body).digest())


def test_encapsulation_keys_round_trip_and_refuse_corruption():
    from fhe_ckks.rlwe import EncapsulationKeys, KeyGenerator

    params = presets.get("INSECURE_N10_QP380_L5_S40", allow_insecure=True)
    keys = KeyGenerator(params, seed=bytes(32)).encapsulation_keys(8)
    blob = serialize.dump(keys)
    back = serialize.load(blob, params)
    assert isinstance(back, EncapsulationKeys) and back.weight == 8 and back.key_id == keys.key_id
    np.testing.assert_array_equal(back.down_b, keys.down_b)
    np.testing.assert_array_equal(back.down_a, keys.down_a)  # re-expanded from the seed
    np.testing.assert_array_equal(back.up.b, keys.up.b)
    np.testing.assert_array_equal(back.up.a, keys.up.a)
    assert back.up.kind == "encapsulation"
    with pytest.raises(SerializationError):
        serialize.load(blob[:-40] + bytes(8) + blob[-32:], params)
    for edit in (lambda h: h["meta"]["up"].update(kind="relin"), lambda h: h["meta"].update(weight=0),
                 lambda h: h["meta"]["up"].update(key_id="00" * 16)):
        with pytest.raises(SerializationError):
            serialize.load(reseal(blob, header_edit=edit), params)


@pytest.mark.parametrize("kind", list(objects()))
def test_reloaded_objects_dump_to_the_same_bytes(kind):
    data = serialize.dump(objects()[kind], include_secret=True)
    assert serialize.dump(load(data), include_secret=True) == data


def header(blob: bytes) -> dict:
    hlen = struct.unpack_from("<8sHI", blob)[2]
    return json.loads(blob[14:14 + hlen])


def test_parameters_header_lists_every_literal_field_in_order():
    import dataclasses

    from fhe_ckks.rlwe import ParametersLiteral

    params = presets.get("INSECURE_BOOT_N12_QP1235_H32", allow_insecure=True)
    h = header(serialize.dump(params))
    assert list(h) == ["kind", "params", "meta", "arrays"]
    literal = h["meta"]["literal"]
    assert list(literal) == [f.name for f in dataclasses.fields(ParametersLiteral)]
    assert literal["log_q"] == list(params.literal.log_q) and isinstance(literal["sigma"], float)
    back = serialize.load(serialize.dump(params), allow_insecure=True)
    assert back.literal == params.literal and back.fingerprint == params.fingerprint


def test_unsupported_objects_are_refused():
    for obj in (object(), 3, None, context(NAME).params.literal):
        with pytest.raises(SerializationError):
            serialize.dump(obj)


def test_level_aware_galois_keys_round_trip():
    from fhe_ckks.rlwe import KeyGenerator

    params = context(NAME).params
    keys = KeyGenerator(params, seed=bytes(32)).galois_keys([1, 2], max_level=3)
    blob = serialize.dump(keys)
    back = serialize.load(blob, params)
    assert back.elements() == keys.elements()
    for g in keys.elements():
        assert back[g].max_level == keys[g].max_level == 3
        np.testing.assert_array_equal(back[g].b, keys[g].b)
        np.testing.assert_array_equal(back[g].a, keys[g].a)
    assert serialize.dump(back) == blob
    with pytest.raises(SerializationError):
        serialize.load(reseal(blob, header_edit=lambda h: h["meta"]["keys"][0].update(max_level=2)), params)
