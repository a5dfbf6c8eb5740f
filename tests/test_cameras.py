"""RTSP cameras end to end: GStreamer's RTSP test server plays a real clip as a camera, ``python -m streamer serve``
pulls it, and aiortc WHEP viewers watch the anonymized picture (tests/rtsp_support.py).

Everything runs inside the run's own network namespace (testkit/netns.py): the RTSP server on the
namespace's 127.0.0.1, the service on 10.77.0.1, the viewers on this process's namespace thread. Nothing is sent
beyond it. One service and one RTSP server serve the whole module; the tests that break the camera (kill, hang) come
last and leave it running again.

The service runs with:
- ``face``: the single-face clip (liveportrait_driving_d3.mp4, every frame a clear face), ``--always-on``;
- from a TOML file: ``gone`` (a closed port on loopback, with a password in its URL), ``missing`` (a path the
  RTSP server does not have), both always on; ``lobby`` (the face clip, blur) and ``door``
  (face_recognition_short_hamilton_clip.mp4, several faces, solid from [defaults]), both on demand.

The last three tests need neither GStreamer nor the namespace: `serve` refusing bad arguments, and the RTSP reader
restarted while a stuck pull is still ending.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import require_testdata
from rtsp_support import U8, WhepViewer, clip_frames, http_get_bytes, make_camera_clip, make_truth_camera_clip
from test_live_leaks import MIN_FRAMES, assert_no_leak, judge_enough
from webrtc_support import ServerProcess, free_port, http

from testkit.framecode import STRIP, read
from testkit.judges import DetectorJudge, IdentityJudge, Judge, PixelJudge
from testkit.netns import NamespaceLoop, NetNamespace
from testkit.rtsp import RtspServer, rtsp_unavailable_reason
from testkit.truth import TruthClip, switching_sizes
from testkit.wire import as_sent, returned_pairs

pytestmark = pytest.mark.rtsp

SWITCH_SECONDS = 8.0
FACE_CLIP = ("videos", "liveportrait_driving_d3.mp4")  # 512x512, 30 fps, one talking head in every frame
CROWD_CLIP = ("videos", "face_recognition_short_hamilton_clip.mp4")  # 640x360, 1-6 faces per frame
RTSP_TIMEOUT_S = 2.0  # serve --rtsp-timeout: a hung camera is noticed after this long
VISIBLE_SCORE = 0.5  # a detection this confident in the service's output is a face left visible
SECRET = "s3cr3t-pw"  # the password in the unreachable camera's URL: it must never be shown


# ----------------------------------------------------------------------------------------------------- helpers


def fetch(ns_loop: NamespaceLoop, url: str) -> Any:
    """GET ``url`` (inside the namespace); the JSON body of a 200."""
    answer = ns_loop.run(http("GET", url))
    assert answer.status == 200, f"GET {url}: {answer.status} {answer.text[:300]}"
    return answer.json()


async def camera_status(base_url: str, name: str) -> dict[str, Any]:
    answer = await http("GET", f"{base_url}/cameras/{name}")
    assert answer.status == 200, f"GET /cameras/{name}: {answer.status} {answer.text[:300]}"
    body: dict[str, Any] = answer.json()
    return body


async def wait_status(base_url: str, name: str, ok: Callable[[dict[str, Any]], bool], limit_s: float,
                      what: str) -> tuple[dict[str, Any], float]:
    """Poll GET /cameras/{name} until ``ok(status)``; returns (status, seconds it took)."""
    start = time.monotonic()
    while True:
        status = await camera_status(base_url, name)
        if ok(status):
            return status, time.monotonic() - start
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"camera {name} not {what} within {limit_s:.0f} s: {status}")
        await asyncio.sleep(0.1)


def is_live(status: dict[str, Any]) -> bool:
    return status["state"] == "live" and status["last_frame_age_s"] is not None and status["last_frame_age_s"] < 1


def visible_faces(detector: Any, frames: list[U8], artifacts: Path, tag: str) -> list[str]:
    """Every detection with score > VISIBLE_SCORE in ``frames`` (each offending frame saved under artifacts)."""
    problems = []
    for i, frame in enumerate(frames):
        found = detector.detect(frame)
        strong = [(box, score) for box, score in zip(found.xywh(), found.scores, strict=True)
                  if score > VISIBLE_SCORE]
        if strong:
            path = artifacts / f"cameras-{tag}-visible-face-{i:02d}.png"
            cv2.imwrite(str(path), frame)
            problems += [f"{tag} frame {i}: face at {np.round(box).tolist()} score {score:.2f} -> {path}"
                         for box, score in strong]
    return problems


def serve_error(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m streamer serve ARGS`` expected to refuse its arguments (it never gets to listen)."""
    return subprocess.run([sys.executable, "-m", "streamer", "serve", "--host", "127.0.0.1", "--port", "9", *args],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gstreamer() -> None:
    reason = rtsp_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def face_clip(gstreamer: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-face clip as a camera sends it: a keyframe every 0.5 s, looped (see make_camera_clip)."""
    path = tmp_path_factory.mktemp("cameras") / "face.mp4"
    make_camera_clip(require_testdata(*FACE_CLIP), path, repeats=12)  # 142 s: longer than this module runs
    return path


@pytest.fixture(scope="module")
def source_face_scores(face_clip: Path, detector: Any) -> list[float]:
    """The detector's best face score on frames of the camera clip itself (enlarged to 640 px, where the face is
    clearest): the face checks are not vacuous."""
    frames = clip_frames(face_clip, list(range(0, 354, 44)))
    return [float(max(detector.detect(f, detect_size=640).scores, default=0.0)) for f in frames.values()]


@pytest.fixture(scope="module")
def switch_clip() -> TruthClip:
    """A virtual camera over the annotated photos whose stream switches 640x480 <-> 1280x720 every 2 s."""
    require_testdata("images")
    return switching_sizes(SWITCH_SECONDS, sizes=((640, 480 - STRIP.height), (1280, 720 - STRIP.height)), seed=3)


@pytest.fixture(scope="module")
def switch_file(gstreamer: None, switch_clip: TruthClip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cameras") / "switch.ts"
    make_truth_camera_clip(switch_clip, path)
    return path


@pytest.fixture(scope="module")
def rtsp(netns: NetNamespace, ns_loop: NamespaceLoop, face_clip: Path, switch_file: Path,
         artifacts_dir: Path) -> Iterator[RtspServer]:
    port = ns_loop.run(free_port("127.0.0.1"))
    server = RtspServer({"face": face_clip, "crowd": require_testdata(*CROWD_CLIP), "switch": switch_file}, port,
                        netns, log_path=artifacts_dir / "cameras-rtsp-server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(netns: NetNamespace, ns_loop: NamespaceLoop, rtsp: RtspServer, artifacts_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("cameras-config") / "cameras.toml"
    config.write_text(f"""
[defaults]
mode = "solid"

[[camera]]
name = "gone"
url = "rtsp://viewer:{SECRET}@127.0.0.1:1/nothing"
always_on = true

[[camera]]
name = "missing"
url = "{rtsp.url('missing')}"
always_on = true

[[camera]]
name = "lobby"
url = "{rtsp.url('face')}"
mode = "blur"

[[camera]]
name = "door"
url = "{rtsp.url('crowd')}"

[[camera]]
name = "switch"
url = "{rtsp.url('switch')}"
mode = "mosaic"
always_on = true
""")
    server = ServerProcess(netns, ns_loop, ["--camera", f"face={rtsp.url('face')}", "--always-on",
                                            "--config", str(config), "--rtsp-timeout", str(RTSP_TIMEOUT_S)],
                           log_path=artifacts_dir / "cameras-server.log").start()
    try:
        ns_loop.run(wait_status(server.base_url, "face", is_live, 20, "live"))
        yield server
    finally:
        server.stop()


@pytest.fixture
def camera_up(service: ServerProcess, rtsp: RtspServer, ns_loop: NamespaceLoop) -> ServerProcess:
    """The service with its ``face`` camera live (a test before may have broken the RTSP server)."""
    rtsp.ensure_running()
    ns_loop.run(wait_status(service.base_url, "face", is_live, 20, "live"))
    return service


# ------------------------------------------------------------------------------------------------------- tests


def test_viewer_sees_the_camera_with_every_face_hidden(camera_up: ServerProcess, ns_loop: NamespaceLoop,
                                                       detector: Any, source_face_scores: list[float],
                                                       artifacts_dir: Path) -> None:
    """A WHEP viewer gets 201 + Location and the camera's picture, with no face the detector can find in it
    (every frame of the clip shows a clear face); DELETE on the Location ends it and the viewer count drops."""
    base = camera_up.base_url
    assert min(source_face_scores) > 0.7, f"the clip's own frames should show a clear face: {source_face_scores}"

    async def scenario() -> dict[str, Any]:
        viewer = WhepViewer(base, "face", sample_every_s=0.2, max_samples=16)
        try:
            answer = await viewer.connect()
            assert answer.status == 201, f"POST /whep/face: {answer.status} {answer.text[:300]}"
            assert answer.headers.get("Content-Type", "").startswith("application/sdp"), answer.headers
            await viewer.wait_connected()
            await viewer.wait_first_frame()
            start = await camera_status(base, "face")
            t0 = time.monotonic()
            await asyncio.sleep(3.0)
            watched = viewer.frames_between(t0, t0 + 3.0)
            during = await camera_status(base, "face")
            health = (await http("GET", f"{base}/healthz")).json()
            deleted = await viewer.delete()
            after, _ = await wait_status(base, "face", lambda s: s["viewers"] == 0, 5, "without viewers")
            health_after = (await http("GET", f"{base}/healthz")).json()
            await asyncio.sleep(1.0)  # frames already on the wire
            n1 = len(viewer.arrivals)
            await asyncio.sleep(1.5)
            n2 = len(viewer.arrivals)
            again = await viewer.delete()
            stranger = WhepViewer(base, "nope")
            try:
                unknown = await stranger.connect()
            finally:
                await stranger.close()
            return {"location": viewer.location, "watched": watched,
                    "published": during["frames_processed"] - start["frames_processed"],
                    "sizes": viewer.sizes, "during": during,
                    "health": health, "deleted": deleted.status, "after": after, "health_after": health_after,
                    "late_frames": n2 - n1, "again": again.status, "unknown": unknown.status,
                    "samples": [frame for _, frame in viewer.samples]}
        finally:
            await viewer.close()

    r = ns_loop.run(scenario(), 60)
    print(f"whep: {r['watched']} of {r['published']} anonymized frames in 3 s, {len(r['samples'])} checked; "
          f"source face scores "
          f"{min(source_face_scores):.2f}..{max(source_face_scores):.2f}")
    assert re.fullmatch(r"/whep/face/[A-Za-z0-9_-]+", r["location"] or ""), r["location"]
    # The machine may be busy: the service may anonymize fewer than 30 frames/s, but the viewer gets most of them.
    assert r["watched"] >= max(6, r["published"] // 2), f"{r['watched']} of {r['published']} frames in 3 s"
    assert r["sizes"] == {(512, 512)}, r["sizes"]
    assert r["during"]["viewers"] == 1 and r["health"]["viewers"] == 1, (r["during"], r["health"]["viewers"])
    assert len(r["samples"]) >= 5, len(r["samples"])
    problems = visible_faces(detector, r["samples"], artifacts_dir, "whep")
    assert not problems, "faces visible to a WHEP viewer:\n" + "\n".join(problems)
    assert r["deleted"] == 200
    assert r["after"]["viewers"] == 0 and r["health_after"]["viewers"] == 0, (r["after"], r["health_after"])
    assert r["late_frames"] == 0, f"{r['late_frames']} frames arrived more than 1 s after DELETE"
    assert r["again"] == 404, "a deleted WHEP session should be gone"
    assert r["unknown"] == 404, "POST /whep/<unknown camera> should be 404"


def test_a_camera_changing_resolution_leaks_no_face_to_viewers_or_snapshots(
        camera_up: ServerProcess, ns_loop: NamespaceLoop, switch_clip: TruthClip, detector: Any,
        artifacts_dir: Path) -> None:
    """The RTSP source switches 640x480 <-> 1280x720 every 2 s (a camera reconfigured, its stream restarting with
    new parameter sets) while showing a virtual camera over the annotated photos: what viewers and snapshots get
    is judged against the ground truth by pixels, identity and the detector. Zero leaks."""
    base = camera_up.base_url

    async def scenario() -> tuple[list[U8], list[U8], dict[str, Any]]:
        await wait_status(base, "switch", is_live, 20, "live")
        viewer = WhepViewer(base, "switch", sample_every_s=0.05, max_samples=200)
        try:
            assert (await viewer.connect()).status == 201
            await viewer.wait_connected()
            await viewer.wait_first_frame()
            snapshots: list[U8] = []
            # Six snapshots spread over the switches, and on until enough frames came back to judge: a busy machine
            # returns fewer per second (at most 60 s more).
            enough_by = asyncio.get_running_loop().time() + 60
            while len(snapshots) < 6 or (len(viewer.samples) < 2 * MIN_FRAMES
                                         and asyncio.get_running_loop().time() < enough_by):
                if len(snapshots) < 6:
                    code, _, body = await http_get_bytes(f"{base}/cameras/switch/snapshot.jpg", 30)
                    assert code == 200
                    snapshots.append(np.asarray(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR),
                                                np.uint8))
                await asyncio.sleep(1.3)
            status = await camera_status(base, "switch")
            return [frame for _, frame in viewer.samples], snapshots, status
        finally:
            await viewer.close()

    frames, snapshots, status = ns_loop.run(scenario(), 150)
    sizes = {(f.shape[1], f.shape[0]) for f in frames}
    assert sizes == {(640, 480), (1280, 720)}, f"the viewer got frames of {sizes}; camera {status}"
    sent = as_sent(switch_clip)
    judges: list[Judge] = [PixelJudge(), IdentityJudge(switch_clip.reference), DetectorJudge(detector)]
    returned = [(read(np.asarray(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), np.uint8), f.shape[1], f.shape[0]), f)
                for f in frames + snapshots]  # snapshots are JPEG: the strip still reads
    report = judge_enough(returned_pairs(returned, sent, len(sent)), judges, identity_every=8)
    assert_no_leak(report, artifacts_dir, "camera-switch")
    assert status["frames_hidden_whole"] <= status["frames_processed"], status


def test_broken_cameras_show_a_clear_status_and_the_good_one_stays_live(camera_up: ServerProcess,
                                                                       ns_loop: NamespaceLoop) -> None:
    """A closed port and a path the RTSP server lacks: both 'reconnecting' with an error that says why, in
    /cameras and /healthz (still 200); the URL's password is shown nowhere; the good camera keeps delivering."""
    base = camera_up.base_url

    def failing(status: dict[str, Any]) -> bool:
        return status["state"] == "reconnecting" and bool(status["error"])

    gone, _ = ns_loop.run(wait_status(base, "gone", failing, 10, "reconnecting"))
    missing, _ = ns_loop.run(wait_status(base, "missing", failing, 10, "reconnecting"))
    assert "refused" in gone["error"].lower(), gone
    assert "404" in missing["error"] or "not found" in missing["error"].lower(), missing

    listing = ns_loop.run(http("GET", f"{base}/cameras"))
    assert listing.status == 200
    by_name = {c["name"]: c for c in listing.json()["cameras"]}
    assert by_name["gone"]["state"] == "reconnecting" and by_name["gone"]["error"], by_name["gone"]
    assert by_name["missing"]["state"] == "reconnecting" and by_name["missing"]["error"], by_name["missing"]

    health = ns_loop.run(http("GET", f"{base}/healthz"))
    assert health.status == 200, health.text
    summary = health.json()["cameras"]
    assert summary["gone"]["state"] == "reconnecting" and summary["gone"]["error"], summary
    assert summary["face"]["state"] == "live", summary

    face0 = fetch(ns_loop, f"{base}/cameras/face")
    time.sleep(1.0)
    face1 = fetch(ns_loop, f"{base}/cameras/face")
    assert face1["state"] == "live" and face1["error"] is None, face1
    assert face1["frames_decoded"] - face0["frames_decoded"] >= 15, (face0, face1)
    assert face1["frames_processed"] > face0["frames_processed"], (face0, face1)

    metrics = ns_loop.run(http("GET", f"{base}/metrics")).text
    assert 'streamer_camera_up{camera="face"} 1.0' in metrics
    assert 'streamer_camera_up{camera="gone"} 0.0' in metrics
    for where, text in (("/cameras", listing.text), ("/healthz", health.text), ("/metrics", metrics),
                        ("the server log", camera_up.log_tail(200_000))):
        assert SECRET not in text, f"the camera password is shown in {where}"


@dataclass
class Counters:
    """The service's counters at one moment: the face camera's status, all cameras' detections, and the
    detector's inference count from /metrics (every inference the service ran, whatever it was for)."""

    at: float
    face: dict[str, Any]
    detections: int
    inferences: float


async def counters(base_url: str) -> Counters:
    listing = (await http("GET", f"{base_url}/cameras")).json()["cameras"]
    metrics = (await http("GET", f"{base_url}/metrics")).text
    match = re.search(r"^streamer_inference_seconds_count (\S+)$", metrics, re.M)
    assert match is not None, "no streamer_inference_seconds_count in /metrics"
    face = next(c for c in listing if c["name"] == "face")
    return Counters(time.monotonic(), face, sum(int(c["detections"]) for c in listing), float(match.group(1)))


def test_three_viewers_cost_one_decode_and_one_detection_per_frame(camera_up: ServerProcess,
                                                                    ns_loop: NamespaceLoop) -> None:
    """The camera is pulled, decoded and anonymized once per frame whatever the number of viewers: with three
    viewers the decode rate is that of one viewer (the camera's frame rate), no extra RTSP connection is made,
    the detector runs once per anonymized frame, and each of the three viewers gets those same frames."""
    base = camera_up.base_url
    window_s = 4.0

    async def window(viewers: list[WhepViewer]) -> tuple[Counters, Counters, list[int]]:
        c0 = await counters(base)
        await asyncio.sleep(window_s)
        c1 = await counters(base)
        return c0, c1, [v.frames_between(c0.at, c1.at) for v in viewers]

    async def scenario() -> dict[str, Any]:
        viewers = [WhepViewer(base, "face", max_samples=0) for _ in range(3)]
        try:
            assert (await viewers[0].connect()).status == 201
            await viewers[0].wait_first_frame()
            one = await window(viewers[:1])
            for v in viewers[1:]:
                assert (await v.connect()).status == 201
            for v in viewers[1:]:
                await v.wait_first_frame()
            three = await window(viewers)
            health = (await http("GET", f"{base}/healthz")).json()
            return {"one": one, "three": three, "health_viewers": health["viewers"]}
        finally:
            await asyncio.gather(*(v.close() for v in viewers))

    r = ns_loop.run(scenario(), 90)
    (a0, a1, got1), (b0, b1, got3) = r["one"], r["three"]

    def per_s(c0: Counters, c1: Counters, key: str) -> float:
        return float(c1.face[key] - c0.face[key]) / (c1.at - c0.at)

    dec1, dec3 = per_s(a0, a1, "frames_decoded"), per_s(b0, b1, "frames_decoded")
    det1, det3 = per_s(a0, a1, "detections"), per_s(b0, b1, "detections")
    published3 = b1.face["frames_processed"] - b0.face["frames_processed"]
    text = (f"decoded/s {dec1:.1f} -> {dec3:.1f}, detections/s {det1:.1f} -> {det3:.1f}; inferences "
            f"{a1.inferences - a0.inferences:.0f} / {b1.inferences - b0.inferences:.0f} for "
            f"{a1.detections - a0.detections} / {b1.detections - b0.detections} camera detections; frames per "
            f"viewer {got1} / {got3} of {published3} anonymized")
    print(f"1 -> 3 viewers: {text}")
    assert a1.face["viewers"] == 1 and b1.face["viewers"] == 3 and r["health_viewers"] == 3, \
        (a1.face, b1.face, r["health_viewers"])
    assert a0.face["connects"] == b1.face["connects"], f"viewers made the service pull the camera again: {text}"
    # The clip plays at 30 fps: one decode per camera frame, with one viewer or three.
    assert 22 <= dec1 <= 38 and 22 <= dec3 <= 38 and abs(dec3 - dec1) <= 0.2 * dec1, text
    for c0, c1 in ((a0, a1), (b0, b1)):
        # At most one detection per decoded frame ...
        assert c1.face["detections"] - c0.face["detections"] <= c1.face["frames_decoded"] - c0.face["frames_decoded"] \
            + 1, text
        # ... and the detector runs for nothing else (not once per viewer).
        assert c1.inferences - c0.inferences <= c1.detections - c0.detections + 2, text
    assert det3 > 0, text
    # Each viewer gets the same anonymized frames: one detection serves all three (frames may be skipped when the
    # machine is busy, never made per viewer: that would leave each viewer a third of them).
    assert min(got3) >= 0.6 * published3, text


def test_snapshots_and_cameras_from_a_config_file(camera_up: ServerProcess, ns_loop: NamespaceLoop, detector: Any,
                                                  artifacts_dir: Path) -> None:
    """GET /cameras/NAME/snapshot.jpg is a JPEG of the latest anonymized frame (no face visible); an unknown
    camera is 404. The TOML file's cameras are all there with their own modes; on-demand ones start for a
    snapshot."""
    base = camera_up.base_url

    async def scenario() -> dict[str, Any]:
        listing = (await http("GET", f"{base}/cameras")).json()["cameras"]
        snaps = {name: await http_get_bytes(f"{base}/cameras/{name}/snapshot.jpg", 30)
                 for name in ("face", "lobby", "door", "nope")}
        lobby_after = await camera_status(base, "lobby")
        unknown_status = await http("GET", f"{base}/cameras/nope")
        return {"listing": listing, "snaps": snaps, "lobby_after": lobby_after, "unknown": unknown_status.status}

    r = ns_loop.run(scenario(), 90)
    by_name = {c["name"]: c for c in r["listing"]}
    assert set(by_name) == {"face", "gone", "missing", "lobby", "door", "switch"}, sorted(by_name)
    modes = {name: (c["mode"], c["always_on"]) for name, c in by_name.items()}
    assert modes == {"face": ("mosaic", True), "gone": ("solid", True), "missing": ("solid", True),
                     "lobby": ("blur", False), "door": ("solid", False), "switch": ("mosaic", True)}, modes
    assert by_name["lobby"]["state"] == "stopped" and by_name["door"]["state"] == "stopped", by_name

    pictures = {}
    for name in ("face", "lobby", "door"):
        status, headers, body = r["snaps"][name]
        assert status == 200, f"snapshot of {name}: {status} {body[:300]!r}"
        assert headers.get("Content-Type") == "image/jpeg", headers
        assert body[:3] == b"\xff\xd8\xff", f"snapshot of {name} is not a JPEG"
        picture = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None, f"snapshot of {name} does not decode"
        pictures[name] = np.asarray(picture, np.uint8)
    assert pictures["face"].shape == (512, 512, 3) and pictures["lobby"].shape == (512, 512, 3)
    assert pictures["door"].shape == (360, 640, 3), pictures["door"].shape
    problems = []
    for name, picture in pictures.items():
        problems += visible_faces(detector, [picture], artifacts_dir, f"snapshot-{name}")
    assert not problems, "faces visible in snapshots:\n" + "\n".join(problems)

    status, headers, body = r["snaps"]["nope"]
    assert status == 404 and headers.get("Content-Type", "").startswith("application/json"), (status, body[:200])
    assert r["unknown"] == 404
    assert r["lobby_after"]["state"] == "live" and r["lobby_after"]["viewers"] == 0, r["lobby_after"]


def test_killed_camera_reconnects_while_the_viewer_stays_connected(camera_up: ServerProcess, rtsp: RtspServer,
                                                                  ns_loop: NamespaceLoop, detector: Any,
                                                                  artifacts_dir: Path) -> None:
    """SIGKILL the RTSP server mid-stream: the camera shows 'reconnecting' with an error, the viewer's connection
    stays up, and after the server is back on the same port the picture resumes within a few seconds."""
    base = camera_up.base_url

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        viewer = WhepViewer(base, "face", sample_every_s=0.25, max_samples=200)
        try:
            assert (await viewer.connect()).status == 201
            await viewer.wait_first_frame()
            await asyncio.sleep(1.0)
            before = await camera_status(base, "face")
            killed = time.monotonic()
            await loop.run_in_executor(None, rtsp.kill)
            down, noticed_s = await wait_status(base, "face", lambda s: s["state"] == "reconnecting", 5,
                                                "reconnecting")
            await asyncio.sleep(1.5)  # the camera stays away a while
            state_in_outage = viewer.pc.connectionState
            restarted = time.monotonic()
            await loop.run_in_executor(None, rtsp.start)
            resumed = await viewer.wait_frame_after(restarted + 0.05, 15)
            up, _ = await wait_status(base, "face", is_live, 10, "live again")
            await asyncio.sleep(1.0)
            return {"before": before, "down": down, "noticed_s": noticed_s, "state_in_outage": state_in_outage,
                    "states": list(viewer.states), "resume_s": resumed - restarted, "up": up,
                    "outage_frames": viewer.frames_between(killed + 0.5, restarted),
                    "resumed_samples": [f for t, f in viewer.samples if t >= resumed][:6],
                    "state_after": viewer.pc.connectionState}
        finally:
            await viewer.close()

    r = ns_loop.run(scenario(), 90)
    print(f"killed: noticed after {r['noticed_s']:.1f} s ({r['down']['error']}); frames resumed "
          f"{r['resume_s']:.1f} s after the restart; viewer states {r['states']}")
    assert r["down"]["error"], f"no error shown while reconnecting: {r['down']}"
    assert r["noticed_s"] <= 3.0, f"the dead camera was noticed only after {r['noticed_s']:.1f} s"
    assert r["state_in_outage"] == "connected" and r["state_after"] == "connected", r["states"]
    assert not {"disconnected", "failed", "closed"} & set(r["states"]), r["states"]
    assert r["resume_s"] <= 6.0, f"frames resumed {r['resume_s']:.1f} s after the camera came back"
    assert r["up"]["connects"] == r["before"]["connects"] + 1, (r["before"], r["up"])
    assert r["resumed_samples"], "no frame kept after the picture resumed"
    problems = visible_faces(detector, r["resumed_samples"], artifacts_dir, "after-reconnect")
    assert not problems, "faces visible after the reconnect:\n" + "\n".join(problems)


def test_hung_camera_is_noticed_by_the_read_timeout(camera_up: ServerProcess, rtsp: RtspServer,
                                                   ns_loop: NamespaceLoop) -> None:
    """SIGSTOP the RTSP server: its connection stays open but nothing arrives; after --rtsp-timeout the camera
    shows 'reconnecting' with a timeout error, and it is live again once the server runs again (SIGCONT)."""
    base = camera_up.base_url
    rtsp.pause()
    try:
        down, noticed_s = ns_loop.run(wait_status(base, "face", lambda s: s["state"] != "live",
                                                  RTSP_TIMEOUT_S + 8, "reconnecting"))
    finally:
        rtsp.resume()
    print(f"hung: noticed after {noticed_s:.1f} s ({down['error']})")
    assert down["state"] == "reconnecting", down
    assert "timeout" in (down["error"] or "").lower(), down
    assert noticed_s <= RTSP_TIMEOUT_S + 1.5, f"a hung camera was noticed after {noticed_s:.1f} s " \
                                              f"(--rtsp-timeout {RTSP_TIMEOUT_S:g})"
    up, _ = ns_loop.run(wait_status(base, "face", is_live, 15, "live again"))
    assert up["connects"] > down["connects"], (down, up)


def test_serve_refuses_a_camera_url_that_is_not_rtsp() -> None:
    result = serve_error("--camera", "x=http://127.0.0.1:9/video")
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("error:") and "rtsp://" in lines[0] and "x" in lines[0], lines


def test_serve_refuses_a_malformed_config_file(tmp_path: Path) -> None:
    config = tmp_path / "cameras.toml"
    config.write_text('[[camera]]\nname = "lobby"\nurl = "rtsp://127.0.0.1:1/x\n')  # unterminated string
    result = serve_error("--config", str(config))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("error:") and str(config) in lines[0] and "TOML" in lines[0], lines


def test_a_camera_restarted_while_it_is_stopping_keeps_pulling() -> None:
    """A viewer that comes back while the camera is still stopping (its last pull stuck opening a camera that
    does not answer) must get a running camera, not one whose reader quietly ended."""
    from streamer.sources.rtsp import RtspOptions, RtspReader

    with socket.socket() as hung:  # accepts TCP connections (the kernel does), never says a word
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"rtsp://127.0.0.1:{hung.getsockname()[1]}/stream"
        reader = RtspReader("hung", url, lambda frame: None, RtspOptions(open_timeout_s=1.0))
        try:
            reader.start()
            time.sleep(0.3)  # now inside av.open, waiting for an answer
            reader.stop()  # the last viewer left ...
            reader.start()  # ... and a new one came before the stuck open gave up
            time.sleep(2.0)  # the first pull's open has timed out by now
            assert reader.running, "the camera's reader ended although the camera was started again"
            assert reader.state != "stopped", reader.state
        finally:
            reader.stop(5.0)
        assert not reader.running
