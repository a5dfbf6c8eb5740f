"""Box math (models.boxes) and selecting faces from FaceDetections: small exact cases, no model."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from models import FaceDetections
from models.boxes import areas, clip, enclosing, from_xywh, iou_matrix, long_sides, merge_overlaps, nms


def f32(values: npt.ArrayLike) -> npt.NDArray[np.float32]:
    return np.asarray(values, np.float32)


def test_iou_of_known_boxes() -> None:
    a = f32([[0, 0, 10, 10], [0, 0, 10, 20]])
    b = f32([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    expected = [[1, 1 / 3, 0], [0.5, 50 / 250, 0]]
    assert np.allclose(iou_matrix(a, b), expected) and iou_matrix(a, b).shape == (2, 3)
    assert np.allclose(iou_matrix(b, a), np.transpose(expected))


def test_iou_of_boxes_without_area_is_zero_not_nan() -> None:
    flat = f32([[5, 5, 5, 5], [10, 0, 10, 10]])
    overlaps = iou_matrix(flat, flat)
    assert np.isfinite(overlaps).all() and (overlaps == 0).all()
    assert areas(f32([[10, 10, 0, 0]])).tolist() == [0.0]  # swapped corners span nothing


def test_iou_keeps_the_precision_of_its_boxes() -> None:
    box32 = f32([[0, 0, 3, 3]])
    assert iou_matrix(box32, box32).dtype == np.float32
    assert iou_matrix(box32.astype(np.float64), box32.astype(np.float64)).dtype == np.float64
    assert iou_matrix(box32[:0], box32).shape == (0, 1) and iou_matrix(box32, box32[:0]).shape == (1, 0)


def test_clip_enclose_and_sides() -> None:
    boxes = f32([[-5, 10, 50, 700], [600, -1, 700, 20]])
    clipped = clip(boxes, 640, 480)
    assert clipped.tolist() == [[0, 10, 50, 480], [600, 0, 640, 20]] and clipped.dtype == np.float32
    assert boxes[0, 0] == -5  # a new array: the caller's boxes stay as they were
    assert enclosing(boxes).tolist() == [-5, -1, 700, 700]
    assert long_sides(boxes).tolist() == [690, 100]


def test_xywh_rows_become_corners_without_touching_the_input() -> None:
    xywh = f32([[10, 20, 30, 40]])
    assert from_xywh(xywh).tolist() == [[10, 20, 40, 60]] and xywh.tolist() == [[10, 20, 30, 40]]
    assert from_xywh([]).shape == (0, 4) and from_xywh([]).dtype == np.float32


def test_a_confident_fragment_never_shrinks_the_whole_face_box() -> None:
    whole = [100, 100, 700, 800]  # the shrunk view's box of a close-up face, lower score
    fragment = [120, 120, 560, 620]  # IoU 0.52 with it, higher score
    boxes = f32([fragment, whole])
    scores = f32([0.9, 0.6])
    assert nms(boxes, scores, 0.3).tolist() == [0]  # plain NMS keeps only the fragment
    keep, merged = merge_overlaps(boxes, scores, 0.3)
    assert keep.tolist() == [0] and merged.tolist() == [whole]  # merging keeps the whole face covered
    apart = f32([whole, [900, 100, 1000, 200]])
    assert merge_overlaps(apart, scores, 0.3)[1].tolist() == apart.tolist()


def test_nms_keeps_the_best_of_each_overlapping_group_best_first() -> None:
    boxes = f32([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]])
    scores = f32([0.5, 0.9, 0.7, 0.9])
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]  # equal scores: the first given wins
    assert nms(boxes[:0], scores[:0], 0.3).tolist() == []


def faces(n: int = 4, size: tuple[int, int] = (640, 480)) -> FaceDetections:
    """``n`` faces whose box, score and landmarks all carry their row number, so a misaligned row shows."""
    rows = np.arange(n, dtype=np.float32)
    boxes = np.stack([rows, rows, rows + 10, rows + 10], axis=1)
    return FaceDetections(boxes, f32(rows / 10), np.broadcast_to(rows[:, None, None], (n, 5, 2)), size)


def rows_of(d: FaceDetections) -> list[int]:
    """The row numbers each of the three arrays says it holds, which must agree."""
    from_boxes, from_scores = d.boxes[:, 0].tolist(), np.round(d.scores * 10).tolist()
    from_marks = d.landmarks[:, 0, 0].tolist()
    assert from_boxes == from_scores == from_marks, (from_boxes, from_scores, from_marks)
    return [int(r) for r in from_boxes]


def test_selecting_faces_keeps_boxes_scores_and_landmarks_together() -> None:
    d = faces()
    assert rows_of(d[d.scores >= 0.2]) == [2, 3]
    assert rows_of(d[np.asarray([3, 0])]) == [3, 0]
    assert rows_of(d[[1, 1]]) == [1, 1]
    assert rows_of(d[1:3]) == [1, 2]
    assert rows_of(d[-1]) == [3] and d[-1].boxes.shape == (1, 4)  # one position is still a set of faces
    assert rows_of(d[d.scores > 1]) == [] and d[d.scores > 1].landmarks.shape == (0, 5, 2)
    assert len(d) == 4 and len(d[::2]) == 2
    assert {d[m].frame_size for m in (d.scores >= 0.2, [0], slice(0, 0))} == {(640, 480)}


def test_a_mask_of_another_length_is_refused() -> None:
    d = faces()
    with pytest.raises(IndexError):
        d[np.ones(3, bool)]
    with pytest.raises(IndexError):
        d[[True, False]]
    with pytest.raises(IndexError):
        d[4]


def test_merging_keeps_order_and_refuses_other_frames() -> None:
    d = faces()
    assert rows_of(FaceDetections.merge([d[2:], d[:1]], d.frame_size)) == [2, 3, 0]
    none = FaceDetections.merge([], (320, 240))
    assert len(none) == 0 and none.frame_size == (320, 240)
    with pytest.raises(ValueError, match="other sizes"):
        FaceDetections.merge([d, faces(size=(1280, 720))], d.frame_size)
