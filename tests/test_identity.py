"""Keeping chosen faces visible (allow-list) and hiding only chosen faces (deny-list), on real faces with the real
recognition model in its worker process: enrolled faces are kept, strangers never are, and every way the rule can
be unsure (a face not recognised yet, a track that jumped, a face the detector missed, a recognition that cannot
run, a person removed) hides the face. Judged by the audit trail's decisions and by the pixels."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import read_bgr, require_testdata, video_frames
from test_cli import streamer
from test_processor import MissingFrames

from models.centerface import CenterFaceDetector
from streamer.identity.embedding import Embedder, unavailable_reason
from streamer.identity.enroll import largest_face
from streamer.identity.gallery import MATCH_DISTANCE, Gallery
from streamer.identity.policy import IdentityPolicy
from streamer.processor import FrameProcessor
from testkit.allowlist import STRANGER_PHOTOS, SUBJECTS, measure

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

Frame = npt.NDArray[np.uint8]
KATIE = "videos/sadtalker_WDA_KatieHill_000.mp4"
CROWD = "videos/face_recognition_short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    worker = Embedder()
    yield worker
    worker.stop()
    worker.stop()  # safe twice


@pytest.fixture(scope="module")
def katie_frames() -> list[Frame]:
    return video_frames(KATIE, 80)


@pytest.fixture(scope="module")
def gallery(detector: CenterFaceDetector, embedder: Embedder, katie_frames: list[Frame]) -> Gallery:
    enrolled = Gallery()
    for frame in katie_frames[:21:10]:
        enrolled.add("katie", embedder.embed(frame, largest_face(detector, frame)))
    return enrolled


def face_unchanged(before: Frame, after: Frame, box: npt.NDArray[np.float32]) -> bool:
    x1, y1, x2, y2 = (int(v) for v in box)
    return bool(np.array_equal(before[y1:y2, x1:x2], after[y1:y2, x1:x2]))


def run(processor: FrameProcessor, frames: list[Frame], start: int = 0) -> list[tuple[Frame, Frame, dict[str, Any]]]:
    """Each frame through the processor: (original, output, audit record)."""
    lines: list[bytes] = []
    processor.audit = lines.append
    out = []
    for i, frame in enumerate(frames):
        original = frame.copy()
        image = frame.copy()
        processor.process(image, (start + i) / 25)
        out.append((original, image, json.loads(lines[-1])))
    return out


def test_an_enrolled_face_is_kept_and_every_stranger_hidden(detector: CenterFaceDetector, embedder: Embedder,
                                                            gallery: Gallery, katie_frames: list[Frame]) -> None:
    processor = FrameProcessor(detector)
    processor.identity = IdentityPolicy(gallery, embedder, "keep", "test", wait=True)
    for original, image, record in run(processor, katie_frames[40:60], 40):
        faces = record["faces"]
        assert isinstance(faces, list) and len(faces) == 1 and faces[0].get("visible") is True, record
        assert face_unchanged(original, image, detector.detect(original).boxes[0])
    crowd = FrameProcessor(detector)
    crowd.identity = IdentityPolicy(gallery, embedder, "keep", "crowd", wait=True)
    results = run(crowd, video_frames(CROWD, 30))
    assert sum(len(r["faces"]) for _, _, r in results) > 30
    for original, image, record in results:
        assert not any(f.get("visible") for f in record["faces"]), record
        for box in detector.detect(original).boxes:
            assert not face_unchanged(original, image, box)


def test_hide_only_hides_the_enrolled_face_and_shows_recognised_strangers(
        detector: CenterFaceDetector, embedder: Embedder, gallery: Gallery, katie_frames: list[Frame]) -> None:
    processor = FrameProcessor(detector)
    processor.identity = IdentityPolicy(gallery, embedder, "hide-only", "test", wait=True)
    for original, image, record in run(processor, katie_frames[40:50], 40):
        assert not any(f.get("visible") for f in record["faces"]), record
        assert not face_unchanged(original, image, detector.detect(original).boxes[0])
    crowd = FrameProcessor(detector)
    crowd.identity = IdentityPolicy(gallery, embedder, "hide-only", "crowd", wait=True)
    shown = sum(bool(f.get("visible")) for _, _, r in run(crowd, video_frames(CROWD, 10))
                for f in r["faces"])
    assert shown > 5


def test_live_a_face_stays_hidden_until_its_recognition_arrives(detector: CenterFaceDetector, embedder: Embedder,
                                                               gallery: Gallery, katie_frames: list[Frame]) -> None:
    processor = FrameProcessor(detector)
    policy = IdentityPolicy(gallery, embedder, "keep", "live")  # live: never waits
    processor.identity = policy
    lines: list[bytes] = []
    processor.audit = lines.append
    first = katie_frames[40].copy()
    processor.process(first, 0.0)
    assert json.loads(lines[-1])["faces"][0].get("visible") is None  # not recognised yet: hidden
    t = 0.0
    while policy.recognitions == 0:  # the worker answers; frames keep coming meanwhile, each hidden until then
        t += 0.04
        assert t < 30, "no recognition within 750 frames"
        processor.process(katie_frames[40 + int(t * 25) % 40].copy(), t)
        if policy.recognitions == 0:
            assert json.loads(lines[-1])["faces"][0].get("visible") is None
    t += 0.04
    processor.process(katie_frames[41].copy(), t)
    assert json.loads(lines[-1])["faces"][0].get("visible") is True


def test_every_doubt_hides_the_enrolled_face(detector: CenterFaceDetector, embedder: Embedder, gallery: Gallery,
                                            katie_frames: list[Frame]) -> None:
    processor = FrameProcessor(MissingFrames(detector, blind={2}))
    policy = IdentityPolicy(gallery, embedder, "keep", "doubts", wait=True)
    processor.identity = policy
    frames = [katie_frames[40], katie_frames[41], katie_frames[42], katie_frames[43]]
    # A jump: the same face moved by most of its width is not trusted to be the same track.
    box = detector.detect(katie_frames[44]).boxes[0]
    frames.append(np.ascontiguousarray(np.roll(katie_frames[44], int((box[2] - box[0]) * 0.8), axis=1)))
    records = [r for _, _, r in run(processor, frames, 40)]
    assert [bool(r["faces"] and r["faces"][0].get("visible")) for r in records] == [True, True, False, True, True]
    assert records[2]["faces"] == [] and records[2]["held"], "the missed face was not held (hidden)"
    assert policy.recognitions >= 3  # the jumped face was recognised again before it was shown

    gallery_copy = Gallery()
    gallery_copy.add("katie", embedder.embed(katie_frames[0], largest_face(detector, katie_frames[0])))
    again = FrameProcessor(detector)
    again.identity = IdentityPolicy(gallery_copy, embedder, "keep", "removed", wait=True)
    assert run(again, [katie_frames[45]], 45)[0][2]["faces"][0].get("visible") is True
    gallery_copy.remove("katie")  # removed: hidden from the next frame on, without waiting for a recheck
    assert run(again, [katie_frames[46]], 46)[0][2]["faces"][0].get("visible") is None


def test_a_face_that_takes_over_a_kept_track_after_a_miss_is_hidden(
        detector: CenterFaceDetector, embedder: Embedder, gallery: Gallery, katie_frames: list[Frame]) -> None:
    """Someone steps into the enrolled person's place while the detector misses a frame: the track continues with
    a high overlap, but the new face is another person's and must not inherit "keep"."""
    import cv2

    processor = FrameProcessor(MissingFrames(detector, blind=set(range(1000, 1001))))
    policy = IdentityPolicy(gallery, embedder, "keep", "handover")  # live: never waits
    processor.identity = policy
    lines: list[bytes] = []
    processor.audit = lines.append
    t = 0.0
    while not (lines and json.loads(lines[-1])["faces"] and json.loads(lines[-1])["faces"][0].get("visible")):
        assert t < 30, "the enrolled face was never kept"
        processor.process(katie_frames[40 + int(t * 25) % 20].copy(), t)
        t += 0.04
    blinking = processor.detector
    assert isinstance(blinking, MissingFrames)
    blinking.blind = {blinking.calls}  # the next frame: the detector misses the face
    processor.process(katie_frames[60].copy(), t)
    assert json.loads(lines[-1])["held"]
    stranger_frame = read_bgr(require_testdata("images", "skimage_astronaut.png"))
    sx1, sy1, sx2, sy2 = (int(v) for v in largest_face(detector, stranger_frame))
    swapped = katie_frames[61].copy()
    kx1, ky1, kx2, ky2 = (int(v) for v in detector.detect(swapped).boxes[0])
    swapped[ky1:ky2, kx1:kx2] = cv2.resize(stranger_frame[sy1:sy2, sx1:sx2], (kx2 - kx1, ky2 - ky1))
    for step in range(10):  # whatever the recognition says meanwhile, the stranger is never shown
        processor.process(swapped.copy(), t + 0.04 * (step + 1))
        faces = json.loads(lines[-1])["faces"]
        assert faces and not faces[0].get("visible"), f"the stranger was shown {step + 1} frame(s) after the miss"


def test_a_recognition_that_cannot_run_hides_the_face(detector: CenterFaceDetector, gallery: Gallery,
                                                      katie_frames: list[Frame]) -> None:
    stopped = Embedder()
    stopped.stop()
    processor = FrameProcessor(detector)
    policy = IdentityPolicy(gallery, stopped, "keep", "stopped", wait=True)
    processor.identity = policy
    original, image, record = run(processor, [katie_frames[50]], 50)[0]
    assert record["faces"][0].get("visible") is None and policy.failures == 1
    assert not face_unchanged(original, image, detector.detect(original).boxes[0])


def test_no_stranger_of_the_test_photos_comes_near_the_default_distance(detector: CenterFaceDetector,
                                                                       embedder: Embedder) -> None:
    testdata = require_testdata("images", STRANGER_PHOTOS[0]).parents[1]
    measured = measure(testdata, detector, embedder, subjects=SUBJECTS[:1], clips=())
    katie = measured.galleries["katie"]
    distances = [katie.match(e).distance for e in measured.strangers.embeddings]
    assert len(distances) > 60
    assert min(distances) > MATCH_DISTANCE + 0.05, f"a stranger at {min(distances):.3f}"
    own = [katie.match(e).distance for e in measured.subjects["katie"].embeddings]
    assert np.mean(np.asarray(own) <= MATCH_DISTANCE) >= 0.9


def test_enroll_writes_a_private_gallery_of_embeddings_and_file_keeps_that_face(tmp_path: Path,
                                                                                 katie_frames: list[Frame]) -> None:
    import cv2

    photos = []
    for i in (0, 10, 20):
        photos.append(tmp_path / f"katie{i}.png")
        cv2.imwrite(str(photos[-1]), katie_frames[i])
    gallery = tmp_path / "staff.json"
    done = streamer("enroll", gallery, "Katie Hill", *photos, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(gallery).st_mode) == 0o600
    data = json.loads(gallery.read_text())
    assert list(data["people"]) == ["Katie Hill"] and len(data["people"]["Katie Hill"]) == 3
    assert all(len(e) == 128 for e in data["people"]["Katie Hill"])  # numbers only, no picture
    wall = tmp_path / "wall.png"  # a picture without a face
    cv2.imwrite(str(wall), np.full((240, 320, 3), 180, np.uint8))
    no_face = streamer("enroll", gallery, "nobody", wall, "--device", "cpu")
    assert no_face.returncode == 1 and "wall.png: no face found" in no_face.stderr
    assert list(json.loads(gallery.read_text())["people"]) == ["Katie Hill"]

    photo = require_testdata("images", "2008_002470.jpg")  # strangers only
    out = tmp_path / "strangers.png"
    streamer("file", photo, out, "--keep-faces", gallery, "--audit", "--device", "cpu", check=True)
    record = json.loads((tmp_path / "strangers.png.audit.jsonl").read_text())
    assert len(record["faces"]) >= 6 and not any(f.get("visible") for f in record["faces"])
    kept = tmp_path / "katie.png"
    source = tmp_path / "katie-source.png"
    cv2.imwrite(str(source), katie_frames[60])
    streamer("file", source, kept, "--keep-faces", gallery, "--device", "cpu", check=True)
    assert np.array_equal(read_bgr(kept), katie_frames[60])  # her face, and everything else, untouched
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    refused = streamer("file", photo, tmp_path / "x.png", "--keep-faces", bad, "--device", "cpu")
    assert refused.returncode == 2 and "not a gallery file" in refused.stderr
