"""Recall by face size and false positives per frame on the annotated small-face set, ours against deface.

    python -m bench.small_faces [--device cpu|cuda|auto] [--quick] [--json PATH]

The set (``testkit.smallfaces``): the nine dlib-annotated photos of ../shared/testdata, shrunk so their faces are
8-80 px, packed into 1920x1080 frames (and 8-48 px into 1280x720 frames), every face boxed. Each row detects every
frame once; a face counts as found at IoU >= 0.3 (one-to-one), and a detection that matches no face and lies in no
"unannotated real face" region is a false positive. Time: median ms per ``detect()`` of one frame (the whole
multi-view coverage included), with the detector's default threads. The results go to
bench/out/small_faces.json (``--json``); ``python -m bench.render`` makes the tables.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models import DetectorConfig, load_detector
from models.coverage import DetectSize
from models.precision import PrecisionChoice
from models.runtime import Device
from testkit.smallfaces import BANDS, FACE_SIZES, AnnotatedFrame, BandScore, small_face_set

from ._common import json_option, write_results
from .file_throughput import deface_available, deface_boxes

SIZES = {(1920, 1080): FACE_SIZES, (1280, 720): tuple(s for s in FACE_SIZES if s <= 48)}


@dataclass(frozen=True)
class Row:
    name: str
    settings: str
    score: BandScore
    ms: float | None


def _ours(frames: Sequence[AnnotatedFrame], device: Device, detect_size: DetectSize, threshold: float,
          precision: PrecisionChoice) -> tuple[BandScore, float]:
    detector = load_detector(device, config=DetectorConfig(detect_size=detect_size, threshold=threshold),
                             precision=precision)
    score = BandScore.zero()
    times = []
    for frame in frames:
        image = np.array(frame.image)
        started = time.perf_counter()
        found = detector.detect(image)
        times.append((time.perf_counter() - started) * 1000)
        score.add(frame, found.boxes)
    return score, statistics.median(times)


def _deface(frames: Sequence[AnnotatedFrame]) -> BandScore:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for frame in frames:
            path = Path(tmp) / f"{frame.name}.png"
            cv2.imwrite(str(path), frame.image)
            paths.append(path)
        found, _ = deface_boxes(paths)
        score = BandScore.zero()
        for frame, path in zip(frames, paths, strict=True):
            score.add(frame, found[str(path)])
    return score


def measure(frames: Sequence[AnnotatedFrame], device: Device, quick: bool) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    why = deface_available()
    if why:
        notes.append(f"deface skipped: {why}")
    else:
        rows.append(Row("deface 1.5.0", "threshold 0.2, full image (÷32), one pass", _deface(frames), None))
    width = frames[0].image.shape[1]
    variants: list[tuple[str, DetectSize, float, PrecisionChoice]] = [
        ("ours: detect, file, uploads (defaults)", "full", 0.3, "auto"),
        ("ours: cameras (defaults)", "full", 0.2, "auto"),
        ("ours: webcams (defaults)", "fast", 0.2, "auto"),
    ]
    if not quick:
        variants += [
            ("ours: full image, no small-face pass", width, 0.3, "auto"),
            ("ours: before #13 (detect size 640)", 640, 0.3, "auto"),
        ]
    for name, size, threshold, precision in variants:
        score, ms = _ours(frames, device, size, threshold, precision)
        rows.append(Row(name, f"detect size {size}, threshold {threshold}", score, ms))
    return rows, notes


def set_json(size: tuple[int, int], frames: Sequence[AnnotatedFrame], rows: Sequence[Row], notes: Sequence[str],
             seconds: float) -> dict[str, object]:
    """One frame size's results: the annotated faces per band, and per row what it found per band."""
    total = BandScore.zero()
    for frame in frames:
        total.add(frame, frame.boxes)
    return {"size": list(size), "frames": len(frames), "faces": total.faces, "seconds": seconds,
            "rows": [{"name": r.name, "settings": r.settings, "faces": r.score.faces, "found": r.score.found,
                      "false_positives": r.score.false_positives, "frames": r.score.frames, "ms": r.ms}
                     for r in rows],
            "notes": list(notes)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    begun = time.perf_counter()
    p = argparse.ArgumentParser(prog="python -m bench.small_faces", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="1920x1080 only, the default rows only")
    json_option(p, "small_faces")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bands = [name for name, _, _ in BANDS]
    try:
        sets = {size: small_face_set(size, faces) for size, faces in SIZES.items()}
    except FileNotFoundError as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        write_results("small_faces", argv, args, begun, bands=bands, sets=[], skipped=str(exc))
        return 0
    out = []
    for size, frames in sets.items():
        if args.quick and size != (1920, 1080):
            continue
        print(f"[small faces] {size[0]}x{size[1]}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        rows, notes = measure(frames, args.device, args.quick)
        out.append(set_json(size, frames, rows, notes, time.perf_counter() - started))
    write_results("small_faces", argv, args, begun, bands=bands, sets=out, skipped=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
