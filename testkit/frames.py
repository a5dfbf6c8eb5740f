"""Frames of real clips at a given size: centre-cropped to its shape, then resized."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from .truth import Image


def fit_frame(frame: Image, width: int, height: int) -> Image:
    """Centre-crop ``frame`` to the aspect ratio of width x height, then resize to exactly that size."""
    fh, fw = frame.shape[:2]
    target = width / height
    if fw / fh > target:  # too wide: crop the sides
        cw = round(fh * target)
        x0 = (fw - cw) // 2
        frame = frame[:, x0:x0 + cw]
    elif fw / fh < target:  # too tall: crop top and bottom
        ch = round(fw / target)
        y0 = (fh - ch) // 2
        frame = frame[y0:y0 + ch]
    if frame.shape[1] == width and frame.shape[0] == height:
        return np.ascontiguousarray(frame)
    interpolation = cv2.INTER_AREA if frame.shape[1] > width else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(frame, (width, height), interpolation=interpolation), dtype=np.uint8)


def read_fitted(path: Path, width: int, height: int, count: int) -> tuple[list[Image], float]:
    """The first ``count`` frames of ``path`` (fewer when it is shorter) as BGR fitted to width x height, and the
    clip's frame rate."""
    frames: list[Image] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.base_rate or 30)
        for frame in container.decode(stream):
            frames.append(fit_frame(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8), width, height))
            if len(frames) >= count:
                break
    if not frames:
        raise ValueError(f"{path} has no decodable video frames")
    return frames, fps
