"""Live WebRTC loopback: a ground-truth clip sent over WebRTC to our server and to a plain aiortc echo, same machine.

    python -m bench.live_loopback [--quick] [--sizes 640x480,1280x720] [--seconds 20] [--warmup 3]
                                  [--device cpu] [--ramp-max 6] [--ramp-seconds 15] [--no-ramp]
                                  [--identity-budget 40] [--dump-dir DIR] [--clip PATH] [--json PATH]

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
camera panning and zooming over the annotated photos, a hard cut to other people every 3 s; see testkit/judging.py)
rendered BAND.height rows shorter than the frame, above a black band, played forward then backward at 30 fps like a
camera: frame n is due at start + n/fps, pts n*90000/fps in time base 1/90000, and frames the client was too late
for are skipped, not queued. Each sent frame carries its number as a barcode in the bottom-left corner of the band
(testkit.framecode.BAND; no true face is ever under it), because aiortc gives RTP timestamps a random offset; the
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from testkit.camera_client import Client
from testkit.camera_clip import TRUTH_CLIP_S, load_source, truth_source
from testkit.framecode import BAND
from testkit.judging import judge_outputs, load_judge_detector, make_judges, place_codeless
from testkit.netns import SERVER_ADDR, NetNamespace

from ._common import REPO, json_option, parse_size, write_results
from ._leak_counts import judge_thresholds, no_face_back
from ._processes import log_tail, raise_exit, stop_process
from .run_all import cpu_model, load_average

DEFAULT_SIZES = ("640x480", "1280x720")
IDENTITY_BUDGET_S = 40.0  # dlib's seconds per session (per ramp step, shared by its sessions)
JUDGE_S_PER_FRAME = 0.1  # a generous allowance for judging a kept frame (colour conversion, truth, detector)

# Ours, one session: fps out >= x; added p50 latency <= y ms (None: not a target). Every size: 0 face-frames back by
# every judge. (The issue: one 640x480 webcam on 2 cores, int8: >= 25 fps out, <= 60 ms added p50 over the plain
# aiortc echo, 0 face-frames back; 1280x720: >= 15 fps.)
TARGETS: dict[str, tuple[float, float | None]] = {"640x480": (25.0, 60.0), "1280x720": (15.0, None)}
# Two concurrent sessions (the ramp's N = 2 step): >= this many fps each, 0 face-frames back.
TWO_SESSIONS_FPS = 20.0
# The ramp: concurrent 640x480 webcam sessions at 30 fps, one more per step, until ours no longer holds this median
# fps per session (or --ramp-max).
RAMP_MIN_FPS = 25.0


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
                                    client.codeless, BAND.height)
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


@dataclass
class RunResult:
    size: str
    server: str
    command: str
    data: dict[str, Any] | None
    error: str | None


def client_source_args(args: argparse.Namespace) -> list[str]:
    """The client's arguments for what it sends and how it judges."""
    extra = ["--clip", str(args.clip)] if args.clip else ["--seed", str(args.seed)]
    return [*extra, "--identity-budget", str(args.identity_budget)]


def judging_allowance(args: argparse.Namespace, seconds: float, sessions: int) -> float:
    """Seconds the client may spend judging after a run, on top of the run itself."""
    if args.clip:
        return 0.0
    return float(args.identity_budget + 60 + sessions * seconds * 30 * JUDGE_S_PER_FRAME)


def run_one(ns: NetNamespace, size: str, server: str, port: int, args: argparse.Namespace, logs: Path) -> RunResult:
    py = sys.executable
    if server == "echo":
        server_cmd = [py, "-m", "testkit.echo", "--host", SERVER_ADDR, "--port", str(port)]
    else:
        server_cmd = [py, "-m", "streamer", "serve", "--insecure-no-token", "--host", SERVER_ADDR, "--port", str(port),
                      "--device", args.device, *shlex.split(args.server_args)]
    shown = shlex.join(["ip", "netns", "exec", "NS", *["python" if c == py else c for c in server_cmd]])
    server_log = logs / f"{size}-{server}-server.log"
    client_log = logs / f"{size}-{server}-client.log"
    print(f"[live] {size} {server}: {shown}", file=sys.stderr, flush=True)
    with server_log.open("wb") as slog:
        proc = subprocess.Popen([*ns.exec_prefix(), *server_cmd], cwd=REPO, stdout=slog, stderr=subprocess.STDOUT)
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
                done = subprocess.run([*ns.exec_prefix(), *client_cmd], cwd=REPO, stdout=subprocess.PIPE, stderr=clog,
                                      timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            return RunResult(size, server, shown, None, "client timed out\n" + log_tail(client_log))
        finally:
            stop_process(proc)
    if done.returncode != 0:
        return RunResult(size, server, shown, None,
                         f"client exited {done.returncode}:\n{log_tail(client_log)}\n"
                         f"server log:\n{log_tail(server_log)}")
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        data: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return RunResult(size, server, shown, None, "client printed no result:\n" + log_tail(client_log))
    return RunResult(size, server, shown, data, None)


# ------------------------------------------------------------------------------------------------- ramp


@dataclass
class RampStep:
    server: str
    sessions: int
    clients: list[dict[str, Any]]
    error: str | None
    holds: bool = False  # see _holds


def _median_fps(step: RampStep) -> float:
    return statistics.median(float(c["fps"]) for c in step.clients) if step.clients else 0.0


def _holds(step: RampStep, min_fps: float) -> bool:
    """Whether the step held: median fps per session ≥ ``min_fps`` and, for ours, 0 face-frames back in every
    session, by every judge (the echo hides nothing: its leaks are the baseline, not a failure)."""
    if step.error or not step.clients or _median_fps(step) < min_fps:
        return False
    return step.server != "ours" or all(no_face_back(c)[0] for c in step.clients)


def run_ramp(ns: NetNamespace, args: argparse.Namespace, port: int, logs: Path) -> list[RampStep]:
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
            server_cmd = [py, "-m", "testkit.echo", "--host", SERVER_ADDR, "--port", str(port)]
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
            proc = subprocess.Popen([*ns.exec_prefix(), *server_cmd], cwd=REPO, stdout=slog, stderr=subprocess.STDOUT)
            try:
                for n in counts:
                    step = _ramp_step(ns, args, port, proc.pid, server, n, logs, server_log)
                    steps.append(step)
                    ran.append(n)
                    holds = step.holds = _holds(step, args.ramp_min_fps)
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


def _ramp_step(ns: NetNamespace, args: argparse.Namespace, port: int, server_pid: int, server: str, n: int,
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
            done = subprocess.run([*ns.exec_prefix(), *client_cmd], cwd=REPO, stdout=subprocess.PIPE, stderr=clog,
                                  timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return RampStep(server, n, [], "client timed out\n" + log_tail(client_log))
    if done.returncode != 0:
        return RampStep(server, n, [], f"client exited {done.returncode}:\n{log_tail(client_log)}\nserver log:\n"
                                       f"{log_tail(server_log)}")
    try:
        data: dict[str, Any] = json.loads(done.stdout.decode(errors="replace").strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return RampStep(server, n, [], "client printed no result:\n" + log_tail(client_log))
    clients: list[dict[str, Any]] = data.get("clients", [data])
    return RampStep(server, n, clients, None)


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
    json_option(p, "live_loopback")
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_client":
        return client_main(internal_parser("_client").parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in [*args.sizes, args.ramp_size]:
        width, height = parse_size(size)
        if width % 2 or height % 2 or width < BAND.code_width or height < BAND.height + 64:
            raise SystemExit(f"{size}: frames must be even-sized and at least {BAND.code_width}x{BAND.height + 64}")
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
                     f"{TRUTH_CLIP_S:g} s played forward then backward), rendered {BAND.height} rows shorter than the "
                     f"frame above a black band that carries the barcode. No true face is ever under the code")
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    machine = f"{cpu_model()}, {cores} logical cores ({usable} usable); load average at start {load_average()}"

    signal.signal(signal.SIGTERM, raise_exit)
    results: list[RunResult] = []
    ramp: list[RampStep] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="live-loopback-") as tmp:
        ns = NetNamespace.create(f"fsbench-{os.getpid()}")
        try:
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
    write_results("live_loopback", argv, args, started, runs=[r.__dict__ for r in results],
                  ramp=[r.__dict__ for r in ramp], targets=TARGETS, two_sessions_fps=TWO_SESSIONS_FPS,
                  machine=machine, clip_text=clip_text, judge_thresholds=judge_thresholds())
    print(f"[live] done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 1 if any(r.error for r in results) or any(s.error for s in ramp) else 0


if __name__ == "__main__":
    raise SystemExit(main())
