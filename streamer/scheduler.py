"""The live frame scheduler: the one place that decides what happens to a live frame, for webcam sessions and
cameras alike.

    producer (aiortc receiver, RTSP decoder) --push()--> [newest frame: one slot] --> the stream's worker thread:
        to BGR -> detect faces on this very frame (shared DetectionService; up to two frames in flight)
               -> in order: wait for its detection (deadline) -> hide its faces (plus the held masks of faces
                  the detector missed in it) or hide the frame whole -> I420 -> publish()

- **A frame leaves hidden by a detection made on that very frame, or hidden whole.** No detection is ever used for
  another frame in its place, so a cut, a face that just entered, or a new frame size is always hidden by masks
  made on that picture; the held masks of faces seen in the last moments (scaled to a new size) only add to them.
  When the detection fails, misses the deadline or the service is closing, the frame is hidden whole and counted
  (``frames_hidden_whole``; the reason in the processor's ``detector_errors`` / ``detections_late``).
- **Latest frame wins.** While the worker's frames are in flight, newer frames replace each other in the slot and
  each one replaced is counted as dropped. A stream whose frames come faster than the detector serves them gets
  fewer frames, never older ones and never a queue. Up to ``IN_FLIGHT`` frames of a stream are detected at once
  (on a CPU the detector runs one inference per core, so one stream can use both cores of a laptop), and they
  leave in order; detection of frame N+1 also overlaps the encoding of frame N, which the sinks (aiortc's
  encoders) do on their own threads.
- Only the worker touches the stream's tracker, so the held masks need no lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np
import numpy.typing as npt

from .anonymize import pad_boxes
from .detection_service import DetectionService, LiveDetection
from .processor import FrameProcessor

logger = logging.getLogger(__name__)

FPS_WINDOW_S = 2.0
OUTLINE_BGR = (0, 255, 255)
IN_FLIGHT = 2  # frames of one stream being detected at once, the second only while the detector has room


class RateMeter:
    """Events per second over the last few seconds. Safe to tick from one thread and read from another."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._prune(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(now)
            if len(self._times) < 2:
                return 0.0
            return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6)

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()


@dataclass
class StreamCounters:
    """What one live stream reports (a session's ``GET /sessions/{id}``, a camera's status). Each field has one
    writer: the producer counts arrivals and drops, the worker everything else."""

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0  # replaced by a newer frame before the worker took it (latest frame wins)
    frames_unsent: int = 0  # hidden, then replaced by a newer one before a slow encoder asked (webcams)
    frames_hidden_whole: int = 0
    detections: int = 0  # detections run (one per frame that went out)
    width: int = 0  # of the last frame out
    height: int = 0
    processing_ms: float = 0.0  # last frame: arrival to hidden copy ready (detection wait included)
    inference_ms: float = 0.0  # last frame's inference run
    detect_rate: RateMeter = field(default_factory=RateMeter)
    fps_in: RateMeter = field(default_factory=RateMeter)
    fps_out: RateMeter = field(default_factory=RateMeter)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class StreamHooks:
    """Process-wide counters every live stream feeds besides its own (the Prometheus metrics)."""

    arrived: Callable[[], None] = _nothing
    dropped: Callable[[], None] = _nothing
    sent: Callable[[float, bool], None] = lambda processing_s, hidden_whole: None


@dataclass(frozen=True)
class HiddenFrame:
    """One live frame, every face hidden, ready for any number of sinks (read-only from here on)."""

    seq: int  # per scheduler, from 1
    bgr: npt.NDArray[np.uint8]
    yuv: npt.NDArray[np.uint8] | None  # I420 planes for the encoders, when both sides are even
    pts: int | None  # the source frame's, for sinks that keep the sender's timing
    time_base: Fraction | None
    hidden_whole: bool
    at: float = field(default_factory=time.monotonic)

    def to_video_frame(self) -> av.VideoFrame:
        """A new av.VideoFrame of this picture (each sink needs its own: encoders set fields on it)."""
        if self.yuv is not None:
            frame = av.VideoFrame.from_ndarray(self.yuv, format="yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(self.bgr, format="bgr24")
        frame.pts, frame.time_base = self.pts, self.time_base
        return frame


@dataclass(frozen=True)
class _InFlight:
    frame: av.VideoFrame
    arrived: float
    image: npt.NDArray[np.uint8]  # the detector reads it: hidden in place only once its detection is back
    t: float
    detection: LiveDetection


class LiveScheduler:
    """One live stream: frames pushed in from any thread, hidden on the stream's own worker thread, handed to
    ``publish`` (called on that thread) in order. See the module docstring for the rules."""

    def __init__(self, processor: FrameProcessor, detection: DetectionService,
                 publish: Callable[[HiddenFrame], None], *, counters: StreamCounters | None = None,
                 hooks: StreamHooks | None = None, outline: Callable[[], bool] = lambda: False) -> None:
        self.stream_id = processor.stream_id
        self.processor = processor
        self.counters = counters if counters is not None else StreamCounters()
        self._detection = detection
        self._publish = publish
        self._hooks = hooks or StreamHooks()
        self._outline = outline  # draw the hidden boxes on the output (a viewer's debug setting)
        self._slot: tuple[av.VideoFrame, float] | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name=f"live-{self.stream_id}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def push(self, frame: av.VideoFrame) -> None:
        """A new frame from the source; replaces (drops) one the worker has not taken yet."""
        arrived = time.perf_counter()
        c = self.counters
        c.frames_in += 1
        c.fps_in.tick()
        self._hooks.arrived()
        with self._cond:
            if self._stopped:
                return
            replaced = self._slot is not None
            self._slot = (frame, arrived)
            self._cond.notify()
        if replaced:
            c.frames_dropped += 1
            self._hooks.dropped()

    def stop(self, join_s: float | None = None) -> None:
        """Stop taking frames; the frame in hand is finished but not published. With ``join_s``, wait that long
        for the worker (never from the event loop). Safe to call twice."""
        with self._cond:
            self._stopped = True
            self._slot = None
            self._cond.notify_all()
        if join_s is not None and self._thread is not threading.current_thread():
            self._thread.join(join_s)

    def _wake(self, _: object = None) -> None:
        with self._cond:
            self._cond.notify_all()

    def _next(self, in_flight: deque[_InFlight]) -> tuple[av.VideoFrame, float] | _InFlight | None:
        """What to do next: a new frame to hand to the detector while there is room, else the oldest frame in
        flight once its detection is back or late; None once stopped."""
        with self._cond:
            while not self._stopped:
                # A second frame only while the detector has a thread to spare: with other streams to serve, it
                # would only wait in the queue and add latency.
                if self._slot is not None and (not in_flight or (len(in_flight) < IN_FLIGHT
                                                                 and self._detection.idle())):
                    taken, self._slot = self._slot, None
                    return taken
                if in_flight and in_flight[0].detection.settled():
                    return in_flight.popleft()
                self._cond.wait(in_flight[0].detection.remaining() if in_flight else None)
            return None

    def _run(self) -> None:
        in_flight: deque[_InFlight] = deque()
        while (step := self._next(in_flight)) is not None:
            if isinstance(step, tuple):
                try:
                    in_flight.append(self._submit(*step))
                except Exception:
                    logger.exception("[%s] a live frame could not be handed to the detector; skipped", self.stream_id)
                continue
            try:
                hidden = self._finish(step)
            except Exception:
                # Nothing unhidden may leave: this frame is skipped, the next one is tried.
                logger.exception("[%s] a live frame could not be processed; skipped", self.stream_id)
                continue
            with self._cond:
                if self._stopped:
                    break
            try:
                self._publish(hidden)
            except Exception:
                logger.exception("[%s] publishing a hidden frame failed", self.stream_id)
        for item in in_flight:
            item.detection.future.cancel()
        logger.debug("[%s] live worker ended", self.stream_id)

    def _submit(self, frame: av.VideoFrame, arrived: float) -> _InFlight:
        image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
        t = float(frame.time) if frame.time is not None else time.monotonic()
        detection = self._detection.submit_live(self.processor, image, t)
        detection.future.add_done_callback(self._wake)
        return _InFlight(frame, arrived, image, t, detection)

    def _finish(self, item: _InFlight) -> HiddenFrame:
        processor, c, image, t = self.processor, self.counters, item.image, item.t
        detections, detect_ms = item.detection.result()
        if detections is not None:  # a failed or late detection is counted as such, never as a detection
            c.detections += 1
            c.detect_rate.tick()
            c.inference_ms = detect_ms
        outcome = processor.apply(image, t, detections, detect_ms)
        whole = outcome.failed_closed and outcome.held == 0
        if whole:
            logger.debug("[%s] frame at t=%.3f hidden whole", self.stream_id, t)
        elif self._outline():
            self._draw_boxes(image)
        h, w = image.shape[:2]
        yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), np.uint8) if h % 2 == 0 and w % 2 == 0 else None
        self._seq += 1
        c.frames_out += 1
        c.frames_hidden_whole += whole
        c.fps_out.tick()
        c.width, c.height = w, h
        c.processing_ms = (time.perf_counter() - item.arrived) * 1000
        self._hooks.sent(c.processing_ms / 1000, whole)
        return HiddenFrame(self._seq, image, yuv, item.frame.pts, item.frame.time_base, whole)

    def _draw_boxes(self, image: npt.NDArray[np.uint8]) -> None:
        h, w = image.shape[:2]
        for x1, y1, x2, y2 in pad_boxes(self.processor.last_boxes, self.processor.settings.padding, w, h):
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), OUTLINE_BGR, 2)
