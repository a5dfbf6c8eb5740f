"""Detector throughput by batch size, and streams sharing one detector with and without cross-stream batching.

    python -m bench.detector_batch [--device cpu|cuda|auto] [--seconds 6] [--quick] [--json PATH]

Part 1 times ``detector.detect_batch(frames)`` (resize + pad, one inference, decode + NMS per frame) for batches
of 1 to 32 real frames of one size; batch 1 in the same run is the baseline. Part 2 runs N simulated live streams
(threads, each with one frame in flight, as the service's webcam sessions and cameras are) against one
``DetectionService``: first one frame per inference (the CPU default, the baseline), then batches of up to N
frames with a 3 ms wait (the CUDA default). The results go to bench/out/detector_batch.json (``--json``);
``python -m bench.render`` makes the tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np

from models import DetectorConfig, ModelError, ProviderError, load_detector
from models.centerface import CenterFaceDetector, DetectRequest
from streamer.detection_service import LIVE, BatchPolicy, DetectionService
from testkit.frames import fit_frame

from ._common import VIDEOS, Frame, Timing, json_option, read_frames, write_results

CLIP = VIDEOS / "facenet_pytorch_street.mp4"


def batch_rows(detector: CenterFaceDetector, frames: Sequence[Frame], size: str, batches: Sequence[int],
               runs: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for b in batches:
        batch = [frames[i % len(frames)] for i in range(b)]
        for _ in range(2):
            detector.detect_batch(batch)
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            detector.detect_batch(batch)
            samples.append((time.perf_counter() - started) * 1000)
        t = Timing(tuple(samples))
        rows.append({"frame": size, "batch": b, "median_ms": t.median, "p95_ms": t.p95, "runs": runs})
    return rows


def run_streams(detector: CenterFaceDetector, frames: Sequence[Frame], streams: int, policy: BatchPolicy,
                seconds: float) -> tuple[float, Timing, float]:
    """Detections per second over all streams, per-frame latency (submit to result) and mean frames per inference."""
    batches: list[int] = []
    service = DetectionService(detector, deadline_s=30, batch=policy, on_batch=batches.append)
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def stream(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            started = time.perf_counter()
            service.submit_detect(LIVE, DetectRequest(frames[i % len(frames)]), f"s{k}").result(timeout=60)
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
            i += streams

    # Not warmed separately: the batch-size table before this one has already run batches up to these sizes.
    stream_threads = [threading.Thread(target=stream, args=(k,)) for k in range(streams)]
    started = time.perf_counter()
    for t in stream_threads:
        t.start()
    for t in stream_threads:
        t.join()
    elapsed = time.perf_counter() - started
    service.close()
    return len(latencies) / elapsed, Timing(tuple(latencies)), float(np.mean(batches)) if batches else 0.0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m bench.detector_batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--seconds", type=float, default=6.0, help="per stream-count step (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and steps (a smoke run)")
    json_option(parser, "detector_batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        # As the server loads it: no spinning, so the codecs get the cores between inferences.
        detector = load_detector(args.device, config=DetectorConfig(spin_wait=False))
    except (ModelError, ProviderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    gpu = detector.provider != "CPUExecutionProvider"
    sizes = [(640, 480), (1280, 720)]
    batches = [1, 4, 16] if args.quick else ([1, 2, 4, 8, 16, 32] if gpu else [1, 2, 4, 8, 16])
    stream_counts = [1, 4] if args.quick else ([1, 4, 8, 16, 32] if gpu else [1, 2, 4, 8])
    runs = 5 if args.quick else (50 if gpu else 10)
    raw = read_frames(CLIP, 8)
    frames = {s: [fit_frame(f, *s) for f in raw] for s in sizes}
    print(f"[batch] {detector.provider}: batch sizes {batches}", file=sys.stderr, flush=True)
    rows: list[dict[str, object]] = []
    for (w, h), fs in frames.items():
        rows += batch_rows(detector, fs, f"{w}x{h}", batches, runs)
    streams = []
    fs = frames[(640, 480)]
    for n in stream_counts:
        print(f"[batch] {n} stream(s)", file=sys.stderr, flush=True)
        base_rate, base_lat, _ = run_streams(detector, fs, n, BatchPolicy(1, 0.0), args.seconds)
        rate, lat, mean_batch = run_streams(detector, fs, n, BatchPolicy(min(max(n, 1), 256), 0.003), args.seconds)
        streams.append({"streams": n,
                        "batch1": {"per_s": base_rate, "p50_ms": base_lat.median, "p95_ms": base_lat.p95},
                        "batched": {"per_s": rate, "p50_ms": lat.median, "p95_ms": lat.p95,
                                    "frames_per_inference": mean_batch}})
    write_results("detector_batch", argv, args, started, provider=detector.provider,
                  model=detector.model_path.name, clip=CLIP.name, frames=len(raw),
                  detect_size=detector.config.detect_size, runs=runs, batches=rows, streams=streams)
    return 0


if __name__ == "__main__":
    sys.exit(main())
