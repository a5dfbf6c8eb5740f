"""`python -m streamer serve` as the quick start runs it: the page, and readiness with the real provider."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(port), "--device", "cpu"],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        else:
            pytest.fail("server did not become ready within 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_healthz_reports_ready_and_the_provider_in_use(server: str) -> None:
    with urllib.request.urlopen(server + "/healthz", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "ok" and body["ready"] is True and body["error"] is None
    assert body["provider"] == "CPUExecutionProvider" and body["sessions"] == 0


def test_page_is_served_with_a_strict_csp(server: str) -> None:
    with urllib.request.urlopen(server + "/", timeout=5) as response:
        html = response.read().decode()
        csp = response.headers["Content-Security-Policy"]
    assert "Face Streamer" in html
    assert "default-src 'self'" in csp and "http" not in csp
    with urllib.request.urlopen(server + "/static/status.js", timeout=5) as response:
        assert b"/healthz" in response.read()


def test_unknown_path_is_404(server: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server + "/nope", timeout=5)
    assert info.value.code == 404
