"""Secrets given as files (Docker secrets) or variables: the access token and the TURN relay's shared secret."""

from __future__ import annotations

import os
from pathlib import Path


def read_secret_file(path: Path, source: str) -> str:
    """The file's text without the newline ``echo`` or an editor leaves; an empty or unreadable file is an error,
    never "no secret"."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{source} {path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise ValueError(f"{source} {path}: not a text file") from None
    if not text:
        raise ValueError(f"{source} {path}: the file is empty")
    return text


def secret_from_env(name: str) -> str | None:
    """``$NAME_FILE``'s contents, else ``$NAME``; both set is refused: the operator meant one of them."""
    path, value = os.environ.get(f"{name}_FILE"), os.environ.get(name)
    if path and value:
        raise ValueError(f"set {name}_FILE or {name}, not both")
    if path:
        return read_secret_file(Path(path), f"{name}_FILE")
    return value or None
