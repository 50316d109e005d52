"""The model-file container: round trip, and every kind of damage refused with SerializationError."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhe_ckks.errors import SerializationError
from fhe_ckks.nn.modelfile import CHECKSUM_KEY, FORMAT_VERSION, MANIFEST_KEY, read_model_file, write_model_file


def test_round_trip_and_permissions(tmp_path, rng):
    tensors = {"a.weight": rng.normal(size=(3, 4)), "b": np.arange(5, dtype=np.int64)}
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy", "n": 2}, tensors)
    mf = read_model_file(path)
    assert mf.schema == {"kind": "toy", "n": 2}
    assert all(np.array_equal(mf.tensor(k), v) for k, v in tensors.items())
    assert stat.S_IMODE(path.stat().st_mode) & 0o044    # readable by others, not the 0600 of a temp file
    with pytest.raises(SerializationError, match="no tensor"):
        mf.tensor("missing")


def rewrite(path, **members):
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    data.update(members)
    np.savez(path, **data)


def test_damage_is_refused(tmp_path, rng):
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=8)})
    with np.load(path) as f:
        manifest = json.loads(f[MANIFEST_KEY].tobytes())
    rewrite(path, w=rng.normal(size=8))                              # edited weights
    with pytest.raises(SerializationError, match="checksum"):
        read_model_file(path)
    rewrite(path, w=np.zeros(9))                                      # wrong shape
    with pytest.raises(SerializationError, match="manifest says"):
        read_model_file(path)
    manifest["format_version"] = 99
    rewrite(path, **{MANIFEST_KEY: np.frombuffer(json.dumps(manifest).encode(), np.uint8)})
    with pytest.raises(SerializationError, match="version"):
        read_model_file(path)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(SerializationError, match="junk.npz"):
        read_model_file(tmp_path / "junk.npz")
    with pytest.raises(SerializationError, match="no such"):
        read_model_file(tmp_path / "absent.npz")


def test_bad_tensors_are_not_written(tmp_path):
    with pytest.raises(SerializationError, match="non-finite"):
        write_model_file(tmp_path / "m.npz", {}, {"w": np.array([1.0, np.nan])})
    with pytest.raises(SerializationError, match="dtype"):
        write_model_file(tmp_path / "m.npz", {}, {"w": np.array(["a"])})
    with pytest.raises(SerializationError, match="plain JSON"):
        write_model_file(tmp_path / "m.npz", {"x": object()}, {"w": np.zeros(1)})
    assert not list(tmp_path.iterdir())


def members_of(path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def reseal(path, manifest_edit=None, drop=(), **tensors):
    """Rewrite the file with ``tensors`` replaced (added), those in ``drop`` removed, the manifest edited and
    every checksum recomputed: a deliberate edit, not an accident."""
    data = members_of(path)
    manifest = json.loads(data.pop(MANIFEST_KEY).tobytes())
    data.pop(CHECKSUM_KEY)
    data.update(tensors)
    for name in drop:
        del data[name], manifest["tensors"][name]
    for name, array in data.items():
        manifest["tensors"][name] = {"shape": list(array.shape), "dtype": array.dtype.name,
                                     "sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()}
    if manifest_edit:
        manifest_edit(manifest)
    blob = json.dumps(manifest, sort_keys=True).encode()
    np.savez(path, **data, **{MANIFEST_KEY: np.frombuffer(blob, np.uint8),
                             CHECKSUM_KEY: np.frombuffer(hashlib.sha256(blob).digest(), np.uint8)})


def test_the_checksum_covers_the_manifest(tmp_path, rng):
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy", "tau": 1.5}, {"w": rng.normal(size=8)})
    manifest = json.loads(members_of(path)[MANIFEST_KEY].tobytes())
    manifest["schema"]["tau"] = 15.0
    rewrite(path, **{MANIFEST_KEY: np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), np.uint8)})
    with pytest.raises(SerializationError, match="manifest fails its checksum"):
        read_model_file(path)
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=8)})
    w = members_of(path)["w"] * 1e6
    manifest = json.loads(members_of(path)[MANIFEST_KEY].tobytes())
    manifest["tensors"]["w"]["sha256"] = hashlib.sha256(w.tobytes()).hexdigest()     # digest updated, checksum not
    rewrite(path, w=w, **{MANIFEST_KEY: np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), np.uint8)})
    with pytest.raises(SerializationError, match="checksum"):
        read_model_file(path)


def test_version_1_files_are_refused_with_a_request_to_re_export(tmp_path, rng):
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=8)})
    data = members_of(path)
    manifest = json.loads(data.pop(MANIFEST_KEY).tobytes())
    data.pop(CHECKSUM_KEY)
    manifest["format_version"] = 1
    np.savez(path, **data, **{MANIFEST_KEY: np.frombuffer(json.dumps(manifest).encode(), np.uint8)})
    with pytest.raises(SerializationError, match="version 1.*re-export"):
        read_model_file(path)
    assert FORMAT_VERSION == 2


class _Tripwire:
    unpickled = False

    def __setstate__(self, state):
        _Tripwire.unpickled = True


def test_pickled_members_are_refused_unread(tmp_path, rng):
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=8)})
    payload = io.BytesIO()
    np.save(payload, np.array([_Tripwire()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("evil.npy", payload.getvalue())
    with pytest.raises(SerializationError, match="object"):
        read_model_file(path)
    assert not _Tripwire.unpickled


def npy_with_header(array: np.ndarray, header: str) -> bytes:
    head = header.encode("latin-1").ljust(118) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + array.tobytes()


@pytest.mark.parametrize("header", [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }",       # more than it holds
    "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }",                   # less than it holds
    "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 4), }",
    "{'descr': '|O', 'fortran_order': False, 'shape': (8,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8,)",                      # not a dict
    "{'descr': '<f8', 'fortran_order': False, 'shape': ((((((8,),),),),),), }",
    "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
    "{'descr': '<f8', 'descr': '<f8', 'shape': (8,), }",                          # a field twice, one missing
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), 'extra': 1}",
    "{'descr': False, 'fortran_order': '<f8', 'shape': (8,), }",                   # fields of the wrong kind
    "{'descr': '<f8', 'fortran_order': False, 'shape': (-8,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8 1,), }",
    "{'descr': '<q9', 'fortran_order': False, 'shape': (8,), }",                   # no such dtype
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }" + " " * 20000,     # past numpy's header limit
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }; import os",
])
def test_npy_headers_that_lie_or_do_not_parse_are_refused(tmp_path, rng, header):
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=8)})
    data = {info.filename: zipfile.ZipFile(path).read(info) for info in zipfile.ZipFile(path).infolist()}
    data["w.npy"] = npy_with_header(members_of(path)["w"], header)
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in data.items():
            archive.writestr(name, raw)
    with pytest.raises(SerializationError):
        read_model_file(path)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["<f8", ">f8", "<f4", "<i8", ">i4", "|u1"]),
       st.lists(st.integers(0, 5), min_size=0, max_size=4), st.sampled_from([(1, 0), (2, 0)]), st.booleans())
def test_npy_headers_numpy_writes_read_as_numpy_reads_them(descr, shape, version, fortran):
    """The model file's own .npy header reader (a regular expression, no AST) agrees with numpy's on every
    header numpy writes, big-endian, empty, 0-d and (for read_arrays) Fortran-ordered arrays included."""
    from fhe_ckks.nn.modelfile import _parse_npy

    array = np.arange(int(np.prod(shape)), dtype=np.dtype(descr)).reshape(shape)
    array = np.asfortranarray(array) if fortran else array
    raw = io.BytesIO()
    np.lib.format.write_array(raw, array, version=version)
    got = _parse_npy(raw.getvalue(), "member", fortran=True)
    assert got.shape == array.shape and got.dtype == array.dtype.newbyteorder("=") and np.array_equal(got, array)


def test_model_files_load_in_many_threads_at_once(tmp_path, rng):
    """Clients load their model file in threads: the reader builds no AST (CPython 3.11's AST constructor can
    raise SystemError when two threads use it at once, as numpy's header parser does)."""
    import sys
    import threading

    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {f"w{i}": rng.normal(size=4) for i in range(30)})
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for _ in range(20):
                read_model_file(path)
        except BaseException as exc:          # noqa: BLE001 - reported below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


def test_every_byte_flip_raises_a_typed_error_or_reads_the_same(tmp_path, rng):
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=4)})
    raw = path.read_bytes()
    want = read_model_file(path)
    for pos in range(len(raw)):
        damaged = bytearray(raw)
        damaged[pos] ^= 0x5A
        try:
            got = read_model_file(io.BytesIO(bytes(damaged)))
        except SerializationError:
            continue
        assert got.schema == want.schema and np.array_equal(got.tensor("w"), want.tensor("w")), pos


def test_non_finite_foreign_or_extra_tensors_are_refused_even_resealed(tmp_path, rng):
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=8)})
    reseal(path, w=np.array([1.0, np.nan]))
    with pytest.raises(SerializationError, match="non-finite"):
        read_model_file(path)
    reseal(path, w=np.arange(3, dtype=np.uint8))
    with pytest.raises(SerializationError, match="dtype"):
        read_model_file(path)
    reseal(path, w=np.zeros(2))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("readme.txt", b"hello")
    with pytest.raises(SerializationError, match="readme.txt"):
        read_model_file(path)
    path = write_model_file(tmp_path / "m.npz", {"kind": "toy"}, {"w": rng.normal(size=8)})
    reseal(path, manifest_edit=lambda m: m.update(extra=1))
    with pytest.raises(SerializationError, match="fields"):
        read_model_file(path)


def test_read_arrays_reads_a_plain_npz_and_refuses_pickles(tmp_path, rng):
    from fhe_ckks.nn import read_arrays

    want = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b.c": np.asfortranarray(rng.normal(size=(2, 5)))}
    np.savez(tmp_path / "w.npz", **want)
    got = read_arrays(tmp_path / "w.npz")
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    np.savez(tmp_path / "evil.npz", a=np.array([_Tripwire()], dtype=object), allow_pickle=True)
    with pytest.raises(SerializationError, match="object"):
        read_arrays(tmp_path / "evil.npz")
    assert not _Tripwire.unpickled
