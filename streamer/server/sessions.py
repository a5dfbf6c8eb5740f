"""Peer sessions: a live webcam session (its own pipeline) or a camera viewer (WHEP), each one
RTCPeerConnection with a clean close on failure, on a connect timeout, on DELETE and at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from ..audit import AuditRing
from ..detection_service import DetectionService
from ..identity.gallery import Gallery
from ..identity.policy import IdentityPolicy
from ..identity.service import FaceRecognition
from ..malloc import release_free_memory
from ..processor import FrameProcessor
from ..scheduler import StreamCounters
from ..settings import LiveSettings
from ..tracks import AnonymizedTrack, CameraTrack, FrameFeed
from .config import ServerConfig
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)


class PeerSession:
    """What every peer has: the connection, its tracks and tasks, and a close that is safe to call twice."""

    label = "peer"

    def __init__(self, config: ServerConfig, registry: SessionRegistry) -> None:
        self.id = secrets.token_urlsafe(9)
        self.config = config
        self.created = time.monotonic()
        self._registry = registry
        ice = [RTCIceServer(urls=s.url, username=s.username, credential=s.credential) for s in config.ice_servers]
        # Always an explicit list: with none, aiortc would fall back to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        self._tracks: list[MediaStreamTrack] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        self.pc.on("connectionstatechange", self._on_state)
        registry.add(self)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, track: MediaStreamTrack) -> None:
        """Unread remote tracks queue without bound inside aiortc: read and drop what we do not send back."""
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        logger.info("[%s %s] connection %s", self.label, self.id, state)
        if state in ("failed", "closed"):
            await self.close()

    def watch_connect(self) -> None:
        """Close the peer if it never connects (a client that posted an offer and vanished)."""
        async def watch() -> None:
            await asyncio.sleep(self.config.connect_timeout_s)
            if self.pc.connectionState != "connected":
                logger.warning("[%s %s] not connected after %.0f s; closing", self.label, self.id,
                               self.config.connect_timeout_s)
                await self.close()
        self._spawn(watch())

    async def close(self) -> None:
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
        try:
            await self.pc.close()
        except Exception as exc:
            # aiortc's close stops at the first transceiver that never got a transport (an offer whose BUNDLE
            # names a mid it lacks): stop what it skipped, or their ICE sockets would stay open for good.
            logger.warning("[%s %s] aiortc could not close the connection (%r); stopping its transports", self.label,
                           self.id, exc)
            dtls: list[Any] = [t.receiver.transport for t in self.pc.getTransceivers()]
            if self.pc.sctp is not None:
                dtls.append(self.pc.sctp.transport)
            for transport in {t for t in dtls if t is not None}:
                with contextlib.suppress(Exception):
                    await transport.stop()
                with contextlib.suppress(Exception):
                    await transport.transport.stop()
        logger.info("[%s %s] closed after %.0f s", self.label, self.id, time.monotonic() - self.created)
        # The session's codec buffers were freed just now; without this the process keeps them resident.
        await asyncio.to_thread(release_free_memory)


class LiveSession(PeerSession):
    """A browser's webcam in, the same video with faces hidden out, on one connection."""

    label = "session"

    def __init__(self, config: ServerConfig, registry: SessionRegistry, detection: DetectionService,
                 metrics: ServerMetrics, settings: LiveSettings, recognition: FaceRecognition | None = None) -> None:
        super().__init__(config, registry)
        # The faces this viewer enrolled: embeddings only, in memory, gone with the session.
        self.gallery = Gallery()
        self._recognition = recognition or FaceRecognition()
        self.policy: IdentityPolicy | None = None
        self.settings = settings
        self.counters = StreamCounters()
        self.processor = FrameProcessor(detection.detector, settings.anonymize, stream_id=f"session {self.id}")
        self.processor.threshold = settings.threshold
        self.processor.detect_size = config.webcam_detect_size
        self.processor.upscale = False
        self.processor.zones = settings.zones
        self.audit = AuditRing(config.audit_minutes * 60)
        self.processor.audit = self.audit
        if settings.identity != "off":
            self.identity_policy()
        self._detection = detection
        self._metrics = metrics
        self.video: AnonymizedTrack | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        logger.info("[session %s] remote %s track", self.id, track.kind)
        if self._closing is not None:
            return  # closing already walked the tracks: one made now would never be stopped
        if track.kind == "video" and self.video is None:
            self.video = AnonymizedTrack(track, self.processor, self._detection, self.counters,
                                         self._metrics.stream_hooks(), outline=lambda: self.settings.debug)
            self._tracks.append(self.video)
            self.pc.addTrack(self.video)
        elif track.kind == "audio" and self.config.audio == "passthrough":
            self.pc.addTrack(track)
        else:
            self._spawn(self._drain(track))

    def update(self, changes: Any) -> LiveSettings:
        new = self.settings.updated(changes)
        self.settings = new
        self.processor.settings = new.anonymize
        self.processor.threshold = new.threshold
        self.processor.zones = new.zones
        if new.identity != "off" or self.policy is not None:
            self.identity_policy().mode = new.identity
        logger.info("[session %s] settings now %s", self.id, {k: v for k, v in new.as_dict().items() if k != "zones"}
                    | {"zones": len(new.zones)})
        return new

    def identity_policy(self) -> IdentityPolicy:
        """The session's identity rule, made on first need. Face recognition must be running already (the routes
        start it off the event loop): this never blocks."""
        if self.policy is None:
            if not self._recognition.started:
                raise RuntimeError("face recognition is not running")
            self.policy = IdentityPolicy(self.gallery, self._recognition.embedder(), self.settings.identity,
                                         f"session {self.id}")
            self.processor.identity = self.policy
        return self.policy

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        stats = self.processor.stats.snapshot()
        return {
            "session": self.id, "state": self.state, "settings": self.settings.as_dict(),
            "frames_in": c.frames_in, "frames_out": c.frames_out, "frames_dropped": c.frames_dropped,
            "frames_unsent": c.frames_unsent, "frames_hidden_whole": c.frames_hidden_whole,
            "detector_errors": int(stats["detector_errors"]),
            "detections_late": int(stats["detections_late"]),
            "fps_in": round(c.fps_in.rate(), 1), "fps_out": round(c.fps_out.rate(), 1),
            "processing_ms": round(c.processing_ms, 1), "inference_ms": round(c.inference_ms, 1),
            "detections_per_s": round(c.detect_rate.rate(), 1),
            "width": c.width, "height": c.height, "provider": self._detection.provider,
        }

    async def _close(self) -> None:
        await super()._close()
        if self.policy is not None:
            self.policy.stop()
        self.gallery.clear()
        c = self.counters
        logger.info("[session %s] %d frames in, %d out, %d dropped", self.id, c.frames_in, c.frames_out,
                    c.frames_dropped)


class ViewerSession(PeerSession):
    """A WHEP viewer of a camera: receives the camera's anonymized frames, sends nothing we keep."""

    label = "viewer"

    def __init__(self, config: ServerConfig, registry: SessionRegistry, feed: FrameFeed) -> None:
        super().__init__(config, registry)
        self.camera = feed.name
        self._feed = feed
        self.pc.on("track", lambda track: self._spawn(self._drain(track)))

    def attach(self) -> bool:
        """Send the camera on the offer's video transceiver; False when the offer has none we may send on."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video" and transceiver.sender.track is None:
                track = CameraTrack(self._feed)
                self._tracks.append(track)
                self.pc.addTrack(track)
                return True
        return False


class SessionRegistry:
    def __init__(self, on_count: Any = None) -> None:
        self._sessions: dict[str, PeerSession] = {}
        self._on_count = on_count  # callable(count) for a gauge

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: PeerSession) -> None:
        self._sessions[session.id] = session
        self._count()

    def remove(self, session: PeerSession) -> None:
        if self._sessions.pop(session.id, None) is not None:
            self._count()

    def _count(self) -> None:
        if self._on_count is not None:
            self._on_count(len(self._sessions))

    def get(self, session_id: str) -> PeerSession | None:
        return self._sessions.get(session_id)

    def values(self) -> list[PeerSession]:
        return list(self._sessions.values())

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close() for s in list(self._sessions.values())), return_exceptions=True)
