"""Live WebRTC loopback: a ground-truth clip sent over WebRTC to our server and to a plain aiortc echo, same machine.

    python -m bench.live_loopback [--quick] [--sizes 640x480,1280x720] [--seconds 20] [--warmup 3]
                                  [--device cpu] [--ramp-max 6] [--ramp-seconds 15] [--no-ramp]
                                  [--identity-budget 40] [--dump-dir DIR] [--clip PATH]

Everything runs inside a network namespace this benchmark creates and deletes itself (``fsbench-<pid>``: ``lo``
plus one veth pair, ``v0`` 10.77.0.1/24 and ``v1`` 10.77.0.2/24, both ends inside, no route out; aioice never
offers 127.0.0.1, so two peers on one machine need a real interface). Root and ``ip netns`` are needed.

For each frame size, two servers are measured one after the other, each in its own process inside the namespace:

- **echo**: a plain aiortc peer that sends the client's own video back (decoded, newest frame wins, re-encoded
  with VP8 like ours). It is the floor: what WebRTC, two codecs and this machine cost anyway. It hides nothing,
  so its frames show that the judges see the faces through VP8 both ways.
- **ours**: ``python -m streamer serve --insecure-no-token --host 10.77.0.1 --device cpu`` (readiness:
  ``GET /healthz`` 200).

The client is a third process in the namespace (aiortc, ``iceServers=[]``), so client encode/decode and the server
share the cores as they would on one laptop. It plays a ground-truth clip (``testkit.truth.virtual_camera``: a
camera panning and zooming over the annotated photos, a hard cut to other people every 3 s; see bench/_truth.py)
rendered CODE_H rows shorter than the frame, above a black band, played forward then backward at 30 fps like a
camera: frame n is due at start + n/fps, pts n*90000/fps in time base 1/90000, and frames the client was too late
for are skipped, not queued. Each sent frame carries its number as a barcode in the bottom-left corner of the band
(see :func:`stamp_code`; no true face is ever under it), because aiortc gives RTP timestamps a random offset; the
code is read back from every returned frame. Latency is from handing the frame to the sender (before VP8 encoding)
to the decoded frame arriving back at the client; also to the arrival of its last RTP packet, because aiortc's
jitter buffer releases a frame only when the next frame's first packet is in (one frame interval of the sender per
aiortc receiver; a browser decodes on the last packet).

Measured over the frames *sent* in the window after the warm-up (the camera keeps playing ``--tail`` s more, which
pushes the window's last frames out of the jitter buffers): frames/s that came back with a valid code, latency
p50/p95, frames back without a valid code, and CPU use of server, client and everything else. For ours, the
session counters (``GET /sessions/{id}``), the mean inference and processing times over the window (``/metrics``)
and the session's ``detections_per_s``, read every second of the window.

Leaks: during the window the client only keeps a copy of each returned frame (yuv420p, as decoded). After the run
(not timed) it judges every kept frame against the truth frame it shows with three judges (testkit.judges):
pixels, identity (dlib, within ``--identity-budget`` s per session) and the product's own detector, loaded as the
server loads it. Each judge's count of face-frames leaked goes into the result; a size passes only with 0 by every
judge. ``--clip`` plays a real clip instead: no ground truth, so nothing is judged and no size can pass.

Then the ramp: N concurrent 640x480 webcam sessions from one client process (N peer connections), N = 1, 2, ...
until ours no longer holds 25 fps per session (median) with 0 face-frames back (N = 2 is always run: the
two-session target), or N = ``--ramp-max``; then the echo at the same N, as the baseline. Per step: fps per
session, latency p50/p95 pooled over the sessions, server CPU, frames hidden whole, face-frames back per judge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any, cast

import av
import cv2
import numpy as np
import numpy.typing as npt
from aiohttp import ClientSession, ClientTimeout, web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from testkit.relay import LatestFrameRelay
from testkit.truth import TruthClip, TruthFrame

from ._common import REPO, Frame, fit_frame, markdown_table, parse_size
from ._truth import (
    JUDGES_TEXT,
    add_counts,
    checked_of,
    judge_outputs,
    leak_problems,
    leaked_of,
    load_judge_detector,
    make_judges,
    per_judge,
    place_codeless,
    to_i420,
    truth_clip,
    with_band,
)
from .run_all import cpu_model, load_average

SERVER_ADDR = "10.77.0.1"
CLIENT_ADDR = "10.77.0.2"
VIDEO_TIME_BASE = Fraction(1, 90000)
DEFAULT_SIZES = ("640x480", "1280x720")
# The ground-truth clip: this many seconds (or the run's length, when shorter), played forward then backward.
TRUTH_CLIP_S = 12.0
IDENTITY_BUDGET_S = 40.0  # dlib's seconds per session (per ramp step, shared by its sessions)
JUDGE_S_PER_FRAME = 0.1  # a generous allowance for judging a kept frame (colour conversion, truth, detector)

# The barcode: 16-px blocks in the bottom-left corner of the frame (the band below the truth picture), COLS wide and
# 5 rows high (128 x 80 px, kept narrow so that the padded mask of a large face reaching the bottom of the picture
# does not cover it). Top row: a guard (white, black, white, ...); next two rows: the frame number's BITS bits, most
# significant first, white = 1; last two rows: the same bits inverted. A frame counts as coded only when the guard is
# intact and every bit reads as the opposite of its complement, each block clearly dark or light (its inner half is
# sampled, away from the edges that VP8 smears).
BLOCK = 16
BITS = 16
COLS = 8
DATA_ROWS = BITS // COLS
CODE_ROWS = 1 + 2 * DATA_ROWS
CODE_W = COLS * BLOCK
CODE_H = CODE_ROWS * BLOCK
Y_LIGHT, Y_DARK = 235, 16
LIGHT_MIN, DARK_MAX = 170.0, 80.0
GUARD = np.array([1 - (i % 2) for i in range(COLS)], np.uint8)

# Ours, one session: fps out >= x; added p50 latency <= y ms (None: not a target). Every size: 0 face-frames back by
# every judge. (The issue: one 640x480 webcam on 2 cores, int8: >= 25 fps out, <= 60 ms added p50 over the plain
# aiortc echo, 0 face-frames back; 1280x720: >= 15 fps.)
TARGETS: dict[str, tuple[float, float | None]] = {"640x480": (25.0, 60.0), "1280x720": (15.0, None)}
# Two concurrent sessions (the ramp's N = 2 step): >= this many fps each, 0 face-frames back.
TWO_SESSIONS_FPS = 20.0
SESSION_POLL_S = 1.0
# The ramp: concurrent 640x480 webcam sessions at 30 fps, one more per step, until ours no longer holds this median
# fps per session (or --ramp-max).
RAMP_MIN_FPS = 25.0


# ------------------------------------------------------------------------------------------------ barcode


def stamp_code(i420: Frame, width: int, height: int, number: int) -> None:
    """Paint ``number`` (mod 2**BITS) into the bottom-left corner of a yuv420p frame (``(h*3/2, w)`` array),
    in place; the chroma under the code is set neutral."""
    bits = np.array([(number >> (BITS - 1 - k)) & 1 for k in range(BITS)], np.uint8).reshape(DATA_ROWS, COLS)
    rows = np.vstack([GUARD[None, :], bits, 1 - bits])  # (CODE_ROWS, COLS)
    cells = np.where(rows == 1, Y_LIGHT, Y_DARK).astype(np.uint8)
    y0 = height - CODE_H
    i420[y0:height, :CODE_W] = np.repeat(np.repeat(cells, BLOCK, axis=0), BLOCK, axis=1)
    # Chroma planes: U is rows h..h+h/4 (two half-width rows per line of h/2), V after it. Neutral grey = 128.
    u = i420[height:height + height // 4].reshape(height // 2, width // 2)
    v = i420[height + height // 4:].reshape(height // 2, width // 2)
    u[y0 // 2:, :CODE_W // 2] = 128
    v[y0 // 2:, :CODE_W // 2] = 128


def read_code(luma: npt.NDArray[np.uint8], sent_width: int, sent_height: int) -> int | None:
    """The number in a returned frame's luma plane, or None when there is no valid code."""
    h, w = luma.shape[:2]
    if (w, h) == (sent_width, sent_height):
        strip = luma[h - CODE_H:h, :CODE_W]
    else:  # a resized frame (aiortc does not resize; a browser might): scale the strip back
        sx, sy = w / sent_width, h / sent_height
        region = luma[max(0, round(h - CODE_H * sy)):h, :max(1, round(CODE_W * sx))]
        strip = np.asarray(cv2.resize(region, (CODE_W, CODE_H), interpolation=cv2.INTER_AREA), np.uint8)
    if strip.shape != (CODE_H, CODE_W):
        return None
    q = BLOCK // 4
    blocks = strip.reshape(CODE_ROWS, BLOCK, COLS, BLOCK)[:, q:BLOCK - q, :, q:BLOCK - q]
    means = blocks.mean(axis=(1, 3))  # (CODE_ROWS, COLS)
    light, dark = means >= LIGHT_MIN, means <= DARK_MAX
    if not (light | dark).all():
        return None
    rows = light.astype(np.uint8)
    bits, inverted = rows[1:1 + DATA_ROWS], rows[1 + DATA_ROWS:]
    if not (rows[0] == GUARD).all() or not (bits != inverted).all():
        return None
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return value


def luma_of(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane of a decoded frame as a (height, width) view (no colour conversion)."""
    plane = frame.planes[0]
    data: npt.NDArray[np.uint8] = np.frombuffer(cast(Any, plane), np.uint8)  # a view, no copy
    return data.reshape(-1, plane.line_size)[:frame.height, :frame.width]


# ------------------------------------------------------------------------------------------ source frames


@dataclass
class Source:
    """The frames to send at the frame size, yuv420p, not yet stamped; ``truth`` for a ground-truth clip."""

    name: str
    fps: float
    width: int
    height: int
    frames: list[Frame]
    # The picture above the barcode band (``height - CODE_H`` rows): what each frame shows, face boxes included.
    # None for a real clip, which nothing can be judged against.
    truth: TruthClip | None = None

    def index_for(self, n: int) -> int:
        """Frame n of the run plays source frame ``index_for(n)``: forward, then backward, and so on."""
        count = len(self.frames)
        if count == 1:
            return 0
        period = 2 * count - 2
        m = n % period
        return m if m < count else period - m

    def truth_frame(self, n: int) -> TruthFrame:
        """What frame n of the run shows, at the frame size: the truth picture above the (black) band."""
        if self.truth is None:
            raise ValueError(f"{self.name} has no ground truth")
        return with_band(self.truth.frame(self.index_for(n)), CODE_H)


def truth_source(width: int, height: int, seconds: float, seed: int = 0,
                 face_px: tuple[float, float] | None = None) -> Source:
    """A ground-truth clip (bench/_truth.py) rendered at ``width`` x ``height - CODE_H`` above a black band of
    CODE_H rows for the barcode, at most TRUTH_CLIP_S long, every frame converted to yuv420p beforehand (the
    client does no rendering while it measures)."""
    if width < CODE_W or height - CODE_H < 64 or width % 2 or height % 2:
        raise ValueError(f"frames must be even-sized and at least {CODE_W}x{CODE_H + 64}, not {width}x{height}")
    clip = truth_clip(width, height - CODE_H, min(seconds, TRUTH_CLIP_S), seed, face_px)
    frames = [to_i420(np.asarray(with_band(clip.frame(i), CODE_H).image)) for i in range(len(clip))]
    return Source(f"{clip.name} (seed {seed})", clip.fps, width, height, frames, clip)


def load_source(path: Path, width: int, height: int, needed: int) -> Source:
    """A real clip (``--clip``), centre-cropped and resized: no ground truth."""
    frames: list[Frame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.base_rate or 30)
        for frame in container.decode(stream):
            bgr = fit_frame(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8), width, height)
            frames.append(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), np.uint8))
            if len(frames) >= needed:
                break
    if not frames:
        raise ValueError(f"{path} has no decodable video frames")
    return Source(path.name, fps, width, height, frames)


# ------------------------------------------------------------------------------------------------ client


class CameraTrack(MediaStreamTrack):
    """Plays ``source`` like a camera at its frame rate for ``seconds``, each frame stamped with its number.
    When the sender asks late, frames whose time has passed are skipped (a camera does not queue)."""

    kind = "video"

    def __init__(self, source: Source, seconds: float) -> None:
        super().__init__()
        self.source = source
        self.total = max(1, round(seconds * source.fps))
        self.sent: dict[int, float] = {}  # frame number -> perf_counter when handed to the sender
        self.skipped = 0
        self.started_at: float | None = None
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self._next = 0

    async def recv(self) -> av.VideoFrame:
        now = time.perf_counter()
        if self.started_at is None:
            self.started_at = now
            self.started.set()
        start, fps = self.started_at, self.source.fps
        n = self._next
        due = math.floor((now - start) * fps)
        if due > n:  # we are late: the camera has moved on
            self.skipped += due - n
            n = due
        if n >= self.total:
            self.finished.set()
            self.stop()
            raise MediaStreamError
        target = start + n / fps
        if target > now:
            await asyncio.sleep(target - now)
        i420 = self.source.frames[self.source.index_for(n)].copy()
        stamp_code(i420, self.source.width, self.source.height, n)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = round(n * 90000 / fps)
        frame.time_base = VIDEO_TIME_BASE
        self._next = n + 1
        self.sent[n] = time.perf_counter()
        return frame


@dataclass
class Snapshot:
    at: float
    client_cpu_s: float
    server_cpu_s: float
    busy_s: float  # every core of the machine
    metrics: dict[str, float]


def _proc_cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def _busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_metrics(text: str) -> dict[str, float]:
    wanted = ("streamer_inference_seconds_sum", "streamer_inference_seconds_count",
              "streamer_processing_seconds_sum", "streamer_processing_seconds_count")
    found: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in wanted:
            found[parts[0]] = float(parts[1])
    return found


class Client:
    def __init__(self, base_url: str, source: Source, seconds: float, warmup: float, tail: float,
                 server_pid: int) -> None:
        self.base_url = base_url
        self.source = source
        self.warmup = warmup
        self.seconds = seconds
        self.tail = tail
        self.server_pid = server_pid
        # The camera keeps playing for ``tail`` s after the window, so that every frame sent in the window is pushed
        # out of both jitter buffers (aiortc releases a frame only when the next one arrives).
        self.track = CameraTrack(source, warmup + seconds + tail)
        self.arrived: dict[int, float] = {}  # frame number -> perf_counter of its first return
        self.duplicates = 0
        self.invalid: list[float] = []  # arrival times of frames without a valid code
        self.received = 0
        # Each frame of the measured window that came back, as decoded (yuv420p), for the judges after the run.
        self.keep = True
        self.kept: dict[int, Frame] = {}
        self.codeless: list[tuple[float, Frame]] = []  # (arrival, yuv420p) of frames in the window with no code
        # Called with every returned frame that carries a new valid code (the soak judges its frames as they come).
        self.on_frame: Callable[[int, av.VideoFrame], None] | None = None
        self.dump_dir: Path | None = None
        self.snapshots: list[Snapshot] = []
        self.session_id: str | None = None
        # ``detections_per_s`` of our session (its 2 s rate meter), read about once a second during the window.
        self.detect_rates: list[float] = []
        # When the last packet of each returned frame arrived (RTP timestamp -> perf_counter), and per frame number.
        # aiortc's jitter buffer hands a frame to the decoder only once the first packet of the *next* frame is in,
        # so a decoded frame reaches us one frame interval of the sender late; a browser decodes on the marker bit.
        self.last_packet: dict[int, float] = {}
        self.rtp_origin: int | None = None
        self.packet_arrived: dict[int, float] = {}

    def watch_packets(self, receiver: Any) -> None:
        """Wrap the receiver's RTP handler (one instance, this process only) to note when each frame's last
        packet (marker bit) arrived. It observes; packets go on unchanged."""
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            if self.rtp_origin is None:  # aiortc's TimestampMapper takes the first frame's timestamp as 0
                self.rtp_origin = int(packet.timestamp)
            if packet.marker:
                self.last_packet.setdefault(int(packet.timestamp), time.perf_counter())
            await original(packet, arrival_time_ms=arrival_time_ms)

        setattr(receiver, "_handle_rtp_packet", handle)  # noqa: B010 (mypy: cannot assign to a method)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.perf_counter()
                if not isinstance(frame, av.VideoFrame):
                    continue
                self.received += 1
                luma = luma_of(frame)
                number = read_code(luma, self.source.width, self.source.height)
                if number is None:
                    self.invalid.append(now)
                    if self.keep and self._in_window(now):  # judged too, placed by likeness after the run
                        self.codeless.append((now, np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)))
                    if self.dump_dir is not None and len(self.invalid) <= 10:
                        cv2.imwrite(str(self.dump_dir / f"no-code-{len(self.invalid):02d}.png"), luma)
                    continue
                if number in self.arrived:
                    self.duplicates += 1
                    continue
                self.arrived[number] = now
                if frame.pts is not None and self.rtp_origin is not None:
                    at = self.last_packet.pop((int(frame.pts) + self.rtp_origin) & 0xFFFFFFFF, None)
                    if at is not None and at <= now:
                        self.packet_arrived[number] = at
                first, last = self._window_frames()
                if self.keep and first <= number < last:
                    self.kept[number] = np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)  # a copy
                if self.on_frame is not None:
                    self.on_frame(number, frame)

    def _in_window(self, now: float) -> bool:
        start = self.track.started_at
        return start is not None and start + self.warmup <= now <= start + self.warmup + self.seconds + 1.0

    def _window_frames(self) -> tuple[int, int]:
        """Numbers of the first frame in the measured window and of the first one after it."""
        fps = self.source.fps
        return round(self.warmup * fps), round((self.warmup + self.seconds) * fps)

    async def _get_json(self, http: ClientSession, path: str) -> Any:
        async with http.get(self.base_url + path) as answer:
            if answer.status != 200:
                return None
            return await answer.json()

    async def _snapshot(self, http: ClientSession) -> Snapshot:
        metrics: dict[str, float] = {}
        with contextlib.suppress(Exception):
            async with http.get(self.base_url + "/metrics") as answer:
                if answer.status == 200:
                    metrics = parse_metrics(await answer.text())
        return Snapshot(time.perf_counter(), _self_cpu_s(), _proc_cpu_s(self.server_pid), _busy_s(), metrics)

    async def _window(self, http: ClientSession) -> None:
        await self.track.started.wait()
        assert self.track.started_at is not None
        start = self.track.started_at + self.warmup
        end = start + self.seconds
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        self.snapshots.append(await self._snapshot(http))
        while time.perf_counter() + SESSION_POLL_S < end:
            await asyncio.sleep(SESSION_POLL_S)
            await self._sample_session(http)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        self.snapshots.append(await self._snapshot(http))

    async def _sample_session(self, http: ClientSession) -> None:
        if self.session_id is None:
            return
        with contextlib.suppress(Exception):
            session = await self._get_json(http, f"/sessions/{self.session_id}")
            if isinstance(session, dict) and session.get("detections_per_s") is not None:
                self.detect_rates.append(float(session["detections_per_s"]))

    async def wait_ready(self, http: ClientSession, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                async with http.get(self.base_url + "/healthz") as answer:
                    if answer.status == 200:
                        return
                    last = f"HTTP {answer.status}"
            except Exception as exc:  # not listening yet
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.25)
        raise TimeoutError(f"{self.base_url}/healthz not ready after {limit_s:.0f} s ({last})")

    async def run(self, ready_timeout: float) -> dict[str, Any]:
        async with ClientSession(timeout=ClientTimeout(total=30)) as http:
            await self.wait_ready(http, ready_timeout)
            # iceServers=[] always: with no configuration aiortc falls back to a public STUN server.
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            consumers: list[asyncio.Task[None]] = []

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                if track.kind == "video":
                    consumers.append(asyncio.ensure_future(self._consume(track)))

            window: asyncio.Task[None] | None = None
            try:
                transceiver = pc.addTransceiver(self.track, direction="sendrecv")
                self.watch_packets(transceiver.receiver)
                await pc.setLocalDescription(await pc.createOffer())
                for _ in range(400):  # aiortc gathers inside setLocalDescription; bounded wait anyway
                    if pc.iceGatheringState == "complete":
                        break
                    await asyncio.sleep(0.05)
                async with http.post(self.base_url + "/offer",
                                     json={"sdp": pc.localDescription.sdp, "type": "offer"}) as answer:
                    body = await answer.json()
                    if answer.status != 200:
                        raise RuntimeError(f"POST /offer: HTTP {answer.status} {body}")
                self.session_id = str(body.get("session"))
                await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
                window = asyncio.ensure_future(self._window(http))
                deadline = time.monotonic() + 20
                while pc.connectionState != "connected":
                    if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                        raise RuntimeError(f"peer connection {pc.connectionState} (ICE {pc.iceConnectionState})")
                    await asyncio.sleep(0.05)
                limit = self.warmup + self.seconds + self.tail + 60
                await asyncio.wait_for(self.track.finished.wait(), limit)
                await asyncio.wait_for(window, 10)
                await asyncio.sleep(0.3)
                session = await self._get_json(http, f"/sessions/{self.session_id}")
            finally:
                if window is not None:
                    window.cancel()
                await pc.close()
                if self.session_id is not None:  # free the slot now (a ramp reuses the server); echo has no DELETE
                    with contextlib.suppress(Exception):
                        async with http.delete(f"{self.base_url}/sessions/{self.session_id}"):
                            pass
                for task in consumers:
                    task.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
        return self.summary(session)

    def summary(self, session: Any) -> dict[str, Any]:
        fps = self.source.fps
        first, last = self._window_frames()
        in_window = {n: t for n, t in self.track.sent.items() if first <= n < last}
        back = {n: self.arrived[n] - t for n, t in in_window.items() if n in self.arrived}
        latencies = sorted(v * 1000 for v in back.values())
        packet_lat = sorted((self.packet_arrived[n] - t) * 1000 for n, t in in_window.items()
                            if n in self.packet_arrived)
        assert self.track.started_at is not None
        window_start = self.track.started_at + self.warmup
        invalid = sum(1 for t in self.invalid if window_start <= t <= window_start + self.seconds + 1.0)
        result: dict[str, Any] = {
            "clip": self.source.name, "clip_fps": round(fps, 3), "distinct_frames": len(self.source.frames),
            "ground_truth": self.source.truth is not None,
            "width": self.source.width, "height": self.source.height,
            "window_s": self.seconds, "warmup_s": self.warmup,
            "sent": len(in_window), "sent_fps": len(in_window) / self.seconds,
            "skipped_by_client": self.track.skipped,
            "returned": len(back), "fps": len(back) / self.seconds,
            "lost": len(in_window) - len(back), "invalid_codes": invalid, "invalid_codes_total": len(self.invalid),
            "duplicates": self.duplicates, "received_total": self.received,
            "latency_ms": latencies,
            "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
            "packet_p50_ms": float(np.percentile(packet_lat, 50)) if packet_lat else None,
            "packet_p95_ms": float(np.percentile(packet_lat, 95)) if packet_lat else None,
            "packet_matched": len(packet_lat),
            "kept_frames": len(self.kept),
            "judged": False, "face_frames_leaked": None,  # filled in after the run (client_main)
            "session": session,
            "detections_per_s": statistics.mean(self.detect_rates) if self.detect_rates else None,
            "detections_per_s_min": min(self.detect_rates) if self.detect_rates else None,
        }
        if len(self.snapshots) == 2:
            a, b = self.snapshots
            span = b.at - a.at
            client, server, busy = (b.client_cpu_s - a.client_cpu_s, b.server_cpu_s - a.server_cpu_s,
                                    b.busy_s - a.busy_s)
            result["cpu_pct"] = {"client": 100 * client / span, "server": 100 * server / span,
                                 "other": 100 * max(0.0, busy - client - server) / span,
                                 "cores": os.cpu_count() or 0}
            for name in ("inference", "processing"):
                count = b.metrics.get(f"streamer_{name}_seconds_count", 0) - a.metrics.get(
                    f"streamer_{name}_seconds_count", 0)
                total = b.metrics.get(f"streamer_{name}_seconds_sum", 0) - a.metrics.get(
                    f"streamer_{name}_seconds_sum", 0)
                if count > 0:
                    result[f"{name}_ms_mean"] = 1000 * total / count
                if name == "inference" and b.metrics:
                    result["inferences_per_s"] = count / span  # the whole server, every session
        return result


def client_main(args: argparse.Namespace) -> int:
    width, height = parse_size(args.size)
    if args.clip:
        path = Path(args.clip)
        with av.open(str(path)) as container:
            fps = float(container.streams.video[0].average_rate or 30)
        needed = math.ceil((args.warmup + args.seconds + args.tail) * fps) + 1
        source = load_source(path, width, height, needed)
    else:
        source = truth_source(width, height, args.warmup + args.seconds + args.tail, args.seed)
    clients = [Client(f"http://{SERVER_ADDR}:{args.port}", source, args.seconds, args.warmup, args.tail,
                      args.server_pid) for _ in range(args.clients)]
    if args.dump_dir:
        clients[0].dump_dir = Path(args.dump_dir)
        clients[0].dump_dir.mkdir(parents=True, exist_ok=True)

    async def run_all() -> list[dict[str, Any]]:
        # All sessions in this one process, started together: each is a camera and a viewer of its own.
        return list(await asyncio.gather(*(c.run(args.ready_timeout) for c in clients)))

    results = asyncio.run(run_all())
    if source.truth is not None:  # after the run, not timed: the judges
        judges = make_judges(source.truth, load_judge_detector(args.device))
        for k, (client, result) in enumerate(zip(clients, results, strict=True)):
            placed = place_codeless(source.truth_frame, [(t, n) for n, t in client.arrived.items()],
                                    client.codeless, CODE_H)
            judged = judge_outputs(source.truth_frame, sorted(client.kept.items()) + placed, judges,
                                   args.identity_budget / len(clients), f"{args.size} session {k + 1}")
            result["codeless_judged"] = len(placed)
            client.kept.clear()
            client.codeless.clear()
            result.update(judged.result())
            if args.dump_dir:
                judged.report.dump(Path(args.dump_dir) / (f"session-{k + 1}" if len(clients) > 1 else "leaks"))
    print(json.dumps(results[0] if args.clients == 1 else {"clients": results}))
    return 0


# ------------------------------------------------------------------------------------------- echo server


class EchoApp:
    def __init__(self) -> None:
        self.peers: dict[str, tuple[RTCPeerConnection, list[LatestFrameRelay]]] = {}

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = f"echo-{len(self.peers) + 1}"
        relays: list[LatestFrameRelay] = []
        self.peers[session] = (pc, relays)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                relays.append(LatestFrameRelay(track))
                pc.addTrack(relays[-1])

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "session": session})

    async def session(self, request: web.Request) -> web.Response:
        found = self.peers.get(request.match_info["session"])
        if found is None:
            return web.json_response({"error": "no such session"}, status=404)
        pc, relays = found
        return web.json_response({"session": request.match_info["session"], "state": pc.connectionState,
                                  "frames_in": sum(r.frames_in for r in relays),
                                  "frames_out": sum(r.frames_out for r in relays),
                                  "frames_dropped": sum(r.frames_dropped for r in relays)})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "ready": True, "sessions": len(self.peers)})

    async def shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc, _ in self.peers.values()), return_exceptions=True)


def echo_main(args: argparse.Namespace) -> int:
    echo = EchoApp()
    app = web.Application()
    app.router.add_post("/offer", echo.offer)
    app.router.add_get("/sessions/{session}", echo.session)
    app.router.add_get("/healthz", echo.healthz)
    app.on_shutdown.append(echo.shutdown)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=3.0)
    return 0


# ------------------------------------------------------------------------------------------ orchestrator


class Namespace:
    """``ip netns add NAME`` with lo and the veth pair v0 (10.77.0.1/24) / v1 (10.77.0.2/24), both inside."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)

    def create(self) -> None:
        if Path("/run/netns", self.name).exists():
            self.delete()
        self._ip("netns", "add", self.name)
        try:
            self._ip("-n", self.name, "link", "set", "lo", "up")
            self._ip("-n", self.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
            self._ip("-n", self.name, "addr", "add", f"{SERVER_ADDR}/24", "dev", "v0")
            self._ip("-n", self.name, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "v1")
            self._ip("-n", self.name, "link", "set", "v0", "up")
            self._ip("-n", self.name, "link", "set", "v1", "up")
            # No IPv6 in there: only the two 10.77.0.x addresses become ICE candidates.
            subprocess.run(["ip", "netns", "exec", self.name, "sysctl", "-q", "-w",
                            "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                           check=False, capture_output=True, timeout=20)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            self.delete()
            detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            raise RuntimeError(f"cannot set up network namespace {self.name}: {detail}") from exc

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True, timeout=20)

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process we started (by its pid), then SIGKILL it if it outlives ``grace``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class RunResult:
    size: str
    server: str
    command: str
    data: dict[str, Any] | None
    error: str | None


def _tail(path: Path, chars: int = 1200) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def client_source_args(args: argparse.Namespace) -> list[str]:
    """The client's arguments for what it sends and how it judges."""
    extra = ["--clip", str(args.clip)] if args.clip else ["--seed", str(args.seed)]
    return [*extra, "--identity-budget", str(args.identity_budget)]


def judging_allowance(args: argparse.Namespace, seconds: float, sessions: int) -> float:
    """Seconds the client may spend judging after a run, on top of the run itself."""
    if args.clip:
        return 0.0
    return float(args.identity_budget + 60 + sessions * seconds * 30 * JUDGE_S_PER_FRAME)


def run_one(ns: Namespace, size: str, server: str, port: int, args: argparse.Namespace, logs: Path) -> RunResult:
    py = sys.executable
    if server == "echo":
        server_cmd = [py, "-m", "bench.live_loopback", "_echo", "--host", SERVER_ADDR, "--port", str(port)]
    else:
        server_cmd = [py, "-m", "streamer", "serve", "--insecure-no-token", "--host", SERVER_ADDR, "--port", str(port),
                      "--device", args.device, *shlex.split(args.server_args)]
    shown = shlex.join(["ip", "netns", "exec", "NS", *["python" if c == py else c for c in server_cmd]])
    server_log = logs / f"{size}-{server}-server.log"
    client_log = logs / f"{size}-{server}-client.log"
    print(f"[live] {size} {server}: {shown}", file=sys.stderr, flush=True)
    with server_log.open("wb") as slog:
        proc = subprocess.Popen(ns.exec(*server_cmd), cwd=REPO, stdout=slog, stderr=subprocess.STDOUT)
        try:
            client_cmd = [py, "-m", "bench.live_loopback", "_client", "--size", size, *client_source_args(args),
                          "--port", str(port), "--server-pid", str(proc.pid), "--seconds", str(args.seconds),
                          "--warmup", str(args.warmup), "--tail", str(args.tail), "--device", args.device,
                          "--ready-timeout", str(args.ready_timeout)]
            if args.dump_dir is not None:
                client_cmd += ["--dump-dir", str(args.dump_dir.resolve() / f"{size}-{server}")]
            limit = (args.ready_timeout + args.warmup + args.seconds + args.tail + 180
                     + judging_allowance(args, args.seconds, 1))
            with client_log.open("wb") as clog:
                done = subprocess.run(ns.exec(*client_cmd), cwd=REPO, stdout=subprocess.PIPE, stderr=clog,
                                      timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            return RunResult(size, server, shown, None, "client timed out\n" + _tail(client_log))
        finally:
            stop_process(proc)
    if done.returncode != 0:
        return RunResult(size, server, shown, None,
                         f"client exited {done.returncode}:\n{_tail(client_log)}\nserver log:\n{_tail(server_log)}")
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        data: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return RunResult(size, server, shown, None, "client printed no result:\n" + _tail(client_log))
    return RunResult(size, server, shown, data, None)


# ------------------------------------------------------------------------------------------------- ramp


@dataclass
class RampStep:
    server: str
    sessions: int
    clients: list[dict[str, Any]]
    error: str | None


def _median_fps(step: RampStep) -> float:
    return statistics.median(float(c["fps"]) for c in step.clients) if step.clients else 0.0


def _holds(step: RampStep, min_fps: float) -> bool:
    """Whether the step held: median fps per session ≥ ``min_fps`` and, for ours, 0 face-frames back in every
    session, by every judge (the echo hides nothing: its leaks are the baseline, not a failure)."""
    if step.error or not step.clients or _median_fps(step) < min_fps:
        return False
    return step.server != "ours" or all(no_face_back(c)[0] for c in step.clients)


def run_ramp(ns: Namespace, args: argparse.Namespace, port: int, logs: Path) -> list[RampStep]:
    """N concurrent webcam sessions (one client process, N peer connections), N = 1, 2, ... until ours no longer
    holds (``_holds``) at an N of 2 or more, or N = ``--ramp-max``; then the echo at the same N. One server process
    per server kind for its whole ramp; every session is deleted at the end of its step."""
    py = sys.executable
    steps: list[RampStep] = []
    order = [s for s in ("ours", "echo") if s in args.server_list]
    counts = list(range(1, args.ramp_max + 1))
    for server in order:
        port += 1
        if server == "echo":
            server_cmd = [py, "-m", "bench.live_loopback", "_echo", "--host", SERVER_ADDR, "--port", str(port)]
        else:
            # Room for every step's sessions (the default --max-sessions is 4); the user's --server-args come last.
            server_cmd = [py, "-m", "streamer", "serve", "--insecure-no-token", "--host", SERVER_ADDR, "--port",
                          str(port), "--device", args.device,
                          "--max-sessions", str(args.ramp_max + 2), *shlex.split(args.server_args)]
        shown = shlex.join(["ip", "netns", "exec", "NS", *["python" if c == py else c for c in server_cmd]])
        print(f"[live] ramp {server}: {shown}", file=sys.stderr, flush=True)
        server_log = logs / f"ramp-{server}-server.log"
        ran: list[int] = []
        with server_log.open("wb") as slog:
            proc = subprocess.Popen(ns.exec(*server_cmd), cwd=REPO, stdout=slog, stderr=subprocess.STDOUT)
            try:
                for n in counts:
                    step = _ramp_step(ns, args, port, proc.pid, server, n, logs, server_log)
                    steps.append(step)
                    ran.append(n)
                    holds = _holds(step, args.ramp_min_fps)
                    print(f"[live] ramp {server} x{n}: median fps {_median_fps(step):.1f}"
                          + (f" ({step.error.splitlines()[0]})" if step.error else ""), file=sys.stderr, flush=True)
                    # N = 2 always runs: it is the two-session target.
                    if step.error or (n >= 2 and not holds and (server == "ours" or "ours" not in order)):
                        break
                    time.sleep(1.0)  # let the server close the step's sessions
            finally:
                stop_process(proc)
        if server == "ours":
            counts = ran  # the echo baseline at the same N
    return steps


def _ramp_step(ns: Namespace, args: argparse.Namespace, port: int, server_pid: int, server: str, n: int,
               logs: Path, server_log: Path) -> RampStep:
    py = sys.executable
    client_log = logs / f"ramp-{server}-{n}-client.log"
    client_cmd = [py, "-m", "bench.live_loopback", "_client", "--size", args.ramp_size, *client_source_args(args),
                  "--port", str(port), "--server-pid", str(server_pid), "--seconds", str(args.ramp_seconds),
                  "--warmup", str(args.ramp_warmup), "--tail", str(args.tail), "--device", args.device,
                  "--ready-timeout", str(args.ready_timeout), "--clients", str(n)]
    if args.dump_dir is not None:
        client_cmd += ["--dump-dir", str(args.dump_dir.resolve() / f"ramp-{server}-{n}")]
    limit = (args.ready_timeout + args.ramp_warmup + args.ramp_seconds + args.tail + 120
             + judging_allowance(args, args.ramp_seconds, n))
    try:
        with client_log.open("wb") as clog:
            done = subprocess.run(ns.exec(*client_cmd), cwd=REPO, stdout=subprocess.PIPE, stderr=clog,
                                  timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return RampStep(server, n, [], "client timed out\n" + _tail(client_log))
    if done.returncode != 0:
        return RampStep(server, n, [], f"client exited {done.returncode}:\n{_tail(client_log)}\nserver log:\n"
                                       f"{_tail(server_log)}")
    try:
        data: dict[str, Any] = json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return RampStep(server, n, [], "client printed no result:\n" + _tail(client_log))
    clients: list[dict[str, Any]] = data.get("clients", [data])
    return RampStep(server, n, clients, None)


def two_sessions_verdict(steps: list[RampStep]) -> tuple[str, str]:
    """(measured, result) for the two-session target: ours at N = 2, ≥ TWO_SESSIONS_FPS each, 0 face-frames back."""
    step = next((s for s in steps if s.server == "ours" and s.sessions == 2), None)
    if step is None:
        return "not run", "**fail** (not run)"
    if step.error or not step.clients:
        return "no result", "**fail** (no result)"
    fps = [float(c["fps"]) for c in step.clients]
    leaked = add_counts(step.clients, "leaked")
    measured = (" and ".join(f"{v:.1f}" for v in fps) + " fps; face-frames back (pixels / identity / detector): "
                + per_judge(leaked))
    fails = [f"{v:.1f} fps" for v in fps if v < TWO_SESSIONS_FPS]
    for client in step.clients:
        ok, why = no_face_back(client)
        if not ok and why not in fails:
            fails.append(why)
    return measured, "**pass**" if not fails else "**fail** (" + "; ".join(fails) + ")"


def render_ramp(steps: list[RampStep], args: argparse.Namespace, clip_text: str) -> str:
    measured, result = two_sessions_verdict(steps)
    out = [markdown_table(["target", "measured", "result"],
                          [[f"2 concurrent {args.ramp_size} sessions: ≥ {TWO_SESSIONS_FPS:g} fps each, "
                            "0 face-frames back", measured, result]]), ""]
    rows = []
    for step in sorted(steps, key=lambda s: (s.sessions, s.server != "echo")):
        cs = step.clients
        if not cs:
            rows.append([str(step.sessions), step.server, "failed", "—", "—", "—", "—", "—", "—"])
            continue
        fps = [float(c["fps"]) for c in cs]
        latencies = [v for c in cs for v in c.get("latency_ms", [])]
        cpu = [c["cpu_pct"] for c in cs if c.get("cpu_pct")]
        cpu_text = "—" if not cpu else " / ".join(
            f"{statistics.median(float(x[k]) for x in cpu):.0f}" for k in ("server", "client", "other"))
        sessions = [c.get("session") or {} for c in cs]
        ours = step.server == "ours"
        rows.append([
            str(step.sessions), step.server, f"{statistics.median(fps):.1f} ({min(fps):.1f})",
            f"{np.percentile(latencies, 50):.0f} / {np.percentile(latencies, 95):.0f}" if latencies else "—",
            cpu_text, per_judge(add_counts(cs, "leaked")),
            str(sum(int(x.get("frames_hidden_whole", 0) or 0) for x in sessions)) if ours else "—",
            str(sum(int(x.get("frames_dropped", 0) or 0) for x in sessions)),
            str(sum(int(c.get("invalid_codes", 0)) + int(c.get("lost", 0)) for c in cs)),
        ])
    out += [markdown_table(["sessions", "server", "fps per session, median (min)", "latency p50 / p95 ms, pooled",
                            "CPU % server / clients / other",
                            "face-frames back: pixels / identity / detector (total)", "frames hidden whole (total)",
                            "frames dropped by the server (total)", "frames never back or without code"], rows), ""]

    def held(server: str) -> str:
        ok = [s.sessions for s in steps if s.server == server and _holds(s, args.ramp_min_fps)]
        run = [s.sessions for s in steps if s.server == server]
        if not run:
            return "not run"
        best = 0
        for n in sorted(run):  # the largest N such that every step up to it held
            if n not in ok:
                break
            best = n
        return f"{best} session(s) (ran {min(run)}..{max(run)})"

    out += [
        f"- Sustained: ours {held('ours')}; echo {held('echo')}. A step holds when the median fps per session is ≥ "
        f"{args.ramp_min_fps:g}. For ours, every session must also send 0 face-frames back.",
        f"- {args.ramp_size} webcam sessions play {clip_text}, all from one client process. Each session has its "
        "own aiortc peer connection, VP8 encoder and decoder.",
        f"- N = 1, 2, ... up to {args.ramp_max}. The ramp stops after the first N ≥ 2 at which ours does not hold. "
        "The echo then runs at the same N.",
        f"- Per step: {args.ramp_warmup:g} s warm-up, then {args.ramp_seconds:g} s measured. One server process per "
        "ramp (ours with `--max-sessions` raised to fit). Every session is deleted at the end of its step.",
        "- fps, latency and CPU % are as in the table above, per session. Latency percentiles pool every session's "
        "frames. Frames hidden whole and dropped are the sessions' own counters over their whole life.",
        f"- Face-frames back: the sum over the step's sessions. dlib shares {args.identity_budget:g} s per step "
        "between them.",
    ]
    for step in steps:
        if step.error:
            out += ["", f"**ramp {step.server} x{step.sessions} failed:**", "", "```", step.error.strip()[-1500:],
                    "```"]
    return "\n".join(out) + "\n"


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _get(data: dict[str, Any] | None, key: str) -> float | None:
    if data is None or data.get(key) is None:
        return None
    return float(data[key])


def _added(ours: dict[str, Any] | None, echo: dict[str, Any] | None, key: str) -> float | None:
    if ours is None or echo is None or ours.get(key) is None or echo.get(key) is None:
        return None
    return float(ours[key]) - float(echo[key])


def no_face_back(data: dict[str, Any]) -> tuple[bool, str]:
    """Whether a session sent 0 face-frames back by every judge, and why not. A frame back without a valid code
    (a mask over the code) is judged against the frame it looks most like among those sent between its
    neighbours; one that could not be kept for that escapes the judges, and fails."""
    problems = leak_problems(leaked_of(data), checked_of(data))
    if problems == ["not judged"] and not data.get("ground_truth", True):
        problems = ["not judged: no ground truth"]
    unjudged = int(data.get("invalid_codes", 0)) - int(data.get("codeless_judged", 0))
    if unjudged > 0:
        problems.append(f"{unjudged} frame(s) back without a code (not judged)")
    return not problems, "; ".join(problems)


def verdict(size: str, ours: dict[str, Any] | None, echo: dict[str, Any] | None) -> tuple[str, str]:
    """(target text, result text) for one frame size."""
    fps_min, added_max = TARGETS.get(size, (None, None))
    parts = []
    if fps_min is not None:
        parts.append(f"≥ {fps_min:.0f} fps out")
    if added_max is not None:
        parts.append(f"p50 added ≤ {added_max:.0f} ms")
    target = ", ".join([*parts, "0 face-frames back"])
    if ours is None:
        return target, "**fail** (no result)"
    fails = []
    if fps_min is not None and float(ours["fps"]) < fps_min:
        fails.append(f"{ours['fps']:.1f} fps")
    if added_max is not None:
        added = _added(ours, echo, "p50_ms")
        if added is None:
            fails.append("no echo baseline for the latency")
        elif added > added_max:
            fails.append(f"+{added:.0f} ms p50")
    ok, why = no_face_back(ours)
    if not ok:
        fails.append(why)
    return target, "**pass**" if not fails else "**fail** (" + "; ".join(fails) + ")"


def render(results: list[RunResult], args: argparse.Namespace, command: str, machine: str, clip_text: str) -> str:
    by = {(r.size, r.server): r for r in results}
    rows = []
    for size in args.sizes:
        echo_r, ours_r = by.get((size, "echo")), by.get((size, "ours"))
        echo = echo_r.data if echo_r else None
        ours = ours_r.data if ours_r else None
        s = (ours or {}).get("session") or {}
        counters = "/".join(str(s.get(k, "—")) for k in ("frames_in", "frames_out", "frames_dropped",
                                                           "frames_unsent", "frames_hidden_whole")) if s else "—"
        target, result = verdict(size, ours, echo)
        rows.append([
            size, _f(_get(echo, "fps")), _f(_get(ours, "fps")),
            f"{_f(_get(echo, 'p50_ms'), 0)} / {_f(_get(echo, 'p95_ms'), 0)}",
            f"{_f(_get(ours, 'p50_ms'), 0)} / {_f(_get(ours, 'p95_ms'), 0)}",
            f"{_f(_added(ours, echo, 'p50_ms'), 0)} / {_f(_added(ours, echo, 'p95_ms'), 0)}",
            per_judge(leaked_of(echo)), per_judge(leaked_of(ours)), counters, target, result,
        ])
    out = [markdown_table(["frame", "echo fps", "ours fps", "echo latency p50 / p95 ms",
                           "ours latency p50 / p95 ms", "added p50 / p95 ms",
                           "echo face-frames back: pixels / identity / detector",
                           "ours face-frames back: pixels / identity / detector",
                           "ours frames_in/out/dropped/unsent/hidden_whole", "target", "result"], rows), ""]

    detail_rows = []
    for r in results:
        d = r.data
        if d is None:
            continue
        cpu = d.get("cpu_pct") or {}
        cpu_text = (f"{cpu['server']:.0f} / {cpu['client']:.0f} / {cpu['other']:.0f}" if cpu else "—")
        report = d.get("leak_report") or {}
        judged = (f"{report.get('frames', 0)} of {d.get('kept_frames', 0)} / {report.get('eligible', 0)} / "
                  f"{per_judge(checked_of(d))} / {d.get('identity_every', '—')}" if d.get("judged") else "—")
        session = d.get("session") or {}
        errors = (f"{session.get('detector_errors', '—')} / {session.get('detections_late', '—')}"
                  if r.server == "ours" and session else "—")
        detail_rows.append([
            r.size, r.server, f"{d['sent_fps']:.1f}", str(d["skipped_by_client"]), str(d["lost"]),
            str(d["invalid_codes"]), f"{_f(_get(d, 'packet_p50_ms'), 0)} / {_f(_get(d, 'packet_p95_ms'), 0)}",
            cpu_text, f"{_f(d.get('inference_ms_mean'))} / {_f(d.get('processing_ms_mean'))}",
            f"{_f(d.get('detections_per_s'))} / {_f(d.get('inferences_per_s'))}", errors, judged,
        ])
    if detail_rows:
        out += ["Details (frames sent in the window after the warm-up):", "",
                markdown_table(["frame", "server", "sent fps", "skipped by client", "never back",
                                "back without code", "last packet back p50 / p95 ms",
                                "CPU % server / client / other", "inference / processing ms (ours, mean)",
                                "detections/s (session) / detector runs/s (/metrics), ours",
                                "detector errors / late detections (ours)",
                                "judged: frames of kept / face-frames / checks pixels / identity / detector / "
                                "identity every"],
                               detail_rows),
                ""]
    for r in results:
        if r.error:
            out += [f"**{r.size} {r.server} failed:**", "", "```", r.error.strip()[-1500:], "```", ""]
    echo_blind = sorted({name for r in results if r.server == "echo" and r.data and leaked_of(r.data)
                         for name, n in (leaked_of(r.data) or {}).items() if name != "total" and n == 0})
    out += [
        f"- Command: `{command}`" + (" (a SMOKE RUN, not numbers to quote)" if args.quick else ""),
        f"- Machine: {machine}",
        f"- Source: {clip_text}. It plays like a camera at its own rate. {args.warmup:g} s warm-up, then "
        f"{args.seconds:g} s measured.",
        "- Three processes run in a network namespace created for the run. The server is `ip netns exec NS python "
        f"-m streamer serve --insecure-no-token --host 10.77.0.1 --port P --device {args.device}"
        + (f" {args.server_args}" if args.server_args else "") + "` or the aiortc echo `python -m "
        "bench.live_loopback _echo`. The client is aiortc. VP8 both ways; every hop decodes and re-encodes.",
        "- fps: frames sent in the window that came back with a valid code, per second of window.",
        "- Latency: from handing a frame to the client's sender to its decoded copy arriving back. Frames are "
        "matched by number (a barcode in the bottom-left corner). Added: ours minus echo, at the same percentile.",
        "- *Last packet back*: when the returned frame's last RTP packet reached the client. aiortc's jitter buffer "
        "releases a frame only when the next frame's first packet arrives. So each aiortc receiver adds one frame "
        "interval of its sender. A browser decodes on the last packet.",
    ]
    if args.clip:
        out.append("- Face-frames back: not judged. A real clip (`--clip`) has no ground truth, so no size can "
                   "pass.")
    else:
        out += [
            "- Face-frames back: every frame back in the window is kept, then judged after the run (not timed). "
            "Each is compared with the truth frame it shows. " + JUDGES_TEXT,
            f"- dlib costs about 0.13 s a face. It judges every k-th face (*identity every*) and every risky one, "
            f"within about {args.identity_budget:g} s per session. Where most faces are risky (the echo), only every "
            "n-th frame is judged, by every judge (*judged: frames of kept*).",
            "- The echo hides nothing. Its face-frames back show that the judges see faces through VP8 both ways. "
            "They are the baseline, not a failure.",
            "- A frame back without a code (a mask over it) is judged too: against the sent frame it looks most "
            "like, away from the faces, among those sent between its neighbours. One that could not be kept for "
            "that is not judged, and fails the verdict.",
        ]
        if echo_blind:
            out.append(f"- **Warning**: the {', '.join(echo_blind)} judge(s) found no face in the echo's frames. "
                       "Their 0 for ours proves little.")
    out += [
        "- Detections/s: the session's own `detections_per_s` (a 2 s rate), read every second of the window. "
        "Detector runs/s: inferences counted by `/metrics` over the window.",
        "- CPU % is of one core over the window. *Other* is the rest of the machine (other people's work).",
    ]
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.live_loopback", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 5 s measured after 2 s warm-up")
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="comma-separated (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 20; quick 5)")
    p.add_argument("--warmup", type=float, default=None, help="seconds sent before measuring (default 3; quick 2)")
    p.add_argument("--tail", type=float, default=2.0,
                   help="seconds the camera keeps playing after the window, to flush it (default 2)")
    p.add_argument("--seed", type=int, default=0, help="the ground-truth clip's seed (default: %(default)s)")
    p.add_argument("--clip", type=Path, default=None,
                   help="play this real clip instead of the ground-truth clip: nothing is judged, no size passes")
    p.add_argument("--identity-budget", type=float, default=IDENTITY_BUDGET_S,
                   help="seconds of dlib (the identity judge) per session, per ramp step for the ramp "
                        "(default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="our server's device (and the detector judge's)")
    p.add_argument("--servers", default="echo,ours", help="which servers to run (default: %(default)s)")
    p.add_argument("--server-args", default="",
                   help="extra arguments for our server, as one string (e.g. \"--detect-size 480\")")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for /healthz 200")
    p.add_argument("--json", type=Path, default=None, help="also write every run's raw result here")
    p.add_argument("--no-ramp", action="store_true", help="skip the ramp of concurrent sessions")
    p.add_argument("--ramp-size", default="640x480", help="frame size of the ramp's sessions (default: %(default)s)")
    p.add_argument("--ramp-max", type=int, default=None, help="most concurrent sessions (default 6; quick 2)")
    p.add_argument("--ramp-seconds", type=float, default=None,
                   help="measured seconds per ramp step (default 15; quick 5)")
    p.add_argument("--ramp-warmup", type=float, default=2.0, help="seconds per ramp step before measuring")
    p.add_argument("--ramp-min-fps", type=float, default=RAMP_MIN_FPS,
                   help="the ramp stops after the first step (N ≥ 2) where ours falls below this median fps per "
                        "session or sends a face back (default: %(default)s)")
    p.add_argument("--dump-dir", type=Path, default=None,
                   help="write the judges' evidence (side-by-side PNGs of leaks, summary.json) and frames back "
                        "without a code here")
    return p


def internal_parser(role: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m bench.live_loopback {role}")
    p.add_argument("--port", type=int, required=True)
    if role == "_echo":
        p.add_argument("--host", default=SERVER_ADDR)
        return p
    p.add_argument("--size", required=True)
    p.add_argument("--clip", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identity-budget", type=float, default=IDENTITY_BUDGET_S)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--tail", type=float, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--dump-dir", default=None)
    p.add_argument("--clients", type=int, default=1, help="concurrent sessions from this one process")
    return p


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_echo":
        return echo_main(internal_parser("_echo").parse_args(argv[1:]))
    if argv and argv[0] == "_client":
        return client_main(internal_parser("_client").parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in [*args.sizes, args.ramp_size]:
        width, height = parse_size(size)
        if width % 2 or height % 2 or width < CODE_W or height < CODE_H + 64:
            raise SystemExit(f"{size}: frames must be even-sized and at least {CODE_W}x{CODE_H + 64}")
    args.seconds = args.seconds if args.seconds is not None else (5.0 if args.quick else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 3.0)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not set(servers) <= {"echo", "ours"}:
        raise SystemExit("--servers takes echo and/or ours")
    args.server_list = servers
    args.ramp_max = args.ramp_max if args.ramp_max is not None else (2 if args.quick else 6)
    args.ramp_seconds = args.ramp_seconds if args.ramp_seconds is not None else (5.0 if args.quick else 15.0)
    if args.ramp_max < 1:
        raise SystemExit("--ramp-max must be at least 1")
    if args.clip is not None and not args.clip.is_file():
        raise SystemExit(f"clip not found: {args.clip}")
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates a network namespace (aioice never uses 127.0.0.1)")
    if args.clip is not None:
        clip_text = (f"the real clip `{args.clip.name}`, centre-cropped and resized to the frame size, played "
                     "forward then backward")
    else:
        clip_text = (f"a ground-truth clip (`testkit.truth.virtual_camera`, seed {args.seed}: a camera panning and "
                     "zooming over the 9 annotated photos, a hard cut to other people every 3 s, at most "
                     f"{TRUTH_CLIP_S:g} s played forward then backward), rendered {CODE_H} rows shorter than the "
                     f"frame above a black band that carries the barcode. No true face is ever under the code")
    command = shlex.join(["python", "-m", "bench.live_loopback", *argv])
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    machine = f"{cpu_model()}, {cores} logical cores ({usable} usable); load average at start {load_average()}"

    signal.signal(signal.SIGTERM, _raise_exit)
    ns = Namespace(f"fsbench-{os.getpid()}")
    results: list[RunResult] = []
    ramp: list[RampStep] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="live-loopback-") as tmp:
        try:
            ns.create()
            port = 9100
            for size in args.sizes:
                for server in servers:
                    port += 1
                    results.append(run_one(ns, size, server, port, args, Path(tmp)))
            if not args.no_ramp:
                ramp = run_ramp(ns, args, port, Path(tmp))
        finally:
            ns.delete()
    machine += f", at end {load_average()}"
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": [r.__dict__ for r in results],
                                         "ramp": [r.__dict__ for r in ramp]}, indent=1))
    if args.sizes:
        print(render(results, args, command, machine, clip_text), end="")
    if ramp:
        print(f"\n### Concurrent {args.ramp_size} webcam sessions, ramped until fps drops\n")
        print(render_ramp(ramp, args, clip_text.split(". ")[0]), end="")
    print(f"[live] done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 1 if any(r.error for r in results) or any(s.error for s in ramp) else 0


if __name__ == "__main__":
    raise SystemExit(main())
