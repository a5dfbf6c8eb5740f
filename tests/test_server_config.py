"""What an operator types into `serve`, and what a viewer may change live: accepted or refused with a reason."""

from __future__ import annotations

import pytest

from streamer.__main__ import build_parser
from streamer.server.app import config_from_args
from streamer.server.config import IceServer, parse_ice_server
from streamer.settings import LiveSettings


def test_serve_defaults_are_local_and_private() -> None:
    config = config_from_args(build_parser().parse_args(["serve"]))
    assert (config.host, config.port) == ("127.0.0.1", 9002)
    assert config.ice_servers == ()  # never a public STUN server by default
    assert config.audio == "drop"
    assert config.detector.spin_wait is False


@pytest.mark.parametrize(("text", "expected"), [
    ("stun:stun.internal:3478", IceServer("stun:stun.internal:3478")),
    ("turn:alice:s3cr:et@turn.internal:3478?transport=tcp",
     IceServer("turn:turn.internal:3478?transport=tcp", "alice", "s3cr:et")),
    ("turns:bob:pw@relay.internal", IceServer("turns:relay.internal", "bob", "pw")),
])
def test_ice_servers_parse_with_credentials(text: str, expected: IceServer) -> None:
    assert parse_ice_server(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("http://stun.internal", "expected stun"),
    ("turn:turn.internal:3478", "needs USER:PASSWORD"),
    ("turn::pw@turn.internal", "credentials"),
    ("stun:", "expected stun"),
])
def test_bad_ice_servers_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_ice_server(text)


def test_browser_gets_turn_credentials_in_rtc_form() -> None:
    server = parse_ice_server("turn:alice:pw@turn.internal:3478")
    assert server.as_client_dict() == {"urls": ["turn:turn.internal:3478"], "username": "alice", "credential": "pw"}


def test_live_settings_change_and_validate() -> None:
    settings = LiveSettings().updated({"mode": "solid", "threshold": 0.5, "debug": True})
    assert settings.as_dict() == {"mode": "solid", "strength": 0.5, "padding": 1.3, "threshold": 0.5,
                                  "debug": True, "ellipse": False, "zones": [], "identity": "off"}
    for bad, reason in [({"colour": "red"}, "unknown setting"), ({"mode": "pixelate"}, "mode must be"),
                        ({"strength": "high"}, "must be a number"), ({"strength": True}, "must be a number"),
                        ({"padding": 9}, "padding must be"), ({"threshold": 0.0}, "threshold must be"),
                        ({"debug": "yes"}, "true or false"), ([1, 2], "JSON object")]:
        with pytest.raises(ValueError, match=reason):
            settings.updated(bad)


def test_cli_rejects_half_a_tls_pair(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="go together"):
        config_from_args(build_parser().parse_args(["serve", "--tls-cert", "cert.pem"]))
