"""Face detectors behind one small interface. Nothing here knows about video, HTTP or WebRTC."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .centerface import CenterFaceDetector, DetectorConfig
from .detections import FaceDetections
from .runtime import CUDA, Device, ProviderError
from .weights import ModelError, resolve_model

__all__ = ["Detector", "DetectorConfig", "Device", "FaceDetections", "ModelError", "ProviderError", "load_detector"]


class Detector(Protocol):
    provider: str  # the ONNX Runtime execution provider really in use, from session.get_providers()
    config: DetectorConfig

    def detect(self, frame_bgr: npt.NDArray[np.uint8], threshold: float | None = None,
               detect_size: int | None = None) -> FaceDetections: ...


def load_detector(device: Device = "auto", model: str | os.PathLike[str] | None = None,
                  config: DetectorConfig | None = None, *, require_gpu: bool = False) -> CenterFaceDetector:
    """Load CenterFace (the verified default weights, or ``model``), warmed up on ``device``.

    ``require_gpu``: after the warm-up inference, refuse (ProviderError) unless CUDA is the provider that ran it.
    """
    detector = CenterFaceDetector(resolve_model(model), device, config)
    if require_gpu and detector.provider != CUDA:
        raise ProviderError(
            f"--require-gpu: the detector runs on {detector.provider}, not {CUDA}. Check that the host has an "
            "NVIDIA GPU and driver, that the container was started with GPU access (compose: deploy.resources."
            "reservations.devices; docker run: --gpus all) and that onnxruntime-gpu is installed (pip install "
            "-e .[gpu])"
        )
    return detector
