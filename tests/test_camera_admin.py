"""Cameras managed at run time (server/camera_admin.py): POST /cameras, PUT and DELETE /cameras/{name}.

The HTTP tests run the real app in process (aiohttp's test server on 127.0.0.1, the real detector preloaded) with
cameras that point at a closed port: they check the rules (token, validation, one lock, the file written before the
change, secrets never shown). The RTSP test at the end runs GStreamer's RTSP server and the app inside the run's
network namespace and watches a camera added at run time, through an edit and its removal (tests/rtsp_support.py).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import require_testdata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtsp_support import WhepViewer, make_camera_clip
from test_faults import InProcessServer
from webrtc_support import http

from models.centerface import CenterFaceDetector
from streamer.__main__ import build_parser
from streamer.camera_config import camera_from_mapping, camera_to_mapping, load_cameras_file
from streamer.server import camera_admin
from streamer.server.app import config_from_args, create_app
from streamer.server.bodies import CAMERA_BODY_BYTES
from streamer.server.config import ServerConfig
from streamer.server.state import CAMERAS, VIEWERS
from testkit.netns import NamespaceLoop, NetNamespace
from testkit.rtsp import RtspServer, rtsp_unavailable_reason

TOKEN = "camera-admin-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "pa55-Wörd/?x"  # percent-escaped in URLs below; every spelling must stay out of answers and logs
SECRET_URL_PART = "pa55-W%C3%B6rd%2F%3Fx"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on (bound, never listening: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def cam_url(port: int, path: str = "stream", user: str = "admin") -> str:
    return f"rtsp://{user}:{SECRET_URL_PART}@127.0.0.1:{port}/{path}"


async def start_client(config: ServerConfig, detector: CenterFaceDetector) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(config, detector), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(detector: CenterFaceDetector, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """A server with a token and no cameras file: changes live in memory."""
    c = await start_client(ServerConfig(jobs_dir=tmp_path / "jobs", token=TOKEN), detector)
    yield c
    await c.close()


def write_cameras(path: Path, port: int) -> None:
    path.write_text(f"""# hand-written
[defaults]
mode = "solid"
strength = 0.8

[[camera]]
name = "lobby"
url = "{cam_url(port, 'lobby')}"

[[camera]]
name = "yard"
url = "{cam_url(port, 'yard')}"
mode = "blur"
detect_size = "fast"
""")


def app_of(client: TestClient[Any, Any]) -> web.Application:
    app = client.app
    assert isinstance(app, web.Application)
    return app


async def names(client: TestClient[Any, Any]) -> list[str]:
    body = await (await client.get("/cameras", headers=AUTH)).json()
    return [c["name"] for c in body["cameras"]]


# ------------------------------------------------------------------------------------------------ the rules


async def test_without_a_token_cameras_cannot_be_changed(detector: CenterFaceDetector, tmp_path: Path,
                                                         closed_port: int) -> None:
    client = await start_client(ServerConfig(jobs_dir=tmp_path / "jobs"), detector)
    try:
        body = {"name": "lobby", "url": cam_url(closed_port)}
        for method, path in (("POST", "/cameras"), ("PUT", "/cameras/lobby"), ("DELETE", "/cameras/lobby")):
            answer = await client.request(method, path, json=None if method == "DELETE" else body)
            text = await answer.text()
            assert answer.status == 403, (method, answer.status, text)
            assert "access token" in json.loads(text)["error"] and "--token-file" in text
            assert SECRET_URL_PART not in text
        listing = await (await client.get("/cameras")).json()
        assert listing == {"cameras": [], "manage": {"enabled": False, "persisted": False, "reason": "token"}}
        config = await (await client.get("/config")).json()
        assert config["cameraAdmin"] == listing["manage"]
    finally:
        await client.close()


async def test_add_edit_remove_in_memory(client: TestClient[Any, Any], closed_port: int) -> None:
    listing = await (await client.get("/cameras", headers=AUTH)).json()
    assert listing["manage"] == {"enabled": True, "persisted": False, "reason": None}

    added = await client.post("/cameras", json={"name": "door", "url": cam_url(closed_port), "mode": "blur",
                                                "transport": "udp"}, headers=AUTH)
    body = await added.json()
    assert added.status == 201, body
    assert added.headers["Location"] == "/cameras/door"
    assert body["persisted"] is False
    cam = body["camera"]
    assert (cam["name"], cam["mode"], cam["transport"], cam["always_on"], cam["state"]) == (
        "door", "blur", "udp", False, "stopped")
    assert cam["url"] == f"rtsp://admin:***@127.0.0.1:{closed_port}/stream"
    assert cam["settings"] == {"name": "door", "url": cam["url"], "mode": "blur", "strength": 0.5, "padding": 1.3,
                               "ellipse": False, "transport": "udp", "always_on": False, "threshold": 0.2}
    assert await names(client) == ["door"]

    # The client sends back what it was shown, changing one thing; without "url" the camera keeps its own.
    edit = {k: v for k, v in cam["settings"].items() if k != "url"} | {"mode": "solid", "detect_size": "fast"}
    changed = await client.put("/cameras/door", json=edit, headers=AUTH)
    cam = (await changed.json())["camera"]
    assert changed.status == 200, cam
    assert (cam["mode"], cam["detect_size"], cam["transport"]) == ("solid", "fast", "udp")
    camera = app_of(client)[CAMERAS].get("door")
    assert camera is not None and camera.settings.url == cam_url(closed_port)  # the real URL, kept

    # A new URL replaces it; an edit that names another camera in its body is refused.
    moved = await client.put("/cameras/door", json={"url": cam_url(closed_port, "other")}, headers=AUTH)
    assert moved.status == 200 and camera.settings.url == cam_url(closed_port, "other")
    assert camera.settings.anonymize.mode == "mosaic"  # PUT replaces: what the body leaves out is the default
    # GET's settings sent back whole, redacted URL included: the password stays.
    shown = (await (await client.get("/cameras/door", headers=AUTH)).json())["settings"]
    assert (await client.put("/cameras/door", json=shown | {"ellipse": True}, headers=AUTH)).status == 200
    assert camera.settings.url == cam_url(closed_port, "other") and camera.settings.anonymize.ellipse
    renamed = await client.put("/cameras/door", json={"name": "gate"}, headers=AUTH)
    assert renamed.status == 400 and "renamed" in (await renamed.json())["error"]

    removed = await client.delete("/cameras/door", headers=AUTH)
    assert removed.status == 200
    assert await removed.json() == {"removed": "door", "viewers_closed": 0, "stopped": True, "persisted": False}
    assert await names(client) == []
    for method in ("PUT", "DELETE"):
        gone = await client.request(method, "/cameras/door", json={}, headers=AUTH)
        assert gone.status == 404, method


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"name": "a", "url": "rtsp://h/x", "colour": "red"}, 400, "unknown key(s) colour"),
    ({"name": "a", "url": f"http://admin:{SECRET_URL_PART}@h/x"}, 400, "must start with rtsp://"),
    ({"name": "a", "url": f"rtsp://admin:{SECRET_URL_PART}@h:99999/x"}, 400, "port is out of range"),
    ({"name": "a", "url": "rtsp:///x"}, 400, "no host"),
    ({"name": "a b", "url": "rtsp://h/x"}, 400, "letters, digits"),
    ({"url": "rtsp://h/x"}, 400, "name must be a string"),
    ({"name": "a", "url": "rtsp://h/x", "always_on": "true"}, 400, "always_on must be true or false"),
    ({"name": "a", "url": "rtsp://h/x", "strength": "0.5"}, 400, "strength must be a number"),
    ({"name": "a", "url": "rtsp://h/x", "strength": 10**400}, 400, "strength is out of range"),
    ({"name": "a", "url": "rtsp://h/x", "mode": "pixelate"}, 400, "mode must be one of"),
    ({"name": "a", "url": "rtsp://h/x", "threshold": 2}, 400, "threshold must be within"),
    ({"name": "a", "url": "rtsp://h/x", "transport": "sctp"}, 400, "transport must be tcp or udp"),
    ({"name": "a", "url": "rtsp://h/x", "detect_size": "huge"}, 400, "detect_size"),
    (["name", "a"], 400, "JSON object"),
])
async def test_bad_settings_are_refused_with_the_reason(client: TestClient[Any, Any], body: Any, status: int,
                                                        needle: str) -> None:
    answer = await client.post("/cameras", json=body, headers=AUTH)
    text = await answer.text()
    assert answer.status == status, text
    assert needle in json.loads(text)["error"], text
    assert SECRET_URL_PART not in text and "pa55" not in text
    assert await names(client) == []


async def test_malformed_duplicate_and_oversized_bodies(client: TestClient[Any, Any], closed_port: int) -> None:
    bad_json = await client.post("/cameras", data=b'{"name": ', headers={**AUTH, "Content-Type": "application/json"})
    assert bad_json.status == 400 and "not valid JSON" in (await bad_json.json())["error"]
    first = await client.post("/cameras", json={"name": "door", "url": cam_url(closed_port)}, headers=AUTH)
    assert first.status == 201
    again = await client.post("/cameras", json={"name": "door", "url": cam_url(closed_port, "b")}, headers=AUTH)
    assert again.status == 409 and "exists already" in (await again.json())["error"]
    big = {"name": "big", "url": "rtsp://h/" + "x" * CAMERA_BODY_BYTES}
    too_long = await client.post("/cameras", json=big, headers=AUTH)
    assert too_long.status == 413 and f"at most {CAMERA_BODY_BYTES} bytes" in (await too_long.json())["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the handler counts
        text = json.dumps(big).encode()
        for i in range(0, len(text), 1000):
            yield text[i:i + 1000]

    chunked = await client.put("/cameras/door", data=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert chunked.status == 413, await chunked.text()
    assert await names(client) == ["door"]


async def test_cameras_from_the_command_line_are_not_the_apis(detector: CenterFaceDetector, tmp_path: Path,
                                                              closed_port: int) -> None:
    args = build_parser().parse_args(["serve", "--token", TOKEN, "--jobs-dir", str(tmp_path / "jobs"),
                                      "--camera", f"cli={cam_url(closed_port)}"])
    client = await start_client(config_from_args(args), detector)
    try:
        for method in ("PUT", "DELETE"):
            answer = await client.request(method, "/cameras/cli", json={"mode": "blur"}, headers=AUTH)
            assert answer.status == 409 and "--camera" in (await answer.json())["error"], method
        clash = await client.post("/cameras", json={"name": "cli", "url": cam_url(closed_port)}, headers=AUTH)
        assert clash.status == 409
        listing = await (await client.get("/cameras", headers=AUTH)).json()
        assert [(c["name"], c["fixed"]) for c in listing["cameras"]] == [("cli", True)]
    finally:
        await client.close()


async def test_concurrent_changes_are_serialized(detector: CenterFaceDetector, tmp_path: Path,
                                                 closed_port: int) -> None:
    """Twenty changes at once, several on the same names: each is applied whole, one at a time, and the file
    ends up holding exactly what runs."""
    path = tmp_path / "cameras.toml"
    write_cameras(path, closed_port)
    client = await start_client(ServerConfig(jobs_dir=tmp_path / "jobs", token=TOKEN, cameras_file=path,
                                             cameras=tuple(load_cameras_file(path))), detector)
    try:
        requests = [client.post("/cameras", json={"name": f"c{i % 8}", "url": cam_url(closed_port, str(i))},
                                headers=AUTH) for i in range(16)]
        requests += [client.put("/cameras/lobby", json={"mode": m}, headers=AUTH) for m in ("blur", "mosaic")]
        requests += [client.delete("/cameras/yard", headers=AUTH) for _ in range(2)]
        answers = await asyncio.gather(*requests)
        statuses = [a.status for a in answers]
        assert sorted(statuses[:16]) == [201] * 8 + [409] * 8, statuses
        assert statuses[16:18] == [200, 200] and sorted(statuses[18:]) == [200, 404], statuses
        live = {c.name: c.settings for c in app_of(client)[CAMERAS]}
        assert sorted(live) == ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "lobby"]
        assert {c.name: c for c in load_cameras_file(path)} == live
    finally:
        await client.close()


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
                        st.floats(allow_nan=True), st.text(max_size=30))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
CAMERA_BODIES = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["door", "a-b_9", ""]) | JSON_VALUES,
    "url": st.sampled_from(["rtsp://h/x", "rtsps://u:p@h:554/x?token=t", "rtsp://[::1]:8554/x"]) | JSON_VALUES,
    "mode": st.sampled_from(["mosaic", "blur", "solid"]) | JSON_VALUES,
    "strength": st.floats(-0.5, 1.5) | JSON_VALUES, "padding": st.floats(0.5, 3.5) | JSON_VALUES,
    "threshold": st.floats(0, 1) | JSON_VALUES, "ellipse": st.booleans() | JSON_VALUES,
    "always_on": st.booleans() | JSON_VALUES, "transport": st.sampled_from(["tcp", "udp"]) | JSON_VALUES,
    "detect_size": st.sampled_from(["full", "fast", 640, 63]) | JSON_VALUES,
}) | st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=4)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=CAMERA_BODIES)
def test_any_json_body_is_a_camera_or_a_400(body: dict[str, Any]) -> None:
    """What any client may send: either a usable camera (the file's writer and reader agree on it) or a 400 with
    a reason; never another exception, which would be a 500."""
    try:
        camera = camera_admin.settings_from_body(body)
    except camera_admin.Refused as exc:
        assert exc.status == 400 and str(exc)
        return
    assert camera_from_mapping(camera_to_mapping(camera, show_url=True)) == camera


# ------------------------------------------------------------------------------------------------ the file


async def test_changes_are_written_to_the_cameras_file_and_a_restart_reads_them(
        detector: CenterFaceDetector, tmp_path: Path, closed_port: int) -> None:
    path = tmp_path / "cameras.toml"
    write_cameras(path, closed_port)
    path.chmod(0o640)
    argv = ["serve", "--token", TOKEN, "--jobs-dir", str(tmp_path / "jobs"), "--config", str(path)]
    client = await start_client(config_from_args(build_parser().parse_args(argv)), detector)
    try:
        listing = await (await client.get("/cameras", headers=AUTH)).json()
        assert listing["manage"] == {"enabled": True, "persisted": True, "reason": None}
        # [defaults] applied on read
        assert [(c["name"], c["mode"]) for c in listing["cameras"]] == [("lobby", "solid"), ("yard", "blur")]
        added = await client.post("/cameras", json={"name": "door", "url": cam_url(closed_port, "door"),
                                                    "always_on": False, "threshold": 0.3}, headers=AUTH)
        assert added.status == 201 and (await added.json())["persisted"] is True
        lobby = (await (await client.get("/cameras/lobby", headers=AUTH)).json())["settings"]
        edit = {k: v for k, v in lobby.items() if k != "url"} | {"ellipse": True}
        assert (await client.put("/cameras/lobby", json=edit, headers=AUTH)).status == 200
        assert (await client.delete("/cameras/yard", headers=AUTH)).status == 200
        live = [c.settings for c in app_of(client)[CAMERAS]]
    finally:
        await client.close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the file keeps its permissions
    assert [n for n in os.listdir(tmp_path) if n.startswith(".cameras")] == []  # no temporary file left
    text = path.read_text()
    assert text.startswith("# Cameras of face-streamer") and "[defaults]" not in text
    saved = load_cameras_file(path)
    assert saved == live
    assert [(c.name, c.anonymize.mode, c.anonymize.strength, c.anonymize.ellipse, c.threshold) for c in saved] == [
        ("lobby", "solid", 0.8, True, 0.2), ("door", "mosaic", 0.5, False, 0.3)]
    assert saved[0].url == cam_url(closed_port, "lobby")  # the real URL, password included, for the next start

    # The restart: the same command line serves what was changed.
    again = await start_client(config_from_args(build_parser().parse_args(argv)), detector)
    try:
        listing = await (await again.get("/cameras", headers=AUTH)).json()
        assert [c["settings"] for c in listing["cameras"]] == [camera_to_mapping(c) for c in saved]
        assert listing["cameras"][0]["settings"]["url"] == f"rtsp://admin:***@127.0.0.1:{closed_port}/lobby"
    finally:
        await again.close()


async def test_a_file_that_cannot_be_written_refuses_the_change_and_changes_nothing(
        detector: CenterFaceDetector, tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """As on a read-only mount (compose mounts the example file so): the answer says why, the file, the running
    cameras and the folder are as they were."""
    path = tmp_path / "cameras.toml"
    write_cameras(path, closed_port)
    before = path.read_bytes()
    real_replace = os.replace

    def read_only(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst) == path:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", read_only)
    caplog.set_level(logging.INFO)
    client = await start_client(ServerConfig(jobs_dir=tmp_path / "jobs", token=TOKEN, cameras_file=path,
                                             cameras=tuple(load_cameras_file(path))), detector)
    try:
        live = [c.settings for c in app_of(client)[CAMERAS]]
        for method, where, body in (("POST", "/cameras", {"name": "door", "url": cam_url(closed_port)}),
                                    ("PUT", "/cameras/lobby", {"mode": "blur"}), ("DELETE", "/cameras/yard", None)):
            answer = await client.request(method, where, json=body, headers=AUTH)
            error = (await answer.json())["error"]
            assert answer.status == 500, (method, error)
            assert f"cannot write the cameras file {path} (Read-only file system); nothing was changed" == error
            assert [c.settings for c in app_of(client)[CAMERAS]] == live
        assert path.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["cameras.toml", "jobs"]

        # Edited by hand while the service runs: a change through the API would overwrite it, so it is refused.
        monkeypatch.setattr(os, "replace", real_replace)
        path.write_text(before.decode() + "\n# an operator's note\n")
        answer = await client.delete("/cameras/yard", headers=AUTH)
        assert answer.status == 409 and "changed on disk" in (await answer.json())["error"]
        assert [c.settings for c in app_of(client)[CAMERAS]] == live
    finally:
        await client.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "streamer.server.camera_admin"]
    assert any("[camera door] not added: cannot write" in line for line in lines), lines
    assert any("[camera yard] not removed" in line and "changed on disk" in line for line in lines), lines


async def test_no_password_in_any_answer_or_log_line(client: TestClient[Any, Any], closed_port: int,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """An always-on camera added with a password tries its closed port (and logs why it fails), is listed, edited,
    refused and removed: the password shows up in none of it, in no spelling."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    async def call(method: str, path: str, body: Any = None) -> Any:
        answer = await client.request(method, path, json=body, headers=AUTH)
        texts.append(await answer.text())
        return answer

    await call("POST", "/cameras", {"name": "door", "url": cam_url(closed_port), "always_on": True})
    camera = app_of(client)[CAMERAS].get("door")
    assert camera is not None
    deadline = time.monotonic() + 20
    while camera.status()["error"] is None:  # the reader's first failure is in the status
        assert time.monotonic() < deadline, camera.status()
        await asyncio.sleep(0.05)
    for path in ("/cameras", "/cameras/door", "/healthz", "/metrics", "/config"):
        await call("GET", path)
    await call("PUT", "/cameras/door", {"mode": "blur", "always_on": True})
    await call("POST", "/cameras", {"name": "door", "url": cam_url(closed_port)})  # 409
    await call("POST", "/cameras", {"name": "x", "url": f"http://admin:{SECRET_URL_PART}@h/"})  # 400
    await call("PUT", "/cameras/door", {"url": f"rtsp://admin:{SECRET_URL_PART}@h:70000/"})  # 400
    await call("DELETE", "/cameras/door")
    logs = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any("[camera door] added through the API (rtsp://admin:***@" in line for line in logs), logs
    assert any("[camera door] removed through the API" in line for line in logs), logs
    spellings = {SECRET, SECRET_URL_PART, "pa55", json.dumps(SECRET)[1:-1]}
    for text in texts + logs:
        assert not any(s in text for s in spellings), text


async def test_a_removed_camera_never_starts_again(client: TestClient[Any, Any], closed_port: int) -> None:
    """A viewer or snapshot that got hold of the camera before its removal (an offer being answered) cannot start
    it again: no thread is left pulling a camera nobody can see or stop."""
    assert (await client.post("/cameras", json={"name": "door", "url": cam_url(closed_port)},
                              headers=AUTH)).status == 201
    camera = app_of(client)[CAMERAS].get("door")
    assert camera is not None
    camera.acquire()
    await until(lambda: camera_threads("door"), 10, "pulling for its viewer")
    assert (await client.delete("/cameras/door", headers=AUTH)).status == 200
    assert camera_threads("door") == []
    camera.release()
    camera.acquire()  # too late
    assert camera.status()["state"] == "stopped" and camera_threads("door") == []
    camera.release()


# ------------------------------------------------------------------------------------------------ a real camera

FACE_CLIP = ("videos", "liveportrait_driving_d3.mp4")  # one talking head in every frame
VISIBLE_SCORE = 0.5


@pytest.fixture(scope="module")
def face_camera(netns: NetNamespace, ns_loop: NamespaceLoop, tmp_path_factory: pytest.TempPathFactory,
                artifacts_dir: Path) -> Iterator[RtspServer]:
    reason = rtsp_unavailable_reason()
    if reason:
        pytest.skip(reason)
    clip = tmp_path_factory.mktemp("camera-admin") / "face.mp4"
    make_camera_clip(require_testdata(*FACE_CLIP), clip, repeats=4)
    port = ns_loop.run(free_ns_port())
    server = RtspServer({"face": clip}, port, netns, log_path=artifacts_dir / "camera-admin-rtsp.log").start()
    try:
        yield server
    finally:
        server.stop()


async def free_ns_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def camera_threads(name: str) -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name in (f"rtsp-{name}", f"live-camera {name}") and t.is_alive()]


async def until(check: Callable[[], Any], limit_s: float, what: str) -> Any:
    """Poll ``check`` (a counter, a state) until it is truthy; fail after ``limit_s`` saying ``what``."""
    deadline = time.monotonic() + limit_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {limit_s:.0f} s")
        await asyncio.sleep(0.05)
    return value


async def door_snapshot(base: str) -> Any:
    """The "door" camera's snapshot, decoded (it starts the camera when stopped)."""
    import aiohttp

    async with aiohttp.ClientSession(headers=AUTH) as session, \
            session.get(f"{base}/cameras/door/snapshot.jpg") as response:
        assert response.status == 200, await response.text()
        return cv2.imdecode(np.frombuffer(await response.read(), np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.rtsp
def test_a_camera_added_at_run_time_is_watched_edited_and_removed_under_its_viewer(
        netns: NetNamespace, ns_loop: NamespaceLoop, face_camera: RtspServer, detector: CenterFaceDetector,
        tmp_path: Path, artifacts_dir: Path) -> None:
    """Added through the API, the camera's snapshot and its WHEP viewer show the talking head with the face hidden.
    An edit restarts it with the new mode while the viewer stays and keeps getting frames. Removed while the viewer
    watches: the viewer's connection ends, the server holds no viewer, and the camera's threads are gone."""
    path = tmp_path / "cameras.toml"
    path.write_text("")
    config = ServerConfig(device="cpu", token=TOKEN, cameras_file=path, jobs_dir=tmp_path / "jobs",
                          max_detector_load=0.0)
    server = InProcessServer(netns, config, detector).start()
    base = server.base_url

    async def get_json(where: str) -> Any:
        answer = await http("GET", base + where, headers=AUTH)
        assert answer.status == 200, (where, answer.status, answer.text)
        return answer.json()

    async def snapshot() -> Any:
        return await door_snapshot(base)

    async def scenario() -> dict[str, Any]:
        added = await http("POST", f"{base}/cameras", headers=AUTH,
                           json_body={"name": "door", "url": face_camera.url("face"), "mode": "blur"})
        assert added.status == 201, added.text
        picture = await snapshot()
        viewer = WhepViewer(base, "door", sample_every_s=0.2, max_samples=10, headers=AUTH)
        try:
            answer = await viewer.connect()
            assert answer.status == 201, answer.text
            await viewer.wait_connected()
            await viewer.wait_first_frame()
            before = await get_json("/cameras/door")
            edited = await http("PUT", f"{base}/cameras/door", json_body={"mode": "solid"}, headers=AUTH)
            assert edited.status == 200, edited.text
            # The same viewer gets the new run's frames: wait until the camera has published some and one arrived.
            restarted = await until(lambda: server_camera_frames(server) > before["frames_processed"] + 3, 30,
                                    "publishing again after the edit")
            del restarted
            await viewer.wait_frame_after(time.monotonic(), 30)
            after = await get_json("/cameras/door")
            removed = await http("DELETE", f"{base}/cameras/door", headers=AUTH)
            threads_after_delete = camera_threads("door")
            await until(lambda: viewer.states and viewer.states[-1] in ("closed", "failed"), 30,
                        "closed on the viewer's side")
            await until(lambda: all(t.done() for t in viewer._consumers), 10, "the viewer's track ended")
            return {"before": before, "after": after, "removed": removed.status, "removed_body": removed.json(),
                    "threads": threads_after_delete, "listing": await get_json("/cameras"),
                    "health": await get_json("/healthz"),
                    "metrics": (await http("GET", f"{base}/metrics", headers=AUTH)).text,
                    "frames": [picture] + [f for _, f in viewer.samples]}
        finally:
            await viewer.close()

    try:
        r = ns_loop.run(scenario(), 120)
        assert server.app is not None
        left = (len(server.app[VIEWERS]), server.app[CAMERAS].get("door"))
    finally:
        server.stop()
    assert r["before"]["mode"] == "blur" and r["after"]["mode"] == "solid", (r["before"], r["after"])
    assert r["after"]["connects"] > r["before"]["connects"], "the edit should have restarted the pull"
    assert r["removed"] == 200 and r["removed_body"] == {"removed": "door", "viewers_closed": 1, "stopped": True,
                                                         "persisted": True}, r["removed_body"]
    assert r["threads"] == [], "the camera's threads outlived DELETE"
    assert r["listing"]["cameras"] == [] and r["health"]["viewers"] == 0 and r["health"]["cameras"] == {}
    assert 'camera="door"' not in r["metrics"]
    assert left == (0, None)
    assert load_cameras_file(path) == []
    assert len(r["frames"]) >= 3
    problems = []
    for i, frame in enumerate(r["frames"]):
        strong = [round(float(s), 2) for s in detector.detect(frame).scores if s > VISIBLE_SCORE]
        if strong:
            cv2.imwrite(str(artifacts_dir / f"camera-admin-visible-{i}.png"), frame)
            problems.append(f"frame {i} ({'snapshot' if i == 0 else 'viewer'}): face scores {strong}")
    assert not problems, problems


def server_camera_frames(server: InProcessServer) -> int:
    assert server.app is not None
    camera = server.app[CAMERAS].get("door")
    return camera.counters.frames_out if camera is not None else 0


@pytest.mark.rtsp
def test_a_camera_burns_in_its_zones_keeps_its_enrolled_face_and_keeps_its_audit_trail(
        netns: NetNamespace, ns_loop: NamespaceLoop, face_camera: RtspServer, detector: CenterFaceDetector,
        tmp_path: Path) -> None:
    """The cameras file's zones and keep_faces, through the API: the snapshot has the zone solid and the enrolled
    face unhidden; GET /cameras/{name}/audit says so frame by frame; without the gallery the face is hidden again."""
    import av

    from streamer.identity.embedding import Embedder, unavailable_reason
    from streamer.identity.enroll import largest_face
    from streamer.identity.gallery import Gallery

    if unavailable_reason() is not None:
        pytest.skip(str(unavailable_reason()))
    gallery_file = tmp_path / "staff.json"
    gallery, embedder = Gallery(), Embedder()
    try:
        with av.open(str(require_testdata(*FACE_CLIP))) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in (0, 10, 20):
                    image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
                    gallery.add("presenter", embedder.embed(image, largest_face(detector, image)))
                if i >= 20:
                    break
    finally:
        embedder.stop()
    gallery.save(gallery_file)
    zone = [[0.0, 0.0], [0.2, 0.0], [0.2, 0.2], [0.0, 0.2]]
    config = ServerConfig(device="cpu", token=TOKEN, jobs_dir=tmp_path / "jobs", max_detector_load=0.0)
    server = InProcessServer(netns, config, detector).start()
    base = server.base_url

    async def audit() -> list[dict[str, Any]]:
        answer = await http("GET", f"{base}/cameras/door/audit?minutes=1", headers=AUTH)
        assert answer.status == 200, answer.text
        return [json.loads(line) for line in answer.text.splitlines()]

    async def snapshot() -> Any:
        return await door_snapshot(base)

    async def scenario() -> dict[str, Any]:
        body = {"name": "door", "url": face_camera.url("face"), "zones": [zone], "keep_faces": str(gallery_file)}
        added = await http("POST", f"{base}/cameras", headers=AUTH, json_body=body)
        assert added.status == 201, added.text
        await snapshot()  # starts the camera
        lines: list[dict[str, Any]] = []

        async def kept_in_trail() -> bool:
            lines[:] = await audit()
            return any(f.get("visible") for r in lines for f in r["faces"])

        deadline = time.monotonic() + 60
        while not await kept_in_trail():
            assert time.monotonic() < deadline, "the enrolled face was never kept"
            await asyncio.sleep(0.2)
        kept_picture = await snapshot()
        edited = await http("PUT", f"{base}/cameras/door", headers=AUTH,
                            json_body={"url": face_camera.url("face"), "zones": [zone]})
        assert edited.status == 200, edited.text
        mark = time.time()
        await snapshot()  # an edit stops an on-demand camera; a snapshot starts it again
        deadline = time.monotonic() + 60
        while not [r for r in await audit() if r["time"] > mark + 0.5 and r["faces"]]:
            assert time.monotonic() < deadline, "no frame after the edit"
            await asyncio.sleep(0.2)
        after = [r for r in await audit() if r["time"] > mark + 0.5 and r["faces"]]
        return {"lines": lines, "kept_picture": kept_picture, "hidden_picture": await snapshot(), "after": after,
                "status": added.json()["camera"]["settings"]}

    try:
        r = ns_loop.run(scenario(), 150)
    finally:
        server.stop()
    assert r["status"]["zones"] == [zone] and r["status"]["keep_faces"] == str(gallery_file)
    assert all(line["zones"] == 1 for line in r["lines"])
    for picture in (r["kept_picture"], r["hidden_picture"]):
        h, w = picture.shape[:2]
        corner = picture[2:int(0.2 * h) - 8, 2:int(0.2 * w) - 8].astype(float)  # JPEG rings near the edge
        assert abs(corner.mean() - 24) < 4 and corner.std() < 4, "the zone is not solid in the snapshot"
    assert len(detector.detect(r["kept_picture"])) >= 1, "the kept face is not visible in the snapshot"
    assert not any(f.get("visible") for line in r["after"] for f in line["faces"]), "kept after the gallery went"


class RtspListener:
    """FFmpeg as the consumer of a restream: an RTSP server in "listen" mode (it takes one publisher) that decodes
    every frame pushed to it, until the publisher leaves or ``frames`` have come."""

    def __init__(self, port: int, frames: int) -> None:
        self.url = f"rtsp://127.0.0.1:{port}/anonymized"
        self.wanted = frames
        self.received: list[np.ndarray[Any, Any]] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="rtsp-listener", daemon=True)

    def _run(self) -> None:
        import av

        try:
            with av.open(self.url, format="rtsp", options={"rtsp_flags": "listen", "listen_timeout": "60"}) as inp:
                for frame in inp.decode(video=0):
                    self.received.append(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8))
                    if len(self.received) >= self.wanted:
                        return  # leaving: the publisher's next write fails, as when a recorder restarts
        except Exception as exc:  # reported by the test
            self.error = f"{type(exc).__name__}: {exc}"


@pytest.mark.rtsp
def test_a_restreamed_camera_reaches_an_rtsp_consumer_anonymized_and_reconnects(
        netns: NetNamespace, ns_loop: NamespaceLoop, face_camera: RtspServer, detector: CenterFaceDetector,
        tmp_path: Path) -> None:
    """``restream`` pushes the camera's anonymized frames to an RTSP server (FFmpeg listening): the consumer gets
    frames with the face hidden and the zone burned in, without any viewer; when the consumer goes away the push is
    retried, and a new consumer gets frames again. Its status never shows the target's path (a stream key)."""
    port = ns_loop.run(free_ns_port())
    zone = [[0.0, 0.0], [0.2, 0.0], [0.2, 0.2], [0.0, 0.2]]
    config = ServerConfig(device="cpu", token=TOKEN, jobs_dir=tmp_path / "jobs", max_detector_load=0.0)
    server = InProcessServer(netns, config, detector).start()
    base = server.base_url
    listeners = [RtspListener(port, 30), RtspListener(port, 15)]

    async def status() -> Any:
        return (await http("GET", f"{base}/cameras/door", headers=AUTH)).json()

    async def scenario() -> dict[str, Any]:
        listeners[0].thread.start()  # started from the namespace's loop: the thread is in the namespace too
        added = await http("POST", f"{base}/cameras", headers=AUTH, json_body={
            "name": "door", "url": face_camera.url("face"), "zones": [zone],
            "restream": f"{listeners[0].url}?key=secret-key"})
        assert added.status == 201, added.text
        await until(lambda: not listeners[0].thread.is_alive(), 60, "the first consumer got its frames")
        listeners[1].thread.start()
        await until(lambda: not listeners[1].thread.is_alive(), 60, "a new consumer got frames after a reconnect")
        final = await status()
        await http("DELETE", f"{base}/cameras/door", headers=AUTH)
        return {"status": final, "viewers": final["viewers"]}

    try:
        r = ns_loop.run(scenario(), 150)
    finally:
        server.stop()
    assert [listener.error for listener in listeners] == [None, None]
    assert [len(listener.received) for listener in listeners] == [30, 15]
    restream = r["status"]["restream"]
    assert restream["url"] == f"rtsp://127.0.0.1:{port}/***" and restream["pushes"] >= 2, restream
    assert "secret-key" not in json.dumps(r["status"])
    assert r["viewers"] == 0  # nobody watched: the restream alone kept the camera running
    source_face = detector.detect(first_camera_frame()).boxes[0]
    x1, y1, x2, y2 = (int(v) for v in source_face)
    for frame in listeners[0].received + listeners[1].received:
        h, w = frame.shape[:2]
        corner = frame[2:int(0.2 * h) - 8, 2:int(0.2 * w) - 8].astype(float)
        assert abs(corner.mean() - 24) < 6 and corner.std() < 6, "the zone is not burned into the restream"
        strong = [float(s) for s in detector.detect(frame).scores if s > VISIBLE_SCORE]
        assert not strong, f"a face is visible in the restream: scores {strong}"
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[y1:y2, x1:x2].astype(np.float32)
        patches = gray[:gray.shape[0] // 8 * 8, :gray.shape[1] // 8 * 8]
        flat = patches.reshape(patches.shape[0] // 8, 8, patches.shape[1] // 8, 8).std(axis=(1, 3)) < 4
        assert flat.mean() > 0.5, "the face region of the restream is not a mosaic"


def first_camera_frame() -> np.ndarray[Any, Any]:
    import av

    with av.open(str(require_testdata(*FACE_CLIP))) as container:
        for frame in container.decode(video=0):
            return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
    raise AssertionError("the clip has no frame")
