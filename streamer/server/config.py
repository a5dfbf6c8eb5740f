"""Service settings: what `serve` was started with, validated once."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models import DetectorConfig
from models.runtime import Device

from ..cameras import CameraSettings

AudioPolicy = Literal["drop", "passthrough"]
ICE_SCHEMES = ("stun", "stuns", "turn", "turns")


@dataclass(frozen=True)
class IceServer:
    url: str
    username: str | None = None
    credential: str | None = None

    def as_client_dict(self) -> dict[str, Any]:
        """The RTCIceServer dictionary a browser takes."""
        out: dict[str, Any] = {"urls": [self.url]}
        if self.username is not None:
            out["username"] = self.username
            out["credential"] = self.credential
        return out


def parse_ice_server(text: str) -> IceServer:
    """``stun:host[:port]`` or ``turn[s]:user:password@host[:port][?transport=udp|tcp]``.

    Credentials ride in the argument (and stay out of logs) because a TURN relay is useless without them.
    """
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in ICE_SCHEMES or not rest:
        raise ValueError(f"--ice-server {text!r}: expected stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT]")
    username = credential = None
    if "@" in rest:
        creds, _, rest = rest.rpartition("@")
        username, sep, credential = creds.partition(":")
        if not sep or not username:
            raise ValueError(f"--ice-server for {rest}: credentials must be USER:PASSWORD@")
    host = rest.split("?", 1)[0].rsplit(":", 1)[0]
    if not host:
        raise ValueError(f"--ice-server {scheme}:...: no host")
    if scheme.startswith("turn") and username is None:
        raise ValueError(f"--ice-server {scheme}:{rest}: a TURN server needs USER:PASSWORD@")
    return IceServer(f"{scheme}:{rest}", username, credential)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9002
    device: Device = "auto"
    model: Path | None = None
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    ice_servers: tuple[IceServer, ...] = ()
    audio: AudioPolicy = "drop"
    max_sessions: int = 4
    max_viewers: int = 16
    cameras: tuple[CameraSettings, ...] = ()
    max_offer_bytes: int = 256 * 1024
    max_mask_age_s: float = 0.1  # live frames are hidden with detections at most this old, else they wait
    detect_deadline_s: float = 1.0  # a frame whose detection takes longer is hidden whole
    connect_timeout_s: float = 30.0  # a peer that never connects is closed after this
    rtsp_timeout_s: float = 5.0  # a camera that sends nothing this long is reconnected
    max_upload_mb: int = 500
    max_queued_jobs: int = 8
    job_workers: int = 1
    job_ttl_s: float = 3600.0  # results are removed this long after their job finished
    jobs_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "face-streamer-jobs")
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError("--max-sessions must be at least 1")
        if self.max_viewers < 1:
            raise ValueError("--max-viewers must be at least 1")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique: {', '.join(sorted(names))}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.max_upload_mb < 1 or self.max_queued_jobs < 1 or self.job_workers < 1 or self.job_ttl_s <= 0:
            raise ValueError("--max-upload-mb, --max-queued-jobs, --job-workers and --job-ttl must be positive")
        if not 0.5 <= self.rtsp_timeout_s <= 120:
            raise ValueError("--rtsp-timeout must be within 0.5..120 s")
        if not 0.0 <= self.max_mask_age_s <= 0.5:
            raise ValueError("--max-mask-age must be within 0..0.5 s (0: every frame waits for its own detection)")
        if not 0.05 <= self.detect_deadline_s <= 10:
            raise ValueError("--detect-deadline must be within 0.05..10 s")
