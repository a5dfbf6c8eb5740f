"""Recall by face size and false positives per frame on the annotated small-face set, ours against deface.

    python -m bench.small_faces [--device cpu|cuda|auto] [--quick]

The set (``testkit.smallfaces``): the nine dlib-annotated photos of ../shared/testdata, shrunk so their faces are
8-80 px, packed into 1920x1080 frames (and 8-48 px into 1280x720 frames), every face boxed. Each row detects every
frame once; a face counts as found at IoU >= 0.3 (one-to-one), and a detection that matches no face and lies in no
"unannotated real face" region is a false positive. Time: median ms per ``detect()`` of one frame (the whole
multi-view coverage included), with the detector's default threads.
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

from ._common import markdown_table
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


def render(size: tuple[int, int], frames: Sequence[AnnotatedFrame], rows: Sequence[Row], notes: Sequence[str],
           seconds: float) -> str:
    total = BandScore.zero()
    for frame in frames:
        total.add(frame, frame.boxes)
    band_heads = [f"recall {name} px ({total.faces[name]})" for name, _, _ in BANDS]
    body = [[r.name, r.settings, *[f"{r.score.recall(name):.3f}" for name, _, _ in BANDS],
             f"{r.score.recall():.3f}", f"{r.score.fp_per_frame:.2f}", "—" if r.ms is None else f"{r.ms:.0f}"]
            for r in rows]
    table = markdown_table(["detector", "settings", *band_heads, "recall (all)", "false pos./frame",
                            "ms/frame (median)"], body)
    head = (f"### {size[0]}x{size[1]} frames: {len(frames)} frames, {sum(total.faces.values())} faces "
            f"({seconds:.0f} s)\n\n")
    return head + table + "\n" + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="1920x1080 only, the default rows only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        sets = {size: small_face_set(size, faces) for size, faces in SIZES.items()}
    except FileNotFoundError as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 0
    out = []
    for size, frames in sets.items():
        if args.quick and size != (1920, 1080):
            continue
        started = time.perf_counter()
        rows, notes = measure(frames, args.device, args.quick)
        out.append(render(size, frames, rows, notes, time.perf_counter() - started))
    out.append(_NOTES)
    print("\n".join(out))
    return 0


_NOTES = """\
- Set: `testkit.smallfaces` — the 9 dlib-annotated photos of `../shared/testdata/images` shrunk (INTER_AREA) so \
their median face is 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64 and 80 px, packed on grey frames; face size = \
side of the annotated (eyebrow-to-chin) box, so a detector's box with the forehead is ~1.3x larger.
- Found: one-to-one at IoU >= 0.3. False positives: unmatched detections outside the regions of real but \
unannotated faces (people behind a bar, cut-out figures, photos in a rack), counted alike for every row.
- deface: `bench/.venv-deface/bin/python bench/deface_probe.py boxes --threshold 0.2 FRAMES...` (its CLI's own \
detector call, the frame at its own size); our rows run the int8 model on the CPU (`--precision auto`)."""


if __name__ == "__main__":
    raise SystemExit(main())
