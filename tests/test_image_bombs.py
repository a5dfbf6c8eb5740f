"""Image bombs (issue #15, item 5): decoded pixels are bounded before decoding, for every format that is accepted.

A photo is accepted only in the formats whose header streamer.offline reads for its size (JPEG, PNG, WebP, BMP),
told by its magic bytes, whatever its name; other still images (TIFF, GIF, ...) are refused. The bomb is the one
from the issue, built here: a ~300 KB deflate TIFF of 17000x17000 named bomb.png, which once grew the server from
340 MB to 1.95 GB through FFmpeg's probe and cv2.imdecode. Behind the header check stand OpenCV's and FFmpeg's own
limits, each tested on its own: OPENCV_IO_MAX_IMAGE_PIXELS (set by the package before cv2 is imported) and
FFmpeg's ``max_pixels`` on the decoders PyAV opens, against a MOV whose track header says 64x64 while its frame is
a 16000x16000 TIFF. (A PNG whose header declares more than 100 MP: tests/test_jobs.py::
test_bad_upload_fails_the_job_with_a_reason[huge-image] and tests/test_hostile_media.py's png-60000x60000.)
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import REPO_ROOT, require_testdata
from PIL import Image
from test_hostile_media import assert_one_line_error, run_file
from test_jobs import Service

from streamer.offline import InputError, check_image_size, classify_input, open_video

pytestmark = pytest.mark.timeout(300)

SERVER_GROWTH_LIMIT_KB = 400_000  # issue #15: the server's RSS never more than 400 MB above its start
# `file` that refuses its input peaks at ~150 MB here (the model loaded, nothing decoded); decoding the 16000x16000
# frame of the lying MOV alone takes 256 MB more.
CLI_PEAK_LIMIT_KB = 320_000


def tiff_bomb(side: int) -> bytes:
    """A valid side x side 8-bit greyscale TIFF, one strip of zeros, deflate-compressed (~1 KB per megapixel)."""
    compressor = zlib.compressobj(9)
    block = bytes(side * 1000)
    parts, left = [], side * side
    while left:
        parts.append(compressor.compress(block[:min(left, len(block))]))
        left -= min(left, len(block))
    strip = b"".join(parts) + compressor.flush()
    # (tag, type, value): type 3 SHORT, 4 LONG. Compression 8 is Adobe deflate; photometric 1 is black-is-zero.
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 8), (277, 3, 1),
               (278, 4, side), (279, 4, len(strip))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8 + len(strip)) + strip + ifd


def lying_mov(path: Path, side: int = 16000) -> Path:
    """A MOV whose only track declares 64x64 and holds one side x side TIFF frame: its header passes the 36 MP
    video check, so only the decoder's own limit stands between it and a 256 MB frame (16000^2 stays under the
    ~268 MP that FFmpeg refuses anyway)."""
    with av.open(str(path), "w", format="mov") as out:
        stream = out.add_stream("tiff", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "gray"
        packet = av.Packet(tiff_bomb(side))
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, 0, 0, Fraction(1, 1)
        packet.is_keyframe = True
        out.mux(packet)
    return path


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return tiff_bomb(17000)


def status_kb(pid: int, field: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return None


@contextlib.contextmanager
def rss_watch(pid: int) -> Iterator[dict[str, int]]:
    """Samples VmRSS of ``pid`` every 5 ms while the block runs; the result's "start" and "peak" (kB). The kernel's
    own peak (VmHWM, reset here where /proc allows it) also counts, for a spike between two samples."""
    start = status_kb(pid, "VmRSS")
    assert start is not None
    reset = False
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        reset = True
    result = {"start": start, "peak": start}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = status_kb(pid, "VmRSS")
            if rss is not None:
                result["peak"] = max(result["peak"], rss)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        hwm = status_kb(pid, "VmHWM")
        if reset and hwm is not None:
            result["peak"] = max(result["peak"], hwm)


def test_uploaded_tiff_bomb_is_refused_and_the_server_stays_small(bomb: bytes, tmp_path: Path) -> None:
    """The issue's bomb, under image and other names, gets 415 at upload; the lying MOV (FFmpeg's wall) fails its
    job with a clear error. The server's RSS is watched the whole time."""
    lie = lying_mov(tmp_path / "lie.mov").read_bytes()
    server = Service(tmp_path / "jobs").start(tmp_path / "serve.log")
    try:
        with rss_watch(server.pid) as rss:
            for name in ("bomb.png", "bomb.jpg", "bomb", "bomb.mp4"):
                answer = server.post_job(name, bomb)
                assert answer.status == 415, (name, answer.status, answer.body)
                assert answer.error.startswith(f"{name}: TIFF images are not accepted; send JPEG, PNG, WebP or BMP"), \
                    answer.error
            answer = server.post_job("lie.mov", lie)
            assert answer.status == 202, answer.body
            job = server.wait(answer.json()["id"], limit_s=60)
            assert job["state"] == "failed" and "frames over 36 MP are refused" in job["error"], job
            assert job["error"].startswith("lie.mov: video could not be decoded"), job
            assert server.healthy()
        assert [j["id"] for j in server.jobs()] == [job["id"]]  # the refused uploads left no job
        assert sorted(server.instance_dir().rglob("*")) == []  # nor did the failed one leave files
    finally:
        server.stop()
    grown = rss["peak"] - rss["start"]
    assert grown < SERVER_GROWTH_LIMIT_KB, f"the server grew by {grown} kB"


@pytest.mark.parametrize("name", ["bomb.png", "bomb.tif", "bomb.mp4"])
def test_file_command_refuses_the_tiff_bomb(bomb: bytes, name: str, tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    src = inputs / name
    src.write_bytes(bomb)
    run = run_file(src, outputs / "result.png")
    assert_one_line_error(run, rf"^error: {src}: TIFF images are not accepted; send JPEG, PNG, WebP or BMP")
    assert list(outputs.iterdir()) == []
    assert run.peak_rss_kb < CLI_PEAK_LIMIT_KB, f"peak memory {run.peak_rss_kb} kB"


def test_ffmpeg_limits_the_frame_a_container_lies_about(tmp_path: Path) -> None:
    """FFmpeg's max_pixels (the second wall for video): the header says 64x64, the frame is 16000x16000."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = lying_mov(tmp_path / "in" / "lie.mov")
    run = run_file(src, tmp_path / "out" / "result.mp4")
    assert_one_line_error(run, rf"^error: {src}: video could not be decoded \(.*; frames over 36 MP are refused\)$")
    assert run.peak_rss_kb < CLI_PEAK_LIMIT_KB, f"peak memory {run.peak_rss_kb} kB: the frame was decoded"


OPENCV_PROBE = """
import sys
import numpy as np
import streamer.offline  # what the service and the `file` command import before they decode anything
import cv2

data = np.fromfile(sys.argv[1], np.uint8)
try:
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
except cv2.error as exc:
    print("refused:", " ".join(str(exc).split()))
else:
    print("decoded:", None if image is None else image.shape)
"""


def test_opencv_has_its_own_100_mp_limit(tmp_path: Path) -> None:
    """cv2.imdecode straight on a 10001x10000 PNG (the header check is not asked): OpenCV itself refuses it, because
    the package set OPENCV_IO_MAX_IMAGE_PIXELS before cv2 was first imported. Without it: 300 MB of BGR."""
    width, height = 10_001, 10_000
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # 1-bit greyscale: a small file
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    done = subprocess.run([sys.executable, "-c", OPENCV_PROBE, str(path)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused:") and "CV_IO_MAX_IMAGE_PIXELS" in done.stdout, done.stdout


# ------------------------------------------------------------------------------ which files are taken as photos


def still_image(tmp_path: Path, fmt: str, name: str) -> Path:
    """A small real picture (a test photo) saved by Pillow in ``fmt`` under ``name``."""
    path = tmp_path / name
    with Image.open(require_testdata("images", "2008_002470.jpg")) as photo:
        photo.convert("RGB").save(path, format=fmt)
    return path


@pytest.mark.parametrize(("fmt", "name", "reason"), [
    ("GIF", "photo.gif", r"GIF images are not accepted"),
    ("GIF", "photo.png", r"GIF images are not accepted"),
    ("TIFF", "photo.jpg", r"TIFF images are not accepted"),
    ("JPEG2000", "photo.mp4", r"JPEG 2000 images are not accepted"),
    # Formats without a signature in the list: FFmpeg's still-image demuxers are refused before any decoding.
    ("PCX", "photo.mp4", r"a still image in a format that is not accepted \(pcx\)"),
    ("SGI", "photo", r"a still image in a format that is not accepted \(sgi\)"),
    ("PCX", "photo.png", r"not a readable image \(corrupt, or a format other than JPEG, PNG, WebP or BMP\)"),
])
def test_only_photos_whose_header_is_checked_are_taken(fmt: str, name: str, reason: str, tmp_path: Path) -> None:
    path = still_image(tmp_path, fmt, name)
    with pytest.raises(InputError, match=reason):
        if classify_input(path) == "image":
            check_image_size(path)
        else:
            open_video(path).close()


@pytest.mark.parametrize("name", ["photo.mp4", "photo", "photo.jpg"])
def test_an_accepted_photo_is_a_photo_whatever_its_name(name: str, tmp_path: Path) -> None:
    path = still_image(tmp_path, "PNG", name)
    assert classify_input(path) == "image"
    check_image_size(path)
