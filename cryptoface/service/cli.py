"""The ``cryptoface`` command: the service and its key holder.

    cryptoface serve [--model cryptofacenet4] [--preset N16_QP1762_L29_S38] [--state DIR] [--port 8000]
    cryptoface keygen --server http://HOST:PORT [--home DIR]      # the secret key stays in DIR (0600)
    cryptoface enroll NAME PHOTO [--replace]
    cryptoface verify NAME PHOTO                                  # exit 0: same person, 1: not the same
    cryptoface identify PHOTO                                     # the enrolled names that match
    cryptoface delete NAME
    cryptoface names | health
    cryptoface fetch-mtcnn                                        # the face detector's weights, once
    cryptoface align SRC_DIR DST_DIR                              # raw photos -> aligned crops (for run_lfw)

PHOTO is an ordinary photo of one face (aligned by the client: MTCNN, then a similarity transform to the
ArcFace template; needs fetch-mtcnn once) or an aligned 112 x 112 crop.  Every client command reads the key
holder's folder (``--home``, default ``$CRYPTOFACE_HOME`` or ``~/.cryptoface``), which also remembers the
server's address.  A refused request or bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fhe_ckks.errors import FheError

from cryptoface import ASSETS
from ..errors import CryptoFaceError, ProbeError

log = logging.getLogger("cryptoface")

#: Exit statuses: a decision "same" (or success), "different" (or some photos refused by align), an error.
SAME, DIFFERENT, ERROR = 0, 1, 2
#: The facenet-pytorch wheel whose MTCNN weights fetch-mtcnn converts (it is never installed).
MTCNN_WHEEL_VERSION = "2.6.0"


def model_path(name: str) -> Path:
    """A model file's path, or the shipped model of that name (``cryptofacenet4``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = ASSETS / f"{name}.model.npz"
    if shipped.is_file():
        return shipped
    known = sorted(p.name.removesuffix(".model.npz") for p in ASSETS.glob("*.model.npz"))
    raise CryptoFaceError(f"no model file {name!r}; shipped models: {', '.join(known)}")


def _parser() -> argparse.ArgumentParser:
    from ..encrypted import DEFAULT_PRESET

    ap = argparse.ArgumentParser(prog="cryptoface", description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the server (needs the 'service' extra)")
    s.add_argument("--model", default="cryptofacenet4", help="a shipped model's name or a .model.npz path")
    s.add_argument("--preset", default=DEFAULT_PRESET)
    s.add_argument("--state", default="cryptoface-state", help="folder of the template store and installed keys")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=None, help="processes for the patch groups")
    s.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="where the patch groups, decisions and gallery batches run (ray: the ray extra)")
    s.add_argument("--ray-address", default=None, help="the Ray cluster to join (default: a Ray instance here)")
    s.add_argument("--dataset", default="lfw", help="whose exported decision threshold to use")
    s.add_argument("--insecure", action="store_true", help="allow an INSECURE_ preset (toy tests only)")

    def client_command(name: str, help: str, *args: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        for a in args:
            c.add_argument(a)
        c.add_argument("--home", default=None, help="the key holder's folder (default ~/.cryptoface)")
        c.add_argument("--server", default=None, help="the server's URL (default: the one keygen used)")
        c.add_argument("--insecure", action="store_true", help="accept INSECURE_ parameters (toy tests only)")
        c.add_argument("--timeout", type=float, default=None, help="seconds per request (default: none)")
        c.add_argument("--mtcnn", default=None, help="MTCNN weights (default ~/.cryptoface/mtcnn.npz)")
        return c

    k = client_command("keygen", "make a secret key here and upload the evaluation keys")
    k.add_argument("--force", action="store_true", help="replace an existing secret key")
    e = client_command("enroll", "enroll an aligned photo under a name", "name", "photo")
    e.add_argument("--replace", action="store_true", help="replace an existing template")
    client_command("verify", "is the photo's face the enrolled name's? (exit 0 same, 1 not)", "name", "photo")
    client_command("identify", "which enrolled names match the photo's face", "photo")
    client_command("delete", "delete a name's template", "name")
    client_command("names", "list the enrolled names")
    client_command("health", "the server's status")
    f = sub.add_parser("fetch-mtcnn", help="download the facenet-pytorch wheel (not installed) and convert its "
                                           "MTCNN weights")
    f.add_argument("--wheel", default=None, help="a facenet_pytorch-2.6.0 wheel already downloaded")
    f.add_argument("--out", default=None, help="where to write them (default ~/.cryptoface/mtcnn.npz)")
    a = sub.add_parser("align", help="align every photo of a folder to 112 x 112 crops (e.g. for run_lfw --data)")
    a.add_argument("src")
    a.add_argument("dst")
    a.add_argument("--mtcnn", default=None, help="MTCNN weights (default ~/.cryptoface/mtcnn.npz)")
    return ap


def _fetch_mtcnn(args) -> int:
    import subprocess
    import tempfile

    from ..align.weights import convert, default_weights_path

    out = Path(args.out) if args.out else default_weights_path()
    if args.wheel:
        wheel = Path(args.wheel)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cryptoface-mtcnn-"))
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               f"facenet-pytorch=={MTCNN_WHEEL_VERSION}", "-d", str(tmp)],
                              capture_output=True, text=True)
        wheels = sorted(tmp.glob("facenet_pytorch-*.whl"))
        if done.returncode or not wheels:
            raise CryptoFaceError(f"pip could not download facenet-pytorch=={MTCNN_WHEEL_VERSION}: "
                                  f"{done.stderr.strip()[-300:]}")
        wheel = wheels[0]
    sys.stdout.write(f"MTCNN weights in {convert(wheel, out)}\n")
    return SAME


def _align(args) -> int:
    from ..align import MTCNN, align_folder

    refused = align_folder(args.src, args.dst, MTCNN(args.mtcnn))
    for rel, why in refused.items():
        sys.stderr.write(f"refused {rel}: {why}\n")
    sys.stdout.write(f"aligned into {args.dst}; {len(refused)} refused\n")
    return SAME if not refused else DIFFERENT


def _serve(args) -> int:
    from fhe_ckks import presets

    from ..model import load_model
    from .server import ServiceState, serve

    path = model_path(args.model)
    params = presets.get(args.preset, allow_insecure=args.insecure)
    state = ServiceState(load_model(path), params, args.state, workers=args.workers, dataset=args.dataset,
                         backend=args.backend, ray_address=args.ray_address)
    serve(state, path.read_bytes(), args.host, args.port)
    return SAME


def _client(args) -> int:
    from .client import ServiceClient

    out = sys.stdout
    with ServiceClient(args.server, args.home, allow_insecure=args.insecure, timeout=args.timeout,
                       mtcnn=args.mtcnn) as client:
        if args.command == "keygen":
            client.keygen(force=args.force)
            out.write(f"secret key in {client.home.path}; evaluation keys installed on {client.url}\n")
        elif args.command == "enroll":
            client.enroll(args.name, args.photo, replace=args.replace)
            out.write(f"enrolled {args.name}\n")
        elif args.command == "verify":
            decision = client.verify(args.name, args.photo)
            out.write(f"{decision}\n")
            return SAME if decision == "same" else DIFFERENT
        elif args.command == "identify":
            kinds = client.identify(args.photo)
            if kinds and all(kind == "invalid" for kind in kinds.values()):
                raise ProbeError("every answer is invalid: the probe failed its encrypted norm check")
            found = [name for name, kind in kinds.items() if kind == "same"]
            out.write(("\n".join(found) if found else "no enrolled name matches") + "\n")
        elif args.command == "delete":
            client.delete(args.name)
            out.write(f"deleted {args.name}\n")
        elif args.command == "names":
            out.write("".join(f"{n}\n" for n in client.names()))
        elif args.command == "health":
            out.write("".join(f"{k}: {v}\n" for k, v in client.health().items()))
    return SAME


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "serve" else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        commands = {"serve": _serve, "fetch-mtcnn": _fetch_mtcnn, "align": _align}
        return commands.get(args.command, _client)(args)
    except (CryptoFaceError, FheError, ImportError, OSError) as exc:
        sys.stderr.write(f"cryptoface {args.command}: {type(exc).__name__}: {exc}\n")
        return ERROR


if __name__ == "__main__":          # pragma: no cover
    sys.exit(main())
