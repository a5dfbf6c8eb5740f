"""CenterFace on NVIDIA Triton Inference Server: the network runs there, planning and decoding stay here.

``--detector triton://HOST:PORT/MODEL`` (KServe v2 over gRPC). The server holds the model that
``python -m models.triton_repo`` writes (models.serving_graph): each network input goes out as the uint8 NHWC BGR
bytes the frame already is, a quarter of the float tensor, and Triton's dynamic batcher merges the requests of every
replica into shared inferences.

Failing closed is the callers' part (a frame whose detection raised leaves hidden whole); this module makes sure a
detection raises whenever the server did not answer in time (a deadline on every request), says why
(``unavailable``, shown by /healthz), and recovers by itself: gRPC reconnects the channel (backoff capped at 1 s),
the model's configuration is read again after the server was lost, and the first answer clears the failure.
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
from .runtime import ProviderError
from .serving_graph import INPUT, OUTPUT_CHANNELS, OUTPUTS
from .weights import ModelError

logger = logging.getLogger(__name__)

SCHEME = "triton"
PROBE_EVERY_S = 2.0  # how often ``unavailable`` asks an idle server whether the model is still ready
PROBE_TIMEOUT_S = 1.0
PROBE_SIDE = 32  # the probe's inference: the smallest input the graph takes
CONNECT_TIMEOUT_S = 120.0  # the configuration and first inference: a cold GPU, a TensorRT engine being built


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
                 timeout_s: float = 5.0, tls: TritonTLS | None = None, require_gpu: bool = False,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.target = TritonTarget.parse(target) if isinstance(target, str) else target
        self.config = config or DetectorConfig()
        if not 0 < timeout_s <= 600 or not 0 < connect_timeout_s <= 600:
            raise ValueError(f"Triton timeouts must be within (0, 600] s, not {timeout_s}, {connect_timeout_s}")
        self.timeout_s = timeout_s
        self.connect_timeout_s = max(connect_timeout_s, timeout_s)
        self.require_gpu = require_gpu
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
        self._connecting = False  # a connect() of connect_in_background is running
        self._closed = False
        self.provider = SCHEME  # until the server's model configuration says where its instances run
        self.on_connected: Callable[[str], None] | None = None  # told the provider each time it is read

    def connect(self, timeout_s: float | None = None) -> None:
        """Read the model's configuration from the server and warm the model up, once, and again after the server
        was lost (a restarted Triton may serve another configuration). TritonUnavailable if the server does not
        answer within ``timeout_s`` (default: ``connect_timeout_s``, for a first inference on a cold GPU),
        ModelError if the model is not the serving graph, ProviderError if ``require_gpu`` and its instances are
        not on a GPU; each is also what ``unavailable`` then says."""
        if self._connected:
            return
        timeout = self.connect_timeout_s if timeout_s is None else timeout_s
        with self._connect_lock:
            if self._connected:
                return
            try:
                model_config = self._client.get_model_config(self.target.model, client_timeout=timeout).config
            except Exception as exc:
                reason = f"Triton at {self.target.address} has no ready model {self.target.model!r}: {_reason(exc)}"
                self._failed(reason)
                raise TritonUnavailable(reason) from None
            kinds = sorted({self._grpc.model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)
                            for group in model_config.instance_group})
            provider = f"{SCHEME}:{'+'.join(kinds) or 'KIND_AUTO'}"
            try:
                self._check_signature(model_config)
                if self.require_gpu and kinds != ["KIND_GPU"]:
                    raise ProviderError(f"--require-gpu: Triton's model at {self.target} runs on {provider}, not "
                                        "on a GPU (its config.pbtxt instance_group kind)")
            except (ModelError, ProviderError) as exc:
                self._failed(str(exc))
                raise
            self.provider = provider
            self.max_rows = max(1, model_config.max_batch_size)
            started = time.perf_counter()
            self._request(np.zeros((1, 480, 640, 3), np.uint8), timeout)  # the input shape of a webcam frame
            self.warmup_ms = (time.perf_counter() - started) * 1000
            self._connected = True
        if self.on_connected is not None:
            self.on_connected(self.provider)
        logger.info("[triton %s] model ready on %s, max batch %d, warm-up %.0f ms", self.target, self.provider,
                    self.max_rows, self.warmup_ms)

    def connect_in_background(self) -> None:
        """``connect`` on a thread of its own, unless one is running: a service starts before its Triton server,
        and a detection never waits out a connection attempt (its frame fails closed meanwhile)."""
        with self._lock:
            if self._connecting or self._closed or self._connected:
                return
            self._connecting = True

        def attempt() -> None:
            try:
                self.connect()
            except Exception:
                pass  # recorded for unavailable(); the next detection or probe tries again
            finally:
                with self._lock:
                    self._connecting = False

        threading.Thread(target=attempt, name=f"triton-connect-{self.target.address}", daemon=True).start()

    def detect_many(self, requests: Sequence[DetectRequest]) -> list[FaceDetections]:
        if not self._connected:
            self.connect_in_background()
            with self._lock:
                reason = self._failure
            raise TritonUnavailable(reason or f"connecting to Triton at {self.target.address}")
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
        return self._request(batch, self.timeout_s)

    def _request(self, batch: npt.NDArray[np.uint8], timeout_s: float) -> list[npt.NDArray[np.float32]]:
        grpc = self._grpc
        image = grpc.InferInput(INPUT, list(batch.shape), "UINT8")
        image.set_data_from_numpy(batch)
        try:
            result = self._client.infer(self.target.model, [image],
                                        outputs=[grpc.InferRequestedOutput(name) for name in OUTPUTS],
                                        client_timeout=timeout_s)
            maps = [np.asarray(result.as_numpy(name), np.float32) for name in OUTPUTS]
        except Exception as exc:
            status = getattr(exc, "status", None)
            if not (callable(status) and "DEADLINE_EXCEEDED" in str(status())):
                self._connected = False  # lost, or refused: the configuration is read again before the next one
            reason = f"Triton at {self.target.address} did not detect: {_reason(exc)}"
            self._failed(reason)
            raise TritonUnavailable(reason) from None
        expected = [(batch.shape[0], channels, batch.shape[1] // 4, batch.shape[2] // 4)
                    for channels in OUTPUT_CHANNELS]
        problem = None
        if [m.shape for m in maps] != expected:
            problem = f"maps of shapes {[m.shape for m in maps]}"
        elif not all(np.isfinite(m).all() for m in maps):  # NaN scores no face: it would read as "nobody here"
            problem = "maps that are not finite numbers"
        if problem is not None:
            self._connected = False
            reason = f"Triton model {self.target.model!r} answered {problem}"
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
        while, runs a small inference (blocking up to PROBE_TIMEOUT_S, so callers on an event loop use a
        thread)."""
        with self._lock:
            if time.monotonic() - self._probed < PROBE_EVERY_S:
                return self._failure
            self._probed = time.monotonic()
        if not self._connected:
            self.connect_in_background()
            with self._lock:
                return self._failure or f"connecting to Triton at {self.target.address}"
        try:  # a real inference: a server can say "ready" and still not answer one
            self._request(np.zeros((1, PROBE_SIDE, PROBE_SIDE, 3), np.uint8), PROBE_TIMEOUT_S)
        except (TritonUnavailable, ModelError, ProviderError):
            pass  # recorded
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
