"""Training loop: ArcFace and/or distillation, jigsaw auxiliary loss, SGD, checkpoints and resume.

Checkpoint keys (``model.ckpt``, written atomically at the end of every epoch, every
``checkpoint_minutes`` inside an epoch, and when the run is stopped by SIGINT/SIGTERM or its time budget):
``backbone`` (PatchCNN state dict, same keys as the original repository),
``head`` (ArcFace state dict or ``None``), ``optimizer``, ``scheduler``,
``epoch`` (the last *completed* epoch), ``test_acc``, ``jigsaw_weight``, ``config``, ``classes``,
``rng`` (the batch generator's state) and ``partial`` (``None`` at an epoch's end; inside an epoch the
epoch number, the batches done, the epoch's shuffled order and the running loss).  A resume from either
kind continues exactly where the run stopped: the same batches, flips and shifts, the same weights as
a run that was never stopped (``tests/cryptoface/test_training_smoke.py`` checks this bit for bit).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

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
    """Training faces decoded and resized once, batched with flips and shifts in numpy.

    The faces are kept as float16 (half the memory: 54 k faces at 128x128 are 5.3 GB instead of
    10.6 GB; the 8-bit source pixels lose nothing) and become float32 batch by batch."""

    def __init__(self, images: facedata.ImageList, size: int, teacher: np.ndarray | None, flip: bool, shift: int,
                 progress: bool = True, jitter: float = 0.0):
        from tqdm import tqdm

        self.labels = images.labels
        self.teacher = teacher
        self.flip, self.shift, self.jitter = flip, int(shift), float(jitter)
        self.x = np.empty((len(images), 3, size, size), dtype=np.float16)
        for i, p in enumerate(tqdm(images.paths, desc="decode", unit="img", disable=not progress)):
            self.x[i] = facedata.preprocess([facedata.check_aligned(facedata.read_image(p), str(p))], size)[0]

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, rng: np.random.Generator, order: np.ndarray, start: int = 0):
        """Batches ``start, start+1, ...`` of the epoch whose shuffled ``order`` is given (the last partial
        batch is dropped).  Each batch draws its flips, jitter and shift from ``rng`` when it is made."""
        for first in range(start * batch_size, len(order) - batch_size + 1, batch_size):
            idx = order[first:first + batch_size]
            x = self.x[idx].astype(np.float32)
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
    """``mean(relu(|x| - T)^2)`` over the inputs of every HerPN (and every trained quadratic of the AutoFHE
    baseline), summed: keeps the polynomial network's
    activations inside ``[-T, T]``, where they must stay for CKKS (a quadratic of a large value grows
    out of any modulus, and a few layers of that turn a rare input into an overflow).

    While training, each HerPN input is also clipped to ``[-4T, 4T]`` *after* the penalty has seen it,
    so one runaway sample cannot turn the whole batch's loss into inf/NaN; the penalty's gradient still
    pulls it back.  Evaluation and export never clip.
    """

    def __init__(self, model: torch.nn.Module, bound: float | None):
        from .models import HerPN
        from .resnet import ChannelQuadratic

        self.bound, self.terms = bound, []
        self.active = bound is not None
        if self.active:
            for mod in model.modules():
                if isinstance(mod, (HerPN, ChannelQuadratic)):
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


def training_sources(cfg: dict) -> list[dict]:
    """``data.train`` as a list of sources ``{path, people_file, people_sets, min_images}``.

    ``data.train`` is one ImageFolder root (filtered by ``data.people_file``/``data.people_sets`` and
    ``data.min_images``) or a list of sources, each a root (taking only ``data.min_images``) or a mapping
    with its own ``path`` and optional ``people_file``, ``people_sets``, ``min_images`` and ``holdout`` (a
    fraction of the identities, chosen by :func:`cryptoface.data.held_out`, left out of training so that they
    can test it).  Example: CelebA less 10 % of its people, plus the LFW people of sets 0-5::

        --set "data.train=[{path: /data/celeba_112x112, holdout: 0.1}, {path: /data/lfw/aligned_112x112,
               people_file: /data/lfw/people.txt, people_sets: [0,1,2,3,4,5]}]"
    """
    d = cfg["data"]
    train = d.get("train")
    if not train:
        raise ConfigError("no training data: pass --set data.train=DIR")
    min_images = int(d.get("min_images", 1))
    if isinstance(train, (str, os.PathLike)):
        return [{"path": str(train), "people_file": d.get("people_file"), "people_sets": d.get("people_sets"),
                 "min_images": min_images, "holdout": 0.0}]
    if not isinstance(train, list):
        raise ConfigError(f"data.train must be a folder or a list of sources, not {type(train).__name__}")
    sources = []
    for item in train:
        if isinstance(item, (str, os.PathLike)):
            item = {"path": str(item)}
        if not isinstance(item, dict) or not item.get("path"):
            raise ConfigError(f"data.train: a source must be a folder or a mapping with a path, not {item!r}")
        unknown = set(item) - {"path", "people_file", "people_sets", "min_images", "holdout"}
        if unknown:
            raise ConfigError(f"data.train: unknown source keys {sorted(unknown)}")
        sources.append({"path": str(item["path"]), "people_file": item.get("people_file"),
                        "people_sets": item.get("people_sets"), "min_images": int(item.get("min_images", min_images)),
                        "holdout": float(item.get("holdout") or 0.0)})
    return sources


def training_images(cfg: dict) -> facedata.ImageList:
    """Every source's images, one class per (source, identity): identities of two sources never merge."""
    sources = training_sources(cfg)
    lists = []
    for src in sources:
        people = None
        if src["people_file"]:
            if src["people_sets"] is None:
                raise ConfigError(f"{src['path']}: people_file needs people_sets")
            people = facedata.lfw_people(src["people_file"], src["people_sets"])
        lists.append(facedata.image_folder(src["path"], people, src["min_images"], holdout=src["holdout"]))
    if len(lists) == 1:
        return lists[0]
    paths, labels, classes = [], [], []
    for k, images in enumerate(lists):
        paths.extend(images.paths)
        labels.append(images.labels + len(classes))
        classes.extend(f"{k}:{name}" for name in images.classes)
    return facedata.ImageList(paths, np.concatenate(labels), classes)


def teacher_embeddings(cfg: dict, images: facedata.ImageList, out_dir: Path) -> np.ndarray | None:
    """The teacher's embeddings of every training image: from ``distill.embeddings`` (one file or a list,
    e.g. one per source) or computed once with ``distill.teacher`` into the run folder."""
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


def _activation_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The activations whose inputs the encrypted side must hold: HerPN (CryptoFaceNet), ReLU (MPCNN's AppReLU
    needs them within [-B, B]) and the trained quadratics of the AutoFHE baseline."""
    from .models import HerPN
    from .resnet import ChannelQuadratic

    return [m for m in model.modules() if isinstance(m, (HerPN, ChannelQuadratic, torch.nn.ReLU))]


@torch.no_grad()
def herpn_input_maxima(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Per image, the largest |value| entering any activation (HerPN, or a baseline's ReLU or quadratic): what
    the encrypted side must hold."""
    model.eval()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach().abs().flatten(1).amax(1)))
             for m in _activation_modules(model)]
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


def _new_run_dir(root: Path) -> Path:
    """``root/<date-time>``, with ``-2``, ``-3``, ... when a run started in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        path = root / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"{root}: cannot make a new run folder for {stamp}")


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class StopRequest:
    """Asks a training run to checkpoint and return at the next batch boundary: on SIGINT/SIGTERM (while
    :func:`train` runs in the main thread), after ``budget_s`` seconds, or when ``when()`` says so."""

    def __init__(self, budget_s: float | None = None, when: Callable[[int, int], bool] | None = None):
        self.deadline = None if budget_s is None else time.monotonic() + float(budget_s)
        self.when = when
        self.signalled: int | None = None

    def __call__(self, epoch: int, batch: int) -> bool:
        if self.signalled is not None:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return True
        return bool(self.when and self.when(epoch, batch))

    def install(self):
        """Route SIGINT and SIGTERM here for the run's duration; returns a function that restores them."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.signalled is not None:        # a second signal: stop now, without a checkpoint
                signal.signal(signum, previous[signum])
                raise KeyboardInterrupt
            self.signalled = signum
            log.warning("signal %d: checkpointing after this batch", signum)

        for sig in previous:
            signal.signal(sig, handler)
        return lambda: [signal.signal(sig, h) for sig, h in previous.items()]


def init_from_checkpoint(model: torch.nn.Module, state: dict) -> None:
    """Load a checkpoint's weights into ``model``, also from a CryptoFaceNet with another patch grid.

    With the same grid this is ``load_state_dict``.  With another grid (e.g. CryptoFaceNet4 into
    CryptoFaceNet9) patch ``(r, c)`` of the new grid starts from the old patch covering the same relative
    position, ``(r * g_old // g_new, c * g_old // g_new)``; the linear layer's block of that patch starts
    from the old patch's block scaled by ``P_old / P_new`` (the embedding keeps its scale); the final batch
    norm is copied and the jigsaw head (a classifier over the new patch count) keeps its fresh weights.
    A warm start, not a trained model: the larger model is then trained as usual.
    """
    from .checkpoint import backbone_state

    if not isinstance(model, PatchCNN):        # a ResNet baseline: the same architecture's weights only
        try:
            model.load_state_dict(state.get("backbone", state))
        except (RuntimeError, AttributeError) as exc:
            raise ConfigError(f"model.init: not a checkpoint of this network ({exc})") from None
        return
    src = backbone_state(state)
    n_old = 1 + max(int(k.split(".")[1]) for k in src if k.startswith("nets."))
    g_old, g_new = round(n_old ** 0.5), model.grid
    if g_old * g_old != n_old:
        raise ConfigError(f"model.init: {n_old} patch networks do not form a square grid")
    if g_old == g_new:
        model.load_state_dict(src)
        return
    dim = model.linear.in_features // model.num_patches
    old_w = src["linear.weight"]
    if old_w.shape != (model.linear.out_features, n_old * dim):
        raise ConfigError(f"model.init: linear layer {tuple(old_w.shape)} does not fit a {g_old}x{g_old} grid")
    new = model.state_dict()
    weight = new["linear.weight"].clone()
    for r in range(g_new):
        for c in range(g_new):
            j, i = r * g_new + c, (r * g_old // g_new) * g_old + c * g_old // g_new
            for key, value in src.items():
                if key.startswith(f"nets.{i}."):
                    new[f"nets.{j}." + key[len(f"nets.{i}."):]] = value.clone()
            weight[:, j * dim:(j + 1) * dim] = old_w[:, i * dim:(i + 1) * dim] * (n_old / model.num_patches)
    new["linear.weight"] = weight
    for key in ("linear.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        if key in src:
            new[key] = src[key].clone()
    model.load_state_dict(new)
    log.info("model.init: %dx%d patch networks started from a %dx%d checkpoint", g_new, g_new, g_old, g_old)


def train(cfg: dict, resume: str | None = None, progress: bool = True,
          stop: StopRequest | None = None, run_dir: str | Path | None = None) -> Path:
    """Run the configured training; returns the checkpoint path.

    The run checkpoints at every epoch's end, every ``checkpoint_minutes`` inside an epoch, and when
    ``stop`` (by default: SIGINT/SIGTERM) asks it to; it then returns the checkpoint's path and
    ``--resume`` continues from exactly there.  The run's folder is ``resume``'s, else ``run_dir``, else a new
    ``<output>/<date-time>``.
    """
    stop = stop if stop is not None else StopRequest()
    restore_signals = stop.install()
    try:
        return _train(cfg, resume, progress, stop, run_dir)
    finally:
        restore_signals()


def _train(cfg: dict, resume: str | None, progress: bool, stop: StopRequest, run_dir) -> Path:
    from tqdm import tqdm

    seed_everything(cfg.get("seed"))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = pick_device(cfg.get("device", "auto"))
    kind = cfg["loss"]["kind"]
    if kind not in ("arcface", "distill", "both"):
        raise ConfigError(f"loss.kind must be arcface, distill or both, not {kind!r}")

    images = training_images(cfg)   # before anything is written: bad data paths fail cleanly
    if resume:
        out_dir = Path(resume).parent
    elif run_dir is not None:
        out_dir = Path(run_dir)
    else:
        out_dir = _new_run_dir(Path(cfg.get("output") or "runs"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))

    log.info("training on %d images of %d identities", len(images), images.num_classes)
    teacher = teacher_embeddings(cfg, images, out_dir)
    faces = InMemoryFaces(images, cfg["model"]["input_size"], teacher, cfg["data"]["flip"], cfg["data"]["shift"],
                          progress, cfg["data"].get("jitter", 0.0))
    val_sets = {}
    if cfg["data"].get("val"):
        val_sets = facedata.load_verification_dir(cfg["data"]["val"], cfg["data"]["val_datasets"])

    try:
        model = build_model(cfg["model"]["input_size"], cfg["model"]["patch_size"],
                            cfg["model"].get("arch", "cryptofacenet"), cfg["model"].get("activation")).to(device)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    if cfg["model"].get("init") and not resume:
        init_from_checkpoint(model, torch.load(cfg["model"]["init"], map_location=device, weights_only=False))
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

    rng = np.random.default_rng(cfg.get("seed"))
    start, test_acc, jigsaw_weight, partial = 1, None, cfg["loss"]["jigsaw_weight"], None
    ckpt_path = out_dir / "model.ckpt"
    if resume:
        state = torch.load(resume, map_location=device, weights_only=False)
        model.load_state_dict(state["backbone"])
        if head is not None and state.get("head") is not None:
            head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, test_acc, jigsaw_weight = state["epoch"] + 1, state["test_acc"], state["jigsaw_weight"]
        partial = state.get("partial")
        if state.get("rng") is not None:
            rng.bit_generator.state = state["rng"]
        else:   # a checkpoint from before the generator's state was saved: re-draw the epochs' orders
            for _ in range(1, start):
                rng.permutation(len(faces))
        if partial is not None:
            if len(partial["order"]) != len(faces):
                raise ConfigError(f"{resume}: stopped inside an epoch over {len(partial['order'])} images, "
                                  f"but the training data now has {len(faces)}")
            log.info("resumed from %s in epoch %d after %d batches", resume, partial["epoch"], partial["batch"])
        else:
            log.info("resumed from %s at epoch %d", resume, start)

    wandb_run = None
    if cfg.get("wandb"):
        import wandb

        wandb_run = wandb.init(project=cfg["wandb"], config=cfg, dir=str(out_dir))

    def save(epoch_done: int, part: dict | None) -> None:
        _atomic_save({"backbone": model.state_dict(), "head": None if head is None else head.state_dict(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "epoch": epoch_done, "test_acc": test_acc, "jigsaw_weight": jigsaw_weight, "config": cfg,
                      "classes": images.num_classes, "rng": rng.bit_generator.state, "partial": part}, ckpt_path)

    every_s = 60.0 * float(cfg.get("checkpoint_minutes") or 0)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_batches = len(faces) // o["batch_size"]
    if n_batches == 0:
        raise DataError(f"{len(faces)} training images are fewer than one batch of {o['batch_size']}")
    for epoch in range(start, o["epochs"] + 1):
        model.train()
        if o.get("freeze_bn"):
            for mod in model.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        if head is not None:
            head.train()
        if partial is not None:
            order, done, running, skipped = partial["order"], partial["batch"], partial["running"], partial["skipped"]
            partial = None
        else:
            order, done, running, skipped = rng.permutation(len(faces)), 0, 0.0, 0
        bar = tqdm(faces.batches(o["batch_size"], rng, order, done), total=n_batches, initial=done,
                   desc=f"epoch {epoch}", unit="batch", disable=not progress)
        last_save = time.monotonic()
        for x, y, t in bar:
            x, y = x.to(device), y.to(device)
            penalty.reset()
            emb, logits, target = model(x)
            loss = jigsaw_weight * jigsaw_loss(logits, target) if logits is not None else emb.new_zeros(())
            if penalty.active:
                loss = loss + cfg["loss"].get("activation_weight", 0.0) * penalty.value()
            if cfg["loss"].get("norm_weight"):
                loss = loss + cfg["loss"]["norm_weight"] * norm_spread(emb)
            if head is not None:
                loss = loss + F.cross_entropy(head(emb, y), y)
            if t is not None:
                loss = loss + cfg["loss"]["distill_weight"] * distillation_loss(emb, t.to(device))
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if not torch.isfinite(loss):
                skipped += 1
            else:
                loss.backward()
                if o.get("grad_clip") is not None:
                    torch.nn.utils.clip_grad_value_(params, o["grad_clip"])
                optimizer.step()
                running = 0.9 * running + 0.1 * loss.item() if running else loss.item()
                bar.set_postfix(loss=f"{running:.4f}", lr=optimizer.param_groups[0]["lr"], acc=test_acc)
                if wandb_run is not None:
                    wandb_run.log({"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]})
            if done == n_batches:
                break
            stopping = stop(epoch, done)
            if stopping or (every_s and time.monotonic() - last_save >= every_s):
                save(epoch - 1, {"epoch": epoch, "batch": done, "order": order, "running": running,
                                 "skipped": skipped})
                last_save = time.monotonic()
                if stopping:
                    bar.close()
                    log.info("stopped in epoch %d after %d of %d batches; checkpoint %s (continue with --resume)",
                             epoch, done, n_batches, ckpt_path)
                    return ckpt_path
        bar.close()
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
        save(epoch, None)
        if epoch < o["epochs"] and stop(epoch + 1, 0):
            log.info("stopped after epoch %d; checkpoint %s (continue with --resume)", epoch, ckpt_path)
            break
    if wandb_run is not None:
        wandb_run.finish()
    return ckpt_path
