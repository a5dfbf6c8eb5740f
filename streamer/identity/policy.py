"""Which faces of a frame may stay visible: the one rule for "keep these faces" (allow-list) and "hide only these
faces" (deny-list), for webcams, cameras and files alike. It fails closed:

- a face is left visible only by a decision about its own track, made from an embedding of that face;
- a face that has no such decision yet (a new track, a recognition still running) is hidden;
- a track whose face may have changed (a loose match, two faces overlapping) loses its decision and is hidden
  until it is recognised again; so is a face the detector missed in this frame (a held mask);
- decisions are checked again every ``recheck_s`` and expire after ``max_age_s`` without a fresh one;
- a recognition that fails leaves the face hidden.

Recognition runs in the embedder's process. Live streams never wait for it (``wait=False``): a face stays hidden
until its result arrives, a few frames later. Files wait (``wait=True``), so every frame gets its decision.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from models.boxes import iou_matrix

from .embedding import EMBED_TIMEOUT_S, Embedder, Embedding
from .enroll import MIN_FACE_PX
from .gallery import MATCH_DISTANCE, STRANGER_DISTANCE, Gallery, Match

logger = logging.getLogger(__name__)

IdentityMode = Literal["off", "keep", "hide-only"]
IDENTITY_MODES: tuple[str, ...] = get_args(IdentityMode)
RECHECK_S = 1.0
MAX_AGE_S = 3.0
MAX_PENDING = 2  # recognitions in flight per stream: more faces wait their turn (hidden meanwhile)
CROSSING_IOU = 0.05
FAILURE_LOG_S = 10.0  # two detected faces overlapping this much may swap tracks


@dataclass
class _Decision:
    visible: bool
    made_t: float
    version: int  # the gallery's version it was made against
    mode: str  # and the mode: a viewer who switches from "hide only" to "keep" must not inherit the other rule


class IdentityPolicy:
    """One stream's decisions, per face track. Not thread-safe: called from the stream's frame thread."""

    def __init__(self, gallery: Gallery, embedder: Embedder, mode: IdentityMode = "keep", stream_id: str = "-", *,
                 wait: bool = False, match_distance: float = MATCH_DISTANCE,
                 stranger_distance: float = STRANGER_DISTANCE, recheck_s: float = RECHECK_S,
                 max_age_s: float = MAX_AGE_S) -> None:
        if mode not in IDENTITY_MODES:
            raise ValueError(f"identity mode must be one of {', '.join(IDENTITY_MODES)}")
        self.gallery, self.embedder, self.mode, self.stream_id = gallery, embedder, mode, stream_id
        self.wait = wait
        self.match_distance, self.stranger_distance = match_distance, stranger_distance
        self.recheck_s, self.max_age_s = recheck_s, max_age_s
        self._decisions: dict[int, _Decision] = {}
        self._pending: dict[int, tuple[Future[Embedding], float]] = {}
        self.recognitions = 0
        self.failures = 0
        self._logged_failure = -math.inf
        self._captures: list[Future[Embedding]] = []  # "enrol the face in view": served by the next frame's faces
        self._capture_lock = threading.Lock()

    def _failed(self, what: str) -> None:
        """Count a failure; log the first and then at most one every FAILURE_LOG_S (a failure repeats per face
        per frame while the worker is down)."""
        self.failures += 1
        now = time.monotonic()
        if now - self._logged_failure >= FAILURE_LOG_S:
            self._logged_failure = now
            logger.warning("[%s] %s; faces waiting for recognition stay hidden (%d failure(s) so far)",
                           self.stream_id, what, self.failures)

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def capture(self) -> Future[Embedding]:
        """The embedding of the largest face of the next frame with one (from any thread): "keep my face" from the
        live picture. Fails with ValueError when that face is too small to recognise."""
        future: Future[Embedding] = Future()
        with self._capture_lock:
            self._captures.append(future)
        return future

    def _serve_captures(self, frame: npt.NDArray[np.uint8], boxes: npt.NDArray[np.float32]) -> None:
        with self._capture_lock:
            waiting, self._captures = self._captures, []
        sizes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        x1, y1, x2, y2 = (float(v) for v in boxes[int(np.argmax(sizes))])
        for future in waiting:
            if not future.set_running_or_notify_cancel():
                continue
            if min(x2 - x1, y2 - y1) < MIN_FACE_PX:
                future.set_exception(ValueError(f"the face in view is under {MIN_FACE_PX} px: come closer"))
                continue
            try:
                embedding = self.embedder.submit(frame, (x1, y1, x2, y2))
            except RuntimeError as exc:
                future.set_exception(exc)
                continue
            embedding.add_done_callback(lambda done, f=future: _chain(done, f))  # type: ignore[misc]

    def _visible_for(self, match: Match, mode: str) -> bool:
        if mode == "keep":
            return match.name is not None and match.distance <= self.match_distance
        # hide-only: shown only when clearly nobody enrolled (with nobody enrolled, everyone is shown)
        return math.isinf(match.distance) or match.distance > self.stranger_distance

    def _collect(self, track: int, future: Future[Embedding], submitted_t: float) -> None:
        try:
            embedding = future.result(timeout=EMBED_TIMEOUT_S)  # a file waits; a hung worker must not hang it
        except Exception as exc:
            self._failed(f"face recognition failed ({type(exc).__name__})")
            return
        self.recognitions += 1
        # The mode and the gallery's version are the ones the decision was made with, read once: a change made
        # meanwhile (a person removed, the mode switched) makes it stale at once rather than carry the old answer.
        mode = self.mode
        match = self.gallery.match(embedding)
        self._decisions[track] = _Decision(self._visible_for(match, mode), submitted_t, match.version, mode)

    def visible(self, frame: npt.NDArray[np.uint8], t: float, boxes: npt.NDArray[np.float32], detected: int,
                track_ids: list[int], uncertain: list[bool]) -> npt.NDArray[np.bool_]:
        """Which of ``boxes`` (the first ``detected`` found in ``frame`` itself, the rest held) may stay visible.
        Call before the frame is changed: recognition crops are taken from it."""
        shown = np.zeros(len(boxes), bool)
        if self._captures and detected:
            self._serve_captures(frame, boxes[:detected])
        if not self.active or len(boxes) == 0:
            return shown
        live = set(track_ids)
        for track in [k for k in self._decisions if k not in live]:
            del self._decisions[track]
        for track, (future, submitted) in list(self._pending.items()):
            if future.done():
                del self._pending[track]
                if track in live:
                    self._collect(track, future, submitted)
        crossing = self._crossing(boxes[:detected])
        for i in range(detected):
            track = track_ids[i]
            if uncertain[i] or crossing[i]:
                # The face of this track may be another one now: neither what was decided nor what is being
                # recognised (a crop of the earlier face) may decide for it.
                self._decisions.pop(track, None)
                stale = self._pending.pop(track, None)
                if stale is not None:
                    stale[0].cancel()
            decision = self._decisions.get(track)
            fresh = (decision is not None and decision.version == self.gallery.version
                     and decision.mode == self.mode and t - decision.made_t < self.recheck_s)
            if not fresh and track not in self._pending and len(self._pending) < MAX_PENDING and not crossing[i]:
                box = tuple(float(v) for v in boxes[i])
                try:
                    self._pending[track] = (self.embedder.submit(frame, box), t)  # type: ignore[arg-type]
                except RuntimeError as exc:
                    self._failed(f"face recognition unavailable ({exc})")
            if self.wait and track in self._pending:
                future, submitted = self._pending.pop(track)
                self._collect(track, future, submitted)
            decision = self._decisions.get(track)
            shown[i] = (decision is not None and decision.visible and decision.version == self.gallery.version
                        and decision.mode == self.mode and t - decision.made_t <= self.max_age_s
                        and not crossing[i])
        return shown

    @staticmethod
    def _crossing(boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        if len(boxes) < 2:
            return np.zeros(len(boxes), bool)
        overlap = iou_matrix(boxes.astype(np.float64), boxes.astype(np.float64))
        np.fill_diagonal(overlap, 0.0)
        return np.asarray((overlap > CROSSING_IOU).any(axis=1), bool)

    def stop(self) -> None:
        for future, _ in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._decisions.clear()
        with self._capture_lock:
            waiting, self._captures = self._captures, []
        for capture in waiting:
            capture.cancel()


def _chain(done: Future[Embedding], to: Future[Embedding]) -> None:
    error = done.exception()
    if error is not None:
        to.set_exception(error)
    else:
        to.set_result(done.result())
