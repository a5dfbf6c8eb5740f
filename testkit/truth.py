"""Ground-truth clips: every frame knows the box of every annotated face in it.

Frames are rendered on demand from small sources (the nine dlib-annotated photos, the 128x96 otb_girl sequence in
../shared/testdata), so a clip of any length costs no memory and the same index always gives the same frame.

- ``virtual_camera``: a camera panning and zooming over photos, hard-cutting to another photo every few seconds;
  presets ``switching_sizes``, ``hard_cuts``, ``entering_faces``.
- ``otb_girl``: the annotated OTB "Girl" sequence, upscaled.
- ``shifted(clip, dy)`` / ``TruthFrame.shifted(dy)``: the same picture below a ``dy``-px black strip (the live
  tests' frame-index strip), boxes moved down with it.

Frame images are read-only (copy before anonymizing in place), so a test cannot hide the truth it judges against.
"""

from __future__ import annotations

import functools
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2
Size = tuple[int, int]  # width, height

# FACE_TESTDATA: for a benchmark run on a machine that keeps the data elsewhere.
TESTDATA_DIR = Path(os.environ.get("FACE_TESTDATA",
                                  str(Path(__file__).resolve().parent.parent.parent / "shared" / "testdata")))
WEBCAM = (640, 480)
HD = (1280, 720)


def testdata_dir(folder: Path | None = None) -> Path:
    """``folder`` or ../shared/testdata beside the repository; FileNotFoundError when it is missing."""
    path = folder or TESTDATA_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"real test data not found: {path} (expected ../shared/testdata beside the repository)")
    return path


def _frozen(image: npt.NDArray[Any]) -> Image:
    out = np.ascontiguousarray(image, dtype=np.uint8)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class Face:
    face_id: str  # "<photo stem>#<k>" for photos, "otb_girl" for the girl; the identity judge's key
    box: Box  # x1, y1, x2, y2 in frame pixels, clipped to the frame
    visible: float  # share of the whole (unclipped) box inside the frame, 0..1

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def _placed(face_id: str, box: Box, width: int, height: int) -> Face | None:
    """The face whose whole box is ``box``, clipped to a width x height frame; None when none of it is inside."""
    x1, y1, x2, y2 = box
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    visible = (cx2 - cx1) * (cy2 - cy1) / max((x2 - x1) * (y2 - y1), 1e-9)
    return Face(face_id, (cx1, cy1, cx2, cy2), min(1.0, visible))


@dataclass(frozen=True)
class TruthFrame:
    index: int
    t: float  # seconds (index / fps)
    image: Image  # BGR HxWx3, W and H even, read-only
    faces: tuple[Face, ...]
    scene: str  # the photo (or sequence) shown; a change between consecutive frames is a hard cut

    @property
    def size(self) -> Size:
        return self.image.shape[1], self.image.shape[0]

    def shifted(self, dy: int) -> TruthFrame:
        """The picture below ``dy`` black rows (the live tests' index strip); boxes move down by ``dy``."""
        if dy < 0:
            raise ValueError(f"dy must be >= 0, not {dy}")
        image = np.zeros((self.image.shape[0] + dy, self.image.shape[1], 3), np.uint8)
        image[dy:] = self.image
        faces = tuple(replace(f, box=(f.box[0], f.box[1] + dy, f.box[2], f.box[3] + dy)) for f in self.faces)
        return replace(self, image=_frozen(image), faces=faces)

    def resized(self, size: Size) -> TruthFrame:
        """The frame as it looks at ``size`` (width, height), boxes scaled: what to compare an output of that
        size with. ``visible`` is a share, so it stays."""
        if size == self.size:
            return self
        width, height = size
        sx, sy = width / self.size[0], height / self.size[1]
        shrink = sx * sy < 1
        image = cv2.resize(self.image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        faces = tuple(replace(f, box=(f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy))
                      for f in self.faces)
        return replace(self, image=_frozen(image), faces=faces)


class TruthClip(ABC):
    """A clip whose frames are rendered on demand: ``frame(i)`` gives the same result every call."""

    name: str
    fps: float

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def frame(self, index: int) -> TruthFrame: ...

    @abstractmethod
    def reference(self, face_id: str) -> tuple[Image, Box]:
        """An image and x1, y1, x2, y2 box showing that face unanonymized (the identity judge's reference)."""

    def __iter__(self) -> Iterator[TruthFrame]:
        for index in range(len(self)):
            yield self.frame(index)

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name} has frames 0..{len(self) - 1}, not {index}")


class _Shifted(TruthClip):
    def __init__(self, clip: TruthClip, dy: int) -> None:
        self.clip, self.dy = clip, dy
        self.name, self.fps = f"{clip.name}+{dy}px", clip.fps

    def __len__(self) -> int:
        return len(self.clip)

    def frame(self, index: int) -> TruthFrame:
        return self.clip.frame(index).shifted(self.dy)

    def reference(self, face_id: str) -> tuple[Image, Box]:
        return self.clip.reference(face_id)


def shifted(clip: TruthClip, dy: int) -> TruthClip:
    """``clip`` with every frame below a ``dy``-px black strip (see ``TruthFrame.shifted``)."""
    return _Shifted(clip, dy)


# ---------------------------------------------------------------------------------------------------- photos


@dataclass(frozen=True)
class AnnotatedPhoto:
    name: str  # file stem
    path: Path
    boxes: tuple[Box, ...]  # x1, y1, x2, y2 in photo pixels (dlib's tight eyebrow-to-chin squares)

    @property
    def image(self) -> Image:
        return _read(self.path)

    def face_id(self, k: int) -> str:
        return f"{self.name}#{k}"


@functools.cache
def _read(path: Path) -> Image:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read {path}")
    return _frozen(image)


def annotated_photos(testdata: Path | None = None) -> tuple[AnnotatedPhoto, ...]:
    """Each images/X.jpg with X.json beside it, sorted by name (9 photos, 43 faces of 37..109 px)."""
    photos = []
    for js in sorted((testdata_dir(testdata) / "images").glob("*.json")):
        xywh = json.loads(js.read_text())["boxes"]
        boxes = tuple((float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in xywh)
        photos.append(AnnotatedPhoto(js.stem, js.with_suffix(".jpg"), boxes))
    return tuple(photos)


@dataclass(frozen=True)
class _Shot:
    """One scene's camera path over one photo: the window's centre and height (photo pixels) move from
    ``start`` to ``end`` with a cosine ease, so the camera starts and stops smoothly."""

    photo: AnnotatedPhoto
    t0: float
    duration: float
    start: tuple[float, float, float]  # cx, cy, window height
    end: tuple[float, float, float]

    def at(self, t: float) -> tuple[float, float, float]:
        p = min(1.0, max(0.0, (t - self.t0) / self.duration))
        e = 0.5 - 0.5 * math.cos(math.pi * p)
        cx, cy, wh = (a + (b - a) * e for a, b in zip(self.start, self.end, strict=True))
        return cx, cy, wh


class VirtualCamera(TruthClip):
    """See ``virtual_camera``."""

    def __init__(self, photos: Sequence[AnnotatedPhoto], *, seconds: float, fps: float,
                 size_at: Callable[[float], Size], cut_every_s: float, seed: int, face_px: tuple[float, float],
                 pan_speed: float, name: str) -> None:
        if not photos:
            raise ValueError("virtual_camera needs at least one annotated photo")
        if seconds <= 0 or fps <= 0 or cut_every_s <= 0:
            raise ValueError("seconds, fps and cut_every_s must be > 0")
        self.name, self.fps, self.size_at = name, fps, size_at
        self.cut_every_s = cut_every_s
        self._frames = max(1, round(seconds * fps))
        self._photos = {p.name: p for p in photos}
        # The path is planned once for the first frame's size; a later size renders the same path (same window
        # height, the window's width following the new aspect), like a camera switching resolution.
        width, height = self._size(0.0)
        scenes = math.ceil(self._frames / fps / cut_every_s)
        order = _scene_order(len(photos), scenes, seed)
        self._shots = [_plan(photos[order[i]], np.random.default_rng([seed, i]), i * cut_every_s, cut_every_s,
                             height, width / height, face_px, pan_speed) for i in range(scenes)]

    def __len__(self) -> int:
        return self._frames

    def _size(self, t: float) -> Size:
        width, height = self.size_at(t)
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"frame sizes must be positive and even, not {width}x{height} at t={t:.3f}")
        return width, height

    def frame(self, index: int) -> TruthFrame:
        self._check(index)
        t = index / self.fps
        shot = self._shots[min(len(self._shots) - 1, int(t / self.cut_every_s + 1e-9))]
        cx, cy, wh = shot.at(t)
        width, height = self._size(t)
        scale = height / wh
        x0, y0 = cx - wh * width / height / 2, cy - wh / 2
        # Pixel centres sit at integer coordinates: output u covers photo [x0 + u/scale, x0 + (u+1)/scale).
        matrix = np.array([[scale, 0.0, scale * (0.5 - x0) - 0.5], [0.0, scale, scale * (0.5 - y0) - 0.5]])
        # A constant black fill where the window leaves the photo: a reflected border would mirror faces.
        image = cv2.warpAffine(shot.photo.image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        faces = []
        for k, (x1, y1, x2, y2) in enumerate(shot.photo.boxes):
            box = ((x1 - x0) * scale, (y1 - y0) * scale, (x2 - x0) * scale, (y2 - y0) * scale)
            face = _placed(shot.photo.face_id(k), box, width, height)
            if face is not None:
                faces.append(face)
        return TruthFrame(index, t, _frozen(image), tuple(faces), shot.photo.name)

    def reference(self, face_id: str) -> tuple[Image, Box]:
        name, _, k = face_id.partition("#")
        if name not in self._photos or not k.isdigit() or int(k) >= len(self._photos[name].boxes):
            raise KeyError(f"{self.name} shows no face {face_id!r}")
        photo = self._photos[name]
        return photo.image, photo.boxes[int(k)]


def _scene_order(photos: int, scenes: int, seed: int) -> list[int]:
    """Photo indices for each scene: shuffled rounds through all photos, never the same photo twice in a row."""
    rng = np.random.default_rng([seed, 1 << 20])
    order: list[int] = []
    while len(order) < scenes:
        round_ = [int(i) for i in rng.permutation(photos)]
        if order and photos > 1 and round_[0] == order[-1]:
            round_[0], round_[1] = round_[1], round_[0]
        order.extend(round_)
    return order[:scenes]


def _plan(photo: AnnotatedPhoto, rng: np.random.Generator, t0: float, duration: float, out_height: int,
          aspect: float, face_px: tuple[float, float], pan_speed: float) -> _Shot:
    ph, pw = photo.image.shape[:2]
    heights = [b[3] - b[1] for b in photo.boxes]
    # Zoom so the typical face is face_px tall in the output, but not so far out that the window leaves the photo
    # (black bars) nor so far in that the largest face fills more than ~45% of the frame (that one wins).
    fits = min(float(ph), pw / aspect)
    wh = out_height * float(np.median(heights)) / rng.uniform(*face_px)
    wh = max(min(wh, fits), min(2.2 * max(heights), float(ph)))
    zoom = rng.uniform(0.9, 1.1, size=2)
    wh0, wh1 = (max(min(wh * z, fits), min(2.2 * max(heights), float(ph))) for z in zoom)
    ww = max(wh0, wh1) * aspect

    def span(window: float, extent: float) -> tuple[float, float]:
        # Centres that keep the window on the photo (a 5% overshoot allowed); centred when it cannot fit.
        lo, hi = window / 2 - 0.05 * window, extent - window / 2 + 0.05 * window
        return (lo, hi) if lo < hi else (extent / 2, extent / 2)

    # Sweep across the photo from one side toward the other, so faces enter and leave through the frame edges;
    # at most pan_speed window widths per second, as a hand-held or PTZ camera would.
    lo, hi = span(ww, pw)
    travel = min(hi - lo, pan_speed * ww * duration) * rng.uniform(0.8, 1.0)
    x_start = lo + rng.uniform(0.0, 0.2) * (hi - lo - travel) if hi - lo > travel else lo
    x_end = x_start + travel
    if rng.random() < 0.5:
        x_start, x_end = lo + hi - x_start, lo + hi - x_end
    # Vertically the camera stays near the faces' row, drifting a little, as a camera framing people would.
    ylo, yhi = span(max(wh0, wh1), ph)
    row = float(np.median([(b[1] + b[3]) / 2 for b in photo.boxes]))
    y_start, y_end = (min(max(y, ylo), yhi) for y in row + rng.normal(0.0, 0.12 * wh, size=2))
    return _Shot(photo, t0, duration, (x_start, y_start, wh0), (x_end, y_end, wh1))


def virtual_camera(photos: Sequence[AnnotatedPhoto] | None = None, *, seconds: float, fps: float = 30.0,
                   size: Size = WEBCAM, size_at: Callable[[float], Size] | None = None, cut_every_s: float = 4.0,
                   seed: int = 0, face_px: tuple[float, float] = (55.0, 110.0), pan_speed: float = 0.35,
                   name: str = "virtual_camera") -> TruthClip:
    """A camera panning and zooming smoothly over ``photos`` (default: all annotated photos), hard-cutting to a
    different photo every ``cut_every_s`` seconds.

    Each scene sweeps across its photo (at most ``pan_speed`` window widths per second) while zooming by up to
    +-10%, so faces enter and leave through the frame edges. The zoom puts the typical face at ``face_px``
    (output pixels tall, at the first frame's height; dlib boxes are eyebrow-to-chin, a detector's box is ~1.3x
    taller); the photos are ~500x375, so the window never gets taller than the photo and large faces end up at
    ~140 px at 480 lines. Where the window leaves the photo (a wider aspect, the 5% overshoot) it shows black.

    ``size_at(t)`` (width, height, both even) overrides ``size``: the same camera path rendered at whatever size
    the stream has at t. ``seed`` picks the photo order and the paths; the same arguments give the same clip.
    Small unannotated background faces in the photos are not in the truth.
    """
    chosen = tuple(photos) if photos is not None else annotated_photos()
    return VirtualCamera(chosen, seconds=seconds, fps=fps, size_at=size_at or (lambda _t: size),
                         cut_every_s=cut_every_s, seed=seed, face_px=face_px, pan_speed=pan_speed, name=name)


def switching_sizes(seconds: float, *, sizes: tuple[Size, Size] = (WEBCAM, HD), every_s: float = 2.0,
                    seed: int = 0) -> TruthClip:
    """640x480 and 1280x720 alternating every 2 s (a browser switching its WebRTC resolution); cuts every 3 s,
    so size switches and cuts fall apart as well as together."""

    def size_at(t: float) -> Size:
        return sizes[int(t / every_s + 1e-9) % 2]

    return virtual_camera(seconds=seconds, size_at=size_at, cut_every_s=3.0, seed=seed, name="switching_sizes")


def hard_cuts(seconds: float, *, size: Size = WEBCAM, seed: int = 0) -> TruthClip:
    """A hard cut to different people every second."""
    return virtual_camera(seconds=seconds, size=size, cut_every_s=1.0, seed=seed, name="hard_cuts")


def entering_faces(seconds: float, *, size: Size = WEBCAM, seed: int = 0) -> TruthClip:
    """Close-ups (faces ~90-150 px) with fast sweeps: faces keep crossing the frame edges."""
    return virtual_camera(seconds=seconds, size=size, cut_every_s=3.0, seed=seed, face_px=(90.0, 150.0),
                          pan_speed=0.6, name="entering_faces")


# ---------------------------------------------------------------------------------------------------- otb_girl

OTB_FPS = 30.0
# Frames with no face to judge: where the girl shows the back of her head (90-110, 175-245), and 8 frames either
# side, where she turns through profile. There the annotation (a head box) holds more hair than face, wherever
# the face is in it, so a mask on the face leaves the box's hair showing and the pixel judge cannot tell (measured:
# frame 251, face hidden, box 0.62 by its hair). The profiles are hidden all the same; they are just not judged.
OTB_TURNED_AWAY = (range(82, 119), range(167, 254))
# A man's face, not annotated, enters at the left edge around frame 409.
OTB_END = 408
OTB_REFERENCE_FRAME = 400  # frontal, well lit: the identity judge's picture of her
# The annotation is a head box (hair included); the face box (x1, y1, x2, y2 as shares of the head box) is where
# dlib's frontal face detector puts her face inside it (median over the frontal frames: 0.16, 0.29, 1.04, 0.97),
# kept inside the head box: the same eyebrow-to-chin kind of box as the photos', which dlib's landmarks need.
OTB_FACE_IN_HEAD = (0.1, 0.3, 1.0, 1.0)


class OtbGirl(TruthClip):
    """See ``otb_girl``."""

    def __init__(self, size: Size, testdata: Path | None) -> None:
        self.name, self.fps, self.size = "otb_girl", OTB_FPS, size
        folder = testdata_dir(testdata) / "sequences" / "otb_girl"
        self._video = folder / "girl_30fps.mp4"
        annotations = json.loads((folder / "annotations.json").read_text())
        self._source = (int(annotations["width"]), int(annotations["height"]))
        # OTB boxes are 1-based (MATLAB); this is their 0-based position.
        self._boxes = {int(f["frame_index"]): tuple(float(v) for v in f["boxes"][0]) for f in annotations["frames"]}

    def __len__(self) -> int:
        return OTB_END

    def _box(self, index: int) -> Box:
        x, y, w, h = self._boxes[index]
        fx1, fy1, fx2, fy2 = OTB_FACE_IN_HEAD
        sx, sy = self.size[0] / self._source[0], self.size[1] / self._source[1]
        return (x - 1 + fx1 * w) * sx, (y - 1 + fy1 * h) * sy, (x - 1 + fx2 * w) * sx, (y - 1 + fy2 * h) * sy

    def _image(self, index: int) -> Image:
        small = _decoded(self._video)[index]
        return _frozen(cv2.resize(small, self.size, interpolation=cv2.INTER_LINEAR))

    def frame(self, index: int) -> TruthFrame:
        self._check(index)
        faces: tuple[Face, ...] = ()
        if not any(index in turned for turned in OTB_TURNED_AWAY):
            face = _placed(self.name, self._box(index), *self.size)
            faces = (face,) if face is not None else ()
        return TruthFrame(index, index / self.fps, self._image(index), faces, self.name)

    def reference(self, face_id: str) -> tuple[Image, Box]:
        if face_id != self.name:
            raise KeyError(f"otb_girl shows no face {face_id!r}")
        return self._image(OTB_REFERENCE_FRAME), self._box(OTB_REFERENCE_FRAME)


@functools.cache
def _decoded(video: Path) -> tuple[Image, ...]:
    import av  # only for this clip

    frames: list[Image] = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            frames.append(_frozen(frame.to_ndarray(format="bgr24")))
            if len(frames) == OTB_END:
                break
    return tuple(frames)  # ~15 MB at 128x96


def otb_girl(size: Size = WEBCAM, testdata: Path | None = None) -> TruthClip:
    """The OTB "Girl" sequence (128x96, 30 fps) upscaled to ``size``, one face: her head box as annotated.

    Frames 82..118 and 167..253 (she turns her back to the camera, and the profiles either side, see
    ``OTB_TURNED_AWAY``) have no faces to judge; the clip ends at frame 408,
    before a man's unannotated face enters. Her box is the face part of the annotated head box
    (``OTB_FACE_IN_HEAD``), like the photos' eyebrow-to-chin boxes.
    """
    if size[0] <= 0 or size[1] <= 0 or size[0] % 2 or size[1] % 2:
        raise ValueError(f"frame sizes must be positive and even, not {size[0]}x{size[1]}")
    return OtbGirl(size, testdata)
