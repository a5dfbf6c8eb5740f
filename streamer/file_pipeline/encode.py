"""Encode: the hidden frames as H.264 (yuv420p) at the input's rate and time base, muxed with the copied audio into
the container that the output's suffix names."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from .audio import AudioCopy

logger = logging.getLogger(__name__)

MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


class H264Output:
    """Writes ``path`` as the container of ``dst``'s suffix; closed on leaving the ``with`` block, finished or not."""

    def __init__(self, path: Path, dst: Path, size: tuple[int, int], rate: Fraction, time_base: Fraction, *,
                 crf: int, preset: str, audio: AudioCopy) -> None:
        try:
            self._open(path, dst, size, rate, time_base, crf, preset, audio)
        except (av.FFmpegError, ValueError) as exc:
            if not audio.kept:
                raise
            # The sound must never cost the picture: a track this container or the AAC encoder will not take
            # (found only when the header is written) is left out, and the file is made without it.
            logger.warning("%s: the sound cannot go into %s (%s); writing the video without it", dst.name,
                           dst.suffix, exc)
            audio.drop()
            self._open(path, dst, size, rate, time_base, crf, preset, audio)
        self._time_base = time_base
        self._audio = audio

    def _open(self, path: Path, dst: Path, size: tuple[int, int], rate: Fraction, time_base: Fraction, crf: int,
              preset: str, audio: AudioCopy) -> None:
        self._output = av.open(str(path), mode="w", format=MUXERS[dst.suffix.lower()])
        try:
            self._video = self._output.add_stream("libx264", rate=rate)
            self._video.width, self._video.height = size
            self._video.pix_fmt = "yuv420p"
            self._video.time_base = time_base
            self._video.codec_context.time_base = time_base
            self._video.options = {"crf": str(crf), "preset": preset}
            audio.add_to(self._output)
            self._output.start_encoding()  # the header now: a track it refuses shows here, not mid-file
        except BaseException:
            self._output.close()
            raise

    def __enter__(self) -> H264Output:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._output.close()

    def write(self, image: npt.NDArray[np.uint8], pts: int) -> None:
        yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, self._time_base
        self._output.mux(self._video.encode(frame))

    def write_audio(self, packet: Any) -> None:
        self._audio.mux(self._output, packet)

    def finish(self) -> None:
        """Flush the encoders: the frames they still hold go into the file."""
        self._output.mux(self._video.encode(None))
        self._audio.finish(self._output)
