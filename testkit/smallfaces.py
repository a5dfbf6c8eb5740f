"""An annotated small-face set: the dlib photos shrunk until their faces are 8-80 px, packed into large frames.

Every face keeps its box, so recall can be reported by face size band, and false positives per frame counted on the
photos' own walls, tables and hands. The photos show a few real faces that are not annotated (people behind the
bar, cut-out figures on a shelf, photos in a rack); those areas are ``ignore`` regions: a detection there is
neither a hit nor a false positive, as in WIDER FACE's evaluation.

Face size is the annotated box's side (dlib boxes are squares from eyebrows to chin; a detector's box with the
forehead is about 1.3x larger). Deterministic: the same arguments always give the same frames.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .truth import AnnotatedPhoto, Image, Size, _frozen, annotated_photos

Boxes = npt.NDArray[np.float32]  # (N, 4) x1, y1, x2, y2

# Faces visible in the photos but not annotated (x1, y1, x2, y2 in photo pixels), checked by eye.
UNANNOTATED: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "2008_002079": ((255.0, 25.0, 500.0, 125.0),),  # people at the bar and by the window
    "2008_004176": ((0.0, 0.0, 480.0, 70.0),  # cut-out figures on the shelf
                    (425.0, 110.0, 480.0, 420.0),  # photos in the rack
                    (10.0, 255.0, 65.0, 335.0)),  # a poster with a face
    "2008_007676": ((395.0, 95.0, 500.0, 175.0),),  # people in the dark background
}

FACE_SIZES = (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 80)
BANDS: tuple[tuple[str, float, float], ...] = (("<16", 0.0, 16.0), ("16-32", 16.0, 32.0), ("32-64", 32.0, 64.0),
                                               (">64", 64.0, float("inf")))
GAP = 12  # px of background between packed photos
BACKGROUND = 96


@dataclass(frozen=True)
class AnnotatedFrame:
    name: str
    image: Image  # read-only BGR
    boxes: Boxes  # annotated faces
    ignore: Boxes  # areas with unannotated real faces

    @property
    def face_sizes(self) -> npt.NDArray[np.float32]:
        return np.asarray(np.sqrt((self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])),
                          np.float32)


@dataclass(frozen=True)
class _Placed:
    photo: AnnotatedPhoto
    scale: float
    width: int
    height: int


def band_of(size: float) -> str:
    for name, low, high in BANDS:
        if low <= size < high:
            return name
    raise ValueError(f"no band for a face of {size} px")


def _shrunk(photo: AnnotatedPhoto, scale: float) -> Image:
    image = photo.image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR),
                      np.uint8)


def _pack(placements: Sequence[_Placed], frame: Size) -> list[list[tuple[_Placed, int, int]]]:
    """Shelf packing, largest first: frames of placed photos with their top-left corners."""
    frames: list[list[tuple[_Placed, int, int]]] = []
    order = sorted(placements, key=lambda p: (-p.height, -p.width, p.photo.name))
    width, height = frame
    current: list[tuple[_Placed, int, int]] = []
    x = y = GAP
    shelf = 0
    for p in order:
        if p.width + 2 * GAP > width or p.height + 2 * GAP > height:
            raise ValueError(f"{p.photo.name} at scale {p.scale:.2f} does not fit a {width}x{height} frame")
        if x + p.width + GAP > width:
            x, y, shelf = GAP, y + shelf + GAP, 0
        if y + p.height + GAP > height:
            frames.append(current)
            current, x, y, shelf = [], GAP, GAP, 0
        current.append((p, x, y))
        x += p.width + GAP
        shelf = max(shelf, p.height)
    if current:
        frames.append(current)
    return frames


@functools.cache
def small_face_set(frame: Size = (1920, 1080), face_sizes: tuple[int, ...] = FACE_SIZES,
                   testdata: Path | None = None) -> tuple[AnnotatedFrame, ...]:
    """The annotated photos, each shrunk (or enlarged) so that its median face is each of ``face_sizes`` px,
    packed into frames of ``frame`` size on a plain grey background."""
    photos = annotated_photos(testdata)
    placements = []
    for photo in photos:
        sides = [float(np.sqrt((b[2] - b[0]) * (b[3] - b[1]))) for b in photo.boxes]
        h, w = photo.image.shape[:2]
        for size in face_sizes:
            scale = size / float(np.median(sides))
            placements.append(_Placed(photo, scale, max(1, round(w * scale)), max(1, round(h * scale))))
    frames = []
    for k, packed in enumerate(_pack(placements, frame)):
        canvas = np.full((frame[1], frame[0], 3), BACKGROUND, np.uint8)
        boxes: list[list[float]] = []
        ignore: list[list[float]] = []
        for p, x, y in packed:
            shrunk = _shrunk(p.photo, p.scale)
            canvas[y:y + shrunk.shape[0], x:x + shrunk.shape[1]] = shrunk
            # the resize maps pixel edges, so a box scales by the real per-axis factor of the rounded size
            sx, sy = shrunk.shape[1] / p.photo.image.shape[1], shrunk.shape[0] / p.photo.image.shape[0]
            for x1, y1, x2, y2 in p.photo.boxes:
                boxes.append([x + x1 * sx, y + y1 * sy, x + x2 * sx, y + y2 * sy])
            for x1, y1, x2, y2 in UNANNOTATED.get(p.photo.name, ()):
                ignore.append([x + x1 * sx, y + y1 * sy, x + x2 * sx, y + y2 * sy])
        frames.append(AnnotatedFrame(f"small_faces_{k:02d}", _frozen(canvas),
                                     np.asarray(boxes, np.float32).reshape(-1, 4),
                                     np.asarray(ignore, np.float32).reshape(-1, 4)))
    return tuple(frames)


@dataclass
class BandScore:
    """Recall by face size band and false positives, summed over frames."""

    faces: dict[str, int]
    found: dict[str, int]
    false_positives: int = 0
    frames: int = 0

    @classmethod
    def zero(cls) -> BandScore:
        return cls({name: 0 for name, _, _ in BANDS}, {name: 0 for name, _, _ in BANDS})

    def recall(self, band: str | None = None) -> float:
        faces = sum(self.faces.values()) if band is None else self.faces[band]
        found = sum(self.found.values()) if band is None else self.found[band]
        return found / faces if faces else 1.0

    @property
    def fp_per_frame(self) -> float:
        return self.false_positives / self.frames if self.frames else 0.0

    def add(self, frame: AnnotatedFrame, found: Boxes, iou: float = 0.3) -> None:
        """Greedy one-to-one matching at ``iou``; an unmatched detection whose centre is in an ignore region is
        not a false positive."""
        from models.evaluate import matched_pairs

        found = np.asarray(found, np.float32).reshape(-1, 4)
        used_t, used_f = matched_pairs(frame.boxes, found, iou)
        for t, size in enumerate(frame.face_sizes):
            band = band_of(float(size))
            self.faces[band] += 1
            self.found[band] += t in used_t
        cx, cy = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
        for f in range(found.shape[0]):
            if f in used_f:
                continue
            ig = frame.ignore
            inside = (ig[:, 0] <= cx[f]) & (cx[f] <= ig[:, 2]) & (ig[:, 1] <= cy[f]) & (cy[f] <= ig[:, 3])
            self.false_positives += not bool(inside.any())
        self.frames += 1
