"""The one place camera URLs are made safe to show: in logs, errors, status and the API.

``redact_url`` works on the parsed URL (the password and secret-looking query values become ``***``).
``scrub`` cleans a message that may quote the URL in any form (FFmpeg's text, PyAV's ``repr()``, percent-escaped):
it removes every spelling of each secret, so a password with ``\\``, quotes, ``%`` or ``@`` cannot slip through
because the message escaped it differently from the URL itself.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Parameter names that carry credentials in camera URLs (Hikvision, Dahua, Axis, Reolink, tokens of cloud relays),
# in the query or, as Xiongmai's cameras put them, in the path (/user=admin&password=...&channel=1.sdp).
SECRET_PARAM = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred|^pw?$|^pin$", re.IGNORECASE)
PATH_PARAM = re.compile(r"([^/&;=?]+)=([^/&;?]*)")


def _secrets(url: str) -> list[str]:
    """Every secret the URL holds, as written and percent-decoded."""
    try:
        parts = urlsplit(url)
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return []
    found = [password] if password else []
    found += [value for name, value in query if value and SECRET_PARAM.search(name)]
    found += [m.group(2) for m in PATH_PARAM.finditer(parts.path) if m.group(2) and SECRET_PARAM.search(m.group(1))]
    if "@" in parts.path + parts.query + parts.fragment:
        found.append(_userinfo_as_ffmpeg_reads_it(url))
    # parse_qsl decodes; urlsplit does not: keep both spellings of each.
    spelled = {s for secret in found for s in (secret, unquote(secret), quote(secret, safe=""))}
    raw_query = [pair.partition("=") for pair in parts.query.split("&")]
    spelled |= {value for name, _, value in raw_query if value and SECRET_PARAM.search(unquote(name))}
    return sorted(spelled, key=len, reverse=True)


def _userinfo_as_ffmpeg_reads_it(url: str) -> str:
    """Everything between the scheme and the last '@': where a password with '/', '?' or '#' in it ends up when
    urlsplit and FFmpeg disagree about where the authority stops."""
    rest = url.partition("://")[2]
    return rest.rpartition("@")[0]


def redact_url(url: str) -> str:
    """The URL with its password and secret query values replaced by ``***``; the rest (scheme, user, host, port,
    path) stays, so an operator can still tell which camera and which account."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname or ""
        user, password = parts.username, parts.password
    except ValueError:
        return "<an unparsable URL>"
    if "@" in parts.path + parts.query + parts.fragment:
        # An '@' past the authority: a password holding '/', '?' or '#' that was not percent-escaped. Show nothing
        # of what comes before the last '@'.
        return f"{parts.scheme}://{MASK}@{url.rpartition('@')[2]}"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    if user is not None:
        netloc = f"{user}:{MASK}@{netloc}" if password is not None else f"{user}@{netloc}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAM.search(name) for name, _ in pairs):
            query = urlencode([(n, MASK if SECRET_PARAM.search(n) else v) for n, v in pairs], safe="*")
    path = PATH_PARAM.sub(lambda m: f"{m.group(1)}={MASK}" if SECRET_PARAM.search(m.group(1)) else m.group(0),
                          parts.path)
    return urlunsplit(parts._replace(netloc=netloc, path=path, query=query))


def _spellings(secret: str) -> set[str]:
    """How a message may have written ``secret``: as is, escaped by ``repr()`` inside either quote, as JSON."""
    escaped = secret.encode("unicode_escape").decode("ascii")
    return {secret, escaped, escaped.replace("'", "\\'"), escaped.replace('"', '\\"'), json.dumps(secret)[1:-1]}


def scrub(text: str, url: str) -> str:
    """``text`` with the URL shown redacted and no spelling of any of its secrets left."""
    shown = redact_url(url)
    for whole in (url, repr(url)[1:-1], json.dumps(url)[1:-1]):
        text = text.replace(whole, shown)
    for secret in _secrets(url):
        for spelling in sorted(_spellings(secret), key=len, reverse=True):
            text = text.replace(spelling, MASK)
    return text
