"""Detection on a real NVIDIA Triton Inference Server (``--detector triton://HOST:PORT/MODEL``).

The server is the ``tritonserver`` binary of the nvidia-pytriton wheel (testkit/triton.py), serving the model
repository that ``python -m models.triton_repo`` writes; that wheel has no onnxruntime backend, so the repository's
model.onnx runs in ONNX Runtime behind Triton's Python backend, and all the rest is Triton's own (gRPC, the dynamic
batcher configured by config.pbtxt, health, metrics). Triton and the services under test run in the run's network
namespace (testkit/netns.py), the services as ``python -m streamer`` processes.

What a user would notice, judged against ground truth by the judges of tests/test_live_leaks.py (pixels, identity,
the in-process detector): the same faces as in process; no face leaves a file or a live session; Triton killed in
the middle of a stream -> every frame hidden whole, counted, /healthz not ready and saying why, then detection
again by itself when Triton is back; two service processes sharing one Triton get their frames batched together.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import REPO_ROOT, read_bgr, require_testdata
from test_live_leaks import IDENTITY_EVERY, SECONDS, WEBCAM, assert_no_leak, judge_enough, judged, play
from webrtc_support import LiveClient, ServerProcess, http

from testkit.certs import Authority
from testkit.judges import DetectorJudge, IdentityJudge, PixelJudge
from testkit.metrics import unlabelled_samples
from testkit.netns import NamespaceLoop, NetNamespace
from testkit.triton import TritonProcess, model_repository
from testkit.truth import TruthClip, entering_faces, hard_cuts, switching_sizes, virtual_camera
from testkit.wire import TruthTrack

PHOTOS = ("2008_002470.jpg", "facenet_multiface.jpg")
pytestmark = pytest.mark.skipif(not Path("/usr/bin/python3").exists(),
                                reason="the test Triton server runs under Debian's /usr/bin/python3 (not found)")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_repository(tmp_path_factory.mktemp("triton") / "models")


@pytest.fixture(scope="module")
def triton(netns: NetNamespace, repository: Path, artifacts_dir: Path) -> Iterator[TritonProcess]:
    require_testdata("images")
    server = TritonProcess(repository, ns=netns, log_path=artifacts_dir / "triton.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(netns: NetNamespace, ns_loop: NamespaceLoop, triton: TritonProcess,
            artifacts_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(netns, ns_loop, ["--detector", triton.url],
                        log_path=artifacts_dir / "triton-service.log").start()
    try:
        yield srv
    finally:
        srv.stop()


def in_namespace(netns: NetNamespace, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*netns.exec_prefix(), sys.executable, "-m", "streamer", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


async def until(check: Callable[[], Awaitable[bool]], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {limit_s:.0f} s")
        await asyncio.sleep(0.2)


def test_detect_through_triton_finds_the_faces_the_in_process_detector_finds(
        netns: NetNamespace, triton: TritonProcess) -> None:
    """The repository for CPU instances holds the int8 weights, as the in-process detector runs on the CPU."""
    from models import load_detector

    detector = load_detector("cpu", precision="int8")
    photos = [require_testdata("images", name) for name in PHOTOS]
    run = in_namespace(netns, "detect", "--json", "--detector", triton.url, *map(str, photos))
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["provider"] for r in records] == ["triton:KIND_CPU"] * len(photos)
    for photo, record in zip(photos, records, strict=True):
        ours = detector.detect(read_bgr(photo))
        remote = np.asarray([f["box"] for f in record["faces"]], np.float32).reshape(-1, 4)
        assert len(remote) == len(ours) >= 1, (photo.name, len(remote), len(ours))
        assert np.abs(remote - np.round(ours.xywh(), 1)).max() <= 0.11, photo.name  # rounded to 0.1 px in JSON


def test_detector_url_and_flags_are_checked_before_anything_runs(netns: NetNamespace, triton: TritonProcess,
                                                                 tmp_path: Path) -> None:
    photo = str(require_testdata("images", PHOTOS[0]))
    run = in_namespace(netns, "detect", "--detector", "http://127.0.0.1:1/centerface", photo)
    assert run.returncode != 0 and "triton://HOST:PORT/MODEL" in run.stderr, run.stderr[-500:]
    run = in_namespace(netns, "detect", "--detector", triton.url, "--precision", "int8", photo)
    assert run.returncode != 0 and "--precision cannot be used with --detector" in run.stderr, run.stderr[-500:]
    run = in_namespace(netns, "detect", "--detector", triton.url.replace("centerface", "nosuchmodel"), photo)
    assert run.returncode != 0 and "no ready model 'nosuchmodel'" in run.stderr, run.stderr[-500:]
    run = in_namespace(netns, "detect", "--detector", triton.url, "--require-gpu", photo)
    assert run.returncode != 0 and "runs on triton:KIND_CPU, not on a GPU" in run.stderr, run.stderr[-500:]


@pytest.mark.parametrize("fault", ["nan", "shape"])
def test_a_triton_answering_nonsense_hides_every_frame_whole(
        netns: NetNamespace, ns_loop: NamespaceLoop, service: ServerProcess, triton: TritonProcess, detector: Any,
        tmp_path: Path, artifacts_dir: Path, fault: str) -> None:
    """NaN scores would read as "nobody here", maps of another size would be decoded at the wrong places: both
    are refused. A live session's frames all leave hidden whole; the CLI refuses to start on such a server."""
    photo = require_testdata("images", PHOTOS[0])
    clip = hard_cuts(3.0, size=WEBCAM, seed=5)
    triton.fault(fault)
    try:
        result, track, state = ns_loop.run(play(service.base_url, clip), 120)
        run = in_namespace(netns, "file", str(photo), str(tmp_path / "out.png"), "--detector", triton.url,
                           "--no-progress")
    finally:
        triton.fault(None)
    assert state["frames_out"] >= 10 and state["frames_hidden_whole"] == state["frames_out"], state
    assert state["detector_errors"] >= 1, state
    report = judged(result, track, clip, detector)
    assert report.ok, report.describe()
    assert run.returncode == 2 and "error: Triton model 'centerface' answered maps" in run.stderr, run.stderr[-800:]
    assert not (tmp_path / "out.png").exists()


def test_tls_to_triton_checks_the_server_and_shows_a_client_certificate(
        repository: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    """Raw frames cross the network to Triton: with --detector-ca they go over TLS, to a server whose certificate
    that CA signed, and a server asking for a client certificate gets --detector-cert. Anything else is refused
    before a frame is sent."""
    ca, other = Authority("test CA"), Authority("another CA")
    ca_pem, other_pem = ca.write(tmp_path / "ca.pem"), other.write(tmp_path / "other.pem")
    server_cert, server_key = ca.issue(tmp_path / "server")
    client_cert, client_key = ca.issue(tmp_path / "client", client=True)
    stranger_cert, stranger_key = other.issue(tmp_path / "stranger", client=True)
    photo = str(require_testdata("images", PHOTOS[0]))
    with TritonProcess(repository, tls=(server_cert, server_key, ca_pem),
                       log_path=artifacts_dir / "triton-tls.log") as triton:

        def detect(*tls: Path) -> subprocess.CompletedProcess[str]:
            names = ("--detector-ca", "--detector-cert", "--detector-key")
            flags = [str(x) for pair in zip(names, tls, strict=False) for x in pair]
            return subprocess.run([sys.executable, "-m", "streamer", "detect", "--json", "--detector", triton.url,
                                   *flags, photo], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

        run = detect(ca_pem, client_cert, client_key)
        assert run.returncode == 0, run.stderr[-1500:]
        record = json.loads(run.stdout)
        assert record["provider"] == "triton:KIND_CPU" and len(record["faces"]) >= 1, record
        for refused in (detect(), detect(other_pem, client_cert, client_key), detect(ca_pem),
                        detect(ca_pem, stranger_cert, stranger_key)):
            assert refused.returncode == 2 and "error: Triton at 127.0.0.1:" in refused.stderr, \
                refused.stderr[-1000:]
    bad = subprocess.run([sys.executable, "-m", "streamer", "detect", "--detector", triton.url, "--detector-cert",
                          str(client_cert), "--detector-key", str(client_key), photo], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "need --detector-ca" in bad.stderr, bad.stderr[-500:]


def write_clip(clip: TruthClip, path: Path) -> None:
    """The truth clip as a near-lossless H.264 file, every frame kept."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(clip.fps).limit_denominator(1000))
        stream.width, stream.height = clip.frame(0).size
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "12", "preset": "veryfast", "bf": "0"}
        for truth in clip:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(truth.image), format="bgr24")))
        out.mux(stream.encode(None))


def test_a_file_through_triton_leaks_no_face(netns: NetNamespace, triton: TritonProcess, detector: Any,
                                             tmp_path: Path, artifacts_dir: Path) -> None:
    clip = hard_cuts(SECONDS / 2, size=WEBCAM, seed=7)  # every frame is judged: half the live tests' length
    source, output = tmp_path / "cuts.mp4", tmp_path / "cuts-hidden.mp4"
    write_clip(clip, source)
    run = in_namespace(netns, "file", str(source), str(output), "--detector", triton.url, "--no-progress")
    assert run.returncode == 0, run.stderr[-2000:]
    with av.open(str(output)) as container:
        frames = [np.asarray(f.to_ndarray(format="bgr24"), np.uint8) for f in container.decode(video=0)]
    assert len(frames) == len(clip), (len(frames), len(clip))
    report = judge_enough(zip(clip, frames, strict=True),
                          [PixelJudge(), IdentityJudge(clip.reference), DetectorJudge(detector)], IDENTITY_EVERY)
    assert_no_leak(report, artifacts_dir, "triton-file")


def test_a_live_session_through_triton_leaks_no_face(service: ServerProcess, ns_loop: NamespaceLoop, detector: Any,
                                                     artifacts_dir: Path) -> None:
    """640x480 <-> 1280x720 every 2 s: each size is its own input shape on Triton. (Hard cuts go through Triton in
    the outage and replica tests below.)"""
    clip = switching_sizes(SECONDS)
    result, track, state = ns_loop.run(play(service.base_url, clip), 120)
    assert state["provider"] == "triton:KIND_CPU", state
    assert state["frames_hidden_whole"] < state["frames_out"] / 2, state  # detected, not failing closed
    assert_no_leak(judged(result, track, clip, detector), artifacts_dir, f"triton-live-{clip.name}")


def test_triton_killed_mid_stream_hides_frames_whole_says_why_and_recovers_by_itself(
        service: ServerProcess, triton: TritonProcess, ns_loop: NamespaceLoop, detector: Any,
        artifacts_dir: Path) -> None:
    """One live session throughout: Triton is SIGKILLed once frames flow, and started again (same port) once
    /healthz has said why it is not ready; the session never ends, and no face leaves at any point."""
    # Longer than the test (it stops sending when done), with a cut every second; at 15 frames/s, as many
    # webcams send: every frame that comes back is judged, and judging is the longest part of the test.
    clip = virtual_camera(seconds=90.0, fps=15.0, size=WEBCAM, cut_every_s=1.0, seed=11, name="cuts_15fps")
    base = service.base_url

    async def state(client: LiveClient) -> dict[str, Any]:
        answer = await http("GET", f"{base}/sessions/{client.session_id}")
        assert answer.status == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    async def scenario() -> tuple[Any, TruthTrack, dict[str, Any]]:
        out: dict[str, Any] = {}
        async with LiveClient(base, clip) as client:
            answer = await client.connect()
            assert answer.status == 200, answer.text
            await client.wait_connected()
            await until(lambda: _count(client, 20), 60, "20 frames back before the outage")
            healthy = await http("GET", f"{base}/healthz")
            assert healthy.status == 200, healthy.text
            out["before"] = await state(client)

            await asyncio.get_running_loop().run_in_executor(None, triton.kill)
            killed_at = len(client.received)

            async def says_why() -> bool:
                answer = await http("GET", f"{base}/healthz")
                out["down"] = (answer.status, answer.json())
                return answer.status == 503
            await until(says_why, 30, "/healthz not ready after Triton was killed")

            async def hidden_whole() -> bool:
                out["outage"] = await state(client)
                return bool(out["outage"]["frames_hidden_whole"] - out["before"]["frames_hidden_whole"] >= 15
                            and len(client.received) - killed_at >= 15)
            await until(hidden_whole, 60, "15 frames hidden whole during the outage")
            metrics = unlabelled_samples((await http("GET", f"{base}/metrics")).text)
            out["metrics"] = metrics

            await asyncio.get_running_loop().run_in_executor(None, triton.start)

            async def ready_again() -> bool:
                return (await http("GET", f"{base}/healthz")).status == 200
            await until(ready_again, 60, "/healthz ready again after Triton came back")
            out["back"] = await state(client)

            async def detecting() -> bool:
                out["after"] = await state(client)
                return bool(out["after"]["frames_out"] - out["back"]["frames_out"] >= 30)
            await until(detecting, 90, "30 frames out after Triton came back")
            result = client.snapshot()
            assert isinstance(client.track, TruthTrack)
            return result, client.track, out

    result, track, out = ns_loop.run(scenario(), 420)
    status, body = out["down"]
    assert status == 503 and body["ready"] is False and body["status"] == "unavailable", body
    assert "Triton at 127.0.0.1:" in body["error"], body
    assert out["outage"]["detector_errors"] > out["before"]["detector_errors"], out
    assert out["metrics"]["streamer_frames_hidden_whole_total"] >= 15, out["metrics"]
    recovered = {k: out["after"][k] - out["back"][k] for k in ("frames_out", "frames_hidden_whole")}
    assert recovered["frames_hidden_whole"] < recovered["frames_out"] / 2, (recovered, out)
    assert out["after"]["state"] == "connected", out["after"]
    assert_no_leak(judged(result, track, clip, detector), artifacts_dir, "triton-outage")


async def _count(client: LiveClient, frames: int) -> bool:
    return len(client.received) >= frames


def test_two_service_processes_sharing_one_triton_are_batched_together(
        netns: NetNamespace, ns_loop: NamespaceLoop, tmp_path: Path, detector: Any, artifacts_dir: Path) -> None:
    """Each service keeps one request in flight (--inference-threads 1), so a batch of two can only hold frames
    of both; Triton's batcher waits up to 100 ms for a second request (one model instance, preferred batch 2)."""
    repo = model_repository(tmp_path / "models", "--instances", "1", "--preferred-batch-sizes", "2",
                            "--max-queue-delay-us", "100000")
    with TritonProcess(repo, ns=netns, log_path=artifacts_dir / "triton-batching.log") as triton:
        services: list[ServerProcess] = []
        try:
            for n in range(2):
                services.append(ServerProcess(netns, ns_loop, ["--detector", triton.url, "--inference-threads", "1"],
                                              log_path=artifacts_dir / f"triton-replica-{n}.log").start())
            alone = entering_faces(4.0, size=WEBCAM, seed=2)
            ns_loop.run(play(services[0].base_url, alone), 120)
            inferences, executions = triton.batch_counts()
            assert inferences >= 20 and inferences == executions, (inferences, executions)  # one alone: never

            clips = [entering_faces(SECONDS, size=WEBCAM, seed=3), hard_cuts(SECONDS, size=WEBCAM, seed=4)]

            async def both() -> list[Any]:
                return list(await asyncio.gather(*(play(s.base_url, c) for s, c in zip(services, clips,
                                                                                         strict=True))))
            runs = ns_loop.run(both(), 180)
            together = triton.batch_counts()
            shared = (together[0] - inferences, together[1] - executions)
            assert shared[0] >= 40 and shared[0] > shared[1], f"(inferences, executions) together: {shared}"
            for n, (clip, (result, track, _)) in enumerate(zip(clips, runs, strict=True)):
                assert_no_leak(judged(result, track, clip, detector), artifacts_dir, f"triton-replica-{n}")
        finally:
            for srv in services:
                srv.stop()
