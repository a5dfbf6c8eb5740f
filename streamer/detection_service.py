"""The one detector of the process, shared by every stream: inference on its own threads, live work first,
batched across streams where the device gains from it.

One model copy serves all live sessions, cameras and upload jobs. Inference runs on its own threads (never on the
event loop), taking the most urgent requests first: live sessions and cameras before upload jobs, so a long job
never makes a live stream wait for more than the inferences already running. Each live stream has at most
``scheduler.IN_FLIGHT`` frames in flight (its LiveScheduler waits for their results in order; latest frame wins
upstream), so a slow detector shows up as dropped frames or fail-closed frames, never as a queue.

Batching: on a GPU one inference of 16 frames costs little more than one of a single frame, so the thread gathers
the frames of different streams into one batch, waiting at most ``BatchPolicy.wait_s`` for streams that are known
to be active and have not sent theirs yet. On a CPU a batch only makes every frame in it wait for the others, so
the default there is one frame per inference (latency first), and instead one inference thread per core, each
running a single-threaded inference: two frames (of one stream or of two) are detected at once, with no
per-layer synchronisation between cores.

Device failure: when inferences on CUDA keep failing (a lost device, an illegal memory access that poisons the
context), the service reloads the model on the CPU and carries on, loudly, or, with ``require_gpu``, stops
detecting: every live frame then fails closed and ``failed`` says why, so the service reports itself unhealthy
instead of quietly serving on the wrong device.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from models import DetectorConfig, FaceDetections
from models.centerface import CenterFace, CenterFaceDetector, DetectRequest
from models.coverage import DetectSize
from models.runtime import CUDA
from models.triton import SCHEME as TRITON

from .processor import FrameProcessor

logger = logging.getLogger(__name__)

LIVE = 0  # webcam sessions and cameras
BACKGROUND = 1  # upload jobs
ACTIVE_WINDOW_S = 1.0  # a stream that asked for a detection this recently is expected to ask again
DEVICE_FAILURES = 3  # consecutive failed inferences on CUDA that count as a failed device
# Requests a process keeps in flight to a Triton server: the server's dynamic batcher merges them (with those of
# every other replica) into shared inferences, so a few concurrent requests keep it fed; the threads only wait.
TRITON_REQUESTS_IN_FLIGHT = 8


@dataclass(frozen=True)
class BatchPolicy:
    """How many frames one inference may take, and how long the first of them may wait for the rest."""

    max_batch: int = 1
    wait_s: float = 0.0
    workers: int = 1  # inference threads (each takes its own batch)

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= 256:
            raise ValueError(f"max_batch must be within 1..256, not {self.max_batch}")
        if not 0.0 <= self.wait_s <= 0.1:
            raise ValueError(f"batch wait must be within 0..100 ms, not {self.wait_s * 1000:g} ms")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be within 1..64, not {self.workers}")

    @classmethod
    def for_provider(cls, provider: str, max_batch: int | None = None, wait_ms: float | None = None,
                     workers: int | None = None) -> BatchPolicy:
        """Defaults by device: on CUDA one inference thread taking batches of up to 32 with a 3 ms wait; on a
        Triton server one frame per request and TRITON_REQUESTS_IN_FLIGHT requests at once (the server batches);
        elsewhere one frame per inference and one inference thread per core."""
        if provider == TRITON or provider.startswith(f"{TRITON}:"):  # "triton" until the server has answered
            return cls(max_batch or 1, (wait_ms or 0.0) / 1000, workers or TRITON_REQUESTS_IN_FLIGHT)
        gpu = provider == CUDA
        return cls(max_batch if max_batch is not None else (32 if gpu else 1),
                   (wait_ms if wait_ms is not None else (3.0 if gpu else 0.0)) / 1000,
                   workers if workers is not None else (1 if gpu else cpu_inference_workers(0)))


def cpu_inference_workers(threads: int) -> int:
    """Parallel inferences on the CPU: one single-threaded inference per core beats one inference spread over all
    cores (no per-layer synchronisation); ``threads`` N per inference gives cores // N of them (0: one per core)."""
    cores = os.cpu_count() or 1
    return max(1, cores // threads) if threads else cores


@dataclass
class _Detect:
    request: DetectRequest
    future: Future[tuple[FaceDetections, float]]
    stream: str


class DetectionService:
    def __init__(self, detector: CenterFace, deadline_s: float = 1.0,
                 on_inference: Callable[[float], None] | None = None,
                 on_error: Callable[[], None] | None = None, *,
                 batch: BatchPolicy | None = None, on_batch: Callable[[int], None] | None = None,
                 require_gpu: bool = False, on_fallback: Callable[[str], None] | None = None) -> None:
        self.detector = detector
        self.deadline_s = deadline_s
        self.batch = batch or BatchPolicy.for_provider(detector.provider)
        self.require_gpu = require_gpu
        self.failed: str | None = None  # why the service no longer detects at all (a GPU lost with require_gpu)
        self.fallback: str | None = None  # why it moved from CUDA to the CPU
        self._on_inference = on_inference  # seconds per inference run (one batch), for a histogram and busy time
        self._on_error = on_error
        self._on_batch = on_batch  # frames per inference run
        self._on_fallback = on_fallback
        self._queue: queue.PriorityQueue[tuple[int, int, _Detect | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._active: dict[str, float] = {}  # stream -> when it last asked for a live detection
        self._active_lock = threading.Lock()
        self._device_failures = 0
        self._device_lock = threading.Lock()
        self._running = 0  # inference threads inside an inference now
        self._threads = [threading.Thread(target=self._run, name=f"detect-{n}", daemon=True)
                         for n in range(self.batch.workers)]
        for thread in self._threads:
            thread.start()

    @property
    def provider(self) -> str:
        return self.detector.provider

    def unavailable(self) -> str | None:
        """Why the detector cannot detect now (a Triton server down or too slow), or None; blocking up to a
        second when it has to ask the server."""
        return self.detector.unavailable()

    def idle(self) -> bool:
        """Whether an inference thread would start a request submitted now at once (nothing queued, one free):
        a stream may then have a second frame detected while its first one is."""
        with self._active_lock:
            return self._running + self._queue.qsize() < self.batch.workers

    # -- the inference thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            priority, _, item = self._queue.get()
            if item is None:
                return
            if not item.future.set_running_or_notify_cancel():
                continue
            batch = [item]
            if self.batch.max_batch > 1:
                self._gather(batch, priority)
            with self._active_lock:
                self._running += 1
            try:
                self._infer(batch)
            finally:
                with self._active_lock:
                    self._running -= 1

    def _gather(self, batch: list[_Detect], priority: int) -> None:
        """Add queued frames of the same priority to ``batch``; for live frames, wait up to the policy's wait for
        streams known to be active that have not sent theirs yet."""
        wait = self.batch.wait_s if priority == LIVE else 0.0
        deadline = time.perf_counter() + wait
        expected = self._active_streams() if priority == LIVE else self.batch.max_batch
        while len(batch) < self.batch.max_batch:
            timeout = deadline - time.perf_counter()
            if len(batch) >= expected:
                timeout = 0.0  # everyone active is in: take only what is already queued
            try:
                entry = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            item = entry[2]
            if item is None or entry[0] != priority:
                self._queue.put(entry)  # the sentinel or other-priority work: it goes first next time
                return
            if item.future.set_running_or_notify_cancel():
                batch.append(item)

    def _active_streams(self) -> int:
        now = time.monotonic()
        with self._active_lock:
            for stream in [s for s, t in self._active.items() if now - t > ACTIVE_WINDOW_S]:
                del self._active[stream]
            return max(1, len(self._active))

    def _infer(self, batch: list[_Detect]) -> None:
        if self.failed is not None:
            error = RuntimeError(self.failed)
            for item in batch:
                item.future.set_exception(error)
            return
        started = time.perf_counter()
        try:
            results = self.detector.detect_many([item.request for item in batch])
        except BaseException as exc:
            try:
                self._device_trouble(exc)  # first, so whoever sees this failure sees the service's new state
            except Exception:
                logger.exception("[detector] handling a device failure failed")
            for item in batch:
                item.future.set_exception(exc)
            return
        self._device_failures = 0
        elapsed = time.perf_counter() - started
        if len(results) != len(batch):
            error = RuntimeError(f"the detector returned {len(results)} result(s) for {len(batch)} frame(s)")
            for item in batch:
                item.future.set_exception(error)
            return
        for item, result in zip(batch, results, strict=True):
            item.future.set_result((result, elapsed * 1000))
        try:
            if self._on_inference is not None:
                self._on_inference(elapsed)
            if self._on_batch is not None:
                self._on_batch(len(batch))
        except Exception:  # metrics must never take an inference thread down
            logger.exception("[detector] recording an inference failed")

    def _device_trouble(self, exc: BaseException) -> None:
        """After repeated failures on CUDA, move to the CPU, or (``require_gpu``) stop detecting."""
        if (self.detector.provider != CUDA or isinstance(exc, ValueError)
                or not isinstance(self.detector, CenterFaceDetector)):
            return  # a bad frame, or trouble the CPU would have too: each frame fails closed on its own
        with self._device_lock:
            self._device_failures += 1
            if self._device_failures != DEVICE_FAILURES:
                return
        reason = f"{DEVICE_FAILURES} inferences in a row failed on {CUDA}: {exc}"
        if self.require_gpu:
            self.failed = f"the GPU failed and --require-gpu forbids running on the CPU ({reason})"
            logger.critical("[detector] %s; every live frame is now hidden whole and /healthz reports the failure",
                            self.failed)
            if self._on_fallback is not None:
                self._on_fallback("refused")
            return
        logger.critical("[detector] %s; reloading the model on the CPU (much slower: expect fewer detections "
                        "per second and more dropped frames)", reason)
        try:
            # ONNX Runtime's own threads, since the inference threads were sized for the GPU.
            cpu = CenterFaceDetector(self.detector.model_path, "cpu", replace(self.detector.config, threads=0))
        except Exception as load_error:
            self.failed = f"the GPU failed ({reason}) and the CPU fallback did not load: {load_error}"
            logger.critical("[detector] %s", self.failed)
            return
        self.detector = cpu
        self.batch = BatchPolicy.for_provider(cpu.provider, workers=self.batch.workers)
        self.fallback = reason
        self._device_failures = 0
        logger.error("[detector] now running on %s after the GPU failed", cpu.provider)
        if self._on_fallback is not None:
            self._on_fallback(cpu.provider)

    # -- submitting work ---------------------------------------------------------------------------------------

    def _put(self, priority: int, item: _Detect) -> None:
        if self._closed:
            item.future.set_exception(RuntimeError("the detection service is closed"))
            return
        self._queue.put((priority, next(self._order), item))

    def submit_detect(self, priority: int, request: DetectRequest,
                      stream: str = "-") -> Future[tuple[FaceDetections, float]]:
        """Detect faces for ``request``; the future gives the detections and the inference time in ms (of the
        whole batch it ran in). Raises through the future when the detector fails."""
        future: Future[tuple[FaceDetections, float]] = Future()
        if priority == LIVE:
            with self._active_lock:
                self._active[stream] = time.monotonic()
        self._put(priority, _Detect(request, future, stream))
        return future

    def submit_live(self, processor: FrameProcessor, image: npt.NDArray[np.uint8], t: float) -> LiveDetection:
        """Start detecting a live stream's frame ``image`` (at media time ``t``); ``LiveDetection.result`` gives
        the detections. The image must not change until then."""
        future = self.submit_detect(LIVE, processor.detect_request(image), processor.stream_id)
        return LiveDetection(self, processor, t, future, time.perf_counter())

    def detect_live(self, processor: FrameProcessor,
                    image: npt.NDArray[np.uint8], t: float) -> tuple[FaceDetections | None, float]:
        """``submit_live`` and wait for the result."""
        return self.submit_live(processor, image, t).result()

    def _late(self, processor: FrameProcessor, started: float) -> tuple[None, float]:
        logger.warning("[%s] detection missed its %.0f ms deadline; failing closed", processor.stream_id,
                       self.deadline_s * 1000)
        with processor.stats._lock:
            processor.stats.detections_late += 1
        return None, (time.perf_counter() - started) * 1000

    def _failed(self, processor: FrameProcessor, t: float, exc: Exception) -> tuple[None, float]:
        if self._closed:
            return None, 0.0
        processor.detect_failed(t, exc)
        if self._on_error is not None:
            self._on_error()
        return None, 0.0

    def background_detector(self) -> BackgroundDetector:
        return BackgroundDetector(self)

    def close(self) -> None:
        """Stop taking work; queued requests fail, the running ones finish. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                _, _, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item.future.cancel()
        for _ in self._threads:
            self._queue.put((-1, -1, None))
        self.detector.close()  # a Triton channel; requests still running fail, and their frames fail closed


@dataclass(frozen=True)
class LiveDetection:
    """A live frame's detection in flight (``DetectionService.submit_live``)."""

    service: DetectionService
    processor: FrameProcessor
    t: float
    future: Future[tuple[FaceDetections, float]]
    submitted: float  # time.perf_counter()

    def remaining(self) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(0.0, self.service.deadline_s - (time.perf_counter() - self.submitted))

    def settled(self) -> bool:
        """Whether ``result`` would answer at once: the detection is back, failed, or late."""
        return self.future.done() or self.remaining() <= 0.0

    def result(self) -> tuple[FaceDetections | None, float]:
        """The detections made on the frame and the inference time, waiting until the deadline (counted from
        submission) at most; ``None`` when the detector failed, missed the deadline or the service closed (counted
        on the processor; the caller hides the frame whole). Blocking: call it from the stream's own thread.
        Never raises for detector trouble."""
        service, processor = self.service, self.processor
        try:
            detections, detect_ms = self.future.result(self.remaining())
        except FutureTimeout:
            self.future.cancel()  # still queued: it never runs; already running: its result is simply not used
            return service._late(processor, self.submitted)
        except CancelledError:
            return None, 0.0  # the service closed and cancelled the queued request
        except Exception as exc:
            return service._failed(processor, self.t, exc)
        return detections, detect_ms


class BackgroundDetector:
    """The shared detector as upload jobs see it: the same interface as a Detector, but every inference waits
    behind any live request (and, on a GPU, batches with other jobs' frames)."""

    def __init__(self, service: DetectionService) -> None:
        self._service = service
        self.config: DetectorConfig = service.detector.config

    @property
    def provider(self) -> str:
        return self._service.provider

    def detect(self, frame_bgr: npt.NDArray[np.uint8], threshold: float | None = None,
               detect_size: DetectSize | None = None) -> FaceDetections:
        return self.detect_batch([frame_bgr], threshold, detect_size)[0]

    def detect_batch(self, frames_bgr: Sequence[npt.NDArray[np.uint8]], threshold: float | None = None,
                     detect_size: DetectSize | None = None) -> list[FaceDetections]:
        futures = [self._service.submit_detect(BACKGROUND, DetectRequest(f, threshold, detect_size), "job")
                   for f in frames_bgr]
        return [future.result()[0] for future in futures]
