"""Project encrypted verification onto a cluster, from measured costs: latency with one node per patch group, and
the wall time of a whole-LFW encrypted evaluation against the number of 2-core nodes.

    python benchmarks/bench_cryptoface.py --json --backend local > local.json
    python benchmarks/bench_cryptoface.py --json --backend ray > ray.json
    python benchmarks/project_cluster.py --local local.json --ray ray.json --plot docs/img/cluster_projection.png

Nothing here is measured on a cluster: every figure is read off the two measured runs (one CryptoFaceNet4
verification on this machine, its patch groups in forked workers and as Ray tasks) and combined with the
stated assumptions (``--bandwidth``, the cores per node).  The model of the projection:

* **A patch group** costs ``g`` seconds on one core (the slowest group of the measured run, its layers summed;
  the two groups ran side by side on the two cores, so memory-bandwidth contention is in it).  CryptoFaceNet4,
  9 and 16 have 4, 9 and 16 patch networks of the same shape (32x32 patches), two per group at N = 2^16: 2, 5 and
  8 groups of the same cost.
* **Latency, one node per group**: the client's encryption of all groups (serial, on the client), the slowest
  group, the Ray overhead per task round measured here (Ray's verification minus local's, over the two rounds of
  tasks a verification holds: the groups and the decision), the input and output ciphertexts over the network,
  then the hint's product, the decision and the decryption as measured.  On 2 cores today, ``ceil(groups / 2)``
  rounds of ``g`` instead.
* **Whole LFW** (6,000 pairs, 7,701 distinct images, each embedded once): the compute is ``7,701 x groups x g``
  plus ``6,000 x`` the decision's seconds, spread over ``2 x nodes`` cores; key generation once; the evaluation
  server's task state (the evaluation keys, expanded, with the chains: the bytes the Ray run put in its object
  store) sent once to each node from the head (``nodes x bytes / bandwidth``: the conservative case, with no
  node-to-node relaying); and a floor that no cluster lowers, the driver's serial work: encrypting each face
  (the client's part) and the hint's product.  The wall time is the largest of these bounds plus the fixed parts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import emit  # noqa: E402

LFW_PAIRS, LFW_IMAGES = 6000, 7701
PATCH_NETWORKS = {"CryptoFaceNet4": 4, "CryptoFaceNet9": 9, "CryptoFaceNet16": 16}


def _encrypted(path: Path) -> dict:
    record = json.loads(path.read_text())
    if "encrypted" not in record:
        raise SystemExit(f"error: {path} holds no encrypted run (it was made with --plan-only)")
    return record


def group_seconds(layers: dict[str, float]) -> dict[int, float]:
    """Each group's seconds: the sum of its layers' (``group i: layer`` entries)."""
    out: dict[int, float] = {}
    for key, sec in layers.items():
        if key.startswith("group ") and ": " in key:
            g = int(key.split(":", 1)[0].split()[1])
            out[g] = out.get(g, 0.0) + sec
    return out


def project(local: dict, ray: dict | None, bandwidth: float, cores: int, nodes: list[int]) -> dict:
    enc = local["encrypted"]
    verify = enc["seconds"]["verification"]
    groups = group_seconds(enc["seconds_per_layer"])
    g = max(groups.values())
    n_groups = local["patch_groups"]
    per_group_ct = enc["face_upload_bytes"] / (n_groups + 1)          # the groups' ciphertexts and the hint
    answer = enc["answer_bytes"]
    out_ct = per_group_ct / 4                                        # a group's output: a few levels, not 29
    tail = verify["match"] + verify["decrypt"] + enc["seconds_per_layer"].get("hint", 0.0)
    encrypt_per_group = verify["encrypt"] / (n_groups + 1)
    overhead = 0.0
    if ray is not None:
        overhead = max(0.0, (ray["encrypted"]["seconds"]["verification"]["total"] - verify["total"]) / 2)
    per_patch_group = 2                                              # patch networks per group at N = 2^16
    latency = {}
    for name, patches in PATCH_NETWORKS.items():
        k = math.ceil(patches / per_patch_group)
        network_cluster = g + 2 * overhead + (k * per_group_ct + k * out_ct) / bandwidth
        latency[name] = {
            "patch_groups": k,
            "two_cores_s": (k + 1) * encrypt_per_group + math.ceil(k / cores) * g + tail,
            "one_node_per_group_s": (k + 1) * encrypt_per_group + network_cluster + tail + answer / bandwidth,
        }
    key_bytes = sum(enc["key_bytes"].values())
    # what each node fetches once: the task state as Ray stored it (keys expanded, chains, bootstrappers), else the
    # server's key memory
    traffic = ray["encrypted"].get("ray_traffic_bytes") if ray else None
    per_node = traffic["shared_put"] if traffic else enc.get("server_key_memory_gb", 0.0) * 1e9
    setup = enc["seconds"]["setup"].get("keygen", 0.0)
    compute = LFW_IMAGES * n_groups * g + LFW_PAIRS * verify["match"]
    driver = LFW_IMAGES * (verify["encrypt"] + enc["seconds_per_layer"].get("hint", 0.0))
    wall = []
    for n in nodes:
        spread = compute / (cores * n)
        keys = n * per_node / bandwidth
        wall.append({"nodes": n, "compute_bound_h": spread / 3600, "driver_bound_h": driver / 3600,
                     "key_distribution_h": keys / 3600,
                     "wall_h": (setup + keys + max(spread, driver)) / 3600})
    return {"assumptions": {"bandwidth_bytes_per_s": bandwidth, "cores_per_node": cores,
                            "patch_networks_per_group": per_patch_group, "lfw_pairs": LFW_PAIRS,
                            "lfw_distinct_images": LFW_IMAGES},
            "measured": {"group_seconds": groups, "slowest_group_s": g, "encrypt_s": verify["encrypt"],
                         "match_s": verify["match"], "decrypt_s": verify["decrypt"],
                         "verification_local_s": verify["total"],
                         "verification_ray_s": ray["encrypted"]["seconds"]["verification"]["total"] if ray else None,
                         "ray_overhead_per_round_s": overhead, "key_bytes": key_bytes,
                         "bytes_held_per_node": per_node,
                         "face_upload_bytes": enc["face_upload_bytes"], "answer_bytes": answer,
                         "ray_traffic_bytes": traffic},
            "latency": latency, "lfw_wall": wall,
            "lfw_core_hours": compute / 3600}


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    names = list(result["latency"])
    two = [result["latency"][n]["two_cores_s"] for n in names]
    cluster = [result["latency"][n]["one_node_per_group_s"] for n in names]
    x = range(len(names))
    ax1.bar([i - 0.2 for i in x], two, 0.4, label="2 cores (today's machine)", color="#bb5566")
    ax1.bar([i + 0.2 for i in x], cluster, 0.4, label="one 2-core node per patch group", color="#4477aa")
    ax1.set_xticks(list(x), [f"{n}\n({result['latency'][n]['patch_groups']} groups)" for n in names])
    ax1.set_ylabel("online verification, seconds")
    ax1.set_title("latency: projected from one measured CryptoFaceNet4 run")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3, axis="y")
    nodes = [w["nodes"] for w in result["lfw_wall"]]
    ax2.loglog(nodes, [w["wall_h"] for w in result["lfw_wall"]], "o-", color="#4477aa", label="projected wall time")
    ax2.loglog(nodes, [w["compute_bound_h"] for w in result["lfw_wall"]], "--", color="#999999",
               label="compute / cores")
    ax2.axhline(result["lfw_wall"][0]["driver_bound_h"], color="#bb5566", ls=":",
                label="driver's serial encryption (a floor)")
    ax2.set_xlabel("2-core nodes")
    ax2.set_ylabel("hours")
    ax2.set_title("all 6,000 LFW pairs under encryption (CryptoFaceNet4)")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--local", type=Path, required=True, help="bench_cryptoface.py --json --backend local")
    ap.add_argument("--ray", type=Path, help="bench_cryptoface.py --json --backend ray (the Ray overhead)")
    ap.add_argument("--bandwidth", type=float, default=1.25e9, help="bytes per second between nodes (10 Gb/s)")
    ap.add_argument("--cores", type=int, default=2, help="cores per node")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    ap.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = project(_encrypted(args.local), _encrypted(args.ray) if args.ray else None, args.bandwidth,
                     args.cores, args.nodes)
    if args.plot:
        result["plot"] = str(plot(result, args.plot))
    emit(result, args.json)


if __name__ == "__main__":
    main()
