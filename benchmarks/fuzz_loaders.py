"""Fuzzing every loader: serialized CKKS objects and the model file, mutated and loaded back.

    python benchmarks/fuzz_loaders.py [--json] [--trials N] [--seed S] [--kinds parameters,ciphertext,...]

For each kind a valid object is built on the toy preset ``INSECURE_N10_QP380_L5_S40`` (a small fused
CryptoFaceNet for the model file), serialized, and mutated ``--trials`` times by one of the families
below, drawn at random; each mutated input is loaded and the outcome classified:

* ``typed``: refused with the project's own error (:class:`fhe_ckks.errors.FheError` for the CKKS
  objects, :class:`cryptoface.errors.CryptoFaceError` for the model file);
* ``untyped``: refused with anything else (a bug: a caller cannot catch it as "bad input");
* ``accepted``: loaded although the mutation made it invalid (a bug), or loaded in a form that does not
  encode back to the mutated input (the loader silently normalized or ignored something);
* ``undetectable``: a mutation that by design no public check can see (a consistent relabelling of two
  Galois keys, a relin key relabelled, a slot count or scale rewritten within range, a model file edited
  and re-checksummed): the object loads, as documented in ``docs/ckks.md`` and ``docs/training.md``;
* ``valid``: a random change with the checksum recomputed that gave another well-formed object, which
  encodes back to exactly the mutated input (a residue changed but still reduced, a key id, ...);
* ``harmless``: loaded and equal to the original (a flipped byte the format does not read, e.g. a
  zip timestamp).

Families: byte flips with the checksum left as is and with it recomputed (so that the header and the
arrays are actually parsed), truncations, prefix rewrites, every header field rewritten with wrong types,
bools, negative, NaN, infinite, huge, tiny and deeply nested values, missing and extra fields, array
dtype swaps and shape lies (payload re-encoded to match), Galois label swaps and bad elements, a relin
key inside a Galois set, slot counts and scales rewritten within range.  For the model file: byte flips,
truncations, manifest rewrites (topology, input, normalization polynomial, thresholds, tensor entries)
with and without the checksum recomputed, tau x 10 and a weight x 1e6 without it, non-finite,
wrong-shape, wrong-dtype, missing and extra tensors, a pickled member, a foreign member, and ``.npy``
headers that lie about the shape or do not parse.  ``load_arguments`` tries ``load`` on values that are
not serialized bytes at all (a str, None, an int, a text stream).

The figures are counts; 0 ``untyped`` and 0 ``accepted`` is the goal (``tests/benchmarks/test_fuzz_loaders.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import struct
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import emit  # noqa: E402

from cryptoface.errors import CryptoFaceError  # noqa: E402
from cryptoface.model import (FusedBlock, FusedPatchCNN, FusedPatchNet, NormPolynomial, Threshold,  # noqa: E402
                              load_model, save_model)
from fhe_ckks import Encoder, Encryptor, FheError, KeyGenerator, presets, serialize  # noqa: E402
from fhe_ckks.nn import modelfile  # noqa: E402

PRESET = "INSECURE_N10_QP380_L5_S40"
OUTCOMES = ("typed", "untyped", "accepted", "undetectable", "valid", "harmless")
KINDS = ("parameters", "plaintext", "ciphertext", "public_key", "switching_key", "galois_keys",
         "encapsulation_keys", "secret_key", "model_file", "load_arguments")

#: Expectations a mutation carries: it made the input invalid; it is invisible by design; or it may
#: have given another well-formed object (then the loaded object must encode back to the input).
INVALID, UNDETECTABLE, MAYBE = "invalid", "undetectable", "maybe"

DEEP = object()      # stands for a 100,000-deep JSON list (written as text: json.dumps would recurse)
_DEEP_TEXT = "[" * 100_000 + "]" * 100_000
NAN, INF = float("nan"), float("inf")
GENERIC_BAD = [None, True, False, "x", [], {}, DEEP, NAN, -1, 10**30, 1.5]


@dataclass
class Mutation:
    data: Any
    expect: str
    family: str


# ----------------------------------------------------------------------------- serialized CKKS objects


def split(blob: bytes) -> tuple[int, dict, bytes]:
    """Version, header and payload of one serialized object."""
    _, version, hlen = struct.unpack_from("<8sHI", blob)
    return version, json.loads(blob[14:14 + hlen]), blob[14 + hlen:-32]


def seal(header: dict | str, payload: bytes, version: int = 1, magic: bytes = b"FHECKKS\x00") -> bytes:
    """Prefix, header, payload and a recomputed SHA-256: a mutation the checksum cannot catch."""
    text = header if isinstance(header, str) else encode_header(header)
    raw = text.encode()
    body = struct.pack("<8sHI", magic, version, len(raw)) + raw + payload
    return body + hashlib.sha256(body).digest()


def encode_header(header: dict) -> str:
    """Compact JSON as :func:`serialize.dump` writes it, with ``DEEP`` spliced in as text."""
    text = json.dumps(header, separators=(",", ":"), default=lambda o: "__DEEP__")
    return text.replace('"__DEEP__"', _DEEP_TEXT)


def arrays_of(header: dict, payload: bytes) -> dict[str, np.ndarray]:
    return {e["name"]: np.frombuffer(payload[e["offset"]:e["offset"] + e["nbytes"]], dtype="<" + e["dtype"])
            .reshape(e["shape"]) for e in header["arrays"]}


def repack(header: dict, arrays: dict[str, np.ndarray] | list[tuple[str, np.ndarray]]) -> bytes:
    """The header's array table rewritten for ``arrays`` (in order; pairs allow a repeated name), then sealed."""
    entries, chunks, offset = [], [], 0
    for name, arr in (arrays.items() if isinstance(arrays, dict) else arrays):
        raw = np.ascontiguousarray(arr).tobytes()
        entries.append({"name": name, "dtype": arr.dtype.str.lstrip("<>|="), "shape": list(arr.shape),
                        "offset": offset, "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    return seal({**header, "arrays": entries}, b"".join(chunks))


def leaf_paths(node, path=()) -> list[tuple]:
    """Paths to every value under ``node`` (dict keys and list indices), containers included."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append(path + (key,))
        out.extend(leaf_paths(value, path + (key,)))
    return out


def get_path(node, path):
    for key in path:
        node = node[key]
    return node


def set_path(node, path, value):
    get_path(node, path[:-1])[path[-1]] = value


def field_catalogue(name, value, ctx: dict) -> list:
    """Values that are wrong for the header field ``name`` (currently ``value``) whatever the object."""
    n, top = ctx["n"], ctx["max_level"]
    hexes = [] if not isinstance(value, str) else ["zz" * (len(value) // 2), value[:-2], value + "00",
                                                   value.upper() if value != value.upper() else "0x" + value]
    table = {
        "scale": [0.0, -1.0, 0.5, 1.0, 1e-300, 2.0**300, 1e308, INF, -INF, NAN, 2**40, "1e12",
                  ctx["q_top"] * 1.0, ctx["q_top"] * 2.0],
        "slots": [0, 3, 6, n, 2 * n, 2**64, 512.0, "512"],
        "size": [0, 1, 4, 2.0, "2"] + ([3] if value == 2 else [2]),
        "max_level": [top + 1, 2.5, "5", top - 1 if value == top else top],
        "weight": [0, n + 1, 8.0, "8"],
        "galois_element": [0, 2, -7, 2 * n, 2 * n + 1, 5.0, "5"],
        "kind": ["bogus", "galois", "relin", "encapsulation", "plaintext", "secret_key"],
        "key_id": hexes, "seed": hexes, "c1_seed": hexes or ["00" * 32],
        "params": hexes,
        "log_n": [0, 9, 11, 18, 10.0, "10"], "log_scale": [0, 30, 61, 40.0], "hamming_weight": [0, n + 1, 32, 2.5],
        "sigma": [0.0, -3.2, 3.3, 1e308, "3.2"], "digits": [0, 1, 7, 2.5], "name": [5, ""],
        "dtype": ["i1", "u8", "f8", "<u8", "u1", "O", "V8", "S8", ["u8"]],
        "shape": [[], [1], [-1], [2**62, 4], [True], [1.5]],
        "offset": [1, 2**64, 0.0], "nbytes": [0, 8, 2**64],
    }
    values = table.get(name, []) + GENERIC_BAD
    if name in ("c1_seed", "galois_element", "hamming_weight", "digits"):
        values = [v for v in values if v is not None]      # None is a legitimate value of these
    if name == "kind" and value in ("relin", "encapsulation"):
        values = [v for v in values if v not in ("relin", "encapsulation")]   # undetectable: see kind_mutation
    return [v for v in values if not (type(v) is type(value) and v == value)]


def header_field_mutation(rng, blob: bytes, ctx: dict) -> Mutation:
    """One header field (meta, literal, array entry or top level) set to a value wrong for it."""
    version, header, payload = split(blob)
    paths = leaf_paths(header)
    path = paths[rng.integers(len(paths))]
    name = next((k for k in reversed(path) if isinstance(k, str)), "")
    if isinstance(path[-1], int) and name in ("log_q", "log_p"):
        choices = [0, 8, 62, True, 60.0, None, "60"]
    else:
        choices = field_catalogue(name, get_path(header, path), ctx)
    set_path(header, path, choices[rng.integers(len(choices))])
    return Mutation(seal(header, payload, version), INVALID, f"field {'.'.join(map(str, path[-2:]))}")


def structure_mutation(rng, blob: bytes, ctx: dict) -> Mutation | None:
    """A field removed or added, or the header replaced by something that is not an object's header."""
    version, header, payload = split(blob)
    dicts = [p for p in [()] + leaf_paths(header) if isinstance(get_path(header, p), dict)]
    where = get_path(header, dicts[rng.integers(len(dicts))])
    choice = rng.integers(6)
    if choice == 0 and where:
        del where[list(where)[rng.integers(len(where))]]
        return Mutation(seal(header, payload, version), INVALID, "field removed")
    if choice == 1:
        where["bogus"] = 1
        return Mutation(seal(header, payload, version), INVALID, "field added")
    if choice == 2:
        return Mutation(seal(_DEEP_TEXT, payload, version), INVALID, "deep header")
    if choice == 3:
        return Mutation(seal("[]" if rng.integers(2) else '"x"', payload, version), INVALID, "header not an object")
    if choice == 4:
        return None if len(payload) < 8 else Mutation(seal(encode_header(header) + " " * 8, payload[:-8], version),
                                                      INVALID, "payload cut, header padded")
    return Mutation(seal(header, payload + bytes(8), version), INVALID, "trailing bytes")


def prefix_mutation(rng, blob: bytes, ctx: dict) -> Mutation:
    version, header, payload = split(blob)
    choice = rng.integers(4)
    if choice == 0:
        return Mutation(seal(header, payload, int(rng.choice([0, 2, 65535]))), INVALID, "version")
    if choice == 1:
        return Mutation(seal(header, payload, version, magic=b"FHECKKS\x01"), INVALID, "magic")
    data = bytearray(blob)
    data[10:14] = struct.pack("<I", int(rng.choice([0, 1, 2**32 - 1, len(blob), 1 << 24])))
    body = bytes(data[:-32])
    return Mutation(body + (hashlib.sha256(body).digest() if choice == 2 else data[-32:]), INVALID,
                    "header length")


def flip_mutation(rng, blob: bytes, ctx: dict, reseal: bool) -> Mutation:
    data = bytearray(blob)
    end = len(data) - 32 if reseal else len(data)
    data[rng.integers(end)] ^= int(rng.integers(1, 256))
    if reseal:
        body = bytes(data[:-32])
        return Mutation(body + hashlib.sha256(body).digest(), MAYBE, "byte flip, checksum recomputed")
    return Mutation(bytes(data), INVALID, "byte flip")


def truncation_mutation(rng, blob: bytes, ctx: dict) -> Mutation:
    cut = int(rng.integers(len(blob)))
    if rng.integers(2):
        return Mutation(blob[:cut], INVALID, "truncation")
    body = blob[:min(cut, len(blob) - 33)]
    return Mutation(body + hashlib.sha256(body).digest(), INVALID, "truncation, checksum recomputed")


def array_mutation(rng, blob: bytes, ctx: dict) -> Mutation | None:
    """One array stored under another dtype, or reshaped (same elements), the payload re-encoded to match so
    that offsets and lengths stay consistent."""
    _, header, payload = split(blob)
    arrays = arrays_of(header, payload)
    if not arrays:
        return None
    name = list(arrays)[rng.integers(len(arrays))]
    arr = arrays[name]
    if rng.integers(2):
        target = [np.int8, np.uint8, np.int64, np.float64, np.uint32, np.uint64][rng.integers(6)]
        if np.dtype(target) == arr.dtype:
            target = np.int8 if arr.dtype == np.uint64 else np.uint64
        return Mutation(repack(header, {**arrays, name: arr.astype(target)}), INVALID,
                        f"dtype {arr.dtype} -> {np.dtype(target)}")
    shapes = [arr.shape[::-1], (1,) + arr.shape, (arr.size,), arr.shape[:-1] + (2, arr.shape[-1] // 2),
              (2,) + arr.shape[:-1] + (arr.shape[-1] // 2,)]
    shapes = [s for s in shapes if s != arr.shape and math.prod(s) == arr.size]
    return Mutation(repack(header, {**arrays, name: arr.reshape(shapes[rng.integers(len(shapes))])}), INVALID,
                    "shape lie")


def galois_mutation(rng, blob: bytes, ctx: dict) -> Mutation:
    """Labels of a Galois key set: bad, duplicate or swapped elements; a relin key in the set."""
    version, header, payload = split(blob)
    arrays = arrays_of(header, payload)
    entries = header["meta"]["keys"]
    i, j = rng.choice(len(entries), 2, replace=False)
    gi, gj = entries[i]["galois_element"], entries[j]["galois_element"]
    choice = rng.integers(7)

    def relabel(entry, g):
        old = f"b.{entry['galois_element']}"
        entry["galois_element"] = g
        return {(f"b.{g}" if k == old else k): v for k, v in arrays.items()}

    if choice == 0:                                     # a bad element, the array renamed to match
        bad = [2, 0, -7, 2 * ctx["n"], 2 * ctx["n"] + 1, True, 5.0][rng.integers(7)]
        return Mutation(repack(header, relabel(entries[i], bad)), INVALID, "bad Galois element")
    if choice == 1:                                     # a duplicate element, each entry's array under its label
        originals = [e["galois_element"] for e in entries]
        entries[i]["galois_element"] = gj
        pairs = [(f"b.{e['galois_element']}", arrays[f"b.{g}"]) for e, g in zip(entries, originals)]
        return Mutation(repack(header, pairs), INVALID, "duplicate Galois element")
    if choice == 2:                                     # labels swapped in the metadata only
        entries[i]["galois_element"], entries[j]["galois_element"] = gj, gi
        if rng.integers(2):
            return Mutation(seal(header, payload), INVALID, "labels swapped, arrays not")
        header["meta"]["keys"] = sorted(entries, key=lambda e: e["galois_element"])
        return Mutation(seal(header, payload), UNDETECTABLE, "labels swapped and re-sorted, arrays not")
    if choice == 3:                                     # a relin key's entry in the set
        entries[i]["kind"] = "relin"
        entries[i]["galois_element"] = None
        return Mutation(repack(header, {(k if k != f"b.{gi}" else "b.None"): v for k, v in arrays.items()}),
                        INVALID, "relin key in a Galois set")
    if choice == 4:                                     # an extra array no entry names
        return Mutation(repack(header, {**arrays, "b.99": arrays[f"b.{gi}"]}), INVALID, "unreferenced array")
    if choice == 5:                                     # consistent swap: labels and arrays
        entries[i]["galois_element"], entries[j]["galois_element"] = gj, gi
        swapped = {f"b.{gj}" if k == f"b.{gi}" else f"b.{gi}" if k == f"b.{gj}" else k: v for k, v in arrays.items()}
        header["meta"]["keys"] = sorted(entries, key=lambda e: e["galois_element"])
        ordered = {f"b.{e['galois_element']}": swapped[f"b.{e['galois_element']}"] for e in header["meta"]["keys"]}
        return Mutation(repack(header, ordered), UNDETECTABLE, "consistent label swap")
    fresh = next(g for g in range(3, 2 * ctx["n"], 2) if g not in {e["galois_element"] for e in entries})
    renamed = relabel(entries[i], fresh)
    header["meta"]["keys"] = sorted(entries, key=lambda e: e["galois_element"])
    ordered = {f"b.{e['galois_element']}": renamed[f"b.{e['galois_element']}"] for e in header["meta"]["keys"]}
    return Mutation(repack(header, ordered), UNDETECTABLE, "consistent relabel to another element")


def slots_mutation(rng, blob: bytes, ctx: dict) -> Mutation:
    """Another power-of-two slot count: no public check can see it (a decrypted plaintext is dense whatever
    its slot count, and a ciphertext hides its message)."""
    version, header, payload = split(blob)
    header["meta"]["slots"] = int(2 ** rng.integers(0, int(math.log2(header["meta"]["slots"]))))
    return Mutation(seal(header, payload, version), UNDETECTABLE, "slot count rewritten within range")


def scale_mutation(rng, blob: bytes, ctx: dict) -> Mutation:
    """The scale multiplied by 2^k within the range: no public check can see it."""
    version, header, payload = split(blob)
    header["meta"]["scale"] *= 2.0 ** int(rng.integers(-8, 9) or 1)
    return Mutation(seal(header, payload, version), UNDETECTABLE, "scale rewritten within range")


def kind_mutation(rng, blob: bytes, ctx: dict) -> Mutation:
    """A relin key relabelled as an encapsulation (or Galois) key, consistently."""
    version, header, payload = split(blob)
    header["meta"]["kind"] = "encapsulation"
    return Mutation(seal(header, payload, version), UNDETECTABLE, "relin key relabelled")


def ckks_families(kind: str) -> list[tuple[str, Callable]]:
    fams = [("field", header_field_mutation), ("structure", structure_mutation), ("prefix", prefix_mutation),
            ("flip", lambda r, b, c: flip_mutation(r, b, c, False)),
            ("flip_resealed", lambda r, b, c: flip_mutation(r, b, c, True)),
            ("truncation", truncation_mutation), ("array", array_mutation), ("array", array_mutation)]
    if kind == "galois_keys":
        fams += [("galois", galois_mutation)] * 2
    if kind in ("plaintext", "ciphertext"):
        fams += [("slots", slots_mutation), ("scale", scale_mutation)]
    if kind == "switching_key":
        fams.append(("kind", kind_mutation))
    return fams


def ckks_objects() -> tuple[dict[str, Any], Any]:
    params = presets.get(PRESET, allow_insecure=True)
    kg = KeyGenerator(params, seed=bytes(range(32)))
    rng = np.random.default_rng(5)
    z = rng.uniform(-1, 1, params.slots) + 1j * rng.uniform(-1, 1, params.slots)
    pt = Encoder(params).encode(z, level=3)
    galois = kg.galois_keys([1, 3], conjugate=True)
    kg.galois_keys([5], max_level=2, into=galois)
    return {
        "parameters": params,
        "plaintext": pt,
        "ciphertext": Encryptor(params, kg.public_key(), seed=bytes(32)).encrypt(pt),
        "seeded_ciphertext": Encryptor(params, kg.secret_key, seed=bytes([1]) * 32).encrypt(pt),
        "public_key": kg.public_key(),
        "switching_key": kg.relin_key(),
        "galois_keys": galois,
        "encapsulation_keys": kg.encapsulation_keys(8),
        "secret_key": kg.secret_key,
    }, params


# ----------------------------------------------------------------------------- the model file


def toy_model() -> FusedPatchCNN:
    """16x16 inputs in four 8x8 patches; an identity block and a stride-2 block; an 8-dim embedding."""
    rng = np.random.default_rng(0)
    small = lambda *shape, s=0.12: rng.normal(size=shape) * s  # noqa: E731
    nets = []
    for _ in range(4):
        blocks = [FusedBlock(small(2), small(2), small(2, 2, 3, 3), 1, small(2), small(2), small(2, 2, 3, 3),
                             shortcut_scale=rng.uniform(0.3, 0.6, 2)),
                  FusedBlock(small(2), small(2), small(4, 2, 3, 3), 2, small(4), small(4), small(4, 4, 3, 3),
                             shortcut_weight=small(4, 2, 1, 1), shortcut_bias=small(4))]
        nets.append(FusedPatchNet(small(2, 3, 3, 3, s=0.3), blocks, small(4), small(4), small(8, 16, s=0.5),
                                  small(8, s=0.1)))
    model = FusedPatchCNN(16, 8, nets, name="toy")
    e = model.embed(rng.uniform(-1, 1, (64, 3, 16, 16)))
    model.norm = NormPolynomial.fit(np.sum(e ** 2, axis=1))
    d = np.sum((model.norm.normalize(e[0::2]) - model.norm.normalize(e[1::2])) ** 2, axis=1)
    model.thresholds["lfw"] = Threshold(float(np.median(d)), model.norm, {6: (float(np.median(d)), model.norm)},
                                        accuracy=0.5)
    model.info = {"activation_range": {"images": 64, "median": 1.0, "p999": 2.0, "max": 2.5, "non_finite": 0}}
    return model


def npz_members(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def manifest_of(members) -> dict:
    return json.loads(members[modelfile.MANIFEST_KEY].tobytes())


#: The manifest checksum member (None under format version 1, so that this script also measures older code).
CHECKSUM_KEY = getattr(modelfile, "CHECKSUM_KEY", None)


def model_seal(members: dict, manifest: dict, digests: bool = True, checksum: bool = True,
               raw_manifest: bytes | None = None) -> bytes:
    """The npz with ``manifest`` (tensor digests recomputed when ``digests``; the manifest checksum,
    where the format has one, recomputed when ``checksum``)."""
    tensors = {k: v for k, v in members.items() if k not in (modelfile.MANIFEST_KEY, CHECKSUM_KEY)}
    if digests:
        for name, arr in tensors.items():
            entry = manifest["tensors"].setdefault(name, {})
            entry.update(shape=list(arr.shape), dtype=arr.dtype.name,
                         sha256=hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest())
    blob = raw_manifest if raw_manifest is not None else json.dumps(manifest, sort_keys=True).encode()
    out = {**tensors, modelfile.MANIFEST_KEY: np.frombuffer(blob, np.uint8)}
    if CHECKSUM_KEY is not None:
        old = members.get(CHECKSUM_KEY, np.zeros(32, np.uint8))
        out[CHECKSUM_KEY] = np.frombuffer(hashlib.sha256(blob).digest(), np.uint8) if checksum else old
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return buf.getvalue()


#: Values wrong for each manifest field (besides :data:`TYPE_BAD`; :data:`COUNT_BAD` for the counts too).
MODEL_BAD = {
    "pool_output": [[1, 1], [0, 0], [3, 3], [4, 4], [2], [2, 2, 2], [-2, -2], [2.0, 2.0], [True, True]],
    "patch_size": [0, -8, 7, 16, 3, 8.0], "num_patches": [0, 3, 5, 16, 10**9, 4.0], "grid": [0, 1, 3, 2.0],
    "embedding_dim": [0, 7, 9], "size": [0, 15, 32, -16, 16.0], "in": [1, 3, 5, 0], "out": [1, 3, 5, 0],
    "stride": [0, 3, 2.0], "shortcut": ["bogus", "conv", "scale"], "arch": ["bogus"], "channels": [1, 4],
    "color": ["BGR"], "layout": ["HWC"], "blocks": [[]], "per_fold": [{"x": 1}, []],
    "tau": [0.0, -1.0, INF, -INF, 1e6, 1e300], "lo": [-1.0, 0.0, 1e300, INF], "hi": [-1.0, 0.0, INF],
    "coefficients": [[], [NAN, 0.0, 0.0], [INF, 1.0, 1.0], ["x"], [1e308] * 3, [0.0]],
    "max_relative_error": [-1.0, INF],
    "accuracy": [-0.5, 1.5, INF], "kind": ["bogus"], "schema": ["bogus"], "schema_version": [2, 0, "1"],
    "format_version": [0, 3, "1"], "format": ["bogus"], "dtype": ["float32", "int64", "object"],
    "sha256": ["00" * 32, "x"], "name": [5], "info": [5, "x"], "thresholds": [5, "x"],
}
TYPE_BAD = [None, True, False, [], {}, NAN]
COUNT_BAD = [-1, 10**30, 1.5, "x"]
#: Fields that hold a count or a label: any number or string not in MODEL_BAD is as wrong as the type.
COUNT_FIELDS = {"pool_output", "patch_size", "num_patches", "grid", "embedding_dim", "size", "in", "out", "stride",
                "channels", "schema_version", "format_version", "shape", "accuracy", "shortcut", "arch", "kind",
                "schema", "format", "dtype", "sha256", "color", "layout", "blocks", "input", "topology", "conv0",
                "per_fold", "info", "thresholds"}
#: Free text (documentation only) and provenance: not checked beyond their type.
FREE_FIELDS = {"alignment", "normalisation", "range", "info"}


def model_field_choices(path: tuple, value) -> list:
    name = next((k for k in reversed(path) if isinstance(k, str)), "")
    choices = MODEL_BAD.get(name, []) + TYPE_BAD + (COUNT_BAD if name in COUNT_FIELDS else [])
    if path == ("schema", "norm"):
        choices = [v for v in choices if v is not None]          # the model's own norm is optional
    if name in ("info", "per_fold", "thresholds"):
        choices = [v for v in choices if v != {}]                # empty is legitimate
    if name == "name":
        choices = [v for v in choices if not isinstance(v, str)]
    return [v for v in choices if not (type(v) is type(value) and v == value)]


def model_field_mutation(rng, data: bytes, ctx: dict, sealed: bool = True) -> Mutation:
    """One manifest field (topology, input, norm, thresholds, a tensor entry, ...) set to a wrong value."""
    members = npz_members(data)
    manifest = manifest_of(members)
    paths = [p for p in leaf_paths(manifest) if (p[0] != "tensors" or len(p) == 3)
             and (p == ("schema", "info") or not FREE_FIELDS & {k for k in p if isinstance(k, str)})]
    path = paths[rng.integers(len(paths))]
    choices = model_field_choices(path, get_path(manifest, path))
    set_path(manifest, path, choices[rng.integers(len(choices))])
    blob = json.dumps(manifest, sort_keys=True).encode()
    family = f"manifest {'.'.join(map(str, path[-2:]))}" + ("" if sealed else ", checksum not recomputed")
    return Mutation(model_seal(members, manifest, digests=False, checksum=sealed, raw_manifest=blob), INVALID,
                    family)


def model_tensor_mutation(rng, data: bytes, ctx: dict) -> Mutation:
    """A tensor made non-finite, of another shape or dtype, removed, or added (checksums recomputed)."""
    members = npz_members(data)
    manifest = manifest_of(members)
    names = sorted(manifest["tensors"])
    name = names[rng.integers(len(names))]
    arr = members[name]
    choice = rng.integers(6)
    if choice == 0:
        bad = arr.copy()
        bad.flat[rng.integers(bad.size)] = [NAN, INF, -INF][rng.integers(3)]
        members[name], family = bad, "non-finite weight"
    elif choice == 1:
        members[name], family = np.concatenate([arr.reshape(-1), [0.0]]).reshape(-1), "wrong-shape tensor"
    elif choice == 2:
        members[name], family = arr.reshape(arr.shape[::-1] if arr.ndim > 1 else (1, -1)), "transposed shape"
    elif choice == 3:
        members[name], family = arr.astype([np.float32, np.int64][rng.integers(2)]), "tensor dtype"
    elif choice == 4:
        del members[name]
        del manifest["tensors"][name]
        family = "missing tensor"
    else:
        members["p0.extra"], family = np.zeros(3), "extra tensor"
    return Mutation(model_seal(members, manifest), INVALID, family)


def model_unsealed_edit(rng, data: bytes, ctx: dict) -> Mutation:
    """tau x 10 or one weight x 1e6, the tensor digest updated but not the manifest's checksum."""
    members = npz_members(data)
    manifest = manifest_of(members)
    if rng.integers(2):
        manifest["schema"]["thresholds"]["lfw"]["tau"] *= 10
        return Mutation(model_seal(members, manifest, checksum=False), INVALID, "tau x 10, checksum kept")
    name = sorted(manifest["tensors"])[rng.integers(len(manifest["tensors"]))]
    members[name] = members[name].copy()
    members[name].flat[0] *= 1e6
    return Mutation(model_seal(members, manifest, checksum=False), INVALID, "weight x 1e6, checksum kept")


def model_resealed_edit(rng, data: bytes, ctx: dict) -> Mutation:
    """A weight changed (x 1e6, or one random bit) with every checksum recomputed."""
    members = npz_members(data)
    manifest = manifest_of(members)
    name = sorted(manifest["tensors"])[rng.integers(len(manifest["tensors"]))]
    arr = members[name].copy()
    k = rng.integers(arr.size)
    if rng.integers(2):
        arr.flat[k] *= 1e6
        members[name] = arr
        return Mutation(model_seal(members, manifest), UNDETECTABLE, "weight x 1e6, resealed")
    arr.view(np.uint64).flat[k] ^= np.uint64(1) << np.uint64(rng.integers(64))
    members[name] = arr
    return Mutation(model_seal(members, manifest), INVALID if not np.isfinite(arr.flat[k]) else MAYBE,
                    "weight bit flip, resealed")


def model_container_mutation(rng, data: bytes, ctx: dict) -> Mutation:
    """Pickled or foreign members, an ``.npy`` header lying about its shape, a manifest that is not JSON."""
    members = npz_members(data)
    manifest = manifest_of(members)
    choice = rng.integers(5)
    if choice == 0:                                   # an object array: np.save pickles it
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, src.read(info))
            inner = io.BytesIO()
            np.save(inner, np.array([{"x": 1}], dtype=object), allow_pickle=True)
            dst.writestr("p0.pickled.npy", inner.getvalue())
        return Mutation(buf.getvalue(), INVALID, "pickled member")
    if choice == 1:                                   # an .npy header lying about the shape, or garbled
        name = sorted(manifest["tensors"])[rng.integers(len(manifest["tensors"]))]
        shape = [(10**12,), (members[name].size + 1,), ()][rng.integers(3)]
        return Mutation(_rewrite_member(data, name + ".npy", lambda raw: _npy_with_header(raw, shape, rng)),
                        INVALID, "npy header lie")
    if choice == 2:
        return Mutation(_rewrite_member(data, "readme.txt", lambda raw: b"hello", add=True), INVALID,
                        "foreign member")
    if choice == 3:
        raw = bytearray(json.dumps(manifest, sort_keys=True).encode())
        raw[rng.integers(len(raw))] ^= int(rng.integers(1, 256))
        return Mutation(model_seal(members, manifest, digests=False, raw_manifest=bytes(raw)), MAYBE,
                        "manifest byte flip, resealed")
    return Mutation(model_seal(members, manifest, digests=False, raw_manifest=b"[" * 100_000 + b"]" * 100_000),
                    INVALID, "deep manifest")


def _npy_with_header(raw: bytes, shape: tuple, rng) -> bytes:
    """The member's data under a header claiming ``shape``, or (one time in two) a garbled header."""
    header_len = struct.unpack_from("<H", raw, 8)[0]
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': %r, }" % (shape,)
    if rng.integers(2):
        garbled = bytearray(text.encode())
        for _ in range(3):
            garbled[rng.integers(len(garbled))] = int(rng.integers(0, 128))
        text = garbled.decode("latin-1")
    head = text.encode("latin-1").ljust(header_len - 1) + b"\n"
    return raw[:8] + struct.pack("<H", len(head)) + head + raw[10 + header_len:]


def _rewrite_member(data: bytes, name: str, edit, add: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            raw = src.read(info)
            dst.writestr(info.filename, edit(raw) if info.filename == name else raw)
        if add:
            dst.writestr(name, edit(b""))
    return buf.getvalue()


def model_families() -> list[tuple[str, Callable]]:
    flip = lambda r, d, c: Mutation(_flip(r, d), INVALID, "byte flip")  # noqa: E731
    trunc = lambda r, d, c: Mutation(d[:int(r.integers(len(d)))], INVALID, "truncation")  # noqa: E731
    return [("flip", flip), ("flip", flip), ("truncation", trunc), ("field", model_field_mutation),
            ("field", model_field_mutation), ("field_unsealed", lambda r, d, c: model_field_mutation(r, d, c, False)),
            ("tensor", model_tensor_mutation), ("unsealed", model_unsealed_edit), ("resealed", model_resealed_edit),
            ("container", model_container_mutation)]


def _flip(rng, data: bytes) -> bytes:
    out = bytearray(data)
    out[rng.integers(len(out))] ^= int(rng.integers(1, 256))
    return bytes(out)


# ----------------------------------------------------------------------------- running and classifying


@dataclass
class Target:
    """One kind: its valid bytes, how to load them, the error base that counts as typed, the mutations,
    and how to tell whether a loaded object encodes back to the input (``same_as``)."""

    kind: str
    data: Any
    load: Callable[[Any], Any]
    typed: type
    families: list[tuple[str, Callable]]
    same_as: Callable[[Any, Any], bool]
    ctx: dict


def ckks_targets(kinds) -> list[Target]:
    objs, params = ckks_objects()
    ctx = {"n": params.n, "max_level": params.max_level,
           "q_top": float(math.prod(params.q_primes))}

    def load(data):
        return serialize.load(data, params, allow_insecure=True)

    def same(obj, data):
        return serialize.dump(obj, include_secret=True) == data

    out = []
    for kind in kinds:
        if kind not in objs:
            continue
        sources = [objs[kind]] + ([objs["seeded_ciphertext"]] if kind == "ciphertext" else [])
        blobs = [serialize.dump(o, include_secret=True) for o in sources]
        out.append(Target(kind, blobs, load, FheError, ckks_families(kind), same, ctx))
    return out


def model_target(tmp: Path) -> Target:
    path = save_model(toy_model(), tmp / "valid.model.npz")
    reference = load_model(path)

    def load(data):
        p = tmp / "fuzz.model.npz"
        p.write_bytes(data)
        return load_model(p)

    def same(model, data):
        again = save_model(model, tmp / "again.model.npz")
        a, b = npz_members(again.read_bytes()), npz_members(data)
        ma, mb = manifest_of(a), manifest_of(b)
        return (json.dumps(ma["schema"], sort_keys=True) == json.dumps(mb["schema"], sort_keys=True)
                and set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in ma["tensors"]))

    target = Target("model_file", [path.read_bytes()], load, CryptoFaceError, model_families(), same, {})
    target.ctx["reference"] = reference
    return target


def arguments_target() -> Target:
    params = presets.get(PRESET, allow_insecure=True)
    cases = ["FHECKKS", None, 5, -1, 1.5, [1, 2], {}, io.StringIO("text"), object(), b"", bytearray(3)]

    def family(rng, data, ctx):
        return Mutation(cases[rng.integers(len(cases))], INVALID, "not serialized bytes")

    return Target("load_arguments", [b"unused"], lambda x: serialize.load(x, params), FheError,
                  [("argument", family)], lambda obj, data: False, {})


def classify(target: Target, mutation: Mutation, original) -> str:
    try:
        obj = target.load(mutation.data)
    except target.typed:
        return "typed"
    except Exception:  # noqa: BLE001 - anything else is what this harness counts
        return "untyped"
    if target.kind == "model_file" and _encodes_as(target, obj, original):
        return "harmless"
    if mutation.expect == UNDETECTABLE:
        return "undetectable"
    if mutation.expect == MAYBE and _encodes_as(target, obj, mutation.data):
        return "valid"
    return "accepted"


def _encodes_as(target: Target, obj, data) -> bool:
    """Whether ``obj`` encodes back to ``data`` (False where an accepted object cannot even be written)."""
    try:
        return target.same_as(obj, data)
    except Exception:  # noqa: BLE001
        return False


def fuzz(target: Target, trials: int, rng: np.random.Generator) -> dict[str, Any]:
    counts: Counter = Counter()
    bad: Counter = Counter()
    done = 0
    while done < trials:
        original = target.data[rng.integers(len(target.data))]
        name, family = target.families[rng.integers(len(target.families))]
        mutation = family(rng, original, target.ctx)
        if mutation is None or (isinstance(mutation.data, bytes) and mutation.data == original):
            continue
        outcome = classify(target, mutation, original)
        counts[outcome] += 1
        if outcome in ("untyped", "accepted"):
            bad[f"{outcome}: {mutation.family}"] += 1
        done += 1
    return {**{k: counts.get(k, 0) for k in OUTCOMES}, "failures": dict(bad.most_common(12))}


def run(trials: int, seed: int, kinds=KINDS) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets = ckks_targets(kinds)
        if "model_file" in kinds:
            targets.append(model_target(Path(tmp)))
        if "load_arguments" in kinds:
            targets.append(arguments_target())
        for target in targets:
            results[target.kind] = fuzz(target, trials, rng)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300, help="mutations per kind (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default %(default)s)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
    results = run(args.trials, args.seed, kinds)
    totals = {k: sum(r[k] for r in results.values()) for k in OUTCOMES}
    record = {"trials_per_kind": args.trials, "seed": args.seed, "preset": PRESET, "kinds": results,
              "totals": totals}
    if args.json:
        emit(record, True)
    else:
        print(f"{'kind':<20}" + "".join(f"{o:>13}" for o in OUTCOMES))
        for kind, r in results.items():
            print(f"{kind:<20}" + "".join(f"{r[o]:>13}" for o in OUTCOMES))
            for failure, count in r["failures"].items():
                print(f"    {count:>4}  {failure}")
        print(f"{'total':<20}" + "".join(f"{totals[o]:>13}" for o in OUTCOMES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
