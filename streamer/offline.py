"""Offline files: what is accepted and how it is checked, photos in and out, and what the video pipeline
(streamer/file_pipeline/) shares with them: the errors, the progress, the result and the all-or-nothing output.
Everything goes through the same FrameProcessor as live streams.

Output is written to a temporary file beside OUTPUT and renamed only when complete, so a failure or a cancel never
leaves a half-written OUTPUT.

Hostile input is refused before it costs memory or time: image and video sizes are checked against their headers
before anything is decoded whole. A file is taken as a photo by its magic bytes, and only in the formats whose
header is read here (JPEG, PNG, WebP, BMP); other still-image formats (TIFF, GIF, ...) are refused, whatever their
name. Behind that, OpenCV's and FFmpeg's own pixel limits are set too (OPENCV_IO_MAX_IMAGE_PIXELS in
streamer/__init__.py, ``max_pixels`` on every decoder opened here). An MP4/MOV whose index points past the end of
the file is reported truncated at once instead of after decoding everything that is there. Photos are decoded in
their display orientation by OpenCV, which applies the EXIF orientation (videos: file_pipeline/orientation.py).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import av
import cv2
import numpy as np
import numpy.typing as npt

from . import MAX_IMAGE_PIXELS
from .processor import FrameProcessor

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi"})
# MAX_IMAGE_PIXELS (100 MP) comes from the package, which also gives it to OpenCV before cv2 is imported.
# 8K UHD (7680x4320) fits. A bigger frame is refused before it is decoded: each one held in the pipeline's queues
# costs width*height*3 bytes, and a header can claim any size for a few bytes of file.
MAX_VIDEO_PIXELS = 36_000_000
HEAD_BYTES = 16  # enough for every signature below
ACCEPTED_IMAGES = "JPEG, PNG, WebP or BMP"
# Still-image formats that FFmpeg or OpenCV would decode but whose header is not read here: a few hundred bytes of
# TIFF can declare gigapixels. Refused by name; any other still image FFmpeg knows is refused in open_video.
OTHER_IMAGES = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
                (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"8BPS", "PSD"), (b"\xff\x0a", "JPEG XL"),
                (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"), (b"\xffO\xffQ", "JPEG 2000"),
                (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"v/1\x01", "OpenEXR"), (b"qoif", "QOI"))
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})


class InputError(ValueError):
    """The input cannot be anonymized: missing, corrupt, unsupported. The message is one line for the user."""


class Cancelled(RuntimeError):
    """The job was cancelled before it finished."""


@dataclass(frozen=True)
class Progress:
    frames_done: int
    frames_total: int | None  # None when the container does not say
    elapsed_s: float

    @property
    def fps(self) -> float:
        return self.frames_done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class FileResult:
    output: Path | None  # None: nothing was written (--boxes-only)
    frames: int
    width: int
    height: int
    faces: int
    hidden_whole: int
    seconds: float


ProgressCallback = Callable[[Progress], None]


def image_format(head: bytes) -> str | None:
    """Which of the accepted photo formats the first bytes of a file are, by their signature; None for others."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM"):
        return "BMP"
    return None


def input_kind(head: bytes, name: str) -> Literal["image", "video"]:
    """How an input whose first HEAD_BYTES are ``head`` is processed: as a photo when its signature is one of the
    accepted formats (whatever its name), InputError for another still-image format, else as a photo only when
    ``name`` says so (and check_image_size refuses it), else as a video (open_video refuses other still images)."""
    if image_format(head) is not None:
        return "image"
    other = next((kind for magic, kind in OTHER_IMAGES if head.startswith(magic)), None)
    if other is None and head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        other = "HEIF/AVIF"
    if other is not None:
        raise InputError(f"{name}: {other} images are not accepted; send {ACCEPTED_IMAGES} (the formats whose "
                         "size is checked before decoding)")
    return "image" if Path(name).suffix.lower() in IMAGE_SUFFIXES else "video"


def classify_input(path: Path) -> Literal["image", "video"]:
    """``input_kind`` of a file: the one place that decides, for the `file` command and for upload jobs alike."""
    check_input(path)
    with path.open("rb") as f:
        return input_kind(f.read(HEAD_BYTES), str(path))


def is_image(path: Path) -> bool:
    """Whether ``path`` goes the photo way (by content, see ``input_kind``); InputError when it is refused."""
    return classify_input(path) == "image"


@contextmanager
def atomic_output(output: Path, *, private: bool = False) -> Iterator[Path]:
    """A temporary path beside ``output`` that replaces it on success and is removed on any failure. ``private``
    (upload jobs): the file stays 0600, as mkstemp makes it, while it is written and after."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=f".partial{output.suffix}", dir=output.parent)
    if not private:
        # The result of the `file` command is the user's file and gets the mode any file they create gets.
        os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def check_input(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")


def declared_image_size(path: Path) -> tuple[int, int] | None:
    """Width and height as the image's own header declares them (PNG, JPEG, WebP, BMP, told apart by their
    signature), or None when the header is not one of those. Nothing is decoded: ffmpeg's probe decodes a whole
    PNG to learn its size (and reports 0x0 above ~268 megapixels), so it cannot guard against a decompression bomb.
    Keep ``image_format`` in step: a format is accepted only where its size is read here.
    """
    with path.open("rb") as f:
        return _declared_size(f)


def _declared_size(f: BinaryIO) -> tuple[int, int] | None:
    head = f.read(64)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        chunk = head[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", head[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        if chunk == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        return None
    if head.startswith(b"BM") and len(head) >= 26:
        if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", head[18:22])
            return int(width), int(height)
        width, height = struct.unpack("<ii", head[18:26])
        return abs(int(width)), abs(int(height))
    if head.startswith(b"\xff\xd8\xff"):
        f.seek(2)
        while True:  # walk the segments up to the first start-of-frame
            byte = f.read(1)
            if not byte:
                return None
            if byte != b"\xff":
                continue
            marker = f.read(1)
            while marker == b"\xff":  # fill bytes
                marker = f.read(1)
            if not marker:
                return None
            code = marker[0]
            if code == 0x01 or 0xD0 <= code <= 0xD9:  # no length field
                continue
            length_bytes = f.read(2)
            if len(length_bytes) < 2:
                return None
            length = struct.unpack(">H", length_bytes)[0]
            if length < 2:
                return None
            if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
                frame = f.read(5)
                if len(frame) < 5:
                    return None
                height, width = struct.unpack(">HH", frame[1:5])
                return int(width), int(height)
            f.seek(length - 2, os.SEEK_CUR)
    return None


def check_image_size(path: Path) -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS, before anything decodes it whole, and any
    image whose size cannot be read from its header (another format, or a corrupt header): no decoder is asked."""
    classify_input(path)  # a TIFF, GIF, ... gets its own message
    declared = declared_image_size(path)
    if declared is None:
        raise InputError(f"{path}: not a readable image (corrupt, or a format other than {ACCEPTED_IMAGES})")
    width, height = declared
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image of {width}x{height} is over the {MAX_IMAGE_PIXELS // 1_000_000} MP limit")


def image_from_bytes(data: bytes, name: str) -> npt.NDArray[np.uint8]:
    """A photo sent in a request body (enrolment), decoded in memory: the same formats and pixel limit as files,
    checked from the header before anything decodes it."""
    kind = image_format(data[:HEAD_BYTES])
    declared = _declared_size(io.BytesIO(data)) if kind is not None else None
    if declared is None:
        raise InputError(f"{name}: not a readable image (send {ACCEPTED_IMAGES})")
    if declared[0] * declared[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"{name}: image of {declared[0]}x{declared[1]} is over the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} MP limit")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{name}: not a readable image (corrupt)")
    return np.asarray(image, np.uint8)


@contextmanager
def _native_stderr(said: list[str]) -> Iterator[None]:
    """Collect what C libraries print straight to file descriptor 2 (libpng's "IDAT: CRC error", libjpeg's
    "Corrupt JPEG data") into ``said``, so a command-line failure stays one line that includes the reason. Only
    while no other Python thread runs: fd 2 belongs to the whole process, and a server's log lines written meanwhile
    must not vanish into it (there the libraries' lines simply reach the log)."""
    if threading.active_count() > 1:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                said.extend(line.strip() for line in sink.read(4096).decode(errors="replace").splitlines()
                            if line.strip())
    finally:
        os.close(saved)


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """The image as BGR in its display orientation: IMREAD_COLOR applies the EXIF orientation tag, so faces are
    detected upright, and the output (written without EXIF) displays as the input did."""
    check_image_size(path)
    data = np.fromfile(path, dtype=np.uint8)
    said: list[str] = []
    try:
        with _native_stderr(said):
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        # OpenCV's own limit (the second wall): the picture is larger than its header said.
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise InputError(f"{path}: image is over the {MAX_IMAGE_PIXELS // 1_000_000} MP limit") from exc
        raise InputError(f"{path}: not a readable image ({' '.join(str(exc).split())})") from exc
    if said:
        logger.info("%s: the decoder said: %s", path.name, "; ".join(said))
    if image is None:
        reason = said[-1] if said else f"corrupt, or a format other than {ACCEPTED_IMAGES}"
        raise InputError(f"{path}: not a readable image ({reason})")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image of {image.shape[1]}x{image.shape[0]} is over the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} MP limit")
    return np.asarray(image, np.uint8)


def anonymize_image(src: Path, dst: Path | None, processor: FrameProcessor, *,
                    private: bool = False) -> FileResult:
    """``private``: the output is 0600 (see ``atomic_output``). ``dst`` None: faces are found and hidden but nothing
    is written (``--boxes-only``: only the processor's audit line)."""
    if dst is not None and dst.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{dst}: output of an image must end in one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    started = time.perf_counter()
    image = read_image(src)
    outcome = processor.process(image, 0.0)
    if dst is not None:
        with atomic_output(dst, private=private) as tmp:
            ok, encoded = cv2.imencode(dst.suffix.lower(), image)
            if not ok:
                raise InputError(f"{dst}: could not encode the image as {dst.suffix}")
            encoded.tofile(tmp)
    return FileResult(dst, 1, image.shape[1], image.shape[0], outcome.faces, int(outcome.failed_closed),
                      time.perf_counter() - started)


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without the errno and the call that PyAV adds to them."""
    return str(getattr(exc, "strerror", None) or exc)


def open_video(path: Path) -> Any:
    """The opened container, once its first video stream has a size within limits and, where the container has an
    index (MP4, MOV), the index does not point past the end of the file. Every decoder, the probe's included, is
    held to MAX_VIDEO_PIXELS by FFmpeg itself (``max_pixels``): a header may lie about the frames' size."""
    check_input(path)
    limit = {"max_pixels": str(MAX_VIDEO_PIXELS)}
    try:
        # ``options`` reach the decoders avformat_find_stream_info opens to probe the streams.
        container = av.open(str(path), mode="r", timeout=(10.0, 10.0), options=limit)
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable video (corrupt, truncated, or not a video format: "
                         f"{ffmpeg_reason(exc).lower()})") from exc
    try:
        demuxer = container.format.name
        if demuxer.endswith("_pipe") or demuxer in ("image2", "image2pipe"):
            # A still image in a format whose header is not read here (ICO, PCX, SGI, ...): refused, not decoded.
            raise InputError(f"{path}: a still image in a format that is not accepted ({demuxer.removesuffix('_pipe')}"
                             f"); send {ACCEPTED_IMAGES}, or a video")
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        vin = container.streams.video[0]
        vin.codec_context.options = {**vin.codec_context.options, **limit}  # the decoder the frames come from
        check_video_size(path, vin.codec_context.width, vin.codec_context.height)
        # An MP4 with its index first ("faststart", as phones and web tools write it) opens fine when cut short;
        # without this its end would only show after every frame that is there was decoded and hidden.
        ends = [entry.pos + entry.size for entry in vin.index_entries if entry.pos >= 0]
        if ends and max(ends) > path.stat().st_size:
            have = sum(1 for end in ends if end <= path.stat().st_size)
            raise InputError(f"{path}: video is truncated: the file holds {have} of its {len(ends)} frames")
    except BaseException:
        container.close()
        raise
    return container


def check_video_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_VIDEO_PIXELS:
        raise InputError(f"{path}: video of {width}x{height} is over the {MAX_VIDEO_PIXELS // 1_000_000} MP "
                         "limit")
