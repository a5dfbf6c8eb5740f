"""Face hiding on real photos: what is hidden, how strongly, and that nothing else is touched."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from skimage import data as skdata

from streamer.anonymize import SOLID_BGR, anonymize, hide_frame, pad_boxes
from streamer.settings import AnonymizeSettings, Mode

Frame = npt.NDArray[np.uint8]
Boxes = npt.NDArray[np.float32]

# The dlib-annotated photos in ../shared/testdata/images (faces of 37..109 px).
ANNOTATED = ("2007_007763", "2008_001009", "2008_001322", "2008_002079", "2008_002470", "2008_002506",
             "2008_004176", "2008_007676", "2009_004587")
# CenterFace's box for Eileen Collins' face in skimage's astronaut (512x512), checked by eye.
ASTRONAUT_FACE = (180.0, 62.0, 271.0, 178.0)
MODES: tuple[Mode, ...] = ("mosaic", "blur", "solid")


def load_annotated(testdata: Path, name: str) -> tuple[Frame, Boxes]:
    image = cv2.imread(str(testdata / "images" / f"{name}.jpg"))
    assert image is not None, f"{name}.jpg did not decode"
    xywh = np.asarray(json.loads((testdata / "images" / f"{name}.json").read_text())["boxes"], np.float32)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return np.ascontiguousarray(image, dtype=np.uint8), xyxy


def astronaut(scale: float = 1) -> tuple[Frame, Boxes]:
    """The astronaut portrait resized by ``scale`` (her face is 91 px wide at 1) and her face box."""
    load: Callable[[], Frame] = skdata.astronaut  # skimage's own hints are incomplete
    bgr = np.ascontiguousarray(load()[:, :, ::-1], dtype=np.uint8)
    original = bgr.shape[1]  # the portrait is square
    size = round(original * scale)
    if size != original:
        bgr = np.asarray(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA if size < original
                                    else cv2.INTER_CUBIC), np.uint8)
    return bgr, np.asarray([ASTRONAUT_FACE], np.float32) * np.float32(size / original)


# The astronaut's face at 36, 91 and 364 px: small and large faces on any machine, test data or not.
ASTRONAUT_SCALES = {"astronaut 36px": 0.4, "astronaut 91px": 1.0, "astronaut 364px": 4.0}


def _runs(changed: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) runs between the positions where ``changed`` (between neighbours) is true."""
    edges = [0, *(np.flatnonzero(changed) + 1).tolist(), changed.size + 1]
    return list(itertools.pairwise(edges))


def mosaic_cells(region: Frame) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Column and row runs of a region, split wherever a whole column (row) differs from the next one."""
    cols = (region[:, 1:] != region[:, :-1]).any(axis=(0, 2))
    rows = (region[1:] != region[:-1]).any(axis=(1, 2))
    return _runs(cols), _runs(rows)


def face_detail(region: Frame) -> float:
    """Detail at the scale of facial features (eyes, mouth) left in a face region: the variance of the
    Laplacian once the region is brought to 64 x 64, so faces of any size compare alike."""
    gray = cv2.cvtColor(cv2.resize(region, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def padded_mask(shape: tuple[int, ...], boxes: Boxes, padding: float) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in pad_boxes(boxes, padding, shape[1], shape[0]).tolist():
        mask[y1:y2, x1:x2] = True
    return mask


def face_sets(testdata: Path) -> list[tuple[str, Frame, Boxes]]:
    """Each annotated photo with its smallest and its largest face (one box each), plus a big astronaut."""
    out: list[tuple[str, Frame, Boxes]] = []
    for name in ANNOTATED:
        image, boxes = load_annotated(testdata, name)
        widths = boxes[:, 2] - boxes[:, 0]
        for i in {int(np.argmin(widths)), int(np.argmax(widths))}:
            out.append((f"{name}#{i}", image, boxes[i:i + 1]))
    return out


# --- pad_boxes ---------------------------------------------------------------------------------------------


def test_pad_boxes_scales_about_the_centre_and_rounds_outward() -> None:
    boxes = np.asarray([[10, 20, 30, 40], [10.5, 20.5, 30.25, 40.75]], np.float32)
    assert pad_boxes(boxes[:1], 1.5, 100, 100).tolist() == [[5, 15, 35, 45]]
    assert pad_boxes(boxes[1:], 1.0, 100, 100).tolist() == [[10, 20, 31, 41]]
    assert pad_boxes(boxes, 1.0, 100, 100).dtype == np.int32


def test_pad_boxes_clips_and_drops_what_is_not_in_the_frame() -> None:
    boxes = np.asarray([
        [-10, -10, 20, 20],        # partly off the top-left: clipped
        [90, 95, 130, 140],        # partly off the bottom-right: clipped
        [-50, -50, -10, -10],      # wholly off: dropped
        [200, 10, 300, 50],        # wholly off: dropped
        [np.nan, 0, 10, 10],       # NaN: dropped
        [0, 0, np.inf, 10],        # inf: dropped
        [40, 40, 40, 60],          # no width: dropped
        [50, 50, 51, 51],          # 1 px: kept, grown outward
    ], np.float32)
    assert pad_boxes(boxes, 1.0, 100, 100).tolist() == [[0, 0, 20, 20], [90, 95, 100, 100], [50, 50, 51, 51]]
    assert pad_boxes(boxes[-1:], 1.3, 100, 100).tolist() == [[49, 49, 52, 52]]
    assert pad_boxes(np.zeros((0, 4), np.float32), 1.3, 100, 100).shape == (0, 4)


# --- mosaic -------------------------------------------------------------------------------------------------


def check_mosaic(label: str, image: Frame, box: Boxes, settings: AnonymizeSettings) -> int:
    """Anonymize one face and return its blocks across, asserting every block is one flat colour."""
    frame = image.copy()
    assert anonymize(frame, box, settings) == 1
    (x1, y1, x2, y2), = pad_boxes(box, settings.padding, frame.shape[1], frame.shape[0]).tolist()
    region = frame[y1:y2, x1:x2]
    cols, rows = mosaic_cells(region)
    for c0, c1 in cols:
        for r0, r1 in rows:
            cell = region[r0:r1, c0:c1]
            assert (cell == cell[0, 0]).all(), f"{label}: mosaic cell {r0}:{r1}, {c0}:{c1} is not uniform"
    # Blocks are about square, so rows follow the box's aspect ratio.
    aspect = (y2 - y1) / (x2 - x1)
    assert abs(len(rows) - len(cols) * aspect) <= 2, f"{label}: {len(cols)} x {len(rows)} blocks"
    return len(cols)


@pytest.mark.parametrize("label", list(ASTRONAUT_SCALES))
def test_mosaic_blocks_are_uniform_and_about_ten_across_any_face_size(label: str) -> None:
    image, box = astronaut(ASTRONAUT_SCALES[label])
    across = check_mosaic(label, image, box, AnonymizeSettings())
    assert 8 <= across <= 12, f"{label}: {across} blocks across"


def test_mosaic_blocks_on_the_smallest_and_largest_face_of_each_photo(testdata: Path) -> None:
    widths = []
    for label, image, box in face_sets(testdata):
        across = check_mosaic(label, image, box, AnonymizeSettings())
        assert 8 <= across <= 12, f"{label}: {across} blocks across a {box[0, 2] - box[0, 0]:.0f}-px face"
        widths.append(float(box[0, 2] - box[0, 0]))
    assert min(widths) < 40 and max(widths) > 100  # the photos really hold small and large faces


def test_mosaic_strength_sets_block_size() -> None:
    image, box = astronaut()
    fine = check_mosaic("strength 0", image, box, AnonymizeSettings(strength=0.0))
    coarse = check_mosaic("strength 1", image, box, AnonymizeSettings(strength=1.0))
    assert 13 <= fine <= 15 and 5 <= coarse <= 7


# --- every mode ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ellipse", [False, True], ids=["box", "ellipse"])
@pytest.mark.parametrize("mode", MODES)
def test_only_the_padded_boxes_change(testdata: Path, mode: Mode, ellipse: bool) -> None:
    settings = AnonymizeSettings(mode=mode, ellipse=ellipse)
    for name in ANNOTATED:
        image, boxes = load_annotated(testdata, name)
        frame = image.copy()
        assert anonymize(frame, boxes, settings) == len(boxes)
        outside = ~padded_mask(frame.shape, boxes, settings.padding)
        assert np.array_equal(frame[outside], image[outside]), f"{name}: pixels outside the faces changed"
        for x1, y1, x2, y2 in boxes.astype(int).tolist():
            changed = (frame[y1:y2, x1:x2] != image[y1:y2, x1:x2]).any(axis=2).mean()
            assert changed > 0.5, f"{name}: only {changed:.0%} of the face at {x1},{y1} changed ({mode})"


def assert_blur_removes_detail(photos: list[tuple[str, Frame, Boxes]]) -> None:
    for name, image, boxes in photos:
        frame = image.copy()
        anonymize(frame, boxes, AnonymizeSettings(mode="blur"))
        for x1, y1, x2, y2 in boxes.astype(int).tolist():
            before, after = face_detail(image[y1:y2, x1:x2]), face_detail(frame[y1:y2, x1:x2])
            # Measured: 0.2-3.3% of the detail is left at the default strength.
            assert after < before / 20, f"{name}: face at {x1},{y1} keeps detail {before:.0f} -> {after:.0f}"


def test_blur_removes_the_detail_of_the_astronaut_at_any_size() -> None:
    assert_blur_removes_detail([(label, *astronaut(scale)) for label, scale in ASTRONAUT_SCALES.items()])


def test_blur_removes_the_detail_of_every_face_in_the_photos(testdata: Path) -> None:
    assert_blur_removes_detail([(name, *load_annotated(testdata, name)) for name in ANNOTATED])


def test_stronger_blur_leaves_less_detail() -> None:
    image, box = astronaut()
    x1, y1, x2, y2 = box[0].astype(int).tolist()
    left = []
    for strength in (0.0, 0.5, 1.0):
        frame = image.copy()
        anonymize(frame, box, AnonymizeSettings(mode="blur", strength=strength))
        left.append(face_detail(frame[y1:y2, x1:x2]))
    assert left[0] > left[1] > left[2]


def test_big_face_blur_matches_a_full_size_gaussian() -> None:
    # The fast path for big faces must be as strong as the documented sigma (face width * 0.229 at 0.5).
    image, box = astronaut(4)
    settings = AnonymizeSettings(mode="blur")
    frame = image.copy()
    anonymize(frame, box, settings)
    (x1, y1, x2, y2), = pad_boxes(box, settings.padding, image.shape[1], image.shape[0]).tolist()
    sigma = float(box[0, 2] - box[0, 0]) * (1 / 8 + (1 / 3 - 1 / 8) * settings.strength)
    reference = cv2.GaussianBlur(image[y1:y2, x1:x2], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    diff = np.abs(frame[y1:y2, x1:x2].astype(int) - reference.astype(int))
    assert diff.mean() < 3.0, f"mean difference {diff.mean():.1f} grey levels from a true Gaussian blur"


def test_solid_fills_the_region_with_one_dark_colour() -> None:
    image, box = astronaut()
    frame = image.copy()
    settings = AnonymizeSettings(mode="solid")
    anonymize(frame, box, settings)
    (x1, y1, x2, y2), = pad_boxes(box, settings.padding, image.shape[1], image.shape[0]).tolist()
    assert (frame[y1:y2, x1:x2] == np.asarray(SOLID_BGR, np.uint8)).all()
    assert max(SOLID_BGR) < 64


@pytest.mark.parametrize("mode", MODES)
def test_ellipse_keeps_the_box_corners_and_hides_the_middle(mode: Mode) -> None:
    image, box = astronaut()
    settings = AnonymizeSettings(mode=mode, ellipse=True)
    frame = image.copy()
    anonymize(frame, box, settings)
    (x1, y1, x2, y2), = pad_boxes(box, settings.padding, image.shape[1], image.shape[0]).tolist()
    c = 8  # an 8x8 patch in each corner lies outside the inscribed ellipse of a ~120-px box
    for ys, xs in ((slice(y1, y1 + c), slice(x1, x1 + c)), (slice(y1, y1 + c), slice(x2 - c, x2)),
                   (slice(y2 - c, y2), slice(x1, x1 + c)), (slice(y2 - c, y2), slice(x2 - c, x2))):
        assert np.array_equal(frame[ys, xs], image[ys, xs]), f"{mode}: a box corner was hidden"
    h, w = y2 - y1, x2 - x1
    middle = (slice(y1 + h // 4, y2 - h // 4), slice(x1 + w // 4, x2 - w // 4))
    assert (frame[middle] != image[middle]).any(axis=2).mean() > 0.5


def test_ellipse_of_a_face_cut_by_the_frame_edge_stays_where_the_face_is() -> None:
    # Half the face is off the left edge: the ellipse must be the whole face's, so the visible half is hidden
    # right up to the edge rather than by a smaller ellipse squeezed into what is visible.
    image, box = astronaut()
    shifted = np.ascontiguousarray(image[:, 225:], dtype=np.uint8)
    face = box - np.asarray([225, 0, 225, 0], np.float32)
    frame = shifted.copy()
    assert anonymize(frame, face, AnonymizeSettings(mode="solid", ellipse=True)) == 1
    cy = int((face[0, 1] + face[0, 3]) / 2)
    assert (frame[cy - 20:cy + 20, 0:3] == np.asarray(SOLID_BGR, np.uint8)).all()


# --- odd boxes ----------------------------------------------------------------------------------------------


ODD_BOXES = {
    "empty": ([], 0),
    "1 px": ([[100, 100, 101, 101]], 1),
    "1 px at the corner": ([[511, 511, 512, 512]], 1),
    "wholly outside": ([[-50, -50, -10, -10], [600, 100, 700, 200]], 0),
    "partly outside": ([[-30, 100, 40, 170], [480, 470, 560, 560]], 2),
    "larger than the frame": ([[-1000, -1000, 2000, 2000]], 1),
    "NaN and inf": ([[np.nan, 10, 50, 50], [10, 10, np.inf, 50], [10, 10, 50, 50]], 1),
    "no area": ([[10, 10, 10, 50], [10, 10, 50, 10]], 0),
    "swapped corners": ([[50, 50, 10, 10]], 1),
}


@pytest.mark.parametrize("ellipse", [False, True], ids=["box", "ellipse"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(ODD_BOXES))
def test_odd_boxes_never_crash_and_touch_nothing_else(case: str, mode: Mode, ellipse: bool) -> None:
    raw, expected = ODD_BOXES[case]
    boxes = np.asarray(raw, np.float32).reshape(-1, 4)
    image, _ = astronaut()
    frame = image.copy()
    settings = AnonymizeSettings(mode=mode, ellipse=ellipse)
    assert anonymize(frame, boxes, settings) == expected
    outside = ~padded_mask(frame.shape, boxes, settings.padding)
    assert np.array_equal(frame[outside], image[outside])


def test_partly_outside_face_is_hidden_in_the_visible_part() -> None:
    image, box = astronaut()
    face = box - np.asarray([220, 0, 220, 0], np.float32)  # left 40 px of the face are off the frame
    frame = image.copy()
    assert anonymize(frame, face, AnonymizeSettings()) == 1
    x2, y1, y2 = int(face[0, 2]), int(face[0, 1]), int(face[0, 3])
    cols, _ = mosaic_cells(frame[y1:y2, 0:x2])
    assert len(cols) <= 8  # a few whole-face-sized blocks, not the untouched picture


def test_tiny_frames_and_bad_frames() -> None:
    for h, w in ((1, 1), (2, 3), (7, 1)):
        frame = np.full((h, w, 3), 200, np.uint8)
        for mode in MODES:
            assert anonymize(frame, np.asarray([[0, 0, w, h]], np.float32), AnonymizeSettings(mode=mode)) == 1
        hide_frame(frame)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        anonymize(np.zeros((10, 10), np.uint8), np.zeros((0, 4), np.float32), AnonymizeSettings())
    read_only = np.zeros((10, 10, 3), np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        hide_frame(read_only)


# --- hide_frame ---------------------------------------------------------------------------------------------


def assert_hide_frame_hides_faces(photos: list[tuple[str, Frame, Boxes]]) -> None:
    for name, image, boxes in photos:
        frame = image.copy()
        hide_frame(frame)
        cols, rows = mosaic_cells(frame)
        assert 5 <= max(len(cols), len(rows)) <= 7, f"{name}: {len(cols)} x {len(rows)} blocks"
        for x1, y1, x2, y2 in boxes.astype(int).tolist():
            region, original = frame[y1:y2, x1:x2], image[y1:y2, x1:x2]
            colours = len(np.unique(region.reshape(-1, 3), axis=0))
            # Even the largest face spans at most 3 x 3 blocks: nothing of it is left to recognise.
            assert colours <= 9, f"{name}: face at {x1},{y1} still has {colours} colours"
            assert (region != original).any(axis=2).mean() > 0.9


def test_hide_frame_hides_the_astronaut_at_any_size() -> None:
    assert_hide_frame_hides_faces([(label, *astronaut(scale)) for label, scale in ASTRONAUT_SCALES.items()])


def test_hide_frame_hides_every_face_in_the_photos(testdata: Path) -> None:
    assert_hide_frame_hides_faces([(name, *load_annotated(testdata, name)) for name in ANNOTATED])
