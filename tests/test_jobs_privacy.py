"""Uploads and results live in a private directory (issue #15, item 4; SECURITY.md "Limits and their defaults").

Uploads are raw pictures of people. A real upload job runs through the real app (aiohttp's test server, the real
detector) under umask 0, so that any folder or file the code makes without an explicit mode would come out
world-readable and writable, and every path seen under the jobs directory while the job runs must be 0700 (folders)
or 0600 (files). A jobs directory another user owns, or that others may write into, or a symbolic link, is refused
before anything is written into it; the tests run as root, which may write anywhere, so only a check of owner and
mode can pass them. The default is per user: $XDG_RUNTIME_DIR/face-streamer-jobs, else a fresh mkdtemp folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import REPO_ROOT, require_testdata

from models.centerface import CenterFaceDetector
from streamer.jobs import JobManager
from streamer.server.app import create_app
from streamer.server.config import ServerConfig

pytestmark = pytest.mark.timeout(300)

PHOTO = ("images", "2008_002470.jpg")
CLIP = ("videos", "sadtalker_WDA_KatieHill_000.mp4")  # 200 frames: still running while its files are looked at
NOBODY = 65534


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes_under(root: Path) -> dict[Path, int]:
    """Every path under ``root`` (itself included) with its permission bits; paths that go meanwhile are skipped."""
    seen: dict[Path, int] = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name if name != "." else Path(folder)
            with contextlib.suppress(FileNotFoundError):
                seen[path] = os.lstat(path).st_mode
    return seen


async def upload(client: TestClient[Any, Any], name: str, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    response = await client.post("/jobs", data=form)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]
    assert isinstance(job_id, str)
    return job_id


async def state(client: TestClient[Any, Any], job_id: str) -> str:
    response = await client.get(f"/jobs/{job_id}")
    value = (await response.json())["state"]
    assert isinstance(value, str)
    return value


async def test_an_upload_jobs_folders_are_0700_and_its_files_0600(detector: CenterFaceDetector,
                                                                   tmp_path: Path) -> None:
    """Every folder and file under the jobs directory while a video job runs (upload, partial output) and after a
    photo job is done (its result), with umask 0: without explicit modes they would be 0777 and 0666."""
    video, photo = require_testdata(*CLIP).read_bytes(), require_testdata(*PHOTO).read_bytes()
    root = tmp_path / "made" / "jobs"  # missing: created 0700
    seen: dict[Path, int] = {}
    with umask(0):
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(ServerConfig(jobs_dir=root), detector),
                                                             host="127.0.0.1"))
        await client.start_server()
        try:
            job_id = await upload(client, "talk.mp4", video)
            deadline = time.monotonic() + 120
            while not any(".partial" in p.name for p in seen):  # the upload and the output being written
                seen.update(modes_under(root))
                assert await state(client, job_id) in ("queued", "running"), "the video job ended before its " \
                    "partial output was seen"
                assert time.monotonic() < deadline, sorted(seen)
                await asyncio.sleep(0.02)
            assert (await client.delete(f"/jobs/{job_id}")).status == 204
            job_id = await upload(client, "photo.jpg", photo)
            while (current := await state(client, job_id)) in ("queued", "running"):
                seen.update(modes_under(root))
                await asyncio.sleep(0.02)
            assert current == "done"
            seen.update(modes_under(root))
            assert (await client.get(f"/jobs/{job_id}/result")).status == 200
        finally:
            await client.close()
    names = {p.name for p in seen}
    assert {"input.mp4", "input.jpg", "output.jpg"} <= names, sorted(names)
    assert any(n.startswith(".output.") and n.endswith(".partial.mp4") for n in names), sorted(names)
    wrong = {str(p.relative_to(root.parent)): f"{stat.S_IMODE(m):04o}" for p, m in seen.items()
             if stat.S_IMODE(m) != (0o700 if stat.S_ISDIR(m) else 0o600)}
    assert wrong == {}, f"not private: {wrong}"
    assert all(stat.S_ISDIR(m) or stat.S_ISREG(m) for m in seen.values())  # no links, no fifos
    # The made root itself is this user's, and the server took nothing outside it.
    assert os.lstat(root).st_uid == os.geteuid() and sorted(p.name for p in (tmp_path / "made").iterdir()) == ["jobs"]


def refused_folder(kind: str, tmp_path: Path) -> Path:
    """A jobs directory that must be refused, made the way ``kind`` says."""
    folder = tmp_path / kind
    if kind == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        folder.symlink_to(real)
        return folder
    folder.mkdir()
    mode = {"world-writable": 0o777, "group-writable": 0o770, "sticky-world-writable": 0o1777}.get(kind, 0o700)
    folder.chmod(mode)
    if kind == "other-owner":
        os.chown(folder, NOBODY, NOBODY)
    return folder


@pytest.mark.parametrize(("kind", "reason"), [
    ("world-writable", r"is writable by other users \(mode 0777\)"),
    ("group-writable", r"is writable by other users \(mode 0770\)"),
    ("sticky-world-writable", r"is writable by other users \(mode 1777\)"),  # as /tmp itself
    ("other-owner", rf"is owned by uid {NOBODY}, not by this user"),
    ("symlink", r"is a symbolic link"),
])
def test_a_jobs_directory_others_control_is_refused(kind: str, reason: str, tmp_path: Path) -> None:
    if os.geteuid() == NOBODY:
        pytest.skip("runs as the uid that plays the other user")
    folder = refused_folder(kind, tmp_path)
    target = folder.resolve()
    before = sorted(target.iterdir())
    with pytest.raises(ValueError, match=reason):
        create_app(ServerConfig(jobs_dir=folder))
    # Refused before anything was written there (as root, writing would have worked: the check is what stops it).
    assert sorted(target.iterdir()) == before == []
    # The control: the same folder, once it is this user's and only this user may write it, is taken.
    if kind != "symlink":
        os.chown(folder, os.geteuid(), os.getegid())
        folder.chmod(0o755)
        manager = JobManager(folder)
        try:
            assert manager.directory.parent == folder and stat.S_IMODE(manager.directory.stat().st_mode) == 0o700
        finally:
            manager.shutdown()


def test_serve_says_why_and_exits_non_zero_on_a_world_writable_jobs_directory(tmp_path: Path) -> None:
    folder = refused_folder("world-writable", tmp_path)
    done = subprocess.run([sys.executable, "-m", "streamer", "serve", "--host", "127.0.0.1", "--port", "0",
                           "--device", "cpu", "--jobs-dir", str(folder)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --jobs-dir {folder} is writable by other users (mode 0777): it must be a folder only its owner may "
        "write (chmod go-w)"), done.stderr
    assert list(folder.iterdir()) == []


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's directory for the test (mkdtemp's default goes there), so no real /tmp entry is touched."""
    folder = tmp_path / "tmp"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_default_is_xdg_runtime_dir_when_it_is_private(tmp_path: Path, temp_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    manager = JobManager(None)
    try:
        assert manager.root == runtime / "face-streamer-jobs"
        assert stat.S_IMODE(manager.root.stat().st_mode) == 0o700
        assert manager.directory.parent == manager.root
    finally:
        manager.shutdown()
    assert manager.root.exists() and not manager.directory.exists()  # shared by this user's instances
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("runtime_kind", ["unset", "world-writable", "other-owner"])
def test_otherwise_the_default_is_a_fresh_private_temp_folder_removed_at_shutdown(
        runtime_kind: str, tmp_path: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if runtime_kind == "unset":
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(refused_folder(runtime_kind, tmp_path)))
    first, second = JobManager(None), JobManager(None)
    try:
        for manager in (first, second):
            assert manager.root.parent == temp_dir and manager.root.name.startswith("face-streamer-jobs-")
            assert stat.S_IMODE(manager.root.stat().st_mode) == 0o700
        assert first.root != second.root  # not a fixed name another user could create first
        if runtime_kind != "unset":
            assert list(Path(os.environ["XDG_RUNTIME_DIR"]).iterdir()) == []
    finally:
        first.shutdown()
        second.shutdown()
    assert list(temp_dir.iterdir()) == []


def test_a_stopped_instances_temp_folder_is_removed_at_the_next_start(temp_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Orphan cleanup as with an explicit --jobs-dir: the folders of instances that were killed go; those of
    instances still running, and anything not ours, stay."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid names no running process now
    crashed = temp_dir / "face-streamer-jobs-crashed"
    (crashed / f"{dead.pid}-00000000" / "job").mkdir(parents=True)
    (crashed / f"{dead.pid}-00000000" / "job" / "input.jpg").write_bytes(b"raw faces")
    running = temp_dir / "face-streamer-jobs-running"
    (running / f"{os.getpid()}-00000000").mkdir(parents=True)
    foreign = temp_dir / "face-streamer-jobs-foreign"
    (foreign / f"{dead.pid}-00000000").mkdir(parents=True)
    os.chown(foreign, NOBODY, NOBODY)
    manager = JobManager(None)
    try:
        assert not crashed.exists()
        assert running.exists() and foreign.exists()
    finally:
        manager.shutdown()
