"""Camera passwords never reach an error, a status or a log line, however the message quoted the URL."""

from __future__ import annotations

import logging
import socket
import threading

import av
import pytest

from streamer.redact import redact_url, scrub
from streamer.sources.rtsp import RtspOptions, RtspReader

# Passwords that defeat a plain string replace on an error text: repr() doubles the backslash, picks the other
# quote or escapes it, and a percent-escape or an '@' changes how the URL is split and printed.
PASSWORDS = ["pa\\ss", "it's", 'say"hi"', "both'\"q", "100%25off", "a%40b", "at@sign", "sp ace", "ünï"]


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _url(password: str, port: int = 554) -> str:
    return f"rtsp://admin:{password}@127.0.0.1:{port}/stream1?channel=2&token=t0k3n-{len(password)}"


def _leaks(text: str, password: str) -> list[str]:
    from urllib.parse import unquote
    spellings = {password, unquote(password), repr(password)[1:-1], password.replace("\\", "\\\\")}
    return [s for s in spellings if len(s) > 2 and s in text]


@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_url_hides_the_password_and_secret_parameters(password: str) -> None:
    shown = redact_url(_url(password))
    assert shown.startswith("rtsp://admin:***@127.0.0.1:554/stream1?"), shown
    assert "channel=2" in shown and "token=***" in shown and "t0k3n" not in shown
    assert not _leaks(shown, password)


def test_redact_url_keeps_what_identifies_the_camera() -> None:
    assert redact_url("rtsp://cam.local/live") == "rtsp://cam.local/live"
    assert redact_url("rtsp://viewer@[fd00::5]:8554/x") == "rtsp://viewer@[fd00::5]:8554/x"
    assert redact_url("rtsp://u:p@host:99999/x") == "<an unparsable URL>"


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("style", ["plain", "repr", "json", "percent"])
def test_scrub_removes_every_spelling(password: str, style: str) -> None:
    import json
    from urllib.parse import quote
    url = _url(password)
    quoted = {"plain": url, "repr": repr(url), "json": json.dumps(url), "percent": quote(url, safe="")}[style]
    text = scrub(f"OSError: [Errno 111] Connection refused: {quoted} (after 3 tries)", url)
    assert not _leaks(text, password), text
    assert "t0k3n" not in text and "Connection refused" in text


@pytest.mark.parametrize("password", PASSWORDS)
def test_pyav_errors_are_scrubbed(password: str) -> None:
    """The real message: PyAV quotes the URL with repr() when FFmpeg cannot connect."""
    url = _url(password, closed_port())
    with pytest.raises(Exception) as caught:
        av.open(url, timeout=(2.0, 1.0), options={"rtsp_transport": "tcp"})
    raw = f"{type(caught.value).__name__}: {caught.value}"
    assert _leaks(raw, password) or "t0k3n" in raw, f"PyAV no longer quotes the URL; this test proves nothing: {raw}"
    text = scrub(raw, url)
    assert not _leaks(text, password) and "t0k3n" not in text, text


def test_a_camera_that_cannot_connect_reports_no_password(caplog: pytest.LogCaptureFixture) -> None:
    password = "both'\"q\\%40@x"
    url = _url(password, closed_port())
    errors: list[str] = []
    failed = threading.Event()

    def on_state(state: str, error: str | None) -> None:
        if error:
            errors.append(error)
            failed.set()

    reader = RtspReader("door", url, lambda frame: None, RtspOptions(open_timeout_s=2.0, read_timeout_s=1.0),
                        on_state=on_state)
    with caplog.at_level(logging.DEBUG):
        reader.start()
        try:
            assert failed.wait(30), "the reader never reported its failed connection"
        finally:
            reader.stop()
    assert errors and "127.0.0.1" in errors[0]
    for text in [*errors, caplog.text]:
        assert not _leaks(text, password) and "t0k3n" not in text, text


@pytest.mark.parametrize(("url", "secret"), [
    ("rtsp://192.168.1.10:554/user=admin&password=hunter2&channel=1&stream=0.sdp", "hunter2"),  # Xiongmai
    ("rtsp://cam:554/live;pwd=hunter2;ch=1", "hunter2"),
    ("rtsp://cam:554/live?p=hunter2&ch=1", "hunter2"),
    ("rtsp://admin:1234/abc@cam/x", "1234/abc"),  # a '/' in the password: urlsplit and FFmpeg read a port
    ("rtsp://admin:se?cret@cam/x", "se?cret"),
])
def test_secrets_outside_the_userinfo_are_hidden_too(url: str, secret: str) -> None:
    shown = redact_url(url)
    assert secret not in shown, shown
    text = scrub(f"OSError: {url!r} / {url} failed", url)
    assert secret not in text, text


def test_a_camera_url_that_cannot_be_parsed_is_not_quoted_back() -> None:
    from streamer.camera_config import CameraSettings
    for url in ("rtsp://admin:Secr3t?x@cam/s", "rtsp://admin:p[1]@cam/s", "rtsp://admin:pw@cam:99999/s"):
        with pytest.raises(ValueError) as caught:
            CameraSettings("door", url)
        assert "Secr3t" not in str(caught.value) and "p[1]" not in str(caught.value), caught.value
        assert "percent-escaped" in str(caught.value) or "out of range" in str(caught.value)
