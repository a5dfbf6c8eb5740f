"""Corrupt, hostile and odd media (issue #8) through `python -m streamer file` and through upload jobs.

Every input is made in a temporary folder from the real photos and clips in ../shared/testdata: cut MP4s (index
first and index last), random bytes under media names, valid headers followed by garbage, a video track with no
frames, audio only, headers that claim 60000x60000 or 16000x16000 pixels, odd pixel formats and sizes, variable
frame rate, and phone-style rotation: pixels stored sideways with a display matrix (video) or an EXIF orientation
(JPEG). Each one either gives an anonymized output or fails with one line that says why (exit status 2, or a
"failed" job with that line), within bounded time and memory, and leaves no partial output behind. An output never
shows a face the detector finds in the input as a viewer sees it, and it displays the way the input did.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from conftest import REPO_ROOT, require_testdata
from PIL import Image

from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector
from streamer.detection_service import DetectionService
from streamer.jobs import TERMINAL, JobManager, JobOptions
from streamer.settings import AnonymizeSettings

pytestmark = pytest.mark.timeout(300)

U8 = npt.NDArray[np.uint8]
TALKING_HEAD = "liveportrait_driving_d3.mp4"  # one big frontal face in every frame
AUDIENCE = "face_recognition_short_hamilton_clip.mp4"  # 640x360, several small faces: CenterFace misses them sideways
CUT_INDEX_FIRST = "liveportrait_source_s18.mp4"  # 'moov' before 'mdat' (as phones and web tools write it)
CUT_INDEX_LAST = AUDIENCE  # 'moov' after 'mdat'
PHOTO = "2008_002470.jpg"  # six annotated faces, 500x375
# A detection in an output counts as a visible face when it overlaps an input face (IoU >= 0.3) with this score (as
# in test_jobs.py: a scrambled mosaic rarely looks like a face of 0.3-0.49 to the detector).
VISIBLE_SCORE = 0.5
CLI_LIMIT_S = 90  # per run, generous for a shared 2-core machine; a hang fails here instead of stalling the suite
PEAK_RSS_LIMIT_KB = 1_200_000  # a normal run peaks at ~350 MB; a decoded 60000x60000 image alone would be 10 GB


# ------------------------------------------------------------------------------------------------ crafting input


@cache
def clip(name: str, count: int, size: tuple[int, int] | None = None) -> tuple[U8, ...]:
    """The first ``count`` frames of a real clip as upright BGR arrays, optionally resized (w, h)."""
    frames: list[U8] = []
    with av.open(str(require_testdata("videos", name))) as container:
        for frame in container.decode(video=0):
            image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
            frames.append(np.asarray(cv2.resize(image, size), np.uint8) if size else image)
            if len(frames) == count:
                break
    return tuple(frames)


def write_video(path: Path, frames: tuple[U8, ...] | list[U8], *, codec: str = "libx264", pix_fmt: str = "yuv420p",
                rotation: int | None = None, hflip: bool = False, pts_ms: list[int] | None = None) -> Path:
    """Encode BGR frames with PyAV. ``rotation`` writes a display matrix (the tkhd matrix in MP4): PyAV's degrees
    are counterclockwise, the way FFmpeg reports them, and a viewer turns the stored pixels by that much."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def stored_for_display(upright: U8, rotation: int, hflip: bool = False) -> U8:
    """The pixels a camera stores so that a viewer shows ``upright`` after applying the display matrix: the
    viewer turns the stored picture ``rotation`` degrees counterclockwise and then mirrors it (PyAV's
    set_display_rotation docs), so undo the mirror, then turn back."""
    image = upright[:, ::-1] if hflip else upright
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90) % 4))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def random_bytes(n: int) -> bytes:
    return np.random.default_rng(8).integers(0, 256, n, dtype=np.uint8).tobytes()


def make_input(case: str, folder: Path) -> Path:
    """The hostile or odd input named ``case``, written into ``folder``."""
    index_first = require_testdata("videos", CUT_INDEX_FIRST).read_bytes()
    photo = require_testdata("images", PHOTO).read_bytes()
    if case.startswith("cut-index-"):  # cut-index-first-50: the clip with its index first, cut at 50%
        where, percent = case.removeprefix("cut-index-").rsplit("-", 1)
        data = index_first if where == "first" else require_testdata("videos", CUT_INDEX_LAST).read_bytes()
        path = folder / f"{case}.mp4"
        path.write_bytes(data[: len(data) * int(percent) // 100])
        return path
    if case.startswith("random-"):
        path = folder / f"noise.{case.removeprefix('random-')}"
        path.write_bytes(random_bytes(200_000))
        return path
    if case == "garbage-after-mp4-header":  # the index and the first tenth of the frames, then noise
        path = folder / "garbage.mp4"
        path.write_bytes(index_first[: len(index_first) // 10] + random_bytes(len(index_first)))
        return path
    if case == "garbage-after-png-header":
        path = folder / "garbage.png"
        data = require_testdata("images", "skimage_astronaut.png").read_bytes()
        path.write_bytes(data[: len(data) // 5] + random_bytes(20_000))
        return path
    if case == "zero-frames":
        # A real video track whose sample table lists no samples ('stsz' count 0): a stream and no packet.
        track = bytearray(write_video(folder / "one.mp4", clip(TALKING_HEAD, 2, (64, 64))).read_bytes())
        at = track.find(b"stsz")
        track[at + 8:at + 16] = struct.pack(">II", 0, 0)
        (folder / "one.mp4").unlink()
        path = folder / "empty-track.mp4"
        path.write_bytes(bytes(track))
        return path
    if case == "audio-only":
        path = folder / "voice.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("aac", rate=48000)
            for i in range(20):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, i * 1024
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return path
    if case == "1x1-video":
        return write_video(folder / "dot.mkv", clip(TALKING_HEAD, 4, (1, 1)), codec="ffv1", pix_fmt="yuv444p")
    if case == "png-60000x60000":  # a 200-byte decompression bomb: the header claims 3.6 gigapixels
        ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
        path = folder / "bomb.png"
        idat = zlib.compress(bytes(99_999))
        chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
        return path
    if case == "jpeg-60000x60000":  # a real JPEG whose start-of-frame claims 60000x60000
        jpeg = bytearray(photo)
        sof = jpeg.find(b"\xff\xc0")
        jpeg[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
        path = folder / "bomb.jpg"
        path.write_bytes(bytes(jpeg))
        return path
    if case == "video-16000x16000":  # raw video whose header declares 256 MP frames (768 MB each as BGR)
        path = folder / "bomb.mp4"
        path.write_bytes(b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(2_000_000))
        return path
    raise AssertionError(case)


# ------------------------------------------------------------------------------------------------ running the CLI


@dataclass
class Run:
    returncode: int
    stderr: str
    seconds: float
    peak_rss_kb: int


def run_file(src: Path, dst: Path, *extra: str) -> Run:
    """`python -m streamer file SRC DST` with its wall time and its own peak memory."""
    log = dst.parent.parent / f"{dst.name}.stderr"
    started = time.monotonic()
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "file", str(src), str(dst), "--device", "cpu",
                                 "--no-progress", *extra], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err)
    # Peak memory from the child's own VmHWM, read until it exits: wait4's ru_maxrss would also count the pages of
    # this (large) pytest process that the child had before it exec'd Python.
    peak_kb = 0
    while True:
        with contextlib.suppress(OSError, ValueError):
            status_text = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = re.search(r"^VmHWM:\s+(\d+) kB", status_text, re.MULTILINE)
            if hwm:
                peak_kb = max(peak_kb, int(hwm.group(1)))
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > CLI_LIMIT_S:
            proc.kill()
            proc.wait()
            raise AssertionError(f"`file {src.name}` still running after {CLI_LIMIT_S} s")
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(proc.returncode, log.read_text(errors="replace"), time.monotonic() - started, peak_kb)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An input folder and an output folder; the output folder must hold nothing but the result at the end."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    yield inputs, outputs


def assert_one_line_error(run: Run, reason: str) -> None:
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert re.search(reason, lines[0]), lines[0]


def assert_clean_result(outputs: Path, dst: Path) -> None:
    """Only the result is there (no partial file), and it is readable by others like any file the user makes."""
    assert sorted(os.listdir(outputs)) == [dst.name]
    assert dst.stat().st_mode & 0o044 == 0o044, oct(dst.stat().st_mode)


def faces_left(detector: CenterFaceDetector, before: list[U8], after: list[U8]) -> list[str]:
    """For each pair of frames (input as shown, output), the faces found in the input that the detector still
    finds in the output. Also checks that the input had faces, or the comparison would prove nothing."""
    left, seen = [], 0
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        faces = detector.detect(a)
        seen += len(faces)
        again = detector.detect(b)
        if len(faces) and len(again):
            overlap = iou_matrix(faces.boxes, again.boxes).max(axis=0)
            for score, iou in zip(again.scores, overlap, strict=True):
                if iou >= 0.3 and score >= VISIBLE_SCORE:
                    left.append(f"frame {i}: score {score:.2f}, IoU {iou:.2f}")
    assert seen > 0, "the input frames show no face: the test proves nothing"
    return left


def read_video(path: Path) -> tuple[list[U8], list[int], Any]:
    """Frames as BGR, their pts, and the first frame's display rotation (0 when there is no matrix)."""
    frames, pts, rotation = [], [], None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rotation = frame.rotation if rotation is None else rotation
            frames.append(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8))
            pts.append(int(frame.pts or 0))
    return frames, pts, rotation or 0


# ------------------------------------------------------------------------------------------------ refused input


@pytest.mark.parametrize(("case", "reason"), [
    ("cut-index-first-10", r"truncated: the file holds \d+ of its 282 frames"),
    ("cut-index-first-50", r"truncated: the file holds \d+ of its 282 frames"),
    ("cut-index-first-90", r"truncated: the file holds \d+ of its 282 frames"),
    ("cut-index-last-10", r"not a readable video \(corrupt, truncated, or not a video format"),
    ("cut-index-last-90", r"not a readable video \(corrupt, truncated, or not a video format"),
    ("random-mp4", r"not a readable video"),
    ("random-jpg", r"not a readable image"),
    ("random-png", r"not a readable image"),
    ("garbage-after-mp4-header", r"truncated|could not be decoded"),
    ("garbage-after-png-header", r"not a readable image \(libpng error: .*\)"),
    ("zero-frames", r"video has no decodable frames"),
    ("audio-only", r"has no video stream"),
    ("1x1-video", r"no usable size \(1x1\)"),
    ("png-60000x60000", r"image of 60000x60000 is over the 100 MP limit"),
    ("jpeg-60000x60000", r"image of 60000x60000 is over the 100 MP limit"),
    ("video-16000x16000", r"video of 16000x16000 is over the 36 MP limit"),
])
def test_bad_input_is_refused_in_one_line_quickly_and_leaves_nothing(folders: tuple[Path, Path], case: str,
                                                                      reason: str) -> None:
    inputs, outputs = folders
    src = make_input(case, inputs)
    dst = outputs / ("result.png" if src.suffix in (".png", ".jpg") else "result.mp4")
    run = run_file(src, dst)
    assert_one_line_error(run, reason)
    assert src.name in run.stderr and "Traceback" not in run.stderr
    assert os.listdir(outputs) == []
    assert run.peak_rss_kb < PEAK_RSS_LIMIT_KB, f"peak memory {run.peak_rss_kb} kB"
    if "cut-index-first" in case or "000x" in case:
        # Refused from the header or the index, before any frame is decoded: a cut 90% of a 720p clip used to
        # decode and hide 250 frames (25 s here) before it said so.
        assert run.seconds < 20, f"took {run.seconds:.1f} s"


# ------------------------------------------------------------------------------------------------ odd but valid


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "size"), [
    ("yuv444p.mp4", "libx264", "yuv444p", (320, 320)),
    ("yuv422p10le.mkv", "libx264", "yuv422p10le", (320, 320)),
    ("gray.mp4", "libx264", "gray", (320, 320)),
    ("bgra.mov", "png", "rgba", (320, 320)),
    ("odd-641x479.mkv", "ffv1", "yuv444p", (641, 479)),
    ("tiny-2x2.mkv", "ffv1", "yuv444p", (2, 2)),
])
def test_odd_pixel_formats_and_sizes_are_anonymized(folders: tuple[Path, Path], detector: CenterFaceDetector,
                                                    name: str, codec: str, pix_fmt: str,
                                                    size: tuple[int, int]) -> None:
    inputs, outputs = folders
    upright = list(clip(TALKING_HEAD, 4, size))
    src = write_video(inputs / name, upright, codec=codec, pix_fmt=pix_fmt)
    dst = outputs / "result.mp4"
    run = run_file(src, dst)
    assert run.returncode == 0, run.stderr
    assert_clean_result(outputs, dst)
    frames, _, rotation = read_video(dst)
    even = (size[1] - size[1] % 2, size[0] - size[0] % 2)
    assert len(frames) == len(upright) and frames[0].shape[:2] == even and rotation == 0
    if min(size) >= 64:
        assert faces_left(detector, [f[:even[0], :even[1]] for f in upright], frames) == []


def test_variable_frame_rate_keeps_every_timestamp(folders: tuple[Path, Path], detector: CenterFaceDetector) -> None:
    inputs, outputs = folders
    upright = list(clip(TALKING_HEAD, 6, (320, 320)))
    src = write_video(inputs / "vfr.mp4", upright, pts_ms=[0, 40, 50, 200, 210, 700])
    dst = outputs / "result.mp4"
    run = run_file(src, dst)
    assert run.returncode == 0, run.stderr
    assert_clean_result(outputs, dst)
    _, pts_in, _ = read_video(src)
    frames, pts_out, _ = read_video(dst)
    assert pts_out == pts_in
    assert faces_left(detector, upright, frames) == []


@pytest.mark.parametrize("case", ["exif-6", "exif-8", "exif-3", "cmyk", "gray", "rgba", "16-bit", "641x479",
                                  "1x1", "2x2", "garbage-after-jpeg-data"])
def test_odd_photos_are_anonymized_as_displayed(folders: tuple[Path, Path], detector: CenterFaceDetector,
                                                case: str) -> None:
    """The EXIF orientation is applied as viewers apply it: faces are found upright, and the output (written
    without EXIF) has the displayed width and height and the displayed picture."""
    inputs, outputs = folders
    upright = Image.open(require_testdata("images", PHOTO)).convert("RGB")
    src = inputs / f"{case}.{'png' if case in ('gray', 'rgba', '16-bit', '641x479', '1x1') else 'jpg'}"
    shown = upright
    if case.startswith("exif-"):
        tag = int(case.removeprefix("exif-"))
        # What a camera stores for orientation `tag`: 6 = "turn 90 clockwise to view", 8 = counterclockwise.
        turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}[tag]
        exif = Image.Exif()
        exif[0x0112] = tag
        upright.transpose(turn).save(src, exif=exif, quality=95)
    elif case == "cmyk":
        upright.convert("CMYK").save(src, quality=95)
    elif case == "gray":
        shown = upright.convert("L").convert("RGB")
        upright.convert("L").save(src)
    elif case == "rgba":
        rgba = upright.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(src)
    elif case == "16-bit":
        cv2.imwrite(str(src), np.asarray(upright)[:, :, ::-1].astype(np.uint16) * 257)
    elif case == "641x479":
        shown = upright.resize((641, 479))
        shown.save(src)
    elif case in ("1x1", "2x2"):
        side = int(case[0])
        shown = upright.resize((side, side))
        shown.save(src)
    elif case == "garbage-after-jpeg-data":
        data = require_testdata("images", PHOTO).read_bytes()
        src.write_bytes(data[: len(data) * 3 // 5] + random_bytes(20_000))
    dst = outputs / f"result{src.suffix}"
    run = run_file(src, dst)
    if case == "garbage-after-jpeg-data":
        # libjpeg decodes what it can and greys the rest: an output, or one line if nothing could be decoded.
        if run.returncode != 0:
            assert_one_line_error(run, "not a readable image")
            assert os.listdir(outputs) == []
            return
        shown_bgr = np.asarray(cv2.imdecode(np.frombuffer(src.read_bytes(), np.uint8), cv2.IMREAD_COLOR), np.uint8)
    else:
        shown_bgr = np.asarray(shown)[:, :, ::-1]
    assert run.returncode == 0, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr  # the summary line, no decoder chatter
    assert_clean_result(outputs, dst)
    read = cv2.imread(str(dst), cv2.IMREAD_COLOR)
    assert read is not None
    result = np.asarray(read, np.uint8)
    assert result.shape == shown_bgr.shape, (result.shape, shown_bgr.shape)
    if min(result.shape[:2]) > 2:
        # The same picture the way it is shown: most pixels (all but the faces) match the displayed input.
        close = np.abs(result.astype(int) - shown_bgr.astype(int)).max(axis=2) < 40
        assert close.mean() > 0.8, f"only {close.mean():.0%} of the pixels match the displayed input"
        assert faces_left(detector, [np.ascontiguousarray(shown_bgr)], [result]) == []


# ------------------------------------------------------------------------------------------------ rotation


def detections_reported(run: Run) -> int:
    found = re.search(r"(\d+) detection\(s\)", run.stderr)
    assert found, run.stderr
    return int(found.group(1))


@pytest.mark.parametrize(("rotation", "hflip"), [(-90, False), (90, False), (180, False), (90, True)])
def test_rotated_phone_video_is_anonymized_upright_and_displays_as_the_input(
        folders: tuple[Path, Path], detector: CenterFaceDetector, rotation: int, hflip: bool) -> None:
    """A phone held upright stores the picture sideways and says so in the display matrix. CenterFace misses
    sideways faces (on this clip it finds 2 sideways against 27 upright), so the picture must be turned before
    detection; the output carries the turned pixels and no matrix, so it shows the same as the input."""
    inputs, outputs = folders
    upright = list(clip(AUDIENCE, 6))
    stored = [stored_for_display(image, rotation, hflip) for image in upright]
    src = write_video(inputs / "phone.mp4", stored, rotation=rotation, hflip=hflip)
    dst = outputs / "result.mp4"
    run = run_file(src, dst)
    assert run.returncode == 0, run.stderr
    assert_clean_result(outputs, dst)
    frames, _, out_rotation = read_video(dst)
    assert out_rotation == 0 and len(frames) == len(upright)
    assert frames[0].shape == upright[0].shape, "the output is not in the input's display orientation"
    for before, after in zip(upright, frames, strict=True):
        close = np.abs(after.astype(int) - before.astype(int)).max(axis=2) < 40
        assert close.mean() > 0.8, f"only {close.mean():.0%} of the pixels match the displayed input"
    assert faces_left(detector, upright, frames) == []
    if rotation == -90 and not hflip:
        # As many detections as the same clip stored upright, not the few a sideways picture gives.
        plain = run_file(write_video(inputs / "upright.mp4", upright), outputs / "plain.mp4")
        assert plain.returncode == 0, plain.stderr
        assert detections_reported(run) >= 0.9 * detections_reported(plain) > 0, (run.stderr, plain.stderr)


# ------------------------------------------------------------------------------------------------ upload jobs


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory, detector: CenterFaceDetector) -> Iterator[JobManager]:
    service = DetectionService(detector)
    jobs = JobManager(tmp_path_factory.mktemp("jobs"), service, workers=1, max_queued=8)
    try:
        yield jobs
    finally:
        jobs.shutdown()
        service.close()


def run_job(manager: JobManager, filename: str, data: bytes, limit_s: float = 60) -> tuple[Any, float]:
    job = manager.new_job(filename, JobOptions(AnonymizeSettings()))
    job.input.write_bytes(data)
    started = time.monotonic()
    manager.start(job)
    while job.state not in TERMINAL:
        assert time.monotonic() - started < limit_s, f"job still {job.state} after {limit_s} s"
        time.sleep(0.05)
    return job, time.monotonic() - started


@pytest.mark.parametrize(("case", "filename", "reason"), [
    ("random-mp4", "holiday.mp4", r"^holiday\.mp4: not a readable video"),
    ("cut-index-first-50", "phone.mp4", r"^phone\.mp4: video is truncated"),
    ("zero-frames", "empty.mov", r"^empty\.mov: video has no decodable frames"),
    ("jpeg-60000x60000", "bomb.jpg", r"^bomb\.jpg: image of 60000x60000 is over the 100 MP limit"),
    ("video-16000x16000", "bomb.mkv", r"^bomb\.mkv: video of 16000x16000 is over the 36 MP limit"),
    ("garbage-after-png-header", "scan.png", r"^scan\.png: not a readable image"),
])
def test_bad_upload_fails_with_one_line_and_leaves_nothing(manager: JobManager, tmp_path: Path, case: str,
                                                           filename: str, reason: str) -> None:
    data = make_input(case, tmp_path).read_bytes()
    job, seconds = run_job(manager, filename, data)
    assert job.state == "failed" and job.output is None, job.as_dict()
    assert isinstance(job.error, str) and "\n" not in job.error and re.search(reason, job.error), job.error
    assert str(manager.root) not in job.error
    assert not job.directory.exists()
    if "000x" in case or "cut" in case:
        assert seconds < 10, f"took {seconds:.1f} s"
    manager.cancel(job)


def test_rotated_upload_comes_back_upright_with_faces_hidden(manager: JobManager, tmp_path: Path,
                                                             detector: CenterFaceDetector) -> None:
    upright = list(clip(AUDIENCE, 6))
    src = write_video(tmp_path / "phone.mp4", [stored_for_display(i, -90) for i in upright], rotation=-90)
    job, _ = run_job(manager, "phone.mp4", src.read_bytes())
    assert job.state == "done", job.as_dict()
    assert sorted(os.listdir(job.directory)) == ["output.mp4"]
    frames, _, rotation = read_video(job.output)
    assert rotation == 0 and len(frames) == len(upright) and frames[0].shape == upright[0].shape
    assert faces_left(detector, upright, frames) == []
    manager.cancel(job)
    assert not job.directory.exists()
