"""Cameras: each pulled once, decoded once and anonymized once per frame, whatever the number of viewers; started
by its first viewer (or at once when always on) and stopped a while after its last one left.

    RtspReader thread --push--> LiveScheduler (newest frame, 1 slot; its worker: detect on the frame -> hide)
        --> FrameFanOut: the latest hidden frame, for every viewer (CameraTrack) and snapshot

Decoding keeps pace with the camera even when detection cannot: the scheduler takes only the newest decoded frame,
and what it skipped is counted as dropped. Raw frames never leave this module. The frame rules are the scheduler's,
the same as a webcam's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from models.coverage import DetectSize

from .audit import AuditRing
from .camera_config import CameraSettings, camera_to_mapping
from .camera_fanout import FrameFanOut
from .detection_service import DetectionService
from .identity.gallery import Gallery
from .identity.policy import IdentityPolicy
from .identity.service import FaceRecognition
from .processor import FrameProcessor, ProcessorStats
from .redact import redact_url
from .scheduler import HiddenFrame, LiveScheduler, StreamCounters, StreamHooks
from .sinks.restream import Restreamer
from .sources.rtsp import CameraState, RtspOptions, RtspReader

logger = logging.getLogger(__name__)

LINGER_S = 10.0  # an on-demand camera keeps running this long after its last viewer left
AUDIT_SECONDS = 600.0


def _gallery(settings: CameraSettings) -> Gallery | None:
    from pathlib import Path

    return Gallery.load(Path(settings.gallery)) if settings.gallery is not None else None


class Camera:
    """One camera: its puller and scheduler while it runs (a new pair, with new face tracks, for each start),
    and its viewers, who share the newest hidden frame through ``frames``."""

    def __init__(self, settings: CameraSettings, options: RtspOptions | None = None, *,
                 audit_seconds: float = AUDIT_SECONDS, recognition: FaceRecognition | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.audit = AuditRing(audit_seconds)  # kept across restarts and edits: the camera's last minutes
        self._recognition = recognition
        self._gallery = _gallery(settings)
        self.restream: Restreamer | None = None  # the running push, when the settings ask for one
        self._restreams: list[Restreamer] = []  # stopped pushes whose threads may still be ending
        self._detection: DetectionService | None = None
        self._hooks = StreamHooks()
        self._base_options = options or RtspOptions()
        self._options = replace(self._base_options, transport=settings.transport)
        self.reader = RtspReader(self.name, settings.url, lambda frame: None, self._options)  # until started
        self.scheduler: LiveScheduler | None = None
        self._generation = 0  # each start() gets a fresh reader and scheduler; an older run's output is ignored
        self._connects_before = 0
        # Kept across restarts, so the status and /metrics count the camera's whole life.
        self.counters = StreamCounters()
        self.stats = ProcessorStats()
        self.frames = FrameFanOut()
        self._running = False
        self._retired: list[tuple[RtspReader, LiveScheduler]] = []  # stopped runs whose threads may still be ending
        self._retired_lock = threading.Lock()
        # The run check and the hand-over of a frame are one step against stop() and start(): a frame of a
        # stopped run never becomes the picture of the next one.
        self._publish_lock = threading.Lock()
        self._viewers = 0
        self._linger: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fixed = False  # set with --camera: the API may not change or remove it (README, "Cameras")
        self._removed = False  # removed through the API: never starts again, whoever still holds it

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop, detection: DetectionService,
             hooks: StreamHooks | None = None) -> None:
        """Attach to the event loop and the shared detector (once it has loaded); always-on cameras start."""
        self._loop = loop
        self.frames.bind(loop)
        self._detection = detection
        self._hooks = hooks or StreamHooks()
        if self._always:
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
        processor.zones = self.settings.zones
        processor.audit = self.audit
        if self._gallery is not None:
            if self._recognition is None or not self._recognition.started:
                # Never guessed: without recognition every face is hidden, as with no gallery at all.
                logger.error("[camera %s] face recognition is not running; every face is hidden", self.name)
            else:
                processor.identity = IdentityPolicy(self._gallery, self._recognition.embedder(),
                                                    self.settings.identity, f"camera {self.name}")
        return processor

    @property
    def _always(self) -> bool:
        """Runs without viewers: always on, or restreamed (whatever records there must get every frame)."""
        return self.settings.always_on or self.settings.restream is not None

    def start(self) -> None:
        """Start pulling with a fresh reader and scheduler. Never blocks: the threads of a previous run that are
        still winding down (a read can take up to the read timeout to notice) belong to an older generation."""
        detection = self._detection
        if self._running or detection is None or self._removed:
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
        if self.settings.restream is not None:
            self.restream = Restreamer(self.name, self.settings.restream, self.frames)
            self.restream.start()
        logger.info("[camera %s] started (%s)", self.name, redact_url(self.settings.url))

    def stop(self, join_s: float | None = None) -> None:
        """Stop pulling; with ``join_s``, wait that long for the threads of every stopped run (never from the event
        loop). Safe to call twice: a second call still waits for threads the first one left running."""
        if self._running:
            with self._publish_lock:
                self._running = False
                self.frames.clear()  # a stopped camera shows nothing rather than a stale picture
            reader, scheduler = self.reader, self.scheduler
            assert scheduler is not None
            with self._retired_lock:
                self._retired.append((reader, scheduler))
            reader.stop()
            scheduler.stop()
            if self.restream is not None:
                self._restreams.append(self.restream)
                self.restream.stop()
            logger.info("[camera %s] stopped", self.name)
            with self._retired_lock:  # runs that have ended need no join: a camera edited often keeps none
                self._retired = [(r, s) for r, s in self._retired if r.running or s.running]
        if join_s is not None:
            self.join(join_s)

    def reconfigure(self, settings: CameraSettings) -> None:
        """New settings (same name): a running pull stops, and one with the new settings starts when a viewer or
        ``always_on`` needs it. Viewers stay connected and get the new run's frames; the old run's threads end on
        their own (``join`` waits for them)."""
        assert settings.name == self.name
        self.stop()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._connects_before += self.reader.connects
        self.settings = settings
        self._gallery = _gallery(settings)
        self._options = replace(self._base_options, transport=settings.transport)
        # A fresh idle reader: the old URL's last error is not this camera's any more.
        self.reader = RtspReader(self.name, settings.url, lambda frame: None, self._options)
        if self._always or self._viewers:
            self.start()

    def remove(self) -> None:
        """Stop for good (without waiting; ``join`` does): a viewer or snapshot that still holds this camera cannot
        start it again."""
        self._removed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.stop()

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
        for restream in list(self._restreams):
            restream.stop(max(0.0, deadline - time.monotonic()))
            if not restream.running:
                self._restreams.remove(restream)
        with self._retired_lock:
            return not self._retired and not self._restreams

    def acquire(self) -> None:
        """A viewer (or a snapshot) needs frames: start on demand, cancel a pending linger stop."""
        self._viewers += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.start()

    def release(self) -> None:
        self._viewers = max(0, self._viewers - 1)
        if self._viewers == 0 and not self._always and self._loop is not None and self._running:
            if self._linger is not None:
                self._linger.cancel()
            self._linger = self._loop.call_later(LINGER_S, self._linger_stop)

    def _linger_stop(self) -> None:
        self._linger = None
        if self._viewers == 0 and not self._always:
            self.stop()  # no join: a viewer arriving right after simply starts a new generation

    @property
    def viewers(self) -> int:
        return self._viewers

    # -- frames ------------------------------------------------------------------------------------------------
    def _publish(self, hidden: HiddenFrame, generation: int) -> None:
        """On the scheduler's thread: hand ``hidden`` to the viewers, unless its run has ended."""
        with self._publish_lock:
            if generation != self._generation or not self._running:
                return  # stopped (or restarted) while this frame was hidden
            self.frames.put(hidden)
        self.frames.wake()

    async def next_frame(self, after_seq: int) -> HiddenFrame:
        return await self.frames.next_frame(after_seq)

    def status(self) -> dict[str, Any]:
        latest, c = self.frames.latest, self.counters
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
            "url": redact_url(self.settings.url), "fixed": self.fixed,
            "restream": self.restream.status() if self.restream is not None and self._running else None,
            # What the camera was set up with, as the cameras file and PUT /cameras/{name} take it (the URL
            # redacted): a client edits these without knowing the password.
            "settings": camera_to_mapping(self.settings),
        }

    @property
    def detect_size(self) -> DetectSize | None:
        """The coverage this camera's frames are detected at: its own, else the service's (None before binding)."""
        if self.settings.detect_size is not None:
            return self.settings.detect_size
        return self._detection.detector.config.detect_size if self._detection is not None else None


class CameraManager:
    """The cameras by name. Cameras may be added and removed at run time (on the event loop; server/camera_admin.py
    serializes that); ``fixed`` names (``--camera``) are marked so the API leaves them alone."""

    def __init__(self, cameras: Iterable[CameraSettings], options: RtspOptions | None = None,
                 fixed: Iterable[str] = (), *, audit_seconds: float = AUDIT_SECONDS,
                 recognition: FaceRecognition | None = None) -> None:
        self._options = options
        self._camera_args: dict[str, Any] = {"audit_seconds": audit_seconds, "recognition": recognition}
        self._cameras: dict[str, Camera] = {}
        self._removed: list[Camera] = []  # removed cameras whose threads may still be ending
        self._binding: tuple[asyncio.AbstractEventLoop, DetectionService, StreamHooks | None] | None = None
        fixed = set(fixed)
        for settings in cameras:
            if settings.name in self._cameras:
                raise ValueError(f"camera name {settings.name!r} is used twice")
            camera = Camera(settings, options, **self._camera_args)
            camera.fixed = settings.name in fixed
            self._cameras[settings.name] = camera

    def bind(self, loop: asyncio.AbstractEventLoop, detection: DetectionService,
             hooks: StreamHooks | None = None) -> None:
        self._binding = (loop, detection, hooks)
        for camera in list(self._cameras.values()):
            camera.bind(loop, detection, hooks)

    def add(self, settings: CameraSettings) -> Camera:
        """A new camera, bound (and started, if always on) at once when the detector is ready, else with the
        others when it is."""
        if settings.name in self._cameras:
            raise ValueError(f"a camera named {settings.name!r} exists already")
        camera = Camera(settings, self._options, **self._camera_args)
        self._cameras[settings.name] = camera
        if self._binding is not None:
            camera.bind(*self._binding)
        return camera

    def remove(self, name: str) -> Camera | None:
        """Take the camera out and stop it for good, without waiting for its threads (``Camera.join`` does;
        ``stop_all`` waits for any still ending)."""
        camera = self._cameras.pop(name, None)
        if camera is not None:
            camera.remove()
            self._removed = [c for c in self._removed if not c.join(0)]
            self._removed.append(camera)
        return camera

    def get(self, name: str) -> Camera | None:
        return self._cameras.get(name)

    def __iter__(self) -> Any:
        # A copy: /metrics and /healthz may walk the cameras while one is added or removed.
        return iter(list(self._cameras.values()))

    def __len__(self) -> int:
        return len(self._cameras)

    def stop_all(self, join_s: float = 10.0) -> bool:
        """Stop every camera and wait (``join_s`` in all) for their threads; True when all have ended."""
        cameras = [*self._cameras.values(), *self._removed]
        for camera in cameras:
            camera.stop()  # all at once: each may take up to its read timeout to notice
        deadline = time.monotonic() + join_s
        return all([camera.join(max(0.0, deadline - time.monotonic())) for camera in cameras])
