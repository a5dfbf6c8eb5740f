"""The one detector of the process, shared by every live stream: inference serialised on one thread.

One model copy serves all sessions. Inference runs on its own thread (never on the event loop) and one frame at a
time, so a burst from one stream cannot multiply memory or thread count; each stream has at most one frame in
flight (latest frame wins upstream), so a slow detector shows up as dropped frames, never as a queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import numpy.typing as npt

from models import FaceDetections
from models.centerface import CenterFaceDetector

from .processor import FrameProcessor

logger = logging.getLogger(__name__)


class DetectionService:
    def __init__(self, detector: CenterFaceDetector, deadline_s: float = 1.0,
                 on_inference: Callable[[float], None] | None = None,
                 on_error: Callable[[], None] | None = None) -> None:
        self.detector = detector
        self.deadline_s = deadline_s
        self._on_inference = on_inference  # seconds per inference, for a histogram
        self._on_error = on_error
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
        self._closed = False

    @property
    def provider(self) -> str:
        return self.detector.provider

    async def detect(self, processor: FrameProcessor, image: npt.NDArray[np.uint8],
                     t: float) -> tuple[FaceDetections | None, float]:
        """Detections for ``image``, or ``None`` when the detector failed or missed the deadline (the caller then
        fails closed). Never raises for detector trouble."""
        if self._closed:
            return None, 0.0
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        future = loop.run_in_executor(self._executor, processor.detect, image, t)
        try:
            detections, detect_ms = await asyncio.wait_for(future, self.deadline_s)
        except TimeoutError:
            # The inference still finishes on its thread; its result is simply not used.
            logger.warning("[%s] detection missed its %.0f ms deadline; failing closed", processor.stream_id,
                           self.deadline_s * 1000)
            with processor.stats._lock:
                processor.stats.detections_late += 1
            return None, (time.perf_counter() - started) * 1000
        self._report(detections, detect_ms)
        return detections, detect_ms

    def detect_blocking(self, processor: FrameProcessor, image: npt.NDArray[np.uint8],
                        t: float) -> tuple[FaceDetections | None, float]:
        """The same, for a camera's own processing thread: waits on the shared inference thread."""
        if self._closed:
            return None, 0.0
        started = time.perf_counter()
        try:
            detections, detect_ms = self._executor.submit(processor.detect, image, t).result(self.deadline_s)
        except FutureTimeout:
            logger.warning("[%s] detection missed its %.0f ms deadline; failing closed", processor.stream_id,
                           self.deadline_s * 1000)
            with processor.stats._lock:
                processor.stats.detections_late += 1
            return None, (time.perf_counter() - started) * 1000
        except RuntimeError:  # the executor was shut down under us
            return None, 0.0
        self._report(detections, detect_ms)
        return detections, detect_ms

    def _report(self, detections: FaceDetections | None, detect_ms: float) -> None:
        if detections is None:
            if self._on_error is not None:
                self._on_error()
        elif self._on_inference is not None:
            self._on_inference(detect_ms / 1000)

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
