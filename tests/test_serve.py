"""`python -m streamer serve` as the quick start runs it: the page, and readiness with the real provider."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path, timeout_s: float = 60) -> None:
    """Until ``base``/healthz answers 200; fails with the server's log if it exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"server did not become ready within {timeout_s} s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    # The server's log goes to a file: a pipe nobody reads fills up and stops the server mid-test.
    log = tmp_path_factory.mktemp("serve") / "server.log"
    # The port from $STREAMER_PORT, as the image and compose set it.
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--device", "cpu"], cwd=REPO_ROOT,
                                env={**os.environ, "STREAMER_PORT": str(port)}, stdout=subprocess.DEVNULL,
                                stderr=sink)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, log)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_healthz_reports_ready_and_the_provider_in_use(server: str) -> None:
    with urllib.request.urlopen(server + "/healthz", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "ok" and body["ready"] is True and body["error"] is None
    assert body["provider"] == "CPUExecutionProvider" and body["sessions"] == 0


def health_probe(port: int | str) -> subprocess.CompletedProcess[str]:
    """The container's HEALTHCHECK command, pointed at ``port`` as the image's $STREAMER_PORT does."""
    return subprocess.run([sys.executable, "-m", "streamer.healthcheck"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, "STREAMER_PORT": str(port)})


def test_the_container_health_check_follows_the_service(server: str) -> None:
    ready = health_probe(server.rsplit(":", 1)[1])
    assert ready.returncode == 0 and "/healthz 200: ok" in ready.stdout, ready.stdout + ready.stderr
    nobody = health_probe(free_port())
    assert nobody.returncode == 1 and "no answer on 127.0.0.1" in nobody.stdout
    wrong = health_probe("http")
    assert wrong.returncode == 1 and "is not a TCP port" in wrong.stdout


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


@pytest.mark.parametrize("name", ["__init__.py", "__pycache__/__init__.cpython-311.pyc", "nope.js"])
def test_only_the_pages_files_are_served(server: str, name: str) -> None:
    """The page's folder is also a Python package (streamer.web): its marker and bytecode are not the page."""
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server}/static/{name}", timeout=5)
    assert info.value.code == 404


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1, made with `cryptography` (aiortc's own dependency)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_serves_https(tmp_path: Path) -> None:
    """Browsers give camera access only on https (or localhost): --tls-cert/--tls-key serve the page on https."""
    cert, key = self_signed(tmp_path)
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(port), "--device", "cpu",
                                 "--tls-cert", str(cert), "--tls-key", str(key)],
                                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=sink)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2,
                                            context=context) as response:
                    assert json.load(response)["ready"] is True
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "https server did not become ready"
                time.sleep(0.2)
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain http on the TLS port fails
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # The container's health check finds the service on https by itself.
        probe = health_probe(port)
        assert probe.returncode == 0, probe.stdout + probe.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
