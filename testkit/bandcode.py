"""Each frame's number as a barcode in the band below the picture (bottom-left corner), for live runs whose returned
frames must be matched to the frames sent: aiortc gives RTP timestamps a random offset, and a server may drop
frames. The picture above the band is a truth clip rendered ``CODE_H`` rows shorter (testkit.judging.with_band), so
no true face is ever under the code.

(testkit.framecode is the other strip, above the picture, that the tests' clips and browsers carry.)
"""

from __future__ import annotations

from typing import Any, cast

import av
import cv2
import numpy as np
import numpy.typing as npt

from .truth import Image

# The barcode: 16-px blocks in the bottom-left corner of the frame (the band below the truth picture), COLS wide and
# 5 rows high (128 x 80 px, kept narrow so that the padded mask of a large face reaching the bottom of the picture
# does not cover it). Top row: a guard (white, black, white, ...); next two rows: the frame number's BITS bits, most
# significant first, white = 1; last two rows: the same bits inverted. A frame counts as coded only when the guard is
# intact and every bit reads as the opposite of its complement, each block clearly dark or light (its inner half is
# sampled, away from the edges that VP8 smears).
BLOCK = 16
BITS = 16
COLS = 8
DATA_ROWS = BITS // COLS
CODE_ROWS = 1 + 2 * DATA_ROWS
CODE_W = COLS * BLOCK
CODE_H = CODE_ROWS * BLOCK
Y_LIGHT, Y_DARK = 235, 16
LIGHT_MIN, DARK_MAX = 170.0, 80.0
GUARD = np.array([1 - (i % 2) for i in range(COLS)], np.uint8)


def stamp_code(i420: Image, width: int, height: int, number: int) -> None:
    """Paint ``number`` (mod 2**BITS) into the bottom-left corner of a yuv420p frame (``(h*3/2, w)`` array),
    in place; the chroma under the code is set neutral."""
    bits = np.array([(number >> (BITS - 1 - k)) & 1 for k in range(BITS)], np.uint8).reshape(DATA_ROWS, COLS)
    rows = np.vstack([GUARD[None, :], bits, 1 - bits])  # (CODE_ROWS, COLS)
    cells = np.where(rows == 1, Y_LIGHT, Y_DARK).astype(np.uint8)
    y0 = height - CODE_H
    i420[y0:height, :CODE_W] = np.repeat(np.repeat(cells, BLOCK, axis=0), BLOCK, axis=1)
    # Chroma planes: U is rows h..h+h/4 (two half-width rows per line of h/2), V after it. Neutral grey = 128.
    u = i420[height:height + height // 4].reshape(height // 2, width // 2)
    v = i420[height + height // 4:].reshape(height // 2, width // 2)
    u[y0 // 2:, :CODE_W // 2] = 128
    v[y0 // 2:, :CODE_W // 2] = 128


def read_code(luma: npt.NDArray[np.uint8], sent_width: int, sent_height: int) -> int | None:
    """The number in a returned frame's luma plane, or None when there is no valid code."""
    h, w = luma.shape[:2]
    if (w, h) == (sent_width, sent_height):
        strip = luma[h - CODE_H:h, :CODE_W]
    else:  # a resized frame (aiortc does not resize; a browser might): scale the strip back
        sx, sy = w / sent_width, h / sent_height
        region = luma[max(0, round(h - CODE_H * sy)):h, :max(1, round(CODE_W * sx))]
        strip = np.asarray(cv2.resize(region, (CODE_W, CODE_H), interpolation=cv2.INTER_AREA), np.uint8)
    if strip.shape != (CODE_H, CODE_W):
        return None
    q = BLOCK // 4
    blocks = strip.reshape(CODE_ROWS, BLOCK, COLS, BLOCK)[:, q:BLOCK - q, :, q:BLOCK - q]
    means = blocks.mean(axis=(1, 3))  # (CODE_ROWS, COLS)
    light, dark = means >= LIGHT_MIN, means <= DARK_MAX
    if not (light | dark).all():
        return None
    rows = light.astype(np.uint8)
    bits, inverted = rows[1:1 + DATA_ROWS], rows[1 + DATA_ROWS:]
    if not (rows[0] == GUARD).all() or not (bits != inverted).all():
        return None
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return value


def luma_of(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane of a decoded frame as a (height, width) view (no colour conversion)."""
    plane = frame.planes[0]
    data: npt.NDArray[np.uint8] = np.frombuffer(cast(Any, plane), np.uint8)  # a view, no copy
    return data.reshape(-1, plane.line_size)[:frame.height, :frame.width]
