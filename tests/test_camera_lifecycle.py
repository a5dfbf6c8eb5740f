"""A camera's life without an RTSP server: it stops for good (threads included) when asked, a restart gets face
tracks of its own, and cameras detect at the live threshold unless their entry says otherwise."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.camera_config import CameraSettings, load_cameras_file
from streamer.cameras import Camera, CameraManager
from streamer.detection_service import DetectionService
from streamer.settings import LiveSettings
from streamer.sources.rtsp import RtspOptions


@pytest.fixture
def hung_url() -> Iterator[str]:
    """An RTSP URL whose server accepts the TCP connection and then never says a word: a pull stays stuck in
    opening until its timeout."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        yield f"rtsp://127.0.0.1:{hung.getsockname()[1]}/stream"


@pytest.fixture
def service(detector: Any) -> Iterator[DetectionService]:
    service = DetectionService(detector)
    yield service
    service.close()


def camera_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in (f"rtsp-{name}", f"live-camera {name}") and t.is_alive()]


def test_stop_all_returns_only_when_every_camera_thread_has_ended(hung_url: str, service: DetectionService) -> None:
    """Shutdown stops each camera and then waits for its threads, also those of a camera already stopped a moment
    earlier (a linger stop, which never waits), rather than returning while they still run."""
    manager = CameraManager([CameraSettings("a", hung_url), CameraSettings("b", hung_url)],
                            RtspOptions(open_timeout_s=2.0, read_timeout_s=2.0))
    loop = _Loop()
    try:
        manager.bind(loop.loop, service)
        for camera in manager:
            camera.start()
        time.sleep(0.3)  # both readers are inside av.open now, waiting for an answer
        manager.get("a").stop()  # type: ignore[union-attr]  # a linger stop: no join
        assert camera_threads("a") and camera_threads("b")
        assert manager.stop_all(join_s=30)
        assert not camera_threads("a") and not camera_threads("b")
        manager.stop_all(join_s=1)  # twice is fine
    finally:
        loop.close()


def test_a_restarted_camera_never_shares_face_tracks_with_the_run_before(hung_url: str,
                                                                          service: DetectionService) -> None:
    """A viewer that comes back during a linger stop starts a new run while the old worker may still be finishing
    a frame: each run has its own scheduler and processor, so no tracker is ever used by two threads."""
    camera = Camera(CameraSettings("c", hung_url), RtspOptions(open_timeout_s=2.0))
    loop = _Loop()
    try:
        camera.bind(loop.loop, service)
        camera.start()
        first = camera.scheduler
        camera.stop()
        camera.start()
        second = camera.scheduler
        assert first is not None and second is not None and first is not second
        assert first.processor is not second.processor
        assert first.processor.tracker is not second.processor.tracker
        assert first.processor.stats is second.processor.stats  # the camera's counts carry on
        camera.stop(join_s=30)
        assert not camera_threads("c")
    finally:
        loop.close()


def test_cameras_detect_at_the_live_threshold_unless_their_entry_sets_one(tmp_path: Path, hung_url: str,
                                                                          service: DetectionService) -> None:
    config = tmp_path / "cameras.toml"
    config.write_text(f"""
[[camera]]
name = "lobby"
url = "{hung_url}"

[[camera]]
name = "yard"
url = "{hung_url}"
threshold = 0.35
detect_size = "fast"
""")
    lobby, yard = load_cameras_file(config)
    assert lobby.threshold == LiveSettings().threshold == 0.2
    assert yard.threshold == 0.35
    assert (lobby.detect_size, yard.detect_size) == (None, "fast")
    camera = Camera(lobby, RtspOptions(open_timeout_s=1.0))
    loop = _Loop()
    try:
        camera.bind(loop.loop, service)
        camera.start()
        assert camera.scheduler is not None and camera.scheduler.processor.threshold == 0.2
        assert camera.status()["threshold"] == 0.2
        # no detect_size of its own: the service's, full coverage unless serve --detect-size says otherwise
        assert camera.status()["detect_size"] == service.detector.config.detect_size == "full"
        assert camera.scheduler.processor.detect_request(np.zeros((1080, 1920, 3), np.uint8)).detect_size == "full"
        camera.stop(join_s=30)
    finally:
        loop.close()
    config.write_text(f'[[camera]]\nname = "x"\nurl = "{hung_url}"\nthreshold = 2\n')
    with pytest.raises(ValueError, match="threshold"):
        load_cameras_file(config)
    config.write_text(f'[[camera]]\nname = "x"\nurl = "{hung_url}"\ndetect_size = "huge"\n')
    with pytest.raises(ValueError, match="detect_size"):
        load_cameras_file(config)


class _Loop:
    """An event loop on its own thread, as the server's: cameras wake their viewers there."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class _BrokenSession:
    """A real ONNX session whose runs fail, as a lost device's do."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("inference failed (injected)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_camera_counts_the_frames_it_hid_whole_and_why(hung_url: str, astronaut_bgr: Any) -> None:
    """Frames of a camera whose detections fail leave hidden whole, never published otherwise, and the camera's
    status and /metrics say how many and why."""
    import av
    import numpy as np

    from models import load_detector
    from streamer.server.metrics import ServerMetrics

    detector = load_detector("cpu")
    detector.sessions.wrap(_BrokenSession)
    service = DetectionService(detector)
    camera = Camera(CameraSettings("yard", hung_url), RtspOptions(open_timeout_s=1.0))
    metrics = ServerMetrics()
    metrics.watch_cameras([camera])
    loop = _Loop()
    try:
        camera.bind(loop.loop, service, metrics.stream_hooks())
        camera.start()
        assert camera.scheduler is not None
        picture = np.ascontiguousarray(astronaut_bgr[:510, :510])
        for n in range(3):
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            frame.pts, frame.time_base = n * 3000, Fraction(1, 90000)
            camera.scheduler.push(frame)
            deadline = time.monotonic() + 30
            while camera.counters.frames_out + camera.counters.frames_dropped <= n and time.monotonic() < deadline:
                time.sleep(0.01)
        status = camera.status()
        latest = camera.frames.latest
    finally:
        camera.stop(join_s=30)
        service.close()
        loop.close()
    assert status["frames_hidden_whole"] == status["frames_processed"] >= 1, status
    assert status["detector_errors"] == status["frames_processed"], status
    assert latest is not None and latest.hidden_whole
    text = metrics.render().decode()
    assert f'streamer_camera_frames_hidden_whole_total{{camera="yard"}} {status["frames_hidden_whole"]:.1f}' in text
    assert f'streamer_frames_hidden_whole_total {status["frames_hidden_whole"]:.1f}' in text
