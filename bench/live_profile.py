"""Where the time goes per frame in the live loop: each stage timed on its own, in one process, on real frames.

    python -m bench.live_profile [--device cpu] [--sizes 640x480,1280x720] [--frames 150] [--quick] [--json PATH]

For each frame size, the first ``--frames`` frames of a real clip (centre-cropped and resized; the clips of
``bench.live_loopback``) are VP8-encoded once with aiortc's own encoder, as the client's browser would send them
(untimed), then pushed through the stages the server runs for every frame, each timed separately:

1. VP8 decode (``aiortc.codecs.vpx.Vp8Decoder`` on the depayloaded frames);
2. ``frame.to_ndarray(format="bgr24")`` (as ``streamer.scheduler.LiveScheduler`` does);
3. detection (``FrameProcessor.detect``: the detector from ``models.load_detector`` with the server's settings,
   ``DetectorConfig(threads=0, spin_wait=False)``, detect size 640, never upscaling), on every frame, as live
   streams do;
4. tracker update + mosaic (``FrameProcessor.apply`` with that frame's own detections);
5. BGR -> yuv420p and the wrap into a ``VideoFrame`` (``HiddenFrame.to_video_frame``);
6. VP8 encode (``Vp8Encoder``, aiortc's settings: 500 kbps, realtime, one thread on this machine).

Baseline in the same run: the echo path (decode, then encode the decoded frame as it is).

Wall time (median, p95) and CPU time (the process's, every thread; ONNX Runtime may use more than one core) per
stage; *one core: frames/s* is 1000 / CPU ms, what one core could sustain if it did nothing else. Then cheap
variants of the same stages side by side, on the same frames. The results go to bench/out/live_profile.json
(``--json``); ``python -m bench.render`` makes the tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import cv2
import numpy as np
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame

from models import DetectorConfig, FaceDetections, load_detector
from streamer.processor import FrameProcessor
from streamer.scheduler import HiddenFrame
from testkit.frames import read_fitted

from ._common import VIDEOS, Frame, json_option, parse_size, write_results
from .run_all import cpu_model, load_average

DEFAULT_SIZES = ("640x480", "1280x720")
DEFAULT_CLIPS = {"640x480": "face_recognition_short_hamilton_clip.mp4",
                 "1280x720": "liveportrait_source_s18.mp4"}
FALLBACK_CLIP = "face_recognition_short_hamilton_clip.mp4"
TIME_BASE = Fraction(1, 90000)
WARMUP_FRAMES = 5  # not counted: the keyframe, first allocations, ONNX Runtime's first runs per shape
T = TypeVar("T")


@dataclass
class Stage:
    """Wall and CPU milliseconds of one stage, one sample per frame."""

    name: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def time(self, keep: bool, fn: Callable[..., T], *args: Any) -> T:
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args)
        w1, c1 = time.perf_counter(), time.process_time()
        if keep:
            self.wall.append((w1 - w0) * 1000)
            self.cpu.append((c1 - c0) * 1000)
        return out

    @property
    def median(self) -> float:
        return statistics.median(self.wall) if self.wall else float("nan")

    @property
    def p95(self) -> float:
        return float(np.percentile(self.wall, 95)) if self.wall else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")


def load_frames(path: Path, width: int, height: int, count: int) -> tuple[list[Frame], float]:
    """The first ``count`` frames of ``path`` as BGR at width x height (played back and forth when shorter)."""
    frames, fps = read_fitted(path, width, height, count)
    while len(frames) < count:  # a short clip: forward, backward, ... (no jump cut for the encoder)
        frames += frames[::-1][1:count - len(frames) + 1]
    return frames, fps


def encode_as_client(frames: Sequence[Frame], fps: float) -> list[JitterFrame]:
    """What the server's receiver hands its decoder: each frame VP8-encoded by aiortc, packetized, depayloaded."""
    encoder = Vp8Encoder()
    out = []
    for n, bgr in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), np.uint8),
                                           format="yuv420p")
        frame.pts, frame.time_base = round(n * 90000 / fps), TIME_BASE
        payloads, timestamp = encoder.encode(frame)
        out.append(JitterFrame(b"".join(vp8_depayload(p) for p in payloads), timestamp))
    return out


def decode_one(decoder: Vp8Decoder, packet: JitterFrame) -> av.VideoFrame:
    frames = decoder.decode(packet)
    if len(frames) != 1 or not isinstance(frames[0], av.VideoFrame):
        raise RuntimeError(f"VP8 decoder gave {len(frames)} frames for one packet")
    return frames[0]


def _to_bgr(frame: av.VideoFrame) -> Frame:
    return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)


def _to_frame(image: Frame, pts: int, time_base: Fraction) -> av.VideoFrame:
    yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), np.uint8)
    return HiddenFrame(0, image, yuv, pts, time_base, False).to_video_frame()


def yuv_to_bgr(frame: av.VideoFrame) -> Frame:
    return np.asarray(cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420), np.uint8)


def bgr_to_frame_swscale(bgr: Frame) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")


def profile_echo(packets: Sequence[JitterFrame]) -> list[Stage]:
    decode, encode = Stage("VP8 decode"), Stage("VP8 encode")
    decoder, encoder = Vp8Decoder(), Vp8Encoder()
    for n, packet in enumerate(packets):
        keep = n >= WARMUP_FRAMES
        frame = decode.time(keep, decode_one, decoder, packet)
        encode.time(keep, encoder.encode, frame)
    return [decode, encode]


def profile_ours(packets: Sequence[JitterFrame], fps: float, detector: Any) -> tuple[list[Stage], float]:
    """The server's per-frame stages, detection on every frame. Returns the stages and faces per frame."""
    stages = {name: Stage(name) for name in (
        "VP8 decode", "to_ndarray(bgr24)", "detection", "tracker update + mosaic (apply)",
        "BGR -> yuv420p + VideoFrame", "VP8 encode")}
    s = list(stages.values())
    decoder, encoder = Vp8Decoder(), Vp8Encoder()
    processor = FrameProcessor(detector, stream_id="profile")
    processor.upscale = False  # as the server's live sessions
    faces = []
    for n, packet in enumerate(packets):
        keep = n >= WARMUP_FRAMES
        t = n / fps
        frame = s[0].time(keep, decode_one, decoder, packet)
        image = s[1].time(keep, _to_bgr, frame)

        found: tuple[FaceDetections | None, float] = s[2].time(keep, processor.detect, image, t)
        detections, detect_ms = found
        if detections is None:
            raise RuntimeError("the detector failed")
        faces.append(len(detections))
        s[3].time(keep, processor.apply, image, t, detections, detect_ms)
        pts = round(n * 90000 / fps)
        out = s[4].time(keep, _to_frame, image, pts, TIME_BASE)
        s[5].time(keep, encoder.encode, out)
    return s, statistics.mean(faces[WARMUP_FRAMES:] or faces)


@dataclass
class Variant:
    step: str
    name: str
    stage: Stage
    current: bool
    mean_abs_diff: float | None = None  # against the current variant's picture, grey levels
    faces_per_frame: float | None = None


def profile_variants(packets: Sequence[JitterFrame], detectors: dict[str, Any], sizes: Sequence[int],
                     width: int, height: int) -> list[Variant]:
    """Cheap alternatives to the current stages, on the same decoded frames."""
    decoder = Vp8Decoder()
    decoded = [decode_one(decoder, p) for p in packets]
    bgrs = [_to_bgr(f) for f in decoded]
    out: list[Variant] = []

    # Input: swscale's bgr24 against the yuv420p planes converted by OpenCV.
    a, b = Stage("a"), Stage("b")
    diffs = []
    for n, frame in enumerate(decoded):
        keep = n >= WARMUP_FRAMES
        x = a.time(keep, _to_bgr, frame)
        y = b.time(keep, yuv_to_bgr, frame)
        diffs.append(float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean()))
    out.append(Variant("decoded frame -> BGR", "`frame.to_ndarray(format=\"bgr24\")` (swscale)", a, True))
    out.append(Variant("decoded frame -> BGR", "`frame.to_ndarray()` (yuv420p) + `cv2.cvtColor(YUV2BGR_I420)`", b,
                       False, mean_abs_diff=statistics.mean(diffs)))

    # Output: OpenCV's BGR -> I420 then wrap (current), against wrapping BGR and letting swscale convert.
    a, b = Stage("a"), Stage("b")
    for n, bgr in enumerate(bgrs):
        keep = n >= WARMUP_FRAMES
        a.time(keep, _to_frame, bgr, n, TIME_BASE)
        b.time(keep, bgr_to_frame_swscale, bgr)
    out.append(Variant("BGR -> yuv420p VideoFrame", "`cv2.cvtColor(BGR2YUV_I420)` + `from_ndarray(yuv420p)`", a,
                       True))
    out.append(Variant("BGR -> yuv420p VideoFrame", "`from_ndarray(bgr24)` + `reformat(yuv420p)` (swscale)", b,
                       False))

    # Detection: network size and threads (the mosaic stays on the full frame, so its cost does not change).
    # Round robin over the variants frame by frame, so that load from elsewhere hits them alike.
    runs: list[tuple[str, Any, int, Stage, list[int]]] = [
        (label, detector, size, Stage("d"), []) for label, detector in detectors.items() for size in sizes]
    for _, detector, size, _, _ in runs:
        for _ in range(3):
            detector.detect(bgrs[0], None, min(size, max(width, height)))
    for bgr in bgrs[WARMUP_FRAMES::2]:
        for _, detector, size, stage, faces in runs:
            size_used = min(size, max(width, height))
            faces.append(len(stage.time(True, detector.detect, bgr, None, size_used)))
    for label, _, size, stage, faces in runs:
        out.append(Variant("detection", f"detect size {size} ({label})", stage, label == "server" and size == 640,
                           faces_per_frame=statistics.mean(faces)))
    return out


def stage_json(s: Stage) -> dict[str, object]:
    return {"name": s.name, "median_ms": s.median, "p95_ms": s.p95, "cpu_median_ms": s.cpu_median,
            "frames": len(s.wall)}


def total_json(stages: Sequence[Stage]) -> dict[str, float]:
    """Wall ms per frame over every stage: median and p95."""
    per_frame = [sum(v) for v in zip(*(s.wall for s in stages), strict=True)]
    return {"median_ms": statistics.median(per_frame), "p95_ms": float(np.percentile(per_frame, 95))}


def size_json(size: str, clip: str, frames: int, ours: list[Stage], echo: list[Stage], faces: float,
              variants: list[Variant]) -> dict[str, object]:
    return {"size": size, "clip": clip, "frames": frames, "faces_per_frame": faces,
            "ours": [stage_json(s) for s in ours], "echo": [stage_json(s) for s in echo],
            "ours_total": total_json(ours), "echo_total": total_json(echo),
            "variants": [{"step": v.step, "name": v.name, "current": v.current, "median_ms": v.stage.median,
                          "p95_ms": v.stage.p95, "cpu_median_ms": v.stage.cpu_median,
                          "mean_abs_diff": v.mean_abs_diff, "faces_per_frame": v.faces_per_frame} for v in variants]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.live_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="comma-separated (default: %(default)s)")
    p.add_argument("--frames", type=int, default=None, help="timed frames per size (default 150; quick 30)")
    p.add_argument("--quick", action="store_true", help="smoke run: 30 frames per size")
    p.add_argument("--clip", type=Path, default=None, help="clip for every size (default: as bench.live_loopback)")
    p.add_argument("--detect-sizes", default="640,480,320", help="detect sizes compared (default: %(default)s)")
    json_option(p, "live_profile")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    frames = args.frames or (30 if args.quick else 150)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    detect_sizes = [int(v) for v in args.detect_sizes.split(",") if v.strip()]
    device = args.device
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    machine = f"{cpu_model()}, {cores} logical cores ({usable} usable); load average at start {load_average()}"
    started = time.perf_counter()
    # The server's detector: DetectorConfig(threads=--threads (0), spin_wait=False) at --precision auto (int8 on the
    # CPU), see streamer/server/app.py; fp32 beside it, the precision before issue #7.
    server = load_detector(device, None, DetectorConfig(threads=0, spin_wait=False), precision="auto")
    detectors: dict[str, Any] = {"server": server}
    if server.provider == "CPUExecutionProvider":
        detectors["fp32"] = load_detector(device, None, DetectorConfig(threads=0, spin_wait=False))
        detectors["1 thread"] = load_detector(device, None, DetectorConfig(threads=1, spin_wait=False),
                                              precision="auto")
    parts = []
    for size in sizes:
        width, height = parse_size(size)
        clip = args.clip or VIDEOS / DEFAULT_CLIPS.get(size, FALLBACK_CLIP)
        print(f"[profile] {size}: {clip.name}", file=sys.stderr, flush=True)
        bgr, fps = load_frames(clip, width, height, frames + WARMUP_FRAMES)
        packets = encode_as_client(bgr, fps)
        echo = profile_echo(packets)
        ours, faces = profile_ours(packets, fps, server)
        variants = profile_variants(packets, detectors, detect_sizes, width, height)
        parts.append(size_json(size, clip.name, frames, ours, echo, faces, variants))
    machine += f", at end {load_average()}"
    write_results("live_profile", argv, args, started, sizes=parts, warmup_frames=WARMUP_FRAMES, machine=machine,
                  provider=server.provider)
    print(f"[profile] done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
