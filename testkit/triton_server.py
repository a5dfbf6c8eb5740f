"""A real NVIDIA Triton Inference Server for tests and benches, serving a model repository that
``python -m models.triton_repo`` wrote.

Run by Debian's /usr/bin/python3 in the venv ``scripts/triton-venv.sh`` makes (``testkit.triton.TritonProcess``
starts it): ``tritonserver`` is the binary inside the ``nvidia-pytriton`` wheel, whose Python-backend stub only
works with that interpreter. The wheel ships no onnxruntime backend, so the model is bound through PyTriton's
Python backend, and ONNX Runtime (CPU) runs the repository's ``model.onnx`` inside this process; everything else is
Triton's own: the gRPC/HTTP endpoints, the dynamic batcher configured from the repository's ``config.pbtxt``
(max batch size, preferred sizes, queue delay, instance count), health and Prometheus metrics.

    python testkit/triton_server.py REPO NAME --grpc-port P --http-port P --metrics-port P --workspace DIR
                                    [--threads N]

Runs until SIGTERM/SIGINT; the model is ready when Triton's HTTP `/v2/models/NAME/ready` answers 200.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tritonclient.grpc import model_config_pb2

# models.serving_graph's INPUT/OUTPUTS, written out: this venv has none of the project's dependencies to import it
# with (tests/test_triton.py fails on any mismatch, as the service checks the served signature).
OUTPUTS = (("heatmap", 1), ("scale", 2), ("offset", 2), ("landmarks", 10))


def _fault(path: Path | None) -> str | None:
    try:
        return path.read_text().strip() if path is not None else None
    except OSError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("name")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads per instance")
    parser.add_argument("--fault-file", type=Path, default=None,
                        help="while this file holds 'nan' or 'shape', the model answers NaN heatmaps or maps of the "
                             "wrong size (a broken server, for the fail-closed tests)")
    parser.add_argument("--tls-cert", type=Path, default=None, help="gRPC over TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, default=None, help="... and its key")
    parser.add_argument("--tls-client-ca", type=Path, default=None,
                        help="mutual TLS: clients must show a certificate of this CA")
    parser.add_argument("--workspace", type=Path, required=True,
                        help="PyTriton's copy of the server and its sockets (the caller removes it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = model_config_pb2.ModelConfig()
    text_format.Parse((args.repository / args.name / "config.pbtxt").read_text(), config)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    model = str(args.repository / args.name / "1" / "model.onnx")
    instances = max(1, sum(group.count or 1 for group in config.instance_group))

    def make_instance() -> Any:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        @batch  # type: ignore[untyped-decorator]
        def infer(image: Any) -> dict[str, Any]:
            maps = session.run(None, {"image": image})
            fault = _fault(args.fault_file)
            if fault == "nan":
                maps[0][...] = np.nan
            elif fault == "shape":
                maps = [m[:, :, 1:, 1:] for m in maps]
            return dict(zip((name for name, _ in OUTPUTS), maps, strict=True))

        return infer

    batcher = config.dynamic_batching
    triton_config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
                                 grpc_address="127.0.0.1", http_address="127.0.0.1", metrics_address="127.0.0.1",
                                 allow_metrics=True, exit_timeout_secs=5,
                                 **({} if args.tls_cert is None else {
                                     "grpc_use_ssl": True, "grpc_server_cert": args.tls_cert,
                                     "grpc_server_key": args.tls_key,
                                     "grpc_use_ssl_mutual": args.tls_client_ca is not None,
                                     "grpc_root_cert": args.tls_client_ca}))
    with Triton(config=triton_config, workspace=args.workspace) as triton:
        triton.bind(
            model_name=config.name or args.name,
            infer_func=[make_instance() for _ in range(instances)],
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))],
            outputs=[Tensor(name=name, dtype=np.float32, shape=(channels, -1, -1)) for name, channels in OUTPUTS],
            config=ModelConfig(
                max_batch_size=config.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=batcher.max_queue_delay_microseconds,
                                       preferred_batch_size=list(batcher.preferred_batch_size) or None)),
            strict=True,
        )

        def stop(signum: int, frame: Any) -> None:
            triton.stop()

        signal.signal(signal.SIGTERM, stop)
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
