"""detect -> track -> anonymize on real video frames: the hold through missed frames, and failing closed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from conftest import video_frames

from models import FaceDetections
from models.centerface import CenterFaceDetector
from models.coverage import DetectSize
from streamer.processor import FrameProcessor
from streamer.settings import HoldSettings

Frame = npt.NDArray[np.uint8]
FPS = 30.0


class MissingFrames:
    """The real detector, except that it sees nothing on chosen frames (a turned head, motion blur) or
    raises on others (a crashed inference): failure injection around the real model."""

    def __init__(self, detector: CenterFaceDetector, blind: set[int] = frozenset(),  # type: ignore[assignment]
                 broken: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.inner, self.blind, self.broken = detector, blind, broken
        self.provider, self.config = detector.provider, detector.config
        self.calls = 0

    def detect(self, frame: Frame, threshold: float | None = None,
               detect_size: DetectSize | None = None) -> FaceDetections:
        index = self.calls
        self.calls += 1
        if index in self.broken:
            raise RuntimeError("inference failed (injected)")
        if index in self.blind:
            return FaceDetections.empty((frame.shape[1], frame.shape[0]))
        return self.inner.detect(frame, threshold, detect_size)


@pytest.fixture(scope="module")
def talking_head() -> list[Frame]:
    return video_frames("videos/liveportrait_driving_d3.mp4", 16)


def face_box(detector: CenterFaceDetector, frame: Frame) -> tuple[int, int, int, int]:
    faces = detector.detect(frame)
    assert len(faces) == 1, "the clip shows one face"
    x1, y1, x2, y2 = faces.boxes[0].round().astype(int).tolist()
    return x1, y1, x2, y2


def changed_fraction(a: Frame, b: Frame, box: tuple[int, int, int, int]) -> float:
    x1, y1, x2, y2 = box
    return float((np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).max(axis=2) > 8).mean())


def run(processor: FrameProcessor, frames: list[Frame]) -> list[Frame]:
    out = []
    for i, frame in enumerate(frames):
        copy = frame.copy()
        processor.process(copy, i / FPS)
        out.append(copy)
    return out


def test_face_missed_for_several_frames_stays_hidden(detector: CenterFaceDetector,
                                                     talking_head: list[Frame]) -> None:
    blind = set(range(4, 12))  # 8 frames = 0.27 s, inside the default 0.5 s hold
    processor = FrameProcessor(MissingFrames(detector, blind=blind))
    out = run(processor, talking_head)
    for i in range(len(talking_head)):
        box = face_box(detector, talking_head[i])
        assert changed_fraction(talking_head[i], out[i], box) > 0.5, f"face visible in frame {i}"
    assert processor.stats.frames_with_held_masks == len(blind)
    assert processor.stats.frames_hidden_whole == 0


def test_without_hold_the_missed_frames_would_leak(detector: CenterFaceDetector,
                                                   talking_head: list[Frame]) -> None:
    """The control for the test above: with the hold off, the same blind frames show the face."""
    processor = FrameProcessor(MissingFrames(detector, blind={4, 5}), hold=HoldSettings(hold_seconds=0.0))
    out = run(processor, talking_head[:6])
    assert changed_fraction(talking_head[4], out[4], face_box(detector, talking_head[4])) == 0.0


def test_hold_expires(detector: CenterFaceDetector, talking_head: list[Frame]) -> None:
    """A face gone for longer than the hold is no longer masked (the mask does not stick forever)."""
    processor = FrameProcessor(MissingFrames(detector, blind=set(range(1, 16))), hold=HoldSettings(hold_seconds=0.2))
    out = run(processor, talking_head)
    box = face_box(detector, talking_head[3])
    assert changed_fraction(talking_head[3], out[3], box) > 0.5  # 0.07 s after the last sighting
    assert changed_fraction(talking_head[15], out[15], box) == 0.0  # 0.47 s after


def test_detector_error_hides_the_whole_frame(detector: CenterFaceDetector, talking_head: list[Frame]) -> None:
    processor = FrameProcessor(MissingFrames(detector, broken={3}))
    out = run(processor, talking_head[:5])
    h, w = talking_head[3].shape[:2]
    assert changed_fraction(talking_head[3], out[3], (0, 0, w, h)) > 0.5
    assert changed_fraction(talking_head[2], out[2], (0, 0, w // 8, h // 8)) == 0.0  # normal frames keep background
    stats = processor.stats.snapshot()
    assert stats["detector_errors"] == 1 and stats["frames_hidden_whole"] == 1 and stats["frames"] == 5


def test_widen_held_policy_keeps_masks_and_counts_it(detector: CenterFaceDetector) -> None:
    frames = video_frames("videos/liveportrait_source_s18.mp4", 5)  # a 1280x720 shot, the face a sixth of it
    processor = FrameProcessor(MissingFrames(detector, broken={3}), fail_policy="widen-held")
    out = run(processor, frames)
    x1, y1, x2, y2 = face_box(detector, frames[3])
    assert changed_fraction(frames[3], out[3], (x1, y1, x2, y2)) > 0.9
    # Wider than the usual padded mask, but the rest of the picture stays.
    assert changed_fraction(frames[3], out[3], (x1 - 40, y1, x1 - 10, y2)) > 0.5
    assert changed_fraction(frames[3], out[3], (0, 0, 400, 720)) == 0.0
    assert processor.stats.frames_widened == 1 and processor.stats.frames_hidden_whole == 0


def test_no_result_with_nothing_held_hides_the_whole_frame(talking_head: list[Frame],
                                                            detector: CenterFaceDetector) -> None:
    """widen-held with no recent face has nothing to widen: the frame is hidden whole."""
    processor = FrameProcessor(detector, fail_policy="widen-held")
    frame = talking_head[0].copy()
    outcome = processor.apply(frame, 0.0, None)
    assert outcome.failed_closed
    assert changed_fraction(talking_head[0], frame, (0, 0, frame.shape[1], frame.shape[0])) > 0.5
    assert processor.stats.frames_hidden_whole == 1


def test_detections_of_a_frame_of_another_size_never_hide_this_one(detector: CenterFaceDetector,
                                                                   talking_head: list[Frame]) -> None:
    """A result made on a 1280x720 frame offered for the same picture at 640x360 (a browser switching resolution
    while a detection was in flight): its boxes are at the wrong place there, so it is refused, counted, and the
    frame is hidden whole."""
    processor = FrameProcessor(detector)
    big = talking_head[0]
    detections = detector.detect(big)
    assert len(detections) == 1 and detections.frame_size == (big.shape[1], big.shape[0])
    small = np.ascontiguousarray(big[::2, ::2])
    frame = small.copy()
    outcome = processor.apply(frame, 0.0, detections)
    h, w = frame.shape[:2]
    assert outcome.failed_closed
    assert changed_fraction(small, frame, (0, 0, w, h)) > 0.5
    assert processor.stats.detections_mismatched == 1 and processor.stats.frames_hidden_whole == 1


def test_a_face_missed_right_after_a_size_change_stays_hidden(detector: CenterFaceDetector,
                                                             talking_head: list[Frame]) -> None:
    """The detector misses the face in the first frames at a new size: the held mask, scaled to the new size,
    still covers it (not left at the old frame's pixel coordinates)."""
    frames = [f if i < 8 else np.ascontiguousarray(f[::2, ::2]) for i, f in enumerate(talking_head)]
    processor = FrameProcessor(MissingFrames(detector, blind={8, 9, 10}))
    out = run(processor, frames)
    for i in (8, 9, 10):
        box = face_box(detector, frames[i])
        assert changed_fraction(frames[i], out[i], box) > 0.5, f"frame {i}: the face is visible"
    assert processor.stats.frames_with_held_masks == 3 and processor.stats.frames_hidden_whole == 0
