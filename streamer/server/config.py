"""Service settings: what `serve` was started with, validated once."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models import DetectorConfig
from models.coverage import DetectSize, parse_detect_size
from models.precision import PrecisionChoice
from models.runtime import Device
from models.triton import TritonTarget, TritonTLS

from ..camera_config import CameraSettings
from ..shards import Shard
from .hostnames import host_name
from .turn import TurnRelay

AudioPolicy = Literal["drop", "passthrough"]
ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
ICE_URL = re.compile(r"(?P<host>[^?:@/\s\[\]]+)(?::(?P<port>[0-9]{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?")


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
    # Checked here, once, in aiortc's own syntax: a URL it cannot parse would otherwise fail every offer's ICE
    # gathering, long after start-up.
    match = ICE_URL.fullmatch(rest)
    if match is None:
        raise ValueError(f"--ice-server {scheme}:{rest}: expected HOST[:PORT] (a host name or IPv4 address, no "
                         "IPv6), then nothing but ?transport=udp|tcp")
    port, transport = match["port"], match["transport"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"--ice-server {scheme}:{rest}: the port must be within 1..65535")
    if transport is not None and (scheme.startswith("stun") or (scheme == "turns" and transport != "tcp")):
        raise ValueError(f"--ice-server {scheme}:{rest}: {scheme} does not take ?transport={transport}")
    return IceServer(f"{scheme}:{rest}", username, credential)


def _check_token(token: str) -> None:
    """A token travels in headers and form fields: printable ASCII without spaces, and not trivially short."""
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("the access token must be printable ASCII without spaces")
    if len(token) < 8:
        raise ValueError("the access token must be at least 8 characters (16 or more random ones are better)")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9002
    device: Device = "auto"
    detector_url: str | None = None  # triton://HOST:PORT/MODEL: the network runs on that Triton server
    detector_tls: TritonTLS | None = None  # ... spoken to over TLS
    model: Path | None = None
    precision: PrecisionChoice = "auto"  # auto: int8 on the CPU, fp32 on CUDA (models.precision)
    detector: DetectorConfig = field(default_factory=DetectorConfig)  # its detect_size: uploads and cameras
    webcam_detect_size: DetectSize = "fast"  # browsers' webcams: faces close to the camera, frames per second count
    ice_servers: tuple[IceServer, ...] = ()
    audio: AudioPolicy = "drop"
    max_sessions: int = 4
    max_viewers: int = 16
    max_detector_load: float = 0.9  # refuse a stream that would push the shared detector past this (0: off)
    cameras: tuple[CameraSettings, ...] = ()
    cameras_file: Path | None = None  # --config: where changes through the API are written (None: memory only)
    fixed_cameras: frozenset[str] = frozenset()  # --camera names: the API may not change or remove them
    # --shard: this replica runs only its shard's share of ``cameras`` (shards.py); with more than one shard, the
    # cameras file is shared by every replica and the API may not change it.
    shard: Shard = field(default_factory=Shard)
    max_offer_bytes: int = 256 * 1024
    detect_deadline_s: float = 1.0  # a frame whose detection takes longer is hidden whole
    batch_size: int | None = None  # frames per inference across streams; None: by device (CUDA 32, CPU 1)
    batch_wait_ms: float | None = None  # how long a batch waits for active streams; None: by device (CUDA 3, CPU 0)
    inference_threads: int | None = None  # detections at once; None: by device (BatchPolicy.for_provider)
    require_gpu: bool = False  # never fall back to the CPU: refuse to start, or stop detecting if CUDA fails
    connect_timeout_s: float = 30.0  # a peer that never connects is closed after this
    rtsp_timeout_s: float = 5.0  # a camera that sends nothing this long is reconnected
    max_upload_mb: int = 500
    max_queued_jobs: int = 8
    job_workers: int = 1
    job_ttl_s: float = 3600.0  # results are removed this long after their job finished
    jobs_dir: Path | None = None  # None: a private per-user folder (streamer.jobs.JobManager chooses it)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = field(default=None, repr=False)  # --token: kept out of repr, so out of any log line
    insecure_no_token: bool = False  # --insecure-no-token: the operator's own authentication is in front
    allowed_hosts: tuple[str, ...] = ()  # --allowed-host: Host names served besides loopback and our addresses
    turn: TurnRelay | None = None  # --turn-url + --turn-secret-file: short-lived TURN credentials in /config
    audit_minutes: float = 10.0  # each camera and live session keeps this long of its audit trail (audit.py)

    def __post_init__(self) -> None:
        if self.token is not None:
            _check_token(self.token)
        try:
            object.__setattr__(self, "webcam_detect_size", parse_detect_size(self.webcam_detect_size))
        except ValueError as exc:
            raise ValueError(f"--webcam-detect-size: {exc}") from None
        if self.max_sessions < 1:
            raise ValueError("--max-sessions must be at least 1")
        if self.max_viewers < 1:
            raise ValueError("--max-viewers must be at least 1")
        if not 0.0 <= self.max_detector_load <= 10.0:
            raise ValueError("--max-detector-load must be within 0..10 (0 turns the check off)")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique: {', '.join(sorted(names))}")
        for name in self.allowed_hosts:
            if not name or host_name(name) is None or "/" in name:
                raise ValueError(f"--allowed-host {name!r}: expected a host name or address (no scheme or path)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be within 0..65535, not {self.port}")
        if self.max_upload_mb < 1 or self.max_queued_jobs < 1 or self.job_workers < 1 or not self.job_ttl_s > 0:
            raise ValueError("--max-upload-mb, --max-queued-jobs, --job-workers and --job-ttl must be positive")
        if not math.isfinite(self.job_ttl_s):
            raise ValueError("--job-ttl must be a finite number of seconds")
        if not 0.5 <= self.rtsp_timeout_s <= 120:
            raise ValueError("--rtsp-timeout must be within 0.5..120 s")
        if not 0.05 <= self.detect_deadline_s <= 10:
            raise ValueError("--detect-deadline must be within 0.05..10 s")
        if self.detector_url is not None:
            TritonTarget.parse(self.detector_url)  # a typo fails at start, not at the first frame
        elif self.detector_tls is not None:
            raise ValueError("--detector-ca, --detector-cert and --detector-key are for --detector triton://...")
        if self.batch_size is not None and not 1 <= self.batch_size <= 256:
            raise ValueError("--batch-size must be within 1..256")
        if self.inference_threads is not None and not 1 <= self.inference_threads <= 64:
            raise ValueError("--inference-threads must be within 1..64")
        if self.batch_wait_ms is not None and not 0 <= self.batch_wait_ms <= 100:
            raise ValueError("--batch-wait-ms must be within 0..100")
        if not 0.5 <= self.audit_minutes <= 60:  # NaN fails this too
            raise ValueError("--audit-minutes must be within 0.5..60")
