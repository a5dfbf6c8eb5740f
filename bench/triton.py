"""Detection on an NVIDIA Triton Inference Server (``--detector triton://HOST:PORT/MODEL``) against in process.

    python -m bench.triton [--quick] [--runs 60] [--threads 1] [--seconds 8] [--repeats 3] [--setups a,b,c,d,a1,c1]
                           [--no-hop] [--no-live] [--json PATH]

The server is the real ``tritonserver`` of the nvidia-pytriton wheel (testkit/triton.py) serving the repository
``python -m models.triton_repo OUT --kind cpu`` writes. That wheel has no onnxruntime backend: the model runs in ONNX
Runtime (CPU) behind Triton's Python backend, which hands every request to a stub process and on to PyTriton's
process. That proxy hop is not in the production onnxruntime backend, so the server-side numbers here are an upper
bound for it; the gRPC part (client to Triton's frontend and back) is what production pays too.

1. **The hop.** The same real 640x480 frames (from ../shared/testdata videos) detected one at a time, alternately
   in process (``models.load_detector("cpu", config=DetectorConfig(detect_size, threads))``) and through Triton on
   loopback (``models.open_detector(url, config=...)``), at ``fast`` and ``full`` coverage, for fp32 and int8 (one
   Triton per precision, its repository written with ``--precision``; the model instances' ONNX Runtime sessions
   use ``--threads`` intra-op threads, as the in-process detector does). Per detection: wall clock end to end
   (p50/p90), the time inside the network call (``_infer``: in process the ONNX Runtime run, through Triton the gRPC
   request), and Triton's own counters over the same requests (``/metrics``: request, queue, compute
   input/infer/output durations). The serving graph is also run in this process on the very batches sent to Triton
   (``ort replay``), so the Python-backend proxy can be told apart from the network's own compute.
   The added time splits, as means per detection, into: gRPC + network = the client's request time - Triton's
   request duration; Triton's own handling = request duration - compute infer (queue, compute input and output);
   the Python-backend proxy = compute infer - ort replay; the serving graph's own cost = ort replay - the in-process
   network call (its uint8 NHWC BGR front: cast, channel swap, transpose).
2. **Throughput.** Live 640x480 webcam sessions (aiortc clients as in bench.live_loopback, all in one client
   process; no judging) in a network namespace of their own, everything on the same cores. The same two streams in
   each of: (a) one ``python -m streamer serve`` with in-process detection (the CPU defaults) taking both, (b) two
   such processes, one stream each, (c) one process with ``--detector`` on one Triton taking both, (d) two processes
   (replicas), one stream each, on that same Triton; and one stream alone on (a1) one in-process process and (c1)
   one process via Triton. The Triton serves the repository ``python -m models.triton_repo OUT --kind cpu`` writes
   by default, its instances' ONNX Runtime sessions with ``--threads`` threads. Every setup runs ``--repeats``
   times, interleaved; frames/s back per stream and in all, latency, and the frames each run hid whole
   (fail-closed), from the sessions' own counters.

Results go to bench/out/triton.json (``--json``); ``python -m bench.render`` makes the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.coverage import DetectSize
from testkit.frames import fit_frame
from testkit.netns import SERVER_ADDR, NetNamespace
from testkit.triton import MODEL, TRITON_VENV, TritonProcess, model_repository

from ._common import VIDEOS, Frame, json_option, read_frames, write_results
from ._processes import log_tail, raise_exit, stop_process
from .run_all import cpu_model, load_average

HOP_CLIPS = ("facenet_pytorch_street.mp4", "face_recognition_short_hamilton_clip.mp4")
FRAME = (640, 480)
DETECT_SIZES: tuple[DetectSize, ...] = ("fast", "full")
HOP_TARGET_MS = 5.0  # the issue: the hop adds <= 5 ms p50 per detection on loopback
CPU_SAMPLE_S = 0.5  # how often the CPU time of the live run's processes is read
REPLICAS_TARGET = 0.90  # the issue: two replicas through one Triton >= 90% of one in-process process's frames/s
METRICS = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count",
           "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
           "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
           "nv_inference_compute_output_duration_us")
# (name, label, service processes, detector, sessions per process). a-d serve the same two streams, so the client
# side (two VP8 encoders and decoders on the same cores) costs the same in each; a1 and c1 are one stream alone.
SETUPS = (("a", "1 process, in-process detection", 1, "in-process", 2),
          ("b", "2 processes, each in-process", 2, "in-process", 1),
          ("c", "1 process via one Triton", 1, "triton", 2),
          ("d", "2 processes (replicas) via the same Triton", 2, "triton", 1),
          ("a1", "1 process, in-process detection, 1 stream", 1, "in-process", 1),
          ("c1", "1 process via one Triton, 1 stream", 1, "triton", 1))


# ---------------------------------------------------------------------------------------------------- the hop


def triton_counters(triton: TritonProcess) -> dict[str, float]:
    """Triton's cumulative counters for the model (``METRICS``), summed over versions."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(METRICS, 0.0)
    for family in text_string_to_metric_families(triton.metrics()):
        for sample in family.samples:
            if family.name in totals and sample.labels.get("model") == MODEL:
                totals[family.name] += sample.value
    return totals


class TimedInfer:
    """Wraps a detector's ``_infer``: the seconds of each network call of the current detection, and its batches."""

    def __init__(self, detector: Any) -> None:
        self.inner: Callable[[npt.NDArray[np.uint8]], list[npt.NDArray[np.float32]]] = detector._infer
        self.seconds: list[float] = []
        self.batches: list[npt.NDArray[np.uint8]] = []
        setattr(detector, "_infer", self)  # noqa: B010 - an instance attribute shadows the method

    def reset(self) -> None:
        self.seconds.clear()
        self.batches.clear()

    def __call__(self, batch: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.float32]]:
        started = time.perf_counter()
        out = self.inner(batch)
        self.seconds.append(time.perf_counter() - started)
        self.batches.append(batch)
        return out


def hop_frames(count: int) -> tuple[list[Frame], list[str]]:
    frames: list[Frame] = []
    used = []
    for name in HOP_CLIPS:
        path = VIDEOS / name
        if not path.is_file():
            continue
        frames += [fit_frame(f, *FRAME) for f in read_frames(path, count)]
        used.append(name)
    if not frames:
        raise SystemExit(f"none of {', '.join(HOP_CLIPS)} in {VIDEOS} (the test data lives in ../shared/testdata)")
    return frames, used


def _stats(ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "mean_ms": float(values.mean())}


def measure_hop_size(local: Any, remote: Any, triton: TritonProcess, serving: Any, frames: Sequence[Frame],
                     runs: int, warmup: int) -> dict[str, Any]:
    """One detect size: ``runs`` detections each way, alternating which goes first, one request at a time."""
    local_t, remote_t = TimedInfer(local), TimedInfer(remote)
    faces_local, faces_remote, box_diff = [], [], 0.0
    for frame in frames:  # warm-up (every shape, zoom crops included) and the agreement check
        a, b = local.detect(frame), remote.detect(frame)
        faces_local.append(len(a))
        faces_remote.append(len(b))
        if len(a) == len(b) and len(a):
            box_diff = max(box_diff, float(np.abs(a.boxes - b.boxes).max()))
    for _ in range(max(0, warmup - 1)):  # more warm-up passes
        for frame in frames:
            local.detect(frame)
            remote.detect(frame)
    samples: dict[str, list[float]] = {k: [] for k in ("local", "remote", "local_infer", "remote_infer", "replay",
                                                       "requests")}
    before = triton_counters(triton)
    for i in range(runs):
        frame = frames[i % len(frames)]
        order = (("local", local, local_t), ("remote", remote, remote_t))
        for name, detector, timed in (order if i % 2 == 0 else order[::-1]):
            timed.reset()
            started = time.perf_counter()
            detector.detect(frame)
            samples[name].append((time.perf_counter() - started) * 1000)
            samples[f"{name}_infer"].append(sum(timed.seconds) * 1000)
        samples["requests"].append(len(remote_t.batches))
        # The serving graph in this process, on the very batches just sent to Triton: its compute alone.
        replayed = 0.0
        for batch in remote_t.batches:
            started = time.perf_counter()
            serving.run(None, {"image": batch})
            replayed += time.perf_counter() - started
        samples["replay"].append(replayed * 1000)
    after = triton_counters(triton)
    delta = {k: after[k] - before[k] for k in METRICS}
    per_detection = {
        "request_ms": delta["nv_inference_request_duration_us"] / 1000 / runs,
        "queue_ms": delta["nv_inference_queue_duration_us"] / 1000 / runs,
        "compute_input_ms": delta["nv_inference_compute_input_duration_us"] / 1000 / runs,
        "compute_infer_ms": delta["nv_inference_compute_infer_duration_us"] / 1000 / runs,
        "compute_output_ms": delta["nv_inference_compute_output_duration_us"] / 1000 / runs,
        "requests": delta["nv_inference_request_success"] / runs,
        "batch_mean": delta["nv_inference_count"] / max(1.0, delta["nv_inference_exec_count"]),
    }
    return {
        "local": {**_stats(samples["local"]), "infer_mean_ms": statistics.fmean(samples["local_infer"])},
        "triton": {**_stats(samples["remote"]), "infer_mean_ms": statistics.fmean(samples["remote_infer"]),
                   "requests_per_detection": statistics.fmean(samples["requests"])},
        "server": per_detection,
        "ort_replay_ms": statistics.fmean(samples["replay"]),
        "counters": delta,
        "faces_local": statistics.fmean(faces_local), "faces_triton": statistics.fmean(faces_remote),
        "same_face_counts": faces_local == faces_remote, "max_box_diff_px": box_diff,
    }


def repo_supports_precision() -> bool:
    from models.triton_repo import RepoOptions

    return "precision" in {f.name for f in dataclasses.fields(RepoOptions)}


def default_repo_precision() -> str:
    """What ``python -m models.triton_repo OUT --kind cpu`` serves by default."""
    from models.triton_repo import RepoOptions

    return str(getattr(RepoOptions(kind="cpu"), "weights_precision", "fp32"))


def start_triton(triton: TritonProcess, notes: list[str]) -> TritonProcess:
    """Start it; once more if the first start fails (PyTriton's model handshake sometimes fails under load)."""
    try:
        return triton.start()
    except (RuntimeError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        notes.append(f"a Triton start failed and was retried: {first}")
        print(f"[triton] start failed, retrying once: {first}", file=sys.stderr, flush=True)
        triton.stop()
        return triton.start()


def server_version(triton: TritonProcess) -> str:
    with contextlib.suppress(Exception):
        with urllib.request.urlopen(f"http://127.0.0.1:{triton.http_port}/v2", timeout=5) as answer:
            meta = json.loads(answer.read())
        return f"Triton {meta.get('version', '?')}"
    return "Triton (version unknown)"


def measure_hop(args: argparse.Namespace, tmp: Path, hop: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Fills ``hop`` as it goes (``rows``: one per precision and detect size), so a failure keeps what was measured."""
    import onnxruntime as ort

    from models import DetectorConfig, load_detector, open_detector

    frames, clips = hop_frames(args.frames)
    precisions = ["fp32", "int8"] if repo_supports_precision() else ["fp32"]
    rows = hop["rows"]
    hop.update(clips=clips, frames=len(frames), frame=f"{FRAME[0]}x{FRAME[1]}", target_ms=HOP_TARGET_MS)
    versions = ""
    for precision in precisions:
        extra = ["--precision", precision] if repo_supports_precision() else []
        repo = model_repository(tmp / f"repo-{precision}", *extra)
        print(f"[triton] hop {precision}: Triton on 127.0.0.1 ({len(frames)} frames, {args.runs} runs per size)",
              file=sys.stderr, flush=True)
        triton = start_triton(TritonProcess(repo, threads=args.threads, log_path=tmp / f"triton-hop-{precision}.log"),
                              notes)
        try:
            versions = server_version(triton)
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.log_severity_level = 3
            serving = ort.InferenceSession(str(repo / MODEL / "1" / "model.onnx"), options,
                                           providers=["CPUExecutionProvider"])
            for detect_size in DETECT_SIZES:
                config = DetectorConfig(detect_size=detect_size, threads=args.threads)
                local = load_detector("cpu", None, config, precision=precision)  # type: ignore[arg-type]
                remote: Any = open_detector(triton.url, config=config)
                try:
                    row = measure_hop_size(local, remote, triton, serving, frames, args.runs, args.warmup)
                finally:
                    remote.close()
                row.update(precision=precision, detect_size=detect_size, provider=local.provider,
                           triton_provider=remote.provider,
                           net_input=" + ".join(f"{w}x{h}" for h, w in local.network_inputs(FRAME[1], FRAME[0]))
                           + (" + zoom crops" if detect_size == "full" else ""))
                rows.append(row)
                print(f"[triton] hop {precision} {detect_size}: in process p50 {row['local']['p50_ms']:.1f} ms, "
                      f"Triton p50 {row['triton']['p50_ms']:.1f} ms", file=sys.stderr, flush=True)
                del local
        finally:
            triton.stop()
        hop["server"] = versions
    return hop


# ----------------------------------------------------------------------------------------------- throughput


def _cpu_by_role(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) of each role's processes and their living descendants, from one pass over
    /proc, with ``busy``: the whole machine's."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            head, rest = stat.read_text().rsplit(")", 1)
            fields = rest.split()
            pid = int(head.split("(", 1)[0])
            children.setdefault(int(fields[1]), []).append(pid)
            cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    totals = {"busy": _busy_s()}
    for role, pids in roots.items():
        total, todo = 0.0, list(pids)
        while todo:
            pid = todo.pop()
            total += cpu.get(pid, 0.0)
            todo += children.get(pid, [])
        totals[role] = total
    return totals


def _busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def client_main(args: argparse.Namespace) -> int:
    """Inside the namespace: one live session per port, all at once, from this one process; prints JSON."""
    from testkit.camera_client import Client
    from testkit.camera_clip import truth_source

    width, height = FRAME
    source = truth_source(width, height, args.warmup + args.seconds + args.tail, args.seed)
    clients = []
    for port, pid in zip(args.ports, args.pids, strict=True):
        client = Client(f"http://{SERVER_ADDR}:{port}", source, args.seconds, args.warmup, args.tail, pid)
        client.keep = False  # nothing is judged here: speed and fail-closed counts only
        clients.append(client)

    async def run_all() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(c.run(args.ready_timeout) for c in clients)))

    results = asyncio.run(run_all())
    for client, result in zip(clients, results, strict=True):
        result.pop("latency_ms", None)
        start = client.track.started_at
        if start is not None:  # perf_counter is CLOCK_MONOTONIC: the parent's clock too
            result["window_perf"] = [start + args.warmup, start + args.warmup + args.seconds]
    print(json.dumps(results))
    return 0


def _server_cmd(port: int, detector: str, triton_url: str, extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "streamer", "serve", "--insecure-no-token", "--host", SERVER_ADDR, "--port",
           str(port)]
    cmd += ["--detector", triton_url] if detector == "triton" else ["--device", "cpu"]
    return cmd + shlex.split(extra)


def _shown(cmd: Sequence[str]) -> str:
    return shlex.join(["ip", "netns", "exec", "NS", *["python" if c == sys.executable else c for c in cmd]])


def run_setup(ns: NetNamespace, args: argparse.Namespace, servers: Sequence[tuple[int, subprocess.Popen[bytes]]],
              sessions: int, triton: TritonProcess | None, logs: Path, label: str) -> dict[str, Any]:
    """One run of one setup: ``sessions`` sessions per server, all at once; the clients' results and where the CPU
    went."""
    streams_to = [server for server in servers for _ in range(sessions)]
    client_cmd = [sys.executable, "-m", "bench.triton", "_client", "--ports", *[str(p) for p, _ in streams_to],
                  "--pids", *[str(s.pid) for _, s in streams_to], "--seconds", str(args.seconds), "--warmup",
                  str(args.live_warmup), "--tail", str(args.tail), "--seed", str(args.seed)]
    roots = {"services": [s.pid for _, s in servers]}
    if triton is not None and triton.proc is not None:
        roots["triton"] = [triton.proc.pid]
    client_log = logs / f"client-{label}.log"
    samples: list[tuple[float, dict[str, float]]] = []  # (perf_counter, CPU seconds by role and "busy")
    with client_log.open("wb") as clog:
        proc = subprocess.Popen([*ns.exec_prefix(), *client_cmd], stdout=subprocess.PIPE, stderr=clog,
                                cwd=Path(__file__).resolve().parent.parent)
        roots["client"] = [proc.pid]
        deadline = time.monotonic() + args.live_warmup + args.seconds + args.tail + 240
        while proc.poll() is None and time.monotonic() < deadline:
            at = time.perf_counter()
            samples.append((at, _cpu_by_role(roots)))
            time.sleep(CPU_SAMPLE_S)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            return {"streams": [], "error": "client timed out\n" + log_tail(client_log)}
    if proc.returncode != 0:
        return {"streams": [], "error": f"client exited {proc.returncode}:\n{log_tail(client_log)}"}
    try:
        streams: list[dict[str, Any]] = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"streams": [], "error": "client printed no result:\n" + log_tail(client_log)}
    windows = [s["window_perf"] for s in streams if s.get("window_perf")]
    cpu: dict[str, float] | None = None
    if windows:  # CPU over the measured window: the samples closest to its start and end
        start, end = min(w[0] for w in windows), max(w[1] for w in windows)
        inside = [x for x in samples if start - CPU_SAMPLE_S <= x[0] <= end + CPU_SAMPLE_S]
        if len(inside) >= 2:
            (t0, a), (t1, b) = inside[0], inside[-1]
            cpu = {k: 100 * (b[k] - a[k]) / (t1 - t0) for k in roots}
            cpu["other"] = 100 * max(0.0, (b["busy"] - a["busy"]) - sum(b[k] - a[k] for k in roots)) / (t1 - t0)
    keep = ("fps", "sent_fps", "p50_ms", "p95_ms", "lost", "invalid_codes", "skipped_by_client", "session",
            "detections_per_s", "inference_ms_mean", "processing_ms_mean", "inferences_per_s")
    return {"streams": [{k: s.get(k) for k in keep} for s in streams], "cpu_pct": cpu, "error": None}


def measure_throughput(args: argparse.Namespace, tmp: Path, notes: list[str]) -> dict[str, Any]:
    repo = model_repository(tmp / "repo-default")
    precision = default_repo_precision()
    setups = [s for s in SETUPS if s[0] in args.setups]
    results: dict[str, list[dict[str, Any]]] = {s[0]: [] for s in setups}
    commands: dict[str, str] = {}
    ns = NetNamespace.create(f"fsbench-tr-{os.getpid()}")
    procs: list[subprocess.Popen[bytes]] = []
    triton: TritonProcess | None = None
    try:
        triton = start_triton(TritonProcess(repo, ns=ns, threads=args.threads, log_path=tmp / "triton-live.log"),
                              notes)
        print(f"[triton] live: Triton in the namespace ({triton.url}), serving {precision}", file=sys.stderr,
              flush=True)
        ports = {"in-process": [9301, 9302], "triton": [9311, 9312]}
        running: dict[str, list[tuple[int, subprocess.Popen[bytes]]]] = {"in-process": [], "triton": []}
        for detector, kind_ports in ports.items():
            for port in kind_ports:
                cmd = _server_cmd(port, detector, triton.url, args.server_args)
                commands.setdefault(detector, _shown(cmd).replace(triton.url, "triton://127.0.0.1:PORT/centerface"))
                with (tmp / f"server-{port}.log").open("wb") as log:
                    proc = subprocess.Popen([*ns.exec_prefix(), *cmd], cwd=Path(__file__).resolve().parent.parent,
                                            stdout=log, stderr=subprocess.STDOUT)
                procs.append(proc)
                running[detector].append((port, proc))
        for servers in running.values():
            for port, _ in servers:
                ready = subprocess.run([*ns.exec_prefix(), sys.executable, "-m", "testkit.readiness",
                                        f"http://{SERVER_ADDR}:{port}", "240"], capture_output=True, check=False)
                if ready.returncode != 0:
                    raise RuntimeError(f"server on port {port} not ready:\n{log_tail(tmp / f'server-{port}.log')}")
        print("[triton] live: 4 services ready", file=sys.stderr, flush=True)
        for rep in range(args.repeats):
            for name, label, count, detector, sessions in setups[rep % len(setups):] + setups[:rep % len(setups)]:
                run = run_setup(ns, args, running[detector][:count], sessions,
                                triton if detector == "triton" else None, tmp, f"{name}-{rep}")
                results[name].append(run)
                fps = [s["fps"] for s in run["streams"]]
                print(f"[triton] live {name} ({label}) run {rep + 1}: fps per stream "
                      + (", ".join(f"{v:.1f}" for v in fps) or run["error"].splitlines()[0]),
                      file=sys.stderr, flush=True)
                time.sleep(1.0)  # let the services close the run's sessions
    finally:
        for proc in procs:
            stop_process(proc)
        if triton is not None:
            triton.stop()
        ns.delete()
    return {"setups": [{"name": name, "label": label, "processes": count, "detector": detector,
                        "sessions_per_process": sessions, "runs": results[name]}
                       for name, label, count, detector, sessions in setups],
            "commands": commands, "repo_precision": precision, "target_ratio": REPLICAS_TARGET,
            "frame": f"{FRAME[0]}x{FRAME[1]}"}


# ----------------------------------------------------------------------------------------------------- main


def gpu_state() -> str:
    """Whether a GPU could have been measured here."""
    import onnxruntime as ort

    if shutil.which("nvidia-smi") is None and "CUDAExecutionProvider" not in ort.get_available_providers():
        return "none on this machine (no nvidia-smi, no CUDA provider in onnxruntime)"
    return "present, not measured by this benchmark"


def triton_software() -> str:
    python = TRITON_VENV / "bin" / "python"
    if not python.is_file():
        return "unknown"
    done = subprocess.run([str(python), "-c", "import onnxruntime, importlib.metadata as m; "
                           "print(m.version('nvidia-pytriton'), onnxruntime.__version__)"],
                          capture_output=True, text=True, check=False)
    parts = done.stdout.split()
    return f"nvidia-pytriton {parts[0]}, onnxruntime {parts[1]} (CPU)" if len(parts) == 2 else "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.triton", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: few detections, 1 short live run per setup")
    p.add_argument("--frames", type=int, default=8, help="frames taken from each clip for the hop (default 8)")
    p.add_argument("--runs", type=int, default=None, help="timed detections per row of the hop (default 60)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up passes over the frames (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime intra-op threads of the in-process detector and of each Triton model "
                        "instance (default 1: serve's own setting, one single-threaded inference per core)")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per live run (default 8)")
    p.add_argument("--live-warmup", type=float, default=None, help="seconds per live run before measuring (3)")
    p.add_argument("--tail", type=float, default=2.0, help="seconds the cameras play after the window")
    p.add_argument("--repeats", type=int, default=None, help="live runs per setup, interleaved (default 3)")
    p.add_argument("--seed", type=int, default=0, help="the ground-truth clip's seed (default: %(default)s)")
    p.add_argument("--server-args", default="", help="extra arguments for every service, as one string")
    p.add_argument("--setups", default=",".join(s[0] for s in SETUPS),
                   help="which live setups to run (default: %(default)s; see the module doc)")
    p.add_argument("--no-hop", action="store_true", help="skip the per-detection hop")
    p.add_argument("--no-live", action="store_true", help="skip the live throughput (it needs root)")
    json_option(p, "triton")
    return p


def internal_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.triton _client")
    p.add_argument("--ports", type=int, nargs="+", required=True)
    p.add_argument("--pids", type=int, nargs="+", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--tail", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_client":
        return client_main(internal_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    args.runs = args.runs if args.runs is not None else (8 if args.quick else 60)
    args.seconds = args.seconds if args.seconds is not None else (4.0 if args.quick else 8.0)
    args.live_warmup = args.live_warmup if args.live_warmup is not None else (2.0 if args.quick else 3.0)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if args.quick:
        args.frames = min(args.frames, 3)
    args.setups = [name.strip() for name in args.setups.split(",") if name.strip()]
    if not set(args.setups) <= {s[0] for s in SETUPS}:
        raise SystemExit(f"--setups takes {', '.join(s[0] for s in SETUPS)}")
    if min(args.runs, args.frames, args.repeats) < 1 or args.threads < 0:
        raise SystemExit("--runs, --frames and --repeats must be >= 1, --threads >= 0")
    if not args.no_live and os.geteuid() != 0:
        raise SystemExit("the live part needs root (a network namespace); --no-live skips it")
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load_start = os.getloadavg()
    machine = f"{cpu_model()}, {cores} logical cores ({usable} usable); load average at start {load_average()}"
    signal.signal(signal.SIGTERM, raise_exit)
    started = time.perf_counter()
    hop: dict[str, Any] | None = None if args.no_hop else {"rows": []}
    live: dict[str, Any] | None = None
    errors: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        if hop is not None:
            try:
                measure_hop(args, Path(tmp), hop, notes)
            except Exception as exc:  # the live part still runs; the section shows why
                errors.append(f"hop: {type(exc).__name__}: {str(exc)[-1500:]}")
        if not args.no_live:
            try:
                live = measure_throughput(args, Path(tmp), notes)
            except Exception as exc:
                errors.append(f"live: {type(exc).__name__}: {str(exc)[-1500:]}")
    machine += f", at end {load_average()}"
    write_results("triton", argv, args, started, hop=hop, live=live, errors=errors, notes=notes,
                  machine=machine,
                  load_average_start=list(load_start), load_average_end=list(os.getloadavg()), gpu=gpu_state(),
                  software=triton_software())
    bad_runs = any(r["error"] for s in (live or {}).get("setups", []) for r in s["runs"])
    return 1 if errors or bad_runs else 0


if __name__ == "__main__":
    raise SystemExit(main())
