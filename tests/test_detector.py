"""The real CenterFace model on real photos: recall, provider reporting, sizes, and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from conftest import read_bgr, require_testdata

import models.weights
from models import DetectorConfig, FaceDetections, ModelError, ProviderError, load_detector
from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector
from models.evaluate import annotated_images, load_truth, match


def test_recall_on_annotated_photos(detector: CenterFaceDetector) -> None:
    """Acceptance: >= 0.90 recall at IoU >= 0.3 on the 43 annotated faces, default settings, CPU provider."""
    folder = require_testdata("images")
    faces = found = false_positives = images = 0
    for image_path, boxes_path in annotated_images(folder):
        image = read_bgr(image_path)
        result = match(load_truth(boxes_path), detector.detect(image).boxes, iou=0.3)
        faces, found = faces + result.faces, found + result.found
        false_positives += result.false_positives
        images += 1
    assert detector.provider == "CPUExecutionProvider"
    assert faces == 43
    assert found / faces >= 0.90, f"recall {found}/{faces}"
    assert false_positives / images < 2.0


def test_finds_the_astronaut_everywhere(detector: CenterFaceDetector, astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    """The public-domain portrait shipped with scikit-image: exactly one face, on her face, with landmarks."""
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]
    assert 150 < (x1 + x2) / 2 < 260 and 50 < (y1 + y2) / 2 < 160  # her face, not the flag or the suit
    assert faces.scores[0] > 0.8
    eyes_y = faces.landmarks[0, :2, 1]
    mouth_y = faces.landmarks[0, 3:, 1]
    assert (eyes_y < mouth_y.min()).all() and (faces.landmarks[0, :, 0] > x1).all()


def test_any_size_and_batch_give_the_same_faces(detector: CenterFaceDetector,
                                                astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    """One session serves any frame size and a batch of mixed sizes; boxes come back in frame pixels."""
    big = np.asarray(cv2.resize(astronaut_bgr, (1280, 1280)), np.uint8)
    wide = np.zeros((300, 900, 3), np.uint8)
    wide[:, 300:600] = cv2.resize(astronaut_bgr, (300, 300))
    single = [detector.detect(f) for f in (astronaut_bgr, big, wide)]
    batched = detector.detect_batch([astronaut_bgr, big, wide])
    for one, many in zip(single, batched, strict=True):
        assert len(one) == len(many) == 1
        assert iou_matrix(one.boxes, many.boxes)[0, 0] > 0.9
    assert iou_matrix(single[0].boxes * 2.5, single[1].boxes)[0, 0] > 0.8
    assert single[2].boxes[0, 0] >= 300 and single[2].boxes[0, 2] <= 600


def test_detect_size_is_configurable(astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    small = load_detector("cpu", config=DetectorConfig(detect_size=256))
    assert small.network_inputs(512, 512) == [(256, 256)]
    assert len(small.detect(astronaut_bgr)) == 1


def test_blank_frame_has_no_faces(detector: CenterFaceDetector) -> None:
    assert len(detector.detect(np.full((480, 640, 3), 127, np.uint8))) == 0
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((480, 640), np.uint8))


def f32(values: npt.ArrayLike) -> npt.NDArray[np.float32]:
    return np.asarray(values, np.float32)


def test_face_detections_are_validated() -> None:
    size = (640, 480)
    empty = FaceDetections.empty(size)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.landmarks.shape == (0, 5, 2)
    assert empty.frame_size == size
    with pytest.raises(ValueError, match="inconsistent"):
        FaceDetections(f32(np.zeros((2, 4))), f32(np.zeros(1)), f32(np.zeros((2, 5, 2))), size)
    with pytest.raises(ValueError, match="x1 <= x2"):
        FaceDetections(f32([[10, 10, 5, 20]]), f32([1]), f32(np.zeros((1, 5, 2))), size)
    with pytest.raises(ValueError, match="finite"):
        FaceDetections(f32([[np.nan, 0, 1, 1]]), f32([1]), f32(np.zeros((1, 5, 2))), size)
    with pytest.raises(ValueError, match="frame size"):
        FaceDetections(f32([[10, 20, 30, 60]]), f32([1]), f32(np.zeros((1, 5, 2))), (0, 480))
    xywh = FaceDetections(f32([[10, 20, 30, 60]]), f32([1]), f32(np.zeros((1, 5, 2))), size).xywh()
    assert xywh.tolist() == [[10, 20, 20, 40]]


def test_detections_carry_the_size_of_the_frame_they_were_made_on(detector: CenterFaceDetector) -> None:
    frames = [np.zeros((480, 640, 3), np.uint8), np.zeros((720, 1280, 3), np.uint8), np.zeros((97, 131, 3), np.uint8)]
    assert [d.frame_size for d in detector.detect_batch(frames)] == [(640, 480), (1280, 720), (131, 97)]


def test_cuda_that_cannot_load_is_an_error_not_a_cpu_run() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this install has the CUDA provider; the GPU tests cover it")
    with pytest.raises(ProviderError, match="CUDA"):
        load_detector("cuda")
    assert load_detector("auto").provider == "CPUExecutionProvider"


@pytest.mark.gpu
def test_cuda_provider_really_runs(astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (CPU build)")
    gpu = load_detector("cuda")
    assert gpu.provider == "CUDAExecutionProvider"
    assert gpu.sessions.per_shape  # models.sessions: a new shape on CUDA must not rebuild another shape's plans
    assert len(gpu.detect(astronaut_bgr)) == 1


def test_missing_model_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(models.weights.ENV_CACHE, str(tmp_path))
    with pytest.raises(ModelError, match=r"not found.*python -m models.fetch"):
        load_detector("cpu")
    with pytest.raises(ModelError, match="model file not found"):
        load_detector("cpu", model=tmp_path / "nope.onnx")


def test_corrupt_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "centerface.onnx"
    data = bytearray(models.weights.resolve_model().read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    monkeypatch.setenv(models.weights.ENV_CACHE, str(tmp_path))
    with pytest.raises(ModelError, match=r"corrupt.*python -m models.fetch"):
        load_detector("cpu")
    text = tmp_path / "mine.onnx"
    text.write_text("not a model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_detector("cpu", model=text)


def test_own_model_file_loads(tmp_path: Path, astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    """--model PATH: any CenterFace-format file, taken as it is (no hash check)."""
    own = tmp_path / "my-centerface.onnx"
    shutil.copy(models.weights.resolve_model(), own)
    assert len(load_detector("cpu", model=own).detect(astronaut_bgr)) == 1
