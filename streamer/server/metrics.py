"""Prometheus metrics of one app (its own registry, so several apps in one process never share counters)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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
        self.active_viewers = Gauge("streamer_active_viewers", "Open camera viewers (WHEP)", registry=r)
        self.provider = Gauge("streamer_provider_info", "The ONNX Runtime execution provider in use (always 1)",
                              ["provider"], registry=r)

    def watch_cameras(self, cameras: Iterable[Any]) -> None:
        self.registry.register(_CameraCollector(cameras))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _CameraCollector(Collector):
    """Per-camera series, read from the cameras' own status at scrape time."""

    def __init__(self, cameras: Iterable[Any]) -> None:
        self._cameras = cameras

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("streamer_camera_up", "1 while the camera delivers frames", labels=["camera"])
        fps = GaugeMetricFamily("streamer_camera_fps", "Anonymized frames per second", labels=["camera"])
        age = GaugeMetricFamily("streamer_camera_last_frame_age_seconds", "Age of the newest frame",
                                labels=["camera"])
        viewers = GaugeMetricFamily("streamer_camera_viewers", "Viewers of the camera", labels=["camera"])
        decoded = CounterMetricFamily("streamer_camera_frames_decoded", "Frames decoded", labels=["camera"])
        detected = CounterMetricFamily("streamer_camera_detections", "Detections run", labels=["camera"])
        for camera in self._cameras:
            s = camera.status()
            up.add_metric([s["name"]], 1.0 if s["state"] == "live" else 0.0)
            fps.add_metric([s["name"]], s["fps"])
            if s["last_frame_age_s"] is not None:
                age.add_metric([s["name"]], s["last_frame_age_s"])
            viewers.add_metric([s["name"]], s["viewers"])
            decoded.add_metric([s["name"]], s["frames_decoded"])
            detected.add_metric([s["name"]], s["detections"])
        yield from (up, fps, age, viewers, decoded, detected)
