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

:func:`load` takes bytes (``bytes``, ``bytearray``, ``memoryview``) or a
binary file object, nothing else, and checks, in this order: magic, version,
length, checksum; the header (JSON of bounded size, parsed without unbounded
recursion, with exactly the fields above); the array table (names unique,
dtypes exactly ``u8`` or ``i1``, shapes of at most 3 non-negative ints,
offsets and lengths contiguous and consistent); the kind; that the object
belongs to the given parameters (fingerprint); that the metadata has exactly
the kind's fields, each of its type (a bool is never an int) and range; the
dtype and shape of each array (``uint64`` polynomials, an ``int8`` secret key)
and that every residue is reduced modulo its prime; and that every array is
used.  Any failure raises :class:`~fhe_ckks.errors.SerializationError` (or
:class:`~fhe_ckks.errors.KeyMismatchError` for other parameters,
:class:`~fhe_ckks.errors.ParameterError` for an invalid parameter literal);
nothing is returned half-checked.

Ranges: a scale is a finite float in ``[2, q_0 q_1 ... q_level)`` (the
library's own scales, including bootstrapping's ``q_0`` after ModRaise, lie
well inside: at the product of the primes the message has no room left;
below 2 it is rounded to nothing); a slot count is a power of two in
``[1, N/2]``; a Galois element is an odd int in ``[1, 2N)``, keys listed once
each by increasing element under arrays ``b.<element>``; a relinearization or
encapsulation key carries no element and a Galois set holds only Galois keys;
a sparse secret key has exactly ``h`` nonzero coefficients.

What no public check can see (threat model): the bytes are *integrity*-checked
(the SHA-256 catches accidents), not authenticated.  Without the secret key a
loader cannot tell whether a ciphertext's or a decrypted plaintext's slot count
or scale was rewritten within range, nor whether two Galois keys had their
labels and arrays swapped consistently (or a relinearization key was relabelled
as a Galois or encapsulation key): the key material is pseudorandom either way.
Such an object only misleads its own holder's computations -- a client that
sends relabelled keys corrupts its own queries' results, and the server learns
nothing more than from any ciphertext.  Against a third party on the wire, use
an authenticated channel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import reprlib
import struct
from dataclasses import dataclass, field
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
    """An object whose bytes passed :func:`_parse`, with the caller's arguments to :func:`load`.

    ``meta`` has exactly the fields of its kind; ``used`` collects the arrays the decoder took, so that
    :func:`_load` can refuse any other.
    """

    header: dict[str, Any]
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    params: Parameters | None
    allow_insecure: bool
    used: set[str] = field(default_factory=set)

    def array(self, name: str, dtype=np.uint64) -> np.ndarray:
        """The array ``name``, which must have ``dtype`` (``uint64`` for every polynomial)."""
        if name not in self.arrays:
            raise SerializationError(f"missing array {name}")
        arr = self.arrays[name]
        if arr.dtype != np.dtype(dtype):
            raise SerializationError(f"array {name} is {arr.dtype}, expected {np.dtype(dtype)}")
        self.used.add(name)
        return arr


@dataclass(frozen=True)
class _Codec:
    """How one kind of object is written and read back.

    Attributes:
        kind: the header's ``kind`` string.
        type: the class that is written under this kind.
        encode: ``obj -> (meta, arrays, fingerprint)``.
        decode: ``_Parsed -> obj``; it checks everything but the kind,
            the parameter fingerprint and the set of metadata fields, which
            :func:`_load` checks first, and the set of arrays, checked after.
        fields: the metadata fields of this kind, all required.
        needs_params: objects of this kind belong to a parameter set, which
            :func:`load` must be given.
        secret: written only with ``include_secret=True``.
    """

    kind: str
    type: type
    encode: Callable[[Any], _Parts]
    decode: Callable[[_Parsed], Any]
    fields: frozenset[str]
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

#: The dtypes an array may be stored as (the exact strings :func:`_pack` writes).
_DTYPES = {"u8": np.dtype("<u8"), "i1": np.dtype("i1")}
_HEADER_KEYS = frozenset({"kind", "params", "meta", "arrays"})
_ENTRY_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})
_SWK_KEYS = frozenset({"key_id", "kind", "galois_element", "seed", "max_level"})
_LITERAL_FIELDS = frozenset(f.name for f in dataclasses.fields(ParametersLiteral))
_MAX_DIMS = 3
#: Scales below this are refused: the message would be rounded to (almost) nothing.  (The encoder still
#: accepts scales from 1.)
MIN_SCALE = 2.0


def _show(value) -> str:
    """A bounded rendering of a header value for an error message."""
    return reprlib.repr(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_bytes(source) -> bytes:
    """The bytes of ``source`` (bytes-like, or a binary file object); anything else is refused."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not callable(getattr(source, "read", None)):
        raise SerializationError(f"cannot load from a {type(source).__name__}: pass bytes or a binary file")
    try:
        data = source.read()
    except (OSError, ValueError) as exc:
        raise SerializationError(f"cannot read the source: {exc}") from None
    if not isinstance(data, (bytes, bytearray)):
        raise SerializationError(f"the source's read() returned a {type(data).__name__}, not bytes "
                                 "(open the file in binary mode)")
    return bytes(data)


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
    except (ValueError, RecursionError) as exc:   # bad UTF-8 or JSON, a huge number, nesting too deep
        raise SerializationError(f"unreadable header: {type(exc).__name__}") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS or not isinstance(header["arrays"], list):
        raise SerializationError(f"malformed header: expected the fields {sorted(_HEADER_KEYS)}")
    payload = memoryview(body)[_PREFIX.size + hlen:]
    arrays: dict[str, np.ndarray] = {}
    used = 0
    for entry in header["arrays"]:
        name, dtype, shape, nbytes = _array_entry(entry, used, len(payload))
        if name in arrays:
            raise SerializationError(f"array {name!r} is listed twice")
        stored = np.frombuffer(payload[used:used + nbytes], dtype=dtype)
        arrays[name] = stored.astype(dtype.newbyteorder("=")).reshape(shape)
        used += nbytes
    if used != len(payload):
        raise SerializationError("trailing bytes after the arrays")
    return header, arrays


def _array_entry(entry, offset: int, available: int) -> tuple[str, np.dtype, tuple[int, ...], int]:
    """Name, dtype, shape and length of one entry of the array table, which must start at ``offset``."""
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise SerializationError(f"malformed array entry: expected the fields {sorted(_ENTRY_KEYS)}")
    name, shape = entry["name"], entry["shape"]
    if not isinstance(name, str):
        raise SerializationError(f"array name {_show(name)} is not a string")
    if not isinstance(entry["dtype"], str) or entry["dtype"] not in _DTYPES:
        raise SerializationError(f"array {name!r}: dtype {_show(entry['dtype'])} is not one of {sorted(_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
        raise SerializationError(f"array {name!r}: invalid shape {_show(shape)}")
    dtype = _DTYPES[entry["dtype"]]
    nbytes = math.prod(shape) * dtype.itemsize
    if not (_is_int(entry["offset"]) and _is_int(entry["nbytes"])) or entry["offset"] != offset \
            or entry["nbytes"] != nbytes or offset + nbytes > available:
        raise SerializationError(f"array {name!r}: inconsistent shape, offset or length")
    return name, dtype, tuple(shape), nbytes


def _field(meta: dict, key: str, kind: type):
    """``meta[key]``, which must be a ``kind`` (a bool is never an int or a float)."""
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SerializationError(f"field {key!r} must be a {kind.__name__}, got {_show(value)}")
    return value


def _hex(meta: dict, key: str, length: int) -> bytes:
    """``length`` bytes written as ``2 * length`` lowercase hex digits (the only form :func:`dump` writes)."""
    value = _field(meta, key, str)
    if len(value) != 2 * length or value.strip("0123456789abcdef"):
        raise SerializationError(f"field {key!r} must be {length} bytes in lowercase hex")
    return bytes.fromhex(value)


def _check_fields(meta, expected: frozenset, what: str) -> dict:
    """A metadata dict with exactly the ``expected`` fields."""
    if not isinstance(meta, dict) or set(meta) != expected:
        got = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise SerializationError(f"{what}: expected the fields {sorted(expected)}, got {_show(got)}")
    return meta


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
        SerializationError: not bytes, or truncated, corrupted or malformed input.
        KeyMismatchError: the object belongs to other parameters.
        ParameterError: a ``parameters`` object whose literal is invalid
            (:class:`~fhe_ckks.errors.SecurityError` if it is insecure).
    """
    data = _read_bytes(source)
    try:
        return _load(data, params, allow_insecure)
    except FheError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - defensive
        raise SerializationError(f"malformed object: {exc}") from None


def _load(data: bytes, params: Parameters | None, allow_insecure: bool):
    """Integrity, then the kind, then the parameters, then the kind's own checks; every array used."""
    header, arrays = _parse(data)
    kind = header["kind"]
    codec = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if codec is None:
        raise SerializationError(f"unknown object kind {_show(kind)}")
    if codec.needs_params:
        if not isinstance(params, Parameters):
            raise SerializationError(f"loading a {kind} needs the Parameters it belongs to")
        if header["params"] != params.fingerprint.hex():
            raise KeyMismatchError(f"this {kind} belongs to other parameters")
    meta = _check_fields(header["meta"], codec.fields, f"{kind} metadata")
    src = _Parsed(header, meta, arrays, params, allow_insecure)
    obj = codec.decode(src)
    unused = sorted(set(arrays) - src.used)
    if unused:
        raise SerializationError(f"arrays {unused[:4]} belong to no part of the {kind}")
    return obj


def _decode_parameters(src: _Parsed) -> Parameters:
    """Rebuild from the literal (every field present); the result must have the fingerprint the header claims."""
    lit = _check_fields(src.meta["literal"], _LITERAL_FIELDS, "parameter literal")
    out = Parameters.from_literal(ParametersLiteral(**lit), allow_insecure=src.allow_insecure)
    if out.fingerprint.hex() != src.header["params"]:
        raise SerializationError("parameter fingerprint does not match the literal")
    return out


def _decode_plaintext(src: _Parsed) -> Plaintext:
    params = src.params
    poly = src.array("poly")
    if poly.ndim != 2 or not 1 <= poly.shape[0] <= len(params.q_primes) or poly.shape[1] != params.n:
        raise SerializationError(f"plaintext shape {poly.shape} does not fit these parameters")
    _check_reduced(poly, _q_moduli(params), "poly")
    return Plaintext(poly.copy(), _scale(src.meta, params, poly.shape[0] - 1), _slots(src.meta, params),
                     params.fingerprint)


def _decode_ciphertext(src: _Parsed) -> Ciphertext:
    """A seeded ciphertext (``c1_seed`` set) stores ``c0`` only; ``c1`` is expanded from the seed."""
    params, meta = src.params, src.meta
    stored = src.array("data")
    size = _field(meta, "size", int)
    if stored.ndim != 3 or not 1 <= stored.shape[1] <= len(params.q_primes) or stored.shape[2] != params.n \
            or not 2 <= size <= 3:
        raise SerializationError(f"ciphertext shape {stored.shape} does not fit these parameters")
    _check_reduced(stored, _q_moduli(params), "data")
    scale, slots, key_id = _scale(meta, params, stored.shape[1] - 1), _slots(meta, params), _hex(meta, "key_id", 16)
    if meta["c1_seed"] is not None:
        seed = _hex(meta, "c1_seed", 32)
        if stored.shape[0] != 1 or size != 2:
            raise SerializationError("a seeded ciphertext stores exactly c0")
        c1 = params.ring_q.sample_uniform(seed, stored.shape[1], domain=b"fhe_ckks.ct")
        full = np.stack([stored[0], c1])
    else:
        seed = None
        if stored.shape[0] != size:
            raise SerializationError("ciphertext size does not match its data")
        full = stored.copy()
    return Ciphertext(full, scale, slots, key_id, params.fingerprint, seed)


def _decode_public_key(src: _Parsed) -> PublicKey:
    params = src.params
    b = src.array("b")
    _want_shape(b, (len(params.q_primes), params.n), "b")
    _check_reduced(b, _q_moduli(params), "b")
    return PublicKey(params, _hex(src.meta, "key_id", 16), _hex(src.meta, "seed", 32), b.copy())


def _decode_switching_key(src: _Parsed) -> SwitchingKey:
    return _switching_key(src, src.meta, "b")


def _decode_galois_keys(src: _Parsed) -> GaloisKeys:
    """Galois keys with the set's key id, listed once each by increasing element, each under ``b.<element>``.

    A relabelling that keeps all of this consistent (two keys' labels and arrays swapped together) cannot
    be seen without the secret key: see the module's notes.
    """
    out = GaloisKeys(src.params, _hex(src.meta, "key_id", 16))
    previous = 0
    for entry in _field(src.meta, "keys", list):
        g = entry.get("galois_element") if isinstance(entry, dict) else None
        if not _is_int(g):
            raise SerializationError(f"a Galois key set entry needs an int element, got {_show(g)}")
        key = _switching_key(src, entry, f"b.{g}")
        if key.kind != "galois" or key.key_id != out.key_id:
            raise SerializationError("Galois key set mixes kinds or keys")
        if g <= previous:
            raise SerializationError(f"Galois element {g} is repeated or out of order")
        out.keys[g] = key
        previous = g
    return out


def _decode_encapsulation_keys(src: _Parsed) -> EncapsulationKeys:
    """The up key must be a full-level encapsulation key with the same key id."""
    params, meta = src.params, src.meta
    key_id = _hex(meta, "key_id", 16)
    weight = _field(meta, "weight", int)
    if not 0 < weight <= params.n:
        raise SerializationError(f"invalid ephemeral Hamming weight {weight}")
    down_rows = EncapsulationKeys.down_rows(params).astype(np.int64)
    down_b = src.array("down_b")
    _want_shape(down_b, (2, params.n), "down_b")
    _check_reduced(down_b, params.moduli_qp[down_rows], "down_b")
    up = _switching_key(src, meta["up"], "up_b")
    if up.kind != "encapsulation" or up.key_id != key_id or up.max_level != params.max_level:
        raise SerializationError("the encapsulation keys mix kinds, keys or levels")
    return EncapsulationKeys(params, key_id, weight, _hex(meta, "seed", 32), down_b.copy(), up)


def _decode_secret_key(src: _Parsed) -> SecretKey:
    """Ternary int8 coefficients (exactly h nonzero for a sparse secret); the NTT form is recomputed."""
    params = src.params
    coeffs = src.array("coeffs", np.int8)
    _want_shape(coeffs, (params.n,), "coeffs")
    if np.any(np.abs(coeffs.astype(np.int64)) > 1):
        raise SerializationError("secret key coefficients must be ternary")
    if params.hamming_weight is not None and np.count_nonzero(coeffs) != params.hamming_weight:
        raise SerializationError(f"a secret key of these parameters has exactly {params.hamming_weight} "
                                 "nonzero coefficients")
    rows_qp = len(params.q_primes) + len(params.p_primes)
    return SecretKey(params, _hex(src.meta, "key_id", 16), coeffs.copy(), signed_to_ntt(params, coeffs, rows_qp))


def _switching_key(src: _Parsed, meta, array: str) -> SwitchingKey:
    """One switching key from its metadata entry and its array (alone or inside a key set)."""
    params = src.params
    meta = _check_fields(meta, _SWK_KEYS, "switching key metadata")
    kind, g, level = meta["kind"], meta["galois_element"], meta["max_level"]
    if kind not in ("relin", "galois", "encapsulation"):
        raise SerializationError(f"invalid switching key kind {_show(kind)}")
    if kind == "galois" and not (_is_int(g) and 0 < g < 2 * params.n and g % 2 == 1):
        raise SerializationError(f"Galois element {_show(g)} must be an odd int in [1, {2 * params.n})")
    if kind != "galois" and g is not None:
        raise SerializationError(f"a {kind} key has no Galois element (got {_show(g)})")
    if not _is_int(level) or not 0 <= level <= params.max_level:
        raise SerializationError(f"invalid switching key level {_show(level)}")
    b = src.array(array)
    rows = params.qp_rows(level).astype(np.int64)
    _want_shape(b, (len(params.digit_positions(level)), len(rows), params.n), array)
    _check_reduced(b, params.moduli_qp[rows], array)
    return SwitchingKey(params, _hex(meta, "key_id", 16), kind, g, _hex(meta, "seed", 32), b.copy(),
                        max_level=level)


def _scale(meta: dict, params: Parameters, level: int) -> float:
    """A finite float in ``[MIN_SCALE, q_0 * ... * q_level)``: a larger scale leaves no room for the message."""
    scale = _field(meta, "scale", float)
    if not (math.isfinite(scale) and MIN_SCALE <= scale < math.prod(params.q_primes[:level + 1])):
        raise SerializationError(f"scale {scale!r} outside [{MIN_SCALE}, q_0 ... q_{level}) at level {level}")
    return scale


def _slots(meta: dict, params: Parameters) -> int:
    slots = _field(meta, "slots", int)
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
    _Codec("parameters", Parameters, _encode_parameters, _decode_parameters, frozenset({"literal"}),
           needs_params=False),
    _Codec("plaintext", Plaintext, _encode_plaintext, _decode_plaintext, frozenset({"scale", "slots"})),
    _Codec("ciphertext", Ciphertext, _encode_ciphertext, _decode_ciphertext,
           frozenset({"scale", "slots", "key_id", "size", "c1_seed"})),
    _Codec("public_key", PublicKey, _encode_public_key, _decode_public_key, frozenset({"key_id", "seed"})),
    _Codec("switching_key", SwitchingKey, _encode_switching_key, _decode_switching_key, _SWK_KEYS),
    _Codec("galois_keys", GaloisKeys, _encode_galois_keys, _decode_galois_keys, frozenset({"key_id", "keys"})),
    _Codec("encapsulation_keys", EncapsulationKeys, _encode_encapsulation_keys, _decode_encapsulation_keys,
           frozenset({"key_id", "weight", "seed", "up"})),
    _Codec("secret_key", SecretKey, _encode_secret_key, _decode_secret_key, frozenset({"key_id"}), secret=True),
)
_BY_KIND: dict[str, _Codec] = {codec.kind: codec for codec in _CODECS}
