"""Access control: an optional access token, a login page that trades it for a session cookie, and a same-origin
guard on every state-changing request.

- ``same_origin`` (always on): a POST, PATCH, PUT or DELETE whose ``Origin`` is not the server's own, or that the
  browser marks ``Sec-Fetch-Site: cross-site|same-site``, is refused with 403, so that another web site cannot drive
  the API from a visitor's browser (CSRF), token or not. Requests with neither header (curl, OBS, ffmpeg, aiortc)
  are not browsers' cross-site requests and pass.
- ``require_token`` (when ``serve --token`` / ``--token-file`` / ``$STREAMER_TOKEN_FILE`` / ``$STREAMER_TOKEN`` is
  set): every route but ``GET /healthz`` (which then says only ready or not) and the login page needs
  ``Authorization: Bearer TOKEN`` (external players, scripts; the WHEP draft says so) or the session cookie that
  ``POST /login`` sets. The cookie holds a random session id, never the token; sessions live
  in memory, so a restart logs everyone out.
- Failed attempts (a wrong token in the form or in a bearer header) are counted per client address; after
  ``MAX_FAILURES`` within ``FAILURE_WINDOW_S`` that address gets 429 until the window has passed. They are logged
  with the address, never with what was sent.
"""

from __future__ import annotations

import argparse
import hmac
import html
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from .secret_files import read_secret_file, secret_from_env
from .state import CONFIG, error_response
from .webroot import WEB_DIR

logger = logging.getLogger(__name__)

COOKIE = "streamer_session"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1024  # the oldest login goes first beyond this; memory stays bounded whatever clients do
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
MAX_TRACKED_ADDRESSES = 4096
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What the login page itself needs before anyone is logged in; everything else under /static/ is the app.
PUBLIC_PATHS = frozenset({"/healthz", "/login", "/static/style.css", "/static/auth.css"})
LOGIN_ERROR_SLOT = '<p id="login-error" class="inline-error" role="alert" hidden></p>'


def token_from_args(args: argparse.Namespace) -> str | None:
    """The token from ``--token-file`` (a Docker secret) or ``--token``, else from ``$STREAMER_TOKEN_FILE`` or
    ``$STREAMER_TOKEN``. Two sources at the same level are refused: the operator meant one of them."""
    if args.token_file is not None and args.token is not None:
        raise ValueError("give --token or --token-file, not both")
    if args.token_file is not None:
        return read_secret_file(Path(args.token_file), "--token-file")
    if args.token is not None:
        return str(args.token) or None
    return secret_from_env("STREAMER_TOKEN")


@dataclass
class AuthState:
    """Logged-in sessions and recent failures, per app."""

    sessions: dict[str, float] = field(default_factory=dict)  # session id -> expiry (monotonic)
    failures: dict[str, deque[float]] = field(default_factory=dict)  # client address -> failure times

    def new_session(self) -> str:
        now = time.monotonic()
        self.sessions = {s: t for s, t in self.sessions.items() if t > now}
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[min(self.sessions, key=self.sessions.__getitem__)]
        session = secrets.token_urlsafe(32)
        self.sessions[session] = now + SESSION_TTL_S
        return session

    def valid_session(self, session: str | None) -> bool:
        if not session:
            return False
        expiry = self.sessions.get(session)
        if expiry is None:
            return False
        if expiry <= time.monotonic():
            del self.sessions[session]
            return False
        return True

    def end_session(self, session: str | None) -> None:
        if session:
            self.sessions.pop(session, None)

    def _recent(self, address: str) -> deque[float]:
        times = self.failures.get(address, deque())
        cutoff = time.monotonic() - FAILURE_WINDOW_S
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def locked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        times = self._recent(address)
        if len(times) < MAX_FAILURES:
            return 0.0
        return max(1.0, times[0] + FAILURE_WINDOW_S - time.monotonic())

    def failed(self, address: str) -> int:
        if address not in self.failures and len(self.failures) >= MAX_TRACKED_ADDRESSES:
            cutoff = time.monotonic() - FAILURE_WINDOW_S
            self.failures = {a: t for a, t in self.failures.items() if t and t[-1] > cutoff}
            if len(self.failures) >= MAX_TRACKED_ADDRESSES:  # a flood of addresses: forget the oldest half
                for a in sorted(self.failures, key=lambda a: self.failures[a][-1])[:MAX_TRACKED_ADDRESSES // 2]:
                    del self.failures[a]
        times = self._recent(address)
        times.append(time.monotonic())
        self.failures[address] = times
        return len(times)


AUTH = web.AppKey("auth", AuthState)


def _origin_of(scheme: str, host: str) -> tuple[str, int | None] | None:
    try:
        url = URL.build(scheme=scheme, authority=host)
    except (ValueError, TypeError):
        return None
    return (url.host or "").lower(), url.port


def _same_origin(request: web.Request, origin: str) -> bool:
    """``Origin`` names this server: same host and port as the request's ``Host``. The scheme is not compared, so
    that a TLS-terminating proxy in front (https outside, http here) still works; host and port are what a
    cross-site page cannot choose."""
    try:
        theirs = URL(origin)
    except ValueError:
        return False
    if not theirs.scheme or not theirs.host:
        return False
    own = _origin_of(theirs.scheme, request.host)  # the request's Host, read with the Origin's default port
    return own is not None and own == ((theirs.host or "").lower(), theirs.port)


def cross_origin(request: web.Request) -> str | None:
    """Why this request comes from another site's page, or None when it does not.

    Browsers send ``Origin: null`` instead of the page's origin on the app's own POSTs because the pages are served
    with ``Referrer-Policy: no-referrer``; ``Sec-Fetch-Site`` (which no script can set) then tells whether the
    request really is same-origin. A request with neither header is not a browser's cross-site request."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site[:40]}"
    if origin is None:
        return None
    if origin == "null":
        return None if site == "same-origin" else "Origin: null"
    return None if _same_origin(request, origin) else f"Origin: {origin[:200]}"


@web.middleware
async def same_origin(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method in UNSAFE_METHODS:
        why = cross_origin(request)
        if why is not None:
            logger.warning("[auth] refused %s %s from %s: cross-origin request (%s)", request.method,
                           request.path, request.remote, why)
            return error_response(403, "cross-origin requests are not allowed")
    response: web.StreamResponse = await handler(request)
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _wants_html(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _matches(token: str, given: str) -> bool:
    return hmac.compare_digest(token.encode(), given.encode("utf-8", "surrogateescape"))


def _unauthorized(message: str, error: str | None = None) -> web.Response:
    challenge = 'Bearer realm="face-streamer"' + (f', error="{error}"' if error else "")
    response = error_response(401, message)
    response.headers["WWW-Authenticate"] = challenge
    return response


def _too_many(address: str, wait_s: float) -> web.Response:
    return error_response(429, f"too many failed attempts from {address}; try again in {wait_s:.0f} s",
                          retry_after=int(wait_s + 0.999))


def authenticated(request: web.Request) -> bool:
    """Whether this request may see what the token protects (always, when there is no token). For routes that
    answer everyone but say more to those who hold the token; a wrong bearer token counts as a failure here too,
    so such a route is no way around the limit on guesses."""
    token = request.app[CONFIG].token
    state = request.app[AUTH]
    if token is None or state.valid_session(request.cookies.get(COOKIE)):
        return True
    given = _bearer(request)
    if given is None:
        return False
    address = request.remote or "unknown"
    if state.locked_for(address):
        return False
    if _matches(token, given):
        return True
    state.failed(address)
    logger.warning("[auth] wrong bearer token from %s for %s %s", address, request.method, request.path)
    return False


@web.middleware
async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
    token = request.app[CONFIG].token
    if token is None or request.path in PUBLIC_PATHS:
        response: web.StreamResponse = await handler(request)
        return response
    state = request.app[AUTH]
    if state.valid_session(request.cookies.get(COOKIE)):
        response = await handler(request)
        return response
    given = _bearer(request)
    if given is not None:
        address = request.remote or "unknown"
        wait_s = state.locked_for(address)
        if wait_s:
            return _too_many(address, wait_s)
        if _matches(token, given):
            response = await handler(request)
            return response
        count = state.failed(address)
        logger.warning("[auth] wrong bearer token from %s for %s %s (%d failure(s) in %.0f s)", address,
                       request.method, request.path, count, FAILURE_WINDOW_S)
        return _unauthorized("the access token is wrong", "invalid_token")
    if _wants_html(request):
        target = request.rel_url.path_qs
        return _see_other("/login" + (f"?next={quote(target, safe='/')}" if target != "/" else ""))
    return _unauthorized("this server needs an access token: log in at /login, or send Authorization: Bearer TOKEN")


def _next_path(value: str | None) -> str:
    """Where to go after logging in: only a path on this server (no //host, no scheme), else /."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or any(
            ord(c) < 0x20 for c in value):
        return "/"
    return value


async def _login_page(status: int = 200, error: str | None = None, next_path: str = "/") -> web.Response:
    page = (WEB_DIR / "login.html").read_text(encoding="utf-8")
    if error:
        page = page.replace(LOGIN_ERROR_SLOT, f'<p id="login-error" class="inline-error" role="alert">'
                                              f"{html.escape(error)}</p>")
    page = page.replace('name="next" value="/"', f'name="next" value="{html.escape(next_path)}"')
    return web.Response(text=page, status=status, content_type="text/html", headers={"Cache-Control": "no-store"})


async def get_login(request: web.Request) -> web.StreamResponse:
    next_path = _next_path(request.query.get("next"))
    token = request.app[CONFIG].token
    if token is None or request.app[AUTH].valid_session(request.cookies.get(COOKIE)):
        return _see_other(next_path)
    return await _login_page(next_path=next_path)


async def post_login(request: web.Request) -> web.StreamResponse:
    config, state = request.app[CONFIG], request.app[AUTH]
    if config.token is None:
        return _see_other("/")
    # A browser always sends Origin on a form POST; the same_origin middleware has refused a foreign one already.
    address = request.remote or "unknown"
    form = await request.post()
    next_path = _next_path(str(form.get("next", "/")))
    wait_s = state.locked_for(address)
    if wait_s:
        logger.warning("[auth] login refused for %s: too many failures (wait %.0f s)", address, wait_s)
        response = await _login_page(429, f"Too many failed attempts. Try again in {wait_s:.0f} seconds.", next_path)
        response.headers["Retry-After"] = str(int(wait_s + 0.999))
        return response
    given = form.get("token")
    if not isinstance(given, str) or not _matches(config.token, given.strip()):
        count = state.failed(address)
        logger.warning("[auth] failed login from %s (%d failure(s) in %.0f s)", address, count, FAILURE_WINDOW_S)
        return await _login_page(401, "That access token is not right.", next_path)
    session = state.new_session()
    logger.info("[auth] login from %s", address)
    response = _see_other(next_path)
    response.set_cookie(COOKIE, session, max_age=SESSION_TTL_S, path="/", httponly=True, samesite="Strict",
                        secure=config.tls_cert is not None)
    return response


async def post_logout(request: web.Request) -> web.StreamResponse:
    request.app[AUTH].end_session(request.cookies.get(COOKIE))
    response = _see_other("/login")
    response.del_cookie(COOKIE, path="/", samesite="Strict", httponly=True,
                        secure=request.app[CONFIG].tls_cert is not None)
    return response


def setup(app: web.Application) -> None:
    """The state and the login routes; the middlewares go into the Application's list (see create_app)."""
    app[AUTH] = AuthState()
    app.router.add_get("/login", get_login)
    app.router.add_post("/login", post_login)
    app.router.add_post("/logout", post_logout)
