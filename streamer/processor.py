"""One frame in, one hidden frame out: detect -> track -> anonymize, failing closed.

The rule of which detection may hide a frame lives here, for files, webcams and cameras alike: only detections
made on that very frame (same size), plus the held masks of faces it missed in it. No path through here returns a
frame that was not either anonymized that way, covered by held masks widened for the uncertainty (files with
``--fail-policy widen-held``), or hidden whole. Privacy zones are burned in last, on every one of those paths, and
the audit line of the frame (``audit.py``) is made here too, so it says what was really done.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models import Detector, FaceDetections
from models.centerface import DetectRequest
from models.coverage import DetectSize

from .anonymize import anonymize, hide_frame
from .audit import AuditSink, frame_line
from .identity.policy import IdentityPolicy
from .settings import SOLID_BGR, AnonymizeSettings, FailPolicy, HoldSettings
from .tracking import FaceTracker
from .zones import Zones, hide_zones

logger = logging.getLogger(__name__)

WIDEN_ON_FAILURE = 1.5
# A detector that keeps failing (a Triton server that is down) fails every frame of every stream: one log line per
# stream per this many seconds says so, with the count, instead of one traceback per frame.
FAILURE_LOG_EVERY_S = 10.0
_NO_BOXES = np.zeros((0, 4), np.float32)
_NO_SCORES = np.zeros((0,), np.float32)


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
    detections_mismatched: int = 0  # a result for a frame of another size: never used, the frame failed closed
    detect_ms_total: float = 0.0
    faces_kept_visible: int = 0  # faces left visible on purpose by the identity rule (keep / hide only)
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
                 stream_id: str = "-", stats: ProcessorStats | None = None) -> None:
        self.detector = detector
        self.settings = settings or AnonymizeSettings()
        self.tracker = FaceTracker(hold or HoldSettings(), stream_id)
        self.fail_policy: FailPolicy = fail_policy
        self.stream_id = stream_id
        self.threshold: float | None = None  # None: the detector's configured threshold
        self.detect_size: DetectSize | None = None  # None: the detector's configured coverage
        # Live streams never enlarge a frame for an explicit size (a 512 px frame is not worth 1.6x the
        # inference); files may, since there recall is worth the time.
        self.upscale = True
        self.last_boxes: npt.NDArray[np.float32] = np.zeros((0, 4), np.float32)  # hidden in the last frame
        # Replaced whole (never mutated) when a viewer redraws them, so the frame thread reads one consistent set.
        self.zones: Zones = ()
        self._zones_now: Zones = ()  # the zones of the frame being hidden: drawn and counted in its line alike
        self.audit: AuditSink | None = None  # receives each frame's audit line
        self.identity: IdentityPolicy | None = None  # which faces may stay visible; None: every face is hidden
        self._frame_index = 0
        # A camera keeps one across restarts, each of which gets a new processor (and so new tracks).
        self.stats = stats if stats is not None else ProcessorStats()
        self._failure_logged_at = -FAILURE_LOG_EVERY_S
        self._failures_unlogged = 0

    def process(self, frame: npt.NDArray[np.uint8], t: float) -> FrameOutcome:
        """Detect and hide faces in ``frame`` (in place) at media time ``t`` seconds."""
        detections, detect_ms = self.detect(frame, t)
        return self.apply(frame, t, detections, detect_ms)

    def detect_request(self, frame: npt.NDArray[np.uint8]) -> DetectRequest:
        """What to ask the detector for this stream's ``frame``: its threshold and network size."""
        size = self.detector.config.detect_size if self.detect_size is None else self.detect_size
        if not self.upscale and isinstance(size, int):
            size = min(size, max(frame.shape[:2]))
        return DetectRequest(frame, self.threshold, size)

    def detect_failed(self, t: float, exc: BaseException) -> None:
        """Count (and log) a detector failure on the frame at ``t``; the caller fails that frame closed."""
        now = time.monotonic()
        with self.stats._lock:
            self.stats.detector_errors += 1
            if now - self._failure_logged_at < FAILURE_LOG_EVERY_S:
                self._failures_unlogged += 1
                return
            missed, self._failures_unlogged = self._failures_unlogged, 0
            self._failure_logged_at = now
        more = f" ({missed} more failure(s) since the last line)" if missed else ""
        logger.error("[%s] detector failed at t=%.3f; failing closed%s", self.stream_id, t, more, exc_info=exc)

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
        (the detector failed or was too late) and the frame is hidden by the fail-closed policy. Detections made
        on a frame of another size are no result for this one: never used, counted, and the frame fails closed."""
        self._zones_now = self.zones
        try:
            size = (frame.shape[1], frame.shape[0])
            if detections is not None and detections.frame_size != size:
                logger.error("[%s] detections for a %dx%d frame offered for a %dx%d frame at t=%.3f; failing closed",
                             self.stream_id, *detections.frame_size, *size, t)
                with self.stats._lock:
                    self.stats.detections_mismatched += 1
                detections = None
            if detections is None:
                return self._fail_closed(frame, t, detect_ms)
            boxes = self.tracker.update(detections.boxes, t, size)
            shown: npt.NDArray[np.bool_] = np.zeros(len(boxes), bool)
            identity = self.identity
            if identity is not None:  # also when "off": it serves "enrol the face in view"
                shown = identity.visible(frame, t, boxes, len(detections), self.tracker.last_ids,
                                         self.tracker.last_uncertain)
            self.last_boxes = boxes[~shown]
            hidden = anonymize(frame, boxes[~shown], self.settings)
            hide_zones(frame, self._zones_now, SOLID_BGR)
            held = max(0, len(boxes) - len(detections))
            self._audit(t, size, detections.boxes, detections.scores, boxes[len(detections):], _NO_BOXES, False,
                        shown[:len(detections)])
            with self.stats._lock:
                self.stats.frames += 1
                self.stats.faces_detected += len(detections)
                self.stats.regions_hidden += hidden
                self.stats.frames_with_held_masks += held > 0
                self.stats.detect_ms_total += detect_ms
                self.stats.faces_kept_visible += int(shown.sum())
            return FrameOutcome(len(detections), hidden, held, False, detect_ms)
        except Exception:
            logger.exception("[%s] anonymizing failed at t=%.3f; hiding the whole frame", self.stream_id, t)
            self._hide_whole(frame, t)
            return FrameOutcome(0, 0, 0, True, detect_ms)

    def _fail_closed(self, frame: npt.NDArray[np.uint8], t: float, detect_ms: float) -> FrameOutcome:
        if self.fail_policy == "widen-held":
            boxes = self.tracker.predict(t, (frame.shape[1], frame.shape[0]), widen=WIDEN_ON_FAILURE)
            self.last_boxes = boxes
            if len(boxes):
                hidden = anonymize(frame, boxes, self.settings)
                hide_zones(frame, self._zones_now, SOLID_BGR)
                size = (frame.shape[1], frame.shape[0])
                self._audit(t, size, _NO_BOXES, _NO_SCORES, _NO_BOXES, boxes, False)
                with self.stats._lock:
                    self.stats.frames += 1
                    self.stats.frames_widened += 1
                    self.stats.regions_hidden += hidden
                return FrameOutcome(0, hidden, len(boxes), True, detect_ms)
        self._hide_whole(frame, t)
        return FrameOutcome(0, 0, 0, True, detect_ms)

    def _hide_whole(self, frame: npt.NDArray[np.uint8], t: float) -> None:
        self.last_boxes = np.zeros((0, 4), np.float32)
        try:
            hide_frame(frame)
            hide_zones(frame, self._zones_now, SOLID_BGR)
        except Exception:
            logger.exception("[%s] whole-frame hiding failed; blanking the frame", self.stream_id)
            frame[...] = 0
        with self.stats._lock:
            self.stats.frames += 1
            self.stats.frames_hidden_whole += 1
        size = (frame.shape[1], frame.shape[0]) if frame.ndim >= 2 else (0, 0)
        self._audit(t, size, _NO_BOXES, _NO_SCORES, _NO_BOXES, _NO_BOXES, True)

    def _audit(self, t: float, size: tuple[int, int], faces: npt.NDArray[np.float32],
               scores: npt.NDArray[np.float32], held: npt.NDArray[np.float32], predicted: npt.NDArray[np.float32],
               hidden_whole: bool, kept: npt.NDArray[np.bool_] | None = None) -> None:
        index = self._frame_index
        self._frame_index += 1
        sink = self.audit
        if sink is None:
            return
        try:
            sink(frame_line(index, t, size, faces, scores, held, predicted, hidden_whole, len(self._zones_now), kept))
        except Exception:
            # The frame is already hidden; a trail that cannot be written must not hold it back or show it.
            logger.exception("[%s] could not record frame %d in the audit trail", self.stream_id, index)
