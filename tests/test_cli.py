"""The command line as a user runs it: `detect --json` and `file` on real photos and clips, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from conftest import REPO_ROOT, read_bgr, require_testdata

from models.boxes import from_xywh, iou_matrix
from models.centerface import CenterFaceDetector
from models.evaluate import load_truth


def streamer(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=240, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_detect_json_prints_one_object_per_image() -> None:
    images = [require_testdata("images", "2008_001009.jpg"), require_testdata("images", "2008_002470.jpg")]
    done = streamer("detect", *images, "--json", "--device", "cpu", check=True)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in images]
    for record, path in zip(records, images, strict=True):
        assert record["provider"] == "CPUExecutionProvider"
        assert (record["width"], record["height"]) == read_bgr(path).shape[1::-1]
        truth = load_truth(path.with_suffix(".json"))
        found = from_xywh([f["box"] for f in record["faces"]])
        assert (iou_matrix(truth, found).max(axis=1) >= 0.3).all()
        assert all(0 < f["score"] <= 1 for f in record["faces"])


def test_file_hides_every_face_in_a_photo_and_nothing_else(tmp_path: Path, detector: CenterFaceDetector) -> None:
    src = require_testdata("images", "2008_002470.jpg")
    dst = tmp_path / "hidden.png"  # lossless, so "unchanged" can be checked exactly
    streamer("file", src, dst, "--device", "cpu", check=True)
    before, after = read_bgr(src), read_bgr(dst)
    assert before.shape == after.shape
    truth = load_truth(src.with_suffix(".json"))
    for x1, y1, x2, y2 in truth.astype(int):
        region_changed = np.abs(before[y1:y2, x1:x2].astype(int) - after[y1:y2, x1:x2]).max(axis=2) > 8
        assert region_changed.mean() > 0.5
    # Outside the padded detections nothing moved.
    untouched = np.ones(before.shape[:2], np.bool_)
    for x1, y1, x2, y2 in detector.detect(before).boxes:
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 0.65 + 2, (y2 - y1) * 0.65 + 2
        untouched[max(0, int(cy - hh)):int(cy + hh) + 1, max(0, int(cx - hw)):int(cx + hw) + 1] = False
    assert untouched.mean() > 0.5
    assert (before[untouched] == after[untouched]).all()
    # The detector run again on the output finds no face where one was hidden.
    again = detector.detect(after)
    assert (iou_matrix(truth, again.boxes) < 0.3).all() if len(again) else True


def bgr(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)


def video_info(path: Path) -> tuple[int, float, float, int, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        return (frames, float(stream.average_rate or 0), duration, len(container.streams.audio),
                (stream.codec_context.width, stream.codec_context.height))


@pytest.mark.slow
def test_file_anonymizes_a_video_keeping_fps_and_timestamps(tmp_path: Path, detector: CenterFaceDetector) -> None:
    src = require_testdata("videos", "sadtalker_WDA_KatieHill_000.mp4")  # MPEG-4 Part 2 in, H.264 out
    dst = tmp_path / "out.mp4"
    done = streamer("file", src, dst, "--device", "cpu", check=True)
    assert "frames/s" in done.stderr
    frames, rate, duration, audio, size = video_info(dst)
    src_frames, src_rate, src_duration, src_audio, src_size = video_info(src)
    assert (frames, size) == (src_frames, src_size)
    assert rate == pytest.approx(src_rate, rel=0.01)
    assert duration == pytest.approx(src_duration, abs=0.1)
    assert src_audio == 1 and audio == 1  # the sound is kept by default (--drop-audio leaves it out)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        pairs = zip(a.decode(video=0), b.decode(video=0), strict=True)
        for i, (fa, fb) in enumerate(pairs):
            if i % 20:
                continue
            original, hidden = bgr(fa), bgr(fb)
            faces = detector.detect(original)
            assert len(faces) >= 1, f"the speaker is visible in frame {i}"
            again = detector.detect(hidden)
            assert len(again) == 0 or (iou_matrix(faces.boxes, again.boxes) < 0.3).all(), f"face in frame {i}"


@pytest.mark.slow
def test_keep_audio_copies_the_audio_track(tmp_path: Path) -> None:
    src = require_testdata("videos", "sadtalker_WDA_KatieHill_000.mp4")
    dst = tmp_path / "with-audio.mkv"
    streamer("file", src, dst, "--keep-audio", "--no-progress", "--device", "cpu", check=True)
    with av.open(str(dst)) as container:
        assert len(container.streams.audio) == 1
        assert container.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for _ in container.demux(audio=0)) > 100


def no_leftovers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("case", ["missing", "empty", "text-as-mp4", "truncated", "bad-output"])
def test_bad_input_fails_with_one_line_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "result.mp4"
    src = inputs / "clip.mp4"
    if case == "empty":
        src.write_bytes(b"")
    elif case == "text-as-mp4":
        src.write_text("this is a text file, not a video\n" * 100)
    elif case == "truncated":
        data = require_testdata("videos", "sadtalker_WDA_KatieHill_000.mp4").read_bytes()
        src.write_bytes(data[: len(data) // 3])
    elif case == "bad-output":
        src = require_testdata("videos", "sadtalker_WDA_KatieHill_000.mp4")
        dst = out_dir / "result.gif"
    done = streamer("file", src, dst, "--device", "cpu", "--no-progress")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert no_leftovers(out_dir) == []


def test_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    done = streamer("detect", require_testdata("images", "2008_001009.jpg"), "--model", tmp_path / "none.onnx")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: model file not found: {tmp_path / 'none.onnx'}"
