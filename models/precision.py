"""The precisions a detector can run at. Kept apart from models.quantize so that importing ``models`` stays light
(and ``python -m models.quantize`` does not import itself twice)."""

from __future__ import annotations

from typing import Literal

Precision = Literal["fp32", "int8", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8", "fp16")
# "auto": int8 where the detector will run on the CPU (same recall on ../shared/testdata, 1.4-1.7x faster; see
# BENCHMARKS.md), fp32 on CUDA (fp16 has not been measured on a GPU in this project yet) and for a --model file.
PrecisionChoice = Literal["auto", "fp32", "int8", "fp16"]
PRECISION_CHOICES: tuple[PrecisionChoice, ...] = ("auto", "fp32", "int8", "fp16")


def resolve_precision(choice: PrecisionChoice, device: str, model: object = None) -> Precision:
    """The precision ``choice`` means for a detector on ``device`` ("auto", "cpu" or "cuda")."""
    if choice != "auto":
        return choice
    if model is not None or device == "cuda":
        return "fp32"
    if device == "auto":
        from .runtime import CUDA, import_onnxruntime

        if CUDA in import_onnxruntime().get_available_providers():
            return "fp32"  # CUDA will most likely load; if it does not, the CPU runs fp32, logged
    return "int8"
