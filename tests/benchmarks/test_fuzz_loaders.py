"""benchmarks/fuzz_loaders.py, a few trials per kind: every mutated input is refused with a typed error or loads
as something valid (never an untyped error, never an invalid object accepted)."""

from __future__ import annotations

import json

from tests.benchmarks.scripts import load_benchmark


def test_a_short_fuzz_run_finds_no_untyped_error_and_no_accepted_invalid_input(capsys):
    fuzz = load_benchmark("fuzz_loaders")
    assert fuzz.main(["--trials", "40", "--seed", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["kinds"]) == set(fuzz.KINDS)
    for kind, counts in record["kinds"].items():
        assert counts["untyped"] == 0 and counts["accepted"] == 0, (kind, counts["failures"])
        assert sum(counts[o] for o in fuzz.OUTCOMES) == 40
        assert counts["typed"] >= 20, (kind, counts)
    assert record["totals"]["untyped"] == record["totals"]["accepted"] == 0


def test_the_classifier_counts_what_it_should(tmp_path):
    """The harness itself: an untyped error, an accepted invalid input and a valid change are told apart."""
    fuzz = load_benchmark("fuzz_loaders")
    valid, invalid = fuzz.Mutation(b"new", fuzz.MAYBE, "t"), fuzz.Mutation(b"new", fuzz.INVALID, "t")

    def target(load, encodes=True):
        return fuzz.Target("k", [b"old"], load, KeyError, [], lambda obj, data: encodes, {})

    def boom(data):
        raise ValueError(data)

    assert fuzz.classify(target(lambda d: {}[d]), invalid, b"old") == "typed"
    assert fuzz.classify(target(boom), invalid, b"old") == "untyped"
    assert fuzz.classify(target(lambda d: d), invalid, b"old") == "accepted"
    assert fuzz.classify(target(lambda d: d), valid, b"old") == "valid"
    assert fuzz.classify(target(lambda d: d, encodes=False), valid, b"old") == "accepted"
