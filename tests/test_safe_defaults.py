"""Safe by default (issue #15): no token, no listening beyond loopback; only this server's own Host names are
served (DNS rebinding); the public /healthz says ready or not and nothing about cameras; hostile offers and slow
bodies are refused without stalling the event loop.

The HTTP tests run the real app in process (aiohttp's test server on 127.0.0.1, the real detector preloaded);
the start-up refusal, the slow body and the hostile offers go to a real ``python -m streamer serve`` process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import REPO_ROOT
from test_auth import _client
from test_serve import free_port

from models.centerface import CenterFaceDetector
from streamer.__main__ import build_parser
from streamer.camera_config import CameraSettings
from streamer.server import auth, hosts
from streamer.server import jobs as server_jobs
from streamer.server.app import check_exposure, config_from_args
from streamer.server.bodies import BODY_TIMEOUT_S
from streamer.server.config import ServerConfig
from streamer.server.hostnames import is_loopback
from streamer.server.offer import MAX_MEDIA_SECTIONS, MAX_SDP_BYTES
from streamer.server.turn import TurnRelay

TOKEN = "correct-horse-battery-staple-42"
CAMERA_URL = "rtsp://admin:s3cr%40t'\\pw@192.168.77.5:8554/door?token=abc123"


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STREAMER_TOKEN", "STREAMER_TOKEN_FILE", "STREAMER_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------ 1. a token off loopback


def test_serve_refuses_a_network_address_without_a_token(no_token_env: None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    done = subprocess.run([sys.executable, "-m", "streamer", "serve", "--host", "0.0.0.0", "--port",
                           str(free_port()), "--device", "cpu"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "without an access token" in done.stderr and "--token-file" in done.stderr, done.stderr
    assert "--insecure-no-token" in done.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2", "127.1"])
def test_loopback_needs_no_token(no_token_env: None, host: str) -> None:
    check_exposure(config_from_args(serve_args("--host", host)))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.10", "streamer.lan", "cams.localhost.example"])
def test_every_other_address_needs_a_token(no_token_env: None, host: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without an access token"):
        check_exposure(config_from_args(serve_args("--host", host)))
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    check_exposure(config_from_args(serve_args("--host", host, "--token-file", str(secret))))


def test_the_opt_out_is_explicit_and_loud(no_token_env: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_exposure(config_from_args(serve_args("--host", "0.0.0.0", "--insecure-no-token")))
    assert "NO ACCESS CONTROL" in caplog.text


def test_the_token_file_comes_from_the_environment_too(no_token_env: None, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text(f"  {TOKEN}\n")
    monkeypatch.setenv("STREAMER_TOKEN_FILE", str(secret))
    assert config_from_args(serve_args("--host", "0.0.0.0")).token == TOKEN
    monkeypatch.setenv("STREAMER_TOKEN", "another-token-123")
    with pytest.raises(ValueError, match="not both"):
        config_from_args(serve_args())
    monkeypatch.delenv("STREAMER_TOKEN")
    secret.write_text("\n")  # an empty secret is a mistake, never "no token"
    with pytest.raises(ValueError, match="empty"):
        config_from_args(serve_args())
    monkeypatch.setenv("STREAMER_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read"):
        config_from_args(serve_args())


# ------------------------------------------------------------------------------------ 2. Host names (rebinding)


@pytest.fixture
async def open_client(detector: CenterFaceDetector, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    client = await _client(ServerConfig(jobs_dir=tmp_path / "jobs", allowed_hosts=("cams.example.org",)), detector)
    yield client
    await client.close()


async def test_a_rebound_host_name_is_refused_before_any_route(open_client: TestClient[Any, Any]) -> None:
    """The attack: the attacker's name resolves to this server, so Origin and Host agree and are both theirs."""
    port = open_client.port
    rebound = {"Host": f"rebind.attacker.example:{port}", "Origin": f"http://rebind.attacker.example:{port}"}
    for method, path in (("GET", "/config"), ("GET", "/jobs"), ("GET", "/"), ("GET", "/healthz"),
                         ("POST", "/jobs"), ("POST", "/offer"), ("GET", "/no-such-route")):
        response = await open_client.request(method, path, headers=rebound, data=b"x" if method == "POST" else None)
        assert response.status == 421, (method, path, response.status)
        assert "host name" in (await response.json())["error"]
        assert response.headers["X-Frame-Options"] == "DENY"  # still every security header
    assert open_client.app[hosts.HOSTS].allows(f"rebind.attacker.example:{port}") is False


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST.:{port}", "[::1]:{port}",
                                  "cams.example.org:{port}", "Cams.Example.Org"])
async def test_own_names_are_served(open_client: TestClient[Any, Any], host: str) -> None:
    origin = "http://" + host.format(port=open_client.port)
    response = await open_client.get("/config", headers={"Host": host.format(port=open_client.port),
                                                         "Origin": origin})
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("header", ["", "bad host", "[::1", "a:b:c", "example.org:port", "[::1]x"])
async def test_malformed_host_headers_are_refused(open_client: TestClient[Any, Any], header: str) -> None:
    response = await open_client.get("/healthz", headers={"Host": header})
    assert response.status in (400, 421), header


def test_a_wildcard_listener_answers_to_this_machines_addresses() -> None:
    policy = hosts.HostPolicy("0.0.0.0")
    mine = sorted(policy.addresses)
    assert mine and all(policy.allows(a if ":" not in a else f"[{a}]") for a in mine), mine
    assert policy.allows(socket.gethostname())
    assert not policy.allows("203.0.113.9") and not policy.allows("rebind.attacker.example")
    specific = hosts.HostPolicy("10.77.0.1", ("tv.example",))
    assert specific.allows("10.77.0.1:9002") and specific.allows("tv.example:443")
    others = [a for a in mine if not is_loopback(a) and a != "10.77.0.1"]
    assert others and not any(specific.allows(a if ":" not in a else f"[{a}]") for a in others), others


# ------------------------------------------------------------------------------------ 3. a quiet /healthz


@pytest.fixture
async def camera_client(detector: CenterFaceDetector, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    camera = CameraSettings("frontdoor", CAMERA_URL)
    client = await _client(ServerConfig(jobs_dir=tmp_path / "jobs", token=TOKEN, cameras=(camera,)), detector)
    yield client
    await client.close()


async def test_public_healthz_says_ready_and_nothing_about_cameras(camera_client: TestClient[Any, Any]) -> None:
    response = await camera_client.get("/healthz")
    text = await response.text()
    assert response.status == 200
    assert json.loads(text) == {"status": "ok", "ready": True, "reason": None}
    for secret in ("frontdoor", "192.168.77", "8554", "admin", "s3cr", "abc123", "provider", "sessions"):
        assert secret not in text, secret
    full = await camera_client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    body = await full.json()
    assert body["provider"] == "CPUExecutionProvider" and set(body["cameras"]) == {"frontdoor"}
    assert "s3cr" not in await full.text()


async def test_healthz_is_no_way_around_the_guess_limit(camera_client: TestClient[Any, Any]) -> None:
    for _ in range(auth.MAX_FAILURES):
        response = await camera_client.get("/healthz", headers={"Authorization": "Bearer wrong-guess-123"})
        assert response.status == 200 and "cameras" not in await response.json()
    locked = await camera_client.get("/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert locked.status == 429  # the guesses through /healthz counted


# ------------------------------------------------------------------------------------ 6. hostile bodies


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(port), "--device", "cpu"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the server exited"
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server was not ready within 120 s"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _sdp(sections: int, candidates: int = 0, extra: str = "") -> str:
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    media = ("m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n"
             "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n"
             "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n")
    lines = [f"a=candidate:{i} 1 udp 2130706431 10.0.{i // 250}.{i % 250} {10000 + i} typ host\r\n"
             for i in range(candidates)]
    return head + "".join(f"{media}a=mid:{i}\r\n{extra}" for i in range(sections)) + "".join(lines)


async def _healthz_latency(base: str, stop: asyncio.Event) -> list[float]:
    took = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(base + "/healthz") as response:
                assert response.status == 200
            took.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    return took


async def test_hostile_offers_are_refused_and_the_loop_stays_responsive(server: str) -> None:
    bomb = _sdp(800)  # the reported one: ~230 KB, 800 media sections
    assert 200_000 < len(bomb) < 256 * 1024
    codecs = "".join(f"a=rtpmap:{96 + i % 30} VP8/90000\r\n" for i in range(100)) + "a=rtcp-fb:* x\r\n" * 850
    assert len(_sdp(MAX_MEDIA_SECTIONS + 1)) < MAX_SDP_BYTES and len(_sdp(1, extra=codecs)) < MAX_SDP_BYTES
    cases = [  # (url, body, content type, the reason the answer must give)
        ("/offer", json.dumps({"sdp": bomb, "type": "offer"}), "application/json", "too large"),
        ("/offer", json.dumps({"sdp": _sdp(MAX_MEDIA_SECTIONS + 1), "type": "offer"}), "application/json",
         "media sections"),
        ("/offer", json.dumps({"sdp": _sdp(1, candidates=200), "type": "offer"}), "application/json",
         "ICE candidates"),
        # aiortc's codec matching grows with rtpmap x rtcp-fb lines: 600 x 1,200 in 64 KB held the loop 7 s.
        ("/offer", json.dumps({"sdp": _sdp(1, extra=codecs), "type": "offer"}), "application/json", "rtpmap lines"),
        ("/offer", json.dumps({"sdp": _sdp(2, extra="a=rtcp-fb:* nack\r\n" * 300), "type": "offer"}),
         "application/json", "rtcp-fb lines"),
        ("/offer", json.dumps({"sdp": _sdp(8, extra="a=extmap-allow-mixed\r\n" * 150), "type": "offer"}),
         "application/json", "lines"),
    ]
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(_healthz_latency(server, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                for path, body, kind, reason in cases:
                    async with session.post(server + path, data=body, headers={"Content-Type": kind}) as response:
                        assert response.status == 400, await response.text()
                        assert reason in (await response.json())["error"]
    finally:
        stop.set()
        took = await watcher
    assert took and max(took) < 0.5, f"/healthz took up to {max(took):.2f} s while offers were refused"


def test_a_slow_body_is_cut_off(server: str) -> None:
    """A byte a second never completes a body: the server answers 408 and closes the connection."""
    port = int(server.rsplit(":", 1)[1])
    received, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
        conn.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded"
                     b"\r\nContent-Length: 1000\r\n\r\nt")
        started = time.monotonic()
        while time.monotonic() - started < BODY_TIMEOUT_S * 6:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    conn.sendall(b"o")  # keep trickling, as the attacker would
                continue
            if not chunk:
                closed = True
                break
            received += chunk
        took = time.monotonic() - started
    assert closed, f"the server kept the slow connection open for {took:.0f} s"
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert took >= BODY_TIMEOUT_S * 0.9


# ------------------------------------------------------------------------------------ 7. TURN credentials in /config


async def test_config_hands_out_short_lived_turn_credentials(detector: CenterFaceDetector, tmp_path: Path) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    relay = TurnRelay(("turn:relay.example:3478", "turn:relay.example:3478?transport=tcp"), secret, 600)
    client = await _client(ServerConfig(jobs_dir=tmp_path / "jobs", turn=relay), detector)
    try:
        response = await client.get("/config")
        body = await response.json()
        assert response.headers["Cache-Control"] == "no-store"
    finally:
        await client.close()
    (entry,) = body["iceServers"]
    assert entry["urls"] == list(relay.urls)
    expiry, name = entry["username"].split(":")
    assert name == "streamer" and 0 < int(expiry) - time.time() <= 600
    digest = hmac.new(secret.encode(), entry["username"].encode(), hashlib.sha1).digest()
    assert entry["credential"] == base64.b64encode(digest).decode()
    assert secret not in json.dumps(body)


def test_turn_settings_are_checked_at_start(no_token_env: None, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STREAMER_TURN_URLS", "STREAMER_TURN_SECRET", "STREAMER_TURN_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert config_from_args(serve_args()).turn is None
    with pytest.raises(ValueError, match="needs the relay's secret"):
        config_from_args(serve_args("--turn-url", "turn:relay.example:3478"))
    monkeypatch.setenv("STREAMER_TURN_SECRET", "short")
    with pytest.raises(ValueError):
        config_from_args(serve_args("--turn-url", "turn:relay.example:3478"))
    secret = tmp_path / "turn.secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.delenv("STREAMER_TURN_SECRET")
    relay = config_from_args(serve_args("--turn-url", "turn:relay.example:3478", "--turn-secret-file", str(secret),
                                        "--turn-ttl", "120")).turn
    assert relay is not None and relay.ttl_s == 120 and "0123456789abcdef" not in repr(relay)
    with pytest.raises(ValueError, match="need --turn-url"):
        config_from_args(serve_args("--turn-secret-file", str(secret)))


@pytest.mark.parametrize("how", ["silent", "trickle"])
async def test_a_stalled_upload_is_cut_off_and_leaves_no_job(detector: CenterFaceDetector, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Uploads stream to disk past the body deadline; each window of 30 s (1 s here) must bring something, and at
    least 16 KiB/s: a few bytes now and then would otherwise hold a job slot for ever."""
    monkeypatch.setattr(server_jobs, "UPLOAD_CHUNK_TIMEOUT_S", 1.0)
    client = await _client(ServerConfig(jobs_dir=tmp_path / "jobs"), detector)
    trickle: asyncio.Task[None] | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        head = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
                b"Content-Type: video/mp4\r\n\r\n" + b"\0" * 4096)
        writer.write(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 10000000\r\n\r\n" + head)
        await writer.drain()

        async def drip() -> None:
            with contextlib.suppress(OSError):
                while True:
                    await asyncio.sleep(0.1)
                    writer.write(b"\1" * 256)  # 2.5 KiB/s: never silent for long, far below the minimum
                    await writer.drain()

        if how == "trickle":
            trickle = asyncio.ensure_future(drip())
        answer = await asyncio.wait_for(reader.read(), 60)  # read() returns once the server closes
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"stalled" in answer
        jobs = await client.get("/jobs")
        assert (await jobs.json())["jobs"] == []
        left = [p for p in (tmp_path / "jobs").rglob("*") if p.is_file()]
        assert left == [], left
    finally:
        if trickle is not None:
            trickle.cancel()
        await client.close()
