"""testkit.framecode, the frame-number barcode that live tests and benchmarks use to match returned frames to sent
frames. It round-trips in every placement: on exact pixels, through real VP8 and H.264 at low bitrates (PyAV), and
through a browser's crop, scale and re-encode. A code that is not intact (under a mask, blurred, one block wrong,
cut off) reads as None, never as another number."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testkit.framecode import (
    BAND,
    BITS,
    CENTRED_STRIP,
    COLS,
    ROWS,
    STRIP,
    Placement,
    crop_of,
    framed,
    luma_of,
    read,
    stamp,
    stamp_i420,
)

U8 = np.ndarray[Any, np.dtype[np.uint8]]

# Each placement at the frame size its users send.
PLACEMENTS = {"strip": (STRIP, (640, 480)), "centred_strip": (CENTRED_STRIP, (1280, 720)), "band": (BAND, (640, 480))}
FRAMES = 30
# Low for the size: a quarter or less of what WebRTC gives a webcam, on pictures that change everywhere every frame.
BITRATE_640x480 = 200_000


def pictures(width: int, height: int, count: int, seed: int = 0) -> list[U8]:
    """A textured picture panning 7 px a frame under fresh noise: every frame costs the encoder bits everywhere."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.integers(0, 256, (height // 8, width // 4, 3), np.uint8), (2 * width, height),
                         interpolation=cv2.INTER_CUBIC)
    out = []
    for t in range(count):
        x = (7 * t) % width
        noisy = texture[:, x:x + width].astype(np.int16) + rng.integers(-24, 25, (height, width, 3))
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


def numbers(count: int) -> list[int]:
    """Frame numbers that change many bits from one frame to the next, wrapping past 2**BITS."""
    return [(65_000 + 4099 * i) % (1 << BITS) for i in range(count)]


def coded_clip(where: Placement, size: tuple[int, int], seed: int = 0) -> list[U8]:
    """FRAMES frames of ``size`` (yuv420p), the picture beside the placement's strip or band, numbered."""
    width, height = size
    return [np.asarray(cv2.cvtColor(framed(picture, n, where), cv2.COLOR_BGR2YUV_I420), np.uint8)
            for picture, n in zip(pictures(width, height - where.height, FRAMES, seed), numbers(FRAMES), strict=True)]


def through_codec(frames: list[U8], size: tuple[int, int], codec: str, bitrate: int) -> list[av.VideoFrame]:
    """``frames`` (yuv420p) encoded at ``bitrate`` as a live sender would (no B-frames, no look-ahead) and decoded;
    each decoded frame's pts is the index of the frame it came from."""
    encoder: Any = av.CodecContext.create({"vp8": "libvpx", "h264": "libx264"}[codec], "w")
    encoder.width, encoder.height = size
    encoder.pix_fmt, encoder.time_base, encoder.framerate = "yuv420p", Fraction(1, 30), Fraction(30)
    encoder.bit_rate = bitrate
    encoder.options = ({"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"} if codec == "vp8"
                       else {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"})
    decoder: Any = av.CodecContext.create(codec, "r")
    decoded: list[av.VideoFrame] = []
    for i, i420 in enumerate([*frames, None]):
        if i420 is None:
            packets = encoder.encode(None)
        else:
            frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
            frame.pts = i
            packets = encoder.encode(frame)
        for packet in packets:
            decoded.extend(decoder.decode(packet))
    assert [f.pts for f in decoded] == list(range(len(frames)))
    return decoded


def assert_read(got: list[int | None], want: list[int], at_least: float, what: str) -> None:
    wrong = [(k, g, w) for k, (g, w) in enumerate(zip(got, want, strict=True)) if g is not None and g != w]
    assert not wrong, f"{what}: misread (frame, read, sent): {wrong}"
    readable = sum(g is not None for g in got)
    assert readable >= at_least * len(want), f"{what}: only {readable} of {len(want)} frames read"


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", PLACEMENTS)
def test_every_placement_round_trips_and_both_ways_of_painting_agree(name: str) -> None:
    where, (width, height) = PLACEMENTS[name]
    picture = pictures(width, height - where.height, 1)[0]
    rows = slice(0, height - where.height) if where.below else slice(where.height, height)  # the picture's
    blank = np.zeros((height, width, 3), np.uint8)  # the frame as sent before its number is painted
    blank[rows] = picture
    for n in (0, 1, 0x5A5A, 0xA5A5, (1 << BITS) - 1, 1 << BITS, 123_456):
        bgr = framed(picture, n, where)
        assert (stamp(blank, n, where) == bgr).all()
        i420 = np.asarray(cv2.cvtColor(blank, cv2.COLOR_BGR2YUV_I420), np.uint8)
        stamp_i420(i420, width, height, n, where)
        assert (i420 == cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)).all(), "painting yuv420p and BGR differ"
        gray = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.uint8)
        assert read(i420[:height], width, height, where) == read(gray, width, height, where) == n % (1 << BITS)
    assert (framed(picture, 0x5A5A, where)[rows] == picture).all(), "the code is over the picture"


@pytest.mark.parametrize("codec", ["vp8", "h264"])
@pytest.mark.parametrize("name", PLACEMENTS)
def test_the_code_survives_a_low_bitrate_codec(name: str, codec: str) -> None:
    where, (width, height) = PLACEMENTS[name]
    bitrate = round(BITRATE_640x480 * width * height / (640 * 480))
    decoded = through_codec(coded_clip(where, (width, height)), (width, height), codec, bitrate)
    got = [read(luma_of(frame), width, height, where) for frame in decoded]
    assert_read(got, numbers(FRAMES), 0.9, f"{name} through {codec} at {bitrate // 1000} kbps")


@pytest.mark.parametrize("shown", [(640, 480), (320, 240), (640, 360)])
def test_the_centred_strip_survives_a_browsers_crop_scale_and_reencode(shown: tuple[int, int]) -> None:
    """Chromium crops a 1280x720 camera to the shape asked for (4:3 here, or none), scales it and sends it on with
    VP8 at its own bitrate: the centred strip is read back from what arrives."""
    sent = (1280, 720)
    first = through_codec(coded_clip(CENTRED_STRIP, sent, seed=1), sent, "vp8", 3 * BITRATE_640x480)
    x0, y0, cw, ch = crop_of(sent, shown)
    seen = [np.asarray(cv2.cvtColor(cv2.resize(f.to_ndarray(format="bgr24")[y0:y0 + ch, x0:x0 + cw], shown,
                                               interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2YUV_I420), np.uint8)
            for f in first]
    bitrate = round(BITRATE_640x480 * shown[0] * shown[1] / (640 * 480))
    second = through_codec(seen, shown, "vp8", bitrate)
    got = [read(luma_of(frame), *sent, CENTRED_STRIP, crop=True) for frame in second]
    assert_read(got, numbers(FRAMES), 0.9, f"cropped and scaled to {shown[0]}x{shown[1]}")
    # Read as if uncropped, the blocks are looked for in the wrong places: nothing, not a wrong number.
    if crop_of(sent, shown)[2:] != sent:
        assert all(read(luma_of(frame), *sent, CENTRED_STRIP) is None for frame in second)


# ------------------------------------------------------------------------------------------ codes not intact


def block_box(where: Placement, size: tuple[int, int], row: int, col: int) -> tuple[slice, slice]:
    x, y = where.origin(*size)
    return (slice(y + row * where.block, y + (row + 1) * where.block),
            slice(x + col * where.block, x + (col + 1) * where.block))


@pytest.mark.parametrize("name", PLACEMENTS)
def test_a_code_not_intact_reads_as_none(name: str) -> None:
    where, (width, height) = PLACEMENTS[name]
    n = 0x5A5A
    bgr = framed(pictures(width, height - where.height, 1)[0], n, where)
    x, y = where.origin(width, height)
    code = (slice(y, y + where.code_height), slice(x, x + where.code_width))

    def read_bgr(image: U8, size: tuple[int, int] = (width, height)) -> int | None:
        return read(np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8), *size, where)

    assert read_bgr(bgr) == n
    for row in range(ROWS):  # any one block wrong: the guard, a bit (against its complement), a complement
        for col in range(COLS):
            damaged = bgr.copy()
            damaged[block_box(where, (width, height), row, col)] ^= 255
            assert read_bgr(damaged) is None, (row, col)
    for value in (0, 128, 255):  # a solid mask over the lower half of the code, or the left half
        for part in ((slice(y + where.code_height // 2, y + where.code_height), code[1]),
                     (code[0], slice(x, x + where.code_width // 2))):
            damaged = bgr.copy()
            damaged[part] = value
            assert read_bgr(damaged) is None, (value, part)
    blurred = bgr.copy()
    blurred[code] = cv2.GaussianBlur(np.ascontiguousarray(bgr[code]), (0, 0), where.block)
    assert read_bgr(blurred) is None
    pixelated = bgr.copy()  # a mosaic of cells three blocks wide
    cells = cv2.resize(np.ascontiguousarray(bgr[code]), (COLS // 3 + 1, ROWS // 3 + 1), interpolation=cv2.INTER_AREA)
    pixelated[code] = cv2.resize(cells, (where.code_width, where.code_height), interpolation=cv2.INTER_NEAREST)
    assert read_bgr(pixelated) is None
    # Cut off: a frame that lost the strip's or band's rows, read as the size sent.
    cut = bgr[:height - where.height] if where.below else bgr[where.height:]
    assert read_bgr(np.ascontiguousarray(cut)) is None
    assert read_bgr(np.ascontiguousarray(cut), (width, cut.shape[0])) is None


@settings(max_examples=300, deadline=None, database=None)
@given(name=st.sampled_from(sorted(PLACEMENTS)), n=st.integers(0, (1 << BITS) - 1),
       box=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), value=st.integers(0, 255))
def test_a_mask_anywhere_over_the_code_never_makes_another_number(name: str, n: int,
                                                                   box: tuple[float, float, float, float],
                                                                   value: int) -> None:
    """A mask (a rectangle of one grey, the way the product hides a face) over any part of the code: the number or
    None, never another."""
    where, (width, height) = PLACEMENTS[name]
    x, y = where.origin(width, height)
    i420 = np.zeros((height * 3 // 2, width), np.uint8)
    stamp_i420(i420, width, height, n, where)
    gray = i420[:height]
    x1, x2 = sorted(x + round(f * where.code_width) for f in box[:2])
    y1, y2 = sorted(y + round(f * where.code_height) for f in box[2:])
    gray[y1:y2, x1:x2] = value
    assert read(gray, width, height, where) in (n, None)


def test_a_placement_must_hold_its_code() -> None:
    with pytest.raises(ValueError):
        Placement(height=79)  # 5 rows of 16 px blocks
    with pytest.raises(ValueError):
        Placement(height=100, block=16, y0=30)
    with pytest.raises(ValueError):
        framed(np.zeros((100, 100, 3), np.uint8), 1, STRIP)  # narrower than the code's 128 px
