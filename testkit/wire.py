"""Truth clips over the wire: sent live with each frame's index in a strip above the picture (``TruthTrack``), and
matched back to the very frame that was sent when they return (``returned_pairs``), ready for ``judges.judge``.

The frames sent are the clip ``shifted`` down by the strip's height (testkit.framecode: ``STRIP``, or
``CENTRED_STRIP`` for a browser): render the clip that many rows shorter than the size to send (640x400 for 640x480
under ``STRIP``) and no face is ever under the strip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from fractions import Fraction

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .framecode import BITS, STRIP, Placement, crop_of, read, stamp
from .truth import Image, TruthClip, TruthFrame, shifted

VIDEO_TIME_BASE = Fraction(1, 90000)
# An output whose strip cannot be read is matched to the sent frame it looks most like among those sent between
# its readable neighbours; with no readable neighbour, among this many frames either side.
SEARCH = 8


def as_sent(clip: TruthClip, strip: Placement = STRIP) -> TruthClip:
    """The frames as they go on the wire: ``clip`` below the code's strip (its boxes moved down with it)."""
    if strip.below:
        raise ValueError("as_sent puts the code above the picture; a band below it is testkit.judging.with_band")
    return shifted(clip, strip.height)


class PacedTrack(MediaStreamTrack):
    """A live video track playing ``length`` pictures at ``fps`` as a camera would (never faster), stamped with
    pts on the 90 kHz clock; then it ends (``MediaStreamError``), or starts over with ``loop_forever`` until
    ``finish()``. Subclasses say what picture n is (``yuv``).

    ``sent_at[n]`` is when frame n was handed to the encoder (time.monotonic()); ``ended_at`` when it ran out.
    """

    kind = "video"

    def __init__(self, length: int, fps: float, loop_forever: bool = False) -> None:
        super().__init__()
        self.length, self.fps = length, fps
        self.loop_forever = loop_forever
        self.sent_at: list[float] = []
        self.ended_at: float | None = None
        self._start: float | None = None
        self._n = 0
        self._stop_requested = False

    def finish(self) -> None:
        """End at the next frame (for loop_forever tracks)."""
        self._stop_requested = True

    def yuv(self, n: int) -> Image:
        """The n-th picture sent (n counts on through loops), I420."""
        raise NotImplementedError

    async def recv(self) -> av.VideoFrame:
        n = self._n
        if self._stop_requested or (n >= self.length and not self.loop_forever):
            if self.ended_at is None:
                self.ended_at = time.monotonic()
            self.stop()
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        target = self._start + n / self.fps
        if target > now:
            await asyncio.sleep(target - now)
        frame = av.VideoFrame.from_ndarray(self.yuv(n), format="yuv420p")
        frame.pts, frame.time_base = round(n * 90000 / self.fps), VIDEO_TIME_BASE
        self._n = n + 1
        self.sent_at.append(time.monotonic())
        return frame


class TruthTrack(PacedTrack):
    """Plays ``as_sent(clip)``, each frame stamped with its send count (mod 2**BITS) in the strip."""

    def __init__(self, clip: TruthClip, loop_forever: bool = False) -> None:
        self.clip = as_sent(clip)
        super().__init__(len(self.clip), self.clip.fps, loop_forever)

    def truth(self, index: int) -> TruthFrame:
        """The frame sent with ``index`` in its strip."""
        return self.clip.frame(index % len(self.clip))

    def read_index(self, gray: Image) -> int | None:
        """The index in a returned frame's strip (a returned frame has the size it was sent at)."""
        return read(gray, gray.shape[1], gray.shape[0])

    def yuv(self, n: int) -> Image:
        stamped = stamp(np.asarray(self.truth(n).image), n)
        return np.asarray(cv2.cvtColor(stamped, cv2.COLOR_BGR2YUV_I420), np.uint8)


def _thumb(image: Image, strip_rows: int) -> Image:
    """A small grey picture of what is below the strip, to compare frames of any size."""
    gray = cv2.cvtColor(np.ascontiguousarray(image[strip_rows:]), cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.resize(gray, (64, 48), interpolation=cv2.INTER_AREA), np.uint8)


def _likeness(a: Image, b: Image) -> float:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    x -= x.mean()
    y -= y.mean()
    norm = float(np.sqrt((x @ x) * (y @ y)))
    return float(x @ y) / norm if norm > 1e-9 else 0.0


def returned_pairs(returned: Iterable[tuple[int | None, Image]], sent: TruthClip,
                   sent_count: int) -> Iterator[tuple[TruthFrame, Image]]:
    """(the frame as sent, the frame as returned) for every returned frame, given (index read from its strip or
    None, its BGR picture) in arrival order and ``sent`` = ``as_sent(clip)``.

    Every returned frame is paired, so none escapes the judges: one whose strip is unreadable (a mask over the
    strip, a frame hidden whole) is paired with the sent frame it looks most like, among those sent between its
    readable neighbours.
    """
    items = list(returned)
    indices = [i for i, _ in items]
    last = max(0, min(sent_count, 1 << BITS) - 1)
    for pos, (index, image) in enumerate(items):
        if index is not None and index <= last:
            yield sent.frame(index % len(sent)), image
            continue
        before = next((i for i in reversed(indices[:pos]) if i is not None), None)
        after = next((i for i in indices[pos + 1:] if i is not None), None)
        lo = before if before is not None else max(0, (after or 0) - SEARCH)
        hi = after if after is not None else min(last, (before or 0) + SEARCH)
        candidates = [sent.frame(i % len(sent)) for i in range(max(0, lo), max(lo, hi) + 1)]
        rows = round(STRIP.height * image.shape[0] / candidates[0].size[1])
        out = _thumb(image, rows)
        yield max(candidates, key=lambda c: _likeness(_thumb(np.asarray(c.image), STRIP.height), out)), image


def as_seen(frame: TruthFrame, size: tuple[int, int]) -> TruthFrame:
    """``frame`` as a browser delivers it at ``size`` (width, height): centre-cropped to that aspect ratio, then
    scaled (Chromium's crop-and-scale when a track's constraints ask for another shape than the camera's)."""
    x0, y0, cw, ch = crop_of(frame.size, size)
    if (cw, ch) != frame.size:
        faces = []
        for face in frame.faces:
            x1, y1, x2, y2 = face.box
            whole = (x2 - x1) * (y2 - y1) / max(face.visible, 1e-9)
            cx1, cy1, cx2, cy2 = max(x1, x0), max(y1, y0), min(x2, x0 + cw), min(y2, y0 + ch)
            if cx2 > cx1 and cy2 > cy1:
                faces.append(replace(face, box=(cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0),
                                     visible=(cx2 - cx1) * (cy2 - cy1) / whole))
        image = np.ascontiguousarray(frame.image[y0:y0 + ch, x0:x0 + cw])
        image.flags.writeable = False
        frame = replace(frame, image=image, faces=tuple(faces))
    return frame.resized(size)
