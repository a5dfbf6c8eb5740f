"""One file, photo or video, with everything a file run may ask for: privacy zones, the audit sidecar, the
sound kept or dropped, or only the sidecar (``boxes_only``). The `file` command (one file or a batch) and upload
jobs both come through here, so they cannot differ."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..audit import AuditFile
from ..offline import FileResult, InputError, ProgressCallback, anonymize_image, atomic_output, classify_input
from ..processor import FrameProcessor
from .video import anonymize_video

AUDIT_SUFFIX = ".audit.jsonl"


@dataclass(frozen=True)
class FileOptions:
    keep_audio: bool = True
    audit: Path | None = None  # write the audit trail (audit.py), one line per frame, to this file
    boxes_only: bool = False  # write only the audit trail: no picture is encoded
    crf: int = 20
    detect_workers: int = 1
    private: bool = False  # outputs are 0600 (upload jobs)

    def __post_init__(self) -> None:
        if self.boxes_only and self.audit is None:
            raise ValueError("boxes-only needs the audit file to write")


def sidecar_path(output: Path) -> Path:
    """Where the audit trail of ``output`` goes by default: beside it, ``NAME.audit.jsonl``."""
    return output.with_name(output.name + AUDIT_SUFFIX)


def anonymize_file(src: Path, dst: Path | None, processor: FrameProcessor, options: FileOptions, *,
                   on_progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None) -> FileResult:
    """Anonymize ``src`` into ``dst`` (None with ``boxes_only``), writing the audit file when asked. The audit file
    appears only complete, like the output, and only when the output does."""
    if options.boxes_only:
        dst = None
    elif dst is None:
        raise ValueError("an output file is needed unless only the boxes are written")
    if options.audit is not None and dst is not None and options.audit.resolve() == dst.resolve():
        raise InputError(f"{dst}: the audit file must differ from the output")
    kind = classify_input(src)
    if options.audit is None:
        return _run(kind, src, dst, processor, options, on_progress, cancel)
    with atomic_output(options.audit, private=options.private) as tmp, tmp.open("wb") as stream:
        processor.audit = AuditFile(stream)
        try:
            return _run(kind, src, dst, processor, options, on_progress, cancel)
        finally:
            processor.audit = None


def _run(kind: str, src: Path, dst: Path | None, processor: FrameProcessor, options: FileOptions,
         on_progress: ProgressCallback | None, cancel: threading.Event | None) -> FileResult:
    if kind == "image":
        return anonymize_image(src, dst, processor, private=options.private)
    return anonymize_video(src, dst, processor, keep_audio=options.keep_audio, crf=options.crf,
                           detect_workers=options.detect_workers, on_progress=on_progress, cancel=cancel,
                           private=options.private)
