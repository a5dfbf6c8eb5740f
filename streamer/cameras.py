"""Cameras: each pulled once, decoded once and anonymized once per frame, whatever the number of viewers.

    RtspReader thread --(newest decoded frame, 1 slot)--> processing thread: detect -> track -> hide
        --> the latest anonymized frame, published to every viewer (CameraTrack) and to snapshots

Decoding keeps pace with the camera even when detection cannot: the processing thread takes only the newest
decoded frame, and what it skipped is counted as dropped. Raw frames never leave this module.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import av
import cv2
import numpy as np
import numpy.typing as npt

from .detection_service import DetectionService, PendingDetection
from .processor import FrameProcessor
from .settings import MODES, AnonymizeSettings, Mode
from .sources.rtsp import CameraState, RtspOptions, RtspReader, redact
from .tracks import RateMeter

logger = logging.getLogger(__name__)

LINGER_S = 10.0  # an on-demand camera keeps running this long after its last viewer left
MAX_MASK_AGE_S = 0.1  # a frame is never hidden with a detection older than this (else it waits for a fresh one)
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class CameraSettings:
    name: str
    url: str
    anonymize: AnonymizeSettings = field(default_factory=AnonymizeSettings)
    detect_size: int | None = None  # None: the service's --detect-size
    transport: Literal["tcp", "udp"] = "tcp"
    always_on: bool = False

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= NAME_CHARS or len(self.name) > 64:
            raise ValueError(f"camera name {self.name!r}: use 1-64 letters, digits, '-' or '_'")
        if not self.url.startswith(("rtsp://", "rtsps://")):
            try:
                shown = repr(redact(self.url))
            except ValueError:  # unparsable: it may hold a password that redact cannot find
                shown = "an unparsable URL"
            raise ValueError(f"camera {self.name}: URL must start with rtsp:// or rtsps://, not {shown}")
        try:
            # What the reader, the logs and /cameras parse later (redact reads the port) must parse now.
            parts = urlsplit(self.url)
            parts.port  # noqa: B018
        except ValueError as exc:
            raise ValueError(f"camera {self.name}: the URL is not a valid URL ({exc})") from exc
        if not parts.hostname:
            raise ValueError(f"camera {self.name}: the URL has no host")
        if self.transport not in ("tcp", "udp"):
            raise ValueError(f"camera {self.name}: transport must be tcp or udp")
        if self.detect_size is not None and not 64 <= self.detect_size <= 4096:
            raise ValueError(f"camera {self.name}: detect_size must be within 64..4096")


def parse_camera_arg(text: str) -> CameraSettings:
    """``NAME=rtsp://...`` from the command line."""
    name, sep, url = text.partition("=")
    if not sep:
        raise ValueError(f"--camera {text!r}: expected NAME=rtsp://HOST/PATH")
    return CameraSettings(name.strip(), url.strip())


CAMERA_KEYS = {"name", "url", "mode", "strength", "padding", "ellipse", "detect_size", "transport", "always_on"}


def load_cameras_file(path: Path) -> list[CameraSettings]:
    """Cameras from a TOML file: an optional ``[defaults]`` table and one ``[[camera]]`` table per camera.

        [defaults]
        mode = "mosaic"
        [[camera]]
        name = "lobby"
        url = "rtsp://user:pass@10.0.0.5/stream1"
        transport = "tcp"        # or "udp"
        strength = 0.7
        detect_size = 640
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
    for key in ("strength", "padding", "detect_size"):
        if key in m and (isinstance(m[key], bool) or not isinstance(m[key], int | float)):
            raise ValueError(f"{key} must be a number")
    mode = m.get("mode", "mosaic")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    detect_size = m.get("detect_size")
    if isinstance(detect_size, float) and not detect_size.is_integer():
        raise ValueError("detect_size must be a whole number of pixels")
    anonymize = AnonymizeSettings(mode=cast(Mode, mode), strength=float(m.get("strength", 0.5)),
                                  padding=float(m.get("padding", 1.3)), ellipse=m.get("ellipse", False))
    return CameraSettings(m["name"], m["url"], anonymize, int(detect_size) if detect_size is not None else None,
                          m.get("transport", "tcp"), m.get("always_on", False))


@dataclass
class Published:
    """One anonymized frame, shared read-only by every viewer and snapshot."""

    seq: int
    yuv: npt.NDArray[np.uint8] | None  # I420 planes for the encoders, when the size is even
    bgr: npt.NDArray[np.uint8]
    at: float = field(default_factory=time.monotonic)


class Camera:
    def __init__(self, settings: CameraSettings, options: RtspOptions | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self._detection: DetectionService | None = None
        self.processor: FrameProcessor | None = None
        self._options = replace(options or RtspOptions(), transport=settings.transport)
        self.reader = self._new_reader(0)
        self._generation = 0  # each start() gets fresh threads; stragglers of an older run are ignored
        self._connects_before = 0
        self._published = 0
        self._inflight: tuple[PendingDetection, float] | None = None
        self.max_mask_age_s = MAX_MASK_AGE_S
        self.frames_decoded = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.detections_run = 0
        self.fps = RateMeter()
        self.latest: Published | None = None
        self._pending: av.VideoFrame | None = None
        self._pending_ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self._running = False
        self._viewers = 0
        self._linger: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop, detection: DetectionService) -> None:
        """Attach to the event loop and the shared detector (once it has loaded); always-on cameras start."""
        self._loop = loop
        self._waiters = asyncio.Event()
        self._detection = detection
        self.processor = FrameProcessor(detection.detector, self.settings.anonymize, stream_id=f"camera {self.name}")
        self.processor.detect_size = self.settings.detect_size
        self.processor.upscale = False
        if self.settings.always_on:
            self.start()

    @property
    def ready(self) -> bool:
        # A detector stopped for good (the GPU failed under --require-gpu) serves no new viewer.
        return self.processor is not None and (self._detection is None or self._detection.failed is None)

    def _new_reader(self, generation: int) -> RtspReader:
        return RtspReader(self.name, self.settings.url, lambda frame: self._on_decoded(frame, generation),
                          self._options)

    def start(self) -> None:
        """Start pulling with fresh threads. Never blocks: threads of a previous run that are still winding down
        (a read can take up to the read timeout to notice) belong to an older generation and are ignored."""
        if self._running or self.processor is None:
            return
        self._running = True
        self._generation += 1
        self._connects_before += self.reader.connects
        self.reader = self._new_reader(self._generation)
        self._worker = threading.Thread(target=self._process_loop, args=(self._generation,),
                                        name=f"camera-{self.name}", daemon=True)
        self._worker.start()
        self.reader.start()
        logger.info("[camera %s] started (%s)", self.name, redact(self.settings.url))

    def stop(self, join_s: float | None = None) -> None:
        """Stop pulling; with ``join_s``, wait that long for the threads (never from the event loop)."""
        if not self._running:
            return
        self._running = False
        reader, worker = self.reader, self._worker
        reader.stop(join_s)
        with self._pending_ready:
            self._pending = None
            self._pending_ready.notify_all()
        if worker is not None and join_s is not None:
            worker.join(join_s)
        self.latest = None  # a stopped camera shows nothing rather than a stale picture
        logger.info("[camera %s] stopped", self.name)

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
    def _on_decoded(self, frame: av.VideoFrame, generation: int) -> None:
        """Reader thread: keep only the newest decoded frame for the processing thread."""
        if generation != self._generation or not self._running:
            return
        self.frames_decoded += 1
        with self._pending_ready:
            if self._pending is not None:
                self.frames_dropped += 1
            self._pending = frame
            self._pending_ready.notify()

    def _process_loop(self, generation: int) -> None:
        def current() -> bool:
            return self._running and self._generation == generation

        while True:
            with self._pending_ready:
                while self._pending is None and current():
                    self._pending_ready.wait(0.5)
                if not current():
                    return
                frame, self._pending = self._pending, None
                if frame is None:
                    continue
            try:
                self._process(frame, generation)
            except Exception:
                # Never publish the raw frame: this one is skipped, the next one is tried.
                logger.exception("[camera %s] processing a frame failed; frame skipped", self.name)

    def _process(self, frame: av.VideoFrame, generation: int) -> None:
        """Hide one decoded frame with the newest detection no older than ``max_mask_age_s``.

        Detection runs on the shared inference thread on the newest frame, while frames keep being published at
        the camera's rate, each hidden with the newest result's face tracks (see AnonymizedTrack). When that
        result is too old (the detector is shared by several cameras and sessions), this waits for a fresh one:
        viewers then get fewer frames, never masks older than the limit.
        """
        processor, detection = self.processor, self._detection
        assert processor is not None and detection is not None, "started before bind()"
        image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
        t = float(frame.time) if frame.time is not None else time.monotonic()
        self._collect(processor, detection, block=False)
        if self._inflight is None:
            self._detect(processor, detection, image, t)
        if processor.needs_fresh(t, self.max_mask_age_s, image):
            self._collect(processor, detection, block=True)
            if processor.needs_fresh(t, self.max_mask_age_s, image):
                self._detect(processor, detection, image, t)
                self._collect(processor, detection, block=True)
        processor.apply_tracked(image, t)
        h, w = image.shape[:2]
        yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), np.uint8) if h % 2 == 0 and w % 2 == 0 else None
        if generation != self._generation or not self._running:
            return  # stopped while this frame was processed
        # Sequence numbers run on across restarts: a viewer that stays through a stop and start must still see
        # the new frames as newer than the last one it got.
        self._published += 1
        self.latest = Published(self._published, yuv, image)
        self.frames_processed += 1
        self.fps.tick()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_viewers)

    def _detect(self, processor: FrameProcessor, detection: DetectionService, image: npt.NDArray[np.uint8],
                t: float) -> None:
        processor.detecting(image, t)
        self._inflight = (detection.submit_live(processor, image.copy(), t), t)

    def _collect(self, processor: FrameProcessor, detection: DetectionService, block: bool) -> None:
        if self._inflight is None:
            return
        pending, t_detected = self._inflight
        result = detection.collect(processor, pending, block)
        if result is None:
            return
        self._inflight = None
        self.detections_run += 1
        if result[0] is not None:
            processor.observe(result[0], t_detected, result[1])

    def _wake_viewers(self) -> None:
        if self._waiters is not None:
            waiters, self._waiters = self._waiters, asyncio.Event()
            waiters.set()

    async def next_frame(self, after_seq: int) -> Published:
        """The newest anonymized frame newer than ``after_seq`` (waits for it)."""
        while True:
            latest = self.latest
            if latest is not None and latest.seq > after_seq:
                return latest
            assert self._waiters is not None, "camera not bound to the event loop"
            await self._waiters.wait()

    def status(self) -> dict[str, Any]:
        latest = self.latest
        state: CameraState = self.reader.state if self._running else "stopped"
        return {
            "name": self.name, "state": state, "error": self.reader.last_error if state != "live" else None,
            "always_on": self.settings.always_on, "viewers": self._viewers, "fps": round(self.fps.rate(), 1),
            "last_frame_age_s": round(time.monotonic() - latest.at, 2) if latest is not None else None,
            "width": int(latest.bgr.shape[1]) if latest is not None else None,
            "height": int(latest.bgr.shape[0]) if latest is not None else None,
            "frames_decoded": self.frames_decoded, "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped, "detections": self.detections_run,
            "frames_hidden_whole": self.processor.stats.frames_hidden_whole if self.processor else 0,
            "connects": self._connects_before + self.reader.connects,
            "mode": self.settings.anonymize.mode, "transport": self.settings.transport,
        }


class CameraManager:
    def __init__(self, cameras: Iterable[CameraSettings], options: RtspOptions | None = None,
                 max_mask_age_s: float = MAX_MASK_AGE_S) -> None:
        self._cameras: dict[str, Camera] = {}
        for settings in cameras:
            if settings.name in self._cameras:
                raise ValueError(f"camera name {settings.name!r} is used twice")
            self._cameras[settings.name] = Camera(settings, options)
            self._cameras[settings.name].max_mask_age_s = max_mask_age_s

    def bind(self, loop: asyncio.AbstractEventLoop, detection: DetectionService) -> None:
        for camera in self._cameras.values():
            camera.bind(loop, detection)

    def get(self, name: str) -> Camera | None:
        return self._cameras.get(name)

    def __iter__(self) -> Any:
        return iter(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)

    def stop_all(self, join_s: float = 10.0) -> None:
        for camera in self._cameras.values():
            camera.stop()
        for camera in self._cameras.values():
            camera.stop(join_s)
