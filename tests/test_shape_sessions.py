"""One ONNX Runtime session per input shape (models.sessions), the CUDA default, run here on the CPU provider.

What it is for (plans rebuilt at every shape change on CUDA) needs a GPU to measure; what can be proven without one
is that routing by shape changes no face, that no session ever sees a second shape, that batches are padded to a
few sizes, and that the pool stays bounded and builds a shape once when threads race for it.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from conftest import read_bgr, require_testdata

from models import DetectorConfig, coverage, load_detector
from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector, prepare_graph
from models.evaluate import annotated_images
from models.runtime import create_session
from models.sessions import ShapeSessions


class ShapeRecorder:
    """A real session that remembers every input shape it ran."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.seen: set[tuple[int, ...]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def run(self, names: Any, feeds: dict[str, npt.NDArray[np.float32]]) -> Any:
        (blob,) = feeds.values()
        self.seen.add(tuple(blob.shape))
        return self.session.run(names, feeds)


@pytest.fixture(scope="module")
def per_shape() -> tuple[CenterFaceDetector, list[ShapeRecorder]]:
    """A CPU detector whose pool routes by shape, as on CUDA, with every session it builds recorded."""
    detector = load_detector("cpu", config=DetectorConfig(session_per_shape=True, threads=1))
    assert detector.sessions.per_shape
    graph = prepare_graph(detector.model_path)
    built: list[ShapeRecorder] = []

    def make() -> ShapeRecorder:
        built.append(ShapeRecorder(create_session(graph, "cpu", threads=1)[0]))
        return built[-1]

    detector.sessions = ShapeSessions(make(), make, per_shape=True)
    return detector, built


def test_the_cpu_keeps_one_session_and_pads_nothing(detector: CenterFaceDetector) -> None:
    assert not detector.sessions.per_shape
    assert detector.sessions.shapes == []
    assert detector.sessions.rows_for(3, 8) == 3


def test_routing_by_shape_finds_the_same_faces(per_shape: tuple[CenterFaceDetector, list[ShapeRecorder]],
                                               detector: CenterFaceDetector) -> None:
    """Annotated photos of many sizes, one by one and as a batch, at full coverage (main pass, close-up view, zoom
    crops): the faces are those one shared session finds, and every session only ever saw its own shape."""
    frames = [read_bgr(path) for path, _ in annotated_images(require_testdata("images"))]
    frames.append(np.asarray(cv2.resize(frames[0], (1920, 1080)), np.uint8))
    for batch in ([frame] for frame in frames), [frames[:3], frames[3:]]:
        for group in batch:
            ours, theirs = per_shape[0].detect_batch(group), detector.detect_batch(group)
            for mine, shared in zip(ours, theirs, strict=True):
                assert len(mine) == len(shared)
                if len(mine):
                    assert (iou_matrix(mine.boxes, shared.boxes).max(axis=1) > 0.99).all()
    pool, built = per_shape[0].sessions, per_shape[1]
    assert len(pool.shapes) >= 5 and pool.evicted == 0  # sizes, batches and zoom crops
    assert sorted(shape for session in built for shape in session.seen) == sorted(pool.shapes)
    assert all(len(session.seen) == 1 for session in built)  # no session ever saw a second shape
    for rows, _, height, width in pool.shapes:  # batches go up in powers of two, or fill a whole chunk
        assert rows & (rows - 1) == 0 or rows == max(1, coverage.MAX_BATCH_PIXELS // (height * width))


def test_batch_rows_are_bucketed() -> None:
    graph = prepare_graph(load_detector("cpu").model_path)
    pool = ShapeSessions(create_session(graph, "cpu")[0], lambda: None, per_shape=True)
    assert [pool.rows_for(n, 32) for n in (1, 2, 3, 5, 8, 9, 17, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    assert pool.rows_for(5, 6) == 6  # never above the chunk limit
    assert pool.rows_for(7, 6) == 7  # a chunk is never cut here, only padded


def test_the_pool_is_bounded_and_builds_a_shape_once() -> None:
    graph = prepare_graph(load_detector("cpu").model_path)
    built: list[Any] = []
    lock = threading.Lock()

    def make() -> Any:
        session = create_session(graph, "cpu", threads=1)[0]
        with lock:
            built.append(session)
        return session

    pool = ShapeSessions(make(), make, per_shape=True, capacity=2)
    blob = np.zeros((1, 3, 64, 64), np.float32)
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        pool.run(blob)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and pool.shapes == [(1, 3, 64, 64)]  # the session made at load took the first shape
    heat = pool.run(np.zeros((2, 3, 64, 64), np.float32))[0]
    assert heat.shape[0] == 2
    pool.run(np.zeros((1, 3, 96, 64), np.float32))
    assert pool.shapes == [(2, 3, 64, 64), (1, 3, 96, 64)] and pool.evicted == 1 and len(built) == 3
    pool.run(np.zeros((2, 3, 64, 64), np.float32))  # used again: now the most recent
    assert pool.shapes == [(1, 3, 96, 64), (2, 3, 64, 64)] and len(built) == 3
