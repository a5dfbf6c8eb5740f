"""RTSP cameras x WHEP viewers: one decode and one detection per camera, fanned out to every viewer.

    python -m bench.cameras [--quick] [--cameras 1,2,4] [--viewers 1,3,5] [--seconds 15] [--settle 3]
                            [--warmup 4] [--size 640x480] [--device cpu] [--json PATH]
                            [--sample-frames 300] [--identity-budget 40] [--dump-dir DIR]

The results go to bench/out/cameras.json (``--json``); ``python -m bench.render`` makes the tables.

Everything runs inside a network namespace this benchmark creates and deletes itself (``fscam-<pid>``: ``lo`` plus
one veth pair, ``v0`` 10.77.0.1/24 and ``v1`` 10.77.0.2/24, both inside, no route out); root and ``ip netns`` are
needed, and GStreamer's RTSP server for Debian's ``/usr/bin/python3`` (see testkit/rtsp.py).

For each number of cameras, three processes run in the namespace:

- an RTSP server (GStreamer: testkit/rtsp_server.py run by ``/usr/bin/python3``, writing each frame's send time)
  on the namespace's 127.0.0.1, one mount per camera, every mount playing the same prepared clip in real time
  from its start for each client;
- the service: ``python -m streamer serve --insecure-no-token --host 10.77.0.1 --device cpu
  --camera c1=rtsp://127.0.0.1:P/c1 ...``
  (cameras on demand: each starts with its first viewer);
- the viewers: one process of receive-only aiortc peers (``POST /whep/{camera}``, ``iceServers=[]``). It connects
  the first number of ``--viewers`` to *each* camera, waits for every one's first frame, then ``--warmup`` s, and
  measures ``--seconds`` s; then adds viewers up to the next number per camera, waits ``--settle`` s and
  measures again; and so on. Viewers stay connected from one step to the next.

The clip: a ground-truth clip (testkit.judging: ``testkit.truth.virtual_camera``, a camera panning and zooming over
the annotated photos with a hard cut to other people every 3 s) as long as the longest run needs, rendered BAND.height
rows shorter than ``--size`` above a black band; each frame's number is stamped as a barcode in the band's left
corner (testkit.framecode.BAND), so no true face is ever under it. Encoded to H.264 with a keyframe every 0.5 s and
no B-frames (the server drops what comes before the first keyframe after PLAY). Prepared once and kept in
bench/out/cameras/.

Latency, source to viewer: the RTSP server notes, for every frame of every client session, the clock time at which
its sink is scheduled to send it (pipeline base time + the frame's running time, on GStreamer's system clock, which
is CLOCK_MONOTONIC like the viewers' ``time.monotonic()``; the server also writes both clocks once so that the run
can check they agree). A viewer reads the frame number back from each decoded frame; latency = arrival - scheduled
send time of that frame number on that camera's session. *Decoded*: when aiortc hands the decoded frame over (its
jitter buffer releases a frame only when the next frame's first packet arrives, so this adds one output frame
interval of the service); *last packet*: when the frame's last RTP packet (marker bit) reached the viewer, which is
when a browser could start decoding.

Measured per step over the window: frames/s per viewer (distinct frames with a valid code that arrived in the
window), median and minimum over the viewers; latency p50/p95 over every such frame of every viewer; CPU of the
service process (``/proc/<pid>/stat`` utime+stime), the viewers' process, the RTSP server and the rest of the
machine; per camera, from ``GET /cameras`` at both ends of the window: frames decoded, detections run, frames
processed and dropped per second; and the shared detector's busy time (``/metrics``).

Leaks: during each step's window the viewers keep a sample of the frames they get (about ``--sample-frames`` per
step, spread over the viewers by frame number; a yuv420p copy as decoded). After the last step (not timed) every
kept frame is judged against the truth frame it shows by three judges (testkit.judges): pixels, identity (dlib,
within ``--identity-budget`` s per step) and the product's own detector, loaded as the server loads it. A step
passes only with 0 face-frames back by every judge, every viewer served, and every frame back carrying its code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
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
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiohttp import ClientSession, ClientTimeout
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from testkit.cpu_time import machine_busy_s, own_cpu_s, process_cpu_s
from testkit.framecode import BAND, stamp_i420
from testkit.judging import (
    judge_outputs,
    load_judge_detector,
    make_judges,
    place_codeless,
    to_i420,
    truth_clip,
    with_band,
)
from testkit.metrics import unlabelled_samples
from testkit.netns import SERVER_ADDR, NetNamespace
from testkit.numbered_receiver import NumberedReceiver
from testkit.readiness import wait_healthy
from testkit.rtsp import RtspServer, rtsp_unavailable_reason
from testkit.truth import TruthClip, TruthFrame

from ._common import REPO, Frame, json_option, parse_size, write_results
from ._leak_counts import judge_thresholds
from ._processes import log_tail, raise_exit, stop_process
from .run_all import cpu_model, load_average

CLIP_CACHE = REPO / "bench" / "out" / "cameras"
KEYFRAME_EVERY_S = 0.5
CLIP_FORMAT = "v2"  # part of the cached clip's name: bump it when the clip's making changes
CLIP_MARGIN_S = 25.0  # clip length beyond the planned steps: start-up, connects, slow first frames
CLIP_FPS = 30
SAMPLE_FRAMES = 300  # frames kept per step for the judges, over all its viewers
IDENTITY_BUDGET_S = 40.0  # dlib's seconds per step
JUDGE_S_PER_FRAME = 0.1  # a generous allowance for judging a kept frame
CONTROL_FRAMES = 30  # frames of the clip as sent, judged as a control (they must leak)
CONTROL_BUDGET_S = 8.0
CLOCK_AGREE_S = 0.005  # GStreamer's clock and time.monotonic() must agree this well, else no latency


# -------------------------------------------------------------------------------------------------- the clip


def camera_truth(width: int, height: int, frames: int, seed: int) -> TruthClip:
    """The picture of the camera clip: ``frames`` frames of the ground-truth clip, BAND.height rows shorter than the
    frame. A longer clip of the same seed starts with the same frames, so a longer cached clip serves too."""
    return truth_clip(width, height - BAND.height, frames / CLIP_FPS, seed)


def truth_of(clip: TruthClip) -> Callable[[int], TruthFrame]:
    """Frame number -> what the camera clip's frame of that number shows (the picture above the band)."""
    return lambda number: with_band(clip.frame(number), BAND.height)


def prepare_clip(width: int, height: int, seconds: float, seed: int) -> tuple[Path, Fraction, int]:
    """The ground-truth clip for ``seconds`` at CLIP_FPS, above the barcode band, each frame stamped with its number,
    as H.264 MP4 with a keyframe every KEYFRAME_EVERY_S and no B-frames. Cached in CLIP_CACHE: a cached clip of the
    same seed, size and keyframe interval that is long enough is reused. Returns (path, frame rate, frames)."""
    rate = Fraction(CLIP_FPS)
    frames = math.ceil(seconds * rate)
    gop = max(1, round(KEYFRAME_EVERY_S * rate))
    stem = f"truth-s{seed}-{width}x{height}-g{gop}-{CLIP_FORMAT}"
    CLIP_CACHE.mkdir(parents=True, exist_ok=True)
    for cached in sorted(CLIP_CACHE.glob(f"{stem}-*f.mp4")):
        with contextlib.suppress(ValueError):
            have = int(cached.stem.rsplit("-", 1)[1][:-1])
            if have >= frames:
                return cached, rate, have
    dst = CLIP_CACHE / f"{stem}-{frames}f.mp4"
    print(f"[cameras] preparing {dst.name} ({frames} frames) ...", file=sys.stderr, flush=True)
    truth = truth_of(camera_truth(width, height, frames, seed))
    part = dst.with_suffix(".part.mp4")
    with av.open(str(part), "w") as out:
        vout: Any = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0",
                        "preset": "veryfast", "crf": "20"}
        for n in range(frames):
            i420 = to_i420(np.asarray(truth(n).image))
            stamp_i420(i420, width, height, n, BAND)
            frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
            frame.pts, frame.time_base = n, 1 / rate
            for packet in vout.encode(frame):
                out.mux(packet)
        for packet in vout.encode(None):
            out.mux(packet)
    part.replace(dst)
    return dst, rate, frames


def judge_control(clip: Path, args: argparse.Namespace, frames: int = CONTROL_FRAMES) -> dict[str, Any]:
    """The control: ``frames`` frames spread over the camera clip's planned part, decoded as the RTSP server sends
    them (no service), through the same judges. Nothing hides them, so every judge must count them: that shows the
    truth matches the clip and that the judges see the faces through H.264."""
    width, height = parse_size(args.size)
    wanted = set(np.linspace(0, min(args.truth_frames, CLIP_FPS * planned_seconds(args)) - 1, frames).astype(int))
    outputs: list[tuple[int, Frame]] = []
    with av.open(str(clip)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n in wanted:
                outputs.append((n, np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)))
            if n >= max(wanted):
                break
    truth = camera_truth(width, height, args.truth_frames, args.seed)
    judges = make_judges(truth, load_judge_detector(args.device))
    return judge_outputs(truth_of(truth), outputs, judges, CONTROL_BUDGET_S, "control (the clip as sent)").result()


# ------------------------------------------------------------------------------------------- viewer process


class Viewer(NumberedReceiver):
    """A receive-only WHEP viewer that reads each decoded frame's number and notes when it arrived, and when its
    last RTP packet arrived, on CLOCK_MONOTONIC like the RTSP server's send times."""

    def __init__(self, base_url: str, camera: str, width: int, height: int) -> None:
        super().__init__(width, height, time.monotonic)
        self.base_url, self.camera = base_url, camera
        # iceServers=[] always: with no configuration aiortc falls back to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # While ``keep_every`` > 0: frames whose (number + keep_offset) is a multiple of it, as decoded (yuv420p).
        self.keep_every = 0
        self.keep_offset = 0
        self.kept: list[tuple[int, Frame]] = []
        self.codeless: list[tuple[float, Frame]] = []  # (arrival, yuv420p) of frames with no code, while keeping
        self.location: str | None = None
        self._consumers: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._consumers.append(asyncio.ensure_future(self.consume(track)))

    def on_codeless(self, now: float, frame: av.VideoFrame, luma: npt.NDArray[Any]) -> None:
        if self.keep_every:  # judged too, placed by likeness after the run
            self.codeless.append((now, np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)))

    def on_numbered(self, number: int, frame: av.VideoFrame, now: float) -> None:
        if self.keep_every and (number + self.keep_offset) % self.keep_every == 0:
            self.kept.append((number, np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)))

    async def connect(self, http: ClientSession) -> None:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        self.watch_packets(transceiver.receiver)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        for _ in range(400):  # aiortc gathers inside setLocalDescription; bounded wait anyway
            if self.pc.iceGatheringState == "complete":
                break
            await asyncio.sleep(0.05)
        async with http.post(f"{self.base_url}/whep/{self.camera}", data=self.pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp"}) as answer:
            text = await answer.text()
            if answer.status != 201:
                raise RuntimeError(f"POST /whep/{self.camera}: HTTP {answer.status} {text[:300]}")
            self.location = answer.headers.get("Location")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        frames = [[n, round(t, 6), round(self.packet_arrived[n], 6) if n in self.packet_arrived else None]
                  for n, t in self.arrived.items() if t0 <= t < t1]
        return {"camera": self.camera, "frames": frames, "invalid": sum(1 for t in self.invalid if t0 <= t < t1),
                "got_any": self.first_frame.is_set()}

    async def close(self, http: ClientSession) -> None:
        if self.location is not None:
            with contextlib.suppress(Exception):
                async with http.delete(self.base_url + self.location) as answer:
                    await answer.read()
        await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)


@dataclass
class Snap:
    at: float
    service_cpu_s: float
    rtsp_cpu_s: float
    viewers_cpu_s: float
    busy_s: float
    cameras: list[dict[str, Any]]
    metrics: dict[str, float]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class ViewerRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base_url = f"http://{SERVER_ADDR}:{args.port}"
        self.cameras = [c for c in args.cameras.split(",") if c]
        self.counts = [int(v) for v in args.viewers.split(",") if v]
        self.width, self.height = parse_size(args.size)
        self.viewers: dict[str, list[Viewer]] = {c: [] for c in self.cameras}
        self.steps: list[dict[str, Any]] = []
        self.kept: list[list[tuple[int, Frame]]] = []  # per step: (frame number, yuv420p) over all its viewers
        # per step, per viewer: its readable frames' (arrival, number), and its frames back without a code
        self.codeless: list[list[tuple[list[tuple[float, int]], list[tuple[float, Frame]]]]] = []

    async def snapshot(self, http: ClientSession) -> Snap:
        cameras: list[dict[str, Any]] = []
        metrics: dict[str, float] = {}
        with contextlib.suppress(Exception):
            async with http.get(self.base_url + "/cameras") as answer:
                if answer.status == 200:
                    cameras = list((await answer.json())["cameras"])
        with contextlib.suppress(Exception):
            async with http.get(self.base_url + "/metrics") as answer:
                if answer.status == 200:
                    metrics = unlabelled_samples(await answer.text())
        return Snap(time.monotonic(), process_cpu_s(self.args.server_pid), process_cpu_s(self.args.rtsp_pid),
                    own_cpu_s(), machine_busy_s(), cameras, metrics)

    async def add_viewers(self, http: ClientSession, per_camera: int) -> list[Viewer]:
        new: list[Viewer] = []
        for camera in self.cameras:
            while len(self.viewers[camera]) < per_camera:
                viewer = Viewer(self.base_url, camera, self.width, self.height)
                self.viewers[camera].append(viewer)
                new.append(viewer)
        gate = asyncio.Semaphore(4)

        async def connect(viewer: Viewer) -> None:
            async with gate:
                await viewer.connect(http)

        await asyncio.gather(*(connect(v) for v in new))
        return new

    async def run(self) -> dict[str, Any]:
        error: str | None = None
        async with ClientSession(timeout=ClientTimeout(total=30)) as http:
            try:
                await wait_healthy(http, self.base_url, self.args.ready_timeout,
                                   alive=lambda: _alive(self.args.server_pid))
                for k, count in enumerate(self.counts):
                    began = time.monotonic()
                    new = await self.add_viewers(http, count)
                    # Cameras start on demand with their first viewer: the first frame can take a few seconds.
                    waits = [asyncio.wait_for(v.first_frame.wait(), self.args.first_frame_timeout) for v in new]
                    results = await asyncio.gather(*waits, return_exceptions=True)
                    missing = sum(1 for r in results if isinstance(r, BaseException))
                    first_s = time.monotonic() - began
                    await asyncio.sleep(self.args.warmup if k == 0 else self.args.settle)
                    a = await self.snapshot(http)
                    self.keep(True)
                    await asyncio.sleep(self.args.seconds)
                    b = await self.snapshot(http)
                    self.kept.append(self.keep(False))
                    self.codeless.append(self.take_codeless())
                    self.steps.append(self.step_result(count, a, b, missing, first_s))
                    print(f"[cameras viewers] {len(self.cameras)} camera(s) x {count} viewer(s) measured",
                          file=sys.stderr, flush=True)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                everyone = [v for vs in self.viewers.values() for v in vs]
                await asyncio.gather(*(v.close(http) for v in everyone), return_exceptions=True)
        if self.kept:  # after the run, not timed: the judges
            try:
                self.judge()
            except Exception as exc:
                error = (error + "; " if error else "") + f"judging failed: {type(exc).__name__}: {exc}"
        return {"cameras": self.cameras, "steps": self.steps, "error": error}

    def keep(self, on: bool) -> list[tuple[int, Frame]]:
        """Start keeping about ``--sample-frames`` frames over every viewer during a window, spread by frame
        number (each viewer a different residue); or stop, and return what was kept."""
        everyone = [v for vs in self.viewers.values() for v in vs]
        if on:
            stride = max(1, math.ceil(len(everyone) * CLIP_FPS * self.args.seconds / self.args.sample_frames))
            for i, viewer in enumerate(everyone):
                viewer.kept, viewer.keep_every, viewer.keep_offset = [], stride, i % stride
            return []
        kept: list[tuple[int, Frame]] = []
        for viewer in everyone:
            viewer.keep_every = 0
            kept += viewer.kept
            viewer.kept = []
        return sorted(kept, key=lambda item: item[0])

    def take_codeless(self) -> list[tuple[list[tuple[float, int]], list[tuple[float, Frame]]]]:
        everyone = [v for vs in self.viewers.values() for v in vs]
        taken = [([(t, n) for n, t in v.arrived.items()], v.codeless) for v in everyone]
        for viewer in everyone:
            viewer.codeless = []
        return taken

    def judge(self) -> None:
        clip = camera_truth(self.width, self.height, self.args.truth_frames, self.args.seed)
        truth = truth_of(clip)
        judges = make_judges(clip, load_judge_detector(self.args.device))
        for step, kept, codeless in zip(self.steps, self.kept, self.codeless, strict=True):
            label = f"{len(self.cameras)} camera(s) x {step['viewers_per_camera']} viewer(s)"
            placed = [item for readable, frames in codeless
                      for item in place_codeless(truth, readable, frames, BAND.height)]
            outputs = [(n, f) for n, f in kept + placed if n < self.args.truth_frames]
            judged = judge_outputs(truth, outputs, judges, self.args.identity_budget, label)
            step.update(judged.result())
            step["codeless_judged"] = sum(1 for n, _ in placed if n < self.args.truth_frames)
            if self.args.dump_dir:
                judged.report.dump(Path(self.args.dump_dir) / f"{len(self.cameras)}-cameras-"
                                                              f"{step['viewers_per_camera']}-viewers")
        self.kept = []

    def step_result(self, count: int, a: Snap, b: Snap, missing: int, first_s: float) -> dict[str, Any]:
        everyone = [v for vs in self.viewers.values() for v in vs]
        return {
            "viewers_per_camera": count, "t0": a.at, "t1": b.at, "first_frames_s": round(first_s, 2),
            "viewers_without_first_frame": missing,
            "cpu_s": {"service": b.service_cpu_s - a.service_cpu_s, "rtsp": b.rtsp_cpu_s - a.rtsp_cpu_s,
                      "viewers": b.viewers_cpu_s - a.viewers_cpu_s, "busy": b.busy_s - a.busy_s},
            "cameras_start": a.cameras, "cameras_end": b.cameras,
            "inference_s": b.metrics.get("streamer_inference_seconds_sum", 0.0)
            - a.metrics.get("streamer_inference_seconds_sum", 0.0),
            "inferences": b.metrics.get("streamer_inference_seconds_count", 0.0)
            - a.metrics.get("streamer_inference_seconds_count", 0.0),
            "viewers": [v.window(a.at, b.at) for v in everyone],
        }


def viewers_main(args: argparse.Namespace) -> int:
    result = asyncio.run(ViewerRun(args).run())
    print(json.dumps(result))
    return 0


# -------------------------------------------------------------------------------------------- orchestrator


@dataclass
class SendTimes:
    """Per camera, per RTSP session: frame number -> scheduled send time (s, CLOCK_MONOTONIC)."""

    sessions: dict[str, dict[int, dict[int, float]]]
    clock_skew_s: float | None  # the largest |GStreamer clock - time.monotonic()| the server saw

    def at(self, camera: str, number: int, arrival: float) -> float | None:
        """The send time of ``number`` on the session of ``camera`` that sent it last before ``arrival``."""
        best: float | None = None
        for times in self.sessions.get(camera, {}).values():
            sent = times.get(number)
            if sent is not None and sent <= arrival and (best is None or sent > best):
                best = sent
        return best


def read_send_times(path: Path, rate: Fraction) -> SendTimes:
    sessions: dict[str, dict[int, dict[int, float]]] = {}
    skew: float | None = None
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue
            kind, mount, session = parts[0], parts[1], int(parts[2])
            if kind == "C":
                diff = abs(int(parts[3]) - int(parts[4])) / 1e9
                skew = diff if skew is None else max(skew, diff)
            elif kind == "F":
                number = round(Fraction(int(parts[3]), 10**9) * rate)
                sessions.setdefault(mount, {}).setdefault(session, {})[number] = int(parts[4]) / 1e9
    return SendTimes(sessions, skew)


@dataclass
class RunResult:
    cameras: int
    data: dict[str, Any] | None
    error: str | None
    send: SendTimes | None = None


def service_command(py: str, port: int, rtsp_port: int, names: list[str], args: argparse.Namespace) -> list[str]:
    max_viewers = len(names) * max(args.viewer_counts) + 4
    cmd = [py, "-m", "streamer", "serve", "--insecure-no-token", "--host", SERVER_ADDR, "--port", str(port),
           "--device", args.device, "--max-viewers", str(max_viewers)]
    for name in names:
        cmd += ["--camera", f"{name}=rtsp://127.0.0.1:{rtsp_port}/{name}"]
    return cmd + shlex.split(args.server_args)


def run_one(ns: NetNamespace, count: int, clip: Path, rate: Fraction, ports: tuple[int, int],
            args: argparse.Namespace, logs: Path) -> RunResult:
    py = sys.executable
    http_port, rtsp_port = ports
    names = [f"c{i + 1}" for i in range(count)]
    times = logs / f"send-times-{count}.txt"
    rtsp = RtspServer(dict.fromkeys(names, clip), rtsp_port, ns, logs / f"rtsp-{count}.log", times)
    server_cmd = service_command(py, http_port, rtsp_port, names, args)
    shown = shlex.join(["ip", "netns", "exec", "NS", *["python" if c == py else c for c in server_cmd]])
    print(f"[cameras] {count} camera(s): {shown}", file=sys.stderr, flush=True)
    server_log, viewers_log = logs / f"service-{count}.log", logs / f"viewers-{count}.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        rtsp_pid = rtsp.start().pid
        with server_log.open("wb") as slog:
            proc = subprocess.Popen([*ns.exec_prefix(), *server_cmd], cwd=REPO, stdout=slog, stderr=subprocess.STDOUT)
        viewers_cmd = [py, "-m", "bench.cameras", "_viewers", "--port", str(http_port), "--cameras", ",".join(names),
                       "--viewers", ",".join(str(v) for v in args.viewer_counts), "--size", args.size,
                       "--server-pid", str(proc.pid), "--rtsp-pid", str(rtsp_pid),
                       "--warmup", str(args.warmup), "--settle", str(args.settle), "--seconds", str(args.seconds),
                       "--ready-timeout", str(args.ready_timeout),
                       "--first-frame-timeout", str(args.first_frame_timeout), "--seed", str(args.seed),
                       "--truth-frames", str(args.truth_frames), "--sample-frames", str(args.sample_frames),
                       "--identity-budget", str(args.identity_budget), "--device", args.device]
        if args.dump_dir is not None:
            viewers_cmd += ["--dump-dir", str(args.dump_dir.resolve())]
        limit = (args.ready_timeout + planned_seconds(args) + 120
                 + len(args.viewer_counts) * (args.identity_budget + 60 + args.sample_frames * JUDGE_S_PER_FRAME))
        with viewers_log.open("wb") as vlog:
            done = subprocess.run([*ns.exec_prefix(), *viewers_cmd], cwd=REPO, stdout=subprocess.PIPE, stderr=vlog,
                                  timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return RunResult(count, None, "viewers timed out\n" + log_tail(viewers_log, 1500))
    except RuntimeError as exc:
        return RunResult(count, None, str(exc))
    finally:
        if proc is not None:
            stop_process(proc)
        rtsp.stop()
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        data: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return RunResult(count, None, f"viewers exited {done.returncode} without a result:\n"
                                      f"{log_tail(viewers_log, 1500)}\nservice log:\n{log_tail(server_log, 1500)}")
    error = data.get("error")
    if error:
        error = f"{error}\nservice log:\n{log_tail(server_log, 1500)}"
    return RunResult(count, data, error, read_send_times(times, rate))


def planned_seconds(args: argparse.Namespace) -> float:
    """Seconds of camera playback the steps need (connects and first frames excluded)."""
    steps = len(args.viewer_counts)
    return float(args.warmup + args.seconds * steps + args.settle * (steps - 1))


# ------------------------------------------------------------------------------------------------ results


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def _rate_per_camera(step: dict[str, Any], key: str, seconds: float) -> list[float]:
    start = {c["name"]: c for c in step["cameras_start"]}
    rates = []
    for end in step["cameras_end"]:
        begin = start.get(end["name"])
        if begin is not None:
            rates.append((float(end[key]) - float(begin[key])) / seconds)
    return rates


def summarize(run: RunResult) -> list[dict[str, Any]]:
    """One row of numbers per step of a run."""
    rows: list[dict[str, Any]] = []
    if run.data is None:
        return rows
    send = run.send
    use_latency = send is not None and send.clock_skew_s is not None and send.clock_skew_s <= CLOCK_AGREE_S
    for step in run.data["steps"]:
        seconds = float(step["t1"]) - float(step["t0"])
        fps = [len(v["frames"]) / seconds for v in step["viewers"]]
        decoded: list[float] = []
        packet: list[float] = []
        unmatched = 0
        if use_latency and send is not None:
            for v in step["viewers"]:
                for number, t, tp in v["frames"]:
                    sent = send.at(v["camera"], int(number), float(t))
                    if sent is None:
                        unmatched += 1
                        continue
                    decoded.append(1000 * (float(t) - sent))
                    if tp is not None:
                        packet.append(1000 * (float(tp) - sent))
        cpu = step["cpu_s"]
        service, rtsp, viewers = (100 * float(cpu[k]) / seconds for k in ("service", "rtsp", "viewers"))
        busy = 100 * float(cpu["busy"]) / seconds
        ends = step["cameras_end"]
        inferences, inference_s = float(step.get("inferences", 0)), float(step.get("inference_s", 0))
        rows.append({
            "cameras": run.cameras, "viewers_per_camera": int(step["viewers_per_camera"]),
            "viewers": len(step["viewers"]), "window_s": seconds,
            "fps_median": statistics.median(fps) if fps else None, "fps_min": min(fps) if fps else None,
            "p50_ms": _pct(decoded, 50), "p95_ms": _pct(decoded, 95),
            "packet_p50_ms": _pct(packet, 50), "packet_p95_ms": _pct(packet, 95),
            "latency_frames": len(decoded), "unmatched_frames": unmatched,
            "cpu_pct": {"service": service, "rtsp": rtsp, "viewers": viewers,
                        "other": max(0.0, busy - service - rtsp - viewers)},
            "decode_fps": _rate_per_camera(step, "frames_decoded", seconds),
            "detections_per_s": _rate_per_camera(step, "detections", seconds),
            "processed_fps": _rate_per_camera(step, "frames_processed", seconds),
            "dropped_per_s": _rate_per_camera(step, "frames_dropped", seconds),
            "detector_busy_pct": 100 * inference_s / seconds,
            "inference_ms": 1000 * inference_s / inferences if inferences > 0 else None,
            "hidden_whole": sum(int(c.get("frames_hidden_whole", 0)) for c in ends),
            "connects": max((int(c.get("connects", 0)) for c in ends), default=0),
            "states": sorted({str(c.get("state")) for c in ends}),
            "invalid_codes": sum(int(v["invalid"]) for v in step["viewers"]),
            "codeless_judged": int(step.get("codeless_judged", 0)),
            "viewers_without_frames": sum(1 for v in step["viewers"] if not v["frames"]),
            "first_frames_s": step["first_frames_s"],
            "judged": bool(step.get("judged")), "kept_frames": int(step.get("kept_frames", 0)),
            "frame_stride": step.get("frame_stride"), "identity_every": step.get("identity_every"),
            "judge_s": step.get("judge_s"), "leak_report": step.get("leak_report"),
            "face_frames_leaked": step.get("face_frames_leaked"),
        })
    return rows


# -------------------------------------------------------------------------------------------------- main


def _counts(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise SystemExit(f"--{what} takes comma-separated numbers, not {text!r}") from exc
    if not values or min(values) < 1 or values != sorted(set(values)):
        raise SystemExit(f"--{what} takes increasing positive numbers, not {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.cameras", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 and 2 cameras, 1 and 2 viewers each, 4 s measured per step")
    p.add_argument("--cameras", default=None, help="camera counts, comma-separated (default 1,2,4; quick 1,2)")
    p.add_argument("--viewers", default=None,
                   help="viewers per camera, increasing, comma-separated (default 1,3,5; quick 1,2)")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per step (default 15; quick 4)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds after the first frames before the first step (default 4; quick 2)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds after added viewers' first frames before the next step (default 3; quick 2)")
    p.add_argument("--size", default="640x480", help="frame size of the cameras (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the ground-truth clip's seed (default: %(default)s)")
    p.add_argument("--sample-frames", type=int, default=SAMPLE_FRAMES,
                   help="frames kept per step for the judges, over all its viewers (default: %(default)s)")
    p.add_argument("--identity-budget", type=float, default=IDENTITY_BUDGET_S,
                   help="seconds of dlib (the identity judge) per step (default: %(default)s)")
    p.add_argument("--dump-dir", type=Path, default=None,
                   help="write the judges' evidence (side-by-side PNGs of leaks, summary.json) here")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="the service's device")
    p.add_argument("--server-args", default="", help="extra arguments for the service, as one string")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for /healthz 200")
    p.add_argument("--first-frame-timeout", type=float, default=30.0,
                   help="seconds a new viewer may wait for its first frame")
    json_option(p, "cameras")
    return p


def internal_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.cameras _viewers")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cameras", required=True)
    p.add_argument("--viewers", required=True)
    p.add_argument("--size", required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--rtsp-pid", type=int, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--settle", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--first-frame-timeout", type=float, default=30.0)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--truth-frames", type=int, required=True)
    p.add_argument("--sample-frames", type=int, default=SAMPLE_FRAMES)
    p.add_argument("--identity-budget", type=float, default=IDENTITY_BUDGET_S)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dump-dir", default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_viewers":
        return viewers_main(internal_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    args.camera_counts = _counts(args.cameras or ("1,2" if args.quick else "1,2,4"), "cameras")
    args.viewer_counts = _counts(args.viewers or ("1,2" if args.quick else "1,3,5"), "viewers")
    args.seconds = args.seconds if args.seconds is not None else (4.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 4.0)
    args.settle = args.settle if args.settle is not None else (2.0 if args.quick else 3.0)
    width, height = parse_size(args.size)
    if width % 2 or height % 2 or width < BAND.code_width or height < BAND.height + 64:
        raise SystemExit(f"--size must be even and at least {BAND.code_width}x{BAND.height + 64}")
    if args.sample_frames < 1:
        raise SystemExit("--sample-frames must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates a network namespace (aioice never uses 127.0.0.1)")
    reason = rtsp_unavailable_reason()
    if reason:
        raise SystemExit(f"cannot run the RTSP cameras: {reason}")
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    machine = f"{cpu_model()}, {cores} logical cores ({usable} usable); load average at start {load_average()}"

    signal.signal(signal.SIGTERM, raise_exit)
    started = time.perf_counter()
    # Every step's connects and first frames take a few seconds more than planned: CLIP_MARGIN_S covers them.
    clip, rate, frames = prepare_clip(width, height,
                                      planned_seconds(args) + len(args.viewer_counts) * 5 + CLIP_MARGIN_S, args.seed)
    args.truth_frames = frames
    clip_text = (f"a ground-truth clip (`testkit.truth.virtual_camera`, seed {args.seed}: a camera panning and "
                 "zooming over the 9 annotated photos, a hard cut to other people every 3 s), "
                 f"{frames} frames ({float(frames / rate):.0f} s at {float(rate):g} fps). "
                 f"The picture is {BAND.height} rows "
                 f"shorter than {width}x{height}, above a black band. Each frame's number is a barcode in the band's "
                 f"left corner, so no true face is under it. H.264 with a keyframe every {KEYFRAME_EVERY_S:g} s and "
                 "no B-frames")
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-cameras-") as tmp:
        ns = NetNamespace.create(f"fscam-{os.getpid()}")
        try:
            for k, count in enumerate(args.camera_counts):
                results.append(run_one(ns, count, clip, rate, (9300 + k, 8600 + k), args, Path(tmp)))
        finally:
            ns.delete()
    machine += f", at end {load_average()}"
    control: dict[str, Any] | None = None
    try:
        control = judge_control(clip, args)
    except Exception as exc:  # the control only supports the verdicts; say it failed and go on
        print(f"[cameras] the control failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    write_results("cameras", argv, args, started, runs=[
        {"cameras": r.cameras, "error": r.error, "steps": summarize(r),
         "steps_measured": len(r.data["steps"]) if r.data is not None else 0, "send_times": r.send is not None,
         "clock_skew_s": None if r.send is None else r.send.clock_skew_s} for r in results],
        control=control, clock_agree_s=CLOCK_AGREE_S, machine=machine, clip_text=clip_text,
        judge_thresholds=judge_thresholds())
    print(f"[cameras] done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
