"""benchmarks/bench_identify.py on a toy ring and the shipped LFW sample: its record has the figures issue #18
asks for, and the encrypted decisions equal the plaintext rule."""

from __future__ import annotations

from tests.benchmarks.scripts import load_benchmark

from tests.cryptoface.toy_model import toy_model


def test_identification_record_on_a_toy_ring():
    bench = load_benchmark("bench_identify")
    model = load_benchmark("bench_cryptoface").with_sample_thresholds(toy_model())
    people = bench.sample_identities()
    assert sum(len(images) >= 2 for images in people.values()) >= 10
    rec = bench.run(model, "INSECURE_N12_QP900_L18_S40", people, [4, 10], probes=2, outsiders=20, seed=0,
                    workers=1)
    assert rec["bootstrap"] == "secret-key double" and rec["group_capacity"] == 1022
    for n in ("4", "10"):
        plain, enc = rec["plaintext"][n], rec["encrypted"][n]
        assert 0 <= plain["closed_set_rank1"] <= 1 and plain["probes_enrolled"] == int(n)
        assert enc["decisions"] == 2 * int(n) and enc["disagree_outside_band"] == 0
        assert enc["agree"] + enc["in_band"] == enc["decisions"]
        assert enc["groups"] == 1 and enc["answer_bytes"] > 0
        assert enc["identification_seconds"] > 0 and enc["ratio_to_verification"] > 0
        assert enc["packed_here"] == [True, False]            # the second probe finds the gallery packed
        assert enc["identification_seconds"] == enc["identification_seconds_warm"]
        assert enc["ratio_to_verification_cold"] > 0
    assert len(rec["embed_seconds"]) == len(rec["verification_seconds"]) == 2
    assert rec["template_record_bytes"] > 0
