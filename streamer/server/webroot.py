"""The folder the page is served from: the ``streamer.web`` package (``web/`` at the repository root, mapped there by
pyproject.toml), wherever the project is installed."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _web_dir() -> Path:
    try:
        folder = files("streamer.web")
    except ModuleNotFoundError:  # a checkout run from PYTHONPATH, never pip-installed: the mapping is not there
        folder = Path(__file__).resolve().parents[2] / "web"
    # aiohttp serves static files from a real folder (sendfile), which pip's unpacked installs always are. A folder
    # without web/__init__.py would import as a namespace package, whose path is no folder: fail here, not per request.
    if not isinstance(folder, Path) or not (folder / "index.html").is_file():
        raise RuntimeError(f"the page's files (index.html, ...) are not where the install put them ({folder}); "
                           "reinstall the project (pip install -e . in a checkout)")
    return folder


WEB_DIR = _web_dir()
# What the page is made of (pyproject.toml's package data): nothing else in the folder is served, such as the
# package marker or the bytecode Python writes beside it.
PAGE_SUFFIXES = frozenset({".html", ".js", ".css", ".svg", ".png", ".ico"})
