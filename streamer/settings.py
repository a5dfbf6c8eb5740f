"""Typed, validated settings shared by the CLI, the file pipeline and (later) live sessions."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

from .identity.policy import IDENTITY_MODES, IdentityMode
from .zones import Zones, parse_zones, zones_as_json

Mode = Literal["mosaic", "blur", "solid"]
FailPolicy = Literal["hide-frame", "widen-held"]
MODES: tuple[str, ...] = get_args(Mode)
# Dark grey rather than black, so a hidden face or zone reads as "masked" and not as a decoding glitch.
SOLID_BGR = (24, 24, 24)
FAIL_POLICIES: tuple[str, ...] = get_args(FailPolicy)


@dataclass(frozen=True)
class AnonymizeSettings:
    """How a face is hidden.

    strength 0..1: mosaic goes from 14 to 6 blocks across the face (0.5 -> 10), blur from a sigma of 1/8 to 1/3 of
    the face width; solid ignores it. padding scales each box about its centre before hiding (1.3 = 30% larger).
    scramble: mosaic cells are reordered by brightness within each face, so the mosaic keeps no facial layout
    (see anonymize.py).
    """

    mode: Mode = "mosaic"
    strength: float = 0.5
    padding: float = 1.3
    ellipse: bool = False
    scramble: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be within 0..1, not {self.strength}")
        if not 1.0 <= self.padding <= 3.0:
            raise ValueError(f"padding must be within 1.0..3.0, not {self.padding}")

    def with_changes(self, **changes: Any) -> AnonymizeSettings:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)


@dataclass(frozen=True)
class HoldSettings:
    """How long a face stays hidden after the detector last saw it, and how its mask grows meanwhile.

    hold_seconds: keep masking a lost face this long (media time). grow_per_second: while a face is only
    predicted, its box grows by this fraction per second (so 0.5 s of hold at 1.0/s ends 1.5x larger).
    """

    hold_seconds: float = 0.5
    grow_per_second: float = 1.0
    max_grow: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hold_seconds <= 10.0:
            raise ValueError(f"hold_seconds must be within 0..10, not {self.hold_seconds}")
        if not 0.0 <= self.grow_per_second <= 10.0:
            raise ValueError(f"grow_per_second must be within 0..10, not {self.grow_per_second}")
        if not 1.0 <= self.max_grow <= 5.0:
            raise ValueError(f"max_grow must be within 1..5, not {self.max_grow}")


THRESHOLD_RANGE = (0.05, 0.95)
# Lower than the detector's 0.3 for files: the codec of a live stream lowers face scores. Measured on VP8 at
# 320x240 (bench.soak): 0.2 left a third fewer faces unchanged, for more false masks. Webcams and cameras alike.
LIVE_THRESHOLD = 0.2


@dataclass(frozen=True)
class LiveSettings:
    """What a live viewer may change while streaming: how faces are hidden, the detection threshold, whether
    the hidden boxes are outlined (drawn on the anonymized output only), and the privacy zones (zones.py)."""

    anonymize: AnonymizeSettings = AnonymizeSettings()
    threshold: float = LIVE_THRESHOLD
    debug: bool = False
    zones: Zones = ()
    identity: IdentityMode = "off"  # keep the enrolled faces visible, or hide only them (identity/policy.py)

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold) or not THRESHOLD_RANGE[0] <= self.threshold <= THRESHOLD_RANGE[1]:
            raise ValueError(f"threshold must be within {THRESHOLD_RANGE[0]}..{THRESHOLD_RANGE[1]}, "
                             f"not {self.threshold}")

    def as_dict(self) -> dict[str, Any]:
        a = self.anonymize
        return {"mode": a.mode, "strength": a.strength, "padding": a.padding, "threshold": self.threshold,
                "debug": self.debug, "ellipse": a.ellipse, "zones": zones_as_json(self.zones),
                "identity": self.identity}

    def updated(self, changes: Any) -> LiveSettings:
        """These settings with ``changes`` (a JSON object) applied; ValueError with a readable reason for unknown
        fields, wrong types or values out of range, and then nothing is changed."""
        if not isinstance(changes, dict):
            raise ValueError("settings must be a JSON object")
        unknown = sorted(set(changes) - set(LIVE_FIELDS))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(map(str, unknown))}; "
                             f"known: {', '.join(LIVE_FIELDS)}")
        for name, value in changes.items():
            expected = LIVE_FIELDS[name]
            if expected is bool and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            if expected is float and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{name} must be a number")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                # JSON integers have no size limit, and float() of a huge one raises OverflowError.
                raise ValueError(f"{name} is out of range")
            if name == "mode" and value not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}")
            if name == "identity" and value not in IDENTITY_MODES:
                raise ValueError(f"identity must be one of {', '.join(IDENTITY_MODES)}")
        merged = {**self.as_dict(), **changes}
        zones = parse_zones(changes["zones"]) if "zones" in changes else self.zones
        anonymize = replace(self.anonymize, mode=merged["mode"], strength=float(merged["strength"]),
                            padding=float(merged["padding"]), ellipse=merged["ellipse"])
        return LiveSettings(anonymize, float(merged["threshold"]), merged["debug"], zones, merged["identity"])


LIVE_FIELDS: dict[str, type] = {"mode": str, "strength": float, "padding": float, "threshold": float,
                                "debug": bool, "ellipse": bool, "zones": list, "identity": str}
