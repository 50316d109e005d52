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

Each kind has one encoder (object to metadata and arrays) and one decoder
(checked metadata and arrays back to an object), registered together in the
table ``_CODECS``; :func:`dump` finds the codec by the object's type,
:func:`load` by the header's kind.

:func:`load` checks, in this order: magic, version, length, checksum, header,
kind, that the object belongs to the given parameters (fingerprint), array
bounds, dtypes and shapes, and that every residue is reduced modulo its prime.
Any failure raises :class:`~fhe_ckks.errors.SerializationError` (or
:class:`~fhe_ckks.errors.KeyMismatchError` for other parameters); nothing is
returned half-checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import numpy as np

from .ckks.ciphertext import Ciphertext, Plaintext
from .errors import FheError, KeyMismatchError, SerializationError
from .rlwe.keys import EncapsulationKeys, GaloisKeys, PublicKey, SecretKey, SwitchingKey, signed_to_ntt
from .rlwe.params import Parameters, ParametersLiteral

__all__ = ["dump", "load", "FORMAT_VERSION"]

MAGIC = b"FHECKKS\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_DIGEST = 32
_MAX_HEADER = 1 << 24

#: What an encoder returns: the header's metadata, the named arrays (in
#: payload order) and the fingerprint of the parameters it belongs to.
_Parts = tuple[dict[str, Any], dict[str, np.ndarray], bytes]


@dataclass(frozen=True)
class _Parsed:
    """An object whose bytes passed :func:`_parse`, with the caller's arguments to :func:`load`."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    params: Parameters | None
    allow_insecure: bool

    def array(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise SerializationError(f"missing array {name}")
        return self.arrays[name]


@dataclass(frozen=True)
class _Codec:
    """How one kind of object is written and read back.

    Attributes:
        kind: the header's ``kind`` string.
        type: the class that is written under this kind.
        encode: ``obj -> (meta, arrays, fingerprint)``.
        decode: ``_Parsed -> obj``; it checks everything but the kind and
            the parameter fingerprint, which :func:`_load` checks first.
        needs_params: objects of this kind belong to a parameter set, which
            :func:`load` must be given.
        secret: written only with ``include_secret=True``.
    """

    kind: str
    type: type
    encode: Callable[[Any], _Parts]
    decode: Callable[[_Parsed], Any]
    needs_params: bool = True
    secret: bool = False


def _pack(kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], fingerprint: bytes | None) -> bytes:
    """Prefix, JSON header, payload and checksum of one object."""
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
    codec = _codec_for(obj)
    if codec.secret and not include_secret:
        raise SerializationError("refusing to serialize a secret key without include_secret=True")
    data = _pack(codec.kind, *codec.encode(obj))
    if fp is not None:
        fp.write(data)
    return data


def _codec_for(obj) -> _Codec:
    """The first codec in the table whose type ``obj`` is an instance of."""
    for codec in _CODECS:
        if isinstance(obj, codec.type):
            return codec
    raise SerializationError(f"cannot serialize a {type(obj).__name__}")


def _encode_parameters(params: Parameters) -> _Parts:
    """Only the literal: loading rebuilds (and re-validates) the rest."""
    literal = {}
    for f in dataclasses.fields(ParametersLiteral):
        value = getattr(params.literal, f.name)
        if f.name == "sigma":
            value = float(value)
        elif isinstance(value, tuple):
            value = list(value)
        literal[f.name] = value
    return {"literal": literal}, {}, params.fingerprint


def _encode_plaintext(pt: Plaintext) -> _Parts:
    return {"scale": pt.scale, "slots": pt.slots}, {"poly": pt.poly}, pt.params_fingerprint


def _encode_ciphertext(ct: Ciphertext) -> _Parts:
    """A seeded (fresh symmetric) ciphertext stores only ``c0`` and the seed of ``c1``."""
    meta = {"scale": ct.scale, "slots": ct.slots, "key_id": ct.key_id.hex(), "size": ct.size,
            "c1_seed": ct.c1_seed.hex() if ct.c1_seed else None}
    return meta, {"data": ct.data[:1] if ct.c1_seed else ct.data}, ct.params_fingerprint


def _encode_public_key(key: PublicKey) -> _Parts:
    return {"key_id": key.key_id.hex(), "seed": key.seed.hex()}, {"b": key.b}, key.params.fingerprint


def _encode_switching_key(key: SwitchingKey) -> _Parts:
    return _swk_meta(key), {"b": key.b}, key.params.fingerprint


def _encode_galois_keys(keys: GaloisKeys) -> _Parts:
    """One metadata entry and one array ``b.<galois element>`` per key, by element."""
    members = [keys.keys[g] for g in keys.elements()]
    meta = {"key_id": keys.key_id.hex(), "keys": [_swk_meta(k) for k in members]}
    return meta, {f"b.{k.galois_element}": k.b for k in members}, keys.params.fingerprint


def _encode_encapsulation_keys(keys: EncapsulationKeys) -> _Parts:
    meta = {"key_id": keys.key_id.hex(), "weight": keys.weight, "seed": keys.seed.hex(), "up": _swk_meta(keys.up)}
    return meta, {"down_b": keys.down_b, "up_b": keys.up.b}, keys.params.fingerprint


def _encode_secret_key(key: SecretKey) -> _Parts:
    return {"key_id": key.key_id.hex()}, {"coeffs": key.coeffs}, key.params.fingerprint


def _swk_meta(key: SwitchingKey) -> dict[str, Any]:
    return {"key_id": key.key_id.hex(), "kind": key.kind, "galois_element": key.galois_element,
            "seed": key.seed.hex(), "max_level": key.max_level}


# --------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------


def _parse(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Check the prefix and the checksum; read the header and slice out its arrays."""
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
    """Integrity, then the kind, then the parameters, then the kind's own checks."""
    header, arrays = _parse(data)
    kind = header.get("kind")
    codec = _BY_KIND.get(kind)
    if codec is None:
        raise SerializationError(f"unknown object kind {kind!r}")
    if codec.needs_params:
        if not isinstance(params, Parameters):
            raise SerializationError(f"loading a {kind} needs the Parameters it belongs to")
        if header.get("params") != params.fingerprint.hex():
            raise KeyMismatchError(f"this {kind} belongs to other parameters")
    return codec.decode(_Parsed(header, arrays, params, allow_insecure))


def _decode_parameters(src: _Parsed) -> Parameters:
    """Rebuild from the literal; the result must have the fingerprint the header claims."""
    lit = _meta(src.header, "literal", dict)
    try:
        literal = ParametersLiteral(**lit)
    except TypeError as exc:
        raise SerializationError(f"invalid parameter literal: {exc}") from None
    out = Parameters.from_literal(literal, allow_insecure=src.allow_insecure)
    if out.fingerprint.hex() != src.header.get("params"):
        raise SerializationError("parameter fingerprint does not match the literal")
    return out


def _decode_plaintext(src: _Parsed) -> Plaintext:
    params, header = src.params, src.header
    poly = src.array("poly")
    if poly.ndim != 2 or not 1 <= poly.shape[0] <= len(params.q_primes) or poly.shape[1] != params.n:
        raise SerializationError(f"plaintext shape {poly.shape} does not fit these parameters")
    _check_reduced(poly, _q_moduli(params), "poly")
    return Plaintext(poly.copy(), _scale(header), _slots(header, params), params.fingerprint)


def _decode_ciphertext(src: _Parsed) -> Ciphertext:
    """A seeded ciphertext (``c1_seed`` set) stores ``c0`` only; ``c1`` is expanded from the seed."""
    params, header = src.params, src.header
    stored = src.array("data")
    size = _meta(header, "size", int)
    seed_hex = header["meta"].get("c1_seed")
    if stored.ndim != 3 or not 1 <= stored.shape[1] <= len(params.q_primes) or stored.shape[2] != params.n \
            or not 2 <= size <= 3:
        raise SerializationError(f"ciphertext shape {stored.shape} does not fit these parameters")
    _check_reduced(stored, _q_moduli(params), "data")
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


def _decode_public_key(src: _Parsed) -> PublicKey:
    params = src.params
    b = src.array("b")
    _want_shape(b, (len(params.q_primes), params.n), "b")
    _check_reduced(b, _q_moduli(params), "b")
    return PublicKey(params, _hex(src.header, "key_id", 16), _hex(src.header, "seed", 32), b.copy())


def _decode_switching_key(src: _Parsed) -> SwitchingKey:
    return _switching_key(src.params, src.header["meta"], src.array("b"))


def _decode_galois_keys(src: _Parsed) -> GaloisKeys:
    """Every member must be a Galois key with the set's key id."""
    out = GaloisKeys(src.params, _hex(src.header, "key_id", 16))
    for entry in _meta(src.header, "keys", list):
        if not isinstance(entry, dict):
            raise SerializationError("malformed Galois key entry")
        key = _switching_key(src.params, entry, src.array(f"b.{entry.get('galois_element')}"))
        if key.kind != "galois" or key.key_id != out.key_id:
            raise SerializationError("Galois key set mixes kinds or keys")
        out.keys[key.galois_element] = key
    return out


def _decode_encapsulation_keys(src: _Parsed) -> EncapsulationKeys:
    """The up key must be an encapsulation key with the same key id."""
    params, header = src.params, src.header
    key_id = _hex(header, "key_id", 16)
    weight = _meta(header, "weight", int)
    if not 0 < weight <= params.n:
        raise SerializationError(f"invalid ephemeral Hamming weight {weight}")
    down_rows = EncapsulationKeys.down_rows(params).astype(np.int64)
    down_b = src.array("down_b")
    _want_shape(down_b, (2, params.n), "down_b")
    _check_reduced(down_b, params.moduli_qp[down_rows], "down_b")
    up = _switching_key(params, _meta(header, "up", dict), src.array("up_b"))
    if up.kind != "encapsulation" or up.key_id != key_id:
        raise SerializationError("the encapsulation keys mix kinds or keys")
    return EncapsulationKeys(params, key_id, weight, _hex(header, "seed", 32), down_b.copy(), up)


def _decode_secret_key(src: _Parsed) -> SecretKey:
    """Ternary int8 coefficients; the NTT form is recomputed."""
    params = src.params
    coeffs = src.array("coeffs")
    _want_shape(coeffs, (params.n,), "coeffs")
    if coeffs.dtype != np.int8 or np.any(np.abs(coeffs.astype(np.int64)) > 1):
        raise SerializationError("secret key coefficients must be ternary int8")
    rows_qp = len(params.q_primes) + len(params.p_primes)
    return SecretKey(params, _hex(src.header, "key_id", 16), coeffs.copy(), signed_to_ntt(params, coeffs, rows_qp))


def _switching_key(params: Parameters, meta, b: np.ndarray) -> SwitchingKey:
    """One switching key from its metadata entry and its ``b`` array (alone or inside a key set)."""
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
    _check_reduced(b, params.moduli_qp[rows], "b")
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


def _q_moduli(params: Parameters) -> np.ndarray:
    """The ciphertext primes (the first rows of the Q·P moduli)."""
    return params.moduli_qp[:len(params.q_primes)]


# --------------------------------------------------------------------------
# The table.
# --------------------------------------------------------------------------

#: One codec per kind.  :func:`dump` takes the first whose type matches, so
#: the order matters only if one of these classes ever subclasses another.
_CODECS: tuple[_Codec, ...] = (
    _Codec("parameters", Parameters, _encode_parameters, _decode_parameters, needs_params=False),
    _Codec("plaintext", Plaintext, _encode_plaintext, _decode_plaintext),
    _Codec("ciphertext", Ciphertext, _encode_ciphertext, _decode_ciphertext),
    _Codec("public_key", PublicKey, _encode_public_key, _decode_public_key),
    _Codec("switching_key", SwitchingKey, _encode_switching_key, _decode_switching_key),
    _Codec("galois_keys", GaloisKeys, _encode_galois_keys, _decode_galois_keys),
    _Codec("encapsulation_keys", EncapsulationKeys, _encode_encapsulation_keys, _decode_encapsulation_keys),
    _Codec("secret_key", SecretKey, _encode_secret_key, _decode_secret_key, secret=True),
)
_BY_KIND: dict[str, _Codec] = {codec.kind: codec for codec in _CODECS}
