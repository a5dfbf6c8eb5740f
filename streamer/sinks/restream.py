"""A camera's anonymized stream pushed to an RTSP or RTMP server the operator names (an NVR's RTSP input,
MediaMTX, an RTMP ingest), so that whatever records there only ever gets hidden faces.

One encoder per camera, whatever the number of consumers: they pull from that server. The pusher takes the
camera's newest hidden frame each time (``FrameFanOut.wait_newer``), never a queue: when the network or the
encoder is slow, frames are skipped, not delayed. Timestamps are the wall clock since the push started, so the
output's timing is the camera's as it reached us. A failed push (refused, dropped, timed out) is retried with
backoff; a new frame size starts a new push, since an encoder has one size.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from fractions import Fraction
from typing import Any, Literal
from urllib.parse import urlsplit

import av

from ..camera_fanout import FrameFanOut
from ..redact import scrub
from ..scheduler import HiddenFrame

logger = logging.getLogger(__name__)

RestreamState = Literal["connecting", "live", "retrying", "stopped"]
TIME_BASE = Fraction(1, 90000)
BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
IO_TIMEOUT_S = 5.0  # a server that stops reading fails the push (and it is retried) instead of blocking for ever
KEYFRAME_EVERY = 50  # frames: a recorder joining mid-stream starts within a couple of seconds
SCHEMES = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv"}


def check_restream_url(url: str) -> None:
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES or "://" not in url:
        raise ValueError("restream must be an rtsp://, rtsps://, rtmp:// or rtmps:// URL")
    try:
        if not urlsplit(url).hostname:
            raise ValueError("restream: the URL has no host")
        urlsplit(url).port  # noqa: B018
    except ValueError:
        raise ValueError("restream: the URL's host or port cannot be read") from None


def shown_restream(url: str) -> str:
    """A restream URL as status and errors show it: an RTMP stream key or an RTSP path may be the secret that lets
    anyone publish there, so only the scheme, host and port are shown."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<an unparsable URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/***"


def _hide_path(text: str, url: str) -> str:
    """``text`` without the URL's path (FFmpeg's messages quote the URL whole)."""
    path = urlsplit(url).path
    for whole in (url, url.split("?")[0]):
        text = text.replace(whole, shown_restream(url))
    return text.replace(path, "/***") if len(path) > 1 else text


class Restreamer:
    """Pushes ``frames`` to ``url`` on a thread of its own until ``stop()`` (safe twice)."""

    def __init__(self, camera: str, url: str, frames: FrameFanOut, *, bitrate: int = 2_000_000) -> None:
        check_restream_url(url)
        self.camera, self.url, self._frames, self._bitrate = camera, url, frames, bitrate
        self.state: RestreamState = "connecting"
        self.frames_sent = 0
        self.pushes = 0  # connections made
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"restream-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()
        logger.info("[camera %s] restreaming to %s", self.camera, shown_restream(self.url))

    def stop(self, join_s: float | None = None) -> None:
        self._stop.set()
        self._frames.notify()
        if join_s is not None and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(join_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        return {"url": shown_restream(self.url), "state": self.state, "frames_sent": self.frames_sent,
                "pushes": self.pushes, "error": self.last_error}

    def _run(self) -> None:
        failures = 0
        seq = 0
        while not self._stop.is_set():
            first = self._frames.wait_newer(seq, 1.0)
            if first is None:
                continue
            try:
                seq = self._push(first)
                failures = 0
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.last_error = _hide_path(scrub(str(exc), self.url), self.url)
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                logger.warning("[camera %s] restream to %s failed (%s); again in %.0f s", self.camera,
                               shown_restream(self.url), self.last_error, delay)
                self.state = "retrying"
                self._stop.wait(delay)
                seq = 0
        self.state = "stopped"

    def _push(self, first: HiddenFrame) -> int:
        """One connection: frames from ``first`` on, until a frame of another size (returns the last sequence
        number sent) or a failure (raises)."""
        height, width = first.bgr.shape[:2]
        self.state = "connecting"
        scheme = self.url.partition("://")[0].lower()
        options = {"rtsp_transport": "tcp"} if SCHEMES[scheme] == "rtsp" else {}
        output = av.open(self.url, "w", format=SCHEMES[scheme], options=options,
                         timeout=(IO_TIMEOUT_S, IO_TIMEOUT_S))
        try:
            stream = output.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width // 2 * 2, height // 2 * 2, "yuv420p"
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
            stream.bit_rate = self._bitrate
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(KEYFRAME_EVERY), "bf": "0"}
            self.pushes += 1
            started = time.monotonic()
            last_pts = -1
            frame: HiddenFrame | None = first
            seq = first.seq
            while not self._stop.is_set():
                if frame is not None:
                    if frame.bgr.shape[:2] != (height, width):
                        logger.info("[camera %s] restream: frames now %dx%d; starting a new push", self.camera,
                                    frame.bgr.shape[1], frame.bgr.shape[0])
                        return seq - 1  # the frame of the new size opens the next push
                    video = av.VideoFrame.from_ndarray(frame.bgr[:height // 2 * 2, :width // 2 * 2], format="bgr24")
                    pts = max(last_pts + 1, int((time.monotonic() - started) / TIME_BASE))
                    video.pts, video.time_base, last_pts = pts, TIME_BASE, pts
                    for packet in stream.encode(video):
                        output.mux(packet)
                    self.frames_sent += 1
                    if self.state != "live":
                        self.state, self.last_error = "live", None
                        logger.info("[camera %s] restream live (%dx%d)", self.camera, width, height)
                    seq = frame.seq
                frame = self._frames.wait_newer(seq, 1.0)
            return seq
        finally:
            with contextlib.suppress(av.FFmpegError, OSError):
                output.close()
