"""The model-file container: round trip, and every kind of damage refused with SerializationError."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

from fhe_ckks.errors import SerializationError
from fhe_ckks.nn.modelfile import MANIFEST_KEY, read_model_file, write_model_file


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
