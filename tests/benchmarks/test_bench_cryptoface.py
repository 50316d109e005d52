"""benchmarks/bench_cryptoface.py's encrypted run on a toy ring: its record has the figures issue #6 asks for."""

from __future__ import annotations

from tests.benchmarks.scripts import load_benchmark

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
