"""Writing the cameras file back (``serve --config FILE``) after a change through the API, so a restart keeps it.

The file is replaced whole and atomically (a temporary file in the same folder, fsync, ``os.replace``), so a crash
leaves the old file or the new one, never half of each. It keeps its permission bits; a new file is 0600, since
camera URLs carry passwords. Each camera is written with all its settings and no ``[defaults]`` table: what a
restart reads is exactly what runs now. Comments in the old file are not kept.

The service owns the file while it runs: if it changed on disk since the service read or last wrote it (an
operator's edit), a change through the API is refused rather than overwrite that edit.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

import tomli_w

from .camera_config import CameraSettings, camera_to_mapping

HEADER = ("# Cameras of face-streamer (serve --config). The service rewrites this file when cameras are added,\n"
          "# changed or removed through its API; edit it by hand only while the service is stopped.\n")
NEW_FILE_MODE = 0o600

Stamp = tuple[int, int, int] | None  # (inode, size, mtime in ns); None: no file


class CameraFileChanged(Exception):
    """The file was changed by someone else since the service read or wrote it."""


def render(cameras: Iterable[CameraSettings]) -> str:
    tables = [camera_to_mapping(c, show_url=True) for c in cameras]
    return HEADER + (tomli_w.dumps({"camera": tables}) if tables else "")


class CameraFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._current()

    def _current(self) -> Stamp:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def write(self, cameras: Iterable[CameraSettings]) -> None:
        """Replace the file with ``cameras`` (blocking: run it off the event loop). Raises CameraFileChanged, or
        OSError when the folder or file cannot be written; the file is then as it was."""
        if self._current() != self._stamp:
            raise CameraFileChanged(f"{self.path} was changed on disk since the service read it")
        text = render(cameras)
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            mode = NEW_FILE_MODE
        folder = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                os.fchmod(out.fileno(), mode)
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # The rename itself survives a power cut only once the folder is on disk too.
        with contextlib.suppress(OSError):
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._stamp = self._current()
