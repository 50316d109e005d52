"""Training loop: ArcFace and/or distillation, jigsaw auxiliary loss, SGD, checkpoints and resume.

Checkpoint keys (``model.ckpt``, written atomically at the end of every epoch):
``backbone`` (PatchCNN state dict, same keys as the original repository),
``head`` (ArcFace state dict or ``None``), ``optimizer``, ``scheduler``,
``epoch``, ``test_acc``, ``jigsaw_weight``, ``config``, ``classes``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import data as facedata
from ..errors import ConfigError, DataError
from .models import ArcFace, PatchCNN, build_model, distillation_loss, jigsaw_loss

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class InMemoryFaces:
    """Training faces decoded and resized once, batched with flips and shifts in numpy."""

    def __init__(self, images: facedata.ImageList, size: int, teacher: np.ndarray | None, flip: bool, shift: int,
                 progress: bool = True, jitter: float = 0.0):
        from tqdm import tqdm

        self.labels = images.labels
        self.teacher = teacher
        self.flip, self.shift, self.jitter = flip, int(shift), float(jitter)
        self.x = np.empty((len(images), 3, size, size), dtype=np.float32)
        for i, p in enumerate(tqdm(images.paths, desc="decode", unit="img", disable=not progress)):
            self.x[i] = facedata.preprocess([facedata.check_aligned(facedata.read_image(p), str(p))], size)[0]

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, rng: np.random.Generator):
        order = rng.permutation(len(self))
        for start in range(0, len(order) - batch_size + 1, batch_size):   # drop the last partial batch
            idx = order[start:start + batch_size]
            x = self.x[idx].copy()
            flipped = rng.random(len(idx)) < 0.5 if self.flip else np.zeros(len(idx), dtype=bool)
            x[flipped] = x[flipped, :, :, ::-1]
            if self.jitter:
                contrast = rng.uniform(1 - self.jitter, 1 + self.jitter, (len(idx), 1, 1, 1)).astype(np.float32)
                bright = rng.uniform(-self.jitter, self.jitter, (len(idx), 1, 1, 1)).astype(np.float32)
                x = np.clip(x * contrast + bright, -1, 1)
            if self.shift:
                s = self.shift
                padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)), mode="reflect")
                dy, dx = rng.integers(0, 2 * s + 1, size=2)
                x = padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
            t = None
            if self.teacher is not None:
                t = self.teacher[idx, flipped.astype(int) if self.teacher.shape[1] > 1 else 0]
            yield (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(self.labels[idx]),
                   None if t is None else torch.from_numpy(np.ascontiguousarray(t)))


class ActivationPenalty:
    """``mean(relu(|x| - T)^2)`` over the inputs of every HerPN, summed: keeps the polynomial network's
    activations inside ``[-T, T]``, where they must stay for CKKS (a quadratic of a large value grows
    out of any modulus, and a few layers of that turn a rare input into an overflow).

    While training, each HerPN input is also clipped to ``[-4T, 4T]`` *after* the penalty has seen it,
    so one runaway sample cannot turn the whole batch's loss into inf/NaN; the penalty's gradient still
    pulls it back.  Evaluation and export never clip.
    """

    def __init__(self, model: torch.nn.Module, bound: float | None):
        from .models import HerPN

        self.bound, self.terms = bound, []
        self.active = bound is not None
        if self.active:
            for mod in model.modules():
                if isinstance(mod, HerPN):
                    mod.register_forward_pre_hook(self._hook)

    def _hook(self, module, inputs):
        if not module.training and not torch.is_grad_enabled():
            return None
        x = inputs[0]
        self.terms.append(torch.relu(x.abs() - self.bound).pow(2).mean())
        return (x.clamp(-4 * self.bound, 4 * self.bound),)

    def reset(self) -> None:
        self.terms = []

    def value(self) -> torch.Tensor:
        return torch.stack(self.terms).sum()


def norm_spread(emb: torch.Tensor) -> torch.Tensor:
    """``mean(log(|e|^2 / D)^2)``: pulls squared norms towards D, so that the encrypted side's quadratic
    approximation of 1/sqrt(|e|^2) works on a narrow interval (it is 27-40% off over a 25x range)."""
    return torch.log(emb.pow(2).sum(1) / emb.shape[1]).pow(2).mean()


def training_images(cfg: dict) -> facedata.ImageList:
    d = cfg["data"]
    if not d.get("train"):
        raise ConfigError("no training data: pass --set data.train=DIR")
    people = None
    if d.get("people_file"):
        if d.get("people_sets") is None:
            raise ConfigError("data.people_file needs data.people_sets")
        people = facedata.lfw_people(d["people_file"], d["people_sets"])
    return facedata.image_folder(d["train"], people, int(d.get("min_images", 1)))


def teacher_embeddings(cfg: dict, images: facedata.ImageList, out_dir: Path) -> np.ndarray | None:
    if cfg["loss"]["kind"] not in ("distill", "both"):
        return None
    from .teacher import Teacher, embed_images, load_embeddings

    dist = cfg["distill"]
    path = dist.get("embeddings")
    if not path:
        if not dist.get("teacher"):
            raise ConfigError("distillation needs distill.teacher or distill.embeddings")
        path = out_dir / "teacher_embeddings.npz"
        if not path.exists():
            embed_images(Teacher(dist["teacher"]), images.paths, path)
    return load_embeddings(path, images.paths)


def pair_distances(model: PatchCNN, vs: facedata.VerificationSet, device: torch.device, folds=None,
                   batch_size: int = 128):
    """``(pairs, embeddings, squared distances of the normalized embeddings)`` for the pairs in ``folds``."""
    from ..verification import pairs_in_folds, squared_distances

    pairs = pairs_in_folds(vs.folds, folds)
    emb = embed_pairs(model, vs, pairs, device, batch_size)
    return pairs, emb, squared_distances(emb[0::2], emb[1::2])


def evaluate_model(model: PatchCNN, sets: dict[str, facedata.VerificationSet], device: torch.device,
                   folds=None, batch_size: int = 128) -> dict[str, Any]:
    """k-fold accuracy of ``model`` on each verification set (flip-free embeddings)."""
    from ..verification import kfold_accuracy

    results = {}
    for name, vs in sets.items():
        pairs, _, dist = pair_distances(model, vs, device, folds, batch_size)
        results[name] = kfold_accuracy(dist, vs.issame[pairs], vs.folds[pairs])
    return results


@torch.no_grad()
def herpn_input_maxima(model: PatchCNN, x: torch.Tensor) -> np.ndarray:
    """Per image, the largest |value| entering any HerPN (what the encrypted side must hold)."""
    from .models import HerPN

    model.eval()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].abs().flatten(1).amax(1)))
             for m in model.modules() if isinstance(m, HerPN)]
    try:
        model.embed(x)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(seen).amax(0).double().numpy()     # (HerPN calls, B) -> (B,)


@torch.no_grad()
def embed_pairs(model: PatchCNN, vs: facedata.VerificationSet, pairs, device, batch_size: int = 128) -> np.ndarray:
    model.eval()
    out = []
    pairs = list(pairs)
    step = max(1, batch_size // 2)
    for i in range(0, len(pairs), step):
        x = torch.from_numpy(vs.images(model.input_size, pairs[i:i + step])).to(device)
        out.append(model.embed(x).double().cpu().numpy())
    return np.concatenate(out)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: dict, resume: str | None = None, progress: bool = True) -> Path:
    """Run the configured training; returns the checkpoint path."""
    from tqdm import tqdm

    seed_everything(cfg.get("seed"))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = pick_device(cfg.get("device", "auto"))
    kind = cfg["loss"]["kind"]
    if kind not in ("arcface", "distill", "both"):
        raise ConfigError(f"loss.kind must be arcface, distill or both, not {kind!r}")

    images = training_images(cfg)   # before anything is written: bad data paths fail cleanly
    out_dir = Path(resume).parent if resume else Path(cfg.get("output") or "runs") / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))

    log.info("training on %d images of %d identities", len(images), images.num_classes)
    teacher = teacher_embeddings(cfg, images, out_dir)
    faces = InMemoryFaces(images, cfg["model"]["input_size"], teacher, cfg["data"]["flip"], cfg["data"]["shift"],
                          progress, cfg["data"].get("jitter", 0.0))
    val_sets = {}
    if cfg["data"].get("val"):
        val_sets = facedata.load_verification_dir(cfg["data"]["val"], cfg["data"]["val_datasets"])

    model = build_model(cfg["model"]["input_size"], cfg["model"]["patch_size"]).to(device)
    if cfg["model"].get("init") and not resume:
        from .checkpoint import backbone_state

        model.load_state_dict(backbone_state(torch.load(cfg["model"]["init"], map_location=device,
                                                        weights_only=False)))
        log.info("initialized from %s", cfg["model"]["init"])
    penalty = ActivationPenalty(model, cfg["loss"].get("activation_bound"))
    head = None
    if kind in ("arcface", "both"):
        head = ArcFace(model.linear.out_features, images.num_classes, cfg["loss"]["arcface_s"],
                       cfg["loss"]["arcface_m"]).to(device)
    o = cfg["optim"]
    groups = [{"params": list(model.parameters()), "weight_decay": o.get("backbone_weight_decay", 0.0)}]
    if head is not None:
        groups.append({"params": [head.kernel], "weight_decay": o["weight_decay"]})
    if o.get("name", "sgd") == "sgd":
        optimizer = torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"])
    elif o["name"] == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=o["lr"])
    else:
        raise ConfigError(f"optim.name must be sgd or adamw, not {o['name']!r}")
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=o["lr_milestones"], gamma=o["lr_gamma"])

    start, test_acc, jigsaw_weight = 1, None, cfg["loss"]["jigsaw_weight"]
    ckpt_path = out_dir / "model.ckpt"
    if resume:
        state = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(state["backbone"])
        if head is not None and state.get("head") is not None:
            head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, test_acc, jigsaw_weight = state["epoch"] + 1, state["test_acc"], state["jigsaw_weight"]
        log.info("resumed from %s at epoch %d", resume, start)

    wandb_run = None
    if cfg.get("wandb"):
        import wandb

        wandb_run = wandb.init(project=cfg["wandb"], config=cfg, dir=str(out_dir))

    rng = np.random.default_rng(cfg.get("seed"))
    for _ in range(1, start):  # keep the shuffling stream aligned after a resume
        rng.permutation(len(faces))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for epoch in range(start, o["epochs"] + 1):
        model.train()
        if o.get("freeze_bn"):
            for mod in model.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        if head is not None:
            head.train()
        n_batches = len(faces) // o["batch_size"]
        if n_batches == 0:
            raise DataError(f"{len(faces)} training images are fewer than one batch of {o['batch_size']}")
        bar = tqdm(faces.batches(o["batch_size"], rng), total=n_batches, desc=f"epoch {epoch}", unit="batch",
                   disable=not progress)
        running, skipped = 0.0, 0
        for x, y, t in bar:
            x, y = x.to(device), y.to(device)
            penalty.reset()
            emb, logits, target = model(x)
            loss = jigsaw_weight * jigsaw_loss(logits, target)
            if penalty.active:
                loss = loss + cfg["loss"].get("activation_weight", 0.0) * penalty.value()
            if cfg["loss"].get("norm_weight"):
                loss = loss + cfg["loss"]["norm_weight"] * norm_spread(emb)
            if head is not None:
                loss = loss + F.cross_entropy(head(emb, y), y)
            if t is not None:
                loss = loss + cfg["loss"]["distill_weight"] * distillation_loss(emb, t.to(device))
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                skipped += 1
                continue
            loss.backward()
            if o.get("grad_clip") is not None:
                torch.nn.utils.clip_grad_value_(params, o["grad_clip"])
            optimizer.step()
            running = 0.9 * running + 0.1 * loss.item() if running else loss.item()
            bar.set_postfix(loss=f"{running:.4f}", lr=optimizer.param_groups[0]["lr"], acc=test_acc)
            if wandb_run is not None:
                wandb_run.log({"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]})
        scheduler.step()
        if skipped:
            log.warning("epoch %d: skipped %d batches with a non-finite loss", epoch, skipped)
        if val_sets:
            res = evaluate_model(model, val_sets, device, cfg["data"].get("val_folds"))
            test_acc = float(np.mean([r.accuracy for r in res.values()]))
            log.info("epoch %d loss %.4f %s", epoch, running,
                     " ".join(f"{k}={r.accuracy:.4f}" for k, r in res.items()))
            if wandb_run is not None:
                wandb_run.log({f"acc/{k}": r.accuracy for k, r in res.items()} | {"epoch": epoch})
        else:
            log.info("epoch %d loss %.4f", epoch, running)
        _atomic_save({"backbone": model.state_dict(), "head": None if head is None else head.state_dict(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                      "test_acc": test_acc, "jigsaw_weight": jigsaw_weight, "config": cfg,
                      "classes": images.num_classes}, ckpt_path)
    if wandb_run is not None:
        wandb_run.finish()
    return ckpt_path
