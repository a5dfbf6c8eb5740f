"""An RTSP camera puller: PyAV/FFmpeg input with open and read timeouts, reconnecting forever with backoff.

It only decodes; whatever it delivers goes to ``on_frame`` on its own thread. A killed server ends FFmpeg's read
loop silently and a hung one blocks it: the read timeout turns both into an error, the error into the status,
and the status into a reconnect after the next backoff delay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import av

from ..offline import MAX_VIDEO_PIXELS
from ..redact import redact_url, scrub

logger = logging.getLogger(__name__)

CameraState = Literal["stopped", "connecting", "live", "reconnecting"]
# go2rtc's schedule: quick retries for a blip, then slower ones for a camera that is really gone.
BACKOFF_S = (1.0,) * 5 + (5.0,) * 5 + (10.0,) * 10
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 10.0  # a connection that delivered frames this long resets the backoff


def backoff_delay(attempt: int) -> float:
    return BACKOFF_S[attempt] if attempt < len(BACKOFF_S) else BACKOFF_MAX_S


@dataclass(frozen=True)
class RtspOptions:
    transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0


class RtspReader:
    """Pulls one camera on a thread of its own until ``stop()``."""

    def __init__(self, name: str, url: str, on_frame: Callable[[av.VideoFrame], None],
                 options: RtspOptions | None = None,
                 on_state: Callable[[CameraState, str | None], None] | None = None) -> None:
        self.name = name
        self.url = url
        self.options = options or RtspOptions()
        self._on_frame = on_frame
        self._on_state = on_state
        self.state: CameraState = "stopped"
        self.last_error: str | None = None
        self.connects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
            return
        # A thread still ending after stop() (stuck opening a camera that does not answer) keeps its own stop
        # event and ends; a new thread with a new event takes over. Reusing one event restarted the old thread's
        # loop or, when it had already left the loop, left the camera started but without a reader.
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=f"rtsp-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, join_s: float | None = None) -> None:
        """Ask the thread to end; it notices within the read timeout. Safe to call twice."""
        self._stop.set()
        thread = self._thread
        if thread is not None and join_s is not None and thread is not threading.current_thread():
            thread.join(join_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _set(self, state: CameraState, error: str | None = None) -> None:
        self.state = state
        if error is not None:
            self.last_error = error
        if self._on_state is not None:
            self._on_state(state, self.last_error)

    def _run(self, stop: threading.Event) -> None:
        attempt = 0
        self._set("connecting")
        while not stop.is_set():
            started = time.monotonic()
            frames = 0
            try:
                frames = self._pull(stop)
                error = "the stream ended" if not stop.is_set() else None
            except Exception as exc:  # a bad URL, a codec PyAV cannot open: report it, keep trying
                # FFmpeg's messages quote the URL: never let its password reach the status or the logs.
                error = scrub(f"{type(exc).__name__}: {exc}", self.url)
            if stop.is_set():
                break
            if frames and time.monotonic() - started >= STABLE_AFTER_S:
                attempt = 0
            delay = backoff_delay(attempt)
            attempt += 1
            logger.warning("[camera %s] %s; reconnecting in %.0f s (attempt %d)", self.name, error, delay, attempt)
            self._set("reconnecting", error)
            if stop.wait(delay):
                break
        if stop is self._stop:  # not when a newer thread has taken over
            self._set("stopped")
        logger.info("[camera %s] stopped", self.name)

    def _pull(self, stop: threading.Event) -> int:
        o = self.options
        # FFmpeg's RTSP demuxer waits out the read timeout twice before a read fails (measured with PyAV 18 /
        # FFmpeg 8.1, TCP and UDP: 1 s -> 2.0 s, 2 s -> 4.0 s, 5 s -> 10.0 s): ask for half.
        # FFmpeg's own pixel limit on the probe's decoders and the stream's: a camera (or whoever answers at its
        # address) cannot make a frame larger than the file pipeline accepts.
        limit = {"max_pixels": str(MAX_VIDEO_PIXELS)}
        container = av.open(self.url, mode="r", timeout=(o.open_timeout_s, o.read_timeout_s / 2), options={
            "rtsp_transport": o.transport, "fflags": "nobuffer", "flags": "low_delay", **limit,
        })
        frames = 0
        try:
            if not container.streams.video:
                raise ValueError("the stream has no video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.options = {**stream.codec_context.options, **limit}
            self.connects += 1
            logger.info("[camera %s] connected to %s (%s, %s)", self.name, redact_url(self.url),
                        stream.codec_context.name, o.transport)
            try:
                for frame in container.decode(stream):
                    if stop.is_set():
                        break
                    if frames == 0:
                        self._set("live")
                    frames += 1
                    self._on_frame(frame)
            except av.ExitError as exc:  # the read timeout's interrupt ("Immediate exit requested")
                raise TimeoutError(f"no data from the camera for {o.read_timeout_s:g} s (read timeout)") from exc
        finally:
            container.close()
        return frames
