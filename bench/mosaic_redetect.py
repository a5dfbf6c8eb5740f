"""Does a hidden face still look like a face? The detector re-run on mosaics of the 43 annotated test faces.

    python -m bench.mosaic_redetect [--keys 40] [--json PATH]

For each mosaic layout (cells in place, cells shuffled at random - one row per set of random orders - and cells
ordered by brightness, which is what `streamer.anonymize` does) it hides the faces the detector finds in each
annotated photo and runs the detector again on the result: a detection with IoU >= 0.3 against an annotated face
counts as a face that still reads as one. The results go to bench/out/mosaic_redetect.json (``--json``);
``python -m bench.render`` makes the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from models import load_detector
from models.boxes import iou_matrix
from models.evaluate import annotated_images, load_truth
from streamer.anonymize import anonymize, pad_boxes
from streamer.settings import AnonymizeSettings

from ._common import IMAGES, json_option, write_results

Frame = npt.NDArray[np.uint8]


def shuffled(image: Frame, boxes: npt.NDArray[np.float32], rng: np.random.Generator) -> Frame:
    """A 10-cell mosaic (as the default) with the cells in a random order."""
    out = image.copy()
    for x1, y1, x2, y2 in pad_boxes(boxes, 1.3, image.shape[1], image.shape[0]):
        roi = out[y1:y2, x1:x2]
        h, w = roi.shape[:2]
        nx, ny = min(w, 10), min(h, max(1, round(10 * h / w)))
        cells = cv2.resize(roi, (nx, ny), interpolation=cv2.INTER_AREA).reshape(-1, 3)
        small = cells[rng.permutation(len(cells))].reshape(ny, nx, 3)
        roi[...] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m bench.mosaic_redetect", description=__doc__)
    parser.add_argument("--keys", type=int, default=40, help="random shuffle orders to try (default: %(default)s)")
    parser.add_argument("--images", type=Path, default=IMAGES)
    json_option(parser, "mosaic_redetect")
    args = parser.parse_args(argv)
    detector = load_detector("cpu")
    photos = [(np.asarray(cv2.imread(str(i)), np.uint8), load_truth(j)) for i, j in annotated_images(args.images)]
    found = [detector.detect(image).boxes for image, _ in photos]
    faces = sum(len(t) for _, t in photos)

    def still_faces(make: object) -> tuple[int, float]:
        hits, top = 0, 0.0
        for (image, truth), boxes in zip(photos, found, strict=True):
            again = detector.detect(make(image, boxes))  # type: ignore[operator]
            if len(again):
                overlap = iou_matrix(truth, again.boxes) >= 0.3
                hits += int(overlap.any(axis=1).sum())
                if overlap.any():
                    top = max(top, float(again.scores[overlap.any(axis=0)].max()))
        return hits, top

    def ours(scramble: bool) -> object:
        def make(image: Frame, boxes: npt.NDArray[np.float32]) -> Frame:
            out = image.copy()
            anonymize(out, boxes, AnonymizeSettings(scramble=scramble))
            return out
        return make

    layouts = []
    for label, scramble in (("cells in place (`--no-scramble`)", False), ("cells ordered by brightness (default)",
                                                                          True)):
        print(f"[mosaic] {label}", file=sys.stderr, flush=True)
        hits, top = still_faces(ours(scramble))
        layouts.append({"label": label, "hits": hits, "top": top})
    orders_with_hits, total, top_all = 0, 0, 0.0
    print(f"[mosaic] {args.keys} random orders", file=sys.stderr, flush=True)
    for key in range(args.keys):
        rng = np.random.default_rng(key)
        hits, top = still_faces(lambda image, boxes, rng=rng: shuffled(image, boxes, rng))
        orders_with_hits += hits > 0
        total += hits
        top_all = max(top_all, top)
    write_results("mosaic_redetect", argv, args, started, faces=faces, photos=len(photos), layouts=layouts,
                  shuffled={"orders": args.keys, "total": total, "orders_with_hits": orders_with_hits,
                            "top": top_all})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
