"""Privacy zones: polygons of the picture that are always hidden, whatever the detector finds.

A zone is a polygon in frame-relative coordinates (0..1 across and down), so one drawing fits every resolution a
browser or camera switches to. Zones are filled solid, not blurred or mosaicked: a window or a screen behind a
mosaic still shows who moves in it. They are burned in by ``FrameProcessor`` after the faces and before encode, on
every path out of it (also a frame hidden whole), so a snapshot, a viewer, a recording and a file all carry them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["MAX_POINTS", "MAX_ZONES", "Zones", "hide_zones", "parse_zones", "zones_as_json"]

Point = tuple[float, float]
Zones = tuple[tuple[Point, ...], ...]

MAX_ZONES = 32
MAX_POINTS = 64
_SHIFT = 4  # cv2.fillPoly fixed-point bits: 1/16 px, so a zone edge sits where it was drawn at any size


def parse_zones(value: Any) -> Zones:
    """Zones from JSON-like data: a list of polygons, each a list of at least three ``[x, y]`` points within 0..1.

    ValueError with a reason a person can act on for anything else; ``None`` and ``[]`` mean no zones.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # json recurses per nesting level
            raise ValueError("zones must be JSON: a list of polygons, each a list of [x, y] points in 0..1") from None
    if not isinstance(value, list | tuple):
        raise ValueError("zones must be a list of polygons, each a list of [x, y] points in 0..1")
    if len(value) > MAX_ZONES:
        raise ValueError(f"at most {MAX_ZONES} zones, not {len(value)}")
    zones = []
    for i, polygon in enumerate(value, 1):
        if not isinstance(polygon, list | tuple) or not 3 <= len(polygon) <= MAX_POINTS:
            raise ValueError(f"zone {i} must be a list of 3 to {MAX_POINTS} [x, y] points")
        points = []
        for point in polygon:
            if (not isinstance(point, list | tuple) or len(point) != 2
                    or any(isinstance(v, bool) or not isinstance(v, int | float) for v in point)):
                raise ValueError(f"zone {i}: each point must be [x, y], two numbers")
            x, y = float(point[0]), float(point[1])
            if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"zone {i}: points are fractions of the frame, within 0..1")
            points.append((x, y))
        if _crosses_itself(points):
            raise ValueError(f"zone {i} crosses itself: draw its corners in order around it")
        zones.append(tuple(points))
    return tuple(zones)


def _crosses_itself(points: list[Point]) -> bool:
    """Whether two edges that are not neighbours touch: such a polygon has no single inside (a fill leaves the
    parts its edges enclose twice uncovered)."""
    corners = [p for i, p in enumerate(points) if p != points[i - 1]]  # repeated corners are one
    n = len(corners)
    edges = [(corners[i], corners[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a corner
            if _segments_touch(*edges[i], *edges[j]):
                return True
    return False


def _segments_touch(a: Point, b: Point, c: Point, d: Point) -> bool:
    def side(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def within(p: Point, q: Point, r: Point) -> bool:  # r on the segment pq, given it is on its line
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    d1, d2, d3, d4 = side(c, d, a), side(c, d, b), side(a, b, c), side(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and d1 and d2 and d3 and d4:
        return True
    return any(s == 0 and within(p, q, r) for s, p, q, r in ((d1, c, d, a), (d2, c, d, b), (d3, a, b, c),
                                                             (d4, a, b, d)))


def zones_as_json(zones: Zones) -> list[list[list[float]]]:
    return [[[x, y] for x, y in polygon] for polygon in zones]


def hide_zones(frame: npt.NDArray[np.uint8], zones: Zones, bgr: tuple[int, int, int]) -> None:
    """Fill every zone of ``frame`` (HxWx3 BGR, in place) with the colour ``bgr``."""
    if not zones:
        return
    height, width = frame.shape[:2]
    one = 1 << _SHIFT
    # Pixel centres sit on integer coordinates in OpenCV, so the frame's edges are at -0.5 and width - 0.5: a zone
    # drawn to the frame's edge covers the last row and column.
    for polygon in zones:
        points = np.round((np.asarray(polygon, np.float64) * (width, height) - 0.5) * one).astype(np.int32)
        # One polygon per call: given together, fillPoly's even-odd rule would leave where two zones overlap
        # uncovered.
        cv2.fillPoly(frame, [points], bgr, cv2.LINE_8, _SHIFT)
        # fillPoly leaves some pixels whose centres lie just inside a slanted edge; the outline takes them, so a
        # zone errs outward by at most a pixel, never inward.
        cv2.polylines(frame, [points], True, bgr, 1, cv2.LINE_8, _SHIFT)
