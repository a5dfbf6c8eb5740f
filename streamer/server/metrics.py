"""Prometheus metrics of one app (its own registry, so several apps in one process never share counters)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..scheduler import StreamHooks

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("streamer_frames_in", "Frames received from live streams (webcams and cameras)",
                                 registry=r)
        self.frames_out = Counter("streamer_frames_out", "Hidden frames handed to the live streams' sinks",
                                  registry=r)
        self.frames_dropped = Counter("streamer_frames_dropped",
                                      "Stale frames dropped, never sent (latest frame wins)", registry=r)
        self.frames_hidden_whole = Counter("streamer_frames_hidden_whole",
                                           "Live frames hidden whole: their detection failed or was late", registry=r)
        self.detector_errors = Counter("streamer_detector_errors", "Detector failures", registry=r)
        self.inference = Histogram("streamer_inference_seconds", "Time spent in the face detector",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.processing = Histogram("streamer_processing_seconds",
                                    "From a frame's arrival to its anonymized copy", buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.batch_size = Histogram("streamer_inference_batch_frames", "Frames per inference (batched across streams)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.detector_fallbacks = Counter("streamer_detector_fallbacks",
                                          "The GPU failed at run time: moved to the CPU, or refused (--require-gpu)",
                                          ["to"], registry=r)
        self.active_sessions = Gauge("streamer_active_sessions", "Open live sessions", registry=r)
        self.active_viewers = Gauge("streamer_active_viewers", "Open camera viewers (WHEP)", registry=r)
        self.provider = Gauge("streamer_provider_info", "The ONNX Runtime execution provider in use (always 1)",
                              ["provider"], registry=r)

    def stream_hooks(self) -> StreamHooks:
        """What every live stream (webcam session or camera) adds to the process-wide counters."""
        def sent(processing_s: float, hidden_whole: bool) -> None:
            self.frames_out.inc()
            self.processing.observe(processing_s)
            if hidden_whole:
                self.frames_hidden_whole.inc()

        return StreamHooks(arrived=self.frames_in.inc, dropped=self.frames_dropped.inc, sent=sent)

    def watch_cameras(self, cameras: Iterable[Any]) -> None:
        self.registry.register(_CameraCollector(cameras))

    def watch_runtime(self, load: Any) -> None:
        """Threads, asyncio tasks and the detector's recent busy share, read at scrape time (``load``: a
        capacity.DetectorLoad)."""
        self.registry.register(_RuntimeCollector(load))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _RuntimeCollector(Collector):
    """Gauges that return to their idle values when sessions end (what a leak shows up in), and the detector's
    busy share that admission by capacity reads."""

    def __init__(self, load: Any) -> None:
        self._load = load

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("streamer_threads", "Python threads alive", value=threading.active_count())
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped off the event loop (a test's own registry read): no loop to count
            tasks = 0
        yield GaugeMetricFamily("streamer_asyncio_tasks", "asyncio tasks pending on the event loop", value=tasks)
        yield GaugeMetricFamily("streamer_detector_busy_ratio",
                                "Share of the last few seconds the detector spent in inference",
                                value=self._load.busy_fraction())
        mean = self._load.mean_inference_s()
        if mean is not None:
            yield GaugeMetricFamily("streamer_detector_recent_inference_seconds",
                                    "Mean inference run time over the last few seconds", value=mean)


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
        whole = CounterMetricFamily("streamer_camera_frames_hidden_whole",
                                    "Frames hidden whole: their detection failed or was late", labels=["camera"])
        for camera in self._cameras:
            s = camera.status()
            up.add_metric([s["name"]], 1.0 if s["state"] == "live" else 0.0)
            fps.add_metric([s["name"]], s["fps"])
            if s["last_frame_age_s"] is not None:
                age.add_metric([s["name"]], s["last_frame_age_s"])
            viewers.add_metric([s["name"]], s["viewers"])
            decoded.add_metric([s["name"]], s["frames_decoded"])
            detected.add_metric([s["name"]], s["detections"])
            whole.add_metric([s["name"]], s["frames_hidden_whole"])
        yield from (up, fps, age, viewers, decoded, detected, whole)
