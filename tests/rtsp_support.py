"""RTSP camera test support: camera clips for the test camera (testkit.rtsp, GStreamer's RTSP server) and a WHEP
viewer written with aiortc.

- :func:`make_camera_clip` turns a real clip into what a camera sends: H.264 with a keyframe every half second,
  played over and over. The RTSP server drops the frames sent before the client's PLAY, so a clip whose only
  keyframe is its first frame (liveportrait_driving_d3.mp4: keyframes at frames 0 and 250) would show nothing for
  8 s; and each client's stream ends at the clip's end, which the looping keeps out of the tests' way.
- :class:`WhepViewer` is a receive-only aiortc peer: ``POST /whep/{camera}`` with ``application/sdp``, the answer
  applied, every frame's arrival recorded and a few frames kept for the face checks. Use it on a NamespaceLoop.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from webrtc_support import HttpAnswer, http

from testkit.framecode import stamp
from testkit.peer import wait_connected
from testkit.truth import TruthClip
from testkit.wire import as_sent

U8 = npt.NDArray[np.uint8]


def make_camera_clip(src: Path, dst: Path, repeats: int = 8, keyframe_every: int = 15) -> tuple[int, float]:
    """Write ``src`` to ``dst`` as H.264 with a keyframe every ``keyframe_every`` frames, the whole clip played
    ``repeats`` times (encoded once, its packets written again with later timestamps). Returns (frames, fps)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        rate = stream.average_rate or fractions.Fraction(30)
        ostream = out.add_stream("libx264", rate=rate)
        ostream.width, ostream.height, ostream.pix_fmt = stream.width // 2 * 2, stream.height // 2 * 2, "yuv420p"
        ostream.options = {"g": str(keyframe_every), "keyint_min": str(keyframe_every), "bf": "0",
                           "preset": "veryfast", "crf": "20"}
        packets: list[tuple[bytes, bool]] = []
        for frame in inp.decode(stream):
            frame.pts = None  # the encoder numbers the frames itself
            packets += [(bytes(p), bool(p.is_keyframe)) for p in ostream.encode(frame)]
        packets += [(bytes(p), bool(p.is_keyframe)) for p in ostream.encode(None)]
        time_base = fractions.Fraction(1, 90000)
        step = round(90000 / rate)
        n = 0
        for _ in range(repeats):
            for data, key in packets:  # no B-frames: decode order is display order
                packet = av.Packet(data)
                packet.pts = packet.dts = n * step
                packet.time_base, packet.stream, packet.is_keyframe = time_base, ostream, key
                out.mux(packet)
                n += 1
    return n, float(rate)


def make_truth_camera_clip(clip: TruthClip, dst: Path, keyframe_every: int = 15) -> int:
    """Write ``as_sent(clip)`` (each frame with its index strip) to ``dst`` as an H.264 MPEG-TS a camera could
    send, a keyframe every ``keyframe_every`` frames. Where the clip's frame size changes, a new encoder starts
    with a keyframe and new parameter sets, as a reconfigured camera's stream does. Returns the frame count."""
    import av
    import cv2

    sent = as_sent(clip)
    rate = fractions.Fraction(round(sent.fps))
    with av.open(str(dst), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=rate)  # carries the packets of every encoder below
        stream.width, stream.height = sent.frame(0).size
        encoder: Any = None
        size: tuple[int, int] | None = None

        def mux(packets: Any) -> None:
            for packet in packets:
                packet.stream = stream
                out.mux(packet)

        for index in range(len(sent)):
            frame = sent.frame(index)
            if frame.size != size:
                if encoder is not None:
                    mux(encoder.encode(None))
                encoder, size = av.CodecContext.create("libx264", "w"), frame.size
                encoder.width, encoder.height = size
                encoder.pix_fmt, encoder.time_base, encoder.framerate = "yuv420p", 1 / rate, rate
                encoder.options = {"g": str(keyframe_every), "keyint_min": str(keyframe_every), "bf": "0",
                                   "preset": "veryfast", "crf": "20", "x264-params": "repeat-headers=1"}
            yuv = cv2.cvtColor(stamp(np.asarray(frame.image), index), cv2.COLOR_BGR2YUV_I420)
            video = av.VideoFrame.from_ndarray(np.asarray(yuv, np.uint8), format="yuv420p")
            video.pts, video.time_base = index, 1 / rate
            mux(encoder.encode(video))
        mux(encoder.encode(None))
    return len(sent)


def clip_frames(path: Path, indices: list[int]) -> dict[int, U8]:
    """Frames ``indices`` of a clip, as BGR."""
    import av

    wanted, out = set(indices), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
            if len(out) == len(wanted):
                break
    return out


async def http_get_bytes(url: str, limit_s: float = 20) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: (status, headers, body bytes); for binary answers such as JPEG snapshots."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as session, \
            session.get(url) as response:
        return response.status, dict(response.headers.items()), await response.read()


class WhepViewer:
    """A receive-only WHEP viewer (aiortc). ``arrivals`` holds every frame's arrival time (time.monotonic()),
    ``samples`` up to ``max_samples`` (arrival time, BGR frame) pairs, one per ``sample_every_s`` at most;
    ``states`` every connection state the peer went through."""

    def __init__(self, base_url: str, camera: str, sample_every_s: float = 0.2, max_samples: int = 40,
                 headers: dict[str, str] | None = None) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.base_url, self.camera = base_url, camera
        self.headers = headers or {}  # e.g. Authorization for a server with a token
        self.sample_every_s, self.max_samples = sample_every_s, max_samples
        # iceServers=[] always: with no configuration aiortc falls back to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.arrivals: list[float] = []
        self.sizes: set[tuple[int, int]] = set()
        self.samples: list[tuple[float, U8]] = []
        self.states: list[str] = []
        self.location: str | None = None
        self._last_sample = 0.0
        self._consumers: list[asyncio.Task[None]] = []
        self.first_frame = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            self.states.append(str(self.pc.connectionState))

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self._consumers.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                self.arrivals.append(now)
                self.sizes.add((int(frame.width), int(frame.height)))
                if len(self.samples) < self.max_samples and now - self._last_sample >= self.sample_every_s:
                    self._last_sample = now
                    self.samples.append((now, np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)))
                self.first_frame.set()
        except MediaStreamError:
            pass

    async def connect(self) -> HttpAnswer:
        """Offer (one recvonly video transceiver, every candidate gathered), POST it, apply a 201's answer."""
        from aiortc import RTCSessionDescription

        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await http("POST", f"{self.base_url}/whep/{self.camera}", data=self.pc.localDescription.sdp,
                            headers={**self.headers, "Content-Type": "application/sdp"})
        if answer.status == 201:
            self.location = answer.headers.get("Location")
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
        return answer

    async def wait_connected(self, limit_s: float = 15) -> None:
        await wait_connected(self.pc, limit_s)

    async def wait_first_frame(self, limit_s: float = 15) -> None:
        await asyncio.wait_for(self.first_frame.wait(), limit_s)

    async def wait_frame_after(self, t: float, limit_s: float) -> float:
        """The arrival time of the first frame that arrived after ``t`` (waits up to ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while True:
            later = [a for a in self.arrivals[-200:] if a > t]
            if later:
                return later[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no frame within {limit_s:.0f} s")
            await asyncio.sleep(0.05)

    def frames_between(self, t0: float, t1: float) -> int:
        return sum(1 for a in self.arrivals if t0 <= a < t1)

    async def delete(self) -> HttpAnswer:
        assert self.location is not None, "not connected"
        return await http("DELETE", self.base_url + self.location, headers=self.headers)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
