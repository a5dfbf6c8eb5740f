"""Offline files: an image or a video in, the anonymized file out, through the same FrameProcessor as live streams.

Video runs as three stages on their own threads so both cores work: PyAV demux+decode -> detect+hide -> H.264
encode+mux. Output is written to a temporary file beside OUTPUT and renamed only when complete, so a failure or a
cancel never leaves a half-written OUTPUT.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from .processor import FrameProcessor

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi"})
MAX_IMAGE_PIXELS = 100_000_000
QUEUE_DEPTH = 8


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
    output: Path
    frames: int
    width: int
    height: int
    faces: int
    hidden_whole: int
    seconds: float


ProgressCallback = Callable[[Progress], None]


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


@contextmanager
def atomic_output(output: Path) -> Iterator[Path]:
    """A temporary path beside ``output`` that replaces it on success and is removed on any failure."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=f".partial{output.suffix}", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


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
    """
    with path.open("rb") as f:
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
        if head.startswith(b"\xff\xd8"):
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
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS, before anything decodes it whole."""
    check_input(path)
    declared = declared_image_size(path)
    if declared is not None:
        width, height = declared
        if width * height > MAX_IMAGE_PIXELS:
            raise InputError(f"{path}: image of {width}x{height} is over the {MAX_IMAGE_PIXELS // 1_000_000} MP "
                             "limit")
        return
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: not a readable image")
            ctx = container.streams.video[0].codec_context
            width, height = ctx.width, ctx.height
    except av.FFmpegError as exc:
        raise InputError(f"{path}: not a readable image (corrupt, or a format other than jpg/png/webp/bmp)") from exc
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image of {width}x{height} is over the {MAX_IMAGE_PIXELS // 1_000_000} MP limit")


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    check_image_size(path)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not a readable image (corrupt, or a format other than jpg/png/webp/bmp)")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image of {image.shape[1]}x{image.shape[0]} is over the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} MP limit")
    return np.asarray(image, np.uint8)


def anonymize_image(src: Path, dst: Path, processor: FrameProcessor) -> FileResult:
    if dst.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{dst}: output of an image must end in one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    started = time.perf_counter()
    image = read_image(src)
    outcome = processor.process(image, 0.0)
    with atomic_output(dst) as tmp:
        ok, encoded = cv2.imencode(dst.suffix.lower(), image)
        if not ok:
            raise InputError(f"{dst}: could not encode the image as {dst.suffix}")
        encoded.tofile(tmp)
    return FileResult(dst, 1, image.shape[1], image.shape[0], outcome.faces, int(outcome.failed_closed),
                      time.perf_counter() - started)


_END = object()


class _Stage(threading.Thread):
    """A pipeline thread that keeps its exception for the caller instead of dying silently."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._run = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping; a bounded queue is what keeps memory flat."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def open_video(path: Path) -> Any:
    check_input(path)
    try:
        container = av.open(str(path), mode="r", timeout=(10.0, 10.0))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream")
    return container


def anonymize_video(src: Path, dst: Path, processor: FrameProcessor, *, keep_audio: bool = False,
                    crf: int = 20, preset: str = "superfast", detect_workers: int = 1,
                    on_progress: ProgressCallback | None = None,
                    cancel: threading.Event | None = None) -> FileResult:
    """Anonymize a video file. ``detect_workers`` frames are detected at once (use one per core with a
    single-threaded detector on CPU)."""
    if dst.suffix.lower() not in VIDEO_SUFFIXES - {".webm"}:
        raise InputError(f"{dst}: output of a video must be .mp4, .mkv, .mov, .m4v or .avi (H.264)")
    started = time.perf_counter()
    container = open_video(src)
    stop = threading.Event()
    cancel = cancel or threading.Event()
    try:
        vin = container.streams.video[0]
        vin.thread_type = "AUTO"
        ain = container.streams.audio[0] if keep_audio and container.streams.audio else None
        width, height = vin.codec_context.width, vin.codec_context.height
        if width < 2 or height < 2:
            raise InputError(f"{src}: video stream has no usable size ({width}x{height})")
        # yuv420p needs even dimensions; drop the last odd row/column rather than rescale the whole picture.
        ew, eh = width - width % 2, height - height % 2
        total = vin.frames or None
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        time_base = vin.time_base or Fraction(1, 90000)
        decoded: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        hidden: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        counts = {"frames": 0, "faces": 0, "whole": 0}

        def decode() -> None:
            streams = [vin] + ([ain] if ain is not None else [])
            index = 0
            try:
                for packet in container.demux(streams):
                    if stop.is_set():
                        return
                    if packet.stream is ain:
                        if packet.dts is not None and not _put(decoded, ("audio", packet), stop):
                            return
                        continue
                    for frame in packet.decode():
                        t = float(frame.pts * time_base) if frame.pts is not None else index / float(rate)
                        pts = frame.pts if frame.pts is not None else round(index / float(rate) / time_base)
                        image = frame.to_ndarray(format="bgr24")[:eh, :ew]
                        index += 1
                        if not _put(decoded, ("video", (image, pts, t)), stop):
                            return
                # A container that promised more frames than it gave is truncated: fail rather than hand back a
                # silently shorter video (a small slack covers edit lists and rounding in frame counts).
                if total and index < total * 0.99 - 1:
                    raise InputError(f"{src}: video ends after {index} of {total} frames (truncated or corrupt)")
            except av.FFmpegError as exc:
                raise InputError(f"{src}: video could not be decoded after {index} frame(s) ({exc})") from exc
            finally:
                _put(decoded, _END, stop)

        def hide() -> None:
            # Detection of the next frames runs ahead on `detect_workers` threads; tracking and hiding then take
            # the results strictly in frame order, which the hold needs.
            pending: deque[tuple[Any, Future[tuple[Any, float]] | None]] = deque()

            def finish_oldest() -> bool:
                item, future = pending.popleft()
                if future is not None:
                    image, _, t = item[1]
                    detections, detect_ms = future.result()
                    outcome = processor.apply(image, t, detections, detect_ms)
                    counts["faces"] += outcome.faces
                    counts["whole"] += outcome.failed_closed and outcome.held == 0
                return _put(hidden, item, stop)

            try:
                with ThreadPoolExecutor(detect_workers, thread_name_prefix="detect") as pool:
                    while True:
                        item = _get(decoded, stop)
                        if item is _END:
                            break
                        future = pool.submit(processor.detect, item[1][0], item[1][2]) if item[0] == "video" else None
                        pending.append((item, future))
                        if len(pending) > 2 * detect_workers and not finish_oldest():
                            return
                    while pending:
                        if not finish_oldest():
                            return
            finally:
                for _, future in pending:
                    if future is not None:
                        future.cancel()
                _put(hidden, _END, stop)

        with atomic_output(dst) as tmp:
            output = av.open(str(tmp), mode="w", format=_muxer_for(dst))
            try:
                vout = output.add_stream("libx264", rate=rate)
                vout.width, vout.height, vout.pix_fmt = ew, eh, "yuv420p"
                vout.time_base = time_base
                vout.codec_context.time_base = time_base
                vout.options = {"crf": str(crf), "preset": preset}
                aout = output.add_stream_from_template(ain) if ain is not None else None
                stages = [_Stage("decode", decode), _Stage("hide", hide)]
                for stage in stages:
                    stage.start()
                try:
                    while True:
                        if cancel.is_set():
                            raise Cancelled(f"{src}: cancelled")
                        item = _get(hidden, stop)
                        if item is _END:
                            break
                        kind, payload = item
                        if kind == "audio":
                            payload.stream = aout
                            output.mux(payload)
                            continue
                        image, pts, _ = payload
                        yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
                        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                        frame.pts, frame.time_base = pts, time_base
                        output.mux(vout.encode(frame))
                        counts["frames"] += 1
                        if on_progress is not None:
                            on_progress(Progress(counts["frames"], total, time.perf_counter() - started))
                    for stage in stages:
                        stage.join()
                        if stage.error is not None:
                            raise stage.error
                    if counts["frames"] == 0:
                        raise InputError(f"{src}: video has no decodable frames")
                    output.mux(vout.encode(None))
                finally:
                    stop.set()
                    for stage in stages:
                        stage.join(timeout=5)
            finally:
                output.close()
        return FileResult(dst, counts["frames"], ew, eh, counts["faces"], counts["whole"],
                          time.perf_counter() - started)
    finally:
        stop.set()
        container.close()


def _muxer_for(dst: Path) -> str:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}[dst.suffix.lower()]
