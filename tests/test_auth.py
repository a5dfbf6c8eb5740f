"""Access control and browser-facing hardening (SECURITY.md): the optional access token (bearer header, or the login
page's session cookie), the same-origin guard on state-changing requests, no CORS, the security headers, the login
rate limit; and one real browser (Debian's Chromium, driven by Playwright) that logs in through the page, uses the
app with its cookie, and logs out.

The HTTP tests run the real app in process (aiohttp's test server on 127.0.0.1, the real detector preloaded); the
browser test runs `python -m streamer serve --token-file ...` as a process on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import require_testdata

from models.centerface import CenterFaceDetector
from streamer.server import auth
from streamer.server.app import create_app
from streamer.server.config import ServerConfig

TOKEN = "correct-horse-battery-staple-42"
EVIL = "http://evil.example"


async def _client(config: ServerConfig, detector: CenterFaceDetector) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(config, detector), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def open_client(detector: CenterFaceDetector, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    client = await _client(ServerConfig(jobs_dir=tmp_path / "jobs"), detector)
    yield client
    await client.close()


@pytest.fixture
async def token_client(detector: CenterFaceDetector, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    client = await _client(ServerConfig(jobs_dir=tmp_path / "jobs", token=TOKEN), detector)
    yield client
    await client.close()


def own_origin(client: TestClient[Any, Any]) -> str:
    return f"http://127.0.0.1:{client.port}"


# ------------------------------------------------------------------------------------------ headers, CORS, CSRF


async def test_security_headers_and_no_cors(open_client: TestClient[Any, Any]) -> None:
    for path in ("/", "/config", "/healthz", "/metrics", "/static/app.js", "/no-such-page"):
        response = await open_client.get(path, headers={"Origin": EVIL})
        h = response.headers
        assert "Access-Control-Allow-Origin" not in h, path
        assert "script-src 'self'" in h["Content-Security-Policy"] and "frame-ancestors 'none'" in \
            h["Content-Security-Policy"], path
        assert h["X-Content-Type-Options"] == "nosniff", path
        assert h["Referrer-Policy"] == "no-referrer", path
        assert h["X-Frame-Options"] == "DENY", path
        assert h["Cross-Origin-Opener-Policy"] == "same-origin", path
        assert h["Cross-Origin-Resource-Policy"] == "same-origin", path
        assert "camera=(self)" in h["Permissions-Policy"] and "geolocation=()" in h["Permissions-Policy"], path
        if not path.startswith("/static/"):
            assert h["Cache-Control"] == "no-store", path
    # A CORS preflight gets no grant: the browser then never sends the cross-origin request.
    for path in ("/offer", "/jobs", "/whep/lobby"):
        response = await open_client.options(path, headers={
            "Origin": EVIL, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert response.status >= 400, (path, response.status)
        assert not any(k.lower().startswith("access-control-") for k in response.headers), dict(response.headers)


async def test_cross_origin_state_changes_are_refused_without_a_token(open_client: TestClient[Any, Any]) -> None:
    """Another web site cannot make a visitor's browser open sessions, upload or delete (CSRF), token or not."""
    offer = {"sdp": "v=0\r\n", "type": "offer"}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/offer", {"json": offer}), ("POST", "/jobs", {"data": b"x"}), ("DELETE", "/jobs/abc", {}),
        ("POST", "/sessions/abc/settings", {"json": {}}), ("DELETE", "/sessions/abc", {}), ("PATCH", "/jobs/abc", {}),
        ("POST", "/whep/lobby", {"data": "v=0", "headers": {"Content-Type": "application/sdp"}})]
    for method, path, kwargs in requests:
        headers = {**kwargs.pop("headers", {}), "Origin": EVIL}
        response = await open_client.request(method, path, headers=headers, **kwargs)
        assert response.status == 403, (method, path, response.status)
        assert (await response.json())["error"] == "cross-origin requests are not allowed"
    null = await open_client.post("/offer", json=offer, headers={"Origin": "null"})  # a sandboxed frame
    assert null.status == 403
    for site in ("cross-site", "same-site"):  # same-site: another port or subdomain, still another origin
        marked = await open_client.post("/offer", json=offer, headers={"Sec-Fetch-Site": site})
        assert marked.status == 403, site
    # The page's own POSTs: Referrer-Policy no-referrer makes Chromium send Origin: null with Sec-Fetch-Site.
    own_null = await open_client.post("/offer", json=offer, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert own_null.status == 400
    # The same request from the page itself (its own origin) or from a non-browser (no Origin) gets through the
    # guard to the handler, which answers on the merits (400: this SDP has no video).
    same = await open_client.post("/offer", json=offer, headers={"Origin": own_origin(open_client)})
    assert same.status == 400, await same.text()
    plain = await open_client.post("/offer", json=offer)
    assert plain.status == 400
    assert (await open_client.get("/healthz")).status == 200
    assert (await open_client.get("/sessions/abc", headers={"Origin": EVIL})).status == 404  # reads stay readable


# ------------------------------------------------------------------------------------------------- the token


async def test_without_a_token_nothing_but_healthz_answers(token_client: TestClient[Any, Any]) -> None:
    health = await token_client.get("/healthz")
    assert health.status == 200 and (await health.json())["ready"] is True
    for path in ("/config", "/metrics", "/cameras", "/jobs", "/sessions/x", "/static/app.js", "/no-such-page"):
        response = await token_client.get(path)
        assert response.status == 401, (path, response.status)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), path
        assert "access token" in (await response.json())["error"]
    offer = await token_client.post("/offer", json={"sdp": "v=0", "type": "offer"})
    assert offer.status == 401
    whep = await token_client.post("/whep/lobby", data="v=0", headers={"Content-Type": "application/sdp"})
    assert whep.status == 401
    # A browser asking for a page is sent to the login page, and back where it wanted to go afterwards.
    page = await token_client.get("/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login"
    deep = await token_client.get("/cameras?x=1", headers={"Accept": "text/html,*/*"}, allow_redirects=False)
    assert deep.status == 303 and deep.headers["Location"] == "/login?next=/cameras%3Fx%3D1"
    login = await token_client.get("/login")
    assert login.status == 200 and 'action="/login"' in await login.text()
    assert (await token_client.get("/static/style.css")).status == 200  # what the login page itself needs


async def test_bearer_token(token_client: TestClient[Any, Any]) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    config = await token_client.get("/config", headers=good)
    assert config.status == 200 and (await config.json())["auth"] is True
    metrics = await token_client.get("/metrics", headers=good)
    assert metrics.status == 200 and "streamer_frames_in_total" in await metrics.text()
    assert (await token_client.get("/static/app.js", headers=good)).status == 200
    wrong = await token_client.get("/config", headers={"Authorization": "Bearer " + TOKEN[:-1]})
    assert wrong.status == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = await token_client.get("/config", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401


async def test_login_cookie_and_logout(token_client: TestClient[Any, Any]) -> None:
    origin = {"Origin": own_origin(token_client)}
    wrong = await token_client.post("/login", data={"token": "not-the-token"}, headers=origin,
                                    allow_redirects=False)
    assert wrong.status == 401 and "not right" in await wrong.text()
    assert "Set-Cookie" not in wrong.headers
    foreign = await token_client.post("/login", data={"token": TOKEN}, headers={"Origin": EVIL},
                                      allow_redirects=False)
    assert foreign.status == 403 and "Set-Cookie" not in foreign.headers

    ok = await token_client.post("/login", data={"token": TOKEN, "next": "/#upload"}, headers=origin,
                                 allow_redirects=False)
    assert ok.status == 303 and ok.headers["Location"] == "/#upload"
    set_cookie = ok.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{auth.COOKIE}=")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain http here: a Secure cookie would never come back
    assert TOKEN not in set_cookie  # a random session id, never the token
    session = ok.cookies[auth.COOKIE].value
    assert len(session) >= 32

    # The cookie opens everything; the browser sends it on every same-origin fetch.
    assert (await token_client.get("/config")).status == 200
    assert (await token_client.get("/", headers={"Accept": "text/html"})).status == 200
    already = await token_client.get("/login?next=/cameras", allow_redirects=False)
    assert already.status == 303 and already.headers["Location"] == "/cameras"
    # An open redirect is not possible through next=.
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        again = await token_client.post("/login", data={"token": TOKEN, "next": target}, headers=origin,
                                        allow_redirects=False)
        assert again.headers["Location"] == "/", target
    session = again.cookies[auth.COOKIE].value  # each login is a session of its own; this one is logged out

    out = await token_client.post("/logout", headers=origin, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login"
    assert f"{auth.COOKIE}=\"\"" in out.headers["Set-Cookie"] or f"{auth.COOKIE}=;" in out.headers["Set-Cookie"]
    assert (await token_client.get("/config")).status == 401
    # The old session value is dead on the server too, not only forgotten by this browser.
    replay = await token_client.get("/config", cookies={auth.COOKIE: session})
    assert replay.status == 401
    forged = await token_client.get("/config", cookies={auth.COOKIE: TOKEN})
    assert forged.status == 401


async def test_secure_cookie_with_tls(detector: CenterFaceDetector, tmp_path: Path) -> None:
    # The certificate is only loaded by `serve`; the app only needs to know that TLS is on.
    config = ServerConfig(jobs_dir=tmp_path / "jobs", token=TOKEN, tls_cert=tmp_path / "c.pem",
                          tls_key=tmp_path / "k.pem")
    client = await _client(config, detector)
    try:
        ok = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
        assert ok.status == 303 and "Secure" in ok.headers["Set-Cookie"]
    finally:
        await client.close()


async def test_failed_logins_are_rate_limited_and_logged_without_the_token(
        token_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamer.server.auth")
    guesses = [f"guess-number-{n:04d}" for n in range(auth.MAX_FAILURES)]
    for guess in guesses:
        response = await token_client.post("/login", data={"token": guess}, allow_redirects=False)
        assert response.status == 401
    # Locked out: even the right token is refused now, or guessing would go on at full speed.
    locked = await token_client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert locked.status == 429 and int(locked.headers["Retry-After"]) >= 1
    assert "Set-Cookie" not in locked.headers and "Too many failed attempts" in await locked.text()
    bearer = await token_client.get("/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status == 429
    assert (await token_client.get("/healthz")).status == 200
    logged = caplog.text
    assert logged.count("failed login from 127.0.0.1") == auth.MAX_FAILURES
    assert TOKEN not in logged and not any(g in logged for g in guesses)


def test_state_limits_its_memory() -> None:
    state = auth.AuthState()
    for n in range(auth.MAX_TRACKED_ADDRESSES + 10):
        state.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(state.failures) <= auth.MAX_TRACKED_ADDRESSES
    sessions = [state.new_session() for _ in range(auth.MAX_SESSIONS + 5)]
    assert len(state.sessions) == auth.MAX_SESSIONS
    assert not state.valid_session(sessions[0]) and state.valid_session(sessions[-1])


# ------------------------------------------------------------------------------------------- configuration


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("STREAMER_TOKEN", "from-the-environment")
    args = argparse.Namespace(token=None, token_file=None)
    assert auth.token_from_args(args) == "from-the-environment"
    assert auth.token_from_args(argparse.Namespace(token="from-the-option", token_file=None)) == "from-the-option"
    assert auth.token_from_args(argparse.Namespace(token=None, token_file=secret)) == TOKEN
    with pytest.raises(ValueError, match="not both"):
        auth.token_from_args(argparse.Namespace(token="x", token_file=secret))
    with pytest.raises(ValueError, match="cannot read"):
        auth.token_from_args(argparse.Namespace(token=None, token_file=tmp_path / "missing"))
    monkeypatch.delenv("STREAMER_TOKEN")
    assert auth.token_from_args(args) is None
    for bad in ("short", "has space inside", "tab\there-and-long", "ünïcödé-token"):
        with pytest.raises(ValueError, match="access token"):
            ServerConfig(token=bad)
    assert TOKEN not in repr(ServerConfig(token=TOKEN))


# ------------------------------------------------------------------------------------------- a real browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--no-first-run")


@pytest.mark.browser
@pytest.mark.timeout(300)
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_browser_logs_in_uses_the_app_and_logs_out(detector: CenterFaceDetector, tmp_path: Path,
                                                   artifacts_dir: Path) -> None:
    """What a user does: open the address, get the login page, type a wrong then the right token, land in the app,
    anonymize a photo through the Upload view (XHR upload, Server-Sent Events and the download all ride on the
    cookie), then log out and be asked for the token again."""
    import cv2
    import numpy as np
    from test_jobs import Service

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    photo = require_testdata("images", "2008_002470.jpg")
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    srv = Service(tmp_path / "jobs", ("--token-file", str(secret))).start(artifacts_dir / "auth-browser-server.log")
    console: list[str] = []
    page_errors: list[str] = []
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS),
                                                 headless=True)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                              locale="en-US")
                page = context.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: page_errors.append(str(e)))

                page.goto(srv.base + "/#upload")
                assert page.url.startswith(srv.base + "/login"), page.url
                page.fill("#token", "not-the-token")
                page.click("#login-submit")
                page.wait_for_selector("#login-error:not([hidden])", timeout=10_000)
                assert "not right" in page.inner_text("#login-error")
                page.screenshot(path=str(artifacts_dir / "auth-login-error.png"), full_page=True)

                page.fill("#token", TOKEN)
                page.click("#login-submit")
                page.wait_for_url(srv.base + "/", timeout=10_000)
                page.wait_for_selector('#service-status[data-ready="true"]', timeout=30_000)
                page.wait_for_selector("#logout:not([hidden])", timeout=10_000)  # /config answered with the cookie
                assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session

                page.click("#tab-upload")
                page.wait_for_selector("#view-upload:not([hidden])", timeout=10_000)
                page.set_input_files("#upload-input", str(photo))
                page.wait_for_selector(f'#job-list li[data-file="{photo.name}"][data-state="done"]', timeout=120_000)
                with page.expect_download() as info:
                    page.locator(f'#job-list li[data-file="{photo.name}"] a.job-download').click()
                saved = tmp_path / "download.jpg"
                info.value.save_as(str(saved))
                image, original = cv2.imread(str(saved)), cv2.imread(str(photo))
                assert image is not None and original is not None and image.shape == original.shape
                assert not np.array_equal(image, original)  # the anonymized file, not the upload
                page.screenshot(path=str(artifacts_dir / "auth-logged-in.png"), full_page=True)

                page.click("#logout button")
                page.wait_for_url(srv.base + "/login", timeout=10_000)
                status = page.evaluate("fetch('/config').then((r) => r.status)")
                assert status == 401
                page.goto(srv.base + "/")
                assert page.url == srv.base + "/login"
            finally:
                browser.close()
    finally:
        srv.stop()
    (artifacts_dir / "auth-browser-console.log").write_text("\n".join(console))
    assert not page_errors, page_errors
    log = (artifacts_dir / "auth-browser-server.log").read_text(errors="replace")
    assert "failed login from 127.0.0.1" in log and TOKEN not in log and "not-the-token" not in log
