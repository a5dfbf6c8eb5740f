"""Face detectors behind one small interface. Nothing here knows about video, HTTP or WebRTC."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

# ONNX Runtime's PyPI builds (1.31) queue usage telemetry for Microsoft's collector in
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime (a device id and an event database) unless this is set before
# onnxruntime is first imported; ``disable_telemetry_events()`` afterwards is too late. A privacy tool sends
# nothing anywhere by default; an operator may still set it to 0.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .centerface import CenterFace, CenterFaceDetector, DetectorConfig
from .coverage import DetectSize
from .detections import FaceDetections
from .precision import PRECISION_CHOICES, PRECISIONS, Precision, PrecisionChoice, resolve_precision
from .runtime import CUDA, Device, ProviderError
from .weights import ModelError, resolve_model

if TYPE_CHECKING:
    from .triton import TritonTLS

__all__ = [
    "PRECISIONS",
    "PRECISION_CHOICES",
    "CenterFace",
    "Detector",
    "DetectorConfig",
    "Device",
    "FaceDetections",
    "ModelError",
    "Precision",
    "PrecisionChoice",
    "ProviderError",
    "load_detector",
    "open_detector",
]

logger = logging.getLogger(__name__)


class Detector(Protocol):
    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider really in use, from session.get_providers()."""

    config: DetectorConfig

    def detect(self, frame_bgr: npt.NDArray[np.uint8], threshold: float | None = None,
               detect_size: DetectSize | None = None) -> FaceDetections: ...


def load_detector(device: Device = "auto", model: str | os.PathLike[str] | None = None,
                  config: DetectorConfig | None = None, *, require_gpu: bool = False,
                  precision: PrecisionChoice = "fp32") -> CenterFaceDetector:
    """Load CenterFace (the verified default weights, or ``model``), warmed up on ``device``.

    ``require_gpu``: after the warm-up inference, refuse (ProviderError) unless CUDA is the provider that ran it.
    ``precision``: int8 (for the CPU) or fp16 (for CUDA) variants of the default weights, built on first use and
    cached beside them (models.weights.cache_dir; see models.quantize). A prebuilt variant can also be given as
    ``model``.
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, not {precision!r}")
    precision = resolve_precision(precision, device, model)
    if precision != "fp32" and model is not None:
        raise ModelError(f"--precision {precision} builds from the default weights; to run your own quantized "
                         "file, pass it with --model and leave --precision at fp32")
    if precision == "fp32":
        path = resolve_model(model)
    else:
        from .quantize import build_variant  # onnx/onnxruntime.quantization only when a variant is asked for

        path = build_variant(precision)
    detector = CenterFaceDetector(path, device, config)
    if precision == "fp16" and detector.provider != CUDA:
        logger.warning("precision fp16 is built for CUDA; on %s it runs, but no faster than fp32",
                       detector.provider)
    elif precision == "int8" and detector.provider == CUDA:
        logger.warning("precision int8 on CUDA runs its quantize/dequantize pairs in float; use fp16 on a GPU")
    if require_gpu and detector.provider != CUDA:
        raise ProviderError(
            f"--require-gpu: the detector runs on {detector.provider}, not {CUDA}. Check that the host has an "
            "NVIDIA GPU and driver, that the container was started with GPU access (compose: deploy.resources."
            "reservations.devices; docker run: --gpus all) and that onnxruntime-gpu is installed (pip install "
            "-e .[gpu])"
        )
    return detector


def open_detector(url: str | None, device: Device = "auto", model: str | os.PathLike[str] | None = None,
                  config: DetectorConfig | None = None, *, require_gpu: bool = False,
                  precision: PrecisionChoice = "fp32", timeout_s: float = 5.0, connect: bool = True,
                  tls: TritonTLS | None = None) -> CenterFace:
    """The detector a command asked for: in process (``url`` None: ``load_detector``) or on the Triton server at
    ``url`` (``triton://HOST:PORT/MODEL``, models.triton), whose every request is bounded by ``timeout_s``.

    With Triton the model, its precision and its device are the server's (python -m models.triton_repo writes
    them), so asking for them here is refused rather than ignored; ``require_gpu`` then means the server's model
    instances run on a GPU, as its configuration says. ``connect`` False (a service) leaves the first contact to the
    caller (``TritonDetector.connect_in_background``), so the service starts, not ready, while its Triton server is
    still coming up. ``tls``:
    gRPC over TLS (models.triton.TritonTLS)."""
    if url is None:
        if tls is not None:
            raise ModelError("--detector-ca, --detector-cert and --detector-key are for --detector triton://...")
        return load_detector(device, model, config, require_gpu=require_gpu, precision=precision)
    from .triton import TritonDetector

    asked = [flag for flag, given in (("--device", device != "auto"), ("--model", model is not None),
                                      ("--precision", precision not in ("auto", "fp32"))) if given]
    if asked:
        raise ModelError(f"{', '.join(asked)} cannot be used with --detector {url}: the model, its precision and "
                         "its device are the Triton server's (python -m models.triton_repo --help)")
    detector = TritonDetector(url, config, timeout_s=timeout_s, tls=tls, require_gpu=require_gpu)
    if connect:
        try:
            detector.connect()
        except Exception:
            detector.close()
            raise
    return detector
