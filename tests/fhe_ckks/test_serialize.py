"""Serialization: round trips for every kind; corrupted, truncated or foreign
bytes raise typed errors and never return an object."""

from __future__ import annotations

import hashlib
import io
import json
import math
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


# ---- hand-edited headers, dtypes and labels (hardening) ------------------------------------------


def repack(blob: bytes, arrays: list[tuple[str, np.ndarray]], header_edit=None) -> bytes:
    """``blob`` with its arrays replaced by ``arrays`` (the array table rewritten to match) and resealed."""
    h = header(blob)
    entries, offset = [], 0
    for name, arr in arrays:
        entries.append({"name": name, "dtype": arr.dtype.str.lstrip("<>|="), "shape": list(arr.shape),
                        "offset": offset, "nbytes": arr.nbytes})
        offset += arr.nbytes
    h["arrays"] = entries
    if header_edit:
        header_edit(h)
    raw = json.dumps(h).encode()
    body = struct.pack("<8sHI", serialize.MAGIC, serialize.FORMAT_VERSION, len(raw)) + raw + \
        b"".join(np.ascontiguousarray(a).tobytes() for _, a in arrays)
    return body + hashlib.sha256(body).digest()


def stored_arrays(blob: bytes) -> list[tuple[str, np.ndarray]]:
    h = header(blob)
    payload = blob[14 + struct.unpack_from("<8sHI", blob)[2]:-32]
    return [(e["name"], np.frombuffer(payload[e["offset"]:e["offset"] + e["nbytes"]], dtype="<" + e["dtype"])
             .reshape(e["shape"])) for e in h["arrays"]]


@pytest.mark.parametrize("source", ["FHECKKS", None, 5, -1, 1.5, object(), io.StringIO("text")])
def test_load_of_something_that_is_not_bytes_raises_serialization_error(source):
    with pytest.raises(SerializationError):
        load(source)


def test_deeply_nested_or_oversized_header_values_are_refused():
    blob = serialize.dump(objects()["ciphertext"])
    h = header(blob)
    deep = json.dumps(h).replace(f'"scale": {h["meta"]["scale"]}', '"scale": ' + "[" * 100_000 + "]" * 100_000)
    body = struct.pack("<8sHI", serialize.MAGIC, 1, len(deep)) + deep.encode() + blob[14 + len(json.dumps(
        h, separators=(",", ":"))):-32]
    with pytest.raises(SerializationError, match="header"):
        load(body + hashlib.sha256(body).digest())
    for edit in (lambda h: h["meta"].update(slots=10**30), lambda h: h["meta"].update(bogus=1),
                 lambda h: h["meta"].pop("c1_seed"), lambda h: h.update(extra=[])):
        with pytest.raises(SerializationError):
            load(reseal(blob, header_edit=edit))


@pytest.mark.parametrize("kind", ["plaintext", "ciphertext", "seeded_ciphertext"])
@pytest.mark.parametrize("scale", [1.0, 1.999, 2.0**300, float("inf"), float("nan"), -2.0**40, True, 2**40, "1e12"])
def test_scales_outside_what_the_level_carries_are_refused(kind, scale):
    with pytest.raises(SerializationError):
        load(reseal(serialize.dump(objects()[kind]), header_edit=lambda h: h["meta"].update(scale=scale)))


def test_scale_bounds_admit_what_the_library_produces():
    ctx = context(NAME)
    params, ct = ctx.params, objects()["ciphertext"]
    q_level = math.prod(params.q_primes[:ct.level + 1])
    top = ctx.encrypt(ctx.random_slots(np.random.default_rng(2)))
    # bootstrapping's ModRaise declares the scale q_0 at the top level; the scale bounds are [2, Q_level)
    for c, scale in ((top, float(params.q_primes[0])), (ct, serialize.MIN_SCALE), (ct, np.nextafter(q_level, 0))):
        assert load(serialize.dump(c.with_metadata(scale=float(scale)))).scale == float(scale)
    with pytest.raises(SerializationError):
        load(serialize.dump(ct.with_metadata(scale=float(q_level))))
    one_slot = ctx.encoder.encode([0.5], slots=1)
    back = load(serialize.dump(one_slot))
    assert back.slots == 1 and np.allclose(ctx.encoder.decode(back)[:1], 0.5, atol=1e-6)


@pytest.mark.parametrize("kind", ["plaintext", "ciphertext", "public_key", "relin_key", "galois_keys",
                                  "secret_key"])
def test_arrays_of_another_dtype_are_refused(kind):
    blob = serialize.dump(objects()[kind], include_secret=True)
    arrays = stored_arrays(blob)
    other = np.uint64 if arrays[0][1].dtype == np.int8 else np.int8
    swapped = [(arrays[0][0], arrays[0][1].astype(other))] + arrays[1:]
    with pytest.raises(SerializationError, match="expected|dtype"):
        load(repack(blob, swapped))
    with pytest.raises(SerializationError):
        load(reseal(blob, header_edit=lambda h: h["arrays"][0].update(dtype="<" + h["arrays"][0]["dtype"])))


def test_arrays_with_a_consistent_but_wrong_shape_or_unreferenced_are_refused():
    blob = serialize.dump(objects()["public_key"])
    (name, b), = stored_arrays(blob)
    for shape in (b.shape[::-1], (1,) + b.shape, (2 * b.shape[0], b.shape[1] // 2)):
        with pytest.raises(SerializationError):
            load(repack(blob, [(name, b.reshape(shape))]))
    with pytest.raises(SerializationError, match="belong to no part"):
        load(repack(blob, [(name, b), ("extra", b)]))


def galois_blob():
    return serialize.dump(objects()["galois_keys"])


def relabel(blob: bytes, index: int, element) -> bytes:
    """Entry ``index`` of a Galois key set relabelled ``element``, its array renamed to match."""
    arrays = stored_arrays(blob)
    old = header(blob)["meta"]["keys"][index]["galois_element"]
    renamed = [(f"b.{element}" if n == f"b.{old}" else n, a) for n, a in arrays]
    return repack(blob, renamed, lambda h: h["meta"]["keys"][index].update(galois_element=element))


@pytest.mark.parametrize("element", [2, 0, -7, 2048, 4097, True, 5.0, "5", None])
def test_galois_keys_with_an_invalid_element_are_refused(element):
    with pytest.raises(SerializationError):
        load(relabel(galois_blob(), 0, element))


def test_galois_keys_duplicated_swapped_or_mixed_with_a_relin_key_are_refused():
    blob = galois_blob()
    g0, g1 = (e["galois_element"] for e in header(blob)["meta"]["keys"])
    arrays = stored_arrays(blob)
    duplicate = repack(blob, [(f"b.{g1}", arrays[0][1]), (f"b.{g1}", arrays[1][1])],
                       lambda h: h["meta"]["keys"][0].update(galois_element=g1))
    with pytest.raises(SerializationError, match="twice"):
        load(duplicate)

    def swap_labels(h):
        keys = h["meta"]["keys"]
        keys[0]["galois_element"], keys[1]["galois_element"] = g1, g0

    with pytest.raises(SerializationError, match="order"):
        load(reseal(blob, header_edit=swap_labels))
    with pytest.raises(SerializationError):
        load(reseal(blob, header_edit=lambda h: h["meta"]["keys"][0].update(kind="relin", galois_element=None)))
    relin = serialize.dump(objects()["relin_key"])
    for edit in (lambda h: h["meta"].update(galois_element=5), lambda h: h["meta"].update(kind="galois"),
                 lambda h: h["meta"].update(galois_element=True)):
        with pytest.raises(SerializationError):
            load(reseal(relin, header_edit=edit))


def test_a_consistent_relabelling_of_galois_keys_is_not_detectable():
    """Documented limit (docs/ckks.md): swapping two keys' labels *and* arrays gives a well-formed set that
    only the secret key could tell apart; its holder only hurts their own rotations."""
    blob = galois_blob()
    keys = header(blob)["meta"]["keys"]
    g0, g1 = keys[0]["galois_element"], keys[1]["galois_element"]
    arrays = dict(stored_arrays(blob))

    def swap(h):
        swapped = [dict(keys[1], galois_element=g0), dict(keys[0], galois_element=g1)]
        h["meta"]["keys"] = swapped

    back = load(repack(blob, [(f"b.{g0}", arrays[f"b.{g1}"]), (f"b.{g1}", arrays[f"b.{g0}"])], swap))
    assert back.elements() == [g0, g1]
    np.testing.assert_array_equal(back[g0].b, objects()["galois_keys"][g1].b)


def test_hex_fields_must_be_lowercase_of_the_right_length():
    blob = serialize.dump(objects()["public_key"])
    key_id = header(blob)["meta"]["key_id"]
    for bad in (key_id.upper(), key_id[:-2], key_id + "00", "zz" * 16, 5):
        if bad == key_id:
            continue
        with pytest.raises(SerializationError):
            load(reseal(blob, header_edit=lambda h: h["meta"].update(key_id=bad)))


def test_a_sparse_secret_key_must_have_its_hamming_weight():
    from fhe_ckks.rlwe import KeyGenerator

    params = presets.get("INSECURE_BOOT_N12_QP1235_H32", allow_insecure=True)
    blob = serialize.dump(KeyGenerator(params, seed=bytes(32)).secret_key, include_secret=True)
    assert np.count_nonzero(serialize.load(blob, params, allow_insecure=True).coeffs) == 32
    (name, coeffs), = stored_arrays(blob)
    heavier = coeffs.copy()
    heavier[np.flatnonzero(coeffs == 0)[0]] = 1
    with pytest.raises(SerializationError, match="nonzero"):
        serialize.load(repack(blob, [(name, heavier)]), params, allow_insecure=True)


@pytest.mark.parametrize("edit", [
    lambda lit: lit.update(name=5), lambda lit: lit.update(sigma=float("nan")), lambda lit: lit.update(log_n=True),
    lambda lit: lit.update(log_q=[60.0, 40]), lambda lit: lit.pop("digits"), lambda lit: lit.update(bogus=1),
    lambda lit: lit.update(hamming_weight="32"), lambda lit: lit.update(log_p=5),
])
def test_parameter_literals_of_the_wrong_types_raise_typed_errors(edit):
    blob = serialize.dump(context(NAME).params)
    with pytest.raises(FheError):
        serialize.load(reseal(blob, header_edit=lambda h: edit(h["meta"]["literal"])), allow_insecure=True)
