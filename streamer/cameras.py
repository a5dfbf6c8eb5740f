"""Cameras: each pulled once, decoded once and anonymized once per frame, whatever the number of viewers.

    RtspReader thread --push--> LiveScheduler (newest frame, 1 slot; its worker: detect on the frame -> hide)
        --> the latest hidden frame, published to every viewer (CameraTrack) and to snapshots

Decoding keeps pace with the camera even when detection cannot: the scheduler takes only the newest decoded frame,
and what it skipped is counted as dropped. Raw frames never leave this module. The frame rules are the scheduler's,
the same as a webcam's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from models.coverage import DetectSize, parse_detect_size

from .detection_service import DetectionService
from .processor import FrameProcessor, ProcessorStats
from .redact import redact_url
from .scheduler import HiddenFrame, LiveScheduler, StreamCounters, StreamHooks
from .settings import LIVE_THRESHOLD, MODES, THRESHOLD_RANGE, AnonymizeSettings, Mode
from .sources.rtsp import CameraState, RtspOptions, RtspReader

logger = logging.getLogger(__name__)

LINGER_S = 10.0  # an on-demand camera keeps running this long after its last viewer left
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class CameraSettings:
    name: str
    url: str
    anonymize: AnonymizeSettings = field(default_factory=AnonymizeSettings)
    detect_size: DetectSize | None = None  # None: the service's --detect-size (full coverage by default)
    transport: Literal["tcp", "udp"] = "tcp"
    always_on: bool = False
    # The live threshold, as for webcams: codecs lower face scores, and a camera shows strangers.
    threshold: float = LIVE_THRESHOLD

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= NAME_CHARS or len(self.name) > 64:
            raise ValueError(f"camera name {self.name!r}: use 1-64 letters, digits, '-' or '_'")
        if not self.url.startswith(("rtsp://", "rtsps://")):
            shown = repr(redact_url(self.url))
            raise ValueError(f"camera {self.name}: URL must start with rtsp:// or rtsps://, not {shown}")
        try:
            # What the reader, the logs and /cameras parse later (redact reads the port) must parse now.
            parts = urlsplit(self.url)
            parts.port  # noqa: B018
        except ValueError as exc:
            # urlsplit's reasons may quote a piece of the URL, which may be the password: say what to fix instead.
            if "out of range" in str(exc):
                raise ValueError(f"camera {self.name}: the URL's port is out of range 0-65535") from None
            raise ValueError(f"camera {self.name}: the URL's host or port cannot be read (a password with '/', "
                             "'?', '#', '[' or ']' must be percent-escaped)") from None
        if not parts.hostname:
            raise ValueError(f"camera {self.name}: the URL has no host")
        if self.transport not in ("tcp", "udp"):
            raise ValueError(f"camera {self.name}: transport must be tcp or udp")
        if self.detect_size is not None:
            try:
                object.__setattr__(self, "detect_size", parse_detect_size(self.detect_size))
            except ValueError as exc:
                raise ValueError(f"camera {self.name}: detect_size: {exc}") from None
        low, high = THRESHOLD_RANGE
        if not low <= self.threshold <= high:  # NaN fails this too
            raise ValueError(f"camera {self.name}: threshold must be within {low}..{high}")


def parse_camera_arg(text: str) -> CameraSettings:
    """``NAME=rtsp://...`` from the command line."""
    name, sep, url = text.partition("=")
    if not sep:
        raise ValueError(f"--camera {text!r}: expected NAME=rtsp://HOST/PATH")
    return CameraSettings(name.strip(), url.strip())


CAMERA_KEYS = {"name", "url", "mode", "strength", "padding", "ellipse", "detect_size", "transport", "always_on",
               "threshold"}


def load_cameras_file(path: Path) -> list[CameraSettings]:
    """Cameras from a TOML file: an optional ``[defaults]`` table and one ``[[camera]]`` table per camera.

        [defaults]
        mode = "mosaic"
        [[camera]]
        name = "lobby"
        url = "rtsp://user:pass@10.0.0.5/stream1"
        transport = "tcp"        # or "udp"
        strength = 0.7
        detect_size = "full"     # full (the default), fast (shrunk at most 2x, no small faces) or N px
        threshold = 0.2          # face score threshold (default: the live one, 0.2)
        always_on = true
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ValueError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    unknown_top = set(data) - {"defaults", "camera"}
    if unknown_top:
        raise ValueError(f"{path}: unknown table(s) {', '.join(sorted(unknown_top))}; expected [defaults], [[camera]]")
    defaults = data.get("defaults", {})
    entries = data.get("camera", [])
    if not isinstance(defaults, dict) or not isinstance(entries, list):
        raise ValueError(f"{path}: [defaults] must be a table and [[camera]] an array of tables")
    cameras = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: camera #{i + 1} is not a table")
        merged = {**defaults, **entry}
        unknown = set(merged) - CAMERA_KEYS
        if unknown:
            raise ValueError(f"{path}: camera #{i + 1}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            cameras.append(camera_from_mapping(merged))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: camera #{i + 1}: {exc}") from exc
    return cameras


def camera_from_mapping(m: dict[str, Any]) -> CameraSettings:
    # Types are checked, never coerced: bool("false") is True, and a quoted number is a typo worth reporting.
    for key in ("name", "url", "transport"):
        if key in m and not isinstance(m[key], str):
            raise ValueError(f"{key} must be a string")
    for key in ("name", "url"):
        if key not in m:
            raise ValueError(f"{key} must be a string")
    for key in ("ellipse", "always_on"):
        if not isinstance(m.get(key, False), bool):
            raise ValueError(f"{key} must be true or false")
    for key in ("strength", "padding", "threshold"):
        if key in m and (isinstance(m[key], bool) or not isinstance(m[key], int | float)):
            raise ValueError(f"{key} must be a number")
    mode = m.get("mode", "mosaic")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    detect_size = m.get("detect_size")
    if detect_size is not None:
        if (isinstance(detect_size, bool) or not isinstance(detect_size, int | float | str)
                or (isinstance(detect_size, str) and detect_size not in ("full", "fast"))):
            raise ValueError("detect_size must be \"full\", \"fast\" or a number of pixels")
        try:
            detect_size = parse_detect_size(detect_size)
        except ValueError as exc:
            raise ValueError(f"detect_size: {exc}") from None
    anonymize = AnonymizeSettings(mode=cast(Mode, mode), strength=float(m.get("strength", 0.5)),
                                  padding=float(m.get("padding", 1.3)), ellipse=m.get("ellipse", False))
    return CameraSettings(m["name"], m["url"], anonymize, detect_size,
                          m.get("transport", "tcp"), m.get("always_on", False),
                          float(m.get("threshold", LIVE_THRESHOLD)))


class Camera:
    """One camera: its puller and scheduler while it runs (a new pair, with new face tracks, for each start),
    its viewers, and the newest hidden frame they share."""

    def __init__(self, settings: CameraSettings, options: RtspOptions | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self._detection: DetectionService | None = None
        self._hooks = StreamHooks()
        self._options = replace(options or RtspOptions(), transport=settings.transport)
        self.reader = RtspReader(self.name, settings.url, lambda frame: None, self._options)  # until started
        self.scheduler: LiveScheduler | None = None
        self._generation = 0  # each start() gets a fresh reader and scheduler; an older run's output is ignored
        self._connects_before = 0
        self._published = 0
        # Kept across restarts, so the status and /metrics count the camera's whole life.
        self.counters = StreamCounters()
        self.stats = ProcessorStats()
        self.latest: HiddenFrame | None = None
        self._running = False
        self._retired: list[tuple[RtspReader, LiveScheduler]] = []  # stopped runs whose threads may still be ending
        self._retired_lock = threading.Lock()
        # The run check and the hand-over of a frame are one step against stop() and start(): a frame of a
        # stopped run never becomes the picture of the next one.
        self._publish_lock = threading.Lock()
        self._viewers = 0
        self._linger: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop, detection: DetectionService,
             hooks: StreamHooks | None = None) -> None:
        """Attach to the event loop and the shared detector (once it has loaded); always-on cameras start."""
        self._loop = loop
        self._waiters = asyncio.Event()
        self._detection = detection
        self._hooks = hooks or StreamHooks()
        if self.settings.always_on:
            self.start()

    @property
    def ready(self) -> bool:
        # A detector stopped for good (the GPU failed under --require-gpu) serves no new viewer.
        return self._detection is not None and self._detection.failed is None

    def _processor(self, detection: DetectionService) -> FrameProcessor:
        processor = FrameProcessor(detection.detector, self.settings.anonymize, stream_id=f"camera {self.name}",
                                   stats=self.stats)
        processor.threshold = self.settings.threshold
        processor.detect_size = self.settings.detect_size
        processor.upscale = False
        return processor

    def start(self) -> None:
        """Start pulling with a fresh reader and scheduler. Never blocks: the threads of a previous run that are
        still winding down (a read can take up to the read timeout to notice) belong to an older generation."""
        detection = self._detection
        if self._running or detection is None:
            return
        with self._publish_lock:
            self._running = True
            self._generation += 1
            generation = self._generation
        self._connects_before += self.reader.connects
        self.scheduler = LiveScheduler(self._processor(detection), detection,
                                       lambda hidden: self._publish(hidden, generation), counters=self.counters,
                                       hooks=self._hooks)
        self.reader = RtspReader(self.name, self.settings.url, self.scheduler.push, self._options)
        self.reader.start()
        logger.info("[camera %s] started (%s)", self.name, redact_url(self.settings.url))

    def stop(self, join_s: float | None = None) -> None:
        """Stop pulling; with ``join_s``, wait that long for the threads of every stopped run (never from the event
        loop). Safe to call twice: a second call still waits for threads the first one left running."""
        if self._running:
            with self._publish_lock:
                self._running = False
                self.latest = None  # a stopped camera shows nothing rather than a stale picture
            reader, scheduler = self.reader, self.scheduler
            assert scheduler is not None
            with self._retired_lock:
                self._retired.append((reader, scheduler))
            reader.stop()
            scheduler.stop()
            logger.info("[camera %s] stopped", self.name)
        if join_s is not None:
            self.join(join_s)

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the threads of stopped runs; True when none is left."""
        deadline = time.monotonic() + timeout_s
        with self._retired_lock:
            retired = list(self._retired)
        for reader, scheduler in retired:
            reader.stop(max(0.0, deadline - time.monotonic()))
            scheduler.stop(max(0.0, deadline - time.monotonic()))
            if not reader.running and not scheduler.running:
                with self._retired_lock:
                    self._retired.remove((reader, scheduler))
        with self._retired_lock:
            return not self._retired

    def acquire(self) -> None:
        """A viewer (or a snapshot) needs frames: start on demand, cancel a pending linger stop."""
        self._viewers += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.start()

    def release(self) -> None:
        self._viewers = max(0, self._viewers - 1)
        if self._viewers == 0 and not self.settings.always_on and self._loop is not None and self._running:
            if self._linger is not None:
                self._linger.cancel()
            self._linger = self._loop.call_later(LINGER_S, self._linger_stop)

    def _linger_stop(self) -> None:
        self._linger = None
        if self._viewers == 0 and not self.settings.always_on:
            self.stop()  # no join: a viewer arriving right after simply starts a new generation

    @property
    def viewers(self) -> int:
        return self._viewers

    # -- frames ------------------------------------------------------------------------------------------------
    def _publish(self, hidden: HiddenFrame, generation: int) -> None:
        """On the scheduler's thread: make ``hidden`` the frame every viewer and snapshot gets next."""
        with self._publish_lock:
            if generation != self._generation or not self._running:
                return  # stopped (or restarted) while this frame was hidden
            # Sequence numbers run on across restarts: a viewer that stays through a stop and start must still
            # see the new frames as newer than the last one it got.
            self._published += 1
            self.latest = replace(hidden, seq=self._published)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is watching
                self._loop.call_soon_threadsafe(self._wake_viewers)

    def _wake_viewers(self) -> None:
        if self._waiters is not None:
            waiters, self._waiters = self._waiters, asyncio.Event()
            waiters.set()

    async def next_frame(self, after_seq: int) -> HiddenFrame:
        """The newest hidden frame newer than ``after_seq`` (waits for it)."""
        while True:
            latest = self.latest
            if latest is not None and latest.seq > after_seq:
                return latest
            assert self._waiters is not None, "camera not bound to the event loop"
            await self._waiters.wait()

    def status(self) -> dict[str, Any]:
        latest, c = self.latest, self.counters
        state: CameraState = self.reader.state if self._running else "stopped"
        stats = self.stats.snapshot()
        return {
            "name": self.name, "state": state, "error": self.reader.last_error if state != "live" else None,
            "always_on": self.settings.always_on, "viewers": self._viewers, "fps": round(c.fps_out.rate(), 1),
            "last_frame_age_s": round(time.monotonic() - latest.at, 2) if latest is not None else None,
            "width": int(latest.bgr.shape[1]) if latest is not None else None,
            "height": int(latest.bgr.shape[0]) if latest is not None else None,
            "frames_decoded": c.frames_in, "frames_processed": c.frames_out,
            "frames_dropped": c.frames_dropped, "detections": c.detections,
            "frames_hidden_whole": c.frames_hidden_whole, "detector_errors": int(stats["detector_errors"]),
            "detections_late": int(stats["detections_late"]),
            "connects": self._connects_before + self.reader.connects,
            "mode": self.settings.anonymize.mode, "transport": self.settings.transport,
            "threshold": self.settings.threshold, "detect_size": self.detect_size,
        }

    @property
    def detect_size(self) -> DetectSize | None:
        """The coverage this camera's frames are detected at: its own, else the service's (None before binding)."""
        if self.settings.detect_size is not None:
            return self.settings.detect_size
        return self._detection.detector.config.detect_size if self._detection is not None else None


class CameraManager:
    def __init__(self, cameras: Iterable[CameraSettings], options: RtspOptions | None = None) -> None:
        self._cameras: dict[str, Camera] = {}
        for settings in cameras:
            if settings.name in self._cameras:
                raise ValueError(f"camera name {settings.name!r} is used twice")
            self._cameras[settings.name] = Camera(settings, options)

    def bind(self, loop: asyncio.AbstractEventLoop, detection: DetectionService,
             hooks: StreamHooks | None = None) -> None:
        for camera in self._cameras.values():
            camera.bind(loop, detection, hooks)

    def get(self, name: str) -> Camera | None:
        return self._cameras.get(name)

    def __iter__(self) -> Any:
        return iter(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)

    def stop_all(self, join_s: float = 10.0) -> bool:
        """Stop every camera and wait (``join_s`` in all) for their threads; True when all have ended."""
        for camera in self._cameras.values():
            camera.stop()  # all at once: each may take up to its read timeout to notice
        deadline = time.monotonic() + join_s
        return all([camera.join(max(0.0, deadline - time.monotonic())) for camera in self._cameras.values()])
