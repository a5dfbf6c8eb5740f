"""``python -m models.triton_repo OUT``: write a Triton Inference Server model repository that serves CenterFace.

It holds ``OUT/<name>/1/model.onnx`` (models.serving_graph: uint8 BGR frames in, named float maps out) and
``OUT/<name>/config.pbtxt`` for the onnxruntime backend. The config is built as Triton's own ``ModelConfig``
protobuf message (from tritonclient, the ``triton`` extra) and printed with protobuf's text format, so a field or
enum that Triton would not parse cannot be written; ``read_config`` parses one back.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from .precision import PRECISION_CHOICES, Precision, PrecisionChoice
from .serving_graph import INPUT, OUTPUT_CHANNELS, OUTPUTS, serving_graph
from .weights import ModelError, resolve_model

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

logger = logging.getLogger(__name__)

Kind = Literal["gpu", "cpu"]
TensorRT = Literal["off", "fp16", "fp32"]

VERSION = "1"  # the only version written, and the only one config.pbtxt lets Triton serve
DEFAULT_PREFERRED = (4, 8, 16)
# The release the config was written against. Every field used here exists in all 2x.yy releases, so an older or
# newer tag serves the same repository.
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-py3"
TRT_WORKSPACE_BYTES = 1 << 30
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # no "/", "..", leading "." or "-": one plain folder


@dataclass(frozen=True)
class RepoOptions:
    """What to write; ``None`` fields take the documented defaults (see ``instance_count``, ``preferred``)."""

    name: str = "centerface"
    model: Path | None = None  # own CenterFace-format weights; None: the verified default
    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] | None = None  # None: 4, 8, 16 clipped to max_batch_size
    # How long the first frame of a batch may wait for companions: it bounds the latency batching adds to a live
    # frame (2 ms against a ~33 ms frame interval at 30 fps), while streams that arrive together still share a run.
    max_queue_delay_us: int = 2000
    kind: Kind = "gpu"
    # Per GPU on kind gpu (Triton's count). None: 1 on a GPU, where one copy with batching keeps it busy; 2 on CPU,
    # so one batch runs while the next is gathered.
    instances: int | None = None
    gpus: tuple[int, ...] = ()  # empty: Triton places the instances on every visible GPU
    tensorrt: TensorRT = "off"
    # The weights' precision, as in process: auto is int8 on kind cpu (1.4-1.7x faster there, same measured
    # recall: BENCHMARKS.md) and fp32 on kind gpu; fp16 for GPUs without TensorRT. Built from the verified weights.
    precision: PrecisionChoice = "auto"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"name must be one folder name of letters, digits, '_', '.' or '-' (starting with a "
                             f"letter or digit, at most 128), not {self.name!r}")
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"kind must be gpu or cpu, not {self.kind!r}")
        if self.tensorrt not in ("off", "fp16", "fp32"):
            raise ValueError(f"tensorrt must be off, fp16 or fp32, not {self.tensorrt!r}")
        if not 1 <= self.max_batch_size <= 1024:  # 0 would mean "no batch dimension": the graph has one
            raise ValueError(f"max_batch_size must be within 1..1024, not {self.max_batch_size}")
        if self.preferred_batch_sizes is not None:
            bad = [n for n in self.preferred_batch_sizes if not 1 <= n <= self.max_batch_size]
            if not self.preferred_batch_sizes or bad:
                raise ValueError(f"preferred batch sizes must be within 1..max_batch_size "
                                 f"({self.max_batch_size}), not {list(self.preferred_batch_sizes)}")
        if not 0 <= self.max_queue_delay_us <= 1_000_000:  # over a second, a live frame is stale on arrival
            raise ValueError(f"max_queue_delay_us must be within 0..1000000, not {self.max_queue_delay_us}")
        if self.instances is not None and not 1 <= self.instances <= 64:
            raise ValueError(f"instances must be within 1..64, not {self.instances}")
        if self.kind == "cpu" and self.gpus:
            raise ValueError("gpus are for kind gpu; kind cpu runs on no GPU")
        if any(g < 0 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"gpus must be distinct GPU ids >= 0, not {list(self.gpus)}")
        if self.kind == "cpu" and self.tensorrt != "off":
            raise ValueError(f"tensorrt {self.tensorrt} needs kind gpu: TensorRT runs on NVIDIA GPUs only")
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, not {self.precision!r}")
        if self.precision in ("int8", "fp16") and self.model is not None:
            raise ValueError(f"precision {self.precision} is built from the verified weights; give your own "
                             "quantized file as model with precision fp32")
        if self.kind == "gpu" and self.precision == "int8":
            raise ValueError("precision int8 is for kind cpu: on a GPU its quantize/dequantize pairs run in float "
                             "(use fp16, or --tensorrt fp16)")
        if self.kind == "cpu" and self.precision == "fp16":
            raise ValueError("precision fp16 is for kind gpu: on the CPU it runs no faster than fp32")
        if self.tensorrt != "off" and self.weights_precision != "fp32":
            raise ValueError(f"tensorrt {self.tensorrt} builds its own {self.tensorrt} engine from fp32 weights; "
                             f"leave precision at auto or fp32")

    @property
    def weights_precision(self) -> Precision:
        if self.precision != "auto":
            return self.precision
        return "int8" if self.kind == "cpu" and self.model is None else "fp32"

    @property
    def instance_count(self) -> int:
        return self.instances if self.instances is not None else (1 if self.kind == "gpu" else 2)

    @property
    def preferred(self) -> list[int]:
        if self.preferred_batch_sizes is not None:
            return sorted(set(self.preferred_batch_sizes))
        return sorted({min(n, self.max_batch_size) for n in DEFAULT_PREFERRED})


def _model_config_pb2() -> ModuleType:  # a generated protobuf module: its messages are untyped
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ImportError(f"writing a Triton model repository needs tritonclient[grpc] ({exc}); install it with "
                          "`pip install -e .[triton]`") from exc
    module: ModuleType = model_config_pb2
    return module


def build_config(options: RepoOptions) -> ModelConfig:
    """The ModelConfig message for ``options``, with the tensors of models.serving_graph."""
    pb = _model_config_pb2()
    config = pb.ModelConfig(name=options.name, backend="onnxruntime", max_batch_size=options.max_batch_size)
    # Dims leave out the batch dimension (max_batch_size > 0); -1 is a variable size. Triton's dynamic batcher only
    # puts requests of equal shape into one batch, so frames of different sizes never need padding to each other.
    config.input.add(name=INPUT, data_type=pb.TYPE_UINT8, dims=[-1, -1, 3])
    for name, channels in zip(OUTPUTS, OUTPUT_CHANNELS, strict=True):
        config.output.add(name=name, data_type=pb.TYPE_FP32, dims=[channels, -1, -1])
    config.dynamic_batching.preferred_batch_size.extend(options.preferred)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind = pb.ModelInstanceGroup.KIND_GPU if options.kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    # Exactly the version written here: a stray higher version folder would otherwise be served instead.
    config.version_policy.specific.versions.append(int(VERSION))
    config.instance_group.add(count=options.instance_count, kind=kind, gpus=list(options.gpus))
    if options.tensorrt != "off":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = options.tensorrt.upper()
        accelerator.parameters["max_workspace_size_bytes"] = str(TRT_WORKSPACE_BYTES)
    return config


def read_config(path: Path) -> ModelConfig:
    """Parse a config.pbtxt into a ModelConfig (ParseError on anything Triton's schema does not have)."""
    from google.protobuf import text_format

    config = _model_config_pb2().ModelConfig()
    text_format.Parse(path.read_text(encoding="utf-8"), config)
    return config


def _check_outputs(graph: bytes, model: Path) -> None:
    """Refuse a --model whose maps have other channel counts than the config promises: Triton would only say so
    when it loads the model, on the server."""
    import onnx

    outputs = onnx.load_from_string(graph).graph.output
    found = tuple(out.type.tensor_type.shape.dim[1].dim_value for out in outputs)
    if found != OUTPUT_CHANNELS:
        raise ModelError(f"{model}: output channels {found}, expected {OUTPUT_CHANNELS} ({', '.join(OUTPUTS)})")


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step: a Triton polling the repository never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the server in the container often runs as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_repository(out: Path, options: RepoOptions) -> Path:
    """Write (or replace) ``out/<name>`` and return that folder. ModelError for missing or wrong weights,
    ImportError without tritonclient."""
    config = build_config(options)  # first: a missing tritonclient fails before any file is touched
    from google.protobuf import text_format

    if options.weights_precision == "fp32":
        model = resolve_model(options.model)
    else:
        from .quantize import build_variant  # onnx quantization tools only when a variant is asked for

        model = build_variant(options.weights_precision)
    graph = serving_graph(model)
    _check_outputs(graph, model)
    folder = out / options.name
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    # Model first: a config is never beside a model it does not describe.
    _write_atomic(folder / VERSION / "model.onnx", graph)
    header = ("# Written by python -m models.triton_repo. max_queue_delay_microseconds bounds how long a frame waits\n"
              "# for companions to share a batch: the latency batching may add to a live frame.\n")
    _write_atomic(folder / "config.pbtxt", (header + text_format.MessageToString(config)).encode())
    stray = sorted(p.name for p in folder.iterdir() if p.name not in (VERSION, "config.pbtxt")
                   and not p.name.startswith("."))
    if stray:  # left alone: config.pbtxt pins version 1, so Triton serves none of them
        logger.warning("%s also holds %s, left as they were; config.pbtxt serves version %s only",
                       folder, ", ".join(stray), VERSION)
    return folder


def serve_command(out: Path, options: RepoOptions) -> str:
    gpus = "--gpus all " if options.kind == "gpu" else ""
    volume = shlex.quote(f"{out.resolve()}:/models")
    return (f"docker run {gpus}--rm -p 8001:8001 -p 8000:8000 -p 8002:8002 -v {volume} {TRITON_IMAGE} "
            "tritonserver --model-repository=/models")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.triton_repo",
                                     description="Write a Triton Inference Server model repository for CenterFace.")
    parser.add_argument("out", type=Path, help="the model repository folder (created; mounted as /models)")
    parser.add_argument("--name", default="centerface", help="model name and folder (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=None,
                        help="own CenterFace-format weights (default: the verified weights, see models.fetch)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="default: %(default)s")
    parser.add_argument("--preferred-batch-sizes", type=_int_list, default=None, metavar="N,N,...",
                        help="default: 4,8,16 clipped to --max-batch-size")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000,
                        help="longest wait for a batch to fill, in microseconds (default: %(default)s)")
    parser.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="default: %(default)s")
    parser.add_argument("--instances", type=int, default=None,
                        help="model instances, on each GPU with --kind gpu (default: 1 on gpu, 2 on cpu)")
    parser.add_argument("--gpus", type=_int_list, default=(), metavar="ID,ID,...",
                        help="GPU ids for the instances (default: every visible GPU)")
    parser.add_argument("--tensorrt", choices=("off", "fp16", "fp32"), default="off",
                        help="run through ONNX Runtime's TensorRT accelerator, --kind gpu only (default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="the weights: auto is int8 with --kind cpu and fp32 with --kind gpu; fp16 for a GPU "
                             "without TensorRT (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = RepoOptions(name=args.name, model=args.model, max_batch_size=args.max_batch_size,
                              preferred_batch_sizes=args.preferred_batch_sizes,
                              max_queue_delay_us=args.max_queue_delay_us, kind=args.kind, instances=args.instances,
                              gpus=args.gpus, tensorrt=args.tensorrt, precision=args.precision)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        folder = write_repository(args.out, options)
    except (ModelError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    gpus = ",".join(map(str, options.gpus)) or "all"
    print(f"wrote {folder / VERSION / 'model.onnx'}\nwrote {folder / 'config.pbtxt'}")
    print(f"batching: max {options.max_batch_size}, preferred {options.preferred}, queue delay "
          f"{options.max_queue_delay_us} us; {options.instance_count} instance(s) "
          f"{'per GPU' if options.kind == 'gpu' else 'on cpu'}"
          f"{f' (GPUs {gpus})' if options.kind == 'gpu' else ''}; weights {options.weights_precision}; "
          f"tensorrt {options.tensorrt}")
    print(f"serve it with:\n  {serve_command(args.out, options)}")
    print(f"then detect with: --detector triton://localhost:8001/{options.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
