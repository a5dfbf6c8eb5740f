"""One frame in, one hidden frame out: detect -> track -> anonymize, failing closed.

No path through here returns a frame that was not either anonymized from a fresh detection, covered by held
masks widened for the uncertainty, or hidden whole.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from models import Detector, FaceDetections
from models.centerface import DetectRequest

from .anonymize import anonymize, hide_frame
from .settings import AnonymizeSettings, FailPolicy, HoldSettings
from .tracking import FaceTracker

logger = logging.getLogger(__name__)

WIDEN_ON_FAILURE = 1.5
# Mean absolute difference (grey levels, on a 32x24 thumbnail) between a frame and the frame the newest detection
# was made on, above which the picture is taken to have changed (a cut, a camera switch, lights): masks from
# before the change say nothing about the faces after it, so that frame waits for its own detection.
SCENE_CHANGE = 25.0


def thumbnail(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    small = cv2.resize(frame, (32, 24), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.int16)


@dataclass
class ProcessorStats:
    """Counters a stream reports (and, later, exports as metrics)."""

    frames: int = 0
    faces_detected: int = 0
    regions_hidden: int = 0
    frames_with_held_masks: int = 0  # a face was kept hidden although the detector missed it in this frame
    frames_hidden_whole: int = 0  # fail-closed: no trustworthy detection, the whole frame was hidden
    frames_widened: int = 0  # fail-closed: no detection, held masks were widened instead
    detector_errors: int = 0
    detections_late: int = 0  # live: no result within the deadline, so the frame failed closed
    frames_predicted: int = 0  # live: masked from the tracks of a detection made on an earlier frame
    detect_ms_total: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


@dataclass(frozen=True)
class FrameOutcome:
    faces: int  # fresh detections in this frame
    hidden: int  # regions hidden (detections + held)
    held: int  # masks kept from earlier frames
    failed_closed: bool
    detect_ms: float


class FrameProcessor:
    """Hides faces in a stream's frames, in order. One instance per stream (it holds that stream's tracks);
    the detector may be shared by many."""

    def __init__(self, detector: Detector, settings: AnonymizeSettings | None = None,
                 hold: HoldSettings | None = None, fail_policy: FailPolicy = "hide-frame",
                 stream_id: str = "-") -> None:
        self.detector = detector
        self.settings = settings or AnonymizeSettings()
        self.tracker = FaceTracker(hold or HoldSettings())
        self.fail_policy: FailPolicy = fail_policy
        self.stream_id = stream_id
        self.threshold: float | None = None  # None: the detector's configured threshold
        self.detect_size: int | None = None  # None: the detector's configured size
        # Live streams never enlarge a frame for detection (a 512 px frame is not worth 1.6x the inference);
        # files may, since there recall is worth the time.
        self.upscale = True
        self.last_boxes: npt.NDArray[np.float32] = np.zeros((0, 4), np.float32)  # hidden in the last frame
        self.last_detection_t: float | None = None
        self._thumbs: dict[float, npt.NDArray[np.int16]] = {}  # frames handed to the detector, by media time
        self._detected_thumb: npt.NDArray[np.int16] | None = None
        self._last_thumb: tuple[int, float, npt.NDArray[np.int16]] | None = None  # (id(frame), t, thumbnail)
        self.stats = ProcessorStats()

    def process(self, frame: npt.NDArray[np.uint8], t: float) -> FrameOutcome:
        """Detect and hide faces in ``frame`` (in place) at media time ``t`` seconds."""
        detections, detect_ms = self.detect(frame, t)
        return self.apply(frame, t, detections, detect_ms)

    def detect_request(self, frame: npt.NDArray[np.uint8]) -> DetectRequest:
        """What to ask the detector for this stream's ``frame``: its threshold and network size."""
        size = self.detect_size
        if not self.upscale:
            size = min(size or self.detector.config.detect_size, max(frame.shape[:2]))
        return DetectRequest(frame, self.threshold, size)

    def detect_failed(self, t: float, exc: BaseException) -> None:
        """Count (and log) a detector failure on the frame at ``t``; the caller fails that frame closed."""
        logger.error("[%s] detector failed at t=%.3f; failing closed", self.stream_id, t, exc_info=exc)
        with self.stats._lock:
            self.stats.detector_errors += 1

    def detect(self, frame: npt.NDArray[np.uint8], t: float) -> tuple[FaceDetections | None, float]:
        """Run the detector on ``frame``; ``None`` when it failed (counted). Safe to call from several threads
        for different frames, so detection can run ahead while ``apply`` keeps frame order."""
        started = time.perf_counter()
        request = self.detect_request(frame)
        try:
            detections: FaceDetections | None = self.detector.detect(frame, request.threshold, request.detect_size)
        except Exception as exc:
            self.detect_failed(t, exc)
            detections = None
        return detections, (time.perf_counter() - started) * 1000

    def apply(self, frame: npt.NDArray[np.uint8], t: float, detections: FaceDetections | None,
              detect_ms: float = 0.0) -> FrameOutcome:
        """Hide faces using ``detections`` made on this frame; ``None`` means there is no trustworthy result
        (the detector failed or was too late) and the frame is hidden by the fail-closed policy."""
        try:
            if detections is None:
                return self._fail_closed(frame, t, detect_ms)
            boxes = self.tracker.update(detections.boxes, t)
            self.last_boxes = boxes
            hidden = anonymize(frame, boxes, self.settings)
            held = max(0, len(boxes) - len(detections))
            with self.stats._lock:
                self.stats.frames += 1
                self.stats.faces_detected += len(detections)
                self.stats.regions_hidden += hidden
                self.stats.frames_with_held_masks += held > 0
                self.stats.detect_ms_total += detect_ms
            return FrameOutcome(len(detections), hidden, held, False, detect_ms)
        except Exception:
            logger.exception("[%s] anonymizing failed at t=%.3f; hiding the whole frame", self.stream_id, t)
            self._hide_whole(frame)
            return FrameOutcome(0, 0, 0, True, detect_ms)

    def observe(self, detections: FaceDetections, t: float, detect_ms: float = 0.0) -> None:
        """Take a detection result for the frame at media time ``t``, which may be older than the frame being
        hidden now (live streams hide each frame with the newest result instead of waiting for its own)."""
        self.tracker.update(detections.boxes, t)
        self.last_detection_t = t
        self._detected_thumb = self._thumbs.pop(t, None)
        for older in [k for k in self._thumbs if k <= t]:
            del self._thumbs[older]
        with self.stats._lock:
            self.stats.faces_detected += len(detections)
            self.stats.detect_ms_total += detect_ms

    def detecting(self, frame: npt.NDArray[np.uint8], t: float) -> None:
        """Note that ``frame`` (at ``t``) goes to the detector, so later frames can tell whether the picture
        changed since."""
        self._thumbs[t] = self._thumbnail(frame, t)
        while len(self._thumbs) > 8:
            del self._thumbs[min(self._thumbs)]

    def needs_fresh(self, t: float, max_age_s: float, frame: npt.NDArray[np.uint8] | None = None) -> bool:
        """Whether the newest detection is too old (or missing), or the picture changed too much since the frame
        it was made on, to hide the frame at ``t`` with its tracks."""
        last = self.last_detection_t
        if last is None or not 0.0 <= t - last <= max_age_s:
            return True
        if frame is not None and self._detected_thumb is not None:
            change = float(np.abs(self._thumbnail(frame, t) - self._detected_thumb).mean())
            return change > SCENE_CHANGE
        return False

    def _thumbnail(self, frame: npt.NDArray[np.uint8], t: float) -> npt.NDArray[np.int16]:
        # A live frame is both handed to the detector and checked for a scene change: one thumbnail serves both.
        cached = self._last_thumb
        if cached is not None and cached[0] == id(frame) and cached[1] == t:
            return cached[2]
        thumb = thumbnail(frame)
        self._last_thumb = (id(frame), t, thumb)
        return thumb

    def apply_tracked(self, frame: npt.NDArray[np.uint8], t: float) -> FrameOutcome:
        """Hide faces at ``t`` where the face tracks of the newest detection put them: predicted forward by their
        motion, swept back to the last sighting, grown with the age of that sighting. With no detection younger
        than the hold (the detector is failing or far behind), the frame is hidden whole."""
        try:
            age = t - self.last_detection_t if self.last_detection_t is not None else None
            if age is None or age > self.tracker.settings.hold_seconds or age < -1.0:
                return self._fail_closed(frame, t, 0.0)
            boxes = self.tracker.predict(t)
            self.last_boxes = boxes
            hidden = anonymize(frame, boxes, self.settings)
            with self.stats._lock:
                self.stats.frames += 1
                self.stats.regions_hidden += hidden
                self.stats.frames_predicted += age > 0
            return FrameOutcome(0, hidden, 0, False, 0.0)
        except Exception:
            logger.exception("[%s] anonymizing failed at t=%.3f; hiding the whole frame", self.stream_id, t)
            self._hide_whole(frame)
            return FrameOutcome(0, 0, 0, True, 0.0)

    def _fail_closed(self, frame: npt.NDArray[np.uint8], t: float, detect_ms: float) -> FrameOutcome:
        if self.fail_policy == "widen-held":
            boxes = self.tracker.predict(t, widen=WIDEN_ON_FAILURE)
            self.last_boxes = boxes
            if len(boxes):
                hidden = anonymize(frame, boxes, self.settings)
                with self.stats._lock:
                    self.stats.frames += 1
                    self.stats.frames_widened += 1
                    self.stats.regions_hidden += hidden
                return FrameOutcome(0, hidden, len(boxes), True, detect_ms)
        self._hide_whole(frame)
        return FrameOutcome(0, 0, 0, True, detect_ms)

    def _hide_whole(self, frame: npt.NDArray[np.uint8]) -> None:
        self.last_boxes = np.zeros((0, 4), np.float32)
        try:
            hide_frame(frame)
        except Exception:
            logger.exception("[%s] whole-frame hiding failed; blanking the frame", self.stream_id)
            frame[...] = 0
        with self.stats._lock:
            self.stats.frames += 1
            self.stats.frames_hidden_whole += 1
