"""Each sent frame carries its number as a barcode, so a returned frame is matched to the very frame that was sent,
whatever the server does with timestamps (aiortc gives RTP timestamps a random offset) or how many frames it drops.

One code everywhere: a grid of square blocks, ``COLS`` wide and ``ROWS`` high. Top row: a guard (white, black,
white, ...); next ``DATA_ROWS`` rows: the number's ``BITS`` bits, most significant first, white = 1; last
``DATA_ROWS`` rows: the same bits inverted. A frame counts as coded only when every block is clearly light or dark
(the inner half of each block is sampled, away from the edges that VP8 and H.264 smear), the guard is intact and
every bit reads as the opposite of its complement: a mask, a blur or a crop over any part of the code makes it
unreadable (None), never another number. (An encoder starved of bits may leave an earlier frame's code in place,
whole: that reads as the earlier number, which is what the frame shows there.)

Where it goes is a ``Placement``: rows added to the picture, black but for the code, so no true face is ever under
it (render the picture that many rows shorter than the frame to send):

- ``STRIP``: 80 rows above the picture, 16 px blocks in its top-left corner, for aiortc peers, whose frames come
  back at the size sent (testkit.wire);
- ``CENTRED_STRIP``: 256 rows above the picture, 32 px blocks centred near its top, for a browser, which may crop
  the picture to another shape and scale it down under load (to 320x180 even), and under whose large close-up faces
  the masks may reach up into the strip (hence the 88 black rows between the code and the picture);
- ``BAND``: 80 rows below the picture, 16 px blocks in its bottom-left corner (128 x 80 px, narrow so that the padded
  mask of a large face reaching the bottom of the picture does not cover it), for the live benchmarks and the soak
  (testkit.judging.with_band).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import av
import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

BITS = 16  # numbers are taken mod 2**16: 36 minutes at 30 fps
COLS = 8
DATA_ROWS = BITS // COLS
ROWS = 1 + 2 * DATA_ROWS
GUARD = np.array([1 - (i % 2) for i in range(COLS)], np.uint8)
Y_LIGHT, Y_DARK = 235, 16  # luma of a white and a black block (what BGR 255 and 0 convert to)
LIGHT_MIN, DARK_MAX = 170.0, 80.0  # a block's mean reads as 1 at or above LIGHT_MIN, as 0 at or below DARK_MAX


@dataclass(frozen=True)
class Placement:
    """Where the code sits in a frame as sent: in a strip of ``height`` rows above the picture (or a band below it
    with ``below``), its blocks ``block`` px square, its left edge at ``x0`` (None: centred in the frame) and its
    top edge ``y0`` rows into the strip or band."""

    height: int
    below: bool = False
    block: int = 16
    x0: int | None = 0
    y0: int = 0

    def __post_init__(self) -> None:
        if self.block < 4 or self.y0 < 0 or self.y0 + self.code_height > self.height:
            raise ValueError(f"a code of {self.block} px blocks at row {self.y0} does not fit {self.height} rows")

    @property
    def code_width(self) -> int:
        return COLS * self.block

    @property
    def code_height(self) -> int:
        return ROWS * self.block

    def origin(self, width: int, height: int) -> tuple[int, int]:
        """The code's top-left corner in a frame of ``width`` x ``height`` as sent."""
        x = (width - self.code_width) // 2 if self.x0 is None else self.x0
        return x, (height - self.height if self.below else 0) + self.y0


STRIP = Placement(height=80)
CENTRED_STRIP = Placement(height=256, block=32, x0=None, y0=8)
BAND = Placement(height=80, below=True)


def _grid(number: int) -> U8:
    """The code of ``number`` (mod 2**BITS): 1 (white) or 0 (black) per block, (ROWS, COLS)."""
    number %= 1 << BITS
    bits = np.array([(number >> (BITS - 1 - k)) & 1 for k in range(BITS)], np.uint8).reshape(DATA_ROWS, COLS)
    return np.vstack([GUARD[None, :], bits, 1 - bits])


def _blocks(number: int, where: Placement, light: int, dark: int) -> U8:
    cells = np.where(_grid(number) == 1, light, dark).astype(np.uint8)
    return np.repeat(np.repeat(cells, where.block, axis=0), where.block, axis=1)


def _origin_in(width: int, height: int, where: Placement) -> tuple[int, int]:
    x, y = where.origin(width, height)
    if x < 0 or x + where.code_width > width or height < where.height:
        raise ValueError(f"a {width}x{height} frame cannot hold the code {where}")
    return x, y


def stamp(frame_bgr: U8, number: int, where: Placement = STRIP) -> U8:
    """A copy of ``frame_bgr`` with ``number`` (mod 2**BITS) painted into its strip or band, which the frame must
    already have (black: testkit.wire.as_sent, testkit.judging.with_band; ``framed`` adds it)."""
    h, w = frame_bgr.shape[:2]
    x, y = _origin_in(w, h, where)
    out = np.array(frame_bgr, np.uint8)
    out[y:y + where.code_height, x:x + where.code_width] = _blocks(number, where, 255, 0)[..., None]
    return out


def framed(picture_bgr: U8, number: int, where: Placement = STRIP) -> U8:
    """``picture_bgr`` with a black strip above it (a band below it) that carries ``number``."""
    h, w = picture_bgr.shape[:2]
    out = np.zeros((h + where.height, w, 3), np.uint8)
    if where.below:
        out[:h] = picture_bgr
    else:
        out[where.height:] = picture_bgr
    return stamp(out, number, where)


def stamp_i420(i420: U8, width: int, height: int, number: int, where: Placement = BAND) -> None:
    """Paint ``number`` (mod 2**BITS) into a yuv420p frame (a ``(height * 3 / 2, width)`` array) in place, into its
    strip or band (black already); the chroma under the code is set neutral."""
    x, y = _origin_in(width, height, where)
    i420[y:y + where.code_height, x:x + where.code_width] = _blocks(number, where, Y_LIGHT, Y_DARK)
    # Chroma planes: U is rows h..h+h/4 (two half-width rows per line of h/2), V after it. Neutral grey = 128.
    u = i420[height:height + height // 4].reshape(height // 2, width // 2)
    v = i420[height + height // 4:height + height // 2].reshape(height // 2, width // 2)
    rows = slice(y // 2, (y + where.code_height + 1) // 2)
    cols = slice(x // 2, (x + where.code_width + 1) // 2)
    u[rows, cols] = 128
    v[rows, cols] = 128


def crop_of(sent: tuple[int, int], shown: tuple[int, int]) -> tuple[int, int, int, int]:
    """The part (x0, y0, width, height) of a ``sent``-sized frame a browser shows at ``shown`` size: all of it when
    the shapes agree, else the centre cropped to the shown shape (Chromium's crop-and-scale)."""
    width, height = sent
    want = shown[0] / shown[1]
    if abs(width / height - want) <= 0.01:
        return 0, 0, width, height
    cw, ch = (round(height * want), height) if width / height > want else (width, round(width / want))
    return (width - cw) // 2, (height - ch) // 2, cw, ch


def _block_means(gray: U8, sent: tuple[int, int], where: Placement, crop: bool) -> npt.NDArray[np.float64] | None:
    """The mean of the inner half of each block (away from the edges that codecs smear), (ROWS, COLS), in a frame
    sent at ``sent`` size and shown at ``gray``'s (scaled, and centre-cropped first with ``crop``); None when the
    code is not all in the frame."""
    h, w = gray.shape[:2]
    x, y = where.origin(*sent)
    b, q = where.block, where.block // 4
    if (w, h) == sent:  # as sent (aiortc peers, the cameras' viewers): no crop, no scale
        if x < 0 or x + where.code_width > w or y < 0 or y + where.code_height > h:
            return None
        code = gray[y:y + where.code_height, x:x + where.code_width].reshape(ROWS, b, COLS, b)
        means: npt.NDArray[np.float64] = code[:, q:b - q, :, q:b - q].mean(axis=(1, 3))
        return means
    cx, cy, cw, ch = crop_of(sent, (w, h)) if crop else (0, 0, *sent)
    sx, sy = w / cw, h / ch
    left, top = x + b * np.arange(COLS) - cx, y + b * np.arange(ROWS) - cy
    x0, x1 = np.rint((left + q) * sx).astype(np.intp), np.rint((left + b - q) * sx).astype(np.intp)
    y0, y1 = np.rint((top + q) * sy).astype(np.intp), np.rint((top + b - q) * sy).astype(np.intp)
    if x0[0] < 0 or y0[0] < 0 or x1[-1] > w or y1[-1] > h or (x1 <= x0).any() or (y1 <= y0).any():
        return None
    # Each block's sum from the summed-area table of the code's region.
    table = np.asarray(cv2.integral(gray[y0[0]:y1[-1], x0[0]:x1[-1]]), np.int64)
    r0, r1, c0, c1 = y0[:, None] - y0[0], y1[:, None] - y0[0], x0[None, :] - x0[0], x1[None, :] - x0[0]
    return np.asarray((table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]) / ((r1 - r0) * (c1 - c0)))


def read(gray: U8, sent_width: int, sent_height: int, where: Placement = STRIP, crop: bool = False) -> int | None:
    """The number in a returned frame's luma plane (or grey picture), or None when it carries no intact code. The
    frame was sent at ``sent_width`` x ``sent_height``; it may come back scaled, and with ``crop`` centre-cropped to
    another shape first (``crop_of``)."""
    means = _block_means(gray, (sent_width, sent_height), where, crop)
    if means is None:
        return None
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


def luma_of(frame: av.VideoFrame) -> U8:
    """The Y plane of a decoded frame as a (height, width) view (no colour conversion)."""
    plane = frame.planes[0]
    data: U8 = np.frombuffer(cast(Any, plane), np.uint8)  # a view, no copy
    return data.reshape(-1, plane.line_size)[:frame.height, :frame.width]
