"""The audit trail: what was hidden in each frame, one JSON line per frame.

``FrameProcessor`` makes one line per frame it lets out (``frame_line``) and hands it to the stream's sink: a file's
sidecar (``python -m streamer file --audit``, upload jobs) or, for cameras and live sessions, an ``AuditRing`` of
the last minutes that the API serves. A line is kept as encoded bytes, not as objects: a 10-minute ring of a 30 fps
stream with a face or two is a few MiB. A ring also holds at most MAX_RING_BYTES: a crowd of hundreds of faces
makes lines of tens of KB, and then the ring keeps fewer minutes rather than more memory.

A line::

    {"frame": 17, "t": 0.567, "time": 1733355555.123, "width": 640, "height": 480,
     "faces": [{"box": [x1, y1, x2, y2], "score": 0.93}], "held": [[x1, y1, x2, y2]], "predicted": [],
     "hidden_whole": false, "zones": 1}

``faces`` were detected in that frame (``"visible": true`` on a face left visible on purpose by the identity
rule: an enrolled face under "keep", a clear stranger under "hide only"; every other face was hidden); ``held``
are faces the detector missed there but saw within the hold;
``predicted`` are held faces widened because detection failed for that frame (``--fail-policy widen-held``);
``hidden_whole`` means no detection could be trusted and the whole frame left hidden. Boxes are in the frame's
pixels before padding, so a reviewer can redraw them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np
import numpy.typing as npt

__all__ = ["AuditFile", "AuditRing", "AuditSink", "frame_line", "read_lines"]

AuditSink = Callable[[bytes], None]
# A ring holds at most this many frames, and bytes, whatever its minutes: a 60 fps camera for 10 minutes.
MAX_RING_FRAMES = 36_000
MAX_RING_BYTES = 32 * 2**20


def _boxes(boxes: npt.NDArray[np.float32]) -> list[list[float]]:
    return [[round(float(v), 1) for v in row] for row in boxes.reshape(-1, 4)]


def frame_line(frame: int, t: float, size: tuple[int, int], faces: npt.NDArray[np.float32],
               scores: npt.NDArray[np.float32], held: npt.NDArray[np.float32], predicted: npt.NDArray[np.float32],
               hidden_whole: bool, zones: int, kept: npt.NDArray[np.bool_] | None = None,
               wall: float | None = None) -> bytes:
    """One frame's line, newline-terminated. ``kept``: which of ``faces`` were left visible on purpose (an
    enrolled face under "keep", a stranger under "hide only")."""
    visible = [False] * len(faces) if kept is None else [bool(k) for k in kept]
    record = {
        "frame": frame, "t": round(t, 4), "time": round(time.time() if wall is None else wall, 3),
        "width": size[0], "height": size[1],
        "faces": [{"box": box, "score": round(float(score), 3), **({"visible": True} if shown else {})}
                  for box, score, shown in zip(_boxes(faces), scores.tolist(), visible, strict=True)],
        "held": _boxes(held), "predicted": _boxes(predicted), "hidden_whole": hidden_whole, "zones": zones,
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


class AuditRing:
    """The last ``seconds`` of a stream's lines, at most ``max_frames`` of them; safe to add from the frame thread
    while the event loop reads."""

    def __init__(self, seconds: float, max_frames: int = MAX_RING_FRAMES,
                 clock: Callable[[], float] = time.time, max_bytes: int = MAX_RING_BYTES) -> None:
        if seconds <= 0:
            raise ValueError("an audit ring keeps a positive number of seconds")
        self.seconds = seconds
        self._clock = clock
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lines: deque[tuple[float, bytes]] = deque(maxlen=max_frames)
        self._lock = threading.Lock()

    def __call__(self, line: bytes) -> None:
        now = self._clock()
        with self._lock:
            if len(self._lines) == self._lines.maxlen:
                self._bytes -= len(self._lines[0][1])  # the deque drops it on append
            self._lines.append((now, line))
            self._bytes += len(line)
            while self._lines and (self._lines[0][0] < now - self.seconds or self._bytes > self._max_bytes):
                self._bytes -= len(self._lines.popleft()[1])

    def __len__(self) -> int:
        return len(self._lines)

    def since(self, seconds: float) -> list[bytes]:
        """Lines of the last ``seconds`` (at most the ring's own), oldest first."""
        cutoff = self._clock() - min(seconds, self.seconds)
        with self._lock:
            return [line for made, line in self._lines if made >= cutoff]


class AuditFile:
    """A sidecar file: every line as it comes, flushed at close."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.lines = 0

    def __call__(self, line: bytes) -> None:
        self._stream.write(line)
        self.lines += 1


def read_lines(data: bytes) -> Iterator[dict[str, Any]]:
    """The records of a sidecar or a downloaded trail."""
    for line in data.splitlines():
        if line.strip():
            yield json.loads(line)
