"""Face embeddings: dlib's ResNet face recognition model (128 numbers per face, CC0 weights from the PyPI package
``face-recognition-models``, run by ``dlib-bin``), computed in a process of its own.

dlib holds Python's GIL for the whole ~90 ms of a descriptor: run on a thread, it would stall the event loop and
every stream's frames for that long. So the model lives in one worker process, loaded once; a request carries only
the face's crop (a few tens of KB), never a whole frame.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Embedding = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]
EMBEDDING_SIZE = 128
CROP_PADDING = 1.6  # the crop holds the box scaled about its centre by this: dlib places its landmarks inside it
CROP_MAX_SIDE = 320  # larger crops are shrunk: dlib aligns a 150 px chip, more pixels only cost time
EMBED_TIMEOUT_S = 30.0
RESTART_S = 5.0


def unavailable_reason() -> str | None:
    """Why faces cannot be recognised here (a missing package), or None when they can."""
    for module, package in (("dlib", "dlib-bin"), ("face_recognition_models", "face-recognition-models")):
        if importlib.util.find_spec(module) is None:
            return (f"face recognition needs the {package} package: install the project with its identity extra "
                    "(pip install -e '.[identity]')")
    return None


def model_dir() -> Path:
    # Found without importing face_recognition_models: its __init__ imports pkg_resources, which new setuptools
    # no longer ship.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(unavailable_reason() or "face_recognition_models not found")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@cache
def _models() -> tuple[Any, Any]:
    import dlib

    folder = model_dir()
    return (dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")))


def embed_crop(rgb: npt.NDArray[np.uint8], box: Box) -> Embedding:
    """The face in ``box`` of ``rgb`` (an RGB crop): dlib's 5 landmarks placed inside the box, the face chip aligned
    by them, the ResNet descriptor. In this process; ~90 ms on one CPU core."""
    import dlib

    predictor, recognizer = _models()
    rect = dlib.rectangle(*(round(v) for v in box))
    return np.asarray(recognizer.compute_face_descriptor(np.ascontiguousarray(rgb), predictor(rgb, rect)), np.float32)


def crop_face(frame_bgr: npt.NDArray[np.uint8], box: Box) -> tuple[npt.NDArray[np.uint8], Box]:
    """An RGB copy of the padded region around ``box`` (at most CROP_MAX_SIDE px), and the box in its pixels."""
    height, width = frame_bgr.shape[:2]
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * CROP_PADDING / 2
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
    crop = frame_bgr[top:bottom, left:right]
    scale = min(1.0, CROP_MAX_SIDE / max(1, crop.shape[0], crop.shape[1]))
    if scale < 1.0:
        crop = np.asarray(cv2.resize(crop, (max(1, round(crop.shape[1] * scale)),
                                            max(1, round(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA),
                          np.uint8)
    rgb = np.ascontiguousarray(crop[:, :, ::-1])
    return rgb, ((x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale)


def _warm() -> None:
    _models()


def _new_pool() -> ProcessPoolExecutor:
    # spawn: a fork of a process with running threads (aiortc's, the detector's) may inherit a held lock.
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_warm)


class Embedder:
    """The worker process that computes embeddings; shared by every stream of a service. ``stop()`` is safe twice."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self._pool: ProcessPoolExecutor | None = _new_pool()
        self._lock = threading.Lock()
        self._restarted = 0.0
        self.restarts = 0

    def submit(self, frame_bgr: npt.NDArray[np.uint8], box: Box) -> Future[Embedding]:
        """The embedding of the face in ``box`` of ``frame_bgr``, computed in the worker; the crop is taken now, so
        the frame may be changed (anonymized) as soon as this returns."""
        rgb, crop_box = crop_face(frame_bgr, box)
        with self._lock:
            if self._pool is None:
                raise RuntimeError("the face embedder has stopped")
            try:
                return self._pool.submit(embed_crop, rgb, crop_box)
            except BrokenProcessPool:
                # The worker died (killed, out of memory): start another, at most every RESTART_S; meanwhile
                # every face waiting for recognition stays hidden.
                now = time.monotonic()
                if now - self._restarted < RESTART_S:
                    raise RuntimeError("the face recognition worker stopped; restarting it") from None
                self._restarted = now
                self.restarts += 1
                logger.error("[server] the face recognition worker stopped; starting another")
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = _new_pool()
                return self._pool.submit(embed_crop, rgb, crop_box)

    def embed(self, frame_bgr: npt.NDArray[np.uint8], box: Box) -> Embedding:
        return self.submit(frame_bgr, box).result(timeout=EMBED_TIMEOUT_S)

    def stop(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
