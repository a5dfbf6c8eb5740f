"""Prometheus metrics of one app (its own registry, so several apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("streamer_frames_in", "Frames received from live streams", registry=r)
        self.frames_out = Counter("streamer_frames_out", "Anonymized frames sent to live streams", registry=r)
        self.frames_dropped = Counter("streamer_frames_dropped",
                                      "Stale frames dropped before processing (latest frame wins)", registry=r)
        self.frames_hidden_whole = Counter("streamer_frames_hidden_whole",
                                           "Frames hidden whole by the fail-closed path", registry=r)
        self.detector_errors = Counter("streamer_detector_errors", "Detector failures", registry=r)
        self.inference = Histogram("streamer_inference_seconds", "Time spent in the face detector",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.processing = Histogram("streamer_processing_seconds",
                                    "From a frame's arrival to its anonymized copy", buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.active_sessions = Gauge("streamer_active_sessions", "Open live sessions", registry=r)
        self.provider = Gauge("streamer_provider_info", "The ONNX Runtime execution provider in use (always 1)",
                              ["provider"], registry=r)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
