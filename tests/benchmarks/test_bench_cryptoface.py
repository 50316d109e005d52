"""benchmarks/bench_cryptoface.py's encrypted run on a toy ring: its record has the figures issue #6 asks for."""

from __future__ import annotations

from tests.benchmarks.scripts import BENCHMARKS, load_benchmark

from tests.cryptoface.toy_model import toy_model


def test_encrypted_run_record():
    bench = load_benchmark("bench_cryptoface")
    model = bench.with_sample_thresholds(toy_model())
    rec = bench.encrypted_run(model, "INSECURE_N12_QP900_L18_S40", pair=0, workers=1)
    assert rec["decisions_equal"] and rec["embedding_error_bits"] > 12
    assert set(rec["seconds"]) == {"setup", "enrollment", "verification"}
    assert {"keygen", "install_keys"} <= set(rec["seconds"]["setup"])
    assert rec["seconds"]["verification"]["total"] >= rec["seconds"]["verification"]["embed"] > 0
    assert any(k.endswith("conv0") for k in rec["seconds_per_layer"])
    assert rec["key_switches_per_image"] > 0 and rec["bootstraps_per_image"] == 1      # the decision's
    assert rec["decision_bootstrap"] == "secret-key double" and rec["outcome"] in ("same", "different")
    assert rec["galois_keys"] > 0 and rec["server_key_memory_gb"] > 0 and rec["face_upload_bytes"] > 0
    assert rec["peak_memory_gb_during_verification"] is None or rec["peak_memory_gb_during_verification"] > 0


def test_baseline_ratios_read_old_and_new_records():
    """compare_with reads a record of any commit: an old one without a verification total sums its stages."""
    bench = load_benchmark("bench_cryptoface")
    base = {"revision": "abc", "key_switches_per_patch_network": 280.0, "diagonals_per_group": 5000,
            "encrypted": {"seconds": {"verification": {"encrypt": 1.0, "embed": 79.0}},
                          "seconds_per_layer": {"network": 78.0}, "peak_memory_gb_during_verification": 8.0,
                          "server_key_memory_gb": 4.0}}
    mine = {"key_switches_per_patch_network": 140.0, "diagonals_per_group": 2000, "galois_keys": 30,
            "encrypted": {"seconds": {"verification": {"encrypt": 1.0, "embed": 30.0, "total": 40.0}},
                          "seconds_per_layer": {"network": 39.0}, "peak_memory_gb_during_verification": 4.0,
                          "server_key_memory_gb": 3.0}}
    out = bench.compare_with(base, mine)
    assert out["verification_seconds"] == 80.0 and out["revision"] == "abc"
    r = out["ratio_this_run_to_baseline"]
    assert r["verification_seconds"] == 0.5 and r["network_seconds"] == 0.5
    assert r["key_switches_per_patch_network"] == 0.5 and r["diagonals_per_group"] == 0.4
    assert r["peak_memory_gb_during_verification"] == 0.5 and r["server_key_memory_gb"] == 0.75
    assert "galois_keys" not in r                 # the old record has none: left out, not an error
    plan_only = bench.compare_with({k: v for k, v in base.items() if k != "encrypted"}, mine)
    assert set(plan_only["ratio_this_run_to_baseline"]) == {"key_switches_per_patch_network", "diagonals_per_group"}
    broken = dict(base, encrypted={"seconds": {}})           # a record without figures gives no ratio
    assert set(bench.compare_with(broken, mine)["ratio_this_run_to_baseline"]) == set(plan_only[
        "ratio_this_run_to_baseline"])


def test_run_at_revision_measures_another_commit_in_a_worktree():
    """The baseline runs a script of the named commit in a child process and returns its record (here the
    ring benchmark at HEAD on a tiny ring); an unknown revision is refused; no worktree is left behind."""
    import subprocess

    import pytest

    harness = load_benchmark("harness")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCHMARKS, capture_output=True, text=True).stdout.strip()
    rec = harness.run_at_revision("HEAD", "bench_ring.py", ["--log-n", "10", "--limbs", "2", "--conv-from", "2",
                                                             "--conv-to", "3"])
    assert rec["revision"] == head and rec["git_revision"] == head[:len(rec["git_revision"])]
    assert rec["log_n"] == 10
    with pytest.raises(RuntimeError, match="unknown revision"):
        harness.run_at_revision("no-such-revision-0000", "bench_ring.py", [])
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=BENCHMARKS, capture_output=True, text=True).stdout
    assert "bench-baseline-" not in worktrees


def test_profile_of_a_toy_embedding_covers_its_time():
    """profile_cryptoface on a toy ring: the stages cover the embedding (shares sum to 1), key switching
    and the diagonals' encoding are seen, and the wrapped methods are restored afterwards."""
    from fhe_ckks.rlwe.keyswitch import KeySwitcher

    decompose = KeySwitcher.decompose
    prof = load_benchmark("profile_cryptoface")
    bench = load_benchmark("bench_cryptoface")
    rec = prof.profile(bench.with_sample_thresholds(toy_model()), "INSECURE_N12_QP900_L18_S40")
    stages = {row["stage"]: row for row in rec["stages"]}
    assert rec["seconds"] > 0 and rec["key_switches"] > 0
    assert abs(sum(row["share"] for row in rec["stages"]) - 1) < 1e-3
    assert all(row["seconds"] >= 0 for row in rec["stages"])        # exclusive times: nothing counted twice
    assert stages["key switch: ModUp"]["calls"] > 0 and stages["diagonals: encoding"]["calls"] > 0
    assert stages["key switch: inner product"]["calls"] >= stages["key switch: ModUp"]["calls"]
    assert stages["key switch: ModDown"]["calls"] == 2 * stages["key switch: inner product"]["calls"]
    assert KeySwitcher.decompose is decompose


def test_the_benchmark_measures_trained_models_only(tmp_path):
    """pick_model: a shipped name or a file of the asked input size with its fitted rule; anything else (a size
    without a shipped model, a wrong size, a model without rules) stops the benchmark with the reason."""
    import pytest

    from cryptoface import DEFAULT_MODEL, shipped_models
    from cryptoface.model import load_model, save_model
    from tests.cryptoface.toy_model import toy_model

    bench = load_benchmark("bench_cryptoface")
    assert bench.pick_model(None, 64).digest() == load_model(DEFAULT_MODEL).digest()
    assert bench.pick_model("cryptofacenet4", 64).name == load_model(DEFAULT_MODEL).name
    with pytest.raises(SystemExit, match="takes 64x64 inputs, not 96"):
        bench.pick_model("cryptofacenet4", 96)
    for size, name in ((96, "cryptofacenet9"), (128, "cryptofacenet16")):
        if name not in shipped_models():
            with pytest.raises(SystemExit, match="train and export one"):
                bench.pick_model(None, size)
    toy = toy_model()
    toy.thresholds.clear()
    path = save_model(toy, tmp_path / "toy.model.npz")
    with pytest.raises(SystemExit, match="no fitted 'lfw' decision rule"):
        bench.pick_model(str(path), toy.input_size)
