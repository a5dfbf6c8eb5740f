"""ONNX Runtime sessions: which provider to ask for, and which one really runs."""

from __future__ import annotations

import logging
from typing import Any, Literal

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderError(RuntimeError):
    """The requested execution provider could not be loaded."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ProviderError(
            "onnxruntime is not installed; install the CPU build with `pip install -e .[cpu]` "
            "or the GPU build with `pip install -e .[gpu]` (never both)"
        ) from exc
    return ort


def create_session(model: bytes, device: Device = "auto", *, threads: int = 0,
                   spin_wait: bool = True) -> tuple[Any, str]:
    """Build an InferenceSession and return it with the provider that is actually in use.

    ``get_available_providers()`` lists CUDA whenever onnxruntime-gpu is installed, even when the CUDA or cuDNN
    libraries then fail to load, so the only trustworthy answer is ``session.get_providers()`` afterwards.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin_wait:
        # Idle inference threads sleep instead of spinning: in a live pipeline the codecs need those cycles.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # CUDA load failures are reported by us, once, below

    available = ort.get_available_providers()
    providers: list[Any] = [CPU]
    if device in ("auto", "cuda"):
        if CUDA in available:
            # HEURISTIC avoids a multi-second exhaustive cuDNN search at every new input shape.
            providers = [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}), CPU]
        elif device == "cuda":
            raise ProviderError(
                f"--device cuda was requested but this onnxruntime build has no CUDA provider "
                f"(available: {', '.join(available)}); install the GPU build with `pip install -e .[gpu]`"
            )
        else:
            logger.info("device auto: CUDA provider not in this onnxruntime build (%s); using CPU",
                        ", ".join(available))
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:
        if device == "cuda":
            raise ProviderError(f"--device cuda: ONNX Runtime could not create a CUDA session: {exc}") from exc
        raise
    active = session.get_providers()[0]
    if device == "cuda" and active != CUDA:
        raise ProviderError(
            "--device cuda was requested but the CUDA provider did not load (missing CUDA/cuDNN libraries or no "
            f"GPU); ONNX Runtime fell back to {active}. Check the NVIDIA driver and `pip install -e .[gpu]`."
        )
    if device == "auto" and CUDA in available and active != CUDA:
        logger.warning("device auto: the CUDA provider is installed but did not load (no GPU, or CUDA/cuDNN "
                       "libraries missing); running on %s", active)
    logger.info("ONNX Runtime session on %s (requested %s)", active, device)
    return session, str(active)
