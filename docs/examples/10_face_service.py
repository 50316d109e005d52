"""Example 10: enroll and verify real photos through the HTTP service.

Builds on 09 (the two roles in one process).  Here they are two programs talking HTTP on loopback:

* ``cryptoface serve`` holds the model, the evaluation keys and the SQLite template store in a state
  folder; it never sees a secret key, an image, a feature or a score;
* the ``cryptoface`` client commands hold the secret key (a file of mode 0600 in the key holder's
  folder), read a photo, check and encrypt the face, and decrypt the decision.

The photos are two real LFW crops of the shipped sample (aligned 112 x 112, the ArcFace template), written
out as JPEG files: the first is enrolled, the second verified against it, then both are identified.

Default: the shipped CryptoFaceNet4 at the 128-bit preset N16_QP1762_L29_S38 (keys: about 4 GB made and
uploaded in a few minutes; each face a few minutes on 2 cores; about 10 GB of memory on the server).
``--toy``: example 09's small random CryptoFaceNet on the toy ring INSECURE_N12_QP1642_L29_S38, in
seconds, with the decision's real 8-slot bootstrap (the server holds public keys only there too).

Run:  python docs/examples/10_face_service.py [--toy] [--pair 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cryptoface import DEFAULT_MODEL, DEFAULT_SAMPLE, data
from cryptoface.model import save_model

HERE = Path(__file__).resolve().parent


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def toy_model_file(sample, folds, path: Path) -> Path:
    """Example 09's toy CryptoFaceNet, saved as a model file."""
    spec = importlib.util.spec_from_file_location("example09", HERE / "09_encrypted_face_verification.py")
    example09 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example09)
    return save_model(example09.toy_model(sample, folds), path)


def cryptoface(*args: str) -> subprocess.CompletedProcess:
    """One ``cryptoface`` command, its output shown."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cryptoface.service.cli", *args], capture_output=True, text=True)
    shown = " ".join(a if len(a) < 40 else "..." + a[-30:] for a in args)
    print(f"$ cryptoface {shown}\n{done.stdout.strip()}{done.stderr.strip()}   "
          f"[exit {done.returncode}, {time.perf_counter() - t0:.1f} s]", flush=True)
    return done


def main(toy: bool, pair: int) -> int:
    sample = data.load_verification_bin(DEFAULT_SAMPLE / "lfw.bin")
    meta = json.loads((DEFAULT_SAMPLE / "pairs.json").read_text())["pairs"]
    work = Path(tempfile.mkdtemp(prefix="cryptoface-example10-"))
    photos = []
    for k, src in zip(("first", "second"), sample.sources[2 * pair: 2 * pair + 2]):
        path = work / f"{meta[pair][k][0]}_{meta[pair][k][1]:04d}.jpg"
        path.write_bytes(src if isinstance(src, bytes) else Path(src).read_bytes())
        photos.append(path)
    folds = np.array([p["fold"] for p in meta])
    model = toy_model_file(sample, folds, work / "toy.model.npz") if toy else DEFAULT_MODEL
    preset = "INSECURE_N12_QP1642_L29_S38" if toy else "N16_QP1762_L29_S38"
    insecure = ["--insecure"] if toy else []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    section("1. The server: model, plan and an empty template store (no keys yet)")
    log = open(work / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "cryptoface.service.cli", "serve", "--model", str(model),
                               "--preset", preset, "--state", str(work / "state"), "--port", str(port),
                               *insecure], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(1200):
            if server.poll() is not None:
                raise SystemExit(f"the server exited:\n{(work / 'serve.log').read_text()[-2000:]}")
            if cryptoface_quiet("health", "--server", url):
                break
            time.sleep(0.5)
        cryptoface("health", "--server", url)
        home = ["--home", str(work / "home"), *insecure]

        section("2. The key holder: a secret key here (0600), the evaluation keys to the server")
        cryptoface("keygen", "--server", url, *home)
        mode = (work / "home" / "secret.key").stat().st_mode & 0o777
        print(f"secret key: {work / 'home' / 'secret.key'} (mode {mode:o})")

        section("3. Enrollment: the template is stored encrypted (SQLite, in the server's state folder)")
        cryptoface("enroll", meta[pair]["first"][0], str(photos[0]), *home)

        section("4. Verification and identification: only the decision comes back")
        done = cryptoface("verify", meta[pair]["first"][0], str(photos[1]), *home)
        cryptoface("identify", str(photos[1]), *home)
        truth = "same" if meta[pair]["same"] else "different"
        print(f"truth: {truth} ({photos[0].name} and {photos[1].name})")
        return 0 if done.returncode in (0, 1) else done.returncode
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def cryptoface_quiet(*args: str) -> bool:
    return subprocess.run([sys.executable, "-m", "cryptoface.service.cli", *args], capture_output=True).returncode == 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true", help="INSECURE toy ring and a toy model (seconds)")
    ap.add_argument("--pair", type=int, default=0, help="pair of the shipped LFW sample (0-39)")
    args = ap.parse_args()
    sys.exit(main(args.toy, args.pair))
