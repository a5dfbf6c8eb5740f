"""`python -m streamer file` as a user runs it on many files and with the #17 options: a folder in, a folder out,
skipping what is done, the exit status counting failures; privacy zones burned in; the audit sidecar and
--boxes-only; the sound kept by default (copied, or re-encoded where the container needs it) or dropped."""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import read_bgr, require_testdata
from test_cli import streamer

from models.boxes import iou_matrix
from models.evaluate import load_truth
from streamer.settings import SOLID_BGR

CLIP = ("videos", "face_recognition_short_hamilton_clip.mp4")  # 640x360, AAC audio, several faces
TOP_LEFT = [[[0, 0], [0.3, 0], [0.3, 0.4], [0, 0.4]]]


def short_clip(dest: Path, frames: int, audio: str | None = "aac", rate: int = 48000) -> Path:
    """The first ``frames`` frames of a real clip as H.264, with a 440 Hz tone as ``audio`` (None: silent)."""
    with av.open(str(require_testdata(*CLIP))) as src, av.open(str(dest), "w") as out:
        vin = src.streams.video[0]
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        sound: Any = None
        if audio is not None:
            sound = out.add_stream(audio, rate=rate, layout="stereo")
        for i, frame in enumerate(src.decode(vin)):
            if i == frames:
                break
            image = frame.to_ndarray(format="bgr24")
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(video.encode(None))
        if sound is not None:
            samples = rate * frames // 25
            tone = (np.sin(2 * np.pi * 440 * np.arange(samples) / rate) * 8000).astype(np.int16)
            fmt = "s16" if str(audio).startswith("pcm") else "flt" if audio == "libopus" else "fltp"
            for start in range(0, samples, 1024):
                chunk = tone[start:start + 1024]
                data = np.stack([chunk, chunk]) if fmt == "fltp" else np.stack([chunk, chunk], 1).reshape(1, -1)
                if fmt != "s16":
                    data = (data / 32768).astype(np.float32)
                piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
                piece.sample_rate, piece.pts, piece.time_base = rate, start, Fraction(1, rate)
                out.mux(sound.encode(piece))
            out.mux(sound.encode(None))
    return dest


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return 0.0
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.codec_context.sample_rate


def test_a_folder_in_a_folder_out_skips_what_is_done_and_counts_failures(tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    (inputs / "day2").mkdir(parents=True)
    photos = [require_testdata("images", n) for n in ("2008_002470.jpg", "2008_001009.jpg")]
    for photo in photos:
        shutil.copy(photo, inputs / photo.name)
    short_clip(inputs / "day2" / "talk.mkv", 20)
    (inputs / "day2" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (inputs / "notes.txt").write_text("not media: not part of the batch")
    (inputs / ".hidden.jpg").write_bytes(photos[0].read_bytes())

    done = streamer("file", inputs, outputs, "--device", "cpu", "--no-progress")
    assert done.returncode == 1, done.stderr  # one file failed
    assert "broken.mp4" in done.stderr and "2 done" not in done.stderr and "3 done" in done.stderr
    written = sorted(str(p.relative_to(outputs)) for p in outputs.rglob("*") if p.is_file())
    assert written == [".face-streamer-batch.json", "2008_001009.jpg", "2008_002470.jpg", "day2/talk.mkv"]
    for photo in photos:
        truth = load_truth(photo.with_suffix(".json"))
        before, after = read_bgr(photo), read_bgr(outputs / photo.name)
        for x1, y1, x2, y2 in truth.astype(int):
            changed = np.abs(before[y1:y2, x1:x2].astype(int) - after[y1:y2, x1:x2]).max(axis=2) > 8
            assert changed.mean() > 0.5, f"{photo.name}: face at {(x1, y1, x2, y2)} not hidden"

    stamps = {p: p.stat().st_mtime_ns for p in outputs.rglob("*") if p.is_file()}
    again = streamer("file", inputs, outputs, "--device", "cpu", "--no-progress")
    assert again.returncode == 1 and "0 done, 3 skipped" in again.stderr, again.stderr
    assert {p: p.stat().st_mtime_ns for p in outputs.rglob("*") if p.is_file()} == stamps

    os.utime(inputs / photos[0].name)  # the source changed after its output was made: done again
    redo = streamer("file", inputs, outputs, "--device", "cpu", "--no-progress")
    assert "1 done, 2 skipped" in redo.stderr, redo.stderr
    glob_run = streamer("file", str(inputs / "*.jpg"), tmp_path / "globbed", "--device", "cpu", "--no-progress",
                        "--boxes-only")
    assert glob_run.returncode == 0, glob_run.stderr
    assert sorted(p.name for p in (tmp_path / "globbed").iterdir()) == [
        ".face-streamer-batch.json", "2008_001009.jpg.audit.jsonl", "2008_002470.jpg.audit.jsonl"]
    missing = streamer("file", inputs / "nothing-here", outputs, "--device", "cpu")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    rezoned = streamer("file", inputs, outputs, "--device", "cpu", "--no-progress", "--zones",
                       json.dumps(TOP_LEFT))  # other settings: everything is done again, with them
    assert "3 done, 0 skipped" in rezoned.stderr, rezoned.stderr
    image = read_bgr(outputs / photos[0].name)
    assert (image[:10, :10] == np.asarray(SOLID_BGR, np.uint8)).all()


def test_a_batch_never_reads_its_own_outputs_or_writes_two_inputs_to_one_output(tmp_path: Path) -> None:
    photo = require_testdata("images", "2008_001009.jpg")
    inputs = tmp_path / "in"
    (inputs / "a").mkdir(parents=True)
    (inputs / "b").mkdir()
    shutil.copy(photo, inputs / "a" / "x.jpg")
    shutil.copy(photo, inputs / "b" / "x.jpg")
    clash = streamer("file", inputs / "a" / "x.jpg", inputs / "b" / "x.jpg", tmp_path / "flat", "--device", "cpu")
    assert clash.returncode == 2 and "would both be written to" in clash.stderr
    assert not (tmp_path / "flat").exists()
    inside = inputs / "hidden-results"  # the output folder inside the input folder
    for _ in range(2):
        done = streamer("file", inputs, inside, "--device", "cpu", "--no-progress")
        assert done.returncode == 0, done.stderr
    written = sorted(str(p.relative_to(inside)) for p in inside.rglob("*.jpg"))
    assert written == ["a/x.jpg", "b/x.jpg"]


def test_zones_are_burned_into_a_photo_and_the_trail_says_so(tmp_path: Path) -> None:
    src = require_testdata("images", "2008_002470.jpg")
    dst = tmp_path / "out.png"
    streamer("file", src, dst, "--device", "cpu", "--zones", json.dumps(TOP_LEFT), "--audit", check=True)
    image = read_bgr(dst)
    height, width = image.shape[:2]
    assert (image[:int(0.4 * height) - 1, :int(0.3 * width) - 1] == np.asarray(SOLID_BGR, np.uint8)).all()
    (record,) = [json.loads(line) for line in (tmp_path / "out.png.audit.jsonl").read_text().splitlines()]
    assert (record["zones"], record["width"], record["height"], record["hidden_whole"]) == (1, width, height, False)
    truth = load_truth(src.with_suffix(".json"))
    assert (iou_matrix(truth, np.asarray([f["box"] for f in record["faces"]])).max(axis=1) >= 0.3).all()
    bad = streamer("file", src, tmp_path / "x.png", "--device", "cpu", "--zones", "[[[0,0],[2,0],[1,1]]]")
    assert bad.returncode == 2 and "within 0..1" in bad.stderr and not (tmp_path / "x.png").exists()


def test_boxes_only_writes_one_line_per_frame_and_no_video(tmp_path: Path) -> None:
    clip = short_clip(tmp_path / "talk.mp4", 30)
    trail = tmp_path / "talk.jsonl"
    streamer("file", clip, trail, "--device", "cpu", "--boxes-only", "--no-progress", check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.jsonl", "talk.mp4"]
    records = [json.loads(line) for line in trail.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(30))
    times = [r["t"] for r in records]
    assert times == sorted(times) and times[1] - times[0] == pytest.approx(0.04, abs=1e-3)
    assert all(r["faces"] and not r["hidden_whole"] for r in records)

    out = tmp_path / "hidden.mp4"
    streamer("file", clip, out, "--device", "cpu", "--audit", "--no-progress", check=True)
    # The same frames give the same boxes, whether the video is written or not.
    assert [json.loads(line)["faces"] for line in (tmp_path / "hidden.mp4.audit.jsonl").read_text().splitlines()] \
        == [r["faces"] for r in records]


@pytest.mark.parametrize(("codec", "rate", "suffix", "expected"), [
    ("aac", 48000, ".mp4", "aac"),
    ("pcm_s16le", 48000, ".mp4", "aac"),  # MP4 takes no PCM: re-encoded
    ("pcm_s16le", 192000, ".mp4", "aac"),  # a rate AAC refuses: resampled to 48 kHz
    ("libopus", 48000, ".mov", "aac"),  # MOV takes no Opus
])
def test_sound_is_kept_by_default_and_dropped_on_request(tmp_path: Path, codec: str, rate: int, suffix: str,
                                                         expected: str) -> None:
    clip = short_clip(tmp_path / "talk.mkv", 25, audio=codec, rate=rate)
    assert audio_seconds(clip) == pytest.approx(1.0, abs=0.05)
    kept = tmp_path / f"kept{suffix}"
    streamer("file", clip, kept, "--device", "cpu", "--no-progress", check=True)
    with av.open(str(kept)) as container:
        assert container.streams.audio[0].codec_context.name == expected
    assert audio_seconds(kept) == pytest.approx(1.0, abs=0.1)
    dropped = tmp_path / f"dropped{suffix}"
    streamer("file", clip, dropped, "--device", "cpu", "--no-progress", "--drop-audio", check=True)
    assert audio_seconds(dropped) == 0.0
