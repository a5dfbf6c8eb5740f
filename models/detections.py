"""FaceDetections: the one value every detector returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
# What selects faces: a boolean mask as long as the detections, indices, a slice, or one position (a tuple is not
# one: numpy would take it as an index per axis).
Index = int | np.integer[Any] | slice | list[int] | list[bool] | npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]]


@dataclass(frozen=True)
class FaceDetections:
    """Faces found in one frame, in that frame's pixel coordinates.

    boxes: (N, 4) float32 x1, y1, x2, y2 with x1 <= x2 and y1 <= y2.
    scores: (N,) float32 in [0, 1].
    landmarks: (N, 5, 2) float32 x, y (eyes, nose, mouth corners), or NaN where a detector gives none.
    frame_size: (width, height) of the frame they were found in. Coordinates mean nothing on a frame of another
    size, so whoever hides a frame with them checks it (streamer.processor).
    """

    boxes: FloatArray
    scores: FloatArray
    landmarks: FloatArray
    frame_size: tuple[int, int]

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = boxes.shape[0]
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
        if scores.shape[0] != n or landmarks.shape[0] != n:
            raise ValueError(f"inconsistent detections: {n} boxes, {scores.shape[0]} scores, "
                             f"{landmarks.shape[0]} landmark sets")
        if not np.isfinite(boxes).all():
            raise ValueError("detection boxes must be finite")
        if n and ((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
            raise ValueError("detection boxes must satisfy x1 <= x2 and y1 <= y2")
        width, height = self.frame_size
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, not {width}x{height}")
        object.__setattr__(self, "frame_size", (int(width), int(height)))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "landmarks", landmarks)

    @classmethod
    def empty(cls, frame_size: tuple[int, int]) -> FaceDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32),
                   frame_size)

    @classmethod
    def merge(cls, parts: Sequence[FaceDetections], frame_size: tuple[int, int]) -> FaceDetections:
        """The faces of every part, in order, as one value; all parts must be of a frame of ``frame_size``."""
        if any(part.frame_size != frame_size for part in parts):
            raise ValueError(f"cannot merge detections of frames of other sizes than {frame_size}: "
                             f"{sorted({part.frame_size for part in parts})}")
        parts = [cls.empty(frame_size), *parts]
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.landmarks for p in parts]), frame_size)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: Index) -> FaceDetections:
        """The selected faces, their boxes, scores and landmarks together, on the same frame: ``d[d.scores >= t]``.
        A mask of another length than the detections raises IndexError."""
        return FaceDetections(self.boxes[index], self.scores[index], self.landmarks[index], self.frame_size)

    def xywh(self) -> FloatArray:
        out = self.boxes.copy()
        out[:, 2:] -= out[:, :2]
        return out
