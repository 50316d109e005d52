"""Face-verification metrics: k-fold accuracy with per-fold thresholds, ROC curves and plots.

The protocol is the standard one (LFW View 2 and the InsightFace ``.bin``
sets): for each fold, the threshold on the distance that maximizes accuracy on
the other folds is applied to that fold; the reported accuracy is the mean
over folds.  Distances are squared L2 distances between normalized embeddings
(smaller = same person), so "same" is predicted when ``distance < threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import DataError


def squared_distances(a: np.ndarray, b: np.ndarray, normalize: bool = True) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if normalize:
            a = a / np.linalg.norm(a, axis=1, keepdims=True)
            b = b / np.linalg.norm(b, axis=1, keepdims=True)
        d = np.sum((a - b) ** 2, axis=1)
    # a non-finite embedding (an overflowing polynomial network) matches nothing
    return np.where(np.isfinite(d), d, np.inf)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``a`` and ``b``; NaN where an embedding is zero or not finite (so it
    compares False with any threshold: it matches nothing)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def best_threshold(distances: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """Threshold maximizing accuracy of ``distance < t`` (midpoint between neighbours), and that accuracy."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(issame, dtype=bool)
    if d.shape != y.shape or d.size == 0:
        raise DataError(f"{d.size} distances for {y.size} labels")
    order = np.argsort(d, kind="stable")
    ds, ys = d[order], y[order]
    # accuracy if the first k (sorted) pairs are called "same", k = 0..n
    correct = np.concatenate([[np.sum(~ys)], np.sum(~ys) + np.cumsum(np.where(ys, 1, -1))])
    valid = np.ones(d.size + 1, dtype=bool)
    valid[1:-1] = ds[1:] > ds[:-1]   # only cut between distinct values
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        t = ds[0] - 1e-6
    elif k == d.size:
        t = ds[-1] + 1e-6
    else:
        t = 0.5 * (ds[k - 1] + ds[k])
    return float(t), correct[k] / d.size


@dataclass
class KFoldResult:
    accuracy: float
    std: float
    fold_accuracies: list[float]
    thresholds: list[float]
    folds: list[int]
    threshold_all: float = field(default=float("nan"))

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "std": self.std, "fold_accuracies": self.fold_accuracies,
                "thresholds": self.thresholds, "folds": self.folds, "threshold_all": self.threshold_all}


def kfold_accuracy(distances: np.ndarray, issame: np.ndarray, folds: np.ndarray | None = None,
                   n_folds: int = 10) -> KFoldResult:
    """Mean accuracy over folds, each fold thresholded by the others.

    ``folds`` gives each pair's fold (e.g. LFW's); without it scikit-learn's
    ``KFold(n_folds)`` (contiguous, unshuffled, as InsightFace does) is used.
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(issame, dtype=bool)
    if folds is None:
        from sklearn.model_selection import KFold

        folds = np.empty(d.size, dtype=np.int64)
        for k, (_, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(d)):
            folds[test] = k
    folds = np.asarray(folds)
    names = sorted(set(folds.tolist()))
    if len(names) < 2:
        raise DataError("k-fold accuracy needs at least two folds")
    accs, ts = [], []
    for k in names:
        test = folds == k
        t, _ = best_threshold(d[~test], y[~test])
        ts.append(t)
        accs.append(float(np.mean((d[test] < t) == y[test])))
    t_all, _ = best_threshold(d, y)
    return KFoldResult(float(np.mean(accs)), float(np.std(accs)), accs, ts, [int(k) for k in names], t_all)


def roc(distances: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """False- and true-positive rates of ``distance < t`` over all thresholds, and the AUC."""
    from sklearn.metrics import auc, roc_curve

    d = np.asarray(distances, dtype=np.float64)
    finite = np.isfinite(d)
    d = np.where(finite, d, (d[finite].max() + 1.0) if finite.any() else 0.0)
    fpr, tpr, _ = roc_curve(np.asarray(issame, dtype=int), -d)
    return fpr, tpr, float(auc(fpr, tpr))


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path,
             title: str = "ROC") -> Path:
    """One ROC curve per entry (log-scaled false-positive axis), written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=120)
    for name, (fpr, tpr, area) in curves.items():
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=f"{name} (AUC {area:.4f})")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def summarize(per_dataset: Mapping[str, KFoldResult]) -> dict:
    accs = [r.accuracy for r in per_dataset.values()]
    return {"datasets": {k: v.as_dict() for k, v in per_dataset.items()},
            "mean_accuracy": float(np.mean(accs)) if accs else float("nan")}


def pairs_in_folds(folds: np.ndarray, chosen: Sequence[int] | None) -> np.ndarray:
    """Indices of pairs whose fold is in ``chosen`` (all pairs when ``None``)."""
    folds = np.asarray(folds)
    if chosen is None:
        return np.arange(folds.size)
    bad = [k for k in chosen if k not in set(folds.tolist())]
    if bad:
        raise DataError(f"no pairs in fold(s) {bad}")
    return np.flatnonzero(np.isin(folds, list(chosen)))
