"""Short-lived TURN credentials for the ICE servers that ``GET /config`` hands to browsers.

A static TURN password in ``/config`` is a password for anyone who ever loaded the page, valid until someone changes
it by hand. With coturn's TURN REST API scheme (``use-auth-secret``, deploy/turnserver.conf) the streamer and coturn
share only a secret: the streamer signs a user name that carries its own expiry time, coturn recomputes the signature
and refuses the credential once that time has passed. Nothing is stored or revoked on either side.

The scheme (coturn's ``--use-auth-secret``, draft-uberti-behave-turn-rest): ``username = "<expiry unix time>:<name>"``
and ``credential = base64(HMAC-SHA1(secret, username))``. tests/test_turn.py checks it against a real coturn.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

# How long a credential can start new TURN allocations. coturn checks the expiry when a client authenticates, not
# again for an allocation it already holds (tests/test_turn.py keeps refreshing one past its credential's expiry), so
# a running session is never cut by it; it has to cover only the time from a /config answer to ICE gathering, which
# the web pages do right after asking (at every Start and camera connect). An hour leaves room for clock skew when
# coturn runs on another host, and for a page that waits before starting; a credential copied out of a page, or
# held by someone whose access was revoked since, is useless an hour later (Synapse's turn_user_lifetime default).
DEFAULT_TTL_S = 3600
MIN_TTL_S = 60  # below this, a slow browser or a little clock skew makes the relay fail at once
MAX_TTL_S = 24 * 3600  # longer is a static password in all but name
DEFAULT_NAME = "streamer"
# The secret signs every credential and a credential is public to every page that loads /config: a short secret
# could be recovered offline from one credential.
MIN_SECRET_CHARS = 16

# turn[s]:HOST[:PORT][?transport=udp|tcp]: the host syntax of streamer.server.config.ICE_URL, and no USER:PASSWORD@,
# since credentials are made for each /config answer from the secret.
TURN_URL = re.compile(r"(?P<scheme>turns?):(?P<host>[^?:@/\s\[\]]+)(?::(?P<port>[0-9]{1,5}))?"
                      r"(?:\?transport=(?P<transport>udp|tcp))?")
# coturn splits the user name at its first ':' into expiry and name; a name with ':' or odd characters could make a
# credential coturn reads differently from the one signed here.
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RtcIceServer(TypedDict):
    """The RTCIceServer dictionary a browser takes: one entry of /config's ``iceServers``."""

    urls: list[str]
    username: str
    credential: str


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str = field(repr=False)  # a working password until expires_at: kept out of any log line
    expires_at: int  # unix time


def parse_turn_url(text: str) -> str:
    """Validate ``turn[s]:HOST[:PORT][?transport=udp|tcp]`` once, at start-up; return it unchanged."""
    match = TURN_URL.fullmatch(text)
    if match is None:
        raise ValueError(f"--turn-url {text!r}: expected turn:HOST[:PORT] or turns:HOST[:PORT] (a host name or IPv4 "
                         "address; no USER:PASSWORD@, credentials come from the secret), then nothing but "
                         "?transport=udp|tcp")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"--turn-url {text!r}: the port must be within 1..65535")
    if match["scheme"] == "turns" and match["transport"] == "udp":
        raise ValueError(f"--turn-url {text!r}: turns: runs over TLS, so over TCP only")
    return text


def check_ttl(ttl_s: float) -> int:
    if not math.isfinite(ttl_s) or not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"--turn-ttl must be within {MIN_TTL_S}..{MAX_TTL_S} s, not {ttl_s}")
    return int(ttl_s)


def check_secret(secret: str) -> str:
    """The secret exactly as coturn reads it from ``static-auth-secret=``: printable ASCII without spaces.

    Whitespace could be trimmed on one side and not the other, and a non-ASCII secret could be encoded differently:
    either way every credential would be refused, with nothing in the streamer's log to say why.
    """
    if not secret.isascii() or not secret.isprintable() or any(c.isspace() for c in secret):
        raise ValueError("the TURN secret must be printable ASCII without spaces (e.g. `openssl rand -hex 32`)")
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"the TURN secret must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand "
                         "-hex 32`)")
    return secret


def make_credential(secret: str, ttl_s: int = DEFAULT_TTL_S, name: str = DEFAULT_NAME,
                    now: float | None = None) -> TurnCredential:
    """A credential that coturn (``use-auth-secret``, ``static-auth-secret=<secret>``) accepts until now + ttl_s."""
    if NAME.fullmatch(name) is None:
        raise ValueError(f"TURN user name {name!r}: letters, digits, '.', '_' and '-' only (1-64)")
    expires_at = int(time.time() if now is None else now) + ttl_s
    username = f"{expires_at}:{name}"
    digest = hmac.new(secret.encode("ascii"), username.encode("ascii"), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


def turn_ice_servers(urls: Sequence[str], secret: str, ttl_s: int = DEFAULT_TTL_S, name: str = DEFAULT_NAME,
                     now: float | None = None) -> list[RtcIceServer]:
    """The ``iceServers`` entries for one /config answer: every TURN URL with one fresh credential.

    One entry for all URLs, because they are ways into the same relay (UDP, TCP, TLS) sharing one secret; none when
    no URL is configured, so that /config never advertises a relay that is not there.
    """
    if not urls:
        return []
    cred = make_credential(secret, ttl_s, name, now)
    return [RtcIceServer(urls=list(urls), username=cred.username, credential=cred.credential)]


@dataclass(frozen=True)
class TurnRelay:
    """What ``serve`` knows about its TURN relay, checked once at start-up (ServerConfig would hold one)."""

    urls: tuple[str, ...]
    secret: str = field(repr=False)  # signs every credential: kept out of any log line
    ttl_s: int = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a TURN secret needs at least one --turn-url")
        for url in self.urls:
            parse_turn_url(url)
        check_secret(self.secret)
        object.__setattr__(self, "ttl_s", check_ttl(self.ttl_s))

    def ice_servers(self, now: float | None = None) -> list[RtcIceServer]:
        """Fresh entries for one /config answer."""
        return turn_ice_servers(self.urls, self.secret, self.ttl_s, now=now)
