"""benchmarks/run_lfw.py end to end on a toy ring: report fields, decisions, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryptoface import DEFAULT_SAMPLE, data
from cryptoface.model import fit_exact_thresholds, fit_thresholds, poly_distances, save_model

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
    model.thresholds["lfw"] = fit_exact_thresholds(
        fit_thresholds(poly_distances, e[0::2], e[1::2], vs.issame, folds), e[0::2], e[1::2], vs.issame, folds)
    return save_model(model, tmp_path_factory.mktemp("model") / "toy.model.npz")


def run(script, toy_file, out: Path, *extra: str) -> int:
    return script.main(["--model", str(toy_file), "--preset", PRESET, "--workers", "1", "--no-progress",
                        "--output", str(out), *extra])


def test_two_encrypted_pairs_report_and_resume(toy_file, tmp_path, monkeypatch):
    script = load_script()
    from cryptoface.encrypted import measuring

    # interrupt the first run after one pair (one pair per batch: one decision call each)
    real = measuring.MeasuringHarness.decide
    calls = {"n": 0}

    def flaky(self, pairs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, pairs)

    monkeypatch.setattr(measuring.MeasuringHarness, "decide", flaky)
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
    for key in ("plaintext", "poly_norm", "exact_rule", "auc"):
        assert key in lfw["plaintext"]
    enc = lfw["encrypted"]
    assert enc["pairs"] == 2 and enc["agree_with_plaintext"] == 2
    assert enc["embedding_error_bits_min"] > 12
    assert enc["verification_seconds_mean"] > 0 and enc["key_switches_per_verification"] > 0
    assert [r["pair"] for r in enc["pair_records"]] == [0, 5]
    assert record["preset"] == PRESET and "machine" in record and "git_revision" in record
    assert Path(record["plots"]["roc"]).exists() and Path(record["plots"]["latency"]).exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| approach | resolution |" in summary and "| the model's own |" in summary
    assert f"/ {enc['plaintext_twin_correct']}/2 = " in summary and "/ 2/2 |" in summary
    assert 0 <= enc["accuracy_ci95"][0] <= enc["accuracy"] <= enc["accuracy_ci95"][1] <= 1

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


# ---------------------------------------------------------------------------- hardening: bad input of every kind
#
# Each case ends with one line on stderr and exit status 2 before any expensive work (no plaintext embedding,
# no keys, no output folder made), except a bad image found mid-run: that pair is recorded as failed and the
# run goes on.

# 2 folds x (2 genuine + 2 impostor); every image is used by one pair only (pair 7's second is Fay_F_0002)
PAIRS_TXT = ("2\t2\n"
             "Ann_A\t1\t2\nBob_B\t1\t2\nAnn_A\t3\tBob_B\t3\nCid_C\t1\tDee_D\t1\n"
             "Cid_C\t2\t3\nDee_D\t2\t3\nEve_E\t1\tFay_F\t1\nEve_E\t2\tFay_F\t2\n")
PEOPLE = {"Ann_A": 3, "Bob_B": 3, "Cid_C": 3, "Dee_D": 3, "Eve_E": 2, "Fay_F": 2}


def jpeg(rng, size=112) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def raw_data(tmp_path) -> Path:
    """A raw LFW folder: 16 aligned 112x112 JPEGs of 6 people in aligned_112x112/ and an 8-pair pairs.txt; the
    folder is called ``lfw``, so it is evaluated as dataset ``lfw`` with the model's LFW rule."""
    rng = np.random.default_rng(7)
    root = tmp_path / "lfw"
    for name, count in PEOPLE.items():
        (root / "aligned_112x112" / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (root / "aligned_112x112" / name / f"{name}_{i:04d}.jpg").write_bytes(jpeg(rng))
    (root / "pairs.txt").write_text(PAIRS_TXT)
    return root


def face(root: Path, name: str, number: int) -> Path:
    return root / "aligned_112x112" / name / f"{name}_{number:04d}.jpg"


@pytest.fixture
def work(monkeypatch):
    """Counts the expensive steps: plaintext embeddings and key generation (a MeasuringHarness made)."""
    from cryptoface.encrypted import measuring
    from cryptoface.model import FusedPatchCNN

    counts = {"embed": 0, "keys": 0}
    embed, init = FusedPatchCNN.embed, measuring.MeasuringHarness.__init__

    def counted_embed(self, x):
        counts["embed"] += 1
        return embed(self, x)

    def counted_init(self, *a, **k):
        counts["keys"] += 1
        init(self, *a, **k)

    monkeypatch.setattr(FusedPatchCNN, "embed", counted_embed)
    monkeypatch.setattr(measuring.MeasuringHarness, "__init__", counted_init)
    return counts


def make_fake_harness():
    """A MeasuringHarness without cryptography (its results are made up) that counts sessions and pairs."""
    from cryptoface.encrypted import measuring

    from types import SimpleNamespace

    class FakeHarness:
        sessions = 0
        pairs = 0
        faces = 0

        def __init__(self, model, params, *, workers=None, dataset="lfw", fold=None, seed=None, backend=None,
                     keygen_progress=None):
            type(self).sessions += 1
            self.setup_seconds = {"server_plan": 0.0, "keygen": 0.0, "install_keys": 0.0}
            self.key_bytes, self.server_key_bytes, self.key_plan = {"galois": 1}, 1, [1]
            chain = SimpleNamespace(layers=[1, 2], plan=SimpleNamespace(bootstraps=0))
            self.server = SimpleNamespace(backend=SimpleNamespace(name="local", workers=1, progress=None),
                                          groups=[0], models=[chain])

        def embed_faces(self, faces):
            type(self).faces += len(faces)
            return [SimpleNamespace(face=f) for f in faces]

        def decide(self, pairs):
            return [self.verify_pair(p.face, t.face) for p, t, _ in pairs]

        def verify_pair(self, first, second, online=None):
            type(self).pairs += 1
            return measuring.PairResult(
                decision_encrypted=True, decision_plaintext=True, outcome="same", plaintext_margin=-0.5,
                embedding_error_bits=20.0,
                enrollment_seconds={"encrypt": 0.1, "embed": 1.0},
                verification_seconds={"encrypt": 0.1, "embed": 1.0, "match": 0.1, "decrypt": 0.1, "total": 1.3},
                layer_seconds={"group 0: conv0": 0.5, "group 0: pool+head": 0.5, "network": 1.0},
                key_switches=10, bootstraps=0, upload_bytes=100, answer_bytes=10)

    return FakeHarness


@pytest.fixture
def fake_harness(monkeypatch):
    from cryptoface.encrypted import measuring

    fake = make_fake_harness()
    monkeypatch.setattr(measuring, "MeasuringHarness", fake)
    return fake


def one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_lfw: error: "), err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


def nothing_done(work, out: Path) -> None:
    assert work == {"embed": 0, "keys": 0}
    assert not out.exists()


@pytest.mark.parametrize("content, words", [
    # before: UnicodeDecodeError
    (PAIRS_TXT.encode().replace(b"Bob_B\t1\t2", b"B\xf6b_B\t1\t2"), ["pairs.txt", "not UTF-8", "0xf6"]),
    (b"", ["pairs.txt", "empty"]),                                      # before: IndexError
    (b"\n  \n\t\n", ["pairs.txt", "empty"]),                            # before: IndexError
    (PAIRS_TXT.replace("Cid_C\t1", "Cid\0C\t1").encode(), ["line 5", "name"]),      # before: ValueError (null byte)
    (b"1\t4\n" + PAIRS_TXT.encode().split(b"\n", 1)[1], ["one fold", "two"]),       # before: DataError mid-run
])
def test_bad_pairs_txt_is_one_line(toy_file, raw_data, tmp_path, capsys, work, content, words):
    (raw_data / "pairs.txt").write_bytes(content)
    out = tmp_path / "out"
    assert run(load_script(), toy_file, out, "--data", str(raw_data), "--plaintext-only") == 2
    one_error_line(capsys, *words)
    nothing_done(work, out)


@pytest.mark.parametrize("spoil, words", [
    (lambda p: p.write_bytes(b"not an image at all"), ["Fay_F_0002.jpg", "cannot decode image"]),
    (lambda p: p.write_bytes(jpeg(np.random.default_rng(1), 64)), ["Fay_F_0002.jpg", "64x64", "112x112"]),
    (lambda p: (p.unlink(), p.mkdir()), ["Fay_F_0002.jpg", "not a regular file"]),
])
def test_a_bad_image_in_any_pair_is_found_up_front(toy_file, raw_data, tmp_path, capsys, work, spoil, words):
    """Before: only pair 0 was decoded up front; pair 7's image raised DataError in the plaintext stage, after
    the output folder was made."""
    spoil(face(raw_data, "Fay_F", 2))
    out = tmp_path / "out"
    assert run(load_script(), toy_file, out, "--data", str(raw_data), "--plaintext-only") == 2
    one_error_line(capsys, *words)
    nothing_done(work, out)


def test_a_bad_image_in_a_bin_file_is_found_up_front(toy_file, tmp_path, capsys, work):
    rng = np.random.default_rng(2)
    folder = tmp_path / "data"
    folder.mkdir()
    images = [jpeg(rng) for _ in range(8)]
    images[5] = images[5][:40]                       # pair 2's second image: a truncated header
    data.write_verification_bin(folder / "lfw.bin", images, [True, False, True, False])
    out = tmp_path / "out"
    assert run(load_script(), toy_file, out, "--data", str(folder), "--plaintext-only") == 2
    one_error_line(capsys, "lfw.bin image 5", "cannot decode image")
    nothing_done(work, out)


def test_several_bad_images_are_counted(toy_file, raw_data, tmp_path, capsys, work):
    for name, n in (("Ann_A", 2), ("Eve_E", 1), ("Fay_F", 2)):
        face(raw_data, name, n).write_bytes(b"junk")
    assert run(load_script(), toy_file, tmp_path / "out", "--data", str(raw_data), "--plaintext-only") == 2
    one_error_line(capsys, "Ann_A_0002.jpg", "and 2 more bad images")
    nothing_done(work, tmp_path / "out")


def test_a_preset_too_shallow_for_the_model(toy_file, tmp_path, capsys, work):
    """Before: LevelError from the Server, after the plaintext stage had run."""
    out = tmp_path / "out"
    assert load_script().main(["--model", str(toy_file), "--preset", "INSECURE_N12_QP520_L7_S40",
                               "--output", str(out), "--no-progress"]) == 2
    one_error_line(capsys, "INSECURE_N12_QP520_L7_S40", "7 levels", "16 before the decision's bootstrap")
    nothing_done(work, out)


def test_the_cheap_depth_check_agrees_with_the_server(toy_file):
    """The up-front check refuses exactly the presets the Server cannot plan the model at."""
    from cryptoface.encrypted.network import build_group, patch_network_depth
    from cryptoface.encrypted.protocol import Server
    from cryptoface.model import load_model
    from fhe_ckks import KeyGenerator, presets
    from fhe_ckks.bootstrap.sk_bootstrapper import SecretKeyBootstrapper
    from fhe_ckks.errors import LevelError

    script = load_script()
    model = load_model(toy_file)
    assert patch_network_depth(model) == build_group(model, [0]).depth() == 11
    seen = set()
    for name in presets.names():
        if not name.startswith("INSECURE_") or name.startswith("INSECURE_N10"):
            continue                                 # the secure ones are too big to plan here; N10: too few slots
        params = presets.get(name, allow_insecure=True)
        try:
            script.check_depth(model, params, "lfw", None)
            fits = True
        except script.UsageError:
            fits = False
        double = SecretKeyBootstrapper(params, KeyGenerator(params, seed=bytes(32)).secret_key, params.user_top)
        try:           # as the measuring harness builds it on INSECURE_ presets: the decision's bootstrap a double
            Server(model, params, dataset="lfw", workers=1, testing=True, decision_bootstrapper=double)
            plans = True
        except LevelError:
            plans = False
        assert fits == plans, name
        seen.add(fits)
    assert seen == {True, False}                     # the presets cover both sides


def test_depth_of_the_shipped_model():
    from cryptoface import DEFAULT_MODEL
    from cryptoface.encrypted.network import patch_network_depth
    from cryptoface.model import load_model

    assert patch_network_depth(load_model(DEFAULT_MODEL)) == 23    # DEFAULT_PRESET: 29 >= 23 + 1 + 2, 29 = 13 + 16


def test_output_that_is_a_file(toy_file, tmp_path, capsys, work):
    """Before: FileExistsError (and NotADirectoryError below a file)."""
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    script = load_script()
    assert run(script, toy_file, target, "--plaintext-only") == 2
    one_error_line(capsys, "--output", "results.txt", "not a folder")
    assert run(script, toy_file, target / "sub", "--plaintext-only") == 2
    one_error_line(capsys, "--output", "not a folder")
    assert target.read_text() == "keep me" and work == {"embed": 0, "keys": 0}


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can create files in: mode 0555, and for root (whom modes do not stop) immutable."""
    import shutil
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if _writable(folder) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if _writable(folder):
            pytest.skip("cannot make a folder read-only here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_output_folder(toy_file, read_only_folder, capsys, work, fake_harness):
    """Before: PermissionError when the first finished pair was written, so that pair's work was lost."""
    assert run(load_script(), toy_file, read_only_folder, "--pairs", "0:1") == 2
    one_error_line(capsys, "--output", "not writable")
    assert work["embed"] == 0 and fake_harness.sessions == 0 and list(read_only_folder.iterdir()) == []


def test_a_new_output_folder_below_a_read_only_one(toy_file, read_only_folder, capsys, work):
    """Before: PermissionError from mkdir, a traceback."""
    assert run(load_script(), toy_file, read_only_folder / "a" / "b", "--plaintext-only") == 2
    one_error_line(capsys, "--output", "not writable")
    assert work["embed"] == 0 and list(read_only_folder.iterdir()) == []


@pytest.mark.parametrize("name, extra", [
    ("results.jsonl", ["--plaintext-only"]),     # before: IsADirectoryError at the end, the run's record lost
    ("summary.md", ["--plaintext-only"]),        # before: IsADirectoryError at the end, after results.jsonl
    ("pairs.jsonl", ["--pairs", "0:1"]),         # before: IsADirectoryError reading it, after the plaintext stage
])
def test_an_output_file_that_is_a_folder(toy_file, tmp_path, capsys, work, fake_harness, name, extra):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    assert run(load_script(), toy_file, out, *extra) == 2
    one_error_line(capsys, name, "not a regular file")
    assert work["embed"] == 0 and fake_harness.sessions == 0 and [p.name for p in out.iterdir()] == [name]


@pytest.fixture(scope="module")
def finished_record(toy_file, tmp_path_factory) -> dict:
    """A sound pairs.jsonl record of pair 0 of the shipped sample (made with the fake harness) as run_lfw
    writes it; its configuration is that of every run below with the toy model and the default data."""
    from cryptoface.encrypted import measuring

    out = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(measuring, "MeasuringHarness", make_fake_harness())
        assert run(load_script(), toy_file, out, "--pairs", "0:1") == 0
    (line,) = (out / "pairs.jsonl").read_text().splitlines()
    return json.loads(line)


def _without(key):
    def spoil(rec):
        del rec[key]
        return json.dumps(rec)
    return spoil


def _with(key, value):
    def spoil(rec):
        rec[key] = value
        return json.dumps(rec)
    return spoil


def _pair_text(text):
    return lambda rec: json.dumps(rec).replace('"pair": 0,', f'"pair": {text},')


@pytest.mark.parametrize("spoil, why", [
    (_without("pair"), "pair"),                                    # before: KeyError
    (_with("pair", "zero"), "pair"),                               # before: ValueError
    (_pair_text("NaN"), "pair"),                                   # before: ValueError
    (_pair_text("Infinity"), "pair"),                              # before: OverflowError
    (_pair_text("1e400"), "pair"),                                 # before: OverflowError
    (_with("pair", 10 ** 30), "pair"),                             # before: accepted (a pair that cannot exist)
    (_with("pair", True), "pair"),                                 # before: read as pair 1
    (_without("verification_seconds"), "verification_seconds"),    # before: KeyError in the summary
    (_with("verification_seconds", {"total": "slow"}), "verification_seconds"),   # before: TypeError
    (_without("layer_seconds"), "layer_seconds"),                  # before: KeyError in the latency plot
    (_with("embedding_error_bits", float("nan")), "embedding_error_bits"),    # before: NaN in results.jsonl
    (_with("decision_encrypted", "yes"), "decision_encrypted"),    # before: counted as a wrong decision
    (_with("same", False), "same"),                                # before: accepted against the dataset
    (_with("outcome", "maybe"), "outcome"),
    (_with("decision_encrypted", False), "decision_encrypted"),    # contradicts the outcome "same"
    (lambda rec: b"\xff" + json.dumps(rec).encode(), "UTF-8"),     # before: UnicodeDecodeError
])
def test_malformed_resume_records_are_skipped_with_a_warning(toy_file, finished_record, tmp_path, caplog,
                                                             fake_harness, spoil, why):
    """A record of this configuration that does not hold a finished pair is ignored, with a warning naming
    the line, and its pair is encrypted again; the summary counts only sound records."""
    import copy

    out = tmp_path / "out"
    out.mkdir()
    bad = spoil(copy.deepcopy(finished_record))
    (out / "pairs.jsonl").write_bytes(bad if isinstance(bad, bytes) else bad.encode() + b"\n")
    assert run(load_script(), toy_file, out, "--pairs", "0:1") == 0
    assert fake_harness.pairs == 1                                # pair 0 again
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    fragment = "not UTF-8" if why == "UTF-8" else f"field '{why}'"
    assert any("pairs.jsonl line 1: " + fragment in w for w in warnings), warnings
    enc = json.loads((out / "results.jsonl").read_text().splitlines()[-1])["datasets"]["lfw"]["encrypted"]
    assert enc["pairs"] == 1 and enc["failed"] == 0 and enc["decisions_correct"] == 1
    assert "NaN" not in (out / "results.jsonl").read_text()


def test_other_configurations_and_torn_lines_are_not_warned_about(toy_file, finished_record, tmp_path, caplog,
                                                                  fake_harness):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pairs.jsonl").write_text(json.dumps(finished_record) + "\n"
                                     + json.dumps({**finished_record, "config": "another", "pair": "whatever"})
                                     + "\n" + '{"config": "to')
    assert run(load_script(), toy_file, out, "--pairs", "0:1") == 0
    assert fake_harness.pairs == 0                                # pair 0 is still done
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def _truncated(path: Path) -> None:
    """Cut a JPEG 100 bytes into its scan: the header is whole (it opens), the pixels are not."""
    blob = path.read_bytes()
    path.write_bytes(blob[:blob.index(b"\xff\xda") + 100])


def test_a_corrupt_image_found_mid_run_fails_its_pair_only(toy_file, raw_data, tmp_path, fake_harness):
    """Before: DataError from the plaintext stage, a traceback. Now: pair 7 is left out of the plaintext
    figures and recorded as failed under encryption, and the run goes on; a re-run tries it again."""
    _truncated(face(raw_data, "Fay_F", 2))
    script = load_script()
    out = tmp_path / "out"
    assert run(script, toy_file, out, "--data", str(raw_data), "--pairs", "0:1,7:8") == 0
    assert fake_harness.sessions == 1 and fake_harness.pairs == 1
    lines = [json.loads(ln) for ln in (out / "pairs.jsonl").read_text().splitlines()]
    assert [(r["pair"], r.get("failed", False)) for r in lines] == [(7, True), (0, False)]
    assert "Fay_F_0002.jpg" in lines[0]["reason"] and "truncated" in lines[0]["reason"]
    record = json.loads((out / "results.jsonl").read_text())
    lfw = record["datasets"]["lfw"]
    assert lfw["plaintext"]["pairs"] == 7
    assert [f["pair"] for f in lfw["plaintext"]["failed_pairs"]] == [7]
    enc = lfw["encrypted"]
    assert (enc["pairs"], enc["failed"], enc["decisions_correct"]) == (1, 1, 1)
    assert [f["pair"] for f in enc["failed_pairs"]] == [7]
    assert [(r["pair"], r.get("failed", False)) for r in enc["pair_records"]] == [(0, False), (7, True)]
    assert "/ 1/1, 1 failed |" in (out / "summary.md").read_text()

    # a re-run skips pair 0, tries pair 7 again (no keys needed: it fails before encryption)
    assert run(script, toy_file, out, "--data", str(raw_data), "--pairs", "0:1,7:8") == 0
    assert fake_harness.sessions == 1 and fake_harness.pairs == 1
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 3
    # once the image is fixed, pair 7 is encrypted and counted
    face(raw_data, "Fay_F", 2).write_bytes(jpeg(np.random.default_rng(3)))
    assert run(script, toy_file, out, "--data", str(raw_data), "--pairs", "0:1,7:8") == 0
    assert fake_harness.pairs == 2
    enc = json.loads((out / "results.jsonl").read_text().splitlines()[-1])["datasets"]["lfw"]["encrypted"]
    assert (enc["pairs"], enc["failed"]) == (2, 0)


def test_plaintext_only_with_a_corrupt_image(toy_file, raw_data, tmp_path):
    _truncated(face(raw_data, "Ann_A", 1))
    assert run(load_script(), toy_file, tmp_path, "--data", str(raw_data), "--plaintext-only") == 0
    p = json.loads((tmp_path / "results.jsonl").read_text())["datasets"]["lfw"]["plaintext"]
    assert p["pairs"] == 7 and [f["pair"] for f in p["failed_pairs"]] == [0]
    assert "lfw (7 pairs, 1 failed; " in (tmp_path / "summary.md").read_text()


def test_an_image_that_breaks_during_the_encrypted_stage(toy_file, raw_data, tmp_path, monkeypatch):
    """Really encrypted: pair 0's image is spoilt after the plaintext stage, while the keys are made; pair 0
    is recorded as failed and pair 5 is verified."""
    from cryptoface.encrypted import measuring

    init = measuring.MeasuringHarness.__init__

    def spoil_then_init(self, *a, **k):
        _truncated(face(raw_data, "Ann_A", 2))
        init(self, *a, **k)

    monkeypatch.setattr(measuring.MeasuringHarness, "__init__", spoil_then_init)
    assert run(load_script(), toy_file, tmp_path, "--data", str(raw_data), "--pairs", "0:1,5:6") == 0
    lines = [json.loads(ln) for ln in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [(r["pair"], r.get("failed", False)) for r in lines] == [(0, True), (5, False)]
    assert "Ann_A_0002.jpg" in lines[0]["reason"]
    enc = json.loads((tmp_path / "results.jsonl").read_text())["datasets"]["lfw"]["encrypted"]
    assert (enc["pairs"], enc["failed"], enc["agree_with_plaintext"]) == (1, 1, 1)
    assert Path(json.loads((tmp_path / "results.jsonl").read_text())["plots"]["latency"]).exists()


@pytest.mark.parametrize("setup, words", [
    (lambda d, o: (d / "pairs.txt").write_bytes(b"2\t2\n\xff\xfe"), ["not UTF-8"]),
    (lambda d, o: (o / "results.jsonl").mkdir(parents=True), ["results.jsonl", "not a regular file"]),
])
def test_the_script_prints_one_line_and_no_traceback(toy_file, raw_data, tmp_path, setup, words):
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    setup(raw_data, out)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "run_lfw.py"), "--model", str(toy_file),
                           "--data", str(raw_data), "--plaintext-only", "--output", str(out), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_lfw: error: ") and "Traceback" not in proc.stderr, err
    assert all(w in err[0] for w in words), err


def test_a_face_the_client_refuses_is_a_failed_pair_and_the_run_goes_on(toy_file, raw_data, tmp_path, fake_harness,
                                                                       monkeypatch):
    """The honest client's probe check (ProbeError) fails that pair with its reason; the other pairs run."""
    from cryptoface.errors import ProbeError

    embed = fake_harness.embed_faces
    calls = []

    def refuse_first(self, faces):
        calls.append(1)
        out = embed(self, faces)
        if len(calls) == 1:
            out[0] = ProbeError("squared embedding norm 1 outside [2, 3]")
        return out

    monkeypatch.setattr(fake_harness, "embed_faces", refuse_first)
    out = tmp_path / "out"
    assert run(load_script(), toy_file, out, "--data", str(raw_data), "--pairs", "0:1,5:6") == 0
    lines = [json.loads(ln) for ln in (out / "pairs.jsonl").read_text().splitlines()]
    assert [(r["pair"], r.get("failed", False)) for r in lines] == [(0, True), (5, False)]
    assert "refused by the client" in lines[0]["reason"] and "outside [2, 3]" in lines[0]["reason"]


# ---------------------------------------------------------------------------- real evaluations: whole sets, own data


def test_pairs_all_folds_and_ranges():
    script = load_script()
    folds = np.repeat(np.arange(4), 3)                       # 12 pairs, 4 folds of 3
    assert script.parse_pairs("all", 12, folds) == list(range(12))
    assert script.parse_pairs("fold:2", 12, folds) == [6, 7, 8]
    assert script.parse_pairs("folds:1-2,0:2,7:8", 12, folds) == [3, 4, 5, 6, 7, 8, 0, 1]
    for bad, words in (("fold:4", "folds 0..3"), ("folds:2-1", "folds 0..3"), ("fold:x", "fold:K"),
                       ("every", "START:END"), ("0:13", "out of range")):
        with pytest.raises(script.UsageError, match=words):
            script.parse_pairs(bad, 12, folds)


# 2 folds; images repeat across pairs: 8 pairs name 7 distinct images
SHARED_PAIRS_TXT = ("2\t2\n"
                    "Ann_A\t1\t2\nBob_B\t1\t2\nAnn_A\t1\tBob_B\t1\nAnn_A\t2\tBob_B\t2\n"
                    "Cid_C\t1\t2\nAnn_A\t1\t2\nCid_C\t1\tAnn_A\t1\nCid_C\t3\tBob_B\t1\n")


def own_data(tmp_path: Path, name: str, pairs_txt: str, suffixes=(".png", ".pgm", ".jpg")) -> Path:
    """A raw folder of your own: person folders with PNG, PGM and JPEG crops beside a pairs.txt."""
    from PIL import Image

    rng = np.random.default_rng(11)
    root = tmp_path / name
    people = {"Ann_A": 3, "Bob_B": 3, "Cid_C": 3}
    k = 0
    for person, count in people.items():
        (root / person).mkdir(parents=True)
        for i in range(1, count + 1):
            suffix = suffixes[k % len(suffixes)]
            k += 1
            pixels = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            img = Image.fromarray(pixels).convert("L") if suffix == ".pgm" else Image.fromarray(pixels)
            img.save(root / person / f"{person}_{i:04d}{suffix}")
    (root / "pairs.txt").write_text(pairs_txt)
    return root


def test_your_own_data_under_its_own_name_with_a_rule_fitted_loudly(toy_file, tmp_path, fake_harness, caplog):
    """A folder of PNG/PGM/JPEG crops is evaluated as itself, not as lfw; the model has no rule for it, so one
    is fitted on its folds, and the log, the record and the summary say so."""
    folder = own_data(tmp_path, "clinic_faces", SHARED_PAIRS_TXT)
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="run_lfw"):
        assert run(load_script(), toy_file, out, "--data", str(folder), "--pairs", "fold:0") == 0
    assert any("FITTED HERE" in r.getMessage() and "clinic_faces" in r.getMessage() for r in caplog.records)
    record = json.loads((out / "results.jsonl").read_text())
    assert list(record["datasets"]) == ["clinic_faces"]
    entry = record["datasets"]["clinic_faces"]
    assert entry["origin"] == str(folder) and entry["rule"] == "fitted here"
    assert entry["plaintext"]["exact_rule"]["rule"] == "fitted here"
    assert entry["encrypted"]["pairs"] == 4
    lines = [json.loads(ln) for ln in (out / "pairs.jsonl").read_text().splitlines()]
    assert {(r["dataset"], r["rule"], r["origin"]) for r in lines} == {("clinic_faces", "fitted here", str(folder))}
    assert "**fitted here**" in (out / "summary.md").read_text()
    # --name renames it; a folder with pairs.txt is one dataset
    assert run(load_script(), toy_file, tmp_path / "o2", "--data", str(folder), "--name", "clinic",
               "--plaintext-only") == 0
    assert list(json.loads((tmp_path / "o2" / "results.jsonl").read_text())["datasets"]) == ["clinic"]


def test_each_distinct_image_is_embedded_once(toy_file, tmp_path, fake_harness, monkeypatch):
    """8 pairs name 7 distinct images: the plaintext pass embeds 7 faces, the encrypted pass encrypts and embeds
    7, in batches of one pair or of three."""
    from cryptoface.model import FusedPatchCNN

    folder = own_data(tmp_path, "shared", SHARED_PAIRS_TXT)
    rows = []
    embed = FusedPatchCNN.embed
    monkeypatch.setattr(FusedPatchCNN, "embed", lambda self, x: rows.append(len(x)) or embed(self, x))
    for batch in ("1", "3"):
        rows.clear()
        fake_harness.faces = fake_harness.pairs = 0
        out = tmp_path / f"out{batch}"
        assert run(load_script(), toy_file, out, "--data", str(folder), "--pairs", "all", "--batch", batch) == 0
        assert sum(rows) == 7 and fake_harness.faces == 7 and fake_harness.pairs == 8
        record = json.loads((out / "results.jsonl").read_text())["datasets"]["shared"]
        assert record["plaintext"]["distinct_images"] == 7
        assert record["encrypted"]["setup"]["distinct_images"] == 7
        assert record["encrypted"]["setup"]["pairs_per_batch"] == int(batch)


def test_backend_options_are_checked_up_front(toy_file, tmp_path, capsys, monkeypatch):
    import sys

    script = load_script()
    assert run(script, toy_file, tmp_path / "o", "--ray-address", "127.0.0.1:1") == 2
    assert "--backend ray" in capsys.readouterr().err
    assert run(script, toy_file, tmp_path / "o", "--batch", "0") == 2
    assert "--batch" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)             # as if the ray extra were not installed
    assert run(script, toy_file, tmp_path / "o", "--backend", "ray", "--pairs", "0:1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0]


def test_a_batch_lost_in_the_backend_fails_its_pairs_and_a_rerun_resumes(toy_file, raw_data, tmp_path, fake_harness,
                                                                          monkeypatch):
    """A worker or node lost more often than the backend retries: the batch's pairs are recorded as failed with
    the reason, the next batch goes on, and a re-run encrypts only the lost pairs."""
    from cryptoface.encrypted.backends import WorkerError

    decide = fake_harness.decide
    calls = []

    def lose_first(self, pairs):
        calls.append(len(pairs))
        if len(calls) == 1:
            raise WorkerError("the Ray worker of patch group 1 died (NodeDiedError, after 3 retries)")
        return decide(self, pairs)

    monkeypatch.setattr(fake_harness, "decide", lose_first)
    out = tmp_path / "out"
    assert run(load_script(), toy_file, out, "--data", str(raw_data), "--pairs", "0:1,5:6") == 0
    lines = [json.loads(ln) for ln in (out / "pairs.jsonl").read_text().splitlines()]
    assert [(r["pair"], r.get("failed", False)) for r in lines] == [(0, True), (5, False)]
    assert "lost in the backend" in lines[0]["reason"] and "NodeDiedError" in lines[0]["reason"]
    assert run(load_script(), toy_file, out, "--data", str(raw_data), "--pairs", "0:1,5:6") == 0
    assert calls == [1, 1, 1]                                  # pair 0, pair 5, then pair 0 again only
    enc = json.loads((out / "results.jsonl").read_text().splitlines()[-1])["datasets"]["lfw"]["encrypted"]
    assert (enc["pairs"], enc["failed"]) == (2, 0)


def test_a_bootstrapped_baseline_runs_through_the_script(tmp_path):
    """A baseline model file (a toy AutoFHE ResNet32, numpy weights) runs like a CryptoFaceNet: its rule from the
    sample, its bootstraps by the server's own bootstrapper on the toy twin of the baselines' preset, its row
    named like the paper's."""
    from cryptoface.baselines import save_baseline
    from tests.cryptoface.toy_model import toy_baseline

    vs = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    folds = np.array([p["fold"] for p in json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())["pairs"]])
    faces = vs.images(16)
    model = toy_baseline(faces=faces)
    e = model.embed(faces)
    model.thresholds["lfw"] = fit_exact_thresholds(
        fit_thresholds(poly_distances, e[0::2], e[1::2], vs.issame, folds), e[0::2], e[1::2], vs.issame, folds)
    path = save_baseline(model, tmp_path / "toy-autofhe.model.npz")
    script = load_script()
    assert script.main(["--model", str(path), "--preset", "INSECURE_BOOT_N12_QP1771_L32_S36", "--workers", "1",
                        "--no-progress", "--output", str(tmp_path / "out"), "--pairs", "0:1"]) == 0
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert record["model"]["approach"] == "AutoFHE (this implementation)" and record["model"]["backbone"] == "ResNet32"
    enc = record["datasets"]["lfw"]["encrypted"]
    assert enc["pairs"] == 1 and enc["agree_with_plaintext"] == 1
    assert enc["bootstraps_per_verification"] >= 2            # the network's (the decision's is the double here)
    assert "| AutoFHE (this implementation) | 16x16 | ResNet32 (toy-autofhe) |" in \
        (tmp_path / "out" / "summary.md").read_text()
