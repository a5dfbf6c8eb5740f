"""fp32 against int8 and fp16 CenterFace on this machine's CPU: latency, recall, and agreement with fp32.

    python -m bench.quantized [--runs 40] [--frames-per-clip 12] [--json PATH] [--quick]

- Latency: ``detector.detect(frame)`` end to end (resize + pad, inference, decode + NMS) on frames of the street
  clip centre-cropped and resized to each size, the network seeing the frame at its own size (detect_size = long
  side), with 2 and 1 intra-op threads. Within each (size, threads) cell the variants take turns run by run, so
  drift from other load on the machine hits them alike. Median and p95 of --runs runs after warm-up.
- Recall: the annotated photos of ../shared/testdata/images (43 faces), threshold 0.3, detect_size 640, one-to-one
  matching at IoU >= 0.3 (models.evaluate.match); false positives per image over-count (unannotated faces).
- Agreement: frames spread over every clip of ../shared/testdata/videos; of the faces fp32 finds with score >= 0.5
  (detect_size 640), the fraction the variant finds (its default threshold 0.3) at IoU >= 0.5.
The int8 model is calibrated on the photos of the scikit-image wheel (models.quantize), none of which is used here.
fp16 is built for CUDA; on the CPU it only shows that the converted graph is correct.
The results go to bench/out/quantized.json (``--json``); ``python -m bench.render`` makes the tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from models import PRECISIONS, DetectorConfig, Device, ModelError, Precision, ProviderError, load_detector
from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector
from models.evaluate import annotated_images, load_truth, match
from models.quantize import build_variant
from testkit.frames import fit_frame

from ._common import IMAGES, VIDEOS, Frame, Timing, json_option, read_frames, write_results

LATENCY_CLIP = VIDEOS / "facenet_pytorch_street.mp4"
SIZES = ((640, 480), (480, 384), (320, 256))
THREADS = (2, 1)
RECALL_THRESHOLD = 0.3
RECALL_DETECT_SIZE = 640
REFERENCE_SCORE = 0.5
AGREEMENT_IOU = 0.5


@dataclass
class Result:
    precision: Precision
    provider: str = ""
    size_mb: float = 0.0
    latency: dict[tuple[str, int], Timing] = field(default_factory=dict)
    faces: int = 0
    found: int = 0
    false_positives: int = 0
    images: int = 0
    reference_faces: int = 0
    agreed: int = 0


DEVICE: list[Device] = ["cpu"]  # set once from --device in main()


def detector_for(precision: Precision, threads: int) -> CenterFaceDetector:
    # No spin-waiting, as the server runs it: several sessions are loaded at once here, and threads that spin
    # after their run would take the cores from the session being timed.
    return load_detector(DEVICE[0], None, DetectorConfig(threads=threads, spin_wait=False), precision=precision)


def measure_latency(results: dict[Precision, Result], runs: int, warmup: int) -> None:
    source = read_frames(LATENCY_CLIP, 8)
    for threads in THREADS:
        detectors = {p: detector_for(p, threads) for p in results}
        for width, height in SIZES:
            label = f"{width}x{height}"
            print(f"[quantized] latency {label}, {threads} thread(s)", file=sys.stderr, flush=True)
            frames = [fit_frame(f, width, height) for f in source]
            native = max(width, height)
            samples: dict[Precision, list[float]] = {p: [] for p in detectors}
            for i in range(warmup + runs):
                frame = frames[i % len(frames)]
                for precision, detector in detectors.items():
                    started = time.perf_counter()
                    detector.detect(frame, detect_size=native)
                    if i >= warmup:
                        samples[precision].append((time.perf_counter() - started) * 1000.0)
            for precision, values in samples.items():
                results[precision].latency[(label, threads)] = Timing(tuple(values))
        for precision, detector in detectors.items():
            results[precision].provider = detector.provider
        del detectors


def measure_quality(results: dict[Precision, Result], frames_per_clip: int) -> None:
    print("[quantized] recall and agreement", file=sys.stderr, flush=True)
    photos = [(np.asarray(cv2.imread(str(img), cv2.IMREAD_COLOR), np.uint8), load_truth(js))
              for img, js in annotated_images(IMAGES)]
    clips = sorted(VIDEOS.glob("*.mp4"))
    frames: list[Frame] = [f for clip in clips for f in read_frames(clip, frames_per_clip)]
    detectors = {p: detector_for(p, 0) for p in results}
    reference = [detectors["fp32"].detect(f, REFERENCE_SCORE, RECALL_DETECT_SIZE).boxes for f in frames]
    for precision, detector in detectors.items():
        r = results[precision]
        for image, truth in photos:
            m = match(truth, detector.detect(image, RECALL_THRESHOLD, RECALL_DETECT_SIZE).boxes, iou=0.3)
            r.faces, r.found, r.images = r.faces + m.faces, r.found + m.found, r.images + 1
            r.false_positives += m.false_positives
        for frame, ref in zip(frames, reference, strict=True):
            found = detector.detect(frame, RECALL_THRESHOLD, RECALL_DETECT_SIZE).boxes
            overlap = iou_matrix(ref, found)
            r.reference_faces += len(ref)
            r.agreed += int((overlap.max(axis=1) >= AGREEMENT_IOU).sum()) if overlap.size else 0
    for precision in results:
        print(f"[quantized] {precision}: {results[precision].found}/{results[precision].faces} faces, "
              f"agreement {results[precision].agreed}/{results[precision].reference_faces}", file=sys.stderr)


def as_json(r: Result) -> dict[str, object]:
    return {"precision": r.precision, "provider": r.provider, "size_mb": r.size_mb,
            "latency": [{"frame": frame, "threads": threads, "median_ms": t.median, "p95_ms": t.p95,
                         "runs": len(t.samples)} for (frame, threads), t in r.latency.items()],
            "faces": r.faces, "found": r.found, "false_positives": r.false_positives, "images": r.images,
            "reference_faces": r.reference_faces, "agreed": r.agreed}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    p = argparse.ArgumentParser(prog="python -m bench.quantized", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=40, help="timed runs per cell (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="discarded runs per cell (default: %(default)s)")
    p.add_argument("--frames-per-clip", type=int, default=12, help="agreement frames per clip (default: %(default)s)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="variants besides the fp32 baseline (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 runs, 1 warm-up, 2 frames per clip")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="default: %(default)s")
    json_option(p, "quantized")
    args = p.parse_args(argv)
    DEVICE[0] = args.device
    if args.quick:
        args.runs, args.warmup, args.frames_per_clip = 5, 1, 2
    if not IMAGES.is_dir() or not VIDEOS.is_dir():
        raise SystemExit(f"test data not found under {IMAGES.parent} (set FACE_TESTDATA)")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    precisions: list[Precision] = ["fp32", *[q for q in args.precisions if q != "fp32"]]
    try:
        results = {q: Result(q, size_mb=build_variant(q).stat().st_size / 1e6) for q in precisions}
        measure_quality(results, args.frames_per_clip)
        measure_latency(results, args.runs, args.warmup)
    except (ModelError, ProviderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_results("quantized", argv, args, started, precisions=[as_json(r) for r in results.values()],
                  sizes=[f"{w}x{h}" for w, h in SIZES], threads=list(THREADS), latency_clip=LATENCY_CLIP.name,
                  clips=len(sorted(VIDEOS.glob("*.mp4"))), recall_threshold=RECALL_THRESHOLD,
                  recall_detect_size=RECALL_DETECT_SIZE, reference_score=REFERENCE_SCORE, agreement_iou=AGREEMENT_IOU)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
