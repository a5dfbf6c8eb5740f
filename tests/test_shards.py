"""Camera shards (streamer/shards.py, ``serve --shard INDEX/COUNT``): N replicas given the same cameras run each
camera exactly once between them.

- The rule: a camera's shard is the first 8 bytes of its name's SHA-256 modulo N, pinned here for a few names and
  checked to be the same in processes with other hash seeds (never Python's salted ``hash()``); every name lands on
  exactly one of N shards.
- Parsing: ``INDEX/COUNT``, ``auto/COUNT`` from a StatefulSet pod's host name ``NAME-N``, ``$STREAMER_SHARD``;
  bad values are refused with the reason.
- The app in process: a sharded app lists only its cameras, shows its shard in ``/healthz``, and refuses camera
  changes with 409; one shard (the default) changes nothing.
- One real run: GStreamer's RTSP server plays a face clip as four cameras (three from one cameras file, one from
  ``--camera``); two ``python -m streamer serve`` processes with ``--shard 0/2`` and ``--shard 1/2`` each pull only
  their own (live), together all of them, and refuse a camera change with 409, leaving the file as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import REPO_ROOT, require_testdata
from hypothesis import given
from hypothesis import strategies as st
from rtsp_support import make_camera_clip
from webrtc_support import ServerProcess, free_port, http

from models.centerface import CenterFaceDetector
from streamer.__main__ import build_parser
from streamer.camera_config import NAME_CHARS, CameraSettings
from streamer.server.app import create_app
from streamer.server.config import ServerConfig
from streamer.shards import ENV, Shard, parse_shard, shard_of
from testkit.netns import NamespaceLoop, NetNamespace
from testkit.rtsp import RtspServer, rtsp_unavailable_reason

FACE_CLIP = ("videos", "liveportrait_driving_d3.mp4")  # 512x512, one talking head in every frame
TOKEN = "shard-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# name -> its shard for 2, 3, 4 and 7 shards. Computed once from the rule and pinned: a change of the rule would
# move cameras between replicas of a running deployment.
PINNED = {
    "lobby": (0, 2, 2, 3),
    "door": (0, 0, 2, 3),
    "yard": (1, 0, 1, 6),
    "parking": (0, 1, 0, 6),
    "cam-02": (1, 1, 3, 2),
    "cam-04": (1, 0, 3, 4),
}
COUNTS = (2, 3, 4, 7)


# ------------------------------------------------------------------------------------------------------ the rule


def test_the_shard_of_a_name_is_pinned() -> None:
    for name, shards in PINNED.items():
        assert tuple(shard_of(name, n) for n in COUNTS) == shards, name
        assert shard_of(name, 1) == 0
    # The rule itself, spelled out for one name: sha256("lobby") starts 4b5dc076e7b9c122.
    assert int("4b5dc076e7b9c122", 16) % 7 == PINNED["lobby"][3]


def test_the_shard_is_the_same_in_other_processes_whatever_their_hash_seed() -> None:
    script = ("import json, sys; from streamer.shards import shard_of; "
              f"print(json.dumps({{n: [shard_of(n, c) for c in {list(COUNTS)}] for n in {sorted(PINNED)}}}), "
              "hash('lobby'))")
    hashes = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=60, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        shards, python_hash = done.stdout.rsplit(" ", 1)
        assert {n: tuple(s) for n, s in json.loads(shards).items()} == PINNED
        hashes.add(python_hash)
    assert len(hashes) > 1  # Python's own hash() differs between these processes: the rule does not use it


@given(st.text(alphabet=sorted(NAME_CHARS), min_size=1, max_size=64), st.integers(1, 64))
def test_every_camera_lands_on_exactly_one_shard(name: str, count: int) -> None:
    owners = [i for i in range(count) if Shard(i, count).owns(name)]
    assert owners == [shard_of(name, count)]


def test_the_shards_of_a_cameras_list_split_it_without_overlap() -> None:
    cameras = [CameraSettings(f"cam-{i:02d}", f"rtsp://10.0.0.{i}/s") for i in range(40)]
    for count in (1, 2, 3, 5):
        parts = [Shard(i, count).select(cameras) for i in range(count)]
        assert sorted(c.name for part in parts for c in part) == sorted(c.name for c in cameras)
        for part in parts:
            assert part == [c for c in cameras if c in part]  # each keeps the file's order
    assert all(len(Shard(i, 3).select(cameras)) >= 8 for i in range(3))  # 40 names spread over every shard


# ------------------------------------------------------------------------------------------------------- parsing


def test_index_and_count_are_parsed() -> None:
    assert parse_shard("0/1") == Shard() == Shard(0, 1)
    assert parse_shard("1/2") == Shard(1, 2)
    assert parse_shard(" 6/7 ") == Shard(6, 7)
    assert str(Shard(1, 2)) == "1/2" and Shard(1, 2).as_dict() == {"index": 1, "count": 2}


def test_auto_reads_the_pod_name_before_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under hostNetwork a pod's host name is its node's: the manifest's POD_NAME (downward API) decides."""
    monkeypatch.setenv("POD_NAME", "face-streamer-1")
    assert parse_shard("auto/2") == Shard(1, 2)
    monkeypatch.setenv("POD_NAME", "")
    monkeypatch.setattr("socket.gethostname", lambda: "face-streamer-0")
    assert parse_shard("auto/2") == Shard(0, 2)


def test_auto_takes_the_index_from_a_statefulset_pod_name() -> None:
    assert parse_shard("auto/2", "face-streamer-0") == Shard(0, 2)
    assert parse_shard("auto/2", "face-streamer-1") == Shard(1, 2)
    assert parse_shard("auto/12", "web-11") == Shard(11, 12)
    assert parse_shard("auto/3", "face-streamer-2.face-streamer-headless.default.svc.cluster.local") == Shard(2, 3)


@pytest.mark.parametrize(("text", "hostname", "says"), [
    ("auto/2", "face-streamer", "does not end in -N"),
    ("auto/2", "face-streamer-", "does not end in -N"),
    ("auto/2", "laptop", "does not end in -N"),
    ("auto/2", "node-1a", "does not end in -N"),
    ("auto/2", "face-streamer-2", "gives index 2, but there are only 2 shard(s)"),
    ("auto/0", "face-streamer-0", "count must be within 1..1024"),
])
def test_auto_refuses_a_host_name_without_a_fitting_ordinal(text: str, hostname: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_shard(text, hostname)
    assert says in str(caught.value), str(caught.value)


@pytest.mark.parametrize(("text", "says"), [
    ("", "expected INDEX/COUNT"),
    ("1", "expected INDEX/COUNT"),
    ("0/2/3", "expected INDEX/COUNT"),
    ("-1/2", "expected INDEX/COUNT"),
    ("a/2", "expected INDEX/COUNT"),
    ("0/x", "expected INDEX/COUNT"),
    ("1.0/2", "expected INDEX/COUNT"),
    ("2/2", "index must be within 0..1"),
    ("5/3", "index must be within 0..2"),
    ("0/0", "count must be within 1..1024"),
    ("0/5000", "count must be within 1..1024"),
])
def test_bad_values_are_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_shard(text, "face-streamer-0")
    assert says in str(caught.value), str(caught.value)


def test_serve_takes_shard_from_the_flag_the_environment_or_the_host_name(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert build_parser().parse_args(["serve"]).shard == Shard()  # the default: one shard, every camera
    assert build_parser().parse_args(["serve", "--shard", "1/3"]).shard == Shard(1, 3)
    monkeypatch.setenv(ENV, "2/4")
    assert build_parser().parse_args(["serve"]).shard == Shard(2, 4)
    assert build_parser().parse_args(["serve", "--shard", "0/2"]).shard == Shard(0, 2)  # the flag wins
    monkeypatch.setattr("socket.gethostname", lambda: "face-streamer-1")
    assert build_parser().parse_args(["serve", "--shard", "auto/2"]).shard == Shard(1, 2)
    monkeypatch.setattr("socket.gethostname", lambda: "laptop")
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--shard", "auto/2"])
    assert exited.value.code == 2
    assert "'laptop' does not end in -N" in capsys.readouterr().err
    monkeypatch.setenv(ENV, "3/3")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve"])
    assert "index must be within 0..2" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the app in process


CAMERAS = tuple(CameraSettings(name, f"rtsp://127.0.0.1:1/{name}") for name in ("lobby", "door", "yard", "cam-02"))


async def start_client(config: ServerConfig, detector: CenterFaceDetector) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(config, detector), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def shard_clients(detector: CenterFaceDetector, tmp_path: Path) -> AsyncIterator[list[TestClient[Any, Any]]]:
    clients = [await start_client(ServerConfig(jobs_dir=tmp_path / f"jobs{i}", token=TOKEN, cameras=CAMERAS,
                                               shard=Shard(i, 2)), detector) for i in range(2)]
    yield clients
    for client in clients:
        await client.close()


async def test_sharded_apps_split_the_cameras_and_refuse_changes(shard_clients: list[TestClient[Any, Any]],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    listed = []
    for i, client in enumerate(shard_clients):
        body = await (await client.get("/cameras", headers=AUTH)).json()
        listed.append([c["name"] for c in body["cameras"]])
        assert body["manage"] == {"enabled": False, "persisted": False, "reason": "shard"}
        health = await (await client.get("/healthz", headers=AUTH)).json()
        assert health["shard"] == {"index": i, "count": 2}
        assert sorted(health["cameras"]) == sorted(listed[-1])
    assert listed == [["lobby", "door"], ["yard", "cam-02"]]  # PINNED, in the configured order
    other = await shard_clients[0].get("/cameras/yard", headers=AUTH)
    assert other.status == 404

    client = shard_clients[0]
    for method, path, body in (("POST", "/cameras", {"name": "gate", "url": "rtsp://127.0.0.1:1/gate"}),
                               ("PUT", "/cameras/lobby", {"mode": "solid"}), ("DELETE", "/cameras/lobby", None)):
        answer = await client.request(method, path, json=body, headers=AUTH)
        error = (await answer.json())["error"]
        assert answer.status == 409, (method, answer.status, error)
        assert "sharded service (--shard 0/2)" in error and "restart the replicas" in error, error
    assert [c["name"] for c in (await (await client.get("/cameras", headers=AUTH)).json())["cameras"]] == [
        "lobby", "door"]


async def test_a_sharded_app_without_a_token_says_shard_not_token(detector: CenterFaceDetector,
                                                                   tmp_path: Path) -> None:
    """The shard is the reason that holds: a token would not make a change safe on a sharded service."""
    client = await start_client(ServerConfig(jobs_dir=tmp_path / "jobs", cameras=CAMERAS, shard=Shard(1, 2)),
                                detector)
    try:
        answer = await client.post("/cameras", json={"name": "gate", "url": "rtsp://127.0.0.1:1/gate"})
        assert answer.status == 409 and "--shard 1/2" in (await answer.json())["error"]
        config = await (await client.get("/config")).json()
        assert config["cameraAdmin"] == {"enabled": False, "persisted": False, "reason": "shard"}
    finally:
        await client.close()


async def test_one_shard_is_the_default_and_changes_nothing(detector: CenterFaceDetector, tmp_path: Path) -> None:
    client = await start_client(ServerConfig(jobs_dir=tmp_path / "jobs", token=TOKEN, cameras=CAMERAS), detector)
    try:
        body = await (await client.get("/cameras", headers=AUTH)).json()
        assert [c["name"] for c in body["cameras"]] == [c.name for c in CAMERAS]
        assert body["manage"] == {"enabled": True, "persisted": False, "reason": None}
        assert (await (await client.get("/healthz", headers=AUTH)).json())["shard"] == {"index": 0, "count": 1}
        added = await client.post("/cameras", json={"name": "gate", "url": "rtsp://127.0.0.1:1/gate"}, headers=AUTH)
        assert added.status == 201, await added.text()
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------- two real replicas


@pytest.fixture(scope="module")
def face_camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = rtsp_unavailable_reason()
    if reason:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("shards") / "face.mp4"
    make_camera_clip(require_testdata(*FACE_CLIP), path, repeats=6)  # ~70 s, longer than the test runs
    return path


@pytest.fixture
def rtsp_cameras(netns: NetNamespace, ns_loop: NamespaceLoop, face_camera_clip: Path,
                 artifacts_dir: Path) -> Iterator[RtspServer]:
    """One RTSP server, a mount per camera name (each its own pull)."""
    port = ns_loop.run(free_port("127.0.0.1"))
    mounts = {name: face_camera_clip for name in ("lobby", "door", "yard", "cam-02")}
    server = RtspServer(mounts, port, netns, log_path=artifacts_dir / "shards-rtsp-server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.rtsp
def test_two_serve_replicas_each_run_only_their_own_cameras(netns: NetNamespace, ns_loop: NamespaceLoop,
                                                            rtsp_cameras: RtspServer, tmp_path: Path,
                                                            artifacts_dir: Path) -> None:
    rtsp = rtsp_cameras
    config = tmp_path / "cameras.toml"
    config.write_text("".join(f'[[camera]]\nname = "{name}"\nurl = "{rtsp.url(name)}"\nalways_on = true\n\n'
                              for name in ("lobby", "door", "yard")))
    original = config.read_bytes()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    expected = {0: ["lobby", "door"], 1: ["yard", "cam-02"]}  # PINNED; cam-02 comes from --camera
    replicas: list[ServerProcess] = []
    try:
        for i in range(2):
            replicas.append(ServerProcess(netns, ns_loop, [
                "--config", str(config), "--camera", f"cam-02={rtsp.url('cam-02')}", "--always-on",
                "--shard", f"{i}/2", "--token-file", str(token), "--detect-size", "fast", "--rtsp-timeout", "5"],
                log_path=artifacts_dir / f"shards-server-{i}.log").start())

        async def scenario(replica: ServerProcess, i: int) -> dict[str, Any]:
            base = replica.base_url
            listing = (await http("GET", f"{base}/cameras", headers=AUTH)).json()
            names = [c["name"] for c in listing["cameras"]]
            # Each of its own cameras is pulled for real (always on): live, with frames.
            for name in names:
                await wait_status_auth(base, name)
            others = [(await http("GET", f"{base}/cameras/{n}", headers=AUTH)).status
                      for n in expected[1 - i]]
            health = (await http("GET", f"{base}/healthz", headers=AUTH)).json()
            refused = [await http("POST", f"{base}/cameras", headers=AUTH,
                                  json_body={"name": "gate", "url": rtsp.url("lobby")}),
                       await http("PUT", f"{base}/cameras/{names[0]}", headers=AUTH, json_body={"mode": "solid"}),
                       await http("DELETE", f"{base}/cameras/{names[0]}", headers=AUTH)]
            return {"names": names, "others": others, "shard": health["shard"], "manage": listing["manage"],
                    "refused": [(a.status, a.json()["error"]) for a in refused]}

        results = [ns_loop.run(scenario(replica, i), 120) for i, replica in enumerate(replicas)]
    finally:
        for replica in replicas:
            replica.stop()
    for i, result in enumerate(results):
        assert result["names"] == expected[i], (result, replicas[i].log_tail())
        assert result["others"] == [404, 404], result
        assert result["shard"] == {"index": i, "count": 2}
        assert result["manage"]["reason"] == "shard" and result["manage"]["enabled"] is False
        for status, error in result["refused"]:
            assert status == 409 and f"--shard {i}/2" in error, (status, error)
        log = replicas[i].log_path.read_text(errors="replace")
        line = f"shard {i}/2: cameras {', '.join(expected[i])} (2 of 4 in the cameras file and --camera)"
        assert line in log, log[-3000:]
        for name in expected[1 - i]:
            assert f"[camera {name}] started" not in log, log[-3000:]
    assert sorted(results[0]["names"] + results[1]["names"]) == ["cam-02", "door", "lobby", "yard"]
    assert config.read_bytes() == original  # nothing was written to the shared file


async def wait_status_auth(base: str, name: str, limit_s: float = 60) -> None:
    """Wait until camera ``name`` is live and its frames are hidden."""
    start = time.monotonic()
    while True:
        answer = await http("GET", f"{base}/cameras/{name}", headers=AUTH)
        status = answer.json()
        if answer.status == 200 and status["state"] == "live" and status["frames_processed"] > 0:
            return
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"camera {name} not live within {limit_s:.0f} s: {answer.status} {status}")
        await asyncio.sleep(0.2)

