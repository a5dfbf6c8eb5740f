"""Decode: a video's frames as BGR in display orientation, every one at the first frame's size cut to even
dimensions (the encoder has one size, and yuv420p needs even ones), with their timestamps, and the copied audio's
packets between them in file order."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from ..offline import MAX_VIDEO_PIXELS, InputError, check_video_size, ffmpeg_reason
from .audio import AudioCopy
from .orientation import as_stored, display_transform

logger = logging.getLogger(__name__)

# Packets read before the first video frame (audio ahead of it, decoder delay); beyond that the file has no usable
# video, and holding more would let a hostile file grow memory.
HEAD_PACKETS = 2000

# ("video", (image, pts, t)) or ("audio", packet)
Item = tuple[str, Any]


class VideoDecoder:
    """The frames of an opened container's first video stream. Creating it decodes the first frame: its display
    matrix says which way up the picture goes, and so the output's size (``width`` x ``height``)."""

    def __init__(self, src: Path, container: Any, audio: AudioCopy) -> None:
        vin = container.streams.video[0]
        vin.thread_type = "AUTO"
        self._src = src
        self._packets = _demux_decode(container, vin, audio.source)
        # Audio ahead of the first frame waits here, in order.
        self._head = self._read_head(vin)
        first = self._head[-1][1]
        check_video_size(src, first.width, first.height)
        self._orient, swaps = display_transform(first)
        width, height = (first.height, first.width) if swaps else (first.width, first.height)
        if width < 2 or height < 2:
            raise InputError(f"{src}: video stream has no usable size ({width}x{height})")
        if self._orient is not as_stored:
            logger.info("[%s] display matrix applied: the picture is anonymized and written as shown, %dx%d",
                        src.name, width, height)
        self._shown = (width, height)
        # yuv420p needs even dimensions; drop the last odd row/column rather than rescale the whole picture.
        self.width, self.height = width - width % 2, height - height % 2
        self.total: int | None = vin.frames or None  # None when the container does not say
        self.rate: Fraction = vin.average_rate or vin.guessed_rate or Fraction(30)
        self.time_base: Fraction = vin.time_base or Fraction(1, 90000)

    def _read_head(self, vin: Any) -> list[Item]:
        head: list[Item] = []
        try:
            for item in self._packets:
                head.append(item)
                if item[0] == "video":
                    break
                if len(head) >= HEAD_PACKETS:
                    raise InputError(f"{self._src}: no video frame in the first {HEAD_PACKETS} packets")
        except av.FFmpegError as exc:
            # No size from the probe: FFmpeg's max_pixels may be what refused the frame.
            hint = "" if vin.codec_context.width else f"; frames over {MAX_VIDEO_PIXELS // 1_000_000} MP are refused"
            raise InputError(f"{self._src}: video could not be decoded ({ffmpeg_reason(exc)}{hint})") from exc
        if not head or head[-1][0] != "video":
            raise InputError(f"{self._src}: video has no decodable frames")
        return head

    def items(self) -> Iterator[Item]:
        """Every frame and audio packet from the start, once; InputError when the video cannot be decoded to its
        end."""
        src, (width, height) = self._src, self._shown
        index = 0
        try:
            for kind, payload in itertools.chain(self._head, self._packets):
                if kind == "audio":
                    yield kind, payload
                    continue
                frame = payload
                # Refused before to_ndarray: a stream may switch to a size its header never declared.
                check_video_size(src, frame.width, frame.height)
                t = float(frame.pts * self.time_base) if frame.pts is not None else index / float(self.rate)
                pts = frame.pts if frame.pts is not None else round(index / float(self.rate) / self.time_base)
                image = self._orient(frame.to_ndarray(format="bgr24"))
                if image.shape[:2] != (height, width):
                    # A mid-stream size change (a spliced or adaptive stream): the encoder has one size.
                    image = np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
                index += 1
                yield "video", (image[:self.height, :self.width], pts, t)
            # A container that promised more frames than it gave is truncated: fail rather than hand back a silently
            # shorter video (a small slack covers edit lists and rounding in frame counts).
            if self.total and index < self.total * 0.99 - 1:
                raise InputError(f"{src}: video ends after {index} of {self.total} frames (truncated or corrupt)")
        except av.FFmpegError as exc:
            raise InputError(f"{src}: video could not be decoded after {index} frame(s) ({ffmpeg_reason(exc)})") \
                from exc


def _demux_decode(container: Any, vin: Any, ain: Any) -> Iterator[Item]:
    """("video", frame) and ("audio", packet) in file order; FFmpeg's errors pass through as they are."""
    for packet in container.demux([vin] + ([ain] if ain is not None else [])):
        if packet.stream is ain:
            if packet.dts is not None:
                yield "audio", packet
            continue
        for frame in packet.decode():
            yield "video", frame
