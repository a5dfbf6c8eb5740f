"""WebRTC test support: servers and clients inside the run's network namespace (testkit.netns, made by the
``netns`` fixture), real clips as live video. (The plain aiortc echo is testkit.echo.)

- :class:`ServerProcess` runs ``python -m streamer serve`` inside the namespace (``ip netns exec``).
- :class:`LiveClient` sends a real clip over WebRTC with aiortc (:class:`ClipTrack`, paced at the clip's rate, pts
  in 1/90000) and records every frame that comes back with its arrival time. Each sent frame carries its index
  in a barcode strip added above the picture (testkit.framecode: ``framed`` / ``read``), so returned frames are
  matched to sent frames exactly, whatever the server does with pts.
- :func:`make_y4m` and :func:`chromium_wrapper` prepare Chromium's fake camera and launch it inside the
  namespace.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from testkit.framecode import CENTRED_STRIP, STRIP, framed, read, stamp
from testkit.netns import SERVER_ADDR, NamespaceLoop, NetNamespace
from testkit.peer import wait_connected
from testkit.truth import TruthClip
from testkit.wire import PacedTrack, TruthTrack, as_sent

U8 = npt.NDArray[np.uint8]

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# Flags from ../shared/notes/conventions.md (checked with Debian's Chromium on this kind of machine).
CHROMIUM_FLAGS = (
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)


# ---------------------------------------------------------------------------------------------------------- HTTP


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def http(method: str, url: str, *, json_body: Any = None, data: bytes | str | None = None,
               headers: dict[str, str] | None = None, limit_s: float = 20) -> HttpAnswer:
    """One HTTP request (run it on a :class:`NamespaceLoop` for addresses inside the namespace)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as session, \
            session.request(method, url, json=json_body, data=data, headers=headers) as response:
        text = await response.text()
        return HttpAnswer(response.status, {k: v for k, v in response.headers.items()}, text)


async def free_port(host: str = SERVER_ADDR) -> int:
    """A TCP port free on ``host`` (call it inside the namespace)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_ready(base_url: str, limit_s: float = 120, alive: Any = None,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll GET /healthz until it answers 200; return its body. ``alive()`` False aborts (server died)."""
    deadline = time.monotonic() + limit_s
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server exited before it was ready ({last})")
        try:
            answer = await http("GET", base_url + "/healthz", headers=headers, limit_s=3)
            if answer.status == 200:
                body: dict[str, Any] = answer.json()
                return body
            last = f"{answer.status} {answer.text[:200]}"
        except Exception as exc:
            last = repr(exc)
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{base_url}/healthz not ready within {limit_s:.0f} s ({last})")


class ServerProcess:
    """``python -m streamer serve`` inside the namespace, on SERVER_ADDR; its log goes to a file."""

    def __init__(self, ns: NetNamespace, ns_loop: NamespaceLoop, args: Sequence[str] = (),
                 log_path: Path | None = None) -> None:
        self.ns, self.ns_loop, self.args = ns, ns_loop, list(args)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or Path(f"/tmp/fs-server-{os.getpid()}-{id(self)}.log")
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{SERVER_ADDR}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # `ip netns exec` execs the command, so this is the server's own pid

    def start(self, timeout: float = 120) -> ServerProcess:
        self.port = self.ns_loop.run(free_port())
        self._log = self.log_path.open("wb")
        # The namespace is the test's own, reachable from nothing else: it stands for the authentication a
        # deployment without a token must put in front.
        cmd = [*self.ns.exec_prefix(), sys.executable, "-m", "streamer", "serve", "--host", SERVER_ADDR,
               "--port", str(self.port), "--insecure-no-token",
               *([] if "--detector" in self.args else ["--device", "cpu"]), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.ns_loop.run(wait_ready(self.base_url, timeout, alive=lambda: self.proc is not None
                                        and self.proc.poll() is None), timeout + 10)
        except BaseException:
            self.stop()
            raise RuntimeError(f"server did not start: {' '.join(cmd)}\n{self.log_tail()}") from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def threads(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^Threads:\s+(\d+)", status, re.M)
        assert match is not None
        return int(match.group(1))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def udp_sockets(self) -> int:
        """UDP sockets open in the namespace (the server's ICE transports; the client's when it has any)."""
        out = subprocess.run([*self.ns.exec_prefix(), "cat", "/proc/net/udp"], capture_output=True, text=True,
                             timeout=10).stdout
        return max(0, len(out.splitlines()) - 1)


# ---------------------------------------------------------------------------------------------------- clips


@dataclass
class SourceClip:
    """Frames of a real clip, each stamped with its index, as yuv420p planes (i420, for cheap sending)."""

    name: str
    fps: float
    width: int  # of the stamped frame (picture + strip)
    height: int
    i420: list[U8]

    def bgr(self, index: int) -> U8:
        import cv2

        return np.asarray(cv2.cvtColor(self.i420[index], cv2.COLOR_YUV2BGR_I420), np.uint8)

    def picture(self, index: int) -> U8:
        """The clip's own picture (no strip) for frame ``index``."""
        return self.bgr(index)[STRIP.height:]

    def __len__(self) -> int:
        return len(self.i420)


def load_clip(path: Path, seconds: float, max_width: int | None = None) -> SourceClip:
    """The first ``seconds`` of a clip, each frame below a strip with its index (testkit.framecode.framed), kept
    as i420."""
    import av
    import cv2

    frames: list[U8] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 30)
        count = max(1, round(seconds * fps))
        for frame in container.decode(stream):
            bgr: U8 = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
            if max_width and bgr.shape[1] > max_width:
                scale = max_width / bgr.shape[1]
                size = (max_width, round(bgr.shape[0] * scale / 2) * 2)
                bgr = np.asarray(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), np.uint8)
            stamped = framed(np.ascontiguousarray(bgr[: bgr.shape[0] // 2 * 2, : bgr.shape[1] // 2 * 2]),
                             len(frames))
            frames.append(np.asarray(cv2.cvtColor(stamped, cv2.COLOR_BGR2YUV_I420), np.uint8))
            if len(frames) == count:
                break
    h = frames[0].shape[0] * 2 // 3
    return SourceClip(path.name, fps, frames[0].shape[1], h, frames)


def make_y4m(src: Path, dst: Path, seconds: float = 5.0, size: tuple[int, int] = (640, 480)) -> int:
    """Write the first ``seconds`` of ``src`` as a raw yuv420p .y4m of ``size`` (letterboxed, aspect kept),
    the format Chromium's ``--use-file-for-fake-video-capture`` reads. Returns the number of frames."""
    import av
    import cv2

    width, height = size
    written = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="yuv4mpegpipe") as out:
        stream = inp.streams.video[0]
        rate = stream.average_rate or fractions.Fraction(30)
        count = max(1, round(seconds * float(rate)))
        ostream = out.add_stream("rawvideo", rate=rate)
        ostream.width, ostream.height, ostream.pix_fmt = width, height, "yuv420p"
        for frame in inp.decode(stream):
            bgr = frame.to_ndarray(format="bgr24")
            scale = min(width / bgr.shape[1], height / bgr.shape[0])
            w, h = round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)
            canvas = np.zeros((height, width, 3), np.uint8)
            x0, y0 = (width - w) // 2, (height - h) // 2
            canvas[y0:y0 + h, x0:x0 + w] = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
            vf = av.VideoFrame.from_ndarray(canvas, format="bgr24").reformat(format="yuv420p")
            for packet in ostream.encode(vf):
                out.mux(packet)
            written += 1
            if written == count:
                break
        for packet in ostream.encode(None):
            out.mux(packet)
    return written


def truth_y4m(clip: TruthClip, dst: Path) -> int:
    """Write ``as_sent(clip)`` (every frame one size), each frame's index in a ``CENTRED_STRIP`` that survives a
    browser's crop and scale, as the raw yuv420p .y4m Chromium's fake camera plays in a loop. Returns the number of
    frames."""
    import av
    import cv2

    clip = as_sent(clip, CENTRED_STRIP)
    first = clip.frame(0)
    with av.open(str(dst), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=fractions.Fraction(round(clip.fps)))
        stream.width, stream.height, stream.pix_fmt = first.size[0], first.size[1], "yuv420p"
        for frame in clip:
            stamped = stamp(np.asarray(frame.image), frame.index, CENTRED_STRIP)
            yuv = np.asarray(cv2.cvtColor(stamped, cv2.COLOR_BGR2YUV_I420), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return len(clip)


def y4m_first_frame(path: Path) -> U8:
    """The first frame of a .y4m as BGR."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
    raise ValueError(f"no frame in {path}")


def chromium_wrapper(ns: NetNamespace, folder: Path) -> Path:
    """An executable that starts Debian's Chromium inside the namespace (give it to Playwright as
    ``executable_path``; Playwright talks to it over a pipe, so it needs no network of its own)."""
    script = folder / "chromium-in-netns"
    script.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
    script.chmod(0o755)
    return script


# ---------------------------------------------------------------------------------------------- aiortc client


class ClipTrack(PacedTrack):
    """A live video track playing a :class:`SourceClip` once at its frame rate, then ending (or looping)."""

    def __init__(self, clip: SourceClip, loop_forever: bool = False) -> None:
        self.clip = clip
        super().__init__(len(clip), clip.fps, loop_forever)

    def read_index(self, gray: U8) -> int | None:
        """The index in a returned frame's strip (it may have been rescaled from the clip's size)."""
        return read(gray, self.clip.width, self.clip.height)

    def yuv(self, n: int) -> U8:
        return self.clip.i420[n % len(self.clip)]


@dataclass
class ReceivedFrame:
    arrived: float  # time.monotonic()
    pts: int
    index: int | None  # the sent frame it shows (from the index strip), None when unreadable
    width: int
    height: int
    i420: U8 | None  # the frame itself, when kept

    def bgr(self) -> U8:
        import cv2

        assert self.i420 is not None, "frame not kept (keep_frames=False)"
        return np.asarray(cv2.cvtColor(self.i420, cv2.COLOR_YUV2BGR_I420), np.uint8)


@dataclass
class SessionResult:
    answer: dict[str, Any]
    offer_sdp: str
    answer_sdp: str
    received: list[ReceivedFrame] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    ended_at: float | None = None

    def latencies(self) -> list[tuple[int, float]]:
        """(sent index, seconds from sending to arrival) for every returned frame whose index was read."""
        out = []
        for r in self.received:
            if r.index is not None and r.index < len(self.sent_at):
                out.append((r.index, r.arrived - self.sent_at[r.index]))
        return out


def candidate_addresses(sdp: str) -> list[str]:
    """The connection addresses of every ``a=candidate`` line in an SDP."""
    addresses = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) > 5:
                addresses.append(parts[4])
    return addresses


class LiveClient:
    """An aiortc peer that sends a clip to ``POST /offer`` and records what comes back. Use it on a
    :class:`NamespaceLoop` (``async with LiveClient(...) as c: await c.connect(...)``)."""

    def __init__(self, base_url: str, clip: SourceClip | TruthClip, keep_frames: bool = True,
                 loop_forever: bool = False, audio: bool = False, headers: dict[str, str] | None = None) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.base_url = base_url
        self.headers = headers  # Authorization for a server with a token
        self.audio = audio
        self.keep_frames = keep_frames
        # iceServers=[] always: with no configuration aiortc falls back to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # A real clip (fixed size, frames kept stamped) or a truth clip (rendered as sent, any size, judged).
        self.track: ClipTrack | TruthTrack = (ClipTrack(clip, loop_forever=loop_forever)
                                              if isinstance(clip, SourceClip) else TruthTrack(clip, loop_forever))
        self.received: list[ReceivedFrame] = []
        self.remote_ended = asyncio.Event()
        self.first_frame = asyncio.Event()
        self._consumers: list[asyncio.Task[None]] = []
        self.result: SessionResult | None = None
        self.session_id: str | None = None
        self.remote_tracks: list[str] = []

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.remote_tracks.append(track.kind)
            if track.kind == "video":
                self._consumers.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                arrived = time.monotonic()
                i420 = np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)
                h = i420.shape[0] * 2 // 3
                index = self.track.read_index(i420[:h])
                self.received.append(ReceivedFrame(arrived, int(frame.pts or 0), index, i420.shape[1], h,
                                                   i420 if self.keep_frames else None))
                self.first_frame.set()
        except MediaStreamError:
            pass
        finally:
            self.remote_ended.set()

    async def offer(self) -> str:
        """Add the clip track (sendrecv), gather every candidate and return the offer SDP (not posted)."""
        self.pc.addTransceiver(self.track, direction="sendrecv")
        if self.audio:
            from aiortc.mediastreams import AudioStreamTrack

            self.pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")  # silence
        await self.pc.setLocalDescription(await self.pc.createOffer())
        # aiortc gathers every candidate inside setLocalDescription (no trickle): the offer is complete now.
        assert self.pc.iceGatheringState == "complete", self.pc.iceGatheringState
        sdp: str = self.pc.localDescription.sdp
        return sdp

    async def connect(self, options: dict[str, Any] | None = None, limit_s: float = 20) -> HttpAnswer:
        """Offer, POST /offer, apply the answer. Returns the HTTP answer (the peer is connected only on 200)."""
        from aiortc import RTCSessionDescription

        sdp = await self.offer()
        body: dict[str, Any] = {"sdp": sdp, "type": "offer"}
        if options is not None:
            body["options"] = options
        answer = await http("POST", self.base_url + "/offer", json_body=body, headers=self.headers, limit_s=limit_s)
        if answer.status == 200:
            data = answer.json()
            self.session_id = data.get("session")
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
            self.result = SessionResult(data, sdp, data["sdp"])
        return answer

    async def wait_first_frame(self, limit_s: float = 15) -> None:
        await asyncio.wait_for(self.first_frame.wait(), limit_s)

    async def wait_connected(self, limit_s: float = 15) -> None:
        await wait_connected(self.pc, limit_s)

    async def run_clip(self, tail: float = 2.0, limit_s: float = 120) -> SessionResult:
        """Wait until the clip has been sent, then ``tail`` s more for the last frames; return the result."""
        deadline = time.monotonic() + limit_s
        while self.track.ended_at is None:
            if time.monotonic() > deadline:
                raise TimeoutError("clip did not finish sending")
            await asyncio.sleep(0.05)
        await asyncio.sleep(tail)
        return self.snapshot()

    def snapshot(self) -> SessionResult:
        assert self.result is not None, "not connected"
        self.result.received = list(self.received)
        self.result.sent_at = list(self.track.sent_at)
        self.result.ended_at = self.track.ended_at
        return self.result

    async def close(self) -> None:
        self.track.stop()
        await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)

    async def __aenter__(self) -> LiveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def make_offer_sdp(video: str | None = "sendrecv", audio: str | None = None, datachannel: bool = False) -> str:
    """A real, complete aiortc offer (candidates included) with the given transceivers, its peer closed again.
    ``video``/``audio``: a direction (``sendrecv``, ``recvonly``, ...) or None for no such m-line."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if video:
            pc.addTransceiver("video", direction=video)
        if audio:
            pc.addTransceiver("audio", direction=audio)
        if datachannel:
            pc.createDataChannel("data")
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        return sdp
    finally:
        await pc.close()
