"""CenterFace on NVIDIA Triton Inference Server: the network runs there, planning and decoding stay here.

``--detector triton://HOST:PORT/MODEL`` (KServe v2 over gRPC). The server holds the model that
``python -m models.triton_repo`` writes (models.serving_graph): each network input goes out as the uint8 NHWC BGR
bytes the frame already is, a quarter of the float tensor, and Triton's dynamic batcher merges the requests of every
replica into shared inferences.

Failing closed is the callers' part (a frame whose detection raised leaves hidden whole); this module makes sure a
detection raises whenever the server did not answer in time (a deadline on every request), says why
(``unavailable``, shown by /healthz), and recovers by itself: gRPC reconnects the channel (backoff capped at 1 s),
so the first answer after Triton returns clears the failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from .centerface import CenterFace, DetectorConfig, DetectRequest
from .detections import FaceDetections
from .serving_graph import INPUT, OUTPUT_CHANNELS, OUTPUTS
from .weights import ModelError

logger = logging.getLogger(__name__)

SCHEME = "triton"
PROBE_EVERY_S = 2.0  # how often ``unavailable`` asks an idle server whether the model is still ready
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class TritonTLS:
    """gRPC over TLS: Triton's certificate checked against ``ca``; ``cert`` and ``key`` a client certificate, for a
    server that asks for one (mutual TLS). The frames are raw pictures, faces and all: on any network but the
    host's own, they should not cross it in clear."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def from_paths(cls, ca: Path | None, cert: Path | None, key: Path | None) -> TritonTLS | None:
        """The CLI's --detector-ca/--detector-cert/--detector-key: None (plain gRPC) when none is given."""
        if ca is None:
            if cert is not None or key is not None:
                raise ValueError("--detector-cert/--detector-key need --detector-ca (the CA that signed Triton's "
                                 "certificate)")
            return None
        return cls(ca, cert, key)

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate for Triton needs both --detector-cert and --detector-key")
        for path in (self.ca, self.cert, self.key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file (TLS for --detector)")


class TritonUnavailable(RuntimeError):
    """The server did not answer a detection (down, unreachable, too slow, or refused it)."""


@dataclass(frozen=True)
class TritonTarget:
    host: str
    port: int
    model: str

    @classmethod
    def parse(cls, url: str) -> TritonTarget:
        """``triton://HOST:PORT/MODEL``; the port defaults to Triton's gRPC port 8001."""
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            raise ValueError(f"a detector URL is triton://HOST:PORT/MODEL, not {url!r}")
        try:
            port = parts.port or 8001
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}: {exc}") from None
        model = parts.path.strip("/")
        if not parts.hostname or not model or "/" in model or parts.query or parts.fragment or parts.username:
            raise ValueError(f"a detector URL is triton://HOST:PORT/MODEL (one model name, no credentials or "
                             f"query), not {url!r}")
        return cls(parts.hostname, port, model)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{SCHEME}://{self.address}/{self.model}"


def _grpc() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise ModelError("--detector triton://... needs the Triton client: pip install -e .[triton]") from exc
    return grpcclient


class TritonDetector(CenterFace):
    """CenterFace whose network runs on a Triton server. ``timeout_s`` bounds every request (a live stream's
    detection deadline); the model's configuration on the server gives the batch limit and where its instances
    run, which is what ``provider`` reports (``triton:KIND_GPU``, ``triton:KIND_CPU``)."""

    def __init__(self, target: TritonTarget | str, config: DetectorConfig | None = None, *,
                 timeout_s: float = 5.0, tls: TritonTLS | None = None) -> None:
        self.target = TritonTarget.parse(target) if isinstance(target, str) else target
        self.config = config or DetectorConfig()
        if not 0 < timeout_s <= 600:
            raise ValueError(f"the Triton request timeout must be within (0, 600] s, not {timeout_s}")
        self.timeout_s = timeout_s
        grpc = self._grpc = _grpc()
        # The client's defaults (unbounded message sizes, keep-alive) plus a reconnect backoff capped at 1 s, so
        # frames are detected again within a second of the server's return instead of gRPC's default 2 minutes.
        self._client = grpc.InferenceServerClient(self.target.address, channel_args=[
            ("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000)],
            **({} if tls is None else {
                "ssl": True, "root_certificates": str(tls.ca),
                "private_key": None if tls.key is None else str(tls.key),
                "certificate_chain": None if tls.cert is None else str(tls.cert)}))
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._failure: str | None = None  # why the last request failed; cleared by the next answer
        self._probed = 0.0
        self._connected = False
        self._closed = False
        self.provider = SCHEME  # until the server's model configuration says where its instances run
        self.on_connected: Callable[[str], None] | None = None  # told the provider once it is known

    def connect(self) -> None:
        """Read the model's configuration from the server (once) and warm it up; TritonUnavailable if the server
        does not answer, ModelError if the model is not the serving graph. Detections call it first, so a service
        started before its Triton server detects as soon as the server is up."""
        if self._connected:
            return
        with self._connect_lock:
            if self._connected:
                return
            try:
                model_config = self._client.get_model_config(self.target.model, client_timeout=self.timeout_s).config
            except Exception as exc:
                reason = f"Triton at {self.target.address} has no ready model {self.target.model!r}: {_reason(exc)}"
                self._failed(reason)
                raise TritonUnavailable(reason) from None
            try:
                self._check_signature(model_config)
            except ModelError as exc:
                self._failed(str(exc))
                raise
            kinds = sorted({self._grpc.model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)
                            for group in model_config.instance_group})
            self.provider = f"{SCHEME}:{'+'.join(kinds) or 'KIND_AUTO'}"
            self.max_rows = max(1, model_config.max_batch_size)
            self._connected = True
        if self.on_connected is not None:
            self.on_connected(self.provider)
        self._warm_up()
        logger.info("[triton %s] model ready on %s, max batch %d, warm-up %.0f ms", self.target, self.provider,
                    self.max_rows, self.warmup_ms)

    def detect_many(self, requests: Sequence[DetectRequest]) -> list[FaceDetections]:
        self.connect()
        return super().detect_many(requests)

    def _check_signature(self, model_config: Any) -> None:
        """Refuse a model that is not the serving graph: a wrong one would answer with maps that mean nothing."""
        inputs = {i.name: (self._grpc.model_config_pb2.DataType.Name(i.data_type), list(i.dims))
                  for i in model_config.input}
        outputs = {o.name: (self._grpc.model_config_pb2.DataType.Name(o.data_type), list(o.dims))
                   for o in model_config.output}
        want_in = {INPUT: ("TYPE_UINT8", [-1, -1, 3])}
        want_out = {name: ("TYPE_FP32", [channels, -1, -1]) for name, channels in zip(OUTPUTS, OUTPUT_CHANNELS,
                                                                                      strict=True)}
        if inputs != want_in or outputs != want_out or model_config.max_batch_size < 1:
            raise ModelError(f"Triton model {self.target.model!r} at {self.target.address} is not the CenterFace "
                             f"serving model (python -m models.triton_repo writes it): inputs {inputs}, outputs "
                             f"{outputs}, max_batch_size {model_config.max_batch_size}")

    def _infer(self, batch: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.float32]]:
        grpc = self._grpc
        image = grpc.InferInput(INPUT, list(batch.shape), "UINT8")
        image.set_data_from_numpy(batch)
        try:
            result = self._client.infer(self.target.model, [image],
                                        outputs=[grpc.InferRequestedOutput(name) for name in OUTPUTS],
                                        client_timeout=self.timeout_s)
            maps = [np.asarray(result.as_numpy(name), np.float32) for name in OUTPUTS]
        except Exception as exc:
            reason = f"Triton at {self.target.address} did not detect: {_reason(exc)}"
            self._failed(reason)
            raise TritonUnavailable(reason) from None
        expected = [(batch.shape[0], channels, batch.shape[1] // 4, batch.shape[2] // 4)
                    for channels in OUTPUT_CHANNELS]
        if [m.shape for m in maps] != expected:
            reason = f"Triton model {self.target.model!r} answered maps of shapes {[m.shape for m in maps]}"
            self._failed(reason)
            raise TritonUnavailable(reason)
        if not all(np.isfinite(m).all() for m in maps):  # NaN scores no face: that would read as "nobody here"
            reason = f"Triton model {self.target.model!r} answered maps that are not finite numbers"
            self._failed(reason)
            raise TritonUnavailable(reason)
        self._recovered()
        return maps

    def _failed(self, reason: str) -> None:
        with self._lock:
            first = self._failure is None
            self._failure = reason
            self._probed = time.monotonic()
        if first:
            logger.error("[triton %s] %s; frames are hidden whole until it answers again", self.target, reason)

    def _recovered(self) -> None:
        with self._lock:
            was = self._failure
            self._failure = None
            self._probed = time.monotonic()
        if was is not None:
            logger.warning("[triton %s] answering again", self.target)

    def unavailable(self) -> str | None:
        """Why detection cannot run now, or None. Answers from the last request; when no request came for a
        while, asks the server (blocking up to PROBE_TIMEOUT_S, so callers on an event loop use a thread)."""
        with self._lock:
            if time.monotonic() - self._probed < PROBE_EVERY_S:
                return self._failure
            self._probed = time.monotonic()
        try:
            if not self._connected:
                self.connect()  # records why it failed
            elif self._client.is_model_ready(self.target.model, client_timeout=PROBE_TIMEOUT_S):
                self._recovered()
            else:
                self._failed(f"Triton at {self.target.address} says model {self.target.model!r} is not ready")
        except (TritonUnavailable, ModelError):
            pass
        except Exception as exc:
            self._failed(f"Triton at {self.target.address} is unreachable: {_reason(exc)}")
        with self._lock:
            return self._failure

    def close(self) -> None:
        with self._lock:
            closed, self._closed = self._closed, True
        if not closed:
            self._client.close()


def _reason(exc: BaseException) -> str:
    """One line for logs and /healthz: the gRPC status and message, without the client's stack of context."""
    status = getattr(exc, "status", None)
    message_of = getattr(exc, "message", None)
    message = message_of() if callable(message_of) else str(exc)
    text = f"{status() if callable(status) else status or type(exc).__name__}: {message}"
    return " ".join(text.split())[:300]
