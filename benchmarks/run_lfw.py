"""Encrypted face verification on real data: accuracy in plaintext, then pairs under encryption, with a report.

    python benchmarks/run_lfw.py                       # shipped CryptoFaceNet4 + shipped LFW sample, 2 pairs
    python benchmarks/run_lfw.py --model M.model.npz --data DIR --datasets lfw cfp_fp --pairs 0:10 \\
        --preset N16_QP1762_L29_S38 --workers 2 --output results/

For each dataset:

* plaintext figures over all its pairs (numpy, fused model): 10-fold accuracy with the exact L2 norm
  (``plaintext``), with the model's polynomial 1/sqrt norm and a k-fold threshold (``poly_norm``), and with the
  model's exported decision rule, i.e. what the encrypted side computes (``fused_rule``); ROC curves;
* for the pairs of ``--pairs`` (ranges ``START:END``, comma separated): the first face is enrolled (offline) and
  the second verified (online) under encryption at ``--preset``; per pair the encrypted and plaintext decisions,
  the error of the decrypted probe embedding in bits (this script holds both roles to measure it, see
  ``cryptoface.encrypted.measuring``), the latency of each stage, key switches, bootstraps; the peak memory of the
  process tree (workers included, shared pages once).

Output in ``--output`` (default ``./lfw_results``), appended and never overwritten: ``pairs.jsonl`` (one line per
finished pair: a re-run with the same model, preset, dataset and rule skips them, so an interrupted run resumes;
a torn last line is ignored), ``results.jsonl`` (one record per run, with the machine, git revision and preset),
``summary.md`` (a table laid out like the paper's), and ``roc_<run>.png`` / ``latency_<run>.png``.

Bad input (missing files, unknown dataset or preset, a model the preset cannot hold, pairs out of range) ends
with one line naming the problem and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import TreeMemory, git_revision, machine  # noqa: E402

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data, verification  # noqa: E402
from cryptoface.encrypted import DEFAULT_PRESET  # noqa: E402
from cryptoface.errors import CryptoFaceError  # noqa: E402
from cryptoface.model import FusedPatchCNN, decisions, load_model, poly_distances  # noqa: E402
from fhe_ckks import presets  # noqa: E402
from fhe_ckks.errors import FheError  # noqa: E402

log = logging.getLogger("run_lfw")
DEFAULT_PAIRS = "0:1,5:6"           # in the shipped sample: the first genuine and the first impostor pair


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit status 2)."""


@dataclass
class Dataset:
    name: str
    pairs: data.VerificationSet
    origin: str


def parse_pairs(text: str, count: int) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        try:
            start, end = (int(x) for x in part.split(":"))
        except ValueError:
            raise UsageError(f"--pairs {text!r}: expected START:END[,START:END...]") from None
        if not 0 <= start < end <= count:
            raise UsageError(f"--pairs {part}: out of range, the dataset has pairs 0..{count - 1}")
        out += [i for i in range(start, end) if i not in out]
    return out


def open_datasets(args) -> list[Dataset]:
    if args.data is None:
        vs = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin", "lfw")
        meta = json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())
        vs.folds = np.array([p["fold"] for p in meta["pairs"]])
        if args.datasets not in (None, ["lfw"]):
            raise UsageError("the shipped sample is LFW only: give --data DIR for other datasets")
        return [Dataset("lfw", vs, f"shipped sample ({DEFAULT_SAMPLE})")]
    sets = data.load_verification_dir(args.data, args.datasets or ["lfw"])
    return [Dataset(name, vs, str(Path(args.data) / name)) for name, vs in sets.items()]


def parameter_count(model: FusedPatchCNN) -> int:
    total = 0
    for net in model.nets:
        for value in vars(net).values():
            if isinstance(value, np.ndarray):
                total += value.size
            elif isinstance(value, list):
                total += sum(v.size for b in value for v in vars(b).values() if isinstance(v, np.ndarray))
    return total


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- plaintext


def plaintext_figures(model: FusedPatchCNN, ds: Dataset, fold, progress: bool) -> tuple[dict, dict]:
    from tqdm import tqdm

    n = len(ds.pairs)
    emb = np.empty((2 * n, model.embedding_dim))
    chunk = 64
    for start in tqdm(range(0, n, chunk), desc=f"{ds.name}: plaintext", unit="chunk", disable=not progress):
        idx = range(start, min(n, start + chunk))
        emb[2 * start:2 * idx.stop] = model.embed(ds.pairs.images(model.input_size, idx))
    a, b, same, folds = emb[0::2], emb[1::2], ds.pairs.issame, ds.pairs.folds
    exact = verification.squared_distances(a, b)
    th = model.thresholds.get(ds.name)
    out = {"pairs": n, "plaintext": verification.kfold_accuracy(exact, same, folds).as_dict()}
    curves = {"exact L2 norm": verification.roc(exact, same)}
    if th is not None:
        poly = poly_distances(th.norm, a, b)
        out["poly_norm"] = verification.kfold_accuracy(poly, same, folds).as_dict()
        rule = decisions(model, a, b, ds.name, [fold] * n if fold is not None else folds.tolist())
        out["fused_rule"] = {"accuracy": float(np.mean(rule == same)),
                             "note": "the model's exported polynomial and per-fold tau (what the server computes)"}
        curves["polynomial 1/sqrt norm"] = verification.roc(poly, same)
    out["auc"] = {k: v[2] for k, v in curves.items()}
    return out, curves


# ---------------------------------------------------------------------------- encrypted


def read_done(path: Path, config: str) -> dict[int, dict]:
    """Finished pairs of this configuration; lines that do not parse (a torn write) are ignored."""
    done: dict[int, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("config") == config and rec.get("complete") is True:
            done[int(rec["pair"])] = rec
    return done


def append_line(path: Path, record: dict) -> None:
    line = json.dumps(record, default=float) + "\n"
    with open(path, "ab") as f:
        if f.tell() and path.read_bytes()[-1:] != b"\n":
            f.write(b"\n")          # a torn line from an interrupted run stays a line of its own
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def encrypted_pairs(model, params, ds: Dataset, chosen: list[int], args, config: str, out_dir: Path,
                    progress: bool) -> tuple[list[dict], dict]:
    from tqdm import tqdm

    from cryptoface.encrypted.measuring import MeasuringHarness

    pairs_file = out_dir / "pairs.jsonl"
    done = read_done(pairs_file, config)
    todo = [i for i in chosen if i not in done]
    setup: dict = {}
    if todo:
        log.info("%s: %d pair(s) to encrypt (%d already done); generating keys at %s", ds.name, len(todo),
                 len(chosen) - len(todo), params.literal.name)
        session = MeasuringHarness(model, params, workers=args.workers, dataset=ds.name, fold=args.fold)
        setup = {"seconds": session.setup_seconds, "key_bytes": session.key_bytes,
                 "server_key_gb": session.server_key_bytes / 1e9, "galois_keys": len(session.key_plan)}
        for i in tqdm(todo, desc=f"{ds.name}: encrypted pairs", unit="pair", disable=not progress):
            faces = ds.pairs.pair(i, model.input_size)
            with TreeMemory() as mem:
                res = session.verify_pair(faces[0], faces[1])
            rec = {"config": config, "dataset": ds.name, "pair": i, "same": bool(ds.pairs.issame[i]),
                   "fold": int(ds.pairs.folds[i]), **res.as_dict(), "peak_memory_gb": mem.peak_gb,
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True}
            append_line(pairs_file, rec)
            done[i] = rec
            log.info("pair %d: encrypted %s, plaintext %s, truth %s, error 2^-%.1f, verification %.1f s", i,
                     res.decision_encrypted, res.decision_plaintext, rec["same"], res.embedding_error_bits,
                     res.verification_seconds["total"])
    return [done[i] for i in chosen], setup


def summarize_pairs(recs: list[dict]) -> dict:
    if not recs:
        return {"pairs": 0}

    def mean(path):
        return float(np.mean([r[path[0]][path[1]] for r in recs]))

    return {
        "pairs": len(recs),
        "decisions_correct": sum(r["decision_encrypted"] == r["same"] for r in recs),
        "agree_with_plaintext": sum(r["agrees"] for r in recs),
        "embedding_error_bits_min": min(r["embedding_error_bits"] for r in recs),
        "enrollment_seconds_mean": mean(("enrollment_seconds", "embed")) + mean(("enrollment_seconds", "encrypt")),
        "verification_seconds_mean": mean(("verification_seconds", "total")),
        "verification_stage_seconds_mean": {k: float(np.mean([r["verification_seconds"][k] for r in recs]))
                                            for k in recs[0]["verification_seconds"]},
        "key_switches_per_verification": recs[0]["key_switches"],
        "bootstraps_per_verification": recs[0]["bootstraps"],
        "peak_memory_gb": max((r["peak_memory_gb"] or 0) for r in recs),
    }


# ---------------------------------------------------------------------------- report


def plot_latency(recs: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages: dict[str, float] = {}
    for r in recs:
        layers = {k: v for k, v in r["layer_seconds"].items() if k != "network"}
        groups = max(1, len({k.split(": ", 1)[0] for k in layers if ": " in k}))
        stages["encrypt"] = stages.get("encrypt", 0.0) + r["verification_seconds"]["encrypt"] / len(recs)
        for name, sec in layers.items():
            per_group = ": " in name          # groups run side by side: show the mean over groups
            key = name.split(": ", 1)[-1]
            stages[key] = stages.get(key, 0.0) + sec / len(recs) / (groups if per_group else 1)
        for name in ("match", "decrypt"):
            stages[name] = stages.get(name, 0.0) + r["verification_seconds"][name] / len(recs)
    names = list(stages)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.4), dpi=120)
    ax.barh(names[::-1], [stages[n] for n in names[::-1]], color="#4477aa")
    ax.set_xlabel("seconds (network layers: mean over the patch groups, which run in parallel)")
    total = np.mean([r["verification_seconds"]["total"] for r in recs])
    ax.set_title(f"online verification: {total:.0f} s per probe, by stage")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(record: dict) -> str:
    lines = [f"## Run {record['run']} ({record['started']})", "",
             f"Model `{record['model']['name']}` ({record['model']['file']}), preset `{record['preset']}` "
             f"({record['security']}), workers {record['workers']}, git {record['git_revision']}, "
             f"{record['machine']['cpu']} x {record['machine']['cores']} cores.", "",
             "| approach | resolution | backbone | parameters | bootstraps | dataset | accuracy (plaintext / poly "
             "norm / encrypted pairs) | latency (online verification) | memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, ds in record["datasets"].items():
        p, e = ds["plaintext"], ds.get("encrypted", {"pairs": 0})
        poly = ds["plaintext"].get("poly_norm", {}).get("accuracy")
        enc = (f"{e['decisions_correct']}/{e['pairs']} correct, {e['agree_with_plaintext']}/{e['pairs']} = "
               f"plaintext" if e["pairs"] else "not run")
        lat = f"{e['verification_seconds_mean']:.0f} s" if e["pairs"] else "-"
        mem = f"{e['peak_memory_gb']:.1f} GB" if e["pairs"] else "-"
        boots = e.get("bootstraps_per_verification", "-")
        lines.append(f"| CryptoFace (this implementation) | {record['model']['input_size']}x"
                     f"{record['model']['input_size']} | {record['model']['name']} | "
                     f"{record['model']['parameters'] / 1e6:.2f}M | {boots} | {name} ({p['pairs']} pairs) | "
                     f"{100 * p['plaintext']['accuracy']:.2f} / "
                     f"{'-' if poly is None else f'{100 * poly:.2f}'} / {enc} | {lat} | {mem} |")
    lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an exported .model.npz")
    ap.add_argument("--data", type=Path, help="folder of InsightFace .bin files or a raw LFW folder with pairs.txt")
    ap.add_argument("--datasets", nargs="+", choices=data.VERIFICATION_DATASETS, help="default: lfw")
    ap.add_argument("--fold", type=int, help="decide with this fold's threshold (fitted on the other folds)")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help=f"pairs to encrypt, START:END,... (default {DEFAULT_PAIRS})")
    ap.add_argument("--preset", default=DEFAULT_PRESET, help=f"CKKS parameters (default {DEFAULT_PRESET})")
    ap.add_argument("--workers", type=int, help="processes for the patch groups (default: one per core)")
    ap.add_argument("--plaintext-only", action="store_true", help="accuracy only, no encryption")
    ap.add_argument("--output", type=Path, default=Path("lfw_results"), help="results folder (appended to)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def prepare(args):
    """Everything that can fail on bad input, before anything is written."""
    if not args.model.is_file():
        raise UsageError(f"--model {args.model}: no such file")
    model = load_model(args.model)
    try:
        params = presets.get(args.preset, allow_insecure=args.preset.startswith("INSECURE_"))
    except FheError as exc:
        raise UsageError(f"--preset: {exc}") from None
    datasets = open_datasets(args)
    chosen = {}
    for ds in datasets:
        chosen[ds.name] = [] if args.plaintext_only else parse_pairs(args.pairs, len(ds.pairs))
        if not args.plaintext_only and ds.name not in model.thresholds:
            raise UsageError(f"model {model.name} has no decision rule for {ds.name}: export it with {ds.name} "
                             f"verification data, or use --plaintext-only")
        ds.pairs.images(model.input_size, [0])   # decodes one pair: aligned 112x112 crops, or a clear error
    if args.fold is not None and not args.plaintext_only:
        for ds in datasets:
            if args.fold not in model.thresholds[ds.name].per_fold:
                raise UsageError(f"--fold {args.fold}: model has thresholds for folds "
                                 f"{sorted(model.thresholds[ds.name].per_fold)} of {ds.name}")
    if not args.plaintext_only:
        from cryptoface.encrypted.network import group_patches

        group_patches(model, params.slots)       # raises if the preset cannot hold one patch network
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    return model, params, datasets, chosen


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        model, params, datasets, chosen = prepare(args)
    except (UsageError, CryptoFaceError, FheError, OSError) as exc:
        print(f"run_lfw: error: {exc}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    out_dir = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    run = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    model_hash = file_sha256(args.model)
    record = {"benchmark": "run_lfw", "run": run, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": machine(), "git_revision": git_revision(),
              "model": {"name": model.name, "file": str(args.model), "sha256": model_hash,
                        "input_size": model.input_size, "patch_networks": model.num_patches,
                        "parameters": parameter_count(model)},
              "preset": params.literal.name, "security": params.security,
              "workers": args.workers or os.cpu_count(), "plaintext_only": args.plaintext_only, "datasets": {}}
    roc_curves = {}
    all_recs = []
    for ds in datasets:
        figures, curves = plaintext_figures(model, ds, args.fold, progress)
        roc_curves.update({f"{ds.name}: {k}": v for k, v in curves.items()})
        log.info("%s: plaintext %.4f, poly norm %s over %d pairs", ds.name, figures["plaintext"]["accuracy"],
                 f"{figures['poly_norm']['accuracy']:.4f}" if "poly_norm" in figures else "-", len(ds.pairs))
        entry = {"origin": ds.origin, "plaintext": figures}
        if chosen[ds.name]:
            config = hashlib.sha256(json.dumps([model_hash, params.fingerprint.hex(), ds.name, ds.origin,
                                                args.fold]).encode()).hexdigest()[:16]
            recs, setup = encrypted_pairs(model, params, ds, chosen[ds.name], args, config, out_dir, progress)
            entry["encrypted"] = {**summarize_pairs(recs), "setup": setup, "config": config,
                                  "pair_records": [{k: r[k] for k in ("pair", "same", "decision_encrypted",
                                                                      "decision_plaintext", "embedding_error_bits")}
                                                   for r in recs]}
            all_recs += recs
        record["datasets"][ds.name] = entry
    record["plots"] = {"roc": str(verification.plot_roc(roc_curves, out_dir / f"roc_{run}.png",
                                                        title=f"{model.name}: ROC (plaintext)"))}
    if all_recs:
        record["plots"]["latency"] = str(plot_latency(all_recs, out_dir / f"latency_{run}.png"))
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    append_line(out_dir / "results.jsonl", record)
    with open(out_dir / "summary.md", "a") as f:
        f.write(markdown(record))
    print(markdown(record))
    log.info("report appended to %s (results.jsonl, summary.md, %s)", out_dir, ", ".join(
        Path(p).name for p in record["plots"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
