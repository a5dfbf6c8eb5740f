"""A live session's client (aiortc): a camera playing a clip to ``POST /offer`` (testkit.camera_clip), every
returned frame matched to the frame sent by its number (testkit.numbered_receiver), latency, frames per second and
CPU measured over a window, and the frames of the window kept for the judges."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
from aiohttp import ClientSession, ClientTimeout
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from .camera_clip import CameraTrack, Source
from .cpu_time import machine_busy_s, own_cpu_s, process_cpu_s
from .metrics import unlabelled_samples
from .numbered_receiver import NumberedReceiver
from .peer import wait_connected
from .readiness import wait_healthy
from .truth import Image

SESSION_POLL_S = 1.0  # how often the session's detections_per_s is read during the window


@dataclass
class Snapshot:
    at: float
    client_cpu_s: float
    server_cpu_s: float
    busy_s: float  # every core of the machine
    metrics: dict[str, float]


class Client(NumberedReceiver):
    """One live session: plays ``source`` to ``POST /offer`` like a camera and measures what comes back over the
    window from ``warmup`` to ``warmup + seconds`` after its first frame; ``run`` returns the summary."""

    def __init__(self, base_url: str, source: Source, seconds: float, warmup: float, tail: float,
                 server_pid: int) -> None:
        super().__init__(source.width, source.height, time.perf_counter)
        self.base_url = base_url
        self.source = source
        self.warmup = warmup
        self.seconds = seconds
        self.tail = tail
        self.server_pid = server_pid
        # The camera keeps playing for ``tail`` s after the window, so that every frame sent in the window is pushed
        # out of both jitter buffers (aiortc releases a frame only when the next one arrives).
        self.track = CameraTrack(source, warmup + seconds + tail)
        # Each frame of the measured window that came back, as decoded (yuv420p), for the judges after the run.
        self.keep = True
        self.kept: dict[int, Image] = {}
        self.codeless: list[tuple[float, Image]] = []  # (arrival, yuv420p) of frames in the window with no code
        # Called with every returned frame that carries a new valid code (the soak judges its frames as they come).
        self.on_frame: Callable[[int, av.VideoFrame], None] | None = None
        self.dump_dir: Path | None = None
        self.snapshots: list[Snapshot] = []
        self.session_id: str | None = None
        # ``detections_per_s`` of our session (its 2 s rate meter), read about once a second during the window.
        self.detect_rates: list[float] = []

    def on_codeless(self, now: float, frame: av.VideoFrame, luma: npt.NDArray[Any]) -> None:
        if self.keep and self._in_window(now):  # judged too, placed by likeness after the run
            self.codeless.append((now, np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)))
        if self.dump_dir is not None and len(self.invalid) <= 10:
            cv2.imwrite(str(self.dump_dir / f"no-code-{len(self.invalid):02d}.png"), luma)

    def on_numbered(self, number: int, frame: av.VideoFrame, now: float) -> None:
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
                    metrics = unlabelled_samples(await answer.text())
        return Snapshot(time.perf_counter(), own_cpu_s(), process_cpu_s(self.server_pid), machine_busy_s(), metrics)

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

    async def run(self, ready_timeout: float) -> dict[str, Any]:
        async with ClientSession(timeout=ClientTimeout(total=30)) as http:
            await wait_healthy(http, self.base_url, ready_timeout)
            # iceServers=[] always: with no configuration aiortc falls back to a public STUN server.
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            consumers: list[asyncio.Task[None]] = []

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                if track.kind == "video":
                    consumers.append(asyncio.ensure_future(self.consume(track)))

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
                await wait_connected(pc, 20)
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
