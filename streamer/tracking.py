"""Temporal hold: a face the detector saw a moment ago stays hidden for a while after it is missed.

Detectors drop faces for a frame or a few (motion blur, a turned head, a hand in front); without a hold those
frames would show the face. Each detection starts or continues a track with a smoothed velocity, and a track
that is not seen again is still returned, covering its last sighting and its motion-predicted position and
growing, until ``hold_seconds`` pass.

Tracks are in the pixel coordinates of one frame size. When frames of another size arrive (a browser switching
WebRTC resolution, a camera reconfigured), every track is scaled to the new size before it is used, so a held mask
stays on the same part of the picture instead of staying at the old pixel coordinates.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.boxes import enclosing, iou_matrix

from .settings import HoldSettings

__all__ = ["FaceTracker"]

logger = logging.getLogger(__name__)

FloatBoxes = npt.NDArray[np.float32]

# A frame later than this after the previous one means a seek or a new stream: old tracks describe another
# picture and their predictions would be far off anyway.
RESET_GAP_SECONDS = 5.0
# Media times are sums and products of floats (pts * time_base): 15 frames at 30 fps after a sighting can come
# out as 0.5000000001 s, and a 0.5 s hold must still cover that frame.
HOLD_TOLERANCE = 1e-6
# Velocity smoothing time constant (s). Per-frame velocities are mostly detector jitter (a few px per frame
# is 100 px/s at 30 fps); averaging over ~0.15 s keeps real motion and is independent of the frame rate.
VELOCITY_TAU = 0.15
# Velocity is capped at this many box sizes per second: a wrong association must not stretch a held mask far
# from the face, while a head crossing a 16:9 frame in about two seconds is still followed.
MAX_SPEED_SIZES = 6.0
MATCH_MIN_IOU = 0.1
# A detection whose centre is within this many box sizes of a track's predicted centre may match it even with
# no overlap, so a head moving faster than the prediction (or turning) keeps its track.
MATCH_MAX_DIST = 1.0
MATCH_MAX_SIZE_RATIO = 3.0  # a box 3x larger or smaller is another face, however close
# A detection that overlaps its track's prediction less than this may be another face that took the track over
# (two faces crossing): whatever was decided about the track's face no longer holds for it.
SURE_MATCH_IOU = 0.5
MAX_SIZE_TREND = 2.0  # cap on how much a held box may grow from its size velocity alone (before hold growth)


@dataclass
class _Track:
    cx: float
    cy: float
    w: float
    h: float
    last_seen: float
    id: int = 0
    missed: bool = False  # not matched in the last update: whoever matches it next may be another face
    vx: float = 0.0
    vy: float = 0.0
    vw: float = 0.0
    vh: float = 0.0
    hits: int = 1

    def predicted(self, t: float) -> tuple[float, float, float, float]:
        """Centre and size at ``t``, before any hold growth."""
        dt = max(0.0, t - self.last_seen)
        # Size follows its velocity only upward: a held mask that shrinks could uncover the face it hides.
        w = self.w * min(MAX_SIZE_TREND, max(1.0, 1.0 + self.vw * dt / self.w))
        h = self.h * min(MAX_SIZE_TREND, max(1.0, 1.0 + self.vh * dt / self.h))
        return self.cx + self.vx * dt, self.cy + self.vy * dt, w, h

    def observe(self, cx: float, cy: float, w: float, h: float, t: float) -> None:
        dt = t - self.last_seen
        if dt > 0:
            limit = MAX_SPEED_SIZES * max(w, h)
            inst = [(cx - self.cx) / dt, (cy - self.cy) / dt, (w - self.w) / dt, (h - self.h) / dt]
            inst = [min(limit, max(-limit, v)) for v in inst]
            # The first measured velocity is taken as it is: smoothing it against an assumed 0 would make the
            # first held frames lag behind a face that has been moving all along.
            a = 1.0 if self.hits == 1 else 1.0 - math.exp(-dt / VELOCITY_TAU)
            self.vx += a * (inst[0] - self.vx)
            self.vy += a * (inst[1] - self.vy)
            self.vw += a * (inst[2] - self.vw)
            self.vh += a * (inst[3] - self.vh)
        self.cx, self.cy, self.w, self.h = cx, cy, w, h
        self.last_seen = t
        self.hits += 1

    def rescale(self, sx: float, sy: float) -> None:
        self.cx, self.w, self.vx, self.vw = self.cx * sx, self.w * sx, self.vx * sx, self.vw * sx
        self.cy, self.h, self.vy, self.vh = self.cy * sy, self.h * sy, self.vy * sy, self.vh * sy


def _xyxy(cx: float, cy: float, w: float, h: float, scale: float = 1.0) -> list[float]:
    return [cx - w * scale / 2, cy - h * scale / 2, cx + w * scale / 2, cy + h * scale / 2]


class FaceTracker:
    """Keeps faces hidden through short detector misses. Not thread-safe: one tracker per stream."""

    def __init__(self, settings: HoldSettings, name: str = "-") -> None:
        self.settings = settings
        self.name = name  # the stream, for the logs
        self._tracks: list[_Track] = []
        self._last_t: float | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the frames the tracks are in
        self._held = 0
        self._next_id = 1
        # For each box the last ``update`` returned: its track's id, and whether that box may be another face than
        # the track's last sighting (a new track, or a loose match: little overlap), which identity decisions need.
        self.last_ids: list[int] = []
        self.last_uncertain: list[bool] = []

    @property
    def held(self) -> int:
        """Tracks returned by the last ``update`` without a detection of their own (masked from memory)."""
        return self._held

    @property
    def tracks(self) -> int:
        """Live tracks: faces seen within the hold."""
        return len(self._tracks)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames the tracks are in; None before the first frame."""
        return self._size

    def reset(self) -> None:
        self._tracks.clear()
        self._last_t = None
        self._held = 0
        self.last_ids, self.last_uncertain = [], []

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _growth(self, track: _Track, t: float) -> float:
        s = self.settings
        return min(s.max_grow, 1.0 + s.grow_per_second * max(0.0, t - track.last_seen))

    def _held_box(self, track: _Track, t: float, widen: float) -> list[float]:
        """The predicted box swept back to the last sighting, both grown by the hold growth times ``widen``.

        Constant-velocity prediction alone loses a head that stops or turns back while unseen (on the OTB
        "Girl" clip it covered less of the face than not predicting at all); covering the path from the last
        sighting to the prediction keeps the face hidden whether it carried on or not.
        """
        scale = self._growth(track, t) * widen
        ahead = _xyxy(*track.predicted(t), scale=scale)
        last = _xyxy(track.cx, track.cy, track.w, track.h, scale=scale)
        return [float(v) for v in enclosing(np.asarray([ahead, last]))]

    def _check_time(self, t: float) -> None:
        if not math.isfinite(t):
            raise ValueError(f"media time must be finite, not {t}")
        last = self._last_t
        if last is not None and (t < last or t - last > RESET_GAP_SECONDS):
            logger.info("[%s] media time jumped from %.3f s to %.3f s; dropping %d face track(s)",
                        self.name, last, t, len(self._tracks))
            self.reset()

    def _fit(self, frame_size: tuple[int, int]) -> None:
        """Bring every track to frames of ``frame_size`` (width, height), scaling x and y on their own: a browser
        or camera that changes resolution scales the same picture."""
        width, height = frame_size
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, not {width}x{height}")
        old = self._size
        self._size = (width, height)
        if old is None or old == self._size:
            return
        sx, sy = width / old[0], height / old[1]
        for track in self._tracks:
            track.rescale(sx, sy)
        if self._tracks:
            logger.info("[%s] frame size %dx%d -> %dx%d: %d face track(s) scaled to it", self.name, *old, width,
                        height, len(self._tracks))

    def update(self, boxes_xyxy: FloatBoxes, t: float, frame_size: tuple[int, int]) -> FloatBoxes:
        """Take the detections of a frame of ``frame_size`` (width, height) at media time ``t`` (s); return every
        box to hide in it, (N, 4) float32.

        That is every detection, then each unmatched track last seen within ``hold_seconds``: its predicted
        box swept back to where it was last seen, grown about the centres by the hold growth.
        """
        self._check_time(t)
        self._fit(frame_size)
        self._last_t = t
        rows = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        dets = rows[np.isfinite(rows).all(axis=1)]
        if self.settings.hold_seconds <= 0:
            self._held = 0
            self.last_ids = [self._new_id() for _ in range(len(dets))]
            self.last_uncertain = [True] * len(dets)
            return dets.copy()
        hold = self.settings.hold_seconds + HOLD_TOLERANCE
        self._tracks = [tr for tr in self._tracks if t - tr.last_seen <= hold]

        det_geo = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, max(b[2] - b[0], 1e-3), max(b[3] - b[1], 1e-3))
                   for b in dets.astype(np.float64).tolist()]
        predicted = [tr.predicted(t) for tr in self._tracks]
        overlaps = iou_matrix(np.asarray([_xyxy(*p) for p in predicted], np.float64).reshape(-1, 4),
                              np.asarray([_xyxy(*g) for g in det_geo], np.float64).reshape(-1, 4)).tolist()
        pairs: list[tuple[float, int, int]] = []
        for ti, (pcx, pcy, pw, ph) in enumerate(predicted):
            for di, (cx, cy, w, h) in enumerate(det_geo):
                ratio = math.sqrt((w * h) / (pw * ph))
                if not 1 / MATCH_MAX_SIZE_RATIO <= ratio <= MATCH_MAX_SIZE_RATIO:
                    continue
                iou = overlaps[ti][di]
                dist = math.hypot(cx - pcx, cy - pcy) / math.sqrt(max(pw, w) * max(ph, h))
                if iou >= MATCH_MIN_IOU or dist <= MATCH_MAX_DIST:
                    pairs.append((iou + max(0.0, 1.0 - dist / MATCH_MAX_DIST), ti, di))
        pairs.sort(key=lambda p: -p[0])
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        ids = [0] * len(det_geo)
        uncertain = [True] * len(det_geo)
        for _, ti, di in pairs:
            if ti in matched_tracks or di in matched_dets:
                continue
            matched_tracks.add(ti)
            matched_dets.add(di)
            track = self._tracks[ti]
            track.observe(*det_geo[di], t)
            ids[di] = track.id
            # After a miss, the face that takes the track over may be someone else's (a person stepping in front,
            # or into the seat): decisions about the track's face do not carry over.
            uncertain[di] = overlaps[ti][di] < SURE_MATCH_IOU or track.missed
            track.missed = False

        held: list[list[float]] = []
        held_ids: list[int] = []
        for ti, tr in enumerate(self._tracks):
            if ti not in matched_tracks:
                held.append(self._held_box(tr, t, 1.0))
                held_ids.append(tr.id)
                tr.missed = True
        for di, geo in enumerate(det_geo):
            if di not in matched_dets:
                track = _Track(*geo, last_seen=t, id=self._new_id())
                self._tracks.append(track)
                ids[di] = track.id
        self.last_ids = ids + held_ids
        self.last_uncertain = uncertain + [True] * len(held_ids)
        self._held = len(held)
        if not held:
            return dets.copy()
        return np.concatenate([dets, np.asarray(held, np.float32)], axis=0)

    def predict(self, t: float, frame_size: tuple[int, int], widen: float = 1.0) -> FloatBoxes:
        """Boxes to hide at ``t`` in a frame of ``frame_size`` when there is no detection result, each track
        widened by ``widen``.

        Track state is not advanced, so a later ``update`` still associates against the last real sightings.
        """
        if not math.isfinite(t):
            raise ValueError(f"media time must be finite, not {t}")
        self._fit(frame_size)
        hold = self.settings.hold_seconds + HOLD_TOLERANCE
        out = [self._held_box(tr, t, widen) for tr in self._tracks if t - tr.last_seen <= hold]
        return np.asarray(out, np.float32).reshape(-1, 4)
