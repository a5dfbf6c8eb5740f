"""A video file anonymized: decode -> hide -> encode, each stage on its own thread, into a temporary file beside
OUTPUT that is renamed only when complete, so a failure or a cancel never leaves a half-written OUTPUT."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..offline import (
    VIDEO_SUFFIXES,
    Cancelled,
    FileResult,
    InputError,
    Progress,
    ProgressCallback,
    atomic_output,
    open_video,
)
from ..processor import FrameProcessor
from .audio import AudioCopy
from .decode import Item, VideoDecoder
from .encode import H264Output
from .hide import HideStage
from .stages import END, QUEUE_DEPTH, Stage, get, put


def anonymize_video(src: Path, dst: Path | None, processor: FrameProcessor, *, keep_audio: bool = False,
                    crf: int = 20, preset: str = "superfast", detect_workers: int = 1,
                    on_progress: ProgressCallback | None = None,
                    cancel: threading.Event | None = None, private: bool = False) -> FileResult:
    """Anonymize a video file. ``detect_workers`` frames are detected at once (use one per core with a
    single-threaded detector on CPU). ``private``: the output is 0600 (see ``atomic_output``). ``dst`` None: the
    frames are detected, tracked and hidden but not encoded, for a run that wants only the processor's audit
    trail (``--boxes-only``)."""
    if dst is not None and dst.suffix.lower() not in VIDEO_SUFFIXES - {".webm"}:
        raise InputError(f"{dst}: output of a video must be .mp4, .mkv, .mov, .m4v or .avi (H.264)")
    started = time.perf_counter()
    container = open_video(src)
    stop = threading.Event()
    try:
        audio = AudioCopy(container, keep_audio and dst is not None)
        decoder = VideoDecoder(src, container, audio)
        hider = HideStage(processor, detect_workers)
        decoded: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        hidden: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        with contextlib.ExitStack() as files:
            output: H264Output | None = None
            if dst is not None:
                tmp = files.enter_context(atomic_output(dst, private=private))
                output = files.enter_context(H264Output(tmp, dst, (decoder.width, decoder.height), decoder.rate,
                                                        decoder.time_base, crf=crf, preset=preset, audio=audio))
            stages = [Stage("decode", lambda: _send(decoder.items(), decoded, stop)),
                      Stage("hide", lambda: hider.run(decoded, hidden, stop))]
            for stage in stages:
                stage.start()
            try:
                frames = 0
                while True:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"{src}: cancelled")
                    item = get(hidden, stop)
                    if item is END:
                        break
                    kind, payload = item
                    if kind == "audio":
                        if output is not None:
                            output.write_audio(payload)
                        continue
                    image, pts, _ = payload
                    if output is not None:
                        output.write(image, pts)
                    frames += 1
                    if on_progress is not None:
                        on_progress(Progress(frames, decoder.total, time.perf_counter() - started))
                for stage in reversed(stages):  # downstream first: one that died leaves those feeding it blocked
                    stage.join()
                    if stage.error is not None:
                        raise stage.error  # the finally below stops the others
                if frames == 0:
                    raise InputError(f"{src}: video has no decodable frames")
                if output is not None:
                    output.finish()
            finally:
                stop.set()
                for stage in stages:
                    stage.join(timeout=5)
        return FileResult(dst, frames, decoder.width, decoder.height, hider.faces, hider.hidden_whole,
                          time.perf_counter() - started)
    finally:
        stop.set()
        container.close()


def _send(items: Iterator[Item], to: queue.Queue[Any], stop: threading.Event) -> None:
    """The decode stage: every item into ``to``, then END."""
    try:
        for item in items:
            if not put(to, item, stop):
                return
    finally:
        put(to, END, stop)
