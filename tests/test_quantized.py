"""int8 and fp16 CenterFace, built from the real weights: every annotated face is still found, the dim clip that
broke a naive int8 model still agrees with fp32, and the provider reported is the one that ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from conftest import REPO_ROOT, read_bgr, require_testdata, video_frames

from models import ModelError, Precision, load_detector
from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector
from models.evaluate import annotated_images, load_truth, match
from models.quantize import CALIBRATION_WHEEL, build_variant, variant_path
from models.runtime import CPU
from models.weights import sha256_of


@pytest.fixture(scope="module", params=["int8", "fp16"])
def variant(request: pytest.FixtureRequest) -> CenterFaceDetector:
    precision: Precision = request.param
    return load_detector("cpu", precision=precision)


def test_every_annotated_face_is_found(variant: CenterFaceDetector) -> None:
    """Acceptance of issue #7: 43/43 annotated faces, as fp32 finds them (threshold 0.3, detect_size 640)."""
    folder = require_testdata("images")
    faces = found = false_positives = images = 0
    for image_path, boxes_path in annotated_images(folder):
        result = match(load_truth(boxes_path), variant.detect(read_bgr(image_path), 0.3, 640).boxes, iou=0.3)
        faces, found = faces + result.faces, found + result.found
        false_positives += result.false_positives
        images += 1
    assert faces == 43
    assert found == faces, f"{variant.model_path.name}: {found}/{faces}"
    assert false_positives / images < 1.5


def test_int8_agrees_with_fp32_on_a_dim_clip(detector: CenterFaceDetector) -> None:
    """The Hamilton clip's faces score only 0.5-0.7 in fp32; with the stem quantized too, int8 lost half of them
    (27/53 here). Every face fp32 finds at score >= 0.5 must be found by int8 at its default threshold."""
    int8 = load_detector("cpu", precision="int8")
    frames = video_frames("videos/face_recognition_short_hamilton_clip.mp4", 150)[::5]
    reference = found = 0
    for frame in frames:
        ref = detector.detect(frame, 0.5).boxes
        overlap = iou_matrix(ref, int8.detect(frame).boxes)
        reference += len(ref)
        found += int((overlap.max(axis=1) >= 0.5).sum()) if overlap.size else 0
    assert reference >= 40
    assert found / reference >= 0.98, f"{found}/{reference}"


def test_reports_the_provider_and_file_in_use(variant: CenterFaceDetector,
                                              astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    assert variant.provider == CPU == variant.sessions.providers()[0]
    precision: Precision = "int8" if "int8" in variant.model_path.name else "fp16"
    assert variant.model_path == variant_path(precision)
    record = json.loads(variant.model_path.with_name(variant.model_path.name + ".json").read_text())
    assert record["precision"] == precision
    faces = variant.detect(astronaut_bgr)
    assert len(faces) == 1 and faces.scores[0] > 0.8


def test_files_really_are_reduced_precision() -> None:
    import onnx

    int8 = onnx.load(str(build_variant("int8")))
    fp16 = onnx.load(str(build_variant("fp16")))
    assert sum(n.op_type == "DequantizeLinear" for n in int8.graph.node) > 50
    assert {i.data_type for i in int8.graph.initializer} >= {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    conv_weights = {n.input[1] for n in fp16.graph.node if n.op_type == "Conv"}
    assert {i.data_type for i in fp16.graph.initializer if i.name in conv_weights} == {onnx.TensorProto.FLOAT16}
    for model in (int8, fp16):  # the symbolic sizes of prepare_graph() survive
        assert model.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "height"
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_own_calibration_folder_and_a_corrupt_cache(tmp_path: Path, astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    """`python -m models.quantize --calibration DIR` records what it calibrated on; a cached file whose bytes no
    longer match its recorded hash is rebuilt, never loaded."""
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "me.png"), astronaut_bgr)
    (frames / "notes.txt").write_text("not an image")
    out = tmp_path / "mine-int8.onnx"
    done = subprocess.run([sys.executable, "-m", "models.quantize", "--precision", "int8", "--calibration",
                           str(frames), "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # Quiet: what it does and where the result went, not ONNX Runtime's warning per unused initializer.
    assert len(done.stderr.splitlines()) <= 4 and "int8 model stored at" in done.stderr, done.stderr[-3000:]
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert list(record["calibration"]["images"]) == ["me.png"]
    assert out.with_name(out.name + ".sha256").read_text().split()[0] == record["sha256"]
    mine = load_detector("cpu", out)
    assert len(mine.detect(astronaut_bgr)) == 1

    data = bytearray(out.read_bytes())
    data[-100] ^= 0xFF
    out.write_bytes(bytes(data))
    assert build_variant("int8", dest=out) == out
    rebuilt = json.loads(out.with_name(out.name + ".json").read_text())
    assert rebuilt["calibration"]["source"].startswith(CALIBRATION_WHEEL)
    assert sha256_of(out) == rebuilt["sha256"]


def test_precision_with_an_explicit_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="--precision int8"):
        load_detector("cpu", tmp_path / "any.onnx", precision="int8")
    with pytest.raises(ValueError, match="precision"):
        load_detector("cpu", precision="int4")  # type: ignore[arg-type]


@pytest.mark.gpu
def test_fp16_runs_on_cuda(astronaut_bgr: npt.NDArray[np.uint8]) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (CPU build)")
    gpu = load_detector("cuda", precision="fp16")
    assert gpu.provider == "CUDAExecutionProvider"
    cpu = load_detector("cpu").detect(astronaut_bgr)
    faces = gpu.detect(astronaut_bgr)
    assert len(faces) == 1 and iou_matrix(cpu.boxes, faces.boxes)[0, 0] > 0.9
    assert np.isclose(faces.scores[0], cpu.scores[0], atol=0.02)
