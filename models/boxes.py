"""Box math on (N, 4) x1, y1, x2, y2 arrays: areas, overlaps, suppression, clipping.

The detector, the tracker and the tests' judges share these, so an IoU means the same thing everywhere. Results
keep the precision of the boxes given (float32 detections stay float32, the tracker's float64 stays float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Boxes = npt.NDArray[np.floating[Any]]

# Boxes of no size overlap nothing: the union is floored so they never divide by zero.
UNION_FLOOR = 1e-6


def from_xywh(xywh: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """x1, y1, x2, y2 boxes (N, 4) from x, y, width, height rows (the test data's and the CLI's JSON)."""
    boxes = np.array(xywh, np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def areas(boxes: Boxes) -> Boxes:
    """Area of each box; a box with swapped corners has none."""
    return np.asarray(np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1))


def long_sides(boxes: Boxes) -> Boxes:
    """The longer of each box's width and height."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def intersections(a: Boxes, b: Boxes) -> Boxes:
    """Pairwise intersection areas of boxes a (N, 4) and b (M, 4), (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.asarray(np.prod(np.clip(rb - lt, 0, None), axis=2))


def iou_matrix(a: Boxes, b: Boxes) -> Boxes:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4), (N, M)."""
    if a.size == 0 or b.size == 0:
        return np.zeros((a.shape[0], b.shape[0]), np.result_type(a, b))
    inter = intersections(a, b)
    return np.asarray(inter / np.maximum(areas(a)[:, None] + areas(b)[None, :] - inter, UNION_FLOOR))


def enclosing(boxes: Boxes) -> Boxes:
    """The smallest box (4,) that holds every box of ``boxes``."""
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])


def clip(boxes: Boxes, width: float, height: float) -> Boxes:
    """The boxes cut to a width x height frame (a new array)."""
    return np.clip(boxes, 0, np.asarray([width, height, width, height], boxes.dtype))


def merge_overlaps(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32],
                   iou: float) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Greedy NMS (best score first, a box overlapping a kept one by more than ``iou`` is suppressed) that also
    returns, for each kept box, the union of the boxes it suppressed. Across views the union is what hides a face:
    a confident fragment of a close-up face (an eye and a cheek) must not remove the shrunk view's box of the
    whole face, it must grow into it."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    merged: list[Boxes] = []
    while order.size:
        i, rest = int(order[0]), order[1:]
        overlap = iou_matrix(boxes[i:i + 1], boxes[rest])[0]
        keep.append(i)
        merged.append(enclosing(boxes[np.concatenate([[i], rest[overlap > iou]])]))
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.intp), np.asarray(merged, np.float32).reshape(-1, 4)


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    return merge_overlaps(boxes, scores, iou)[0]
