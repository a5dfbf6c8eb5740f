"""aiortc MediaStreamTracks of the live pipeline: a webcam's anonymizing output, and a camera viewer.

    remote track -> AnonymizedTrack: drains the receiver into the stream's LiveScheduler (latest frame wins),
                    hands the sender the newest hidden frame -> RTCRtpSender (encodes)
    Camera (LiveScheduler) -> CameraTrack, one per viewer: the newest hidden frame -> RTCRtpSender

aiortc's receive queues are unbounded, so a transform slower than the camera would otherwise build seconds of
backlog. Here the receiver is always drained, and a frame that was not picked up before the next one arrived is
dropped and counted: the viewer sees fewer frames, never older ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Protocol

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .detection_service import DetectionService
from .processor import FrameProcessor
from .scheduler import HiddenFrame, LiveScheduler, StreamCounters, StreamHooks

logger = logging.getLogger(__name__)


class AnonymizedTrack(MediaStreamTrack):
    """A browser's webcam with every face hidden. Frames are hidden by the stream's LiveScheduler (each by a
    detection made on it, or hidden whole); there is no other way out."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, processor: FrameProcessor, detection: DetectionService,
                 counters: StreamCounters, hooks: StreamHooks | None = None,
                 outline: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self._source = source
        self._counters = counters
        self._hooks = hooks or StreamHooks()
        self._event_loop = asyncio.get_running_loop()
        self._latest: av.VideoFrame | None = None
        self._ready = asyncio.Event()
        self._ended = False
        self.scheduler = LiveScheduler(processor, detection, self._published, counters=counters, hooks=hooks,
                                       outline=outline)
        self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                if isinstance(frame, av.VideoFrame):
                    self.scheduler.push(frame)
        except MediaStreamError:
            logger.info("[%s] remote video ended", self.scheduler.stream_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("[%s] reading the remote video failed", self.scheduler.stream_id)
        finally:
            self._ended = True
            self._ready.set()

    def _published(self, hidden: HiddenFrame) -> None:
        """On the scheduler's thread: wrap the frame there, hand it to the event loop."""
        frame = hidden.to_video_frame()
        with contextlib.suppress(RuntimeError):  # the loop has closed: the connection is gone
            self._event_loop.call_soon_threadsafe(self._deliver, frame)

    def _deliver(self, frame: av.VideoFrame) -> None:
        if self._latest is not None:  # the encoder did not ask in time: the newer one wins
            self._counters.frames_unsent += 1
            self._hooks.dropped()
        self._latest = frame
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while self._latest is None:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        frame, self._latest = self._latest, None
        return frame

    def stop(self) -> None:
        super().stop()
        self._pump_task.cancel()
        self.scheduler.stop()
        self._ready.set()


class FrameFeed(Protocol):
    """A source of already-anonymized frames shared by many viewers (a camera)."""

    name: str

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    async def next_frame(self, after_seq: int) -> HiddenFrame: ...


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
        frame = published.to_video_frame()
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
