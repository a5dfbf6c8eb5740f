"""Live webcam sessions: one RTCPeerConnection each, its pipeline, its counters, and a clean close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from concurrent.futures import Executor
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from ..detection_service import DetectionService
from ..processor import FrameProcessor
from ..settings import LiveSettings
from ..tracks import AnonymizedTrack, LatestFrameTrack, StreamCounters
from .config import ServerConfig
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)


class LiveSession:
    def __init__(self, config: ServerConfig, detection: DetectionService, executor: Executor,
                 metrics: ServerMetrics, settings: LiveSettings, registry: SessionRegistry) -> None:
        self.id = secrets.token_urlsafe(9)
        self.config = config
        self.created = time.monotonic()
        self.settings = settings
        self.counters = StreamCounters()
        self.processor = FrameProcessor(detection.detector, settings.anonymize, stream_id=self.id)
        self.processor.threshold = settings.threshold
        self._detection = detection
        self._executor = executor
        self._metrics = metrics
        self._registry = registry
        ice = [RTCIceServer(urls=s.url, username=s.username, credential=s.credential) for s in config.ice_servers]
        # Always an explicit list: with none, aiortc would fall back to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        self.video: AnonymizedTrack | None = None
        self._tracks: list[MediaStreamTrack] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        logger.info("[%s] remote %s track", self.id, track.kind)
        if track.kind == "video" and self.video is None:
            latest = LatestFrameTrack(track, self.counters, self.id, on_arrival=self._metrics.frames_in.inc,
                                      on_drop=self._metrics.frames_dropped.inc)
            self.video = AnonymizedTrack(latest, self.processor, self._detection, self._executor, self.counters,
                                         on_frame=self._on_frame, debug=lambda: self.settings.debug)
            self._tracks += [latest, self.video]
            self.pc.addTrack(self.video)
        elif track.kind == "audio" and self.config.audio == "passthrough":
            self.pc.addTrack(track)
        else:
            # Unread remote tracks queue without bound inside aiortc: drain what we do not send back.
            self._spawn(self._drain(track))

    def _on_frame(self, processing_s: float, hidden_whole: bool) -> None:
        m = self._metrics
        m.frames_out.inc()
        m.processing.observe(processing_s)
        if hidden_whole:
            m.frames_hidden_whole.inc()

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        logger.info("[%s] connection %s", self.id, state)
        if state in ("failed", "closed"):
            await self.close()

    def watch_connect(self) -> None:
        """Close the peer if it never connects (a client that posted an offer and vanished)."""
        async def watch() -> None:
            await asyncio.sleep(self.config.connect_timeout_s)
            if self.pc.connectionState != "connected":
                logger.warning("[%s] not connected after %.0f s; closing", self.id, self.config.connect_timeout_s)
                await self.close()
        self._spawn(watch())

    def update(self, changes: Any) -> LiveSettings:
        new = self.settings.updated(changes)
        self.settings = new
        self.processor.settings = new.anonymize
        self.processor.threshold = new.threshold
        logger.info("[%s] settings now %s", self.id, new.as_dict())
        return new

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        stats = self.processor.stats.snapshot()
        return {
            "session": self.id, "state": self.state, "settings": self.settings.as_dict(),
            "frames_in": c.frames_in, "frames_out": c.frames_out, "frames_dropped": c.frames_dropped,
            "frames_hidden_whole": int(stats["frames_hidden_whole"]), "detector_errors": int(stats["detector_errors"]),
            "detections_late": int(stats["detections_late"]),
            "fps_in": round(c.fps_in.rate(), 1), "fps_out": round(c.fps_out.rate(), 1),
            "processing_ms": round(c.processing_ms, 1), "inference_ms": round(c.inference_ms, 1),
            "width": c.width, "height": c.height, "provider": self._detection.provider,
        }

    async def close(self) -> None:
        """Stop the pipeline and the peer; safe to call any number of times, from any path."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._registry.remove(self)
        for track in self._tracks:
            track.stop()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self.pc.close()
        logger.info("[%s] closed after %.0f s: %d frames in, %d out, %d dropped", self.id,
                    time.monotonic() - self.created, self.counters.frames_in, self.counters.frames_out,
                    self.counters.frames_dropped)


class SessionRegistry:
    def __init__(self, metrics: ServerMetrics) -> None:
        self._sessions: dict[str, LiveSession] = {}
        self._metrics = metrics

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: LiveSession) -> None:
        self._sessions[session.id] = session
        self._metrics.active_sessions.set(len(self._sessions))

    def remove(self, session: LiveSession) -> None:
        if self._sessions.pop(session.id, None) is not None:
            self._metrics.active_sessions.set(len(self._sessions))

    def get(self, session_id: str) -> LiveSession | None:
        return self._sessions.get(session_id)

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close() for s in list(self._sessions.values())), return_exceptions=True)
