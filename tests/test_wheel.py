"""The project as a wheel: built offline, installed into a fresh venv that cannot see the checkout, it serves the page
from its own package data and hides the faces of a real photo, with its weights in the folder $STREAMER_CACHE names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT, read_bgr, require_testdata
from test_serve import free_port, wait_ready

from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector
from models.evaluate import load_truth
from models.quantize import build_variant
from models.weights import ENV_CACHE, ENV_MODEL_PATH, resolve_model

# What the build reads; the rest of the checkout (tests, data, a venv) must not be needed.
SOURCES = ("pyproject.toml", "README.md", "models", "streamer", "web")
READY_TIMEOUT_S = 180  # model load and warm-up on a busy 2-core machine


@dataclass(frozen=True)
class Installed:
    source: Path  # the copy of the checkout the wheel was built from
    wheel: Path
    venv: Path
    cache: Path
    cwd: Path  # outside the checkout, so nothing is imported from it by accident
    env: dict[str, str]

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``program`` of the venv's bin/ (python, face-streamer), run outside the checkout."""
        return subprocess.run([str(self.venv / "bin" / program), *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)


def _ok(*cmd: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{cmd}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            # "weights": where old checkouts kept the model, never part of the package
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "weights"))
        else:
            shutil.copy(path, source / name)
    dist = tmp / "dist"
    _ok(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist,
        source)
    (wheel,) = dist.glob("face_streamer-*.whl")

    venv, cwd = tmp / "venv", tmp / "elsewhere"
    cwd.mkdir()
    _ok(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_ok(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    # The dependencies (and pip) come from this venv. A path named in a .pth file is not searched for .pth files
    # itself, so the editable install of the checkout, a .pth there, stays out.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the checkout's editable install is visible through that path; leave it alone.
    _ok(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", wheel, cwd=cwd)

    cache = tmp / "cache"
    cache.mkdir()
    shutil.copy(resolve_model(), cache / "centerface.onnx")
    int8 = build_variant("int8")  # the CPU default, cached with its hash and provenance beside it
    for suffix in ("", ".sha256", ".json"):
        shutil.copy(int8.with_name(int8.name + suffix), cache / (int8.name + suffix))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", ENV_MODEL_PATH}}
    return Installed(source, wheel, venv, cache, cwd, {**env, ENV_CACHE: str(cache)})


def test_the_wheel_carries_every_package_and_the_whole_page(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    packages = {str(p.relative_to(installed.source)) for root in ("streamer", "models")
                for p in (installed.source / root).rglob("__init__.py")}
    assert packages <= names, f"pyproject.toml's package list misses {sorted(packages - names)}"
    page = {f"streamer/web/{p.name}" for p in (installed.source / "web").iterdir() if p.is_file()}
    assert page <= names, f"pyproject.toml's package-data globs miss {sorted(page - names)}"
    assert not [n for n in names if n.endswith(".onnx")], "the weights are fetched, never shipped"


def test_the_installed_code_is_the_wheels_not_the_checkouts(installed: Installed) -> None:
    done = installed.run("python", "-c", "import models.weights, streamer, streamer.server.webroot as w; "
                         "print(streamer.__file__, w.WEB_DIR, models.weights.cache_dir())")
    assert done.returncode == 0, done.stderr[-3000:]
    where = done.stdout.split()
    site = installed.venv / "lib"
    assert Path(where[0]).is_relative_to(site) and Path(where[1]).is_relative_to(site), where
    assert Path(where[2]) == installed.cache


@pytest.fixture(scope="module")
def server(installed: Installed) -> Iterator[str]:
    port = free_port()
    log = installed.cwd / "server.log"
    with log.open("wb") as sink:  # a file, not a pipe nobody reads, which would fill up and stop the server
        proc = subprocess.Popen([str(installed.venv / "bin" / "face-streamer"), "serve", "--host", "127.0.0.1",
                                 "--port", str(port), "--device", "cpu"], cwd=installed.cwd, env=installed.env,
                                stdout=subprocess.DEVNULL, stderr=sink)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, log, READY_TIMEOUT_S)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_installed_server_serves_the_page_from_its_package(installed: Installed, server: str) -> None:
    with urllib.request.urlopen(server + "/", timeout=10) as response:
        assert response.status == 200
        html = response.read()
    assert html == (installed.source / "web" / "index.html").read_bytes() and b"Face Streamer" in html
    with urllib.request.urlopen(server + "/static/app.js", timeout=10) as response:
        assert response.read() == (installed.source / "web" / "app.js").read_bytes()


def test_the_installed_command_hides_the_faces_of_a_photo(installed: Installed,
                                                           detector: CenterFaceDetector) -> None:
    src = require_testdata("images", "2008_002470.jpg")
    dst = installed.cwd / "hidden.png"
    seeded = {p.name: p.stat().st_mtime_ns for p in installed.cache.iterdir()}
    done = installed.run("face-streamer", "file", str(src), str(dst), "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in installed.cache.iterdir()} == seeded  # used as seeded, not rebuilt
    before, after = read_bgr(src), read_bgr(dst)
    assert before.shape == after.shape
    truth = load_truth(src.with_suffix(".json"))
    # Every annotated face is found in the photo, and none of them in what the installed command wrote.
    assert (iou_matrix(truth, detector.detect(before).boxes).max(axis=1) >= 0.3).all()
    again = detector.detect(after)
    assert len(again) == 0 or (iou_matrix(truth, again.boxes) < 0.3).all()
