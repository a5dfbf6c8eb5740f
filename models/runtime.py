"""ONNX Runtime sessions: which provider to ask for, and which one really runs."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import threading
from pathlib import Path
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


_preload_lock = threading.Lock()
_preloaded: list[str] | None = None  # what the preload could not load, once it ran in this process


def preload_cuda_libraries(ort: Any) -> list[str]:
    """Load the CUDA and cuDNN libraries that the ``onnxruntime-gpu[cuda,cudnn]`` wheels install, once per process.

    Those wheels put ``libcublasLt.so.13``, ``libcudnn.so.9`` and friends under ``site-packages/nvidia/*/lib``,
    which is not on the loader's path: without this, the CUDA provider fails on a library the install carries
    itself, even on a GPU host. It must run before the first CUDA session. Returns ONNX Runtime's lines for the
    libraries it could not load (it prints them rather than raising).
    """
    global _preloaded
    with _preload_lock:
        if _preloaded is None:
            preload = getattr(ort, "preload_dlls", None)
            report = io.StringIO()
            if preload is not None:
                # sys.stdout is swapped process-wide for this moment; it runs once, while the detector loads.
                with contextlib.redirect_stdout(report):
                    preload(cuda=True, cudnn=True, msvc=False)
            lines = [line.strip() for line in report.getvalue().splitlines() if line.strip()]
            _preloaded = [line for line in lines if line.startswith("Failed")]
            for line in lines:  # failures, and warnings such as "not supported for preloading"
                logger.warning("CUDA preload: %s", line)
        return list(_preloaded)


def cuda_provider_load_error(ort: Any) -> str | None:
    """The loader's own reason why ONNX Runtime's CUDA provider library cannot load here, or None when it loads.

    ONNX Runtime falls back to the CPU without saying why in its return values; asking the dynamic loader directly
    names the missing library (``libcuda.so.1``: the NVIDIA driver; ``libcublasLt.so.13``: the install).
    """
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.exists():
        return f"{library.name} is not part of this onnxruntime build"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc)
    return None


def explain_cuda_failure(reason: str | None) -> str:
    """Turn the loader's reason into what an operator should do about it."""
    if reason is None:
        return ("the CUDA and cuDNN libraries load, but ONNX Runtime found no usable GPU (no device visible, or a "
                "driver too old for CUDA 13)")
    if "libcuda.so" in reason:
        return (f"the NVIDIA driver is missing ({reason}): this machine or container has no NVIDIA driver or GPU; in "
                "Docker, run with --gpus all (or the compose GPU reservation) and the NVIDIA container toolkit")
    return (f"a library of the GPU install is missing ({reason}); reinstall onnxruntime-gpu[cuda,cudnn], which "
            "brings CUDA and cuDNN (`pip install -e .[gpu]`, or rebuild the gpu image)")


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
            preload_cuda_libraries(ort)
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
        why = explain_cuda_failure(cuda_provider_load_error(ort))
        raise ProviderError(f"--device cuda was requested but the CUDA provider did not load: {why}; "
                            f"ONNX Runtime fell back to {active}")
    if device == "auto" and CUDA in available and active != CUDA:
        logger.warning("device auto: the CUDA provider is installed but did not load: %s; running on %s",
                       explain_cuda_failure(cuda_provider_load_error(ort)), active)
    logger.info("ONNX Runtime session on %s (requested %s)", active, device)
    return session, str(active)
