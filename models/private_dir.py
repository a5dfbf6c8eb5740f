"""Folders only this user controls: what may hold uploads, and files trusted for what is written beside them."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path


def refuse_unless_private(path: Path, what: str, *, owners: Collection[int] | None = None) -> None:
    """ValueError unless ``path`` is a real directory (not a symbolic link) owned by this user (or one of ``owners``)
    and writable by nobody else. Checked on owner and mode, not by trying: root may write anywhere, and a folder that
    another user may write into could have files swapped, or links planted, in it."""
    allowed = {os.geteuid()} if owners is None else set(owners)
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be used: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(f"{what} {path} is a symbolic link; give the folder itself")
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {path} is not a directory")
    if st.st_uid not in allowed:
        raise ValueError(f"{what} {path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): "
                         "it must be a folder only this user controls")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ValueError(f"{what} {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}): "
                         "it must be a folder only its owner may write (chmod go-w)")


def make_private(path: Path, what: str, *, owners: Collection[int] | None = None) -> None:
    """Create ``path`` 0700 (parents as the umask says), or accept it as it is when it is already private."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # checked below, whoever made it
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be created: {exc.strerror}") from exc
    refuse_unless_private(path, what, owners=owners)
