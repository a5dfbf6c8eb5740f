"""models.triton_repo: the Triton model repository it writes, read back with Triton's own schema, and its model run
with ONNX Runtime on a real photo against the detector."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from conftest import read_bgr, require_testdata

from models.boxes import iou_matrix
from models.centerface import ALIGN, CenterFaceDetector, prepare_graph
from models.serving_graph import INPUT, OUTPUT_CHANNELS, OUTPUTS
from models.triton_repo import RepoOptions, build_config, main, read_config, write_repository
from models.weights import resolve_model

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")

TRITON_TYPES = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository written with the default options."""
    return write_repository(tmp_path_factory.mktemp("triton") / "models", RepoOptions())


def test_defaults_parse_back(repo: Path) -> None:
    config = read_config(repo / "config.pbtxt")
    assert repo.name == config.name == "centerface"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    [group] = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (pb.ModelInstanceGroup.KIND_GPU, 1, [])
    assert not config.HasField("optimization")
    assert list(config.version_policy.specific.versions) == [1]  # a stray version folder is never served
    assert sorted(p.name for p in repo.rglob("*")) == ["1", "config.pbtxt", "model.onnx"]  # no temp file left


def test_asked_values_parse_back(tmp_path: Path) -> None:
    folder = write_repository(tmp_path, RepoOptions(name="faces-v2", max_batch_size=12, max_queue_delay_us=500,
                                                    instances=3, gpus=(0, 1), tensorrt="fp16"))
    assert folder == tmp_path / "faces-v2"
    config = read_config(folder / "config.pbtxt")
    assert config.name == "faces-v2" and config.max_batch_size == 12
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 12]  # 16 clipped to the max batch
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    [group] = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (pb.ModelInstanceGroup.KIND_GPU, 3, [0, 1])
    [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}
    assert not config.optimization.execution_accelerators.cpu_execution_accelerator


@pytest.mark.parametrize(("options", "kind", "count", "preferred"), [
    (RepoOptions(kind="cpu"), "KIND_CPU", 2, [4, 8, 16]),
    (RepoOptions(kind="cpu", instances=4, max_batch_size=2), "KIND_CPU", 4, [2]),
    (RepoOptions(max_batch_size=8, preferred_batch_sizes=(2, 6)), "KIND_GPU", 1, [2, 6]),
    (RepoOptions(tensorrt="fp32"), "KIND_GPU", 1, [4, 8, 16]),
])
def test_config_fields(options: RepoOptions, kind: str, count: int, preferred: list[int]) -> None:
    config = build_config(options)
    [group] = config.instance_group
    assert (pb.ModelInstanceGroup.Kind.Name(group.kind), group.count) == (kind, count)
    assert list(config.dynamic_batching.preferred_batch_size) == preferred
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.parameters["precision_mode"] for a in accelerators] == (
        [] if options.tensorrt == "off" else [options.tensorrt.upper()])


def test_config_matches_the_written_graph(repo: Path) -> None:
    """Names, types and dims the config promises are those of model.onnx (less the batch dim; symbolic is -1)."""
    config = read_config(repo / "config.pbtxt")
    graph = onnx.load(str(repo / "1" / "model.onnx")).graph

    def described(value: Any) -> tuple[str, str, list[int]]:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        assert dims[0].dim_param, f"{value.name}: the batch dimension must be symbolic for max_batch_size > 0"
        return value.name, TRITON_TYPES[tensor.elem_type], [-1 if d.dim_param else d.dim_value for d in dims[1:]]

    def declared(tensor: Any) -> tuple[str, str, list[int]]:
        return tensor.name, pb.DataType.Name(tensor.data_type), list(tensor.dims)

    assert [described(v) for v in graph.input] == [declared(t) for t in config.input] == [
        (INPUT, "TYPE_UINT8", [-1, -1, 3])]
    assert [described(v) for v in graph.output] == [declared(t) for t in config.output] == [
        (name, "TYPE_FP32", [channels, -1, -1]) for name, channels in zip(OUTPUTS, OUTPUT_CHANNELS, strict=True)]


def _padded(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    h, w = image.shape[:2]
    out = np.zeros((-(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN, 3), np.uint8)
    out[:h, :w] = image
    return out


def test_served_model_gives_the_detectors_faces(repo: Path, detector: CenterFaceDetector) -> None:
    """The written model.onnx, fed a batch of uint8 NHWC BGR frames as a Triton client sends them, returns the maps
    the prepared graph returns for the float NCHW RGB tensor, and those maps decode to the detector's faces."""
    photo = read_bgr(require_testdata("images", "facenet_multiface.jpg"))
    frames = np.stack([_padded(photo), _padded(np.ascontiguousarray(photo[:, ::-1]))])  # a batch of 2
    served = ort.InferenceSession(str(repo / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in served.get_outputs()] == list(OUTPUTS)
    maps = served.run(list(OUTPUTS), {INPUT: frames})
    reference = ort.InferenceSession(prepare_graph(resolve_model(None)), providers=["CPUExecutionProvider"])
    blob = np.ascontiguousarray(frames[:, :, :, ::-1].transpose(0, 3, 1, 2), np.float32)
    expected = reference.run(None, {reference.get_inputs()[0].name: blob})
    for name, got, want in zip(OUTPUTS, maps, expected, strict=True):
        assert got.shape == want.shape == (2, OUTPUT_CHANNELS[OUTPUTS.index(name)], *np.divide(frames.shape[1:3], 4))
        assert float(np.abs(got - want).max()) < 1e-4, name

    heat, scale, offset, landmarks = (m[0] for m in maps)
    boxes, scores, _ = detector._decode(heat[0], scale, offset, landmarks, detector.config.threshold)
    # One view at the photo's own size is what the served maps are: the same faces, box for box.
    own_size = detector.detect(photo, detect_size=max(photo.shape[:2]))
    assert len(own_size) == len(boxes) >= 1
    assert (iou_matrix(own_size.boxes, boxes).max(axis=1) > 0.95).all()
    assert np.allclose(np.sort(own_size.scores), np.sort(scores), atol=1e-4)
    assert len(detector.detect(photo)) >= 1  # and the default full coverage finds faces there too


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "cpu", "tensorrt": "fp16"}, "tensorrt fp16 needs kind gpu"),
    ({"max_batch_size": 0}, "max_batch_size must be within 1..1024"),
    ({"name": "a/b"}, "name must be one folder name"),
    ({"name": ".."}, "name must be one folder name"),
    ({"name": ""}, "name must be one folder name"),
    ({"max_batch_size": 4, "preferred_batch_sizes": (8,)}, "preferred batch sizes must be within 1..max_batch_size"),
    ({"kind": "cpu", "gpus": (0,)}, "gpus are for kind gpu"),
    ({"gpus": (0, 0)}, "distinct GPU ids"),
    ({"instances": 0}, "instances must be within 1..64"),
    ({"max_queue_delay_us": -1}, "max_queue_delay_us must be within"),
    ({"kind": "gpu", "precision": "int8"}, "precision int8 is for kind cpu"),
    ({"kind": "cpu", "precision": "fp16"}, "precision fp16 is for kind gpu"),
    ({"precision": "fp16", "tensorrt": "fp16"}, "leave precision at auto or fp32"),
    ({"precision": "int8", "kind": "cpu", "model": Path("own.onnx")}, "built from the verified weights"),
])
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RepoOptions(**kwargs)


@pytest.mark.parametrize(("argv", "message"), [
    (["--kind", "cpu", "--tensorrt", "fp16"], "tensorrt fp16 needs kind gpu"),
    (["--max-batch-size", "0"], "max_batch_size must be within"),
    (["--name", "a/b"], "name must be one folder name"),
])
def test_cli_refuses_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                 message: str) -> None:
    assert main([str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_reports_missing_weights_and_tritonclient(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert main([str(tmp_path / "out"), "--model", str(tmp_path / "nope.onnx")]) == 1
    assert "model file not found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if the triton extra were not installed
    assert main([str(tmp_path / "out")]) == 1
    assert "pip install -e .[triton]" in capsys.readouterr().err
    assert not (tmp_path / "out" / "centerface").exists()


def test_writing_twice_replaces_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "repo"
    folder = write_repository(out, RepoOptions())
    model, config = folder / "1" / "model.onnx", folder / "config.pbtxt"
    first = model.stat().st_ino, model.read_bytes()
    own_weights = tmp_path / "mine.onnx"  # --model: own CenterFace-format weights (here, a copy of the default)
    own_weights.write_bytes(resolve_model(None).read_bytes())
    argv = [str(out), "--model", str(own_weights), "--kind", "cpu", "--max-batch-size", "8", "--instances", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(config) in printed and str(model) in printed and "preferred [4, 8]" in printed
    assert (f"docker run --rm -p 8001:8001 -p 8000:8000 -p 8002:8002 -v {out}:/models "
            "nvcr.io/nvidia/tritonserver:") in printed and "tritonserver --model-repository=/models" in printed
    assert model.stat().st_ino != first[0] and model.read_bytes() == first[1]  # a new file, same graph
    again = read_config(config)
    assert (again.max_batch_size, again.instance_group[0].count) == (8, 3)
    assert again.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert list(again.dynamic_batching.preferred_batch_size) == [4, 8]
    assert sorted(p.name for p in folder.rglob("*")) == ["1", "config.pbtxt", "model.onnx"]


@pytest.mark.parametrize(("kind", "precision", "weights"), [("cpu", "auto", "int8"), ("gpu", "auto", "fp32"),
                                                             ("gpu", "fp16", "fp16"), ("cpu", "fp32", "fp32")])
def test_precision_picks_the_weights_the_in_process_detector_would_run(
        tmp_path: Path, kind: str, precision: str, weights: str) -> None:
    """auto: int8 on the CPU, fp32 on a GPU, as in process; each written model answers the same faces as the
    in-process detector of that precision, on a real photo."""
    options = RepoOptions(kind=kind, precision=precision)  # type: ignore[arg-type]
    assert options.weights_precision == weights
    folder = write_repository(tmp_path, options)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    photo = read_bgr(require_testdata("images", "facenet_multiface.jpg"))
    served = session.run(None, {INPUT: _padded(photo)[None]})
    from models import load_detector

    local = load_detector("cpu", precision=weights)
    padded = _padded(photo)[None]
    expected = local.sessions.run(np.ascontiguousarray(padded[..., ::-1].transpose(0, 3, 1, 2), np.float32))
    for name, ours, theirs in zip(OUTPUTS, served, expected, strict=True):
        assert np.abs(ours - theirs).max() < 1e-3, name
