"""Command line: ``python -m cryptoface.training {train,evaluate,teacher,export} ...``.

Examples::

    python -m cryptoface.training train pcnn64 --set data.train=/data/WebFace4M --set data.val=/data/faces_emore
    python -m cryptoface.training train distill64 --set data.train=../shared/data/lfw/aligned_112x112 \\
        --set data.people_file=../shared/data/lfw/people.txt --set "data.people_sets=[0,1,2,3,4,5]" \\
        --set distill.embeddings=teacher.npz --set data.val=../shared/data/lfw --set "data.val_folds=[6,7,8,9]"
    python -m cryptoface.training train --resume runs/20261126-120000/model.ckpt   # also inside an epoch
    python -m cryptoface.training recipe cryptofacenet4 --workdir runs/cfn4 --set data.train=...  # again: continues
    python -m cryptoface.training evaluate runs/.../model.ckpt --data ../shared/data/lfw --folds 6 7 8 9 --roc roc.png
    python -m cryptoface.training export runs/.../model.ckpt --data ../shared/data/lfw --folds 6 7 8 9 \\
        --output cryptofacenet4.model.npz
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import CryptoFaceError

log = logging.getLogger("cryptoface.training")


def _train(args) -> int:
    from .config import load_config
    from .train import train

    if args.resume:
        import torch

        cfg = torch.load(args.resume, map_location="cpu", weights_only=False)["config"]
        from .config import set_value

        for item in args.set:
            set_value(cfg, item)
    else:
        if not args.config:
            raise CryptoFaceError("train needs a CONFIG (e.g. pcnn64) or --resume CKPT")
        cfg = load_config(args.config, args.set)
    from .train import StopRequest

    budget = None if args.stop_after is None else 60.0 * args.stop_after
    path = train(cfg, resume=args.resume, progress=not args.quiet, stop=StopRequest(budget))
    print(path)
    return 0


def holdout_set(args):
    """``(name, VerificationSet)`` of ``--holdout-folder``'s held-out people, or ``None`` without one."""
    from .. import data as facedata

    if not args.holdout_folder:
        return None
    root = Path(args.holdout_folder)
    images = facedata.image_folder(root, holdout=args.holdout, part="holdout")
    name = facedata.dataset_name(f"{root.resolve().name}_holdout")
    return name, facedata.folder_pairs(images, name, per_fold=args.holdout_pairs, origin=str(root))


def evaluation_sets(args) -> list[tuple[str, object, list[int] | None]]:
    """``(name, VerificationSet, folds)`` for ``--data`` (with ``--folds``) and ``--holdout-folder`` (all folds)."""
    from .. import data as facedata

    sets = [(name, vs, args.folds) for name, vs in facedata.load_verification_dir(args.data, args.datasets).items()]
    extra = holdout_set(args)
    if extra is not None:
        sets.append((extra[0], extra[1], None))
    return sets


def _recipe(args) -> int:
    from .recipe import run_recipe

    budget = None if args.stop_after is None else 60.0 * args.stop_after
    path = run_recipe(args.recipe, args.workdir, args.set, progress=not args.quiet, budget_s=budget, init=args.init)
    print(path)
    return 0


def _evaluate(args) -> int:
    import numpy as np
    import torch

    from ..model import fit_thresholds, poly_distances
    from ..verification import kfold_accuracy, plot_roc, roc
    from .checkpoint import load_checkpoint
    from .train import herpn_input_maxima, pair_distances, pick_device

    model = load_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model.to(device)
    report, curves = {}, {}
    for name, vs, folds in evaluation_sets(args):
        pairs, emb, dist = pair_distances(model, vs, device, folds)
        same, fo = vs.issame[pairs], vs.folds[pairs]
        res = kfold_accuracy(dist, same, fo)
        bad = int(np.sum(~np.isfinite(emb).all(axis=1)))
        poly = fit_thresholds(poly_distances, emb[0::2], emb[1::2], same, fo) if not bad else None
        peaks = np.concatenate([herpn_input_maxima(model, torch.from_numpy(vs.images(model.input_size, chunk)))
                                for chunk in np.array_split(pairs, max(1, len(pairs) // 64))])
        peaks = np.nan_to_num(peaks, nan=np.inf)  # an activation that overflowed to NaN was unbounded
        herpn = {"median": float(np.median(peaks)), "p99": float(np.percentile(peaks, 99)),
                 "p999": float(np.percentile(peaks, 99.9)), "max": float(np.max(peaks))}
        print(f"{name}: largest |HerPN input| per image: median {np.median(peaks):.3g}, "
              f"99.9% {np.percentile(peaks, 99.9):.3g}, max {np.max(peaks):.3g}")
        report[name] = res.as_dict() | {"pairs": int(len(pairs)), "non_finite_embeddings": bad,
                                        "poly_norm_accuracy": None if poly is None else poly.accuracy,
                                        "max_embedding_norm": float(np.nanmax(np.linalg.norm(emb, axis=1))),
                                        "herpn_input_max_per_image": herpn}
        curves[name] = roc(dist, same)
        poly_text = "" if poly is None else f"; {100 * poly.accuracy:.2f}% with the polynomial 1/sqrt norm"
        print(f"{name}: {100 * res.accuracy:.2f}% ± {100 * res.std:.2f} over {len(pairs)} pairs "
              f"(folds {res.folds}), AUC {curves[name][2]:.4f}{poly_text}; {bad} non-finite embeddings")
    print(f"mean: {100 * np.mean([r['accuracy'] for r in report.values()]):.2f}%")
    if args.roc:
        plot_roc(curves, args.roc, title=f"{Path(args.checkpoint).name}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _teacher(args) -> int:
    from .. import data as facedata
    from .teacher import Teacher, embed_images

    people = facedata.lfw_people(args.people_file, args.people_sets) if args.people_file else None
    images = facedata.image_folder(args.images, people)
    embed_images(Teacher(args.model), images.paths, args.output, flips=not args.no_flips)
    return 0


def _export(args) -> int:
    from .export import export_checkpoint

    held = holdout_set(args)
    extra = {} if held is None else {held[0]: held[1]}
    path = export_checkpoint(args.checkpoint, args.output, data_dir=args.data, datasets=args.datasets,
                             folds=args.folds, name=args.name, extra_sets=extra, norm_faces=args.norm_faces or (),
                             norm_faces_count=args.norm_faces_count, norm_trim=args.norm_trim)
    print(path)
    return 0


def _holdout_arguments(p) -> None:
    p.add_argument("--holdout-folder", metavar="ROOT",
                   help="also test on the people of this ImageFolder that training held out (data.train's "
                        "'holdout'), as 10 identity-disjoint folds of genuine and impostor pairs")
    p.add_argument("--holdout", type=float, default=0.1, help="the held-out fraction training used (default 0.1)")
    p.add_argument("--holdout-pairs", type=int, default=300, help="genuine (and impostor) pairs per fold")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cryptoface.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="config file or built-in name (pcnn64, pcnn96, pcnn128, distill64)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--stop-after", type=float, metavar="MINUTES",
                   help="checkpoint and stop after this long (continue later with --resume); SIGINT/SIGTERM do "
                        "the same at any time")
    p.set_defaults(func=_train)

    p = sub.add_parser("recipe", help="run or continue every stage of a recipe (e.g. cryptofacenet4)")
    p.add_argument("recipe", help="recipe file or built-in name (cryptofacenet4, cryptofacenet9, cryptofacenet16)")
    p.add_argument("--workdir", required=True, help="one folder per stage goes here; run again to continue")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in every stage")
    p.add_argument("--init", metavar="CKPT", help="checkpoint the first stage starts from (model.init)")
    p.add_argument("--stop-after", type=float, metavar="MINUTES", help="checkpoint and stop after this long")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_recipe)

    p = sub.add_parser("evaluate", help="k-fold verification accuracy of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="folder with <dataset>.bin files or an LFW folder with pairs.txt")
    p.add_argument("--datasets", nargs="+", default=["lfw"])
    p.add_argument("--folds", nargs="+", type=int, help="only these folds (e.g. identity-disjoint ones)")
    p.add_argument("--roc", help="write a ROC plot (PNG)")
    p.add_argument("--json", help="write the figures as JSON")
    p.add_argument("--device", default="auto")
    _holdout_arguments(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("teacher", help="cache a teacher model's embeddings of a folder of faces")
    p.add_argument("model", help=".onnx or OpenVINO .xml face-embedding model")
    p.add_argument("images", help="ImageFolder root of aligned 112x112 faces")
    p.add_argument("--output", required=True)
    p.add_argument("--people-file")
    p.add_argument("--people-sets", nargs="+", type=int)
    p.add_argument("--no-flips", action="store_true", help="do not embed mirror images too")
    p.set_defaults(func=_teacher)

    p = sub.add_parser("export", help="fuse a checkpoint and write <name>.model.npz for the encrypted side")
    p.add_argument("checkpoint")
    p.add_argument("--output", required=True)
    p.add_argument("--data", help="verification data used to fit the 1/sqrt polynomial and the thresholds")
    p.add_argument("--datasets", nargs="+", default=["lfw"])
    p.add_argument("--folds", nargs="+", type=int, help="fit on these folds only")
    p.add_argument("--name", help="model name in the manifest (default: from --output)")
    p.add_argument("--norm-faces", nargs="+", metavar="ROOT",
                   help="ImageFolders of other faces whose squared norms the 1/sqrt polynomial's range covers too")
    p.add_argument("--norm-faces-count", type=int, default=2000, help="faces drawn from each --norm-faces folder")
    p.add_argument("--norm-trim", type=float, default=0.0,
                   help="top fraction of squared norms the 1/sqrt fit drops (default 0: the range covers every "
                        "face seen; trimming makes faces of the top fraction fall outside)")
    _holdout_arguments(p)
    p.set_defaults(func=_export)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CryptoFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
