"""Encrypted face verification on real data: accuracy in plaintext, then pairs under encryption, with a report.

    python benchmarks/run_lfw.py                       # shipped CryptoFaceNet4 + shipped LFW sample, 2 pairs
    python benchmarks/run_lfw.py --model M.model.npz --data DIR --datasets lfw cfp_fp --pairs 0:10 \\
        --preset N16_QP1762_L29_S38 --workers 2 --output results/

For each dataset:

* plaintext figures over all its pairs (numpy, fused model): 10-fold accuracy with the exact L2 norm
  (``plaintext``), with the model's polynomial 1/sqrt norm and a k-fold threshold (``poly_norm``, the rule of
  earlier versions), and with the model's exported exact cosine rule and per-fold thresholds, i.e. what the
  server decides under encryption (``exact_rule``); ROC curves;
* for the pairs of ``--pairs`` (ranges ``START:END``, comma separated): the first face is enrolled (offline) and
  the second verified (online) under encryption at ``--preset``; per pair the encrypted and plaintext decisions,
  the error of the decrypted probe embedding in bits (this script holds both roles to measure it, see
  ``cryptoface.encrypted.measuring``), the latency of each stage, key switches, bootstraps; the peak memory of the
  process tree (workers included, shared pages once).

Output in ``--output`` (default ``./lfw_results``), appended and never overwritten: ``pairs.jsonl`` (one line per
finished pair: a re-run with the same model, preset, dataset and rule skips them, so an interrupted run resumes;
a torn last line is ignored, and a malformed record is ignored with a warning and its pair encrypted again),
``results.jsonl`` (one record per run, with the machine, git revision and preset), ``summary.md`` (a table laid
out like the paper's), and ``roc_<run>.png`` / ``latency_<run>.png``.

Bad input ends with one line naming the problem and exit status 2, before any expensive work and before anything
is written: an output folder that cannot be made or written to (checked first, with a probe file that is
removed again) or whose ``pairs.jsonl`` / ``results.jsonl`` / ``summary.md`` is not a regular file; a missing or
unreadable model; an unknown dataset or preset; a preset too small (slots) or too shallow (levels) for the model;
a pairs file that is not strict UTF-8 LFW format, or one fold only; a missing, unreadable or undecodable image or
one that is not an aligned 112x112 crop, in any pair (every image's header is read up front); pairs out of range.
An image whose header is sound but whose pixels do not decode is found when it is used: its pair is left out of
the plaintext figures and, if chosen, recorded in ``pairs.jsonl`` as failed with the reason (a re-run tries it
again); the run goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import TreeMemory, git_revision, machine  # noqa: E402

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data, verification  # noqa: E402
from cryptoface.encrypted import DEFAULT_PRESET  # noqa: E402
from cryptoface.errors import CryptoFaceError, ProbeError  # noqa: E402
from cryptoface.model import FusedPatchCNN, exact_decisions, load_model, poly_distances  # noqa: E402
from fhe_ckks import presets  # noqa: E402
from fhe_ckks.errors import FheError  # noqa: E402

log = logging.getLogger("run_lfw")
DEFAULT_PAIRS = "0:1,5:6"           # in the shipped sample: the first genuine and the first impostor pair
APPENDED = ("pairs.jsonl", "results.jsonl", "summary.md")   # the files of --output every run appends to
PROTOCOL = "hinted-cosine-decision"   # in the records' key: pairs decided by earlier protocols are not reused


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit status 2)."""


@dataclass
class Dataset:
    name: str
    pairs: data.VerificationSet
    origin: str
    chosen: list[int] = field(default_factory=list)      # pairs to encrypt
    config: str = ""                                      # what pairs.jsonl records of this run are keyed by
    done: dict[int, dict] = field(default_factory=dict)  # pairs finished by earlier runs (pairs.jsonl)


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


def plaintext_figures(model: FusedPatchCNN, ds: Dataset, fold, progress: bool) -> tuple[dict, dict, dict[int, str]]:
    """The figures over every pair whose images decode, the ROC curves, and ``{pair: reason}`` for the others
    (left out, listed under ``failed_pairs``)."""
    from tqdm import tqdm

    n = len(ds.pairs)
    parts, kept, failed = [], [], {}
    chunk = 64
    for start in tqdm(range(0, n, chunk), desc=f"{ds.name}: plaintext", unit="chunk", disable=not progress):
        x, ok, bad = ds.pairs.decodable_images(model.input_size, range(start, min(n, start + chunk)))
        if ok:
            parts.append(model.embed(x))
        kept += ok
        failed.update(bad)
    for i, why in failed.items():
        log.warning("%s: pair %d left out of the plaintext figures: %s", ds.name, i, why)
    out: dict = {"pairs": len(kept)}
    if failed:
        out["failed_pairs"] = [{"pair": i, "reason": why} for i, why in sorted(failed.items())]
    emb = np.concatenate(parts) if parts else np.empty((0, model.embedding_dim))
    a, b, same, folds = emb[0::2], emb[1::2], ds.pairs.issame[kept], ds.pairs.folds[kept]
    if len(set(folds.tolist())) < 2:
        out["error"] = f"{len(failed)} of {n} pairs do not decode; the others cover fewer than two folds"
        log.error("%s: no plaintext figures: %s", ds.name, out["error"])
        return out, {}, failed
    exact = verification.squared_distances(a, b)
    th = model.thresholds.get(ds.name)
    out["plaintext"] = verification.kfold_accuracy(exact, same, folds).as_dict()
    curves = {"exact L2 norm": verification.roc(exact, same)}
    if th is not None:
        poly = poly_distances(th.norm, a, b)
        out["poly_norm"] = verification.kfold_accuracy(poly, same, folds).as_dict()
        if th.exact_tau is not None:
            rule = exact_decisions(model, a, b, ds.name, [fold] * len(kept) if fold is not None else folds.tolist())
            out["exact_rule"] = {"accuracy": float(np.mean(rule == same)),
                                 "note": "the model's exported cosine thresholds, per fold (what the server decides "
                                         "under encryption)"}
        curves["polynomial 1/sqrt norm"] = verification.roc(poly, same)
    out["auc"] = {k: v[2] for k, v in curves.items()}
    return out, curves, failed


# ---------------------------------------------------------------------------- encrypted


def _finite(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _count(v) -> bool:
    return type(v) is int and 0 <= v < 2**63


def _seconds(*required: str):
    def check(v) -> bool:
        return (isinstance(v, dict) and all(k in v for k in required)
                and all(isinstance(k, str) and _finite(x) and x >= 0 for k, x in v.items()))
    return check


#: What a finished pair's record in pairs.jsonl must hold (what the summary, the plots and the report read).
RECORD_FIELDS = {
    "pair": _count, "same": lambda v: type(v) is bool, "fold": _count,
    "decision_encrypted": lambda v: type(v) is bool, "decision_plaintext": lambda v: type(v) is bool,
    "outcome": lambda v: v in ("same", "different", "invalid"),
    "agrees": lambda v: type(v) is bool, "plaintext_margin": _finite, "embedding_error_bits": _finite,
    "enrollment_seconds": _seconds("encrypt", "embed"),
    "verification_seconds": _seconds("encrypt", "embed", "match", "decrypt", "total"),
    "layer_seconds": _seconds(), "key_switches": _count, "bootstraps": _count,
    "peak_memory_gb": lambda v: v is None or (_finite(v) and v >= 0), "complete": lambda v: v is True,
}


def record_problem(rec: dict, issame: np.ndarray) -> str | None:
    """Why ``rec`` (a record of this configuration) is not a finished pair of this dataset; None if it is."""
    for key, ok in RECORD_FIELDS.items():
        if key not in rec:
            return f"field '{key}' is missing"
        if not ok(rec[key]):
            return f"field '{key}' has a bad value ({json.dumps(rec[key], default=repr)[:40]})"
    if rec["pair"] >= len(issame):
        return f"field 'pair' is {rec['pair']}, the dataset has pairs 0..{len(issame) - 1}"
    if rec["same"] != bool(issame[rec["pair"]]):
        return f"field 'same' disagrees with the dataset's label of pair {rec['pair']}"
    if rec["decision_encrypted"] != (rec["outcome"] == "same"):
        return "field 'decision_encrypted' contradicts the outcome"
    if rec["agrees"] != (rec["outcome"] == ("same" if rec["decision_plaintext"] else "different")):
        return "field 'agrees' contradicts the two decisions"
    return None


def read_done(path: Path, config: str, issame: np.ndarray) -> dict[int, dict]:
    """Finished pairs of this configuration in ``pairs.jsonl`` (the last sound record of each pair).

    Ignored quietly: records of other configurations, failed pairs (a re-run tries them again) and lines that
    are not JSON (torn writes of interrupted runs; counted at INFO). Ignored with a warning naming the line,
    the pair then being encrypted again: a record of this configuration that does not hold a finished pair
    (:func:`record_problem`: a field missing, of the wrong type, not finite, a pair that does not exist or
    whose label disagrees), a JSON line that is not a record, and a line that is not UTF-8."""
    done: dict[int, dict] = {}
    if not path.exists():
        return done
    torn, bad = 0, []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append((number, "not UTF-8"))
            continue
        except (ValueError, RecursionError):
            torn += 1
            continue
        if not isinstance(rec, dict):
            bad.append((number, "not a JSON object"))
            continue
        if rec.get("config") != config or rec.get("failed") is True:
            continue
        why = record_problem(rec, issame)
        if why:
            bad.append((number, why))
        else:
            done[rec["pair"]] = rec
    if torn:
        log.info("%s: %d line(s) that are not JSON (torn writes) ignored", path, torn)
    for number, why in bad[:10]:
        log.warning("%s line %d: %s; ignored (its pair is encrypted again)", path, number, why)
    if len(bad) > 10:
        log.warning("%s: %d more malformed line(s) ignored", path, len(bad) - 10)
    return done


def append_line(path: Path, record: dict) -> None:
    line = json.dumps(record, default=float) + "\n"
    with open(path, "ab") as f:
        if f.tell() and path.read_bytes()[-1:] != b"\n":
            f.write(b"\n")          # a torn line from an interrupted run stays a line of its own
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def encrypted_pairs(model, params, ds: Dataset, args, out_dir: Path, progress: bool,
                    undecodable: dict[int, str]) -> tuple[list[dict], dict]:
    """The records of ``ds.chosen``: finished by an earlier run, encrypted now, or failed (an image that does
    not decode: ``undecodable`` from the plaintext stage, or found here; recorded with its reason)."""
    from tqdm import tqdm

    from cryptoface.encrypted.measuring import MeasuringHarness

    pairs_file = out_dir / "pairs.jsonl"
    done, failed = ds.done, {}

    def fail(i: int, reason: str) -> None:
        failed[i] = {"config": ds.config, "dataset": ds.name, "pair": i, "same": bool(ds.pairs.issame[i]),
                     "fold": int(ds.pairs.folds[i]), "failed": True, "reason": reason,
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True}
        append_line(pairs_file, failed[i])
        log.warning("%s: pair %d failed: %s", ds.name, i, reason)

    for i in ds.chosen:
        if i not in done and i in undecodable:
            fail(i, undecodable[i])
    todo = [i for i in ds.chosen if i not in done and i not in failed]
    setup: dict = {}
    if todo:
        log.info("%s: %d pair(s) to encrypt (%d already done); generating keys at %s", ds.name, len(todo),
                 len(ds.chosen) - len(todo) - len(failed), params.literal.name)
        session = MeasuringHarness(model, params, workers=args.workers, dataset=ds.name, fold=args.fold)
        setup = {"seconds": session.setup_seconds, "key_bytes": session.key_bytes,
                 "server_key_gb": session.server_key_bytes / 1e9, "galois_keys": len(session.key_plan)}
        for i in tqdm(todo, desc=f"{ds.name}: encrypted pairs", unit="pair", disable=not progress):
            try:
                faces = ds.pairs.images(model.input_size, [i])
            except CryptoFaceError as exc:            # changed since the plaintext stage read it
                fail(i, str(exc))
                continue
            try:
                with TreeMemory() as mem:
                    res = session.verify_pair(faces[0], faces[1])
            except ProbeError as exc:                  # the honest client refuses a face the model cannot vouch for
                fail(i, f"refused by the client before encryption: {exc}")
                continue
            rec = {"config": ds.config, "dataset": ds.name, "pair": i, "same": bool(ds.pairs.issame[i]),
                   "fold": int(ds.pairs.folds[i]), **res.as_dict(), "peak_memory_gb": mem.peak_gb,
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True}
            append_line(pairs_file, rec)
            done[i] = rec
            log.info("pair %d: encrypted %s, plaintext %s, truth %s, error 2^-%.1f, verification %.1f s", i,
                     res.outcome, "same" if res.decision_plaintext else "different",
                     "same" if rec["same"] else "different", res.embedding_error_bits,
                     res.verification_seconds["total"])
    return [done[i] if i in done else failed[i] for i in ds.chosen], setup


def pair_record(rec: dict) -> dict:
    """A pair's line in the run's record: its decisions and error, or why it failed."""
    if rec.get("failed"):
        return {k: rec[k] for k in ("pair", "same", "failed", "reason")}
    return {k: rec[k] for k in ("pair", "same", "outcome", "decision_encrypted", "decision_plaintext",
                                "embedding_error_bits")}


def summarize_pairs(recs: list[dict]) -> dict:
    """Figures over the finished pairs (``pairs``); failed pairs are counted apart (``failed``) with their
    reasons, and are no decisions."""
    failed = [{"pair": r["pair"], "reason": r["reason"]} for r in recs if r.get("failed")]
    recs = [r for r in recs if not r.get("failed")]
    head: dict = {"pairs": len(recs), "failed": len(failed), **({"failed_pairs": failed} if failed else {})}
    if not recs:
        return head

    def mean(path):
        return float(np.mean([r[path[0]][path[1]] for r in recs]))

    stages = [k for k in recs[0]["verification_seconds"] if all(k in r["verification_seconds"] for r in recs)]
    return {
        **head,
        "decisions_correct": sum(r["decision_encrypted"] == r["same"] for r in recs),
        "agree_with_plaintext": sum(r["agrees"] for r in recs),
        "invalid": sum(r["outcome"] == "invalid" for r in recs),
        "embedding_error_bits_min": min(r["embedding_error_bits"] for r in recs),
        "enrollment_seconds_mean": mean(("enrollment_seconds", "embed")) + mean(("enrollment_seconds", "encrypt")),
        "verification_seconds_mean": mean(("verification_seconds", "total")),
        "verification_stage_seconds_mean": {k: float(np.mean([r["verification_seconds"][k] for r in recs]))
                                            for k in stages},
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
             "| approach | resolution | backbone | parameters | bootstraps | dataset | accuracy (plaintext 10-fold / "
             "exported rule / encrypted pairs) | latency (online verification) | memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, ds in record["datasets"].items():
        p, e = ds["plaintext"], ds.get("encrypted", {"pairs": 0})
        poly = ds["plaintext"].get("exact_rule", {}).get("accuracy")
        plain = p.get("plaintext", {}).get("accuracy")
        enc = (f"{e['decisions_correct']}/{e['pairs']} correct, {e['agree_with_plaintext']}/{e['pairs']} = "
               f"plaintext" if e["pairs"] else "not run") + (f", {e['failed']} failed" if e.get("failed") else "")
        left_out = f", {len(p['failed_pairs'])} failed" if p.get("failed_pairs") else ""
        lat = f"{e['verification_seconds_mean']:.0f} s" if e["pairs"] else "-"
        mem = f"{e['peak_memory_gb']:.1f} GB" if e["pairs"] else "-"
        boots = e.get("bootstraps_per_verification", "-")
        lines.append(f"| CryptoFace (this implementation) | {record['model']['input_size']}x"
                     f"{record['model']['input_size']} | {record['model']['name']} | "
                     f"{record['model']['parameters'] / 1e6:.2f}M | {boots} | {name} ({p['pairs']} pairs{left_out}) | "
                     f"{'-' if plain is None else f'{100 * plain:.2f}'} / "
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


def check_output(out: Path) -> None:
    """``--output`` is a folder, or can be made, and this process can create files in it (a probe file,
    removed again); the files every run appends to are regular files it can append to.  Leaves nothing
    behind: folders made for the probe are removed again (the run makes them when it writes)."""
    made: list[Path] = []
    probe = None
    try:
        missing, existing = [], out
        while not (existing.exists() or existing.is_symlink()) and existing.parent != existing:
            missing.append(existing)
            existing = existing.parent
        if not existing.is_dir():
            where = "" if existing == out else f" ({existing} is not a folder)"
            raise UsageError(f"--output {out}: not a folder{where}")
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        handle, probe = tempfile.mkstemp(prefix=".run_lfw-probe-", dir=out)
        with os.fdopen(handle, "wb") as f:
            f.write(b"run_lfw")
        for name in APPENDED:
            path = out / name
            if path.exists() or path.is_symlink():
                if not path.is_file():
                    raise UsageError(f"--output {out}: {name} is not a regular file")
                with open(path, "ab"), open(path, "rb"):
                    pass
    except OSError as exc:
        raise UsageError(f"--output {out}: not writable ({exc.strerror or exc})") from None
    finally:
        if probe is not None:
            os.unlink(probe)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass


def check_depth(model: FusedPatchCNN, params, dataset: str, fold: int | None) -> None:
    """The preset must hold the chain as :class:`~cryptoface.encrypted.protocol.Server` plans it without a
    network bootstrapper (this script never bootstraps the network): a patch network, the hint and the
    decision's checks; then the decision's 8-slot bootstrap (the secret-key double on ``INSECURE_`` presets,
    see ``cryptoface.encrypted.measuring``) and its sign.  Read off the model's shapes, without building the
    network's slot matrices or any key."""
    from cryptoface.encrypted.decision import Decision, decision_bootstrap_config
    from cryptoface.encrypted.network import patch_network_depth
    from fhe_ckks.bootstrap.bootstrapper import MIN_CTS_DIAGONAL_BITS, BootstrapPlan

    from cryptoface.encrypted.decision import GALLERY_COMBINE_DEPTH, TemplateCheck
    from cryptoface.encrypted.protocol import TAIL_RESERVE

    decision = Decision(model.embedding_dim, model.thresholds[dataset].cosine_for_fold(fold))
    network, before = patch_network_depth(model), TAIL_RESERVE
    name = params.literal.name
    if network + before > params.max_level:
        raise UsageError(f"--preset {name}: {params.max_level} levels, model {model.name} needs "
                         f"{network + before} before the decision's bootstrap ({network} for a patch network, "
                         f"{before} for the hint, the spread and the gallery decision; this script does not "
                         "bootstrap the network)")
    boot = 0
    if not name.startswith("INSECURE_"):
        try:
            plan = BootstrapPlan.build(params, decision_bootstrap_config())
        except FheError as exc:
            raise UsageError(f"--preset {name}: cannot bootstrap the decision's 8 slots ({exc})") from None
        bits = plan.cts_diagonal_bits(params)
        if bits < MIN_CTS_DIAGONAL_BITS:
            raise UsageError(f"--preset {name}: the decision's bootstrap would encode its diagonals with "
                             f"{bits:.1f} bits (at least {MIN_CTS_DIAGONAL_BITS})")
        boot = plan.depth
    after = max(decision.post_depth(), TemplateCheck(model.embedding_dim, params.slots).post_depth(),
                decision.sign.depth() + GALLERY_COMBINE_DEPTH)     # the verification, the enrollment check, the gallery
    if boot + after > params.max_level:
        raise UsageError(f"--preset {name}: {params.max_level} levels, the decision needs {boot} for its bootstrap "
                         f"and {after} for its sign and combination after it")


def prepare(args):
    """Everything that can fail on bad input, before anything is written or computed at length."""
    check_output(args.output)
    if not args.model.is_file():
        raise UsageError(f"--model {args.model}: no such file")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    model = load_model(args.model)
    try:
        params = presets.get(args.preset, allow_insecure=args.preset.startswith("INSECURE_"))
    except FheError as exc:
        raise UsageError(f"--preset: {exc}") from None
    datasets = open_datasets(args)
    for ds in datasets:
        if len(set(ds.pairs.folds.tolist())) < 2:
            raise UsageError(f"{ds.name} ({ds.origin}): {len(ds.pairs)} pairs in "
                             f"{'no' if not len(ds.pairs) else 'one'} fold; k-fold accuracy needs two or more")
        ds.chosen = [] if args.plaintext_only else parse_pairs(args.pairs, len(ds.pairs))
        if not args.plaintext_only and (ds.name not in model.thresholds
                                        or model.thresholds[ds.name].exact_tau is None):
            raise UsageError(f"model {model.name} has no decision rule (an exact cosine threshold) for {ds.name}: "
                             f"export it with {ds.name} verification data (cryptoface.model.fit_exact_thresholds), "
                             "or use --plaintext-only")
    if args.fold is not None and not args.plaintext_only:
        for ds in datasets:
            if args.fold not in model.thresholds[ds.name].per_fold:
                raise UsageError(f"--fold {args.fold}: model has thresholds for folds "
                                 f"{sorted(model.thresholds[ds.name].per_fold)} of {ds.name}")
    if not args.plaintext_only:
        from cryptoface.encrypted.network import group_patches

        group_patches(model, params.slots)       # raises if the preset cannot hold one patch network
        for ds in datasets:
            check_depth(model, params, ds.name, args.fold)
    for ds in datasets:
        ds.pairs.check()                         # every image's header: there, readable, an aligned 112x112 crop
    model_hash = file_sha256(args.model)
    for ds in datasets:
        if ds.chosen:
            ds.config = hashlib.sha256(json.dumps([model_hash, params.fingerprint.hex(), ds.name, ds.origin,
                                                   args.fold, PROTOCOL]).encode()).hexdigest()[:16]
            ds.done = read_done(args.output / "pairs.jsonl", ds.config, ds.pairs.issame)
    return model, params, datasets, model_hash


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        model, params, datasets, model_hash = prepare(args)
    except (UsageError, CryptoFaceError, FheError, OSError) as exc:
        print(f"run_lfw: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    out_dir = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    run = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
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
        figures, curves, undecodable = plaintext_figures(model, ds, args.fold, progress)
        roc_curves.update({f"{ds.name}: {k}": v for k, v in curves.items()})
        if "plaintext" in figures:
            log.info("%s: plaintext %.4f, exported rule %s over %d pairs", ds.name, figures["plaintext"]["accuracy"],
                     f"{figures['exact_rule']['accuracy']:.4f}" if "exact_rule" in figures else "-", figures["pairs"])
        entry = {"origin": ds.origin, "plaintext": figures}
        if ds.chosen:
            recs, setup = encrypted_pairs(model, params, ds, args, out_dir, progress, undecodable)
            entry["encrypted"] = {**summarize_pairs(recs), "setup": setup, "config": ds.config,
                                  "pair_records": [pair_record(r) for r in recs]}
            all_recs += [r for r in recs if not r.get("failed")]
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
