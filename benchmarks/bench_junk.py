"""Junk images against the model's decision rule: false accepts of noise, patterns and damaged faces (plaintext).

    python benchmarks/bench_junk.py [--json] [--size {default,small}] [--seed 0] [--model FILE] [--fold K]
        [--celeba DIR|none] [--lfw DIR|none] [--no-progress]

Hardening, section 1 ("Junk images"): a deterministic corpus of 112x112 8-bit RGB images (seeded), in named
groups, each compared with every distinct real face of the shipped LFW sample (``cryptoface/assets/lfw_sample``):

* synthetic: uniform, Gaussian and low-resolution (blocky) noise; constants (black, white, grays, pure and random
  colors); vertical and horizontal stripes and checkerboards with stripes / cells 1, 2, 4, 8, 16 and 32 px wide
  (periods 2 to 64 px) at three contrasts; gradients;
* damaged faces, made from a few faces of the sample (never compared with faces of their own person): scaled
  (``x k``, clipped: brightness and contrast), contrast-stretched and gamma-curved, inverted (negative,
  upside-down, rotated, channels swapped), blurred and pixelated, patch-shuffled, noisy;
* faces of another set: CelebA identities (``../shared/data/celeba_112x112``, disjoint from LFW), when present
  (its README keeps it for training: here its faces are only impostor probes, one per identity);
* a reference group, not junk: LFW people of the sample's people sets who are not in the sample
  (``../shared/data/lfw/aligned_112x112``), when present: real impostors, many more than the sample's 20 pairs.

Everything runs in numpy with the fused float64 model (``model.embed``), nothing is encrypted.  Three decision
rules:

* ``poly``: the rule of earlier versions (before the hardening): ``model.thresholds["lfw"].for_fold(fold)`` gives
  the quadratic ``p(y) ~ 1/sqrt(y)`` (fitted on ``[lo, hi]``) and tau; "same" when ``poly_distances < tau``.
  Without ``--fold`` the rule fitted on all folds.
* ``exact``: the exact L2 norm, ``verification.squared_distances(a, b)`` (``normalize=True``), with a threshold
  fitted by ``cryptoface.model.fit_thresholds`` on the shipped sample's 40 pairs with their folds (6-9), the
  distance function ignoring the polynomial: the threshold of all 40 pairs without ``--fold``, the one fitted on
  the other folds with ``--fold K``.  (The poly rule was fitted on 2,400 pairs of the same folds of the full LFW;
  the sample is 40 of them, so both rules are scored on pairs they were fitted on.)
* ``cosine``: what the server decides under encryption now (``cryptoface.encrypted.decision``): "same" when the
  exact cosine is at least the model's exported ``Threshold.cosine_for_fold(fold)`` (fitted on all 6,000 LFW
  View-2 pairs).

The ``_checked`` figures count only the comparisons an honest client makes: it refuses (``ProbeError``) a probe
whose plaintext embedding is not finite, whose squared norm is below the model's quality floor
(``info["quality"]``, when recorded), whose HerPN inputs exceed the model's recorded range by the slack of
``check_probe``, or whose squared norm is outside the server's hint range (``Server.public_info()["norm_range"]``).

Reported per group and for the junk groups together: images, comparisons, accepts and false-accept rate of each
rule, with and without the client's check; embeddings that are not finite; squared embedding norms (range, how
many fall outside the polynomial's
``[lo, hi]``, the polynomial's largest relative error on them); the largest |value| entering any HerPN in the
plaintext forward pass (overflow: above the model's recorded ``info["activation_range"]["max"]``, or not finite);
the images accepted most often.  For the real faces of the sample: the 20 genuine and 20 impostor pairs (TAR, FAR)
and all pairs of its distinct faces (same / other person), for each rule.  Target (the issue): the junk FAR of
the deployed rule (``cosine``, after the client's check) no higher than the exact rule's, and no junk group
above the real-impostor FAR (all pairs of distinct sample faces of two people, same rule).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import emit  # noqa: E402

import cryptoface.model as cfmodel  # noqa: E402
from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data, verification  # noqa: E402
from cryptoface.encrypted.matching import embedding_scale  # noqa: E402
from cryptoface.encrypted.protocol import HINT_RANGE_LOG2  # noqa: E402
from cryptoface.errors import CryptoFaceError  # noqa: E402
from cryptoface.model import (  # noqa: E402
    FusedPatchCNN,
    NormPolynomial,
    decisions,
    exact_decisions,
    exact_distances,
    fit_thresholds,
    poly_distances,
)

log = logging.getLogger("bench_junk")

SIDE = data.ALIGNED_SIZE
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_CELEBA = SHARED / "celeba_112x112"
DEFAULT_LFW = SHARED / "lfw"
WIDTHS = (1, 2, 4, 8, 16, 32)                  # stripe / checkerboard cell widths: periods 2..64 px
CONTRASTS = ((0, 255), (255, 0), (64, 192))     # (first, second) gray level of a pattern
SIZES = {
    # images of each random group, faces the damaged-face groups start from, other-set faces
    "default": {"noise": 40, "gaussian": 32, "lowres": 5, "random_colors": 9, "bases": 6, "celeba": 48, "lfw": 48},
    "small": {"noise": 2, "gaussian": 2, "lowres": 1, "random_colors": 1, "bases": 1, "celeba": 3, "lfw": 3},
}


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit status 2)."""


# ---------------------------------------------------------------------------- real faces


@dataclass
class Sample:
    """The shipped LFW sample: its pairs, and which of its images are distinct faces (and of whom)."""

    pairs: data.VerificationSet
    identities: list[str]            # per image of ``pairs`` (2 per pair)
    distinct: list[int]              # indices of the distinct images, first occurrence
    names: list[str]                 # per image: "<Name>_<NNNN>"


def load_sample(folder: Path = DEFAULT_SAMPLE) -> Sample:
    vs = data.load_verification_bin(folder / "lfw.bin", "lfw")
    meta = json.loads((folder / "pairs.json").read_text())["pairs"]
    vs.folds = np.array([p["fold"] for p in meta])
    people = [tuple(p[side]) for p in meta for side in ("first", "second")]
    names = [f"{person}_{number:04d}" for person, number in people]
    distinct = [i for i, n in enumerate(names) if names.index(n) == i]
    return Sample(vs, [person for person, _ in people], distinct, names)


# ---------------------------------------------------------------------------- the junk corpus


@dataclass
class Group:
    """Named 112x112 uint8 RGB images; ``identities[i]`` is the person image ``i`` shows (``None``: nobody):
    it is never compared with that person's faces."""

    name: str
    kind: str                                   # "junk" or "reference" (real faces, not junk)
    names: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    identities: list[str | None] = field(default_factory=list)

    def add(self, name: str, image: np.ndarray, identity: str | None = None) -> None:
        image = np.ascontiguousarray(image)
        if image.shape != (SIDE, SIDE, 3) or image.dtype != np.uint8:
            raise ValueError(f"{self.name}/{name}: {image.shape} {image.dtype}, expected ({SIDE}, {SIDE}, 3) uint8")
        self.names.append(f"{self.name}/{name}")
        self.images.append(image)
        self.identities.append(identity)

    def __len__(self) -> int:
        return len(self.images)


def _u8(x) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)


def _pick(items: list, small: bool, keep: int = 2) -> list:
    """All items, or ``keep`` evenly spaced ones (first and last included) for the small corpus."""
    if not small or len(items) <= keep:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, keep).round().astype(int)]


def _upsample(x: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(x, factor, axis=0), factor, axis=1)


def noise_groups(rng: np.random.Generator, sizes: dict) -> list[Group]:
    uniform, gaussian, lowres = Group("noise_uniform", "junk"), Group("noise_gaussian", "junk"), \
        Group("noise_lowres", "junk")
    for i in range(sizes["noise"]):
        uniform.add(f"{i}", rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    sigmas = (16, 32, 64, 96)
    for i in range(sizes["gaussian"]):
        s = sigmas[i % len(sigmas)]
        gaussian.add(f"sigma{s}/{i}", _u8(rng.normal(128, s, (SIDE, SIDE, 3))))
    for cell in (2, 4, 8, 16, 28):              # uniform noise drawn at 112/cell px, nearest-upsampled
        for i in range(sizes["lowres"]):
            lowres.add(f"cell{cell}/{i}", _upsample(rng.integers(0, 256, (SIDE // cell, SIDE // cell, 3),
                                                                 dtype=np.uint8), cell))
    return [uniform, gaussian, lowres]


def constant_group(rng: np.random.Generator, sizes: dict, small: bool) -> Group:
    g = Group("constant", "junk")
    colors = {"black": (0, 0, 0), "white": (255, 255, 255), "gray128": (128,) * 3}
    if not small:
        colors.update({f"gray{v}": (v,) * 3 for v in (32, 64, 96, 160, 192, 224)})
        colors.update({"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "cyan": (0, 255, 255),
                       "magenta": (255, 0, 255), "yellow": (255, 255, 0), "skin": (224, 172, 140)})
    for i in range(sizes["random_colors"]):
        colors[f"random{i}"] = tuple(int(v) for v in rng.integers(0, 256, 3))
    for name, color in colors.items():
        g.add(name, np.broadcast_to(np.array(color, dtype=np.uint8), (SIDE, SIDE, 3)))
    return g


def pattern_groups(small: bool) -> list[Group]:
    """Stripes (the gray level changes along x: vertical stripes; along y: horizontal) and checkerboards."""
    vertical, horizontal, checker = Group("stripes_vertical", "junk"), Group("stripes_horizontal", "junk"), \
        Group("checkerboard", "junk")
    idx = np.arange(SIDE)
    for w in _pick(list(WIDTHS), small, keep=3):
        for first, second in _pick(list(CONTRASTS), small, keep=1):
            level = np.array([first, second], dtype=np.uint8)
            band = level[(idx // w) % 2]
            tag = f"w{w}/{first}-{second}"
            vertical.add(tag, _rgb(np.broadcast_to(band[None, :], (SIDE, SIDE))))
            horizontal.add(tag, _rgb(np.broadcast_to(band[:, None], (SIDE, SIDE))))
            checker.add(tag, _rgb(level[(idx[:, None] // w + idx[None, :] // w) % 2]))
    return [vertical, horizontal, checker]


def gradient_group(small: bool) -> Group:
    g = Group("gradient", "junk")
    ramp = np.linspace(0, 255, SIDE)
    x, y = np.meshgrid(ramp, ramp)
    r = np.hypot(x - 127.5, y - 127.5) / np.hypot(127.5, 127.5) * 255
    zero = np.zeros_like(x)
    items = [("x", _rgb(x)), ("x_reversed", _rgb(255 - x)), ("y", _rgb(y)), ("y_reversed", _rgb(255 - y)),
             ("diagonal", _rgb((x + y) / 2)), ("radial_dark_centre", _rgb(r)), ("radial_bright_centre", _rgb(255 - r)),
             ("red_x", np.stack([x, zero, zero], -1)), ("green_y", np.stack([zero, y, zero], -1)),
             ("rgb", np.stack([x, y, 255 - x], -1))]
    for name, image in _pick(items, small):
        g.add(name, _u8(image))
    return g


def _blur(face: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(face).filter(ImageFilter.GaussianBlur(radius)))


def _pixelate(face: np.ndarray, block: int) -> np.ndarray:
    f = face.astype(np.float64).reshape(SIDE // block, block, SIDE // block, block, 3).mean(axis=(1, 3))
    return _u8(_upsample(f, block))


def _shuffle_tiles(rng: np.random.Generator, face: np.ndarray, tile: int) -> np.ndarray:
    g = SIDE // tile
    tiles = face.reshape(g, tile, g, tile, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, tile, tile, 3)
    tiles = tiles[rng.permutation(g * g)]
    return np.ascontiguousarray(tiles.reshape(g, g, tile, tile, 3).transpose(0, 2, 1, 3, 4).reshape(SIDE, SIDE, 3))


def _stretch(face: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(face, (2, 98))
    return _u8((face.astype(np.float64) - lo) / max(hi - lo, 1.0) * 255)


def face_groups(rng: np.random.Generator, bases: list[tuple[str, str, np.ndarray]], small: bool) -> list[Group]:
    """Damaged versions of real faces ``(name, identity, image)``: each keeps the identity of its face."""
    transforms = {
        "faces_scaled": [(f"x{k:g}", lambda f, k=k: _u8(f * k)) for k in (0.1, 0.25, 0.5, 1.5, 2, 3, 4)],
        "faces_contrast": [(f"contrast{k:g}", lambda f, k=k: _u8((f - f.mean()) * k + f.mean()))
                           for k in (0.25, 2, 4, 8)]
                          + [("stretched", _stretch)]
                          + [(f"gamma{g:g}", lambda f, g=g: _u8(255 * (f / 255.0) ** g)) for g in (0.3, 3)],
        "faces_inverted": [("negative", lambda f: 255 - f), ("upside_down", lambda f: f[::-1]),
                           ("rotated90", lambda f: np.rot90(f)), ("bgr", lambda f: f[:, :, ::-1])],
        "faces_blurred": [(f"blur{r}", lambda f, r=r: _blur(f, r)) for r in (2, 4, 8)]
                         + [(f"pixelated{b}", lambda f, b=b: _pixelate(f, b)) for b in (8, 16)],
        "faces_shuffled": [(f"tiles{t}", lambda f, t=t: _shuffle_tiles(rng, f, t)) for t in (8, 14, 28, 56)],
        "faces_noisy": [(f"noise{s}", lambda f, s=s: _u8(f + rng.normal(0, s, f.shape))) for s in (32, 64, 128)]
                       + [("half_uniform_noise", lambda f: _u8(0.5 * f + 0.5 * rng.integers(0, 256, f.shape)))],
    }
    groups = []
    for group, variants in transforms.items():
        g = Group(group, "junk")
        for tag, fn in _pick(variants, small):
            for name, identity, face in bases:
                g.add(f"{tag}/{name}", fn(face), identity)
        groups.append(g)
    return groups


def celeba_group(rng: np.random.Generator, root: Path, count: int) -> Group | None:
    """One face each of ``count`` CelebA identities (an ImageFolder of aligned 112x112 crops)."""
    if not root.is_dir():
        return None
    people = sorted(d.name for d in os.scandir(root) if d.is_dir())
    g = Group("celeba", "junk")
    for person in sorted(rng.choice(people, size=min(count, len(people)), replace=False)):
        first = sorted(p for p in (root / person).iterdir() if p.suffix.lower() in data.IMAGE_SUFFIXES)[0]
        g.add(f"{person}/{first.stem}", data.check_aligned(data.read_image(first), str(first)), f"celeba:{person}")
    return g


def lfw_group(rng: np.random.Generator, root: Path, sample: Sample, count: int) -> Group | None:
    """Real impostors (reference): first faces of LFW people of the sample's people sets who are not in it."""
    images = root / "aligned_112x112"
    if not (images.is_dir() and (root / "people.txt").exists()):
        return None
    sets = sorted(set(sample.pairs.folds.tolist()))
    known = set(sample.identities)
    people = [p for p in data.lfw_people(root / "people.txt", sets)
              if p not in known and (images / p / f"{p}_0001.jpg").exists()]
    g = Group("lfw_other_people", "reference")
    for person in sorted(rng.choice(people, size=min(count, len(people)), replace=False)):
        path = images / person / f"{person}_0001.jpg"
        g.add(path.stem, data.check_aligned(data.read_image(path), str(path)), str(person))
    return g


def build_corpus(sample: Sample, size: str = "default", seed: int = 0, celeba: Path | None = DEFAULT_CELEBA,
                 lfw: Path | None = DEFAULT_LFW) -> list[Group]:
    """The junk corpus (and the reference group), the same for the same arguments."""
    sizes, small = SIZES[size], size == "small"
    rng = np.random.default_rng(seed)
    groups = noise_groups(rng, sizes) + [constant_group(rng, sizes, small)] + pattern_groups(small)
    groups.append(gradient_group(small))
    chosen = sorted(rng.choice(sample.distinct, size=sizes["bases"], replace=False))
    bases = [(sample.names[i], sample.identities[i], sample.pairs.raw_image(int(i))) for i in chosen]
    groups += face_groups(rng, bases, small)
    for extra in (celeba_group(np.random.default_rng([seed, 1]), celeba, sizes["celeba"]) if celeba else None,
                  lfw_group(np.random.default_rng([seed, 2]), lfw, sample, sizes["lfw"]) if lfw else None):
        if extra is not None and len(extra):
            groups.append(extra)
    return groups


# ---------------------------------------------------------------------------- embedding


@contextlib.contextmanager
def herpn_input_peaks(batch: int):
    """While active, ``peaks[b]`` is the largest |value| that has entered any HerPN (the fused quadratics of
    :mod:`cryptoface.model`) for image ``b`` of the batch (``inf`` once one is not finite): the quantity of the
    model file's ``info["activation_range"]``, read through :func:`cryptoface.model.recording_activation_peaks`
    (filled when the block ends)."""
    peaks = np.zeros(batch)
    records: list[np.ndarray] = []
    try:
        with cfmodel.recording_activation_peaks(records):
            yield peaks
    finally:
        for seen in records:
            np.maximum(peaks, seen, out=peaks)


def embed(model: FusedPatchCNN, images: list[np.ndarray], progress: bool = False, desc: str = "embedding",
          chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 112x112 images -> (embeddings, HerPN input peaks), preprocessed as the pipeline does."""
    from tqdm import tqdm

    emb, peaks = np.empty((len(images), model.embedding_dim)), np.empty(len(images))
    for start in tqdm(range(0, len(images), chunk), desc=desc, unit="chunk", disable=not progress):
        part = images[start:start + chunk]
        with herpn_input_peaks(len(part)) as seen, np.errstate(all="ignore"):
            emb[start:start + len(part)] = model.embed(data.preprocess(part, model.input_size))
        peaks[start:start + len(part)] = seen
    return emb, peaks


# ---------------------------------------------------------------------------- the rules


#: The rules, in the order they are reported.
RULES = ("poly", "exact", "cosine")


@dataclass
class Rules:
    tau_poly: float
    poly: NormPolynomial
    tau_exact: float
    fold: int | None
    cos_threshold: float
    exact_fit: str = "the shipped sample's 40 pairs"

    def accept(self, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        """Row-wise "same person" of ``a[i]`` and ``b[i]`` under each rule.  Not finite: rejected."""
        with np.errstate(all="ignore"):
            return {"poly": poly_distances(self.poly, a, b) < self.tau_poly,
                    "exact": exact_distances(self.poly, a, b) < self.tau_exact,
                    "cosine": verification.cosines(a, b) >= self.cos_threshold}

    def hint_range(self) -> tuple[float, float]:
        """The squared norms the server's hint range admits (``Server.public_info()["norm_range"]``)."""
        s2 = embedding_scale(self.poly) ** 2
        return 2.0**-HINT_RANGE_LOG2 / s2, 2.0**HINT_RANGE_LOG2 / s2

    def as_dict(self) -> dict:
        return {"fold": self.fold, "poly_tau": self.tau_poly, "poly_norm": self.poly.as_dict(),
                "exact_tau": self.tau_exact, "cos_threshold": self.cos_threshold,
                "hint_range": list(self.hint_range()),
                "exact_fit": f"fit_thresholds(squared_distances(normalize=True)) on {self.exact_fit}, "
                             + ("all folds" if self.fold is None else f"folds other than {self.fold}")}


def fit_rules(model: FusedPatchCNN, pairs: data.VerificationSet, emb: np.ndarray, fold: int | None,
              what: str = "the shipped sample's 40 pairs") -> Rules:
    """The model's rules (poly, exported cosine), and an exact-norm threshold fitted on ``pairs`` (embeddings
    ``emb``, 2 per pair)."""
    if "lfw" not in model.thresholds or model.thresholds["lfw"].exact_tau is None:
        raise UsageError(f"model {model.name} has no exact decision rule for lfw (has {sorted(model.thresholds)})")
    th = model.thresholds["lfw"]
    if fold is not None and fold not in th.per_fold:
        raise UsageError(f"--fold {fold}: the model has thresholds for folds {sorted(th.per_fold)} of lfw")
    tau_poly, poly = th.for_fold(fold)
    exact = fit_thresholds(exact_distances, emb[0::2], emb[1::2], pairs.issame, pairs.folds)
    if fold is not None and fold not in exact.per_fold:
        raise UsageError(f"--fold {fold}: the exact threshold's pairs have folds {sorted(exact.per_fold)}")
    return Rules(tau_poly, poly, exact.for_fold(fold)[0], fold, th.cosine_for_fold(fold), what)


def lfw_fit_pairs(model: FusedPatchCNN, root: Path | None, progress: bool) -> tuple[data.VerificationSet, np.ndarray]:
    """The full LFW pairs of the folds the model's rule was fitted on (``info["evaluation"]["lfw"]["folds"]``),
    with their embeddings: for an exact threshold fitted like the poly one (minutes: 2,400 pairs)."""
    if root is None or not (root / "lfw.bin").is_file():
        raise UsageError(f"--exact-fit lfw needs {root}/lfw.bin (--lfw DIR)")
    vs = data.load_verification_bin(root / "lfw.bin", "lfw")
    folds = model.info.get("evaluation", {}).get("lfw", {}).get("folds")
    vs = vs.subset(verification.pairs_in_folds(vs.folds, folds))
    emb, _ = embed(model, [vs.raw_image(i) for i in range(len(vs.sources))], progress, "lfw pairs")
    return vs, emb


# ---------------------------------------------------------------------------- figures


def _num(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _rates(accepts: dict[str, np.ndarray]) -> dict:
    n = int(accepts[RULES[0]].size)
    out: dict = {"comparisons": n}
    for r in RULES:
        out[f"accepts_{r}"] = int(accepts[r].sum())
        out[f"rate_{r}"] = float(accepts[r].mean()) if n else None
    return out


def norm_stats(emb: np.ndarray, peaks: np.ndarray, poly: NormPolynomial, activation_max: float | None) -> dict:
    with np.errstate(all="ignore"):
        y = np.sum(emb ** 2, axis=1)
        finite = np.isfinite(emb).all(axis=1) & np.isfinite(y)
        rel = np.abs(np.sqrt(y[finite]) * poly(y[finite]) - 1)
    yf = y[finite]
    return {"non_finite": int(np.sum(~finite)),
            "squared_norm_min": _num(yf.min()) if yf.size else None,
            "squared_norm_max": _num(yf.max()) if yf.size else None,
            "below_lo": int(np.sum(yf < poly.lo)), "above_hi": int(np.sum(yf > poly.hi)),
            "poly_relative_error_max": _num(rel.max()) if rel.size else None,
            "activation_max": _num(peaks[np.isfinite(peaks)].max()) if np.isfinite(peaks).any() else None,
            "activation_non_finite": int(np.sum(~np.isfinite(peaks))),
            "over_activation_range": None if activation_max is None else int(np.sum(~(peaks <= activation_max)))}


def group_figures(group: Group, emb: np.ndarray, peaks: np.ndarray, faces_emb: np.ndarray, faces_id: list[str],
                  rules: Rules, activation_max: float | None, refused: np.ndarray | None = None, top: int = 3) -> dict:
    """Each image against each real face (except those of its own person).  ``refused[i]``: image i is refused
    by the honest client's check (:meth:`FusedPatchCNN.check_probe`), so none of its comparisons is made."""
    mask = np.array([[ident is None or ident != f for f in faces_id] for ident in group.identities], dtype=bool)
    ii, kk = np.nonzero(mask.reshape(len(group), len(faces_id)))
    accepts = rules.accept(emb[ii], faces_emb[kk])
    refused = np.zeros(len(group), bool) if refused is None else np.asarray(refused, bool)
    made = ~refused[ii]
    over = np.zeros(len(group), bool) if activation_max is None else ~(peaks <= activation_max)
    per = {r: np.bincount(ii[accepts[r]], minlength=len(group)) for r in RULES}
    out: dict = {"kind": group.kind, "images": len(group), **_rates(accepts), "refused_by_client": int(refused.sum())}
    for r in RULES:
        out[f"accepts_{r}_checked"] = int(np.sum(accepts[r] & made))
        out[f"rate_{r}_checked"] = out[f"accepts_{r}_checked"] / len(ii) if len(ii) else None
        out[f"images_accepted_{r}"] = int(np.sum(per[r] > 0))
        out[f"accepts_{r}_over_range"] = int(per[r][over].sum())
    with np.errstate(all="ignore"):
        y = np.sum(emb ** 2, axis=1)
    out["most_accepted"] = [{"image": group.names[i], **{f"accepts_{r}": int(per[r][i]) for r in RULES},
                             "of": int(mask[i].sum()), "squared_norm": _num(y[i]), "refused": bool(refused[i])}
                            for i in np.argsort(-per["poly"], kind="stable")[:top] if per["poly"][i] > 0]
    out.update(norm_stats(emb, peaks, rules.poly, activation_max))
    return out


def total_figures(groups: dict[str, dict]) -> dict:
    """Sums over groups (rates recomputed from the sums; extremes over groups)."""
    keys = ["images", "comparisons", "non_finite", "below_lo", "above_hi", "activation_non_finite",
            "refused_by_client"]
    keys += [f"{k}_{r}{tail}" for r in RULES for k, tail in (("accepts", ""), ("images_accepted", ""),
                                                                 ("accepts", "_over_range"), ("accepts", "_checked"))]
    out = {k: sum(g[k] for g in groups.values()) for k in keys}
    over = [g["over_activation_range"] for g in groups.values()]
    out["over_activation_range"] = None if None in over else sum(over)
    n = out["comparisons"]
    for r in RULES:
        out[f"rate_{r}"] = out[f"accepts_{r}"] / n if n else None
        out[f"rate_{r}_checked"] = out[f"accepts_{r}_checked"] / n if n else None
    for key, pick in (("squared_norm_min", min), ("squared_norm_max", max), ("activation_max", max),
                      ("poly_relative_error_max", max)):
        vals = [g[key] for g in groups.values() if g[key] is not None]
        out[key] = pick(vals) if vals else None
    return out


def real_figures(model: FusedPatchCNN, sample: Sample, emb: np.ndarray, peaks: np.ndarray, rules: Rules,
                 activation_max: float | None) -> dict:
    vs = sample.pairs
    same = vs.issame
    accepts = rules.accept(emb[0::2], emb[1::2])
    accepts["poly"] = decisions(model, emb[0::2], emb[1::2], "lfw", [rules.fold] * len(vs))   # the model's own code
    accepts["cosine"] = exact_decisions(model, emb[0::2], emb[1::2], "lfw", [rules.fold] * len(vs))
    d = np.array(sample.distinct)
    i, k = np.triu_indices(len(d), 1)
    ids = np.array(sample.identities)[d]
    cross_same = ids[i] == ids[k]
    cross = rules.accept(emb[d[i]], emb[d[k]])
    return {
        "images": len(vs.sources), "distinct_faces": len(d), "people": len(set(ids.tolist())),
        "genuine_pairs": _rates({r: a[same] for r, a in accepts.items()}),
        "impostor_pairs": _rates({r: a[~same] for r, a in accepts.items()}),
        "genuine_all": _rates({r: a[cross_same] for r, a in cross.items()}),
        "impostor_all": _rates({r: a[~cross_same] for r, a in cross.items()}),
        **norm_stats(emb, peaks, rules.poly, activation_max),
    }


def targets(total: dict, groups: dict[str, dict], real: dict) -> dict:
    """The issue's targets for the deployed rule after the client's check (and, for comparison, the poly rule
    without it, as before the hardening)."""
    out: dict = {}
    for name, rule, tail in (("deployed", "cosine", "_checked"), ("before", "poly", "")):
        impostor = real["impostor_all"][f"rate_{rule}"]
        above = sorted(g_name for g_name, g in groups.items()
                       if g["kind"] == "junk" and g[f"rate_{rule}{tail}"] > impostor)
        le_exact = total[f"rate_{rule}{tail}"] <= total["rate_exact"]
        out[name] = {"rule": rule + tail, "junk_rate": total[f"rate_{rule}{tail}"], "junk_rate_le_exact": le_exact,
                     "real_impostor_rate": impostor, "groups_above_real_impostor_rate": above,
                     "met": le_exact and not above}
    out["met"] = out["deployed"]["met"]
    return out


# ---------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an exported .model.npz (default: shipped)")
    ap.add_argument("--size", choices=tuple(SIZES), default="default", help="corpus size (small: for tests)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the corpus")
    ap.add_argument("--fold", type=int, help="decide with this fold's rules (fitted on the other folds)")
    ap.add_argument("--celeba", default=str(DEFAULT_CELEBA), help="CelebA ImageFolder of 112x112 faces, or none")
    ap.add_argument("--lfw", default=str(DEFAULT_LFW), help="LFW folder (aligned_112x112, people.txt), or none")
    ap.add_argument("--exact-fit", choices=("sample", "lfw"), default="sample",
                    help="pairs the exact-norm threshold is fitted on: the shipped sample's 40 (default) or the full "
                         "LFW pairs of the model's folds (--lfw DIR/lfw.bin; minutes)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap.parse_args(argv)


def _folder(value: str) -> Path | None:
    return None if value.lower() == "none" else Path(value)


def run(args) -> dict:
    t0 = time.perf_counter()
    if not args.model.is_file():
        raise UsageError(f"--model {args.model}: no such file")
    model = cfmodel.load_model(args.model)
    sample = load_sample()
    if args.fold is not None and args.fold not in set(sample.pairs.folds.tolist()):
        raise UsageError(f"--fold {args.fold}: the shipped sample has folds {sorted(set(sample.pairs.folds.tolist()))}")
    progress = not args.no_progress
    activation_max = model.info.get("activation_range", {}).get("max")
    corpus = build_corpus(sample, args.size, args.seed, _folder(args.celeba), _folder(args.lfw))
    log.info("corpus: %d images in %d groups (seed %d); sample: %d images", sum(map(len, corpus)), len(corpus),
             args.seed, len(sample.pairs.sources))
    raw = [sample.pairs.raw_image(i) for i in range(len(sample.pairs.sources))]
    s_emb, s_peaks = embed(model, raw, progress, "sample")
    if args.exact_fit == "sample":
        rules = fit_rules(model, sample.pairs, s_emb, args.fold)
    else:
        vs, emb = lfw_fit_pairs(model, _folder(args.lfw), progress)
        rules = fit_rules(model, vs, emb, args.fold, f"{len(vs)} pairs of {args.lfw}/lfw.bin (folds "
                          f"{sorted(set(vs.folds.tolist()))})")
    j_emb, j_peaks = embed(model, [im for g in corpus for im in g.images], progress, "junk")
    t_embed = time.perf_counter() - t0
    faces_emb, faces_id = s_emb[sample.distinct], [sample.identities[i] for i in sample.distinct]
    norm_range = rules.hint_range()
    refused = np.array([model.probe_refusal(e, float(p), norm_range) is not None for e, p in zip(j_emb, j_peaks)])
    groups, start = {}, 0
    for g in corpus:
        sl = slice(start, start + len(g))
        groups[g.name] = group_figures(g, j_emb[sl], j_peaks[sl], faces_emb, faces_id, rules, activation_max,
                                       refused[sl])
        start += len(g)
    junk = {k: v for k, v in groups.items() if v["kind"] == "junk"}
    total = total_figures(junk)
    real = real_figures(model, sample, s_emb, s_peaks, rules, activation_max)
    return {"benchmark": "junk", "model": {"name": model.name, "file": str(args.model),
                                          "input_size": model.input_size, "activation_range_max": activation_max},
            "size": args.size, "seed": args.seed, "rules": rules.as_dict(), "groups": groups, "junk_total": total,
            "real": real, "targets": targets(total, groups, real),
            "seconds": {"embedding": t_embed, "total": time.perf_counter() - t0}}


def _pct(rate) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}%"


def _range(lo, hi) -> str:
    return "-" if lo is None else f"{lo:.4g}..{hi:.4g}"


def table(record: dict) -> dict:
    """The record as aligned rows for :func:`harness.emit`."""
    head = ("images  comparisons  FAR poly / exact / cosine  non-finite  <lo  >hi     squared norms      act. max  "
            ">act  refused  FAR after client check (poly / exact / cosine)")
    rows = {"group": head}

    def rates(g, tail=""):
        return " / ".join(_pct(g[f"rate_{r}{tail}"]) for r in RULES)

    def row(g):
        over = "-" if g["over_activation_range"] is None else g["over_activation_range"]
        act = "-" if g["activation_max"] is None else f"{g['activation_max']:.3g}"
        act += "" if not g["activation_non_finite"] else f" ({g['activation_non_finite']} inf)"
        return (f"{g['images']:>6}  {g['comparisons']:>11}  {rates(g):>25}  {g['non_finite']:>10}  "
                f"{g['below_lo']:>3}  {g['above_hi']:>3}  "
                f"{_range(g['squared_norm_min'], g['squared_norm_max']):>18}  {act:>12}  {over:>4}  "
                f"{g['refused_by_client']:>7}  {rates(g, '_checked')}")

    for name, g in record["groups"].items():
        rows[name + ("" if g["kind"] == "junk" else " (reference)")] = row(g)
    rows["junk total"] = row(record["junk_total"])
    real, r = record["real"], record["rules"]
    for key in ("impostor_pairs", "impostor_all", "genuine_pairs", "genuine_all"):
        f = real[key]
        what = "FAR" if key.startswith("impostor") else "TAR"
        rows[f"sample {key.replace('_', ' ')}"] = f"{what} (poly / exact / cosine): {rates(f)} of {f['comparisons']}"
    rows["sample faces"] = (f"{real['distinct_faces']} distinct of {real['people']} people, squared norms "
                            f"{_range(real['squared_norm_min'], real['squared_norm_max'])}, activation max "
                            f"{real['activation_max']:.3g}")
    rows["rules"] = (f"fold {r['fold']}: poly tau {r['poly_tau']:.4g} on [{r['poly_norm']['lo']:.4g}, "
                     f"{r['poly_norm']['hi']:.4g}]; exact tau {r['exact_tau']:.4g} ({r['exact_fit']}); cosine "
                     f">= {r['cos_threshold']:.4g}, hint range {_range(*r['hint_range'])}")
    rows["model"] = f"{record['model']['name']}, activation_range max {record['model']['activation_range_max']}"
    for name in ("deployed", "before"):
        t = record["targets"][name]
        rows[f"target ({name})"] = (f"met {t['met']}: junk FAR {_pct(t['junk_rate'])} of {t['rule']} <= exact "
                                    f"{t['junk_rate_le_exact']}; groups above the real impostor rate "
                                    f"({_pct(t['real_impostor_rate'])}): "
                                    f"{', '.join(t['groups_above_real_impostor_rate']) or 'none'}")
    rows["seconds"] = f"{record['seconds']['total']:.1f} (embedding {record['seconds']['embedding']:.1f})"
    return rows


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        record = run(args)
    except (UsageError, CryptoFaceError, OSError) as exc:
        print(f"bench_junk: error: {exc}", file=sys.stderr)
        return 2
    emit(record if args.json else table(record), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
