"""Face detectors behind one small interface. Nothing here knows about video, HTTP or WebRTC."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .centerface import CenterFaceDetector, DetectorConfig
from .detections import FaceDetections
from .runtime import Device, ProviderError
from .weights import ModelError, resolve_model

__all__ = ["Detector", "DetectorConfig", "Device", "FaceDetections", "ModelError", "ProviderError", "load_detector"]


class Detector(Protocol):
    provider: str  # the ONNX Runtime execution provider really in use, from session.get_providers()
    config: DetectorConfig

    def detect(self, frame_bgr: npt.NDArray[np.uint8], threshold: float | None = None) -> FaceDetections: ...


def load_detector(device: Device = "auto", model: str | os.PathLike[str] | None = None,
                  config: DetectorConfig | None = None) -> CenterFaceDetector:
    """Load CenterFace (the verified default weights, or ``model``), warmed up on ``device``."""
    return CenterFaceDetector(resolve_model(model), device, config)
