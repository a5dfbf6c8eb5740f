"""Which parts of a frame the network sees, at which scale: the views of a frame, and how their faces merge.

``detect_size`` says how a frame is covered:

- ``"full"`` (photos, videos, uploads, cameras): the frame at its own resolution, never shrunk. Frames with a side
  above ``TILE`` are cut into overlapping tiles (any face up to ``OVERLAP`` px is whole in at least one tile) plus
  a shrunk overview (``OVERVIEW`` px) for faces larger than that. Frames above ``WHOLE_ABOVE`` px also get a view
  shrunk to ``WHOLE``: at its own resolution, a face of more than ~600 px (a close-up) comes back as fragments that
  leave a mouth or an eye out, which the shrunk view sees whole. The shrunk views only answer for faces of at
  least ``SHRUNK_MIN_FACE`` px: smaller ones are whole and sharper at full resolution, where a tile holds any
  face up to ``OVERLAP`` px whole, and their false alarms would only add masks. Then a small-face pass: every
  small, low-score candidate of the first pass is looked at again at 2x (a "zoom" crop); what scores
  ``ZOOM_THRESHOLD`` there is a face. Measured on ``testkit.smallfaces`` (BENCHMARKS.md): faces under 16 px go
  from 0.73 to ~0.99 recall at ~1 false positive per 1080p frame, for the price of a few 128x128 crops on real
  footage.
- ``"fast"`` (live webcams): the frame shrunk at most ``FAST_MAX_SHRINK``x and never below ``FAST_MIN`` px, one
  view, no small-face pass: a webcam's faces are large, and a live stream needs the frames per second.
- an int N: the frame scaled so its long side is N (the pre-#13 behaviour; explicit only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

DetectSize = int | Literal["full", "fast"]
DETECT_SIZE_MODES = ("full", "fast")
SIZE_RANGE = (64, 4096)

TILE = 2048  # largest network input side of a full-coverage view: 1080p and 1440p run whole
OVERLAP = 256  # px shared by neighbouring tiles: faces up to this size are whole in one of them
OVERVIEW = 1024  # long side of the shrunk whole-frame view added to tiles, for faces larger than OVERLAP
WHOLE = 320  # long side of the view that sees close-up faces whole
WHOLE_ABOVE = 640  # frames up to this long side hold no face too large for their own resolution
SHRUNK_MIN_FACE = OVERLAP / 2  # the shrunk views of full coverage only answer for faces at least this large
FAST_MIN = 640
FAST_MAX_SHRINK = 2.0
ZOOM_LOW = 0.1  # first-pass scores from here up to the threshold are small-face candidates
ZOOM_MAX_SIDE = 32.0  # candidates larger than this (frame px) are not small faces
ZOOM_CROP = 64  # frame px around a candidate, enlarged ZOOM_FACTOR x
ZOOM_MARGIN = 4  # px a candidate's box must lie inside an existing crop to count as seen by it
ZOOM_FACTOR = 2
ZOOM_THRESHOLD = 0.4  # a zoomed candidate is a face from this score (or the request's threshold, if higher)
ZOOM_MAX_CROPS = 512  # beyond this, candidates are kept as faces unzoomed: bounded cost, never a missed face
MAX_BATCH_PIXELS = 10 * 1024 * 1024  # network input pixels per inference: 32 VGA streams or 2 tiles; bounds memory


def parse_detect_size(value: object) -> DetectSize:
    """``"full"``, ``"fast"`` or a whole number of px within SIZE_RANGE (from a CLI or a config file)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in DETECT_SIZE_MODES:
            return "full" if text == "full" else "fast"
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"detect size must be full, fast or a number of px, not {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"detect size must be full, fast or a whole number of px, not {value!r}")
    if not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
        raise ValueError(f"detect size must be within {SIZE_RANGE[0]}..{SIZE_RANGE[1]} px, not {value}")
    return value


@dataclass(frozen=True)
class View:
    """A crop of the frame (x0, y0, x1, y1, frame px) and the scale the network sees it at."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float
    tiled: bool = False  # a tile of a larger frame: boxes touching its inner edges may be cut faces
    min_face: float = 0.0  # frame px: smaller boxes are left to the full-resolution views, which see them better

    def input_size(self) -> tuple[int, int]:
        """(height, width) of the crop once scaled."""
        return max(1, round((self.y1 - self.y0) * self.scale)), max(1, round((self.x1 - self.x0) * self.scale))


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Equal overlapping spans covering 0..length, each at most ``tile`` long, neighbours sharing >= overlap."""
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    starts = [round(k * (length - size) / (n - 1)) for k in range(n)]
    return [(s, s + size) for s in starts]


def plan(height: int, width: int, detect_size: DetectSize) -> list[View]:
    """The views that cover a frame of this size."""
    long_side = max(height, width)
    if detect_size == "fast":
        target = min(long_side, max(FAST_MIN, math.ceil(long_side / FAST_MAX_SHRINK)))
        return [View(0, 0, width, height, target / long_side)]
    if detect_size != "full":
        return [View(0, 0, width, height, detect_size / long_side)]
    whole = ([View(0, 0, width, height, WHOLE / long_side, min_face=SHRUNK_MIN_FACE)] if long_side > WHOLE_ABOVE
             else [])
    if long_side <= TILE:
        return [View(0, 0, width, height, 1.0), *whole]
    views = [View(x0, y0, x1, y1, 1.0, tiled=True)
             for y0, y1 in _spans(height, TILE, OVERLAP) for x0, x1 in _spans(width, TILE, OVERLAP)]
    return [*views, View(0, 0, width, height, OVERVIEW / long_side, min_face=SHRUNK_MIN_FACE), *whole]


def zoom_views(height: int, width: int, boxes: npt.NDArray[np.float32],
               scores: npt.NDArray[np.float32]) -> tuple[list[View], npt.NDArray[np.bool_]]:
    """Zoom crops for small-face candidates (best first), and which candidates no crop covers (over the cap).

    A candidate counts as covered only when its whole box lies ``ZOOM_MARGIN`` px inside a crop, so that the
    crop sees it whole (a zoomed box touching the crop's inner edge is dropped as a possible fragment)."""
    crop = min(ZOOM_CROP, height, width)
    order = np.argsort(-scores, kind="stable")
    starts = np.zeros((ZOOM_MAX_CROPS, 2), np.int64)  # x0, y0 of each crop made so far
    made = 0
    uncovered = np.zeros(len(boxes), bool)
    for i in order:
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        if made:
            sx, sy = starts[:made, 0], starts[:made, 1]
            inside = ((sx + ZOOM_MARGIN <= x1) & (x2 <= sx + crop - ZOOM_MARGIN)
                      & (sy + ZOOM_MARGIN <= y1) & (y2 <= sy + crop - ZOOM_MARGIN))
            if inside.any():
                continue
        if made >= ZOOM_MAX_CROPS:
            uncovered[i] = True
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        starts[made] = (int(np.clip(round(cx - crop / 2), 0, width - crop)),
                        int(np.clip(round(cy - crop / 2), 0, height - crop)))
        made += 1
    views = [View(int(x0), int(y0), int(x0) + crop, int(y0) + crop, float(ZOOM_FACTOR)) for x0, y0 in starts[:made]]
    return views, uncovered


def inner_edge_contact(boxes: npt.NDArray[np.float32], view: View, height: int, width: int,
                       margin: float = 2.0) -> npt.NDArray[np.bool_]:
    """Boxes (frame px) touching an edge of ``view`` that is not an edge of the frame: possibly cut faces."""
    touch = np.zeros(len(boxes), bool)
    if view.x0 > 0:
        touch |= boxes[:, 0] <= view.x0 + margin
    if view.y0 > 0:
        touch |= boxes[:, 1] <= view.y0 + margin
    if view.x1 < width:
        touch |= boxes[:, 2] >= view.x1 - margin
    if view.y1 < height:
        touch |= boxes[:, 3] >= view.y1 - margin
    return touch
