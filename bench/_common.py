"""Helpers shared by the benchmark scripts: paths, frames from clips, timing statistics, the JSON results."""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from testkit.frames import fit_frame
from testkit.truth import TESTDATA_DIR

REPO = Path(__file__).resolve().parent.parent
VIDEOS = TESTDATA_DIR / "videos"
IMAGES = TESTDATA_DIR / "images"
DEFACE_VENV = REPO / "bench" / ".venv-deface"
DEFACE_BIN = DEFACE_VENV / "bin" / "deface"
DEFACE_PYTHON = DEFACE_VENV / "bin" / "python"
DEFACE_PROBE = REPO / "bench" / "deface_probe.py"
OUT = REPO / "bench" / "out"  # git-ignored: results (JSON), the quick page, cached clips

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one measured thing, in milliseconds (or seconds; the unit is the caller's)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return float(np.percentile(np.asarray(self.samples), 95))


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"size must look like 1280x720, not {text!r}") from exc
    if w < 16 or h < 16:
        raise ValueError(f"size too small: {text!r}")
    return w, h


def read_frames(path: Path, count: int) -> list[Frame]:
    """``count`` BGR frames spread evenly over the clip (decodes it once, sequentially)."""
    total = count_frames(path)
    if total == 0:
        raise ValueError(f"{path} has no decodable video frames")
    wanted = sorted({int(i) for i in np.linspace(0, total - 1, num=min(count, total))})
    frames: list[Frame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames.append(np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8))
            if index >= wanted[-1]:
                break
    return frames


def count_frames(path: Path) -> int:
    """Frames in the first video stream, counted by decoding (container headers are often wrong)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return 0
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def video_info(path: Path) -> tuple[int, int, float]:
    """(width, height, frames per second) of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or Fraction(30)
        return int(stream.codec_context.width), int(stream.codec_context.height), float(rate)


def transcode(src: Path, dst: Path, size: tuple[int, int] | None = None, seconds: float | None = None,
              crf: int = 18) -> int:
    """Re-encode the video of ``src`` to H.264 ``dst`` (no audio): optionally centre-cropped and resized to
    ``size`` and cut to the first ``seconds``. Returns the number of frames written."""
    written = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        rate = vin.average_rate or vin.base_rate or Fraction(30)
        width, height = size or (vin.codec_context.width, vin.codec_context.height)
        vout: Any = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.options = {"crf": str(crf), "preset": "veryfast"}
        limit = None if seconds is None else max(1, round(seconds * float(rate)))
        for frame in inp.decode(vin):
            if limit is not None and written >= limit:
                break
            image = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
            if size is not None:
                image = fit_frame(image, width, height)
            new = av.VideoFrame.from_ndarray(image, format="bgr24")
            new.pts = written
            new.time_base = Fraction(1) / rate
            for packet in vout.encode(new):
                out.mux(packet)
            written += 1
        for packet in vout.encode(None):
            out.mux(packet)
    return written


def json_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json PATH``: where a benchmark writes its results (bench.render turns them into Markdown)."""
    parser.add_argument("--json", type=Path, default=OUT / f"{name}.json", metavar="PATH",
                        help=f"write the results here as JSON (default: bench/out/{name}.json); "
                             "`python -m bench.render PATH` turns them into Markdown")


def typed_command(name: str, argv: Sequence[str]) -> str:
    """``python -m bench.NAME ARGS`` as typed from the repository root, ``--json PATH`` left out."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            shown.append(arg)
    return shlex.join(["python", "-m", f"bench.{name}", *shown])


def write_results(name: str, argv: Sequence[str], args: argparse.Namespace, started: float,
                  **results: Any) -> dict[str, Any]:
    """Write a benchmark's results to ``args.json`` as the document bench.render reads: ``benchmark``, ``command``
    (as typed), ``args`` (every argument but --json), ``seconds`` since ``started`` (time.perf_counter), then
    ``results``. Paths become strings. Returns the document as written."""
    path: Path = args.json
    doc = {"benchmark": name, "command": typed_command(name, argv),
           "args": {k: v for k, v in vars(args).items() if k != "json"},
           "seconds": round(time.perf_counter() - started, 1), **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    text = json.dumps(doc, indent=1, default=str)
    part.write_text(text + "\n")
    part.replace(path)
    print(f"[{name}] wrote {path}", file=sys.stderr, flush=True)
    written: dict[str, Any] = json.loads(text)
    return written


def round32(value: int) -> int:
    """Round up to a multiple of 32 (the CenterFace input constraint), as deface does."""
    return -(-value // 32) * 32
