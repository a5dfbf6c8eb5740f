"""The one detector of the process, shared by every stream: inference on one thread, live work first.

One model copy serves all live sessions, cameras and upload jobs. Inference runs on its own thread (never on the
event loop), one frame at a time, taking the most urgent request first: live sessions and cameras before upload
jobs, so a long job never makes a live stream wait for more than the one inference already running. Each live
stream has at most one frame in flight (latest frame wins upstream), so a slow detector shows up as dropped
frames or fail-closed frames, never as a queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import numpy.typing as npt

from models import DetectorConfig, FaceDetections
from models.centerface import CenterFaceDetector

from .processor import FrameProcessor

logger = logging.getLogger(__name__)

LIVE = 0  # webcam sessions and cameras
BACKGROUND = 1  # upload jobs


class DetectionService:
    def __init__(self, detector: CenterFaceDetector, deadline_s: float = 1.0,
                 on_inference: Callable[[float], None] | None = None,
                 on_error: Callable[[], None] | None = None) -> None:
        self.detector = detector
        self.deadline_s = deadline_s
        self._on_inference = on_inference  # seconds per inference, for a histogram
        self._on_error = on_error
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="detect", daemon=True)
        self._thread.start()

    @property
    def provider(self) -> str:
        return self.detector.provider

    def _run(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if self._closed:
            future.set_exception(RuntimeError("the detection service is closed"))
            return future
        self._queue.put((priority, next(self._order), (future, fn, args)))
        return future

    async def detect(self, processor: FrameProcessor, image: npt.NDArray[np.uint8],
                     t: float) -> tuple[FaceDetections | None, float]:
        """Detections for a live frame, or ``None`` when the detector failed or missed the deadline (the caller
        then fails closed). Never raises for detector trouble."""
        started = time.perf_counter()
        future = asyncio.wrap_future(self.submit(LIVE, processor.detect, image, t))
        try:
            detections, detect_ms = await asyncio.wait_for(future, self.deadline_s)
        except TimeoutError:
            return self._late(processor, started)
        except RuntimeError:  # closed under us
            return None, 0.0
        self._report(detections, detect_ms)
        return detections, detect_ms

    def submit_live(self, processor: FrameProcessor, image: npt.NDArray[np.uint8],
                    t: float) -> tuple[Future[Any], float]:
        """Start a live detection from a non-asyncio thread (a camera); collect it with ``collect``."""
        return self.submit(LIVE, processor.detect, image, t), time.perf_counter()

    def collect(self, processor: FrameProcessor, pending: tuple[Future[Any], float],
                block: bool = True) -> tuple[FaceDetections | None, float] | None:
        """The result of ``submit_live``: ``None`` while it runs (``block=False``), else detections (``None`` for
        a failure or a missed deadline) and the inference time."""
        future, started = pending
        if not block and not future.done():
            return None
        try:
            detections, detect_ms = future.result(max(0.0, self.deadline_s - (time.perf_counter() - started)))
        except FutureTimeout:
            future.cancel()
            return self._late(processor, started)
        except (RuntimeError, CancelledError):
            return None, 0.0
        self._report(detections, detect_ms)
        return detections, detect_ms

    def _late(self, processor: FrameProcessor, started: float) -> tuple[None, float]:
        # An inference already running still finishes on its thread; its result is simply not used.
        logger.warning("[%s] detection missed its %.0f ms deadline; failing closed", processor.stream_id,
                       self.deadline_s * 1000)
        with processor.stats._lock:
            processor.stats.detections_late += 1
        return None, (time.perf_counter() - started) * 1000

    def _report(self, detections: FaceDetections | None, detect_ms: float) -> None:
        if detections is None:
            if self._on_error is not None:
                self._on_error()
        elif self._on_inference is not None:
            self._on_inference(detect_ms / 1000)

    def background_detector(self) -> BackgroundDetector:
        return BackgroundDetector(self)

    def close(self) -> None:
        """Stop taking work; queued requests fail, the running one finishes. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                _, _, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        self._queue.put((-1, -1, None))


class BackgroundDetector:
    """The shared detector as upload jobs see it: the same interface as a Detector, but every inference waits
    behind any live request."""

    def __init__(self, service: DetectionService) -> None:
        self._service = service
        self.provider: str = service.detector.provider
        self.config: DetectorConfig = service.detector.config

    def detect(self, frame_bgr: npt.NDArray[np.uint8], threshold: float | None = None,
               detect_size: int | None = None) -> FaceDetections:
        result: FaceDetections = self._service.submit(BACKGROUND, self._service.detector.detect, frame_bgr,
                                                      threshold, detect_size).result()
        return result
