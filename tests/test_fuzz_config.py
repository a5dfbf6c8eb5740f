"""What an operator can get wrong in a cameras TOML file or on the `serve` command line: any text, any structure,
any option value is either accepted as a usable setting or refused with a ValueError that names the problem; never
another exception (a traceback at start-up) and never a value that only breaks later, while serving."""

from __future__ import annotations

import datetime
import math
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCIceServer
from aiortc.rtcicetransport import connection_kwargs, parse_stun_turn_uri
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.__main__ import build_parser
from streamer.camera_config import CAMERA_KEYS, CameraSettings, load_cameras_file
from streamer.redact import redact_url
from streamer.server.app import config_from_args
from streamer.server.config import parse_ice_server

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------------------------------------ TOML writer


def toml_key(key: str) -> str:
    return key if key and all(c in string.ascii_letters + string.digits + "-_" for c in key) else toml_str(key)


def toml_str(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                      else f"\\U{ord(c):08x}" for c in text)
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(tables: dict[str, Any]) -> str:
    """``defaults`` as a [table], ``camera`` (a list of dicts) as [[camera]] tables, anything else inline."""
    lines: list[str] = []
    for name, value in tables.items():
        if name == "camera" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for entry in value:
                lines.append("[[camera]]")
                lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in entry.items()]
        elif isinstance(value, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()]
        else:
            lines.insert(0, f"{toml_key(name)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["mosaic", "blur", "solid", "tcp", "udp", "true", "false", "0.5", "640"]),
    st.datetimes(), st.dates(), st.times())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
urls = st.one_of(
    st.just("rtsp://cam.internal/stream"),
    st.builds(lambda host, port, path: f"rtsp://{host}:{port}/{path}", st.sampled_from(
        ["cam", "10.0.0.5", "[::1]", "[::1", "u:p@cam", "", "a b"]), st.integers(-5, 100000), st.text(max_size=6)),
    st.text(max_size=30).map(lambda t: "rtsp://" + t), st.text(max_size=30))
names = st.one_of(st.sampled_from(["lobby", "door-1", "a_b"]), st.text(max_size=70))
key_values: dict[str, st.SearchStrategy[Any]] = {
    "name": names, "url": urls, "mode": st.sampled_from(["mosaic", "blur", "solid"]) | values,
    "strength": st.floats(-1, 2) | values, "padding": st.floats(0.5, 4) | values, "ellipse": st.booleans() | values,
    "detect_size": st.integers(0, 10000) | st.sampled_from(["full", "fast", "FULL", "640", "tiles"]) | values,
    "transport": st.sampled_from(["tcp", "udp"]) | values,
    "always_on": st.booleans() | values, "threshold": st.floats(0, 1.2) | values,
}
camera_tables = st.fixed_dictionaries(
    {"name": names, "url": urls},
    optional={**{k: v for k, v in key_values.items() if k not in ("name", "url")}, "colour": values})
documents = st.one_of(
    st.fixed_dictionaries({"camera": st.lists(camera_tables, max_size=3)},
                          optional={"defaults": st.dictionaries(st.sampled_from(sorted(CAMERA_KEYS)), values,
                                                                max_size=3)}),
    st.dictionaries(st.sampled_from(["camera", "defaults", "cameras", "x"]), values, max_size=3),
)


def deep_toml(depth: int) -> str:
    return "a = " + "[" * depth + "]" * depth + "\n"


toml_texts = st.one_of(
    documents.map(toml_document),
    st.text(max_size=200),
    st.integers(1, 200_000).map(deep_toml),
    st.integers(1, 50_000).map(lambda n: "[defaults]\n" + "x = { y = " * n + "1" + " }" * n + "\n"),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),  # written as UTF-8: any code point
)


def check_accepted_camera(camera: CameraSettings, source: dict[str, Any] | None) -> None:
    """An accepted camera is usable as it stands: right types, and a URL the logs and status can show."""
    a = camera.anonymize
    assert isinstance(a.strength, float) and 0 <= a.strength <= 1
    assert isinstance(a.padding, float) and 1 <= a.padding <= 3
    assert isinstance(a.ellipse, bool) and isinstance(camera.always_on, bool)
    assert camera.detect_size in (None, "full", "fast") or (type(camera.detect_size) is int
                                                           and 64 <= camera.detect_size <= 4096)
    assert camera.transport in ("tcp", "udp")
    assert isinstance(camera.threshold, float) and 0.05 <= camera.threshold <= 0.95
    assert "***" in redact_url(camera.url) or "@" not in camera.url.split("/", 3)[2]
    if source is not None:
        # A value of the wrong type is refused, never coerced (ellipse = "false" must not mean true).
        for key in ("ellipse", "always_on"):
            if key in source:
                assert isinstance(source[key], bool), f"{key} = {source[key]!r} was accepted"
        if isinstance(source.get("detect_size"), str):
            assert source["detect_size"] in ("full", "fast"), f"detect_size = {source['detect_size']!r} was accepted"
        for key in ("strength", "padding", "detect_size", "threshold"):
            if key in source and not isinstance(source[key], str):
                assert isinstance(source[key], int | float) and not isinstance(source[key], bool), \
                    f"{key} = {source[key]!r} was accepted"


def load_text(text: str) -> tuple[Path, list[CameraSettings] | ValueError]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cameras.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return path, load_cameras_file(path)
        except ValueError as exc:
            return path, exc


@FUZZ
@given(toml_texts)
def test_any_cameras_file_loads_or_is_refused_with_its_name_and_reason(text: str) -> None:
    path, result = load_text(text)
    if isinstance(result, ValueError):
        message = str(result)
        assert message.startswith(f"{path}: ") and len(message) > len(f"{path}: ") + 5, message
        return
    for camera in result:
        check_accepted_camera(camera, None)


@FUZZ
@given(documents)
def test_camera_tables_are_typed_strictly(document: dict[str, Any]) -> None:
    path, result = load_text(toml_document(document))
    if isinstance(result, ValueError):
        message = str(result)
        assert message.startswith(f"{path}: "), message
        if "camera #" in message and "is not a table" not in message:
            # The refusal names the key at fault: an unknown one, or a known one with a bad value.
            assert "unknown key" in message or any(k in message.lower() for k in CAMERA_KEYS), message
        return
    defaults = document.get("defaults", {})
    for camera, entry in zip(result, document.get("camera", []), strict=True):
        check_accepted_camera(camera, {**defaults, **entry})


@pytest.mark.parametrize(("text", "reason"), [
    ("a = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('[[camera]]\nname = "a"\nurl = "rtsp://cam/x"\nellipse = "false"\n', "ellipse must be true or false"),
    ('[[camera]]\nname = "a"\nurl = "rtsp://cam/x"\nstrength = "0.5"\n', "strength must be a number"),
    ('[[camera]]\nname = "a"\nurl = "rtsp://cam:99999/x"\n', "port is out of range"),
    ('[[camera]]\nname = "a"\nurl = "rtsp://[::1/x"\n', "host or port cannot be read"),
], ids=["deep-array", "quoted-bool", "quoted-number", "port-out-of-range", "broken-ipv6"])
def test_cameras_file_mistakes_found_by_fuzzing(text: str, reason: str) -> None:
    _, result = load_text(text)
    assert isinstance(result, ValueError) and reason in str(result), result


# ------------------------------------------------------------------------------------------------- ICE servers

ice_texts = st.one_of(
    st.text(max_size=40),
    st.builds(lambda scheme, creds, host, port, query: f"{scheme}:{creds}{host}{port}{query}",
              st.sampled_from(["stun", "stuns", "turn", "turns", "http", ""]),
              st.sampled_from(["", "u:p@", ":p@", "u:@", "u@", "u:p:q@", "a@b@"]),
              st.sampled_from(["relay.internal", "10.0.0.1", "", "[::1]", "a b", "h:1:2"]),
              st.sampled_from(["", ":3478", ":0", ":99999", ":-1", ":x", ":"]),
              st.sampled_from(["", "?transport=udp", "?transport=tcp", "?transport=sctp", "?", "?x=1"])),
)


@FUZZ
@given(ice_texts)
def test_ice_server_is_usable_by_aiortc_or_refused(text: str) -> None:
    try:
        server = parse_ice_server(text)
    except ValueError as exc:
        assert "--ice-server" in str(exc), exc
        return
    # What the server accepted at start-up must not fail later, in every offer's ICE gathering.
    parsed = parse_stun_turn_uri(server.url)
    assert 0 < parsed["port"] <= 65535
    kwargs = connection_kwargs([RTCIceServer(urls=server.url, username=server.username,
                                             credential=server.credential)])
    # aiortc itself uses no stuns: server (browsers do); any other accepted server it must use.
    assert kwargs or parsed["scheme"] == "stuns", f"{text!r} accepted, but aiortc ignores {server.url!r}"


# ---------------------------------------------------------------------------------------------------- serve CLI

numbers = st.one_of(st.integers(-(10**6), 10**6).map(str), st.floats(allow_nan=True).map(str),
                    st.sampled_from(["nan", "inf", "-inf", "1e999", "0", "-0", "", "x", "0x10", "1_000"]))
OPTIONS: dict[str, st.SearchStrategy[str]] = {
    "--port": numbers, "--max-sessions": numbers, "--max-viewers": numbers, "--max-upload-mb": numbers,
    "--max-queued-jobs": numbers, "--job-workers": numbers, "--job-ttl": numbers, "--rtsp-timeout": numbers,
    "--detect-deadline": numbers, "--detect-size": numbers, "--threshold": numbers,
    "--audio": st.sampled_from(["drop", "passthrough", "x"]), "--ice-server": ice_texts,
    "--camera": st.builds(lambda n, u: f"{n}={u}", names, urls), "--device": st.sampled_from(["cpu", "gpu"]),
}


def option(name: str) -> st.SearchStrategy[list[str]]:
    return OPTIONS[name].map(lambda value: [f"{name}={value}"])


argvs = st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.just(""), max_size=4).flatmap(
    lambda chosen: st.tuples(*(option(k) for k in chosen)))


def parse(argv: list[str]) -> Any:
    return config_from_args(build_parser().parse_args(["serve", *argv]))


@FUZZ
@given(argvs)
def test_serve_options_make_a_usable_config_or_a_clear_error(parts: tuple[list[str], ...]) -> None:
    argv = [arg for part in parts for arg in part]
    try:
        config = parse(argv)
    except SystemExit as exc:  # argparse: a value of the wrong type, with its usage message on stderr
        assert exc.code == 2
        return
    except ValueError as exc:
        assert str(exc).startswith(("--", "camera", "detect_size", "threshold")), exc
        return
    assert 0 <= config.port <= 65535, argv
    finite: Callable[[float], bool] = math.isfinite
    assert all(finite(v) for v in (config.job_ttl_s, config.rtsp_timeout_s,
                                   config.detect_deadline_s, config.detector.threshold)), argv
    for camera in config.cameras:
        check_accepted_camera(camera, None)
