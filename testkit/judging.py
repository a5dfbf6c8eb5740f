"""Ground truth for live runs (the benchmarks and the soak), and the judging of what came back (testkit.truth,
testkit.judges).

The picture is a ``testkit.truth.virtual_camera`` clip (a camera panning and zooming over the annotated photos,
with a hard cut to other people every few seconds), rendered ``band`` rows shorter than the frame that is sent. The
rows below it are the band where the frame number is painted (testkit.framecode.BAND), so no true face is ever
under the code, and the true boxes stay as they are.

After a run, the frames that came back are judged against the frames that were sent by three judges: pixels,
identity (dlib) and the product's own detector. dlib costs about 0.13 s a face, so ``judge_outputs`` fits it into a
time budget (see ``plan``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from .judges import (
    IDENTITY_MIN_HEIGHT,
    IDENTITY_MIN_VISIBLE,
    PIXEL_HIGHPASS,
    RISKY_CORRELATION,
    DetectorJudge,
    IdentityJudge,
    Judge,
    LeakReport,
    PixelJudge,
    eligible,
    judge,
    luma_correlation,
)
from .truth import Image, TruthClip, TruthFrame, annotated_photos, virtual_camera

CUT_EVERY_S = 3.0  # a hard cut to other people every 3 s
IDENTITY_S_PER_FACE = 0.13  # dlib, one core (testkit.judges.face_descriptor: 100-145 ms)
PROBE_EVERY = 4  # the budget is planned from every 4th frame kept


def truth_clip(width: int, picture_height: int, seconds: float, seed: int = 0,
               face_px: tuple[float, float] | None = None) -> TruthClip:
    """A virtual camera over the annotated photos at ``width`` x ``picture_height``, ``seconds`` long, a cut every
    CUT_EVERY_S. The same arguments give the same clip; a longer clip starts with the frames of a shorter one."""
    if picture_height < 32 or picture_height % 2 or width % 2:
        raise ValueError(f"the picture must be even-sized and at least 32 rows, not {width}x{picture_height}")
    extra: dict[str, Any] = {} if face_px is None else {"face_px": face_px}
    return virtual_camera(annotated_photos(), seconds=seconds, size=(width, picture_height),
                          cut_every_s=CUT_EVERY_S, seed=seed, **extra)


def with_band(frame: TruthFrame, band: int) -> TruthFrame:
    """``frame`` above ``band`` black rows: the frame as sent before its code is painted; the boxes stay."""
    image = np.zeros((frame.image.shape[0] + band, frame.image.shape[1], 3), np.uint8)
    image[:frame.image.shape[0]] = frame.image
    image.flags.writeable = False
    return replace(frame, image=image)


def to_i420(bgr: Image) -> Image:
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), np.uint8)


def to_bgr(i420: Image) -> Image:
    return np.asarray(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420), np.uint8)


def load_judge_detector(device: str) -> Any:
    """The product's detector as ``python -m streamer serve`` loads it (precision auto: int8 on the CPU)."""
    from models import DetectorConfig, load_detector

    return load_detector(device if device in ("cpu", "cuda") else "auto",  # type: ignore[arg-type]
                         None, DetectorConfig(spin_wait=False), precision="auto")


def make_judges(clip: TruthClip, detector: Any) -> list[Judge]:
    return [PixelJudge(), IdentityJudge(clip.reference), DetectorJudge(detector)]


def plan(truth_of: Callable[[int], TruthFrame], outputs: Sequence[tuple[int, Image]],
         budget_s: float) -> tuple[int, int]:
    """(frame stride, identity_every) that keep dlib within about ``budget_s``.

    ``judge`` sends dlib every ``identity_every``-th face plus every risky one (detail correlation ≥
    RISKY_CORRELATION, or flagged by another judge). Where few faces are risky (an anonymizer that works), every
    frame is judged (stride 1) and identity_every grows with the faces. Where most are (the echo, which hides
    nothing), only every ``stride``-th frame is judged, by every judge."""
    probe = outputs[::PROBE_EVERY]
    faces = risky = 0
    for number, i420 in probe:
        output = to_bgr(i420)
        truth = truth_of(number).resized((output.shape[1], output.shape[0]))
        for face in truth.faces:
            if eligible(face) and face.height >= IDENTITY_MIN_HEIGHT and face.visible >= IDENTITY_MIN_VISIBLE:
                faces += 1
                if luma_correlation(truth.image, output, face.box, highpass=PIXEL_HIGHPASS) >= RISKY_CORRELATION:
                    risky += 1
    scale = len(outputs) / max(1, len(probe))
    budget = max(1.0, budget_s / IDENTITY_S_PER_FACE)  # faces dlib may see
    stride = max(1, math.ceil(risky * scale / (0.75 * budget)))
    rest = (faces - risky) * scale / stride
    room = max(budget - risky * scale / stride, 0.25 * budget)
    return stride, max(1, math.ceil(rest / room))


AWAY_FROM_FACES = 1.8  # masks are face boxes padded 1.3x, more while held: compare pictures outside 1.8x
THUMB = (64, 48)


def _away_from_faces(frame: TruthFrame, band: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """A small grey picture of ``frame`` above its band, and where no face (nor a mask over it) can be."""
    picture = frame.image[:frame.image.shape[0] - band]
    thumb = np.asarray(cv2.resize(cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_BGR2GRAY), THUMB,
                                  interpolation=cv2.INTER_AREA), np.float64)
    away = np.ones((THUMB[1], THUMB[0]), bool)
    sx, sy = THUMB[0] / picture.shape[1], THUMB[1] / picture.shape[0]
    for face in frame.faces:
        x1, y1, x2, y2 = face.box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = (x2 - x1) * AWAY_FROM_FACES / 2, (y2 - y1) * AWAY_FROM_FACES / 2
        away[max(0, int((cy - hh) * sy)):math.ceil((cy + hh) * sy),
             max(0, int((cx - hw) * sx)):math.ceil((cx + hw) * sx)] = False
    return thumb, away


def _likeness(gray: npt.NDArray[np.float64], thumb: npt.NDArray[np.float64], away: npt.NDArray[np.bool_]) -> float:
    if away.mean() <= 0.1:
        return -1.0
    a, b = thumb[away] - thumb[away].mean(), gray[away] - gray[away].mean()
    norm = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / norm if norm > 1e-9 else -1.0


def place_codeless(truth_of: Callable[[int], TruthFrame], readable: Sequence[tuple[float, int]],
                   codeless: Sequence[tuple[float, Image]], band: int) -> list[tuple[int, Image]]:
    """A frame number for each frame that came back without a readable code (a mask over the code), so that
    it is judged too: among the frames sent between its readable neighbours (by arrival), the one it looks most
    like away from the faces. ``readable``: (arrival, number); ``codeless``: (arrival, yuv420p frame)."""
    order = sorted(readable)
    placed = []
    for at, i420 in codeless:
        before = [n for t, n in order if t <= at]
        after = [n for t, n in order if t > at]
        lo = before[-1] if before else (after[0] - 8 if after else 0)
        hi = after[0] if after else lo + 8
        candidates = range(max(0, min(lo, hi)), max(lo, hi) + 1)
        output = to_bgr(i420)
        gray = np.asarray(cv2.resize(cv2.cvtColor(output[:output.shape[0] - band], cv2.COLOR_BGR2GRAY), THUMB,
                                     interpolation=cv2.INTER_AREA), np.float64)

        scores = {n: _likeness(gray, *_away_from_faces(truth_of(n), band)) for n in candidates}
        placed.append((max(scores, key=lambda n: scores[n]), i420))
    return placed


@dataclass
class Judged:
    report: LeakReport
    kept: int  # frames kept for judging
    stride: int  # every stride-th of them judged
    identity_every: int
    seconds: float

    def result(self) -> dict[str, Any]:
        """JSON-able: ``leak_report`` (LeakReport.summary) and ``face_frames_leaked`` per judge and in total."""
        return {"judged": True, "kept_frames": self.kept, "frame_stride": self.stride,
                "identity_every": self.identity_every, "judge_s": round(self.seconds, 1),
                "leak_report": self.report.summary(), "face_frames_leaked": leaked_counts(self.report)}


def leaked_counts(report: LeakReport) -> dict[str, int]:
    counts = {name: tally.leaked for name, tally in report.judges.items()}
    counts["total"] = report.leaked()
    return counts


def judge_outputs(truth_of: Callable[[int], TruthFrame], outputs: Sequence[tuple[int, Image]],
                  judges: Sequence[Judge], budget_s: float, label: str = "") -> Judged:
    """Judge each (frame number, returned yuv420p frame) against ``truth_of(number)`` with ``judges``."""
    started = time.perf_counter()
    stride, every = plan(truth_of, outputs, budget_s)
    chosen = outputs[::stride]
    pairs = ((truth_of(number), to_bgr(i420)) for number, i420 in chosen)
    report = judge(pairs, judges, identity_every=every)
    judged = Judged(report, len(outputs), stride, every, time.perf_counter() - started)
    print(f"[judges] {label}: {len(chosen)} of {len(outputs)} frames, identity every {every}: "
          f"{leaked_counts(report)} in {judged.seconds:.0f} s", file=sys.stderr, flush=True)
    return judged
