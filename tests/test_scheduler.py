"""The live frame scheduler that webcam sessions and cameras share, with the real detector and real photos: every
frame that goes out was hidden by a detection made on it (whatever its size), or hidden whole; the newest frame
wins; stop is clean."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from conftest import read_bgr, require_testdata

from models import load_detector
from models.centerface import CenterFaceDetector
from models.evaluate import load_truth
from streamer.detection_service import BatchPolicy, DetectionService
from streamer.processor import FrameProcessor
from streamer.scheduler import HiddenFrame, LiveScheduler

U8 = npt.NDArray[np.uint8]
TIME_BASE = Fraction(1, 90000)
FPS = 30


class Published:
    """What the scheduler hands on, with a condition to wait for counts (never for wall-clock guesses)."""

    def __init__(self) -> None:
        self.frames: list[HiddenFrame] = []
        self._cond = threading.Condition()

    def __call__(self, frame: HiddenFrame) -> None:
        with self._cond:
            self.frames.append(frame)
            self._cond.notify_all()

    def wait_for(self, count: int, limit_s: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.frames) >= count, limit_s), \
                f"{len(self.frames)} of {count} frames published"


def video_frame(bgr: U8, index: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
    frame.pts, frame.time_base = round(index * 90000 / FPS), TIME_BASE
    return frame


def luma_corr(a: U8, b: U8, box: npt.NDArray[np.float32]) -> float:
    """Correlation of the luma of the inner 80% of ``box`` in two pictures of one size."""
    x1, y1, x2, y2 = box.tolist()
    mx, my = (x2 - x1) * 0.1, (y2 - y1) * 0.1
    xs, ys = slice(int(x1 + mx), int(x2 - mx)), slice(int(y1 + my), int(y2 - my))
    ga = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)[ys, xs].astype(np.float32).ravel()
    gb = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)[ys, xs].astype(np.float32).ravel()
    if ga.std() == 0 or gb.std() == 0:
        return 0.0
    return float(np.corrcoef(ga, gb)[0, 1])


class Scene:
    """An annotated photo at a given frame size, with its true face boxes scaled to it."""

    def __init__(self, folder: Path, name: str, size: tuple[int, int]) -> None:
        photo = read_bgr(folder / f"{name}.jpg")
        sx, sy = size[0] / photo.shape[1], size[1] / photo.shape[0]
        self.bgr = np.asarray(cv2.resize(photo, size, interpolation=cv2.INTER_LINEAR), np.uint8)
        self.boxes = load_truth(folder / f"{name}.json") * np.asarray([sx, sy, sx, sy], np.float32)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    folder = require_testdata("images")
    # Different people in each, at the two sizes a browser switches between.
    return [Scene(folder, "2008_002506", (640, 480)), Scene(folder, "2008_001322", (1280, 720)),
            Scene(folder, "2009_004587", (640, 480)), Scene(folder, "2008_002470", (1280, 720))]


@pytest.fixture
def service(detector: CenterFaceDetector) -> Iterator[DetectionService]:
    service = DetectionService(detector, deadline_s=30)
    yield service
    service.close()


def make(service: DetectionService, detector: Any, published: Published, name: str = "test") -> LiveScheduler:
    processor = FrameProcessor(detector, stream_id=name)
    processor.threshold, processor.upscale = 0.2, False
    return LiveScheduler(processor, service, published)


def test_every_frame_is_hidden_by_its_own_detection_through_cuts_and_size_changes(
        service: DetectionService, detector: CenterFaceDetector, scenes: list[Scene]) -> None:
    """Hard cuts between different people, each at another frame size: every face of every frame leaves hidden,
    each frame at its own size, each with one detection of its own."""
    published = Published()
    scheduler = make(service, detector, published)
    order = [i % len(scenes) for i in range(12)]
    try:
        for n, k in enumerate(order):
            scheduler.push(video_frame(scenes[k].bgr, n))
            published.wait_for(n + 1)  # one at a time: nothing is dropped, every frame is judged
    finally:
        scheduler.stop(join_s=10)
    assert not scheduler.running
    for n, (k, out) in enumerate(zip(order, published.frames, strict=True)):
        scene = scenes[k]
        assert out.bgr.shape == scene.bgr.shape, f"frame {n}: {out.bgr.shape} out for {scene.bgr.shape} in"
        assert not out.hidden_whole
        for box in scene.boxes:
            corr = luma_corr(scene.bgr, out.bgr, box)
            assert corr < 0.6, f"frame {n} ({scene.bgr.shape[1]}x{scene.bgr.shape[0]}): face {box} back, r={corr}"
        assert out.yuv is not None and out.yuv.shape == (scene.bgr.shape[0] * 3 // 2, scene.bgr.shape[1])
    c = scheduler.counters
    assert c.frames_in == c.frames_out == c.detections == len(order) and c.frames_dropped == 0
    assert [f.seq for f in published.frames] == list(range(1, len(order) + 1))


class _Controlled:
    """A real ONNX session whose runs can be held (a slow detector) or made to fail (a broken one)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a run has started (and may be held at the gate)
        self.fail = False
        self.runs = 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.gate.wait(60)
        self.runs += 1
        if self.fail:
            raise RuntimeError("inference failed (injected)")
        return self._real.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def controlled() -> Iterator[tuple[CenterFaceDetector, _Controlled]]:
    detector = load_detector("cpu")
    (session,) = detector.sessions.wrap(_Controlled)  # the CPU runs every shape in one session
    yield detector, session
    session.gate.set()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_newest_frame_wins_while_the_detector_is_busy(controlled: tuple[CenterFaceDetector, _Controlled],
                                                          scenes: list[Scene], workers: int) -> None:
    """Frames pushed while the stream's detections run replace each other: when the detector is free again the
    newest one goes next, and the ones in between are dropped and counted, never queued. A second frame of the
    stream goes to the detector at once only when it has a thread to spare (two inference threads, as on a
    2-core CPU); with one, it would only wait."""
    detector, session = controlled
    service = DetectionService(detector, deadline_s=60, batch=BatchPolicy(workers=workers))
    published = Published()
    scheduler = make(service, detector, published)
    try:
        session.gate.clear()  # the detector is stuck on the first frame ...
        scheduler.push(video_frame(scenes[0].bgr, 0))
        assert session.entered.wait(30)
        for n in range(1, 20):  # ... while 19 more arrive
            scheduler.push(video_frame(scenes[n % 2].bgr, n))
        session.gate.set()
        published.wait_for(workers + 1)
        time.sleep(0.2)  # nothing else may follow: there is nothing queued
    finally:
        scheduler.stop(join_s=10)
        service.close()
    pts = [f.pts or 0 for f in published.frames]
    assert len(pts) == workers + 1 and pts[0] == 0 and pts[-1] == round(19 * 90000 / FPS), pts
    assert pts == sorted(pts), pts
    c = scheduler.counters
    assert c.frames_in == 20 and c.frames_dropped == 19 - workers and c.frames_out == workers + 1


def test_a_failing_detector_hides_frames_whole_counts_them_and_recovers(
        controlled: tuple[CenterFaceDetector, _Controlled], scenes: list[Scene]) -> None:
    detector, session = controlled
    service = DetectionService(detector, deadline_s=60)
    published = Published()
    scheduler = make(service, detector, published)
    scene = scenes[0]
    try:
        session.fail = True
        for n in range(3):
            scheduler.push(video_frame(scene.bgr, n))
            published.wait_for(n + 1)
        session.fail = False
        scheduler.push(video_frame(scene.bgr, 3))
        published.wait_for(4)
    finally:
        scheduler.stop(join_s=10)
        service.close()
    for out in published.frames[:3]:
        assert out.hidden_whole
        assert all(luma_corr(scene.bgr, out.bgr, box) < 0.6 for box in scene.boxes)
    assert not published.frames[3].hidden_whole
    assert scheduler.counters.frames_hidden_whole == 3
    assert scheduler.processor.stats.detector_errors == 3
    assert scheduler.counters.detections == 1, "a failed detection is no detection (detections_per_s)"


def test_stop_is_safe_twice_and_nothing_is_published_after_it(
        controlled: tuple[CenterFaceDetector, _Controlled], scenes: list[Scene]) -> None:
    detector, session = controlled
    service = DetectionService(detector, deadline_s=60)
    published = Published()
    scheduler = make(service, detector, published)
    try:
        session.gate.clear()
        scheduler.push(video_frame(scenes[0].bgr, 0))  # in the detector when the stream stops
        assert session.entered.wait(30)
        scheduler.stop()
        scheduler.stop()
        scheduler.push(video_frame(scenes[0].bgr, 1))  # too late: ignored
        session.gate.set()
        scheduler.stop(join_s=10)
    finally:
        service.close()
    assert not scheduler.running and published.frames == []


def test_a_frame_whose_processing_raises_is_dropped_never_published(
        service: DetectionService, detector: CenterFaceDetector, scenes: list[Scene],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything that goes wrong outside the fail-closed paths (here the hand-over to the detector itself) costs
    the frame, never its privacy: it is not published, and the next frame goes out hidden."""
    published = Published()
    scheduler = make(service, detector, published)
    real = service.submit_live
    calls = []

    def broken(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("injected: the hand-over failed")
        return real(*args)

    monkeypatch.setattr(service, "submit_live", broken)
    try:
        scheduler.push(video_frame(scenes[0].bgr, 0))
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.push(video_frame(scenes[0].bgr, 1))
        published.wait_for(1)
    finally:
        scheduler.stop(join_s=10)
    assert [f.pts for f in published.frames] == [round(90000 / FPS)]
    assert all(luma_corr(scenes[0].bgr, published.frames[0].bgr, box) < 0.6 for box in scenes[0].boxes)
