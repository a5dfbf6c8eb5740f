"""Docker for the image tests (``pytest -m image``, run by ``scripts/images`` after it built the images).

- :func:`docker` runs the client (``$DOCKER``, else Debian's ``/usr/bin/docker``, the one ``scripts/images`` uses).
- :class:`Container` is a container started for a test: its state and health as Docker reports them, ``exec``,
  logs, and a removal that is safe twice.
- :func:`wire_into` gives a container started with ``--network none`` one end of the run's veth pair: the client
  stays in the run's namespace (10.77.0.2), the container answers on 10.77.0.1, and neither can reach anything
  else. Host networking would put the container's WebRTC candidates on the machine's real interfaces, which tests
  never use (see webrtc_support).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from testkit.netns import SERVER_ADDR, NetNamespace

DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")
CPU_IMAGE = "face-streamer:cpu"
GPU_IMAGE = "face-streamer:gpu"
# The Dockerfile's HEALTHCHECK start period: what the service promises to be ready within.
START_PERIOD_S = 120.0


class DockerError(RuntimeError):
    """A docker command failed."""


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # BuildKit, as scripts/images builds: only its cache is shared with those builds.
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if check and done.returncode != 0:
        raise DockerError(f"docker {' '.join(args[:3])} ... failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def missing(image: str) -> str | None:
    """Why the image tests cannot run against ``image`` here, or None."""
    try:
        if docker("info", check=False, timeout=60).returncode != 0:
            return f"no Docker engine answers {DOCKER} (scripts/images starts one)"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{DOCKER}: {exc}"
    if docker("image", "inspect", image, check=False).returncode != 0:
        return f"{image} is not built (scripts/images build)"
    return None


def unique_name(tag: str) -> str:
    return f"fs-test-{tag}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Container:
    def __init__(self, cid: str, name: str) -> None:
        self.id, self.name = cid, name

    @classmethod
    def run(cls, image: str, *command: str, tag: str, options: tuple[str, ...] = ()) -> Container:
        name = unique_name(tag)
        try:
            cid = docker("run", "-d", "--name", name, *options, image, *command).stdout.strip()
        except (DockerError, subprocess.TimeoutExpired):
            docker("rm", "-f", name, check=False)  # created but not started
            raise
        return cls(cid, name)

    def inspect(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(docker("inspect", self.id).stdout)
        return found[0]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.inspect()["State"]
        return state

    def health(self) -> str | None:
        health = self.state().get("Health")
        return str(health["Status"]) if health else None

    def wait_health(self, limit_s: float = 600) -> str:
        """Block until Docker's own verdict: "healthy", "unhealthy" (its start period and retries spent), or
        "exited". ``limit_s`` only keeps a hung engine from hanging the run; Docker decides, not this clock."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            state = self.state()
            if not state["Running"]:
                return "exited"
            status = state.get("Health", {}).get("Status")
            if status in ("healthy", "unhealthy"):
                return str(status)
            time.sleep(1)
        raise TimeoutError(f"{self.name}: Docker gave no health verdict in {limit_s:.0f} s")

    def wait_exit(self, limit_s: float = 600) -> int:
        done = docker("wait", self.id, timeout=limit_s)
        return int(done.stdout.strip())

    def exec(self, *command: str, check: bool = True, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return docker("exec", *(("-u", user) if user else ()), self.id, *command, check=check, timeout=120)

    def logs(self) -> str:
        done = docker("logs", self.id, check=False)
        return done.stdout + done.stderr

    def pid(self) -> int:
        return int(self.state()["Pid"])

    def remove(self) -> None:
        docker("rm", "-f", self.id, check=False)


def _nsenter(pid: int, script: str) -> None:
    subprocess.run(["nsenter", "-t", str(pid), "-n", "sh", "-c", script], check=True, capture_output=True,
                   text=True, timeout=30)


def wire_into(container: Container, ns: NetNamespace, address: str = SERVER_ADDR) -> None:
    """Move the namespace's ``v0`` into the container's network namespace as ``address``/24 (IPv6 off, as in the
    run's namespace, so the container offers no other candidate)."""
    pid = container.pid()
    _nsenter(pid, "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                  "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
    subprocess.run(["ip", "-n", ns.name, "link", "set", "v0", "netns", str(pid)], check=True, capture_output=True,
                   text=True, timeout=30)
    _nsenter(pid, f"ip addr add {address}/24 dev v0 && ip link set v0 up")
