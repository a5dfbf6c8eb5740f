"""Enrolment: the embedding of the one face a photo or a live frame is about (its largest), for a gallery."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models import Detector

from .embedding import Embedder, Embedding

# A face smaller than this gives dlib too few pixels for a trustworthy embedding (its chip is 150 px).
MIN_FACE_PX = 48


def largest_face(detector: Detector, image: npt.NDArray[np.uint8]) -> tuple[float, float, float, float]:
    """The box of the largest face the detector finds in ``image``; ValueError when there is none big enough."""
    faces = detector.detect(image)
    if not len(faces):
        raise ValueError("no face found in the picture")
    sizes = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    box = faces.boxes[int(np.argmax(sizes))]
    if min(box[2] - box[0], box[3] - box[1]) < MIN_FACE_PX:
        raise ValueError(f"the largest face is under {MIN_FACE_PX} px: too small to recognise; use a closer picture")
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


def face_embedding(detector: Detector, embedder: Embedder, image: npt.NDArray[np.uint8]) -> Embedding:
    return embedder.embed(image, largest_face(detector, image))
