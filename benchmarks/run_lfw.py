"""Encrypted face verification on real data: accuracy in plaintext, then pairs under encryption, with a report.

    python benchmarks/run_lfw.py                       # shipped CryptoFaceNet4 + shipped LFW sample, 2 pairs
    python benchmarks/run_lfw.py --model M.model.npz --data DIR --datasets lfw cfp_fp --pairs 0:10 \\
        --preset N16_QP1762_L29_S38 --workers 2 --output results/
    python benchmarks/run_lfw.py --data ../shared/data/lfw --pairs all --backend ray --ray-address HEAD:6379
    python benchmarks/run_lfw.py --data my_faces/ --pairs folds:0-1   # your own data: a folder with pairs.txt

``--data`` is a folder of InsightFace ``.bin`` files (``--datasets``, default lfw) or your own data: a folder in
LFW's layout (``<Name>/<Name>_NNNN.jpg``, ``.png`` or ``.pgm``) with an LFW-format ``pairs.txt``, evaluated
under its own name (``--name``, default the folder's name) and recorded with its real origin.  ``--pairs``:
``START:END`` ranges, ``fold:K``, ``folds:A-B`` or ``all``, comma separated.

**The decision rule.**  Each pair is decided with its fold's threshold, fitted on the other folds (or with
``--fold``'s).  A dataset the model carries no rule for (it was calibrated on another set) gets one **fitted
here** on that data's folds the same way, and every report says so ("rule: fitted here"): the model's LFW
threshold is never applied to other data silently.

**Scale-out.**  ``--backend ray`` (the ``ray`` extra) runs the patch groups and the decisions of ``--batch``
pairs at once as Ray tasks on the cluster at ``--ray-address`` (none: a Ray instance on this machine); the keys
are generated once and put in the object store once.  Each distinct image is embedded under encryption once,
however many pairs name it (LFW's 6,000 pairs hold 7,701 distinct images), and once in the plaintext pass.

For each dataset:

* plaintext figures over all its pairs (numpy, fused model): 10-fold accuracy with the exact L2 norm
  (``plaintext``), with the model's polynomial 1/sqrt norm and a k-fold threshold (``poly_norm``, the rule of
  earlier versions), and with the model's exported exact cosine rule and per-fold thresholds, i.e. what the
  server decides under encryption (``exact_rule``); ROC curves;
* for the pairs of ``--pairs``: the first face is enrolled (offline: its embedding is the template) and the second
  verified (online) under encryption at ``--preset``; per pair the encrypted and plaintext decisions,
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

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data, model_path, verification  # noqa: E402
from cryptoface.baselines import FusedResNet, load_served_model  # noqa: E402
from cryptoface.encrypted import BASELINE_PRESET, DEFAULT_PRESET  # noqa: E402
from cryptoface.errors import CryptoFaceError, DataError, ModelError, ProbeError  # noqa: E402
from cryptoface.model import (FusedPatchCNN, exact_decisions, fit_exact_thresholds, fit_thresholds,  # noqa: E402
                              poly_distances)
from fhe_ckks import presets  # noqa: E402
from fhe_ckks.errors import FheError  # noqa: E402

log = logging.getLogger("run_lfw")
DEFAULT_PAIRS = "0:1,5:6"           # in the shipped sample: the first genuine and the first impostor pair
APPENDED = ("pairs.jsonl", "results.jsonl", "summary.md")   # the files of --output every run appends to
PROTOCOL = "hinted-cosine-decision/fold-rule"   # in the records' key: pairs decided otherwise are not reused


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
    rule: str = "model"                                   # "model" (the model's own) or "fitted here"
    _keys: list[str] | None = field(default=None, repr=False)

    @property
    def keys(self) -> list[str]:
        """:func:`image_keys` of the pairs, hashed once for the plaintext and the encrypted pass."""
        if self._keys is None:
            self._keys = image_keys(self.pairs)
        return self._keys


def parse_pairs(text: str, count: int, folds: np.ndarray | None = None) -> list[int]:
    """``--pairs``: comma-separated ``START:END`` ranges, ``fold:K``, ``folds:A-B`` (the pairs of those
    folds) or ``all``; each pair once, in the order given."""
    out: dict[int, None] = {}
    folds = np.zeros(count, dtype=np.int64) if folds is None else np.asarray(folds)
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            out.update(dict.fromkeys(range(count)))
            continue
        if part.startswith(("fold:", "folds:")):
            spec = part.split(":", 1)[1]
            try:
                lo, hi = (int(x) for x in spec.split("-")) if "-" in spec else (int(spec), int(spec))
            except ValueError:
                raise UsageError(f"--pairs {part}: expected fold:K or folds:A-B") from None
            have = sorted(set(folds.tolist()))
            if lo > hi or lo not in have or hi not in have:
                raise UsageError(f"--pairs {part}: the dataset has folds {have[0]}..{have[-1]}")
            out.update(dict.fromkeys(int(i) for i in np.flatnonzero((folds >= lo) & (folds <= hi))))
            continue
        try:
            start, end = (int(x) for x in part.split(":"))
        except ValueError:
            raise UsageError(f"--pairs {text!r}: expected START:END, fold:K, folds:A-B or all, comma "
                             "separated") from None
        if not 0 <= start < end <= count:
            raise UsageError(f"--pairs {part}: out of range, the dataset has pairs 0..{count - 1}")
        out.update(dict.fromkeys(range(start, end)))
    return list(out)


def open_datasets(args) -> list[Dataset]:
    if args.data is None:
        vs = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin", "lfw")
        meta = json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())
        vs.folds = np.array([p["fold"] for p in meta["pairs"]])
        if args.datasets not in (None, ["lfw"]):
            raise UsageError("the shipped sample is LFW only: give --data DIR for other datasets")
        return [Dataset("lfw", vs, f"shipped sample ({DEFAULT_SAMPLE})")]
    sets = data.load_verification_dir(args.data, args.datasets, args.name)
    return [Dataset(name, vs, vs.origin or str(Path(args.data) / name)) for name, vs in sets.items()]


def parameter_count(model: FusedPatchCNN | FusedResNet) -> int:
    if isinstance(model, FusedResNet):
        arrays = [model.conv0, model.bias0, model.head_weight, model.head_bias]
        arrays += [a.coefficients for a in model.activations() if a.coefficients is not None]
        arrays += [t for b in model.blocks for t in (b.weight1, b.bias1, b.weight2, b.bias2)]
        return int(sum(a.size for a in arrays))
    total = 0
    for net in model.nets:
        for value in vars(net).values():
            if isinstance(value, np.ndarray):
                total += value.size
            elif isinstance(value, list):
                total += sum(v.size for b in value for v in vars(b).values() if isinstance(v, np.ndarray))
    return total


def approach(model: FusedPatchCNN | FusedResNet) -> dict[str, str]:
    """The summary table's approach and backbone columns, as the paper names them."""
    if isinstance(model, FusedResNet):
        return {"approach": {"mpcnn": "MPCNN", "autofhe": "AutoFHE"}[model.variant] + " (this implementation)",
                "backbone": model.arch.replace("resnet", "ResNet")}
    return {"approach": "CryptoFace (this implementation)", "backbone": f"CryptoFaceNet{model.num_patches}"}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- plaintext


def image_keys(vs: data.VerificationSet) -> list[str]:
    """One key per image of ``vs`` (two per pair): equal keys are the same image, embedded once.  A file by
    its resolved path; encoded bytes (an InsightFace ``.bin`` repeats an image in every pair that names it)
    by their SHA-256."""
    return [hashlib.sha256(bytes(src)).hexdigest() if isinstance(src, (bytes, bytearray))
            else str(Path(src).resolve()) for src in vs.sources]


def distinct_images(keys: list[str], pairs) -> dict[str, int]:
    """``{key: the first image index with it}`` over both images of ``pairs``, in order of first use."""
    first: dict[str, int] = {}
    for i in pairs:
        for j in (2 * i, 2 * i + 1):
            first.setdefault(keys[j], j)
    return first


def plaintext_embeddings(model: FusedPatchCNN, ds: Dataset, keys: list[str], progress: bool
                         ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The plaintext embedding of each distinct image (``{key: embedding}``), and ``{key: reason}`` for the
    images that do not decode."""
    from tqdm import tqdm

    first = distinct_images(keys, range(len(ds.pairs)))
    items = list(first.items())
    emb: dict[str, np.ndarray] = {}
    bad: dict[str, str] = {}
    chunk = 64
    for start in tqdm(range(0, len(items), chunk), desc=f"{ds.name}: plaintext ({len(items)} distinct images)",
                      unit="chunk", disable=not progress):
        faces, names = [], []
        for key, j in items[start:start + chunk]:
            try:
                faces.append(ds.pairs._aligned(j))
                names.append(key)
            except DataError as exc:
                bad[key] = str(exc)
        if faces:
            for key, e in zip(names, model.embed(data.preprocess(faces, model.input_size))):
                emb[key] = e
    return emb, bad


def fit_rule(model: FusedPatchCNN, ds: Dataset, a: np.ndarray, b: np.ndarray, same: np.ndarray,
             folds: np.ndarray) -> None:
    """A decision rule for a dataset the model was not calibrated on, fitted on that data's folds as the
    model's own rule was on its calibration set: the norm polynomial and each fold's thresholds (exact and
    polynomial) on the other folds.  Said loudly: the model's rule is not used."""
    rule = fit_exact_thresholds(fit_thresholds(poly_distances, a, b, same, folds), a, b, same, folds)
    model.thresholds[ds.name] = rule
    ds.rule = "fitted here"
    calibrated = ", ".join(sorted(k for k, t in model.thresholds.items() if k != ds.name and t.exact_tau)) or "none"
    log.warning("%s: model %s carries no decision rule for this data (it is calibrated on: %s). The rule is "
                "FITTED HERE on %s's own %d folds (each fold's threshold on the other folds); every report says "
                "'rule: fitted here'", ds.name, model.name, calibrated, ds.name, len(set(folds.tolist())))


def plaintext_figures(model: FusedPatchCNN, ds: Dataset, fold, progress: bool,
                      fit: bool = False) -> tuple[dict, dict, dict[int, str]]:
    """The figures over every pair whose images decode, the ROC curves, and ``{pair: reason}`` for the others
    (left out, listed under ``failed_pairs``).  Each distinct image is embedded once.  ``fit``: the model has no
    rule for this data; fit one (:func:`fit_rule`) before the rule's figures."""
    keys = ds.keys
    emb, bad = plaintext_embeddings(model, ds, keys, progress)
    n = len(ds.pairs)
    kept, failed = [], {}
    for i in range(n):
        why = bad.get(keys[2 * i]) or bad.get(keys[2 * i + 1])
        if why:
            failed[i] = why
        else:
            kept.append(i)
    for i, why in failed.items():
        log.warning("%s: pair %d left out of the plaintext figures: %s", ds.name, i, why)
    out: dict = {"pairs": len(kept), "distinct_images": len(emb) + len(bad)}
    if failed:
        out["failed_pairs"] = [{"pair": i, "reason": why} for i, why in sorted(failed.items())]
    dim = model.embedding_dim
    a = np.array([emb[keys[2 * i]] for i in kept]).reshape(-1, dim)
    b = np.array([emb[keys[2 * i + 1]] for i in kept]).reshape(-1, dim)
    same, folds = ds.pairs.issame[kept], ds.pairs.folds[kept]
    if len(set(folds.tolist())) < 2:
        out["error"] = f"{len(failed)} of {n} pairs do not decode; the others cover fewer than two folds"
        log.error("%s: no plaintext figures: %s", ds.name, out["error"])
        return out, {}, failed
    if fit:
        fit_rule(model, ds, a, b, same, folds)
    exact = verification.squared_distances(a, b)
    th = model.thresholds.get(ds.name)
    out["plaintext"] = verification.kfold_accuracy(exact, same, folds).as_dict()
    out["rule"] = ds.rule
    curves = {"exact L2 norm": verification.roc(exact, same)}
    if th is not None:
        poly = poly_distances(th.norm, a, b)
        out["poly_norm"] = verification.kfold_accuracy(poly, same, folds).as_dict()
        if th.exact_tau is not None:
            rule = exact_decisions(model, a, b, ds.name, [fold] * len(kept) if fold is not None else folds.tolist())
            out["exact_rule"] = {"accuracy": float(np.mean(rule == same)), "rule": ds.rule,
                                 "note": "the exact cosine rule with each fold's threshold, fitted on the other "
                                         "folds (what the server decides under encryption); "
                                         + ("fitted here on this data" if ds.rule == "fitted here" else
                                            "the model's own thresholds")}
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


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy of ``correct`` out of ``n``."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n)))


class _PairProgress:
    """A second progress bar for the pairs in hand: key generation, then the patch-network layers of the faces
    being embedded (reported by the backend as they finish), then the decisions."""

    def __init__(self, enabled: bool):
        from tqdm import tqdm

        self._tqdm, self.enabled, self.bar = tqdm, enabled, None

    def start(self, desc: str, total: int | None, unit: str) -> None:
        self.close()
        if self.enabled:
            self.bar = self._tqdm(total=total, desc=desc, unit=unit, position=1, leave=False)

    def keygen(self, done: int, total: int) -> None:
        if self.bar is None and self.enabled:
            self.start("key generation", total, "key")
        if self.bar is not None:
            self.bar.update(1)

    def step(self, _stage: str = "") -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def encrypted_pairs(model, params, ds: Dataset, args, out_dir: Path, progress: bool,
                    undecodable: dict[int, str], backend=None) -> tuple[list[dict], dict]:
    """The records of ``ds.chosen``: finished by an earlier run, encrypted now, or failed (an image that does
    not decode: ``undecodable`` from the plaintext stage, or found here; a face the client refuses; recorded
    with its reason).  Pairs go ``--batch`` at a time: the batch's distinct images not embedded yet are
    encrypted and embedded in one call to the backend, then its pairs are decided in one call; an embedding
    is kept while a later pair still names its image, so each distinct image is embedded once."""
    from tqdm import tqdm

    from cryptoface.encrypted.backends import WorkerError
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
    if not todo:
        return [done[i] if i in done else failed[i] for i in ds.chosen], setup
    keys = ds.keys
    first = distinct_images(keys, todo)
    log.info("%s: %d pair(s) to encrypt (%d already done), %d distinct image(s); generating keys at %s", ds.name,
             len(todo), len(ds.chosen) - len(todo) - len(failed), len(first), params.literal.name)
    bar = _PairProgress(progress)
    session = MeasuringHarness(model, params, workers=args.workers, dataset=ds.name, fold=args.fold,
                               backend=backend, keygen_progress=bar.keygen)
    bar.close()
    server = session.server
    server.backend.progress = bar.step
    groups = len(server.groups)
    batch = args.batch or (1 if server.backend.name == "local" else max(1, server.backend.workers // groups))
    # progress steps per face: each layer of each group locally (reported as it finishes), each group's task on Ray
    per_face = groups if server.backend.name == "ray" else sum(len(m.layers) + m.plan.bootstraps for m in server.models)
    setup = {"seconds": session.setup_seconds, "key_bytes": session.key_bytes, "backend": server.backend.name,
             "server_key_gb": session.server_key_bytes / 1e9, "galois_keys": len(session.key_plan),
             "pairs_per_batch": batch, "distinct_images": len(first)}
    uses: dict[str, int] = {}
    for i in todo:
        for k in (keys[2 * i], keys[2 * i + 1]):
            uses[k] = uses.get(k, 0) + 1
    cache: dict = {}                 # key -> EmbeddedFace, while a pair to come names it
    refused: dict[str, str] = {}     # key -> why it has no embedding
    embedded = 0
    outer = tqdm(total=len(todo), desc=f"{ds.name}: encrypted pairs", unit="pair", disable=not progress)
    try:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            need = [k for k in distinct_images(keys, chunk) if k not in cache and k not in refused]
            faces, made = [], []
            for k in need:
                try:
                    faces.append(data.preprocess([ds.pairs._aligned(first[k])], model.input_size)[0])
                    made.append(k)
                except CryptoFaceError as exc:         # changed since the plaintext stage read it
                    refused[k] = str(exc)
            bar.start(f"pairs {chunk[0]}..{chunk[-1]}: {len(faces)} face(s), "
                      f"{'tasks' if server.backend.name == 'ray' else 'layers'}", per_face * len(faces) + len(chunk),
                      "step")
            lost = None
            with TreeMemory() as mem:
                try:
                    for k, e in zip(made, session.embed_faces(faces) if faces else []):
                        if isinstance(e, ProbeError):  # the honest client refuses a face the model cannot vouch for
                            refused[k] = f"refused by the client before encryption: {e}"
                        else:
                            cache[k] = e
                            embedded += 1
                    ready = [i for i in chunk if keys[2 * i] in cache and keys[2 * i + 1] in cache]
                    fold_of = (lambda i: args.fold) if args.fold is not None else (lambda i: int(ds.pairs.folds[i]))
                    results = session.decide([(cache[keys[2 * i + 1]], cache[keys[2 * i]], fold_of(i))
                                              for i in ready]) if ready else []
                    if server.backend.name != "ray":           # Ray reports each decision task as it finishes
                        for _ in ready:
                            bar.step()
                except WorkerError as exc:             # a worker or node lost more often than retried
                    lost, ready, results = str(exc), [], []
            bar.close()
            for i in chunk:
                if i not in ready:
                    fail(i, f"lost in the backend: {lost}" if lost else
                         refused.get(keys[2 * i]) or refused.get(keys[2 * i + 1]) or "no embedding")
            for i, res in zip(ready, results):
                rec = {"config": ds.config, "dataset": ds.name, "origin": ds.origin, "rule": ds.rule, "pair": i,
                       "same": bool(ds.pairs.issame[i]), "fold": int(ds.pairs.folds[i]), **res.as_dict(),
                       "batch_pairs": len(chunk), "peak_memory_gb": mem.peak_gb,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True}
                append_line(pairs_file, rec)
                done[i] = rec
                log.info("pair %d: encrypted %s, plaintext %s, truth %s, error 2^-%.1f, verification %.1f s", i,
                         res.outcome, "same" if res.decision_plaintext else "different",
                         "same" if rec["same"] else "different", res.embedding_error_bits,
                         res.verification_seconds["total"])
            for i in chunk:
                for k in (keys[2 * i], keys[2 * i + 1]):
                    uses[k] -= 1
                    if not uses[k]:
                        cache.pop(k, None)
            outer.update(len(chunk))
    finally:
        outer.close()
        bar.close()
        server.backend.progress = None
    setup["images_embedded"] = embedded
    if server.backend.name == "ray":
        setup["ray_traffic_bytes"] = dict(server.backend.traffic)
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
    correct = sum(r["decision_encrypted"] == r["same"] for r in recs)
    twin = sum(r["decision_plaintext"] == r["same"] for r in recs)
    return {
        **head,
        "decisions_correct": correct,
        "accuracy": correct / len(recs), "accuracy_ci95": list(wilson(correct, len(recs))),
        "plaintext_twin_correct": twin, "plaintext_twin_accuracy": twin / len(recs),
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
             f"({record['security']}), backend {record.get('backend', 'local')}, workers {record['workers']}, git "
             f"{record['git_revision']}, {record['machine']['cpu']} x {record['machine']['cores']} cores.", "",
             "| approach | resolution | backbone | parameters | bootstraps | dataset | rule | "
             "accuracy: plaintext 10-fold "
             "/ the encrypted rule in plaintext | encrypted pairs: accuracy (95% CI) / its plaintext twin on the same "
             "pairs / decisions equal | latency (online verification) | memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, ds in record["datasets"].items():
        p, e = ds["plaintext"], ds.get("encrypted", {"pairs": 0})
        rule_acc = ds["plaintext"].get("exact_rule", {}).get("accuracy")
        plain = p.get("plaintext", {}).get("accuracy")
        rule = p.get("rule", "model")
        rule = "**fitted here** on this data's folds" if rule == "fitted here" else "the model's own"
        if e["pairs"]:
            lo, hi = e["accuracy_ci95"]
            enc = (f"{e['decisions_correct']}/{e['pairs']} = {100 * e['accuracy']:.1f}% "
                   f"({100 * lo:.1f}–{100 * hi:.1f}) "
                   f"/ {e['plaintext_twin_correct']}/{e['pairs']} = {100 * e['plaintext_twin_accuracy']:.1f}% / "
                   f"{e['agree_with_plaintext']}/{e['pairs']}")
        else:
            enc = "not run"
        enc += f", {e['failed']} failed" if e.get("failed") else ""
        left_out = f", {len(p['failed_pairs'])} failed" if p.get("failed_pairs") else ""
        lat = f"{e['verification_seconds_mean']:.0f} s" if e["pairs"] else "-"
        mem = f"{e['peak_memory_gb']:.1f} GB" if e["pairs"] else "-"
        boots = e.get("bootstraps_per_verification", "-")
        m = record["model"]
        lines.append(f"| {m.get('approach', 'CryptoFace (this implementation)')} | {m['input_size']}x"
                     f"{m['input_size']} | {m.get('backbone', m['name'])} ({m['name']}) | "
                     f"{record['model']['parameters'] / 1e6:.2f}M | {boots} | {name} ({p['pairs']} pairs{left_out}; "
                     f"{ds['origin']}) | {rule} | {'-' if plain is None else f'{100 * plain:.2f}'} / "
                     f"{'-' if rule_acc is None else f'{100 * rule_acc:.2f}'} | {enc} | {lat} | {mem} |")
    lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="an exported .model.npz, or a shipped model's name (cryptofacenet4, cryptofacenet9, "
                         "cryptofacenet16)")
    ap.add_argument("--data", type=Path, help="folder of InsightFace .bin files, or your own data: a folder in LFW's "
                    "layout with pairs.txt")
    ap.add_argument("--datasets", nargs="+", help=f"the .bin files to read: {', '.join(data.VERIFICATION_DATASETS)} "
                    "(default: lfw)")
    ap.add_argument("--name", help="the dataset name of your own data (a folder with pairs.txt; default: the "
                    "folder's name)")
    ap.add_argument("--fold", type=int, help="decide with this fold's threshold (fitted on the other folds)")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="pairs to encrypt: START:END, fold:K, folds:A-B or all, "
                    f"comma separated (default {DEFAULT_PAIRS})")
    ap.add_argument("--preset", help=f"CKKS parameters (default {DEFAULT_PRESET}; {BASELINE_PRESET} for the "
                    "bootstrapped ResNet baselines)")
    ap.add_argument("--workers", type=int, help="local backend: processes for the patch groups (default: one per "
                    "core); ray: tasks in flight (default: the cluster's CPUs)")
    ap.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="where the patch groups and decisions run (default local; ray needs the ray extra)")
    ap.add_argument("--ray-address", help="the Ray cluster to join (default: a Ray instance on this machine)")
    ap.add_argument("--batch", type=int, help="pairs embedded and decided together (default: 1 locally; on Ray, "
                    "enough to keep every CPU busy)")
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


def check_depth(model: FusedPatchCNN, params, dataset: str, fold: int | None, cos: float | None = None) -> None:
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

    decision = Decision(model.embedding_dim, model.thresholds[dataset].cosine_for_fold(fold) if cos is None else cos)
    # a bootstrapped baseline's network fits any bootstrapping preset (prepare checks its bootstrapper)
    network, before = (0 if isinstance(model, FusedResNet) else patch_network_depth(model)), TAIL_RESERVE
    name = params.literal.name
    if network + before > params.max_level:
        raise UsageError(f"--preset {name}: {params.max_level} levels, model {model.name} needs "
                         f"{network + before} before the decision's bootstrap ({network} for a patch network, "
                         f"{before} for the hint, the spread and the gallery decision; this script does not "
                         "bootstrap the network)")
    post = params.user_top       # the secret-key double returns on the user levels, where a real bootstrap lands
    if not name.startswith("INSECURE_"):
        try:
            plan = BootstrapPlan.build(params, decision_bootstrap_config())
        except FheError as exc:
            raise UsageError(f"--preset {name}: cannot bootstrap the decision's 8 slots ({exc})") from None
        bits = plan.cts_diagonal_bits(params)
        if bits < MIN_CTS_DIAGONAL_BITS:
            raise UsageError(f"--preset {name}: the decision's bootstrap would encode its diagonals with "
                             f"{bits:.1f} bits (at least {MIN_CTS_DIAGONAL_BITS})")
        post = min(params.max_level - plan.depth, params.user_top)          # landed on the user levels
    after = max(decision.post_depth(), TemplateCheck(model.embedding_dim, params.slots).post_depth(),
                decision.sign.depth() + GALLERY_COMBINE_DEPTH)     # the verification, the enrollment check, the gallery
    if after > post:
        raise UsageError(f"--preset {name}: {params.max_level} levels, the decision needs {after} for its sign and "
                         f"combination after its bootstrap, which leaves {post}")


def prepare(args):
    """Everything that can fail on bad input, before anything is written or computed at length."""
    check_output(args.output)
    try:
        args.model = model_path(args.model)
    except ModelError as exc:
        raise UsageError(f"--model {exc}") from None
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    model = load_served_model(args.model)
    if args.preset is None:
        args.preset = BASELINE_PRESET if isinstance(model, FusedResNet) else DEFAULT_PRESET
    try:
        params = presets.get(args.preset, allow_insecure=args.preset.startswith("INSECURE_"))
    except FheError as exc:
        raise UsageError(f"--preset: {exc}") from None
    datasets = open_datasets(args)
    for ds in datasets:
        if len(set(ds.pairs.folds.tolist())) < 2:
            raise UsageError(f"{ds.name} ({ds.origin}): {len(ds.pairs)} pairs in "
                             f"{'no' if not len(ds.pairs) else 'one'} fold; k-fold accuracy needs two or more")
        ds.chosen = [] if args.plaintext_only else parse_pairs(args.pairs, len(ds.pairs), ds.pairs.folds)
        if ds.name not in model.thresholds or model.thresholds[ds.name].exact_tau is None:
            ds.rule = "fitted here"              # fitted on this data's folds in the plaintext pass, said loudly
    if args.fold is not None and not args.plaintext_only:
        for ds in datasets:
            have = sorted(model.thresholds[ds.name].exact_per_fold) if ds.rule == "model" else \
                sorted(set(ds.pairs.folds.tolist()))
            if args.fold not in have:
                raise UsageError(f"--fold {args.fold}: the rule of {ds.name} has thresholds for folds {have}")
    if args.batch is not None and args.batch < 1:
        raise UsageError("--batch must be at least 1")
    if args.ray_address is not None and args.backend != "ray":
        raise UsageError("--ray-address is for --backend ray")
    if not args.plaintext_only:
        from cryptoface.encrypted.network import group_patches
        from cryptoface.encrypted.protocol import NetworkBootstrapper, network_bootstrap_config

        if isinstance(model, FusedResNet):       # its bootstraps: a bootstrapping preset, the chain's slots, a bound
            try:
                NetworkBootstrapper(params, network_bootstrap_config(model, params))
            except (FheError, ModelError) as exc:
                raise UsageError(f"--preset {args.preset}: cannot bootstrap {model.name} ({exc})") from None
        else:
            group_patches(model, params.slots)   # raises if the preset cannot hold one patch network
        for ds in datasets:
            check_depth(model, params, ds.name, args.fold,
                        cos=0.5 if ds.rule == "fitted here" else None)   # the depth does not depend on it
    for ds in datasets:
        ds.pairs.check()                         # every image's header: there, readable, an aligned 112x112 crop
    model_hash = file_sha256(args.model)
    for ds in datasets:
        if ds.chosen:
            ds.config = hashlib.sha256(json.dumps([model_hash, params.fingerprint.hex(), ds.name, ds.origin,
                                                   args.fold, PROTOCOL, ds.rule]).encode()).hexdigest()[:16]
            ds.done = read_done(args.output / "pairs.jsonl", ds.config, ds.pairs.issame)
    return model, params, datasets, model_hash


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    backend = None
    try:
        model, params, datasets, model_hash = prepare(args)
        if any(ds.chosen for ds in datasets) and args.backend != "local":
            from cryptoface.encrypted.backends import make_backend

            backend = make_backend(args.backend, workers=args.workers, address=args.ray_address)
    except (UsageError, CryptoFaceError, FheError, OSError) as exc:
        print(f"run_lfw: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        return run(args, model, params, datasets, model_hash, backend)
    finally:
        if backend is not None:
            backend.close()


def run(args, model, params, datasets, model_hash, backend) -> int:
    progress = not args.no_progress
    out_dir = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    run = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    record = {"benchmark": "run_lfw", "run": run, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": machine(), "git_revision": git_revision(),
              "model": {"name": model.name, "file": str(args.model), "sha256": model_hash,
                        "input_size": model.input_size, "patch_networks": model.num_patches,
                        "parameters": parameter_count(model), **approach(model)},
              "preset": params.literal.name, "security": params.security,
              "workers": backend.workers if backend is not None else (args.workers or os.cpu_count()),
              "backend": args.backend, "plaintext_only": args.plaintext_only, "datasets": {}}
    roc_curves = {}
    all_recs = []
    for ds in datasets:
        figures, curves, undecodable = plaintext_figures(model, ds, args.fold, progress, fit=ds.rule == "fitted here")
        roc_curves.update({f"{ds.name}: {k}": v for k, v in curves.items()})
        if "plaintext" in figures:
            log.info("%s: plaintext %.4f, exported rule %s over %d pairs", ds.name, figures["plaintext"]["accuracy"],
                     f"{figures['exact_rule']['accuracy']:.4f}" if "exact_rule" in figures else "-", figures["pairs"])
        entry = {"origin": ds.origin, "rule": ds.rule, "plaintext": figures}
        if ds.chosen and ds.name not in model.thresholds:
            log.error("%s: no rule could be fitted (%s); its pairs are not encrypted", ds.name, figures.get("error"))
        elif ds.chosen:
            recs, setup = encrypted_pairs(model, params, ds, args, out_dir, progress, undecodable, backend)
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
