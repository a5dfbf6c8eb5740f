"""Soak: many live sessions joining and leaving for minutes; the server's memory and resources over time.

    python -m bench.soak [--minutes 10] [--sessions 8] [--size 320x240] [--identity-budget 30] [--write]

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
baseline taken after a warm-up. Output: a Markdown section (RSS per minute, verdict); ``--write`` puts it into
BENCHMARKS.md between ``<!-- BEGIN soak -->`` and ``<!-- END soak -->``.
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
from pathlib import Path

import numpy as np

from testkit.bandcode import CODE_H
from testkit.netns import SERVER_ADDR, NetNamespace
from testkit.soak import IDENTITY_BUDGET_S, LIFE_S, Soak, SoakResult, leak_problems, load_soak_source, rss_slope

from ._common import REPO, markdown_table, parse_size
from ._leak_counts import JUDGES_TEXT, checked_of, leaked_of, per_judge
from ._leak_counts import leak_problems as face_problems
from ._processes import raise_exit, stop_process
from .run_all import cpu_model, load_average

BEGIN, END = "<!-- BEGIN soak -->", "<!-- END soak -->"
GENERATED_END = "<!-- END generated"
MAX_SLOPE_MIB_PER_MIN = 1.0


def render(result: SoakResult, command: str, machine: str, smoke: bool) -> str:
    samples = result.samples
    run = [s for s in samples if s.phase == "run"]
    rows = []
    picked = [s for s in samples if s.phase == "baseline"]
    for minute in range(1, int(result.duration_s // 60) + 2):
        near = [s for s in run if s.t_s <= minute * 60 + 1]
        if near and near[-1] not in picked:
            picked.append(near[-1])
    picked += [s for s in samples if s.phase == "end"]
    for s in picked:
        label = {"baseline": "baseline (idle, after warm-up)", "end": "end (all closed, settled)"}.get(
            s.phase, f"{s.t_s / 60:.1f} min")
        rows.append([label, f"{s.rss_mib:.1f}", str(s.os_threads), str(s.fds), str(s.udp), str(s.sessions),
                     "—" if s.tasks is None else str(s.tasks),
                     "—" if s.fps_per_session is None else f"{s.fps_per_session:.1f}", f"{s.hidden_whole:.0f}"])
    table = markdown_table(["time", "server RSS MiB", "OS threads", "fds", "UDP sockets", "live sessions",
                            "asyncio tasks", "fps per session (last 10 s)", "frames hidden whole (total)"], rows)
    slope = rss_slope(result)
    leaks = leak_problems(result)
    done = [r for r in result.records if r.error is None]
    errors = [r for r in result.records if r.error is not None]
    faces = soak_face_problems(result)
    leaked = sum(r.face_frames_leaked for r in result.records)
    checked = sum(r.face_frames_checked for r in result.records)
    judged = result.judged or {}
    no_frames = [r for r in done if r.frames_back == 0]
    fps = [r.fps for r in done if r.connected_s >= 5]
    rss_all = [s.rss_mib for s in run]
    slope_ok = slope is not None and slope <= MAX_SLOPE_MIB_PER_MIN
    lines = [
        f"### Soak: {result.sessions} sessions at {result.size}, {result.duration_s / 60:g} min, joining and leaving"
        + (" (a SHORT RUN: validation only, not numbers to quote)" if smoke else ""),
        "",
        table,
        "",
        "**Verdict**",
        "",
        "- RSS slope over the second half: "
        + ("— (too few samples)" if slope is None else f"{slope:+.2f} MiB/min")
        + f" ({'pass' if slope_ok else 'fail'}: ≤ {MAX_SLOPE_MIB_PER_MIN:g} MiB/min); RSS "
        + (f"{min(rss_all):.0f}–{max(rss_all):.0f} MiB during the run" if rss_all else "not sampled"),
        "- Leak checks after every session closed (peers, OS threads, fds, UDP sockets, Python threads, asyncio "
        f"tasks back at the baseline): {'pass' if not leaks else 'fail: ' + '; '.join(leaks)}",
        f"- Face-frames back: {'pass' if not faces else 'fail (' + '; '.join(faces) + ')'}.",
        f"- Every frame back, pixels judge: {leaked} of {checked} face-frames leaked, over "
        f"{sum(r.frames_back for r in result.records)} frames.",
        "- Sample after the run, pixels / identity / detector: "
        + (f"{per_judge(leaked_of(judged))} face-frames leaked, of {per_judge(checked_of(judged))} checked, "
           f"over {(judged.get('leak_report') or {}).get('frames', 0)} frames (identity every "
           f"{judged.get('identity_every')})." if judged else "not judged."),
        f"- Frames hidden whole (fail-closed): {sum(r.hidden_whole for r in result.records)}.",
        f"- Sessions: {len(done)} completed ({len(errors)} failed), lives {LIFE_S[0]:g}–{LIFE_S[1]:g} s; "
        f"{len(no_frames)} got no frame back; fps back per session: "
        + (f"median {float(np.median(fps)):.1f}, lowest {min(fps):.1f}" if fps else "—")
        + f"; joins refused with 503 by admission control: {result.refused}"
        + (f" (e.g. \"{result.refusals[0]}\")" if result.refusals else ""),
        f"- Command: `{command}`. Machine: {machine}.",
        f"- Clip: `{result.clip}`, a ground-truth clip above the barcode band, played forward and back. " + JUDGES_TEXT,
    ]
    if errors:
        lines.append(f"- First failure: {errors[0].error}")
    return "\n".join(lines) + "\n"


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


def write_section(path: Path, section: str) -> None:
    """Put ``section`` between the soak markers, after the generated block; everything else stays as it is."""
    text = path.read_text()
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if BEGIN in text and END in text:
        start, stop = text.index(BEGIN), text.index(END) + len(END)
        if text[stop:stop + 1] == "\n":
            stop += 1
        text = text[:start] + block + text[stop:]
    else:
        at = text.find(GENERATED_END)
        if at < 0:
            text = text.rstrip("\n") + "\n\n" + block
        else:
            eol = text.find("\n", at)
            eol = len(text) if eol < 0 else eol + 1
            text = text[:eol] + "\n" + block + text[eol:]
    path.write_text(text)


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
    if argv and argv[0] == "_client":
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--server-pid", type=int, required=True)
        return client_main(p.parse_args(argv[1:]))
    args = p.parse_args(argv)
    width, height = parse_size(args.size)
    if width % 2 or height % 2 or width < 128 or height < CODE_H + 64:
        raise SystemExit(f"--size must be even-sized and at least 128x{CODE_H + 64}")
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates a network namespace (aioice never uses 127.0.0.1)")
    signal.signal(signal.SIGTERM, raise_exit)
    command = shlex.join(["python", "-m", "bench.soak", *argv])
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
    section = render(result, command, machine, smoke=args.minutes < 10)
    print(section, end="")
    if args.write:
        write_section(REPO / "BENCHMARKS.md", section)
    return 0 if rss_slope(result) is not None and not leak_problems(result) and not soak_face_problems(result) else 1


if __name__ == "__main__":
    raise SystemExit(main())
