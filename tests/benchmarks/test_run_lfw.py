"""benchmarks/run_lfw.py end to end on a toy ring: report fields, decisions, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryptoface import DEFAULT_SAMPLE, data
from cryptoface.model import fit_thresholds, poly_distances, save_model

from tests.benchmarks.scripts import load_benchmark

from tests.cryptoface.toy_model import toy_model

PRESET = "INSECURE_N12_QP900_L18_S40"


def load_script():
    return load_benchmark("run_lfw")


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    """The toy model with its decision rule fitted on the shipped LFW sample (16x16 faces)."""
    model = toy_model()
    vs = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    folds = np.array([p["fold"] for p in json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())["pairs"]])
    e = model.embed(vs.images(model.input_size))
    model.thresholds["lfw"] = fit_thresholds(poly_distances, e[0::2], e[1::2], vs.issame, folds)
    return save_model(model, tmp_path_factory.mktemp("model") / "toy.model.npz")


def run(script, toy_file, out: Path, *extra: str) -> int:
    return script.main(["--model", str(toy_file), "--preset", PRESET, "--workers", "1", "--no-progress",
                        "--output", str(out), *extra])


def test_two_encrypted_pairs_report_and_resume(toy_file, tmp_path, monkeypatch):
    script = load_script()
    from cryptoface.encrypted import measuring

    # interrupt the first run after one pair
    real = measuring.MeasuringHarness.verify_pair
    calls = {"n": 0}

    def flaky(self, a, b):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, a, b)

    monkeypatch.setattr(measuring.MeasuringHarness, "verify_pair", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(script, toy_file, tmp_path, "--pairs", "0:1,5:6")
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 1 and not (tmp_path / "results.jsonl").exists()
    with open(tmp_path / "pairs.jsonl", "a") as f:
        f.write('{"config": "torn')                         # a torn write must be ignored

    calls["n"] = 10                                          # no more interruptions; count what is recomputed
    assert run(script, toy_file, tmp_path, "--pairs", "0:1,5:6") == 0
    assert calls["n"] == 11                                  # only the unfinished pair ran
    record = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[-1])
    lfw = record["datasets"]["lfw"]
    assert lfw["plaintext"]["pairs"] == 40
    for key in ("plaintext", "poly_norm", "fused_rule", "auc"):
        assert key in lfw["plaintext"]
    enc = lfw["encrypted"]
    assert enc["pairs"] == 2 and enc["agree_with_plaintext"] == 2
    assert enc["embedding_error_bits_min"] > 12
    assert enc["verification_seconds_mean"] > 0 and enc["key_switches_per_verification"] > 0
    assert [r["pair"] for r in enc["pair_records"]] == [0, 5]
    assert record["preset"] == PRESET and "machine" in record and "git_revision" in record
    assert Path(record["plots"]["roc"]).exists() and Path(record["plots"]["latency"]).exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| approach | resolution |" in summary and "2/2 = plaintext" in summary

    # a second complete run appends, and recomputes nothing
    assert run(script, toy_file, tmp_path, "--pairs", "0:1,5:6") == 0
    assert calls["n"] == 11
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert summary in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--preset", "NOPE"], "unknown preset"),
    (["--pairs", "38:41"], "out of range"),
    (["--pairs", "3-4"], "START:END"),
    (["--data", "/nonexistent/folder"], "no such data folder"),
    (["--fold", "2"], "--fold 2"),
])
def test_bad_input_is_one_line_and_writes_nothing(toy_file, tmp_path, capsys, extra, message):
    script = load_script()
    args = ["--model", str(toy_file), "--preset", PRESET, "--output", str(tmp_path / "out"), "--no-progress"]
    assert script.main(args + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_model_and_a_preset_too_small_for_the_model(tmp_path, capsys):
    script = load_script()
    assert script.main(["--model", str(tmp_path / "missing.npz"), "--output", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    # the shipped CryptoFaceNet4 needs 16,384 slots per patch network; the toy ring has 2,048
    assert script.main(["--preset", PRESET, "--output", str(tmp_path / "o")]) == 2
    assert "slots" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_data_that_are_not_aligned_crops_are_refused(toy_file, tmp_path, capsys):
    import io

    from PIL import Image

    def png(size):
        buf = io.BytesIO()
        Image.new("RGB", (size, size), (120, 80, 60)).save(buf, format="PNG")
        return buf.getvalue()

    folder = tmp_path / "data"
    folder.mkdir()
    data.write_verification_bin(folder / "lfw.bin", [png(64)] * 4, [True, False])
    script = load_script()
    assert run(script, toy_file, tmp_path / "out", "--data", str(folder), "--pairs", "0:1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "64x64" in err[0] and "112x112" in err[0]
    assert not (tmp_path / "out").exists()


def test_plaintext_only(toy_file, tmp_path):
    script = load_script()
    assert run(script, toy_file, tmp_path, "--plaintext-only") == 0
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert "encrypted" not in record["datasets"]["lfw"] and not (tmp_path / "pairs.jsonl").exists()
