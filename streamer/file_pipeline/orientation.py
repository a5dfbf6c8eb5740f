"""A video's display matrix (a phone's rotation metadata) applied to its pixels, so faces are detected upright and
the output, which carries no rotation, displays as the input did.

PyAV's ``VideoFrame.rotation`` is not used: it truncates the angle where FFmpeg rounds it, and it leaves out the
mirroring that a matrix may also hold.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


def as_stored(image: Image) -> Image:
    return image


def _turn(op: Callable[..., Any], *args: Any) -> Callable[[Image], Image]:
    return lambda image: np.asarray(op(image, *args), np.uint8)


def display_transform(frame: Any) -> tuple[Callable[[Image], Image], bool]:
    """How to turn a decoded frame's pixels into its display orientation, from the frame's display matrix (phones
    record sideways with a 90/180/270 rotation in the track header), and whether it swaps width and height.

    The rules are FFmpeg's own autorotate (fftools/ffmpeg_filter.c): the same matrix gives the same picture as
    ffmpeg, ffplay and browsers show. Rotations that are not a multiple of 90 degrees go to the nearest one."""
    matrix: tuple[int, ...] | None = None
    for side in frame.side_data:
        if getattr(side.type, "name", "") == "DISPLAYMATRIX" and len(bytes(side)) >= 36:
            matrix = struct.unpack("=9i", bytes(side)[:36])
    if matrix is None:
        return as_stored, False
    # av_display_rotation_get(): the counterclockwise angle of the 16.16 fixed-point 2x2 part.
    a, b, c, d = (v / 65536 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if math.hypot(a, c) == 0 or math.hypot(b, d) == 0:
        return as_stored, False
    theta = -round(-math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c))))
    theta = (round(theta / 90) * 90) % 360  # ffmpeg's get_rotation(), then to a quarter turn
    if theta == 90:
        if matrix[3] > 0:
            return _turn(cv2.transpose), True
        return _turn(cv2.rotate, cv2.ROTATE_90_CLOCKWISE), True
    if theta == 270:
        if matrix[3] < 0:
            return _turn(lambda image: cv2.flip(cv2.transpose(image), -1)), True
        return _turn(cv2.rotate, cv2.ROTATE_90_COUNTERCLOCKWISE), True
    if theta == 180:
        flip = {(True, True): -1, (True, False): 1, (False, True): 0, (False, False): None}[
            (matrix[0] < 0, matrix[4] < 0)]
        if flip is None:
            return as_stored, False
        # hflip then vflip as ffmpeg inserts them: both together are a half turn.
        return _turn(cv2.flip, flip), False
    if matrix[4] < 0:
        return _turn(cv2.flip, 0), False
    return as_stored, False
