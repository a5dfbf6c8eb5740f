"""Soak: many live sessions joining and leaving for minutes; the server's memory and resources over time.

    python -m bench.soak [--minutes 10] [--sessions 8] [--size 320x240] [--identity-budget 30] [--json PATH] [--write]

Inside a network namespace of its own (testkit.netns: aioice never offers 127.0.0.1), it starts
``python -m streamer serve --device cpu --max-sessions N`` and one client process that runs testkit.soak with
``--sessions`` slots: each slot opens a session playing a ground-truth clip (``testkit.soak.load_soak_source``: a
virtual camera over the annotated photos above the barcode band, at ``--size``, each frame stamped with its number),
keeps it for a random 20-90 s, hangs up (DELETE or a plain close, alternately) and opens the next one. A join refused
with 503 waits its Retry-After and tries again (admission by capacity may refuse it; that is counted).

Every ``--interval`` s it samples the server: RSS (``VmRSS``), OS threads and fds (``/proc``), its UDP sockets,
live sessions, Python threads and asyncio tasks (``/healthz``), frames hidden whole (``/metrics``), and the frames/s
each open session got back. Every returned frame is judged as it arrives by the pixel judge (testkit.judges: a true
face whose detail still correlates with the source came back unchanged), and about one frame a second of each
session is kept; after the run these samples are judged by all three judges (pixels, identity, the product's
detector). At the end every session is closed, and after a settle (10 s, up to 30 s) the counts must be back at the
baseline taken after a warm-up. The results go to bench/out/soak.json (``--json``); ``python -m bench.render``
makes the Markdown section (RSS per minute, verdict), and ``--write`` puts that section into BENCHMARKS.md between
``<!-- BEGIN soak -->`` and ``<!-- END soak -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from testkit.framecode import BAND
from testkit.netns import SERVER_ADDR, NetNamespace
from testkit.soak import IDENTITY_BUDGET_S, LIFE_S, Soak, SoakResult, leak_problems, load_soak_source, rss_slope

from ._common import REPO, json_option, parse_size, write_results
from ._leak_counts import checked_of, judge_thresholds, leaked_of
from ._leak_counts import leak_problems as face_problems
from ._processes import raise_exit, stop_process
from .render import render_soak, write_soak_section
from .run_all import cpu_model, load_average

MAX_SLOPE_MIB_PER_MIN = 1.0


def soak_face_problems(result: SoakResult) -> list[str]:
    """Why the soak fails "0 face-frames back": the pixel judge on every frame, all three on the sample."""
    problems = []
    leaked = sum(r.face_frames_leaked for r in result.records)
    if leaked:
        problems.append(f"pixels judged {leaked} face-frame(s) leaked as they came back")
    if not sum(r.face_frames_checked for r in result.records):
        problems.append("the pixel judge checked no face as frames came back")
    judged = result.judged
    problems += [f"sample: {p}" for p in face_problems(leaked_of(judged), checked_of(judged) if judged else None)]
    return problems


def client_main(args: argparse.Namespace) -> int:
    source = load_soak_source(*parse_size(args.size))
    soak = Soak(f"http://{SERVER_ADDR}:{args.port}", args.server_pid, source, args.sessions, args.minutes * 60,
                interval_s=args.interval, seed=args.seed, identity_budget_s=args.identity_budget)
    print(asyncio.run(soak.run()).to_json())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--size", default="320x240")
    p.add_argument("--identity-budget", type=float, default=IDENTITY_BUDGET_S,
                   help="seconds of dlib for the sample judged after the run (default: %(default)s)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--seed", type=int, default=1, help="for the session lives")
    p.add_argument("--server-args", default="", help="extra `serve` arguments, as one string")
    p.add_argument("--write", action="store_true", help="also write the section into BENCHMARKS.md")
    json_option(p, "soak")
    if argv and argv[0] == "_client":
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--server-pid", type=int, required=True)
        return client_main(p.parse_args(argv[1:]))
    args = p.parse_args(argv)
    width, height = parse_size(args.size)
    if width % 2 or height % 2 or width < BAND.code_width or height < BAND.height + 64:
        raise SystemExit(f"--size must be even-sized and at least {BAND.code_width}x{BAND.height + 64}")
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates a network namespace (aioice never uses 127.0.0.1)")
    signal.signal(signal.SIGTERM, raise_exit)
    started = time.perf_counter()
    machine = f"{cpu_model()}, {os.cpu_count()} logical cores; load average at start {load_average()}"
    py, port = sys.executable, 9300
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        server_log, client_log = Path(tmp) / "server.log", Path(tmp) / "client.log"
        ns = NetNamespace.create(f"fssoak-{os.getpid()}")
        try:
            server_cmd = [py, "-m", "streamer", "serve", "--insecure-no-token", "--host", SERVER_ADDR, "--port",
                          str(port), "--device", "cpu",
                          "--max-sessions", str(args.sessions), *shlex.split(args.server_args)]
            with server_log.open("wb") as slog, client_log.open("wb") as clog:
                proc = subprocess.Popen([*ns.exec_prefix(), *server_cmd], cwd=REPO, stdout=slog,
                                        stderr=subprocess.STDOUT)
                try:
                    client_cmd = [py, "-m", "bench.soak", "_client", "--port", str(port), "--server-pid",
                                  str(proc.pid), *argv]
                    # The client waits for the server through its first POST; give the model time to load.
                    subprocess.run([*ns.exec_prefix(), py, "-m", "testkit.readiness", f"http://{SERVER_ADDR}:{port}",
                                    "180"], cwd=REPO, check=True, timeout=200)
                    done = subprocess.run([*ns.exec_prefix(), *client_cmd], cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=clog, timeout=args.minutes * 60 + 300 + 3 * args.identity_budget,
                                          check=False)
                finally:
                    stop_process(proc)
        finally:
            ns.delete()
        if done.returncode != 0:
            sys.stderr.write(client_log.read_text(errors="replace")[-3000:])
            sys.stderr.write(server_log.read_text(errors="replace")[-2000:])
            return 1
    result = SoakResult.from_json(done.stdout.decode().strip().splitlines()[-1])
    machine += f", at end {load_average()}"
    slope, leaks, faces = rss_slope(result), leak_problems(result), soak_face_problems(result)
    doc = write_results("soak", argv, args, started, result=asdict(result), rss_slope_mib_per_min=slope,
                        max_slope_mib_per_min=MAX_SLOPE_MIB_PER_MIN, leak_problems=leaks, face_problems=faces,
                        life_s=list(LIFE_S), smoke=args.minutes < 10, machine=machine,
                        judge_thresholds=judge_thresholds())
    if args.write:
        write_soak_section(REPO / "BENCHMARKS.md", render_soak(doc))
    return 0 if slope is not None and not leaks and not faces else 1


if __name__ == "__main__":
    raise SystemExit(main())
