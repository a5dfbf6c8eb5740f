"""A camera for live runs: the frames of a ground-truth clip (or a real clip) at the size sent, played like a camera
at its frame rate, forward then backward, each frame stamped with its number (testkit.framecode, BAND)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .framecode import BAND, stamp_i420
from .frames import read_fitted
from .judging import to_i420, truth_clip, with_band
from .truth import Image, TruthClip, TruthFrame

VIDEO_TIME_BASE = Fraction(1, 90000)
# The ground-truth clip: this many seconds (or the run's length, when shorter), played forward then backward.
TRUTH_CLIP_S = 12.0


@dataclass
class Source:
    """The frames to send at the frame size, yuv420p, not yet stamped; ``truth`` for a ground-truth clip."""

    name: str
    fps: float
    width: int
    height: int
    frames: list[Image]
    # The picture above the barcode band (``height - BAND.height`` rows): what each frame shows, face boxes included.
    # None for a real clip, which nothing can be judged against.
    truth: TruthClip | None = None

    def index_for(self, n: int) -> int:
        """Frame n of the run plays source frame ``index_for(n)``: forward, then backward, and so on."""
        count = len(self.frames)
        if count == 1:
            return 0
        period = 2 * count - 2
        m = n % period
        return m if m < count else period - m

    def truth_frame(self, n: int) -> TruthFrame:
        """What frame n of the run shows, at the frame size: the truth picture above the (black) band."""
        if self.truth is None:
            raise ValueError(f"{self.name} has no ground truth")
        return with_band(self.truth.frame(self.index_for(n)), BAND.height)


def truth_source(width: int, height: int, seconds: float, seed: int = 0,
                 face_px: tuple[float, float] | None = None) -> Source:
    """A ground-truth clip (testkit.judging.truth_clip) rendered at ``width`` x ``height - BAND.height`` above a
    black band of BAND.height rows for the barcode, at most TRUTH_CLIP_S long, every frame converted to yuv420p
    beforehand (the client does no rendering while it measures)."""
    if width < BAND.code_width or height - BAND.height < 64 or width % 2 or height % 2:
        raise ValueError(f"frames must be even-sized and at least {BAND.code_width}x{BAND.height + 64}, "
                         f"not {width}x{height}")
    clip = truth_clip(width, height - BAND.height, min(seconds, TRUTH_CLIP_S), seed, face_px)
    frames = [to_i420(np.asarray(with_band(clip.frame(i), BAND.height).image)) for i in range(len(clip))]
    return Source(f"{clip.name} (seed {seed})", clip.fps, width, height, frames, clip)


def load_source(path: Path, width: int, height: int, needed: int) -> Source:
    """A real clip (``--clip``), centre-cropped and resized: no ground truth."""
    frames, fps = read_fitted(path, width, height, needed)
    return Source(path.name, fps, width, height, [to_i420(bgr) for bgr in frames])


# ------------------------------------------------------------------------------------------------ client


class CameraTrack(MediaStreamTrack):
    """Plays ``source`` like a camera at its frame rate for ``seconds``, each frame stamped with its number.
    When the sender asks late, frames whose time has passed are skipped (a camera does not queue)."""

    kind = "video"

    def __init__(self, source: Source, seconds: float) -> None:
        super().__init__()
        self.source = source
        self.total = max(1, round(seconds * source.fps))
        self.sent: dict[int, float] = {}  # frame number -> perf_counter when handed to the sender
        self.skipped = 0
        self.started_at: float | None = None
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self._next = 0

    async def recv(self) -> av.VideoFrame:
        now = time.perf_counter()
        if self.started_at is None:
            self.started_at = now
            self.started.set()
        start, fps = self.started_at, self.source.fps
        n = self._next
        due = math.floor((now - start) * fps)
        if due > n:  # we are late: the camera has moved on
            self.skipped += due - n
            n = due
        if n >= self.total:
            self.finished.set()
            self.stop()
            raise MediaStreamError
        target = start + n / fps
        if target > now:
            await asyncio.sleep(target - now)
        i420 = self.source.frames[self.source.index_for(n)].copy()
        stamp_i420(i420, self.source.width, self.source.height, n, BAND)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = round(n * 90000 / fps)
        frame.time_base = VIDEO_TIME_BASE
        self._next = n + 1
        self.sent[n] = time.perf_counter()
        return frame
