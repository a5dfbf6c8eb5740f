"""The cameras the service pulls: their settings, from ``--camera NAME=URL`` or a TOML cameras file, checked whole
before any camera starts."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from models.coverage import DetectSize, parse_detect_size

from .identity.gallery import Gallery
from .redact import redact_url
from .settings import LIVE_THRESHOLD, MODES, THRESHOLD_RANGE, AnonymizeSettings, Mode
from .sinks.restream import check_restream_url, shown_restream
from .zones import Zones, parse_zones, zones_as_json

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
    zones: Zones = ()  # privacy zones, always hidden (zones.py)
    # keep: the faces of ``gallery`` stay visible; hide-only: only they are hidden (identity/policy.py)
    identity: Literal["off", "keep", "hide-only"] = "off"
    gallery: str | None = None  # a gallery file (python -m streamer enroll)
    restream: str | None = None  # push the anonymized stream to this RTSP/RTMP server (sinks/restream.py)

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
               "threshold", "zones", "keep_faces", "hide_only_faces", "restream"}


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
        zones = [[[0, 0], [0.3, 0], [0.3, 0.4], [0, 0.4]]]   # always hidden (fractions of the frame)
        keep_faces = "/etc/face-streamer/staff.json"        # or hide_only_faces: a gallery file
        restream = "rtsp://nvr.local:8554/lobby-anonymized"  # or rtmp://: push the anonymized stream there
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
        try:
            cameras.append(camera_from_mapping({**defaults, **entry}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: camera #{i + 1}: {exc}") from exc
    return cameras


def camera_from_mapping(m: dict[str, Any]) -> CameraSettings:
    """One camera from a ``[[camera]]`` table (merged with ``[defaults]``) or from the API's JSON body: the one
    place camera settings are checked, whichever way they arrive."""
    unknown = set(m) - CAMERA_KEYS
    if unknown:
        # Shortened: a JSON body may carry keys of any length, and the error goes back to its sender and the log.
        shown = ", ".join(sorted(k if len(k) <= 40 else k[:40] + "..." for k in map(str, unknown)))
        raise ValueError(f"unknown key(s) {shown}; expected {', '.join(sorted(CAMERA_KEYS))}")
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
    anonymize = AnonymizeSettings(mode=cast(Mode, mode), strength=_number(m, "strength", 0.5),
                                  padding=_number(m, "padding", 1.3), ellipse=m.get("ellipse", False))
    try:
        zones = parse_zones(m.get("zones"))
    except ValueError as exc:
        raise ValueError(f"zones: {exc}") from None
    identity, gallery = _identity(m)
    restream = m.get("restream")
    if restream is not None:
        if not isinstance(restream, str):
            raise ValueError("restream must be a string")
        check_restream_url(restream)
    return CameraSettings(m["name"], m["url"], anonymize, detect_size,
                          m.get("transport", "tcp"), m.get("always_on", False),
                          _number(m, "threshold", LIVE_THRESHOLD), zones, identity, gallery, restream)


def _identity(m: dict[str, Any]) -> tuple[Literal["off", "keep", "hide-only"], str | None]:
    keep, hide_only = m.get("keep_faces"), m.get("hide_only_faces")
    if keep is not None and hide_only is not None:
        raise ValueError("give keep_faces or hide_only_faces, not both")
    path = keep if keep is not None else hide_only
    if path is None:
        return "off", None
    key = "keep_faces" if keep is not None else "hide_only_faces"
    if not isinstance(path, str) or not path:
        raise ValueError(f"{key} must be the path of a gallery file")
    try:
        gallery = Gallery.load(Path(path))  # read now: a camera must not start on a gallery it cannot use
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    if not len(gallery):
        # With nobody enrolled, "hide only these" would show every face.
        raise ValueError(f"{key}: {path}: nobody is enrolled")
    return ("keep" if keep is not None else "hide-only"), path


def _number(m: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(m.get(key, default))
    except OverflowError:  # TOML's integers fit a float; JSON's need not (10**400)
        raise ValueError(f"{key} is out of range") from None


def camera_to_mapping(camera: CameraSettings, *, show_url: bool = False) -> dict[str, Any]:
    """Every setting of ``camera`` as a ``[[camera]]`` table holds it, so that ``camera_from_mapping`` gives the
    same camera back. The URL is redacted unless ``show_url`` (only for writing the cameras file)."""
    a = camera.anonymize
    out: dict[str, Any] = {"name": camera.name, "url": camera.url if show_url else redact_url(camera.url),
                           "mode": a.mode, "strength": a.strength, "padding": a.padding, "ellipse": a.ellipse,
                           "transport": camera.transport, "always_on": camera.always_on,
                           "threshold": camera.threshold}
    if camera.detect_size is not None:  # absent: the service's --detect-size, as in a table without the key
        out["detect_size"] = camera.detect_size
    if camera.zones:
        out["zones"] = zones_as_json(camera.zones)
    if camera.gallery is not None:
        out["keep_faces" if camera.identity == "keep" else "hide_only_faces"] = camera.gallery
    if camera.restream is not None:
        out["restream"] = camera.restream if show_url else shown_restream(camera.restream)
    return out

