"""The cameras the service pulls: their settings, from ``--camera NAME=URL`` or a TOML cameras file, checked whole
before any camera starts."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from models.coverage import DetectSize, parse_detect_size

from .redact import redact_url
from .settings import LIVE_THRESHOLD, MODES, THRESHOLD_RANGE, AnonymizeSettings, Mode

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class CameraSettings:
    name: str
    url: str
    anonymize: AnonymizeSettings = field(default_factory=AnonymizeSettings)
    detect_size: DetectSize | None = None  # None: the service's --detect-size (full coverage by default)
    transport: Literal["tcp", "udp"] = "tcp"
    always_on: bool = False
    # The live threshold, as for webcams: codecs lower face scores, and a camera shows strangers.
    threshold: float = LIVE_THRESHOLD

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= NAME_CHARS or len(self.name) > 64:
            raise ValueError(f"camera name {self.name!r}: use 1-64 letters, digits, '-' or '_'")
        if not self.url.startswith(("rtsp://", "rtsps://")):
            shown = repr(redact_url(self.url))
            raise ValueError(f"camera {self.name}: URL must start with rtsp:// or rtsps://, not {shown}")
        try:
            # What the reader, the logs and /cameras parse later (redact reads the port) must parse now.
            parts = urlsplit(self.url)
            parts.port  # noqa: B018
        except ValueError as exc:
            # urlsplit's reasons may quote a piece of the URL, which may be the password: say what to fix instead.
            if "out of range" in str(exc):
                raise ValueError(f"camera {self.name}: the URL's port is out of range 0-65535") from None
            raise ValueError(f"camera {self.name}: the URL's host or port cannot be read (a password with '/', "
                             "'?', '#', '[' or ']' must be percent-escaped)") from None
        if not parts.hostname:
            raise ValueError(f"camera {self.name}: the URL has no host")
        if self.transport not in ("tcp", "udp"):
            raise ValueError(f"camera {self.name}: transport must be tcp or udp")
        if self.detect_size is not None:
            try:
                object.__setattr__(self, "detect_size", parse_detect_size(self.detect_size))
            except ValueError as exc:
                raise ValueError(f"camera {self.name}: detect_size: {exc}") from None
        low, high = THRESHOLD_RANGE
        if not low <= self.threshold <= high:  # NaN fails this too
            raise ValueError(f"camera {self.name}: threshold must be within {low}..{high}")


def parse_camera_arg(text: str) -> CameraSettings:
    """``NAME=rtsp://...`` from the command line."""
    name, sep, url = text.partition("=")
    if not sep:
        raise ValueError(f"--camera {text!r}: expected NAME=rtsp://HOST/PATH")
    return CameraSettings(name.strip(), url.strip())


CAMERA_KEYS = {"name", "url", "mode", "strength", "padding", "ellipse", "detect_size", "transport", "always_on",
               "threshold"}


def load_cameras_file(path: Path) -> list[CameraSettings]:
    """Cameras from a TOML file: an optional ``[defaults]`` table and one ``[[camera]]`` table per camera.

        [defaults]
        mode = "mosaic"
        [[camera]]
        name = "lobby"
        url = "rtsp://user:pass@10.0.0.5/stream1"
        transport = "tcp"        # or "udp"
        strength = 0.7
        detect_size = "full"     # full (the default), fast (shrunk at most 2x, no small faces) or N px
        threshold = 0.2          # face score threshold (default: the live one, 0.2)
        always_on = true
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ValueError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    unknown_top = set(data) - {"defaults", "camera"}
    if unknown_top:
        raise ValueError(f"{path}: unknown table(s) {', '.join(sorted(unknown_top))}; expected [defaults], [[camera]]")
    defaults = data.get("defaults", {})
    entries = data.get("camera", [])
    if not isinstance(defaults, dict) or not isinstance(entries, list):
        raise ValueError(f"{path}: [defaults] must be a table and [[camera]] an array of tables")
    cameras = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: camera #{i + 1} is not a table")
        merged = {**defaults, **entry}
        unknown = set(merged) - CAMERA_KEYS
        if unknown:
            raise ValueError(f"{path}: camera #{i + 1}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            cameras.append(camera_from_mapping(merged))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: camera #{i + 1}: {exc}") from exc
    return cameras


def camera_from_mapping(m: dict[str, Any]) -> CameraSettings:
    # Types are checked, never coerced: bool("false") is True, and a quoted number is a typo worth reporting.
    for key in ("name", "url", "transport"):
        if key in m and not isinstance(m[key], str):
            raise ValueError(f"{key} must be a string")
    for key in ("name", "url"):
        if key not in m:
            raise ValueError(f"{key} must be a string")
    for key in ("ellipse", "always_on"):
        if not isinstance(m.get(key, False), bool):
            raise ValueError(f"{key} must be true or false")
    for key in ("strength", "padding", "threshold"):
        if key in m and (isinstance(m[key], bool) or not isinstance(m[key], int | float)):
            raise ValueError(f"{key} must be a number")
    mode = m.get("mode", "mosaic")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    detect_size = m.get("detect_size")
    if detect_size is not None:
        if (isinstance(detect_size, bool) or not isinstance(detect_size, int | float | str)
                or (isinstance(detect_size, str) and detect_size not in ("full", "fast"))):
            raise ValueError("detect_size must be \"full\", \"fast\" or a number of pixels")
        try:
            detect_size = parse_detect_size(detect_size)
        except ValueError as exc:
            raise ValueError(f"detect_size: {exc}") from None
    anonymize = AnonymizeSettings(mode=cast(Mode, mode), strength=float(m.get("strength", 0.5)),
                                  padding=float(m.get("padding", 1.3)), ellipse=m.get("ellipse", False))
    return CameraSettings(m["name"], m["url"], anonymize, detect_size,
                          m.get("transport", "tcp"), m.get("always_on", False),
                          float(m.get("threshold", LIVE_THRESHOLD)))
