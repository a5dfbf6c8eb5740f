"""Admission by capacity: refuse a new stream the shared detector cannot serve, instead of degrading them all.

Every live frame that goes out was detected itself, served in turn by the detector's inference threads
(``workers``: one per core on the CPU, one taking batches on a GPU). Once the detector is saturated, each stream
gets a frame every ``streams x inference time / workers``: the frame rate of *every* stream falls together. A
stream is promised at least ``MIN_STREAM_FPS`` frames per second, so the load of admitting one more stream is
predicted as

    load = ceil((detecting streams + 1) / batch) x recent mean inference run x MIN_STREAM_FPS / workers

and the stream is refused (503 + Retry-After) when ``load > --max-detector-load``. The mean inference time is
measured under the current load (it includes the CPU the codecs take from the detector), over the last few
seconds; with no recent inference the service is idle and admits. ``batch`` is the most frames one run takes (1 on
the CPU; on CUDA a run detects many streams' frames at once).
"""

from __future__ import annotations

import collections
import math
import threading
import time

WINDOW_S = 5.0
MIN_STREAM_FPS = 10.0  # below this a live picture stops looking like video


class DetectorLoad:
    """Inference durations of the last ``window_s`` seconds (fed by DetectionService's on_inference, from its
    inference threads)."""

    def __init__(self, window_s: float = WINDOW_S, workers: int = 1) -> None:
        self.window_s = window_s
        self.workers = workers  # inference threads: set once the detector has loaded
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._lock = threading.Lock()

    def observe(self, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, seconds))
            self._prune(now)

    def _prune(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()

    def mean_inference_s(self, now: float | None = None) -> float | None:
        """Mean inference time over the window, or None when the detector ran nothing in it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(now)
            if not self._samples:
                return None
            return sum(s for _, s in self._samples) / len(self._samples)

    def busy_fraction(self, now: float | None = None) -> float:
        """Share of the window the detector's inference threads spent in inference."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(now)
            return min(1.0, sum(s for _, s in self._samples) / (self.window_s * self.workers))

    def predicted_load(self, streams: int, batch: int = 1, now: float | None = None) -> float | None:
        """The load with one more stream than ``streams`` (see the module doc); None when idle."""
        mean = self.mean_inference_s(now)
        if mean is None:
            return None
        runs = math.ceil((streams + 1) / max(1, batch))
        return runs * mean * MIN_STREAM_FPS / self.workers


def refusal(load: DetectorLoad, streams: int, max_load: float, batch: int = 1) -> str | None:
    """Why a new detecting stream is refused, or None to admit it (``max_load`` 0 turns the check off)."""
    if max_load <= 0 or streams == 0:
        return None  # refusing the only stream would serve no one better: a slow detector still serves one
    predicted = load.predicted_load(streams, batch)
    if predicted is None or predicted <= max_load:
        return None
    mean_ms = (load.mean_inference_s() or 0.0) * 1000
    return (f"the face detector is at capacity: {streams} stream(s) at {mean_ms:.0f} ms per detection; one more "
            f"would need {predicted:.2f} of it (limit {max_load:g}, --max-detector-load), and every stream would "
            f"fall below {MIN_STREAM_FPS:g} frames per second; try again shortly")
