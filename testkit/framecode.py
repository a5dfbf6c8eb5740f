"""Each sent frame carries its index in a strip of blocks at the top, so a returned frame is matched to the very
frame that was sent, whatever the server does with timestamps or how many frames it drops.

The strip: rows of black above the picture with ``BLOCKS`` blocks in a row: white, black (guards), ``INDEX_BITS``
bits (most significant first), one even-parity bit. ``Strip`` says how tall it is and where the blocks sit:
``LEFT`` (48 rows, 16 px blocks at the left) for aiortc peers, whose frames come back at the size sent;
``CENTRED`` (96 rows, 32 px blocks centred near its top) for a browser, which may crop the picture to another
shape and scale it down under load, and under whose large close-up faces the masks may reach up into the strip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

INDEX_BITS = 12
BLOCKS = 2 + INDEX_BITS + 1


@dataclass(frozen=True)
class Strip:
    height: int = 48
    x0: int | None = 16  # left edge of the first block; None: the blocks centred in the frame
    block: int = 16
    y0: int | None = None  # top edge of the blocks; None: centred in the strip

    def left(self, width: int) -> int:
        return (width - BLOCKS * self.block) // 2 if self.x0 is None else self.x0

    @property
    def top(self) -> int:
        return (self.height - self.block) // 2 if self.y0 is None else self.y0


LEFT = Strip()
CENTRED = Strip(height=96, x0=None, block=32, y0=8)
STRIP_HEIGHT = LEFT.height


def crop_of(sent: tuple[int, int], shown: tuple[int, int]) -> tuple[int, int, int, int]:
    """The part (x0, y0, width, height) of a ``sent``-sized frame a browser shows at ``shown`` size: all of it when
    the shapes agree, else the centre cropped to the shown shape (Chromium's crop-and-scale)."""
    width, height = sent
    want = shown[0] / shown[1]
    if abs(width / height - want) <= 0.01:
        return 0, 0, width, height
    cw, ch = (round(height * want), height) if width / height > want else (width, round(width / want))
    return (width - cw) // 2, (height - ch) // 2, cw, ch


def _cells(shown: tuple[int, int], sent: tuple[int, int], strip: Strip,
           crop: bool) -> list[tuple[int, int, int, int]]:
    """Each block's inner box (x0, y0, x1, y1) in a frame of ``shown`` size that came from one of ``sent`` size
    (scaled, and centre-cropped first when ``crop``)."""
    cx, cy, cw, ch = crop_of(sent, shown) if crop else (0, 0, *sent)
    sx, sy = shown[0] / cw, shown[1] / ch
    y0 = strip.top
    q = strip.block // 4  # the inner half of each block: away from the edges that codecs smear
    cells = []
    for i in range(BLOCKS):
        x0 = strip.left(sent[0]) + i * strip.block
        cells.append((round((x0 + q - cx) * sx), round((y0 + q - cy) * sy),
                      round((x0 + strip.block - q - cx) * sx), round((y0 + strip.block - q - cy) * sy)))
    return cells


def _bits(index: int) -> list[int]:
    bits = [(index >> (INDEX_BITS - 1 - k)) & 1 for k in range(INDEX_BITS)]
    return [1, 0, *bits, sum(bits) % 2]


def stamp_index(picture_bgr: U8, index: int, strip: Strip = LEFT) -> U8:
    """The picture with a black strip on top that carries ``index`` as blocks."""
    h, w = picture_bgr.shape[:2]
    x0 = strip.left(w)
    if x0 < 0 or w < x0 + BLOCKS * strip.block or strip.top + strip.block > strip.height:
        raise ValueError(f"picture {w} px wide is too narrow for the index strip")
    out = np.zeros((h + strip.height, w, 3), np.uint8)
    out[strip.height:] = picture_bgr
    y0 = strip.top
    for i, bit in enumerate(_bits(index % (1 << INDEX_BITS))):
        if bit:
            left = x0 + i * strip.block
            out[y0:y0 + strip.block, left:left + strip.block] = 255
    return out


def stamp_over(frame_bgr: U8, index: int, strip: Strip = LEFT) -> U8:
    """``frame_bgr`` with its top ``strip.height`` rows replaced by the index strip: the same size as sent (so a
    640x480 picture stays 640x480)."""
    return stamp_index(np.ascontiguousarray(frame_bgr[strip.height:]), index, strip)


def read_index(gray: U8, src_width: int, src_height: int, strip: Strip = LEFT, crop: bool = False) -> int | None:
    """The index stamped into a (decoded, possibly rescaled, with ``crop`` possibly centre-cropped) frame that
    was sent at ``src_width`` x ``src_height``, or None when unreadable."""
    h, w = gray.shape[:2]
    bits: list[int] = []
    for x0, y0, x1, y1 in _cells((w, h), (src_width, src_height), strip, crop):
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h or x1 <= x0 or y1 <= y0:
            return None
        mean = float(gray[y0:y1, x0:x1].mean())
        if 60 < mean < 190:
            return None
        bits.append(1 if mean >= 190 else 0)
    if bits[:2] != [1, 0] or sum(bits[2:2 + INDEX_BITS]) % 2 != bits[-1]:
        return None
    value = 0
    for b in bits[2:2 + INDEX_BITS]:
        value = (value << 1) | b
    return value
