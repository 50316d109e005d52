"""benchmarks/project_cluster.py on a made-up pair of bench_cryptoface records: the projection follows its stated
model (latency flat in the patch groups on a node per group; LFW wall time falling with nodes down to the
driver's floor), and it writes its figure."""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmarks.scripts import load_benchmark


def record(total: float) -> dict:
    layers = {"group 0: conv0": 30.0, "group 0: head": 10.0, "group 1: conv0": 35.0, "group 1: head": 10.0,
              "network": 46.0, "hint": 0.5}
    return {"patch_groups": 2, "encrypted": {
        "seconds": {"setup": {"keygen": 100.0}, "verification": {"encrypt": 3.0, "embed": 47.0, "match": 20.0,
                                                                 "decrypt": 0.1, "total": total}},
        "seconds_per_layer": layers, "face_upload_bytes": 3 * 30_000_000, "answer_bytes": 10_000,
        "key_bytes": {"galois": 4_000_000_000, "relin": 100_000_000}}}


def test_the_projection_follows_its_model(tmp_path):
    script = load_benchmark("project_cluster")
    local, ray = tmp_path / "local.json", tmp_path / "ray.json"
    local.write_text(json.dumps(record(70.0)))
    ray.write_text(json.dumps(record(74.0)))
    script.main(["--local", str(local), "--ray", str(ray), "--plot", str(tmp_path / "p.png"), "--json"])
    result = script.project(json.loads(local.read_text()), json.loads(ray.read_text()), 1.25e9, 2, [1, 4, 1000])
    m = result["measured"]
    assert m["slowest_group_s"] == 45.0 and m["ray_overhead_per_round_s"] == pytest.approx(2.0)
    lat = result["latency"]
    assert [lat[n]["patch_groups"] for n in lat] == [2, 5, 8]
    cluster = [lat[n]["one_node_per_group_s"] for n in lat]
    two = [lat[n]["two_cores_s"] for n in lat]
    assert max(cluster) - min(cluster) < 0.2 * min(cluster)       # near-resolution-independent
    assert two[2] > 3 * two[0] / 2 and all(c < t for c, t in zip(cluster[1:], two[1:]))
    wall = result["lfw_wall"]
    assert wall[0]["wall_h"] > wall[1]["wall_h"] > wall[2]["wall_h"] * 0.999
    assert wall[2]["wall_h"] >= wall[2]["driver_bound_h"]               # no cluster beats the driver's floor
    assert math.isclose(result["lfw_core_hours"], (7701 * 2 * 45.0 + 6000 * 20.0) / 3600)
    assert (tmp_path / "p.png").stat().st_size > 10_000
