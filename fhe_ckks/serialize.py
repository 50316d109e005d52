"""A versioned, self-describing binary format for every CKKS object (no pickle).

Layout of one serialized object::

    b"FHECKKS\\0"                  8 bytes, magic
    version                       uint16 little-endian (currently 1)
    header length H               uint32 little-endian
    header                        H bytes of UTF-8 JSON: kind, parameter
                                  fingerprint, metadata, and for each array
                                  its name, dtype, shape, offset and length
    payload                       the arrays' raw little-endian bytes
    sha256                        32 bytes, digest of everything before it

Kinds: ``parameters``, ``plaintext``, ``ciphertext``, ``public_key``,
``switching_key``, ``galois_keys``, ``encapsulation_keys`` (bootstrapping's
sparse-secret encapsulation) and ``secret_key`` (written only with
``include_secret=True``).  Uniform polynomials are written as their 32-byte
seeds: public and evaluation keys, and fresh symmetric ciphertexts, take about
half the space of their expanded form.

:func:`load` checks, in this order: magic, version, length, checksum, header,
kind, that the object belongs to the given parameters (fingerprint), array
bounds, dtypes and shapes, and that every residue is reduced modulo its prime.
Any failure raises :class:`~fhe_ckks.errors.SerializationError` (or
:class:`~fhe_ckks.errors.KeyMismatchError` for other parameters); nothing is
returned half-checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from typing import Any, BinaryIO

import numpy as np

from .ckks.ciphertext import Ciphertext, Plaintext
from .errors import FheError, KeyMismatchError, SerializationError
from .rlwe.keys import EncapsulationKeys, GaloisKeys, PublicKey, SecretKey, SwitchingKey
from .rlwe.params import Parameters, ParametersLiteral

__all__ = ["dump", "load", "FORMAT_VERSION"]

MAGIC = b"FHECKKS\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_DIGEST = 32
_MAX_HEADER = 1 << 24


def _encode(kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], fingerprint: bytes | None) -> bytes:
    entries, chunks, offset = [], [], 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        entries.append({"name": name, "dtype": arr.dtype.str.lstrip("<>|="), "shape": list(arr.shape),
                        "offset": offset, "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps({"kind": kind, "params": fingerprint.hex() if fingerprint else None,
                         "meta": meta, "arrays": entries}, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + b"".join(chunks)
    return body + hashlib.sha256(body).digest()


def dump(obj, fp: BinaryIO | None = None, *, include_secret: bool = False) -> bytes:
    """Serialize ``obj``; write it to ``fp`` when given; return the bytes.

    Raises:
        SerializationError: for a secret key without ``include_secret=True``,
            or an object of an unsupported type.
    """
    if isinstance(obj, Parameters):
        lit = obj.literal
        data = _encode("parameters", {"literal": {
            "log_n": lit.log_n, "log_q": list(lit.log_q), "log_p": list(lit.log_p), "log_scale": lit.log_scale,
            "hamming_weight": lit.hamming_weight, "sigma": float(lit.sigma), "digits": lit.digits,
            "name": lit.name}}, {}, obj.fingerprint)
    elif isinstance(obj, Plaintext):
        data = _encode("plaintext", {"scale": obj.scale, "slots": obj.slots}, {"poly": obj.poly},
                       obj.params_fingerprint)
    elif isinstance(obj, Ciphertext):
        meta = {"scale": obj.scale, "slots": obj.slots, "key_id": obj.key_id.hex(), "size": obj.size,
                "c1_seed": obj.c1_seed.hex() if obj.c1_seed else None}
        arrays = {"data": obj.data[:1] if obj.c1_seed else obj.data}
        data = _encode("ciphertext", meta, arrays, obj.params_fingerprint)
    elif isinstance(obj, PublicKey):
        data = _encode("public_key", {"key_id": obj.key_id.hex(), "seed": obj.seed.hex()}, {"b": obj.b},
                       obj.params.fingerprint)
    elif isinstance(obj, SwitchingKey):
        data = _encode("switching_key", _swk_meta(obj), {"b": obj.b}, obj.params.fingerprint)
    elif isinstance(obj, GaloisKeys):
        keys = [obj.keys[g] for g in obj.elements()]
        data = _encode("galois_keys", {"key_id": obj.key_id.hex(), "keys": [_swk_meta(k) for k in keys]},
                       {f"b.{k.galois_element}": k.b for k in keys}, obj.params.fingerprint)
    elif isinstance(obj, EncapsulationKeys):
        data = _encode("encapsulation_keys", {"key_id": obj.key_id.hex(), "weight": obj.weight,
                                              "seed": obj.seed.hex(), "up": _swk_meta(obj.up)},
                       {"down_b": obj.down_b, "up_b": obj.up.b}, obj.params.fingerprint)
    elif isinstance(obj, SecretKey):
        if not include_secret:
            raise SerializationError("refusing to serialize a secret key without include_secret=True")
        data = _encode("secret_key", {"key_id": obj.key_id.hex()}, {"coeffs": obj.coeffs},
                       obj.params.fingerprint)
    else:
        raise SerializationError(f"cannot serialize a {type(obj).__name__}")
    if fp is not None:
        fp.write(data)
    return data


def _swk_meta(key: SwitchingKey) -> dict[str, Any]:
    return {"key_id": key.key_id.hex(), "kind": key.kind, "galois_element": key.galois_element,
            "seed": key.seed.hex(), "max_level": key.max_level}


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


def _parse(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if len(data) < _PREFIX.size + _DIGEST:
        raise SerializationError(f"truncated: {len(data)} bytes")
    magic, version, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SerializationError("not an fhe_ckks object (bad magic)")
    if version != FORMAT_VERSION:
        raise SerializationError(f"unsupported format version {version} (this library reads {FORMAT_VERSION})")
    if hlen > _MAX_HEADER or _PREFIX.size + hlen + _DIGEST > len(data):
        raise SerializationError("truncated or corrupted header length")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SerializationError("checksum mismatch: the data is truncated or corrupted")
    try:
        header = json.loads(body[_PREFIX.size:_PREFIX.size + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError(f"unreadable header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise SerializationError("malformed header")
    payload = memoryview(body)[_PREFIX.size + hlen:]
    arrays: dict[str, np.ndarray] = {}
    used = 0
    for entry in header["arrays"]:
        try:
            name, dtype, shape = entry["name"], np.dtype(entry["dtype"]), tuple(int(x) for x in entry["shape"])
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"malformed array entry: {exc}") from None
        if dtype not in (np.dtype(np.uint64), np.dtype(np.int8)):
            raise SerializationError(f"array {name}: unexpected dtype {dtype}")
        if any(d < 0 for d in shape) or nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize \
                or offset != used or offset + nbytes > len(payload):
            raise SerializationError(f"array {name}: inconsistent shape, offset or length")
        arrays[name] = np.frombuffer(payload[offset:offset + nbytes], dtype=dtype.newbyteorder("<")) \
            .astype(dtype).reshape(shape)
        used += nbytes
    if used != len(payload):
        raise SerializationError("trailing bytes after the arrays")
    return header, arrays


def _meta(header: dict, key: str, kind: type):
    meta = header.get("meta")
    if not isinstance(meta, dict) or key not in meta or not isinstance(meta[key], kind) \
            or isinstance(meta[key], bool) and kind is not bool:
        raise SerializationError(f"missing or invalid field {key!r}")
    return meta[key]


def _hex(header: dict, key: str, length: int) -> bytes:
    try:
        value = bytes.fromhex(_meta(header, key, str))
    except ValueError:
        raise SerializationError(f"field {key!r} is not hex") from None
    if len(value) != length:
        raise SerializationError(f"field {key!r} must be {length} bytes")
    return value


def _check_reduced(arr: np.ndarray, moduli: np.ndarray, name: str) -> None:
    """Every limb (axis -2) of ``arr`` below its prime."""
    limbs = arr.shape[-2]
    bounds = moduli[:limbs].reshape((limbs, 1))
    if np.any(arr >= bounds):
        raise SerializationError(f"array {name}: a residue is not reduced modulo its prime")


def _want_shape(arr: np.ndarray, shape: tuple, name: str) -> None:
    if arr.shape != shape:
        raise SerializationError(f"array {name}: shape {arr.shape}, expected {shape}")


def load(source: bytes | bytearray | memoryview | BinaryIO, params: Parameters | None = None, *,
         allow_insecure: bool = False):
    """Deserialize one object.

    Args:
        source: bytes or a binary file object.
        params: the parameters the object must belong to (not needed for
            ``parameters`` objects).
        allow_insecure: allow loading an ``INSECURE_`` parameter set.

    Raises:
        SerializationError: truncated, corrupted or malformed input.
        KeyMismatchError: the object belongs to other parameters.
    """
    data = source.read() if isinstance(source, (io.IOBase,)) or hasattr(source, "read") else bytes(source)
    try:
        return _load(bytes(data), params, allow_insecure)
    except FheError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - defensive
        raise SerializationError(f"malformed object: {exc}") from None


def _load(data: bytes, params: Parameters | None, allow_insecure: bool):
    header, arrays = _parse(data)
    kind = header.get("kind")
    if kind == "parameters":
        lit = _meta(header, "literal", dict)
        try:
            literal = ParametersLiteral(**lit)
        except TypeError as exc:
            raise SerializationError(f"invalid parameter literal: {exc}") from None
        out = Parameters.from_literal(literal, allow_insecure=allow_insecure)
        if out.fingerprint.hex() != header.get("params"):
            raise SerializationError("parameter fingerprint does not match the literal")
        return out
    if kind not in {"plaintext", "ciphertext", "public_key", "switching_key", "galois_keys", "encapsulation_keys",
                    "secret_key"}:
        raise SerializationError(f"unknown object kind {kind!r}")
    if not isinstance(params, Parameters):
        raise SerializationError(f"loading a {kind} needs the Parameters it belongs to")
    if header.get("params") != params.fingerprint.hex():
        raise KeyMismatchError(f"this {kind} belongs to other parameters")
    n, big_l = params.n, len(params.q_primes)
    rows_qp = big_l + len(params.p_primes)
    q_moduli, qp_moduli = params.moduli_qp[:big_l], params.moduli_qp

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            raise SerializationError(f"missing array {name}")
        return arrays[name]

    if kind == "plaintext":
        poly = array("poly")
        if poly.ndim != 2 or not 1 <= poly.shape[0] <= big_l or poly.shape[1] != n:
            raise SerializationError(f"plaintext shape {poly.shape} does not fit these parameters")
        _check_reduced(poly, q_moduli, "poly")
        return Plaintext(poly.copy(), _scale(header), _slots(header, params), params.fingerprint)
    if kind == "ciphertext":
        stored = array("data")
        size = _meta(header, "size", int)
        seed_hex = header["meta"].get("c1_seed")
        if stored.ndim != 3 or not 1 <= stored.shape[1] <= big_l or stored.shape[2] != n or not 2 <= size <= 3:
            raise SerializationError(f"ciphertext shape {stored.shape} does not fit these parameters")
        _check_reduced(stored, q_moduli, "data")
        if seed_hex is not None:
            seed = _hex(header, "c1_seed", 32)
            if stored.shape[0] != 1 or size != 2:
                raise SerializationError("a seeded ciphertext stores exactly c0")
            c1 = params.ring_q.sample_uniform(seed, stored.shape[1], domain=b"fhe_ckks.ct")
            full = np.stack([stored[0], c1])
        else:
            seed = None
            if stored.shape[0] != size:
                raise SerializationError("ciphertext size does not match its data")
            full = stored.copy()
        return Ciphertext(full, _scale(header), _slots(header, params), _hex(header, "key_id", 16),
                          params.fingerprint, seed)
    if kind == "public_key":
        b = array("b")
        _want_shape(b, (big_l, n), "b")
        _check_reduced(b, q_moduli, "b")
        return PublicKey(params, _hex(header, "key_id", 16), _hex(header, "seed", 32), b.copy())
    if kind == "switching_key":
        return _switching_key(params, header["meta"], array("b"), rows_qp, qp_moduli)
    if kind == "galois_keys":
        out = GaloisKeys(params, _hex(header, "key_id", 16))
        for entry in _meta(header, "keys", list):
            if not isinstance(entry, dict):
                raise SerializationError("malformed Galois key entry")
            key = _switching_key(params, entry, array(f"b.{entry.get('galois_element')}"), rows_qp, qp_moduli)
            if key.kind != "galois" or key.key_id != out.key_id:
                raise SerializationError("Galois key set mixes kinds or keys")
            out.keys[key.galois_element] = key
        return out
    if kind == "encapsulation_keys":
        key_id = _hex(header, "key_id", 16)
        weight = _meta(header, "weight", int)
        if not 0 < weight <= n:
            raise SerializationError(f"invalid ephemeral Hamming weight {weight}")
        down_rows = EncapsulationKeys.down_rows(params).astype(np.int64)
        down_b = array("down_b")
        _want_shape(down_b, (2, n), "down_b")
        _check_reduced(down_b, qp_moduli[down_rows], "down_b")
        up = _switching_key(params, _meta(header, "up", dict), array("up_b"), rows_qp, qp_moduli)
        if up.kind != "encapsulation" or up.key_id != key_id:
            raise SerializationError("the encapsulation keys mix kinds or keys")
        return EncapsulationKeys(params, key_id, weight, _hex(header, "seed", 32), down_b.copy(), up)
    coeffs = array("coeffs")
    _want_shape(coeffs, (n,), "coeffs")
    if coeffs.dtype != np.int8 or np.any(np.abs(coeffs.astype(np.int64)) > 1):
        raise SerializationError("secret key coefficients must be ternary int8")
    from .rlwe.keys import signed_to_ntt

    return SecretKey(params, _hex(header, "key_id", 16), coeffs.copy(), signed_to_ntt(params, coeffs, rows_qp))


def _switching_key(params, meta, b, rows_qp, qp_moduli) -> SwitchingKey:
    header = {"meta": meta}
    kind = _meta(header, "kind", str)
    g = meta.get("galois_element")
    if kind not in ("relin", "galois", "encapsulation") or (kind == "galois") != isinstance(g, int):
        raise SerializationError("invalid switching key kind or Galois element")
    level = meta.get("max_level", params.max_level)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= params.max_level:
        raise SerializationError(f"invalid switching key level {level!r}")
    if b.dtype != np.uint64:
        raise SerializationError("switching key arrays are uint64")
    rows = params.qp_rows(level).astype(np.int64)
    _want_shape(b, (len(params.digit_positions(level)), len(rows), params.n), "b")
    _check_reduced(b, qp_moduli[rows], "b")
    return SwitchingKey(params, _hex(header, "key_id", 16), kind, g, _hex(header, "seed", 32), b.copy(),
                        max_level=level)


def _scale(header) -> float:
    scale = _meta(header, "scale", float)
    if not (np.isfinite(scale) and scale >= 1):
        raise SerializationError(f"invalid scale {scale}")
    return scale


def _slots(header, params: Parameters) -> int:
    slots = _meta(header, "slots", int)
    if not 1 <= slots <= params.slots or slots & (slots - 1):
        raise SerializationError(f"invalid slot count {slots}")
    return slots

