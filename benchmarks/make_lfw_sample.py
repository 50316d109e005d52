"""Build the small LFW sample that ships with the project (the default data of run_lfw.py).

It takes pairs from the official LFW View-2 ``pairs.txt`` in the folds given
(by default 6-9, whose people the shipped model never saw in training), an
equal number of genuine and impostor pairs per fold chosen with a fixed seed,
and writes:

* ``<output>/lfw.bin``: the InsightFace verification format (two JPEG crops per
  pair, then the issame list), byte-for-byte the images of ``lfw.bin``;
* ``<output>/pairs.json``: for each sample pair its index in ``pairs.txt``, fold,
  names and image numbers, and the source it was built from.

With ``--raw DIR`` (LFW's original photos, ``DIR/<Name>/<Name>_NNNN.jpg``), the sample's images are aligned
from those photos by the project's own alignment (:mod:`cryptoface.align`: MTCNN and a similarity transform to
the ArcFace template, as the client of the service does) instead of being copied from ``lfw.bin``.

Run:  python benchmarks/make_lfw_sample.py --lfw ../shared/data/lfw --output cryptoface/assets/lfw_sample
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cryptoface import data  # noqa: E402

log = logging.getLogger("make_lfw_sample")


def aligned_from_raw(raw: Path, faces, weights) -> list[bytes]:
    """The JPEG bytes (quality 95) of each ``(name, number)``'s photo in ``raw``, aligned."""
    import io

    from PIL import Image

    from cryptoface.align import MTCNN, align_photo

    detector = MTCNN(weights)
    out = []
    for name, number in faces:
        path = raw / name / f"{name}_{int(number):04d}.jpg"
        crop = align_photo(data.read_image(path), detector, str(path))
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", default="../shared/data/lfw", help="folder with lfw.bin and pairs.txt")
    ap.add_argument("--folds", nargs="+", type=int, default=[6, 7, 8, 9])
    ap.add_argument("--per-fold", type=int, default=10, help="pairs per fold (half genuine, half impostor)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="cryptoface/assets/lfw_sample")
    ap.add_argument("--raw", default=None, help="align the sample from these raw LFW photos instead (needs "
                                                "'cryptoface fetch-mtcnn')")
    ap.add_argument("--mtcnn", default=None, help="MTCNN weights (default ~/.cryptoface/mtcnn.npz)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    lfw = Path(args.lfw)
    pairs = data.read_pairs(lfw / "pairs.txt")
    full = data.load_verification_bin(lfw / "lfw.bin", "lfw")
    if len(full) != len(pairs):
        raise SystemExit(f"{lfw}: lfw.bin has {len(full)} pairs, pairs.txt {len(pairs)}")
    rng = np.random.default_rng(args.seed)
    chosen = []
    for fold in args.folds:
        idx = np.flatnonzero(full.folds == fold)
        same, diff = idx[full.issame[idx]], idx[~full.issame[idx]]
        half = args.per_fold // 2
        chosen += sorted(rng.choice(same, half, replace=False).tolist() + rng.choice(diff, half, replace=False).tolist())
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.raw:
        encoded = aligned_from_raw(Path(args.raw), [pairs[i][k:k + 2] for i in chosen for k in (0, 2)], args.mtcnn)
    else:
        encoded = [full.sources[j] for i in chosen for j in (2 * i, 2 * i + 1)]
    data.write_verification_bin(out / "lfw.bin", encoded, full.issame[chosen].tolist())
    meta = {
        "source": {"pairs": "LFW View-2 pairs.txt",
                   "images": (f"{args.raw} aligned by cryptoface.align (MTCNN, ArcFace template)" if args.raw
                              else "lfw.bin (112x112 ArcFace-aligned crops)"),
                   "lfw_bin_sha256": hashlib.sha256((lfw / "lfw.bin").read_bytes()).hexdigest(),
                   "folds": args.folds, "per_fold": args.per_fold, "seed": args.seed},
        "licence": "LFW images: public research benchmark; copyright stays with the photographers (see LFW README)",
        "pairs": [{"index": int(i), "fold": int(full.folds[i]), "same": bool(full.issame[i]),
                   "first": [pairs[i][0], pairs[i][1]], "second": [pairs[i][2], pairs[i][3]]} for i in chosen],
    }
    (out / "pairs.json").write_text(json.dumps(meta, indent=1))
    log.info("%d pairs (%d genuine) from folds %s -> %s (%.0f kB)", len(chosen), int(full.issame[chosen].sum()),
             args.folds, out, (out / "lfw.bin").stat().st_size / 1e3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
