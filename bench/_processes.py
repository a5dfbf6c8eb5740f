"""The processes a live benchmark starts: stopping them, reading their logs, and exiting cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path
from types import FrameType


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process we started (by its pid), then SIGKILL it if it outlives ``grace``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def log_tail(path: Path, chars: int = 1200) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def raise_exit(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: exit through SystemExit, so that ``finally`` blocks delete the namespace."""
    raise SystemExit(128 + signum)
