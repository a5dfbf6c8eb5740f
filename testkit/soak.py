"""The soak: many live sessions joining and leaving for minutes, and the server's memory and resources over time
(bench.soak runs it for minutes and reports; tests/test_soak.py runs a short one and asserts).

A :class:`Soak` keeps ``sessions`` slots busy against a server inside the network namespace (testkit.netns): each
slot opens a session playing a ground-truth clip (:func:`load_soak_source`: a virtual camera over the annotated
photos above the barcode band, each frame stamped with its number), keeps it for a random life, hangs up (DELETE or
a plain close, alternately) and opens the next one. A join refused with 503 waits its Retry-After and tries again.

Every ``interval_s`` it samples the server: RSS (``VmRSS``), OS threads and fds (``/proc``), its UDP sockets, live
sessions, Python threads and asyncio tasks (``/healthz``), frames hidden whole (``/metrics``), and the frames/s each
open session got back. Every returned frame is judged as it arrives by the pixel judge (testkit.judges), and about
one frame a second of each session is kept; after the run these samples are judged by all three judges. At the end
every session is closed, and after a settle the counts must be back at the baseline taken after a warm-up
(:func:`leak_problems`).

With ``rounds`` > 1 the run is cut into that many rounds; at the end of each every session closes, the server
settles and an ``idle`` sample is taken, whose heap in use (:func:`idle_heap_slope`) must not climb round after
round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import ClientSession, ClientTimeout
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from .camera_client import Client
from .camera_clip import Source, truth_source
from .framecode import BAND
from .judges import PixelJudge, eligible
from .judging import judge_outputs, load_judge_detector, make_judges
from .metrics import unlabelled_samples
from .peer import wait_connected
from .truth import Image, TruthFrame

LIFE_S = (20.0, 90.0)
# libvpx's codec threads end only when Python's cyclic GC frees the codec (see tests/test_live.py), so the OS thread
# count saw-tooths; a leak of one thread per session over a soak's dozens of sessions still exceeds this.
OS_THREAD_SLACK = 24
FD_SLACK = 4
# Python threads: two bounded pools grow on demand and keep their workers (the frame executor, 4; the event loop's
# default executor, cores + 4); one thread leaked per session exceeds this within a soak's dozens of sessions.
PY_THREAD_SLACK = 4 + (os.cpu_count() or 1) + 4
# Frames kept for the judges after the run: about one a second per session, at most this many (a uniform sample).
SAMPLE_EVERY_S = 1.0
MAX_SAMPLES = 1500
IDENTITY_BUDGET_S = 30.0


# ----------------------------------------------------------------------------------------------- the server


def _status_field(pid: int, name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def server_udp_sockets(pid: int) -> int:
    """UDP sockets the process holds: its socket fds' inodes found in its own namespace's /proc/PID/net/udp."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[9] in inodes:
                    count += 1
    return count


@dataclass
class Sample:
    t_s: float  # since the soak started
    phase: str  # baseline, run, idle (between rounds), end
    rss_mib: float
    os_threads: int
    fds: int
    udp: int
    sessions: int  # as the server reports them
    py_threads: int | None
    tasks: int | None
    hidden_whole: float  # cumulative, /metrics
    fps_per_session: float | None  # frames back per second per open session, since the last sample
    open_sessions: int  # client side
    heap_mib: float | None = None  # malloc's bytes in use (/healthz), not the free pages its arenas keep
    python_blocks: int | None = None  # Python's allocated blocks (/healthz)


# ------------------------------------------------------------------------------------------------ sessions


@dataclass
class SessionRecord:
    slot: int
    planned_s: float
    connected_s: float = 0.0
    frames_back: int = 0
    fps: float = 0.0
    hidden_whole: int = 0
    face_frames_checked: int = 0  # by the pixel judge, every frame back
    face_frames_leaked: int = 0  # ... and judged leaked by it
    invalid_codes: int = 0
    closed_by: str = ""
    error: str | None = None


@dataclass
class SoakResult:
    sessions: int
    size: str
    duration_s: float
    clip: str
    samples: list[Sample] = field(default_factory=list)
    records: list[SessionRecord] = field(default_factory=list)
    refused: int = 0  # joins answered 503 (admission), retried after Retry-After
    refusals: list[str] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)  # the first few face-frames the pixel judge flagged
    judged: dict[str, Any] | None = None  # the sample judged by all three judges after the run (Judged.result)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SoakResult:
        data = json.loads(text)
        samples = [Sample(**s) for s in data.pop("samples")]
        records = [SessionRecord(**r) for r in data.pop("records")]
        return cls(**data, samples=samples, records=records)


class Soak:
    """The client side, on one event loop inside the namespace (a process of its own, or a test's NamespaceLoop).
    ``server_pid``: the server process, read through /proc."""

    def __init__(self, base_url: str, server_pid: int, source: Source, sessions: int, duration_s: float,
                 life_s: tuple[float, float] = LIFE_S, interval_s: float = 10.0, settle_s: float = 10.0,
                 seed: int = 1, identity_budget_s: float = IDENTITY_BUDGET_S, device: str = "cpu",
                 rounds: int = 1) -> None:
        if source.truth is None:
            raise ValueError("the soak needs a ground-truth source (load_soak_source)")
        if rounds < 1:
            raise ValueError("rounds must be at least 1")
        self.rounds = rounds
        self.base_url = base_url
        self.pid = server_pid
        self.source = source
        self.slots = sessions
        self.duration_s = duration_s
        self.life_s = life_s
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.rng = random.Random(seed)
        self.identity_budget_s = identity_budget_s
        self.device = device
        self.pixels = PixelJudge()
        self._truth: dict[int, TruthFrame] = {}  # source frame index -> truth (the clip is short)
        self.samples: list[tuple[int, Image]] = []
        self._sampled = 0  # frames offered to the sample (reservoir)
        self._sample_rng = random.Random(seed + 1)
        self._sample_every = max(1, round(SAMPLE_EVERY_S * source.fps))
        self.result = SoakResult(sessions, f"{source.width}x{source.height}", duration_s, source.name)
        self.open: dict[int, Client] = {}
        self._t0 = time.monotonic()
        self._round_end = self._t0 + duration_s
        self._sessions_had: dict[int, int] = {}  # slot -> sessions so far (hang-ups alternate across rounds)
        self._last_frames: dict[int, tuple[Client, int]] = {}  # id -> (client, frames): ids are reused
        self._last_t = time.monotonic()
        self._http: ClientSession | None = None

    async def _get(self, path: str) -> tuple[int, str]:
        assert self._http is not None
        async with self._http.get(self.base_url + path) as answer:
            return answer.status, await answer.text()

    async def sample(self, phase: str) -> Sample:
        status, text = await self._get("/healthz")
        health = json.loads(text) if status in (200, 503) else {}
        runtime = health.get("runtime") or {}
        _, metrics = await self._get("/metrics")
        now = time.monotonic()
        frames = {id(c): (c, len(c.arrived)) for c in self.open.values()}
        gained = []
        for k, (client, n) in frames.items():
            last = self._last_frames.get(k)
            gained.append(n - last[1] if last is not None and last[0] is client else n)
        span = now - self._last_t
        fps = sum(gained) / len(gained) / span if gained and span > 0 else None
        self._last_frames, self._last_t = frames, now
        s = Sample(round(now - self._t0, 1), phase, round(_status_field(self.pid, "VmRSS") / 1024, 1),
                   _status_field(self.pid, "Threads"), len(os.listdir(f"/proc/{self.pid}/fd")),
                   server_udp_sockets(self.pid), int(health.get("sessions", -1)), runtime.get("threads"),
                   runtime.get("tasks"), unlabelled_samples(metrics).get("streamer_frames_hidden_whole_total", 0.0),
                   None if fps is None else round(fps, 1), len(self.open), runtime.get("heap_mib"),
                   runtime.get("python_blocks"))
        self.result.samples.append(s)
        print(f"[soak] {s}", file=sys.stderr, flush=True)
        return s

    async def _session(self, slot: int, life_s: float, hang_up: bool) -> SessionRecord | None:
        """One session: None when it was refused (503); else its record."""
        # The clip plays long enough for any life; the session ends by hanging up, not by the clip ending.
        client = Client(self.base_url, self.source, life_s + 60, 0.0, 0.0, self.pid)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never a public STUN server
        consumers: list[asyncio.Task[None]] = []

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                consumers.append(asyncio.ensure_future(client.consume(track)))

        record = SessionRecord(slot, round(life_s, 1))
        client.keep = False  # the window is the whole life: judged as frames come instead
        offset = self.rng.randrange(self._sample_every)
        client.on_frame = lambda number, frame: self._check(record, offset, number, frame)
        assert self._http is not None
        try:
            pc.addTransceiver(client.track, direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            async with self._http.post(self.base_url + "/offer",
                                       json={"sdp": pc.localDescription.sdp, "type": "offer"}) as answer:
                body = await answer.json()
                if answer.status == 503:
                    self.result.refused += 1
                    if len(self.result.refusals) < 5:
                        self.result.refusals.append(str(body.get("error")))
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "5")))
                    return None
                if answer.status != 200:
                    raise RuntimeError(f"POST /offer: HTTP {answer.status} {body}")
            session = str(body["session"])
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
            await wait_connected(pc, 20)
            connected = time.monotonic()
            self.open[slot] = client
            await asyncio.sleep(max(0.0, min(life_s, self._round_end - time.monotonic())))
            status, text = await self._get(f"/sessions/{session}")
            if status == 200:
                record.hidden_whole = int(json.loads(text).get("frames_hidden_whole", 0))
            record.connected_s = round(time.monotonic() - connected, 1)
            if hang_up:
                async with self._http.delete(f"{self.base_url}/sessions/{session}") as answer:
                    record.closed_by = f"DELETE {answer.status}"
            else:
                record.closed_by = "close"
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.open.pop(slot, None)
            await pc.close()
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
        record.frames_back = len(client.arrived)
        record.fps = round(record.frames_back / record.connected_s, 1) if record.connected_s else 0.0
        record.invalid_codes = len(client.invalid)
        return record

    def _truth_frame(self, number: int) -> TruthFrame:
        index = self.source.index_for(number)
        if index not in self._truth:
            self._truth[index] = self.source.truth_frame(number)
        return self._truth[index]

    def _check(self, record: SessionRecord, offset: int, number: int, frame: av.VideoFrame) -> None:
        """The pixel judge on every returned frame; about one a second kept for all three judges after the run."""
        output = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
        truth = self._truth_frame(number).resized((output.shape[1], output.shape[0]))
        faces = [f for f in truth.faces if eligible(f)]
        values = self.pixels.values(truth, output, faces)
        record.face_frames_checked += len(values)
        for face, value in zip(faces, values, strict=True):
            if self.pixels.leaks(value):
                record.face_frames_leaked += 1
                if len(self.result.leaks) < 20:
                    self.result.leaks.append({"slot": record.slot, "frame": number, "face": face.face_id,
                                              "value": round(value, 3)})
        if (number + offset) % self._sample_every == 0:
            self._sampled += 1
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append((number, np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)))
            else:
                k = self._sample_rng.randrange(self._sampled)
                if k < MAX_SAMPLES:
                    self.samples[k] = (number, np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8))

    def judge_samples(self) -> dict[str, Any] | None:
        """All three judges on the kept sample (after the run: dlib within ``identity_budget_s``)."""
        if not self.samples or self.source.truth is None:
            return None
        judges = make_judges(self.source.truth, load_judge_detector(self.device))
        samples = sorted(self.samples, key=lambda item: item[0])
        self.samples = []
        return judge_outputs(self._truth_frame, samples, judges, self.identity_budget_s, "soak sample").result()

    async def _slot(self, slot: int) -> None:
        n = self._sessions_had.get(slot, 0)
        while self._round_end - time.monotonic() > 5:
            life = self.rng.uniform(*self.life_s)
            record = await self._session(slot, life, hang_up=n % 2 == 0)
            if record is not None:
                n += 1
                self.result.records.append(record)
                if record.error:
                    print(f"[soak] slot {slot}: {record.error}", file=sys.stderr, flush=True)
                    await asyncio.sleep(2)
        self._sessions_had[slot] = n

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sample("run")

    async def _idle(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            status, text = await self._get("/healthz")
            if status == 200 and json.loads(text).get("sessions") == 0:
                return
            await asyncio.sleep(0.5)

    async def run(self) -> SoakResult:
        async with ClientSession(timeout=ClientTimeout(total=30)) as http:
            self._http = http
            # Warm-up: pools that start lazily with the first sessions (frame executor, codecs) may stay.
            self._t0 = time.monotonic()
            self._round_end = self._t0 + 8.0
            await asyncio.gather(*(self._session(-1 - i, 8.0, hang_up=True) for i in range(self.slots)))
            await self._idle(30)
            await asyncio.sleep(self.settle_s)
            self._t0 = time.monotonic()
            await self.sample("baseline")
            for number in range(1, self.rounds + 1):
                self._round_end = self._t0 + self.duration_s * number / self.rounds
                sampler = asyncio.ensure_future(self._sampler())
                try:
                    await asyncio.gather(*(self._slot(i) for i in range(self.slots)))
                finally:
                    sampler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sampler
                await self._idle(30)
                await asyncio.sleep(self.settle_s)
                if number < self.rounds:
                    await self.sample("idle")
            end = await self.sample("end")
            deadline = time.monotonic() + 20  # GC frees codec threads in its own time: give it a little
            while leak_problems(self.result) and time.monotonic() < deadline:
                await asyncio.sleep(2)
                self.result.samples.remove(end)
                end = await self.sample("end")
        # After the run, every session closed: the sample through all three judges (off the event loop).
        self.result.judged = await asyncio.get_running_loop().run_in_executor(None, self.judge_samples)
        return self.result


# ------------------------------------------------------------------------------------------------- verdict


def leak_problems(result: SoakResult) -> list[str]:
    base = next((s for s in result.samples if s.phase == "baseline"), None)
    end = next((s for s in result.samples if s.phase == "end"), None)
    if base is None or end is None:
        return ["no baseline or end sample"]
    problems = []
    if end.sessions != 0:
        problems.append(f"server still reports {end.sessions} session(s)")
    if end.udp > base.udp:
        problems.append(f"UDP sockets {base.udp} -> {end.udp}")
    if end.fds > base.fds + FD_SLACK:
        problems.append(f"fds {base.fds} -> {end.fds}")
    if end.os_threads > base.os_threads + OS_THREAD_SLACK:
        problems.append(f"OS threads {base.os_threads} -> {end.os_threads}")
    for name, slack in (("py_threads", PY_THREAD_SLACK), ("tasks", 1)):
        before, after = getattr(base, name), getattr(end, name)
        if before is not None and after is not None and after > before + slack:
            problems.append(f"{name} {before} -> {after}")
    return problems


def rss_slope(result: SoakResult) -> float | None:
    """MiB per minute over the second half of the run (least squares), or None with too few samples."""
    run = [s for s in result.samples if s.phase == "run" and s.t_s >= result.duration_s / 2]
    if len(run) < 3:
        return None
    t = np.array([s.t_s / 60 for s in run])
    rss = np.array([s.rss_mib for s in run])
    return float(np.polyfit(t, rss, 1)[0])


def idle_heap_slope(result: SoakResult) -> float | None:
    """MiB per minute of the server's heap in use while idle between rounds (every session closed and settled), from
    the first such pause to the end; None with fewer than three, or where the server cannot say (not glibc). The
    heap in use is what a leak grows: resident memory also counts the free pages malloc keeps, and swings by tens of
    MiB with them, so that its slope says something only over ten minutes or more (:func:`rss_slope`)."""
    idle = [s for s in result.samples if s.phase in ("idle", "end") and s.heap_mib is not None]
    if len(idle) < 3:
        return None
    t = np.array([s.t_s / 60 for s in idle])
    heap = np.array([s.heap_mib for s in idle], dtype=float)
    return float(np.polyfit(t, heap, 1)[0])


def load_soak_source(width: int, height: int, seconds: float = 10.0, seed: int = 0) -> Source:
    """A ground-truth clip of ``seconds`` (played forward and back) at width x height: the picture ``BAND.height``
    rows shorter, above the barcode band. Faces at least 40-70 px tall however small the frame (the virtual
    camera's default, 55-110 px at 400 rows, scaled to the picture): the soak is about resources, its faces must be
    ones to find."""
    scale = (height - BAND.height) / 400
    face_px = (max(40.0, 55.0 * scale), max(70.0, 110.0 * scale))
    return truth_source(width, height, seconds, seed, face_px)
