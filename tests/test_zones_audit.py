"""Privacy zones and the audit trail in the one place every stream goes through (FrameProcessor): zones are solid
on every path out (faces found, held, widened, hidden whole, a frame of a new size), and the audit line of each
frame says what was done to it, checked against ground truth on real photos and frames."""

from __future__ import annotations

import itertools
import json

import numpy as np
import numpy.typing as npt
import pytest
from conftest import read_bgr, require_testdata, video_frames
from test_processor import MissingFrames

from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector
from models.evaluate import load_truth
from streamer.audit import AuditRing, read_lines
from streamer.processor import FrameProcessor
from streamer.settings import SOLID_BGR, LiveSettings
from streamer.zones import MAX_POINTS, MAX_ZONES, hide_zones, parse_zones

Frame = npt.NDArray[np.uint8]
SOLID = np.asarray(SOLID_BGR, np.uint8)
LEFT_QUARTER = [[[0, 0], [0.25, 0], [0.25, 1], [0, 1]]]
TRIANGLE = [[[0.5, 0.1], [0.9, 0.9], [0.1, 0.9]]]


def in_polygon(width: int, height: int, polygon: list[list[float]]) -> npt.NDArray[np.bool_]:
    """Pixels whose centre lies strictly inside ``polygon`` (frame fractions), by ray casting: an independent
    judge of what a zone must cover."""
    ys, xs = np.mgrid[0:height, 0:width]
    px, py = (xs + 0.5) / width, (ys + 0.5) / height
    inside = np.zeros((height, width), bool)
    points = polygon + polygon[:1]
    for (x1, y1), (x2, y2) in itertools.pairwise(points):
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (x2 - x1) * (py - y1) / (y2 - y1) + x1
        inside ^= crosses & (px < at)
    return inside


# --------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("value", [None, [], "[]", LEFT_QUARTER, json.dumps(TRIANGLE),
                                   [[[0, 0], [1, 0], [1, 1]]] * MAX_ZONES,
                                   [[[i / 100, 0] for i in range(63)] + [[0, 1]]]])
def test_valid_zones_parse(value: object) -> None:
    zones = parse_zones(value)
    assert all(len(polygon) >= 3 for polygon in zones)


@pytest.mark.parametrize(("value", "reason"), [
    ({"x": 1}, "list of polygons"),
    ("not json", "must be JSON"),
    ([[[0, 0], [1, 1]]], "3 to"),
    ([[[0, 0], [1, 0], [1, 1.5]]], r"within 0\.\.1"),
    ([[[0, 0], [1, 0], [float("nan"), 1]]], r"within 0\.\.1"),
    ([[[0, 0], [1, 0], [True, 1]]], "two numbers"),
    ([[[0, 0], [1, 0], ["0.5", 1]]], "two numbers"),
    ([[[0, 0], [1, 0], [0.5, 1, 2]]], "two numbers"),
    ([[[0, 0], [1, 0], [1, 1]]] * (MAX_ZONES + 1), f"at most {MAX_ZONES}"),
    ([[[0, 0]] * (MAX_POINTS + 1)], f"3 to {MAX_POINTS}"),
    ([[[0, 0], [1, 1], [1, 0], [0, 1]]], "crosses itself"),  # a bow tie
    ([[[0.5, 0], [0.6, 1], [0, 0.4], [1, 0.4], [0.4, 1]]], "crosses itself"),  # a star
    ([[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0], [1, 0], [1, 1], [0, 1]]], "crosses itself"),  # traced twice
    ("[" * 5000, "must be JSON"),
])
def test_bad_zones_are_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_zones(value)


def test_live_settings_take_zones_and_refuse_bad_ones_whole() -> None:
    settings = LiveSettings().updated({"zones": TRIANGLE, "mode": "blur"})
    assert settings.as_dict()["zones"] == TRIANGLE and settings.anonymize.mode == "blur"
    assert settings.updated({"mode": "solid"}).zones == settings.zones  # kept when not sent
    assert settings.updated({"zones": []}).zones == ()
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        settings.updated({"zones": [[[0, 0], [2, 0], [1, 1]]], "mode": "mosaic"})


# ------------------------------------------------------------------------------------------------ the pixels


def test_overlapping_and_repeated_zones_cover_their_overlap() -> None:
    frame = np.full((100, 100, 3), 255, np.uint8)
    square = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]]
    shifted = [[0.4, 0.4], [0.8, 0.4], [0.8, 0.8], [0.4, 0.8]]
    hide_zones(frame, parse_zones([square, shifted, square]), SOLID_BGR)
    union = in_polygon(100, 100, square) | in_polygon(100, 100, shifted)
    assert (frame[union] == SOLID).all()


@pytest.mark.parametrize("size", [(640, 480), (320, 240), (97, 61), (1, 1)])
@pytest.mark.parametrize("polygon", [LEFT_QUARTER[0], TRIANGLE[0], [[0, 0], [1, 0], [1, 1], [0, 1]]])
def test_a_zone_covers_every_pixel_inside_it_and_nothing_far_outside(size: tuple[int, int],
                                                                      polygon: list[list[float]]) -> None:
    width, height = size
    rng = np.random.default_rng(7)
    frame = rng.integers(100, 255, (height, width, 3), dtype=np.uint8)
    before = frame.copy()
    hide_zones(frame, parse_zones([polygon]), SOLID_BGR)
    inside = in_polygon(width, height, polygon)
    assert (frame[inside] == SOLID).all()
    if min(size) < 8:
        return  # a zone's edge rounds to a whole pixel, which is all of a tiny frame
    # Only the boundary's own pixels may go either way: a pixel more than one away from the zone is untouched.
    grown = inside.copy()
    grown[1:] |= inside[:-1]
    grown[:-1] |= inside[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    assert (frame[~grown] == before[~grown]).all()


@pytest.mark.parametrize("fail_policy", ["hide-frame", "widen-held"])
def test_zones_are_solid_and_the_trail_says_what_happened_on_every_path(detector: CenterFaceDetector,
                                                                          fail_policy: str) -> None:
    frames = video_frames("videos/face_recognition_short_hamilton_clip.mp4", 12)
    # Frame 3: a miss (held faces); 5: a crash (hidden whole or widened); 8 on: another size (tracks rescaled).
    frames[8:] = [np.ascontiguousarray(f[::2, ::2]) for f in frames[8:]]
    processor = FrameProcessor(MissingFrames(detector, blind={3}, broken={5}),
                               fail_policy=fail_policy)  # type: ignore[arg-type]
    processor.zones = parse_zones(TRIANGLE)
    lines: list[bytes] = []
    processor.audit = lines.append
    for i, frame in enumerate(frames):
        original = frame.copy()
        outcome = processor.process(frame, i / 30)
        height, width = frame.shape[:2]
        assert (frame[in_polygon(width, height, TRIANGLE[0])] == SOLID).all(), f"zone visible in frame {i}"
        record = json.loads(lines[-1])
        assert (record["frame"], record["width"], record["height"], record["zones"]) == (i, width, height, 1)
        assert record["t"] == pytest.approx(i / 30, abs=1e-3)
        faces = detector.detect(original)
        if i == 5:
            widened = fail_policy == "widen-held"
            assert record["hidden_whole"] is not widened and outcome.failed_closed
            assert record["faces"] == [] and bool(record["predicted"]) is widened
        elif i == 3:
            assert record["faces"] == [] and len(record["held"]) >= len(faces) >= 1
        else:
            assert not record["hidden_whole"] and record["predicted"] == []
            found = np.asarray([f["box"] for f in record["faces"]], np.float32).reshape(-1, 4)
            assert len(found) == len(faces) >= 1
            assert (iou_matrix(faces.boxes, found).max(axis=1) > 0.95).all()
            assert all(0 < f["score"] <= 1 for f in record["faces"])
    assert len(lines) == len(frames)


def test_trail_of_a_photo_covers_its_annotated_faces(detector: CenterFaceDetector) -> None:
    src = require_testdata("images", "2008_002470.jpg")
    lines: list[bytes] = []
    processor = FrameProcessor(detector)
    processor.audit = lines.append
    processor.process(read_bgr(src), 0.0)
    (record,) = list(read_lines(b"".join(lines)))
    truth = load_truth(src.with_suffix(".json"))
    boxes = np.asarray([f["box"] for f in record["faces"]], np.float32)
    assert (iou_matrix(truth, boxes).max(axis=1) >= 0.3).all(), record


def test_a_trail_that_cannot_be_written_never_shows_a_face(detector: CenterFaceDetector) -> None:
    frame = video_frames("videos/face_recognition_short_hamilton_clip.mp4", 1)[0]
    original = frame.copy()

    def broken(line: bytes) -> None:
        raise OSError("disk full")

    processor = FrameProcessor(detector)
    processor.audit = broken
    outcome = processor.process(frame, 0.0)
    assert outcome.faces >= 1 and not outcome.failed_closed
    faces = detector.detect(original).boxes.astype(int)
    for x1, y1, x2, y2 in faces:
        assert np.abs(frame[y1:y2, x1:x2].astype(int) - original[y1:y2, x1:x2]).max(axis=2).mean() > 8


# ---------------------------------------------------------------------------------------------------- the ring


def test_the_ring_keeps_the_last_seconds_and_at_most_its_frames() -> None:
    ring = AuditRing(seconds=60, max_frames=5)
    for i in range(8):
        ring(b'{"frame":%d}\n' % i)
    assert [json.loads(line)["frame"] for line in ring.since(60)] == [3, 4, 5, 6, 7]
    now = [1000.0]
    short = AuditRing(seconds=10, clock=lambda: now[0])
    short(b'{"frame":0}\n')
    now[0] += 6
    short(b'{"frame":1}\n')
    assert [json.loads(line)["frame"] for line in short.since(5)] == [1]
    assert [json.loads(line)["frame"] for line in short.since(60)] == [0, 1]  # at most the ring's own 10 s
    now[0] += 5
    short(b'{"frame":2}\n')
    assert [json.loads(line)["frame"] for line in short.since(60)] == [1, 2]
    with pytest.raises(ValueError):
        AuditRing(seconds=0)
    small = AuditRing(seconds=60, max_bytes=25)  # a crowd's long lines: the ring keeps fewer, not more memory
    for i in range(5):
        small(b'{"frame":%d,"pad":"xx"}\n' % i)
    assert [json.loads(line)["frame"] for line in small.since(60)] == [4]
