"""Benchmark of 1:N identification over the packed gallery: accuracy against plaintext, latency and answer size
as the gallery grows.

    python benchmarks/bench_identify.py --json [--lfw ../shared/data/lfw] [--gallery 128 1000] [--probes 2]

Galleries of N LFW identities, one enrolled image each (``aligned_112x112/<Name>/<Name>_0001.jpg``); probes are
a different image of an enrolled person (``_0002``) and images of people who are not enrolled.

* **Plaintext, every probe** (the fused model): closed-set rank-1 over the enrolled people's probes; the
  open-set decisions of the deployed rule (cos >= c per template): the hit rate (the true identity among the
  matches) and the false-alarm rate (a not-enrolled probe matching anyone).
* **Under encryption, ``--probes`` probes** (half enrolled, half not): the server's packed identification
  (:meth:`~cryptoface.encrypted.Server.identify`): one embedding, its spread, and per group of 510 names four
  packed products (one per 128), one bootstrap of the group's 512 decisions (256 complex slots, unpacked) and
  one sign.  Each of the N decisions is compared with
  the plaintext rule; decisions within the sign's fuzzy band of the threshold are counted apart.  Latency: the
  embedding once per probe, then the gallery stage for each N, against one verification of the same probe
  (its decision stage) in the same run; the answer's size per N.  The first probe's identification against a
  gallery is *cold*: the server reads every record and packs its gallery ciphertexts (``packed_here``).  The
  next probes' are *warm*: the server kept them, since the store did not change.  Both are reported
  (``identification_seconds_cold`` / ``_warm``); ``identification_seconds`` is the warm one when measured.

The galleries are encrypted by the key holder from the fused model's plaintext embeddings
(:func:`cryptoface.encrypted.measuring.gallery_record`): enrolling 1,000 faces through the encrypted network
would take days here, and identification runs on those records exactly as on enrolled ones (enrollment itself,
with its encrypted check, is measured by ``bench_cryptoface.py`` and tested in ``tests/``).  On ``INSECURE_``
presets the bootstraps are the secret-key double (``bootstrap`` says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import TreeMemory, emit  # noqa: E402

from cryptoface import DEFAULT_MODEL, data  # noqa: E402
from cryptoface.encrypted import DEFAULT_PRESET, Stats  # noqa: E402
from cryptoface.encrypted.decision import SIGN_MARGIN  # noqa: E402
from cryptoface.encrypted.measuring import MeasuringHarness, gallery_record  # noqa: E402
from cryptoface.model import FusedPatchCNN, load_model  # noqa: E402
from cryptoface.store import SQLiteStore  # noqa: E402
from fhe_ckks import presets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LFW = ROOT.parent / "shared" / "data" / "lfw"


def lfw_identities(root: Path) -> dict[str, list[Path]]:
    """``{name: [image paths, sorted]}`` of ``root/aligned_112x112``."""
    folder = root / "aligned_112x112"
    if not folder.is_dir():
        raise SystemExit(f"bench_identify: {folder} is not a folder of aligned LFW faces (give --lfw DIR)")
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(folder.iterdir()) if d.is_dir()}


def choose(people: dict[str, list[Path]], gallery: int, outsiders: int, seed: int):
    """``gallery`` people with two or more images (enrolled: their first; probe: their second) and
    ``outsiders`` other people (probe: their first image)."""
    rng = np.random.default_rng(seed)
    multi = sorted(n for n, imgs in people.items() if len(imgs) >= 2)
    if len(multi) < gallery:
        raise SystemExit(f"bench_identify: only {len(multi)} people with two images, {gallery} asked")
    enrolled = [multi[i] for i in rng.permutation(len(multi))[:gallery]]
    rest = sorted(set(people) - set(enrolled))
    others = [rest[i] for i in rng.permutation(len(rest))[:outsiders]]
    return enrolled, others


def embed_paths(model: FusedPatchCNN, paths: list[Path], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed faces and their unit embeddings, in chunks."""
    faces, units = [], []
    for start in range(0, len(paths), 64):
        chunk = [data.check_aligned(data.read_image(p), str(p)) for p in paths[start:start + 64]]
        x = data.preprocess(np.stack(chunk), model.input_size)
        e = model.embed(x)
        faces.append(x)
        units.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    return np.concatenate(faces), np.concatenate(units)


def plaintext_figures(gallery_units: np.ndarray, probes_in: np.ndarray, probes_out: np.ndarray, c: float) -> dict:
    """Rank-1 (closed set), hit and false-alarm rates of the open-set rule cos >= c."""
    sim_in, sim_out = probes_in @ gallery_units.T, probes_out @ gallery_units.T
    truth = np.arange(len(probes_in))
    return {"closed_set_rank1": float(np.mean(np.argmax(sim_in, axis=1) == truth)),
            "open_set_hit_rate": float(np.mean(sim_in[truth, truth] >= c)),
            "open_set_false_matches_per_enrolled_probe": float(np.mean(np.sum(sim_in >= c, axis=1)
                                                                       - (sim_in[truth, truth] >= c))),
            "open_set_false_alarm_rate": float(np.mean(np.any(sim_out >= c, axis=1))),
            "probes_enrolled": len(probes_in), "probes_not_enrolled": len(probes_out)}


def run(model: FusedPatchCNN, preset: str, people: dict[str, list[Path]], sizes: list[int], probes: int,
        outsiders: int, seed: int, workers: int | None) -> dict:
    n_max = max(sizes)
    enrolled, others = choose(people, n_max, max(outsiders, probes), seed)
    gallery_faces, gallery_units = embed_paths(model, [people[n][0] for n in enrolled])
    in_faces, in_units = embed_paths(model, [people[n][1] for n in enrolled])
    out_faces, out_units = embed_paths(model, [people[n][0] for n in others])
    params = presets.get(preset, allow_insecure=preset.startswith("INSECURE_"))
    t0 = time.perf_counter()
    harness = MeasuringHarness(model, params, workers=workers)
    server, client = harness.server, harness.client
    folder = Path(tempfile.mkdtemp(prefix="bench-identify-store-"))
    server.store = SQLiteStore(folder / "gallery.sqlite")     # on disk: 1,000 records are gigabytes
    server.store.bind(server.store_identity())
    setup = {**harness.setup_seconds, "harness": time.perf_counter() - t0}
    c = server.cos_threshold
    record = {"model": model.name, "preset": preset, "gallery_sizes": sizes, "cos_threshold": c,
              "bootstrap": harness.decision_bootstrap, "group_capacity": server.gallery.capacity,
              "setup_seconds": setup, "server_key_memory_gb": harness.server_key_bytes / 1e9,
              "plaintext": {str(n): plaintext_figures(gallery_units[:n], in_units[:n], out_units, c) for n in sizes}}

    t0 = time.perf_counter()
    sizes_of = []
    for name, unit in zip(enrolled, gallery_units):
        blob = gallery_record(harness, unit)
        sizes_of.append(len(blob))
        server.store.put(name, blob)
    record["gallery_encryption_seconds"] = time.perf_counter() - t0
    record["template_record_bytes"] = int(np.mean(sizes_of))

    # the encrypted probes: alternately a probe of an enrolled person (among the first of every gallery size)
    # and one of a person not enrolled
    chosen = []
    for k in range(probes):
        chosen.append(("enrolled", k // 2, in_faces[k // 2], in_units[k // 2]) if k % 2 == 0 else
                      ("not enrolled", k // 2, out_faces[k // 2], out_units[k // 2]))
    band = SIGN_MARGIN * (2.0 + abs(c))              # |cos - c| inside it: the sign may read either way
    per_size = {str(n): {"gallery_seconds": [], "answer_bytes": None, "decisions": 0, "agree": 0,
                         "in_band": 0, "disagree_outside_band": 0, "hits": 0, "false_matches": 0,
                         "packed_here": [], "stages": []}
                for n in sizes}
    verification, embeds, memory = [], [], []
    for kind, index, face, unit in chosen:
        info = server.public_info()
        stats = Stats()
        probe = client.encrypt_face(face, info)
        t0 = time.perf_counter()
        emb = server.embed(probe, stats)
        embeds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.outcome(server.match(emb, enrolled[0]))
        verification.append(embeds[-1] + time.perf_counter() - t0)
        for n in sorted(sizes):
            sampler = TreeMemory()
            call = Stats()
            with sampler:                                              # the gallery of the first n people
                t0 = time.perf_counter()
                answers = server.identify_embedded(emb, call, names=enrolled[:n])
                elapsed = time.perf_counter() - t0
            got = client.identification(answers)
            row = per_size[str(n)]
            row["gallery_seconds"].append(elapsed)
            # the first identification against a gallery packs it (reads every record); later ones reuse it
            row["packed_here"].append("gallery: packing (wall)" in call.seconds)
            row["stages"].append({k: round(v, 3) for k, v in call.seconds.items()})
            row["answer_bytes"] = sum(len(a) for _, a in answers)
            row["groups"] = len(answers)
            memory.append(sampler.peak_gb)
            cos = gallery_units[:n] @ unit
            for j, name in enumerate(enrolled[:n]):
                want = "same" if cos[j] >= c else "different"
                row["decisions"] += 1
                if got[name].kind == want:
                    row["agree"] += 1
                elif abs(cos[j] - c) < band:
                    row["in_band"] += 1
                else:
                    row["disagree_outside_band"] += 1
                if got[name].kind == "same":
                    if kind == "enrolled" and j == index:
                        row["hits"] += 1
                    else:
                        row["false_matches"] += 1
    shutil.rmtree(folder, ignore_errors=True)
    one = float(np.mean(verification))
    for n in sizes:
        row = per_size[str(n)]
        for when, packed in (("cold", True), ("warm", False)):
            times = [t for t, p in zip(row["gallery_seconds"], row["packed_here"]) if p == packed]
            if times:
                row[f"identification_seconds_{when}"] = float(np.mean(embeds) + np.mean(times))
                row[f"ratio_to_verification_{when}"] = row[f"identification_seconds_{when}"] / one
        # the steady state of a server whose gallery did not change since its last identification, when measured
        row["identification_seconds"] = row.get("identification_seconds_warm", row["identification_seconds_cold"])
        row["ratio_to_verification"] = row["identification_seconds"] / one
    record.update({"encrypted_probes": [{"kind": k, "index": i} for k, i, _, _ in chosen],
                   "embed_seconds": embeds, "verification_seconds": verification,
                   "encrypted": per_size, "fuzzy_band": band,
                   "peak_memory_gb_during_identification": max((m for m in memory if m), default=None)})
    return record


def sample_identities() -> dict[str, list[Path]]:
    """The shipped LFW sample's people as files (for runs without the shared data, e.g. the tests)."""
    from cryptoface import DEFAULT_SAMPLE

    sample = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    meta = json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())["pairs"]
    out = Path(tempfile.mkdtemp(prefix="bench-identify-"))
    people: dict[str, dict[int, Path]] = {}
    for i, pair in enumerate(meta):
        for k, src in zip(("first", "second"), sample.sources[2 * i: 2 * i + 2]):
            name, num = pair[k]
            path = out / f"{name}_{num:04d}.jpg"
            path.write_bytes(src if isinstance(src, bytes) else Path(src).read_bytes())
            people.setdefault(name, {})[num] = path
    return {n: [p for _, p in sorted(imgs.items())] for n, imgs in people.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help="LFW with aligned_112x112/ (default ../shared/data/lfw)")
    ap.add_argument("--gallery", type=int, nargs="+", default=[128, 1000], help="gallery sizes N")
    ap.add_argument("--probes", type=int, default=2, help="probes identified under encryption")
    ap.add_argument("--outsiders", type=int, default=500, help="not-enrolled probes in the plaintext figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    model = load_model(args.model)
    people = lfw_identities(args.lfw) if args.lfw.is_dir() else sample_identities()
    emit(run(model, args.preset, people, sorted(args.gallery), args.probes, args.outsiders, args.seed, args.workers),
         args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
