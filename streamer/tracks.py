"""aiortc MediaStreamTracks of the live pipeline: latest-frame-wins input, anonymizing output.

    remote track -> LatestFrameTrack (drains the receiver, keeps only the newest frame)
                 -> AnonymizedTrack (decode to BGR, detect, track, hide, re-wrap; off the event loop)
                 -> RTCRtpSender (encodes)

aiortc's receive queues are unbounded, so a transform slower than the camera would otherwise build seconds of
backlog. Here the receiver is always drained and a frame that was not picked up before the next one arrived is
dropped and counted: the viewer sees fewer frames, never older ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import av
import cv2
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from models import FaceDetections

from .anonymize import pad_boxes
from .detection_service import DetectionService
from .processor import FrameProcessor

logger = logging.getLogger(__name__)

FPS_WINDOW_S = 2.0


class RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6)


@dataclass
class StreamCounters:
    """What one live stream reports (per session, and summed into /metrics by the callbacks)."""

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    width: int = 0
    height: int = 0
    processing_ms: float = 0.0  # last frame: arrival to anonymized copy ready
    inference_ms: float = 0.0
    mask_age_ms: float = 0.0  # how much older than the frame the detection behind its masks was
    detect_rate: RateMeter = field(default_factory=RateMeter)
    fps_in: RateMeter = field(default_factory=RateMeter)
    fps_out: RateMeter = field(default_factory=RateMeter)


class LatestFrameTrack(MediaStreamTrack):
    """Reads ``source`` as fast as it delivers and hands out only the newest frame (with its arrival time)."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, counters: StreamCounters, stream_id: str,
                 on_arrival: Callable[[], None] | None = None, on_drop: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._source = source
        self._counters = counters
        self._stream_id = stream_id
        self._on_drop = on_drop
        self._on_arrival = on_arrival
        self._latest: tuple[av.VideoFrame, float] | None = None
        self._ready = asyncio.Event()
        self._ended = False
        self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                if not isinstance(frame, av.VideoFrame):
                    continue
                now = time.perf_counter()
                self._counters.frames_in += 1
                self._counters.fps_in.tick()
                if self._on_arrival is not None:
                    self._on_arrival()
                if self._latest is not None:
                    self._counters.frames_dropped += 1
                    if self._on_drop is not None:
                        self._on_drop()
                self._latest = (frame, now)
                self._ready.set()
        except MediaStreamError:
            logger.info("[%s] remote video ended", self._stream_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("[%s] reading the remote video failed", self._stream_id)
        finally:
            self._ended = True
            self._ready.set()

    async def recv_latest(self) -> tuple[av.VideoFrame, float]:
        while self._latest is None:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        latest, self._latest = self._latest, None
        return latest

    async def recv(self) -> av.VideoFrame:
        return (await self.recv_latest())[0]

    def stop(self) -> None:
        super().stop()
        self._pump_task.cancel()
        self._ready.set()


def _to_bgr(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)


def _to_frame(image: npt.NDArray[np.uint8], pts: int | None, time_base: Fraction | None) -> av.VideoFrame:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        # Hand the encoder yuv420p ourselves: cheaper than letting it reformat BGR.
        yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), np.uint8)
        out = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    else:
        out = av.VideoFrame.from_ndarray(image, format="bgr24")
    out.pts, out.time_base = pts, time_base
    return out


class AnonymizedTrack(MediaStreamTrack):
    """The client's video with every face hidden. Each frame is either anonymized from a fresh detection,
    covered by held masks, or hidden whole; there is no other way out."""

    kind = "video"

    def __init__(self, source: LatestFrameTrack, processor: FrameProcessor, detection: DetectionService,
                 executor: Executor, counters: StreamCounters,
                 on_frame: Callable[[float, bool], None] | None = None,
                 debug: Callable[[], bool] = lambda: False, max_mask_age_s: float = 0.1) -> None:
        super().__init__()
        self._source = source
        self._processor = processor
        self._detection = detection
        self._executor = executor
        self._counters = counters
        self._on_frame = on_frame  # callable(processing seconds, hidden whole) for metrics
        self._debug = debug
        # One finished frame may wait here while the sender encodes the previous one: processing frame N+1
        # overlaps encoding frame N, and nothing older than one frame ever queues.
        self._ready: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(maxsize=1)
        self._worker: asyncio.Task[None] | None = None
        self._inflight: tuple[asyncio.Future[tuple[FaceDetections | None, float]], float] | None = None
        self.max_mask_age_s = max_mask_age_s

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._work())
        frame = await self._ready.get()
        if frame is None:
            self._ready.put_nowait(None)  # keep answering end-of-stream to any later recv()
            raise MediaStreamError
        return frame

    async def _work(self) -> None:
        try:
            while True:
                await self._ready.put(await self._process_next())
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            # Nothing unprocessed can leave: the stream ends instead.
            logger.exception("[%s] live processing failed; ending the stream", self._processor.stream_id)
        with contextlib.suppress(asyncio.QueueFull):
            self._ready.put_nowait(None)

    async def _process_next(self) -> av.VideoFrame:
        """Hide the newest frame with the newest detection result no older than ``max_mask_age_s``.

        Detection runs back to back on the shared inference thread, each time on the newest frame; a frame that
        goes out is hidden with the face tracks of the latest result (made on it or on a frame up to
        ``max_mask_age_s`` older), predicted forward by their motion and grown with that age. So the stream keeps
        the camera's frame rate while the detector keeps up, and the detector's latency is not added to every
        frame; when the newest result is older than the limit, the frame waits for a fresh one.
        """
        frame, arrived = await self._source.recv_latest()
        loop = asyncio.get_running_loop()
        t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else time.monotonic()
        image = await loop.run_in_executor(self._executor, _to_bgr, frame)
        await self._collect(block=False)
        if self._inflight is None:
            self._start_detection(image, t)
        if self._processor.needs_fresh(t, self.max_mask_age_s, image):
            await self._collect(block=True)
            if self._processor.needs_fresh(t, self.max_mask_age_s, image):
                self._start_detection(image, t)
                await self._collect(block=True)
        out, whole = await loop.run_in_executor(self._executor, self._finish, image, t, frame.pts, frame.time_base)
        return self._sent(out, whole, image, arrived, t)

    def _start_detection(self, image: npt.NDArray[np.uint8], t: float) -> None:
        # Its own copy: the frame is hidden in place while the detector may still be reading it.
        self._processor.detecting(image, t)
        self._inflight = (asyncio.ensure_future(self._detection.detect(self._processor, image.copy(), t)), t)

    async def _collect(self, block: bool) -> None:
        if self._inflight is None:
            return
        future, t_detected = self._inflight
        if not future.done():
            if not block:
                return
            await asyncio.wait({future})
        self._inflight = None
        detections, detect_ms = future.result()
        self._counters.inference_ms = detect_ms
        self._counters.detect_rate.tick()
        if detections is not None:
            # On the event loop, between this track's executor calls: the tracker is never used concurrently.
            self._processor.observe(detections, t_detected, detect_ms)

    def _sent(self, out: av.VideoFrame, whole: bool, image: npt.NDArray[np.uint8], arrived: float,
              t: float) -> av.VideoFrame:
        c = self._counters
        c.frames_out += 1
        c.fps_out.tick()
        c.height, c.width = image.shape[:2]
        if self._processor.last_detection_t is not None:
            c.mask_age_ms = max(0.0, (t - self._processor.last_detection_t) * 1000)
        c.processing_ms = (time.perf_counter() - arrived) * 1000
        if self._on_frame is not None:
            self._on_frame(c.processing_ms / 1000, whole)
        if whole:
            logger.debug("[%s] frame at t=%.3f hidden whole", self._processor.stream_id, t)
        return out

    def _finish(self, image: npt.NDArray[np.uint8], t: float, pts: int | None,
                time_base: Fraction | None) -> tuple[av.VideoFrame, bool]:
        outcome = self._processor.apply_tracked(image, t)
        whole = outcome.failed_closed and outcome.held == 0
        if self._debug() and not whole:
            self._draw_boxes(image)
        return _to_frame(image, pts, time_base), whole

    def _draw_boxes(self, image: npt.NDArray[np.uint8]) -> None:
        h, w = image.shape[:2]
        for x1, y1, x2, y2 in pad_boxes(self._processor.last_boxes, self._processor.settings.padding, w, h):
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), (0, 255, 255), 2)

    def stop(self) -> None:
        super().stop()
        self._source.stop()
        if self._worker is not None:
            self._worker.cancel()
        if self._inflight is not None:
            self._inflight[0].cancel()


class PublishedFrame(Protocol):
    seq: int
    yuv: npt.NDArray[np.uint8] | None
    bgr: npt.NDArray[np.uint8]


class FrameFeed(Protocol):
    """A source of already-anonymized frames shared by many viewers (a camera)."""

    name: str

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    async def next_frame(self, after_seq: int) -> PublishedFrame: ...


VIDEO_TIME_BASE = Fraction(1, 90000)


class CameraTrack(MediaStreamTrack):
    """One viewer of a camera: the newest anonymized frame each time the encoder asks, never a queue.

    The frames were hidden once, upstream, for every viewer; this track only wraps them with its own clock so
    each viewer's timestamps start at zero and only move forward.
    """

    kind = "video"

    def __init__(self, feed: FrameFeed) -> None:
        super().__init__()
        self._feed = feed
        self._seq = 0
        self._start: float | None = None
        self._released = False
        feed.acquire()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        published = await self._feed.next_frame(self._seq)
        if self.readyState != "live":
            raise MediaStreamError
        self._seq = published.seq
        if published.yuv is not None:
            frame = av.VideoFrame.from_ndarray(published.yuv, format="yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(published.bgr, format="bgr24")
        now = time.monotonic()
        if self._start is None:
            self._start = now
        frame.pts, frame.time_base = int((now - self._start) * 90000), VIDEO_TIME_BASE
        return frame

    def stop(self) -> None:
        super().stop()
        if not self._released:
            self._released = True
            self._feed.release()
