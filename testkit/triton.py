"""A real NVIDIA Triton Inference Server as a process a test can start, kill and restart on the same ports.

- :func:`model_repository` writes the repository with the product's own generator (``python -m models.triton_repo``,
  CPU instances), once per folder.
- :class:`TritonProcess` runs testkit/triton_server.py (PyTriton's ``tritonserver`` serving that repository) under
  the Debian-Python venv that ``scripts/triton-venv.sh`` makes, made on first use; ``batch_counts`` reads Triton's
  own Prometheus metrics (inferences vs. model executions: more inferences than executions means batches > 1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .netns import NetNamespace

REPO_ROOT = Path(__file__).resolve().parent.parent
TRITON_VENV = REPO_ROOT / ".venv-triton"
SERVER = Path(__file__).resolve().with_name("triton_server.py")
MODEL = "centerface"


def triton_python() -> Path:
    """The test server's interpreter, installing its venv first when needed (scripts/triton-venv.sh, ~30 s)."""
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "triton-venv.sh")], check=True, cwd=REPO_ROOT)
    return TRITON_VENV / "bin" / "python"


def model_repository(out: Path, *extra: str) -> Path:
    """The model repository the product writes (``python -m models.triton_repo OUT --kind cpu ...``)."""
    from models.triton_repo import main

    if not (out / MODEL / "config.pbtxt").exists() and main([str(out), "--kind", "cpu", *extra]) != 0:
        raise RuntimeError(f"python -m models.triton_repo {out} failed")
    return out


def _shared_memory_of(group: int) -> set[Path]:
    """The /dev/shm blocks the processes of this process group have mapped (PyTriton's and its proxy's): only
    those are the server's to remove, never another server's that runs beside it."""
    found: set[Path] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != group:
                continue
            maps = (proc / "maps").read_text()
        except OSError:  # gone, or not ours to read
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                found.add(Path(fields[5].removesuffix(" (deleted)")))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Exited(RuntimeError):
    pass


class TritonProcess:
    """testkit/triton_server.py on 127.0.0.1 (gRPC, HTTP and metrics ports chosen once, kept across restarts), of
    the namespace ``ns`` when given one: a service under test that runs there reaches it on its 127.0.0.1."""

    def __init__(self, repository: Path, *, ns: NetNamespace | None = None, threads: int = 0,
                 log_path: Path | None = None, tls: tuple[Path, Path, Path | None] | None = None) -> None:
        """``tls``: (certificate, key, client CA or None): gRPC over TLS, mutual when a client CA is given."""
        self.repository = repository
        self.ns = ns
        self.tls = tls
        self.threads = threads
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"fs-triton-{os.getpid()}-{id(self)}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._workspace: Path | None = None
        self.fault_file = Path(tempfile.gettempdir()) / f"fs-triton-fault-{os.getpid()}-{id(self)}"

    @property
    def url(self) -> str:
        """What ``--detector`` takes."""
        return f"triton://127.0.0.1:{self.grpc_port}/{MODEL}"

    def start(self, timeout: float = 180, attempts: int = 3) -> TritonProcess:
        """Start it and wait until Triton says the model is ready. PyTriton's model handshake (a Unix socket
        between the Python-backend stub and this server's process) is sometimes refused on a busy machine and the
        server exits at once: it is started again, up to ``attempts`` times."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start(timeout)
            except _Exited:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> TritonProcess:
        python = triton_python()
        self._workspace = Path(tempfile.mkdtemp(prefix="fs-triton-ws-"))
        prefix = self.ns.exec_prefix() if self.ns is not None else []
        cmd = [*prefix, str(python), str(SERVER), str(self.repository), MODEL, "--grpc-port", str(self.grpc_port),
               "--http-port", str(self.http_port), "--metrics-port", str(self.metrics_port),
               "--workspace", str(self._workspace / "w"), "--threads", str(self.threads),
               "--fault-file", str(self.fault_file)]
        if self.tls is not None:
            cert, key, client_ca = self.tls
            cmd += ["--tls-cert", str(cert), "--tls-key", str(key),
                    *(["--tls-client-ca", str(client_ca)] if client_ca is not None else [])]
        with self.log_path.open("ab") as log:
            # Its own process group: tritonserver and the Python-backend stub are its children, killed with it.
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.kill()  # its children and workspace
                raise _Exited(f"the test Triton server exited ({code}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the test Triton server was not ready in {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        try:
            self._get(f"http://127.0.0.1:{self.http_port}/v2/models/{MODEL}/ready")
        except (urllib.error.URLError, OSError, subprocess.CalledProcessError):
            return False
        return True

    def metrics(self) -> str:
        return self._get(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def _get(self, url: str) -> str:
        """The body of a 200 answer; raises otherwise. Asked from inside the namespace when there is one."""
        if self.ns is None:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())
        fetch = ("import sys, urllib.request; "
                 "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
        return subprocess.run([*self.ns.exec_prefix(), sys.executable, "-c", fetch, url], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def batch_counts(self) -> tuple[int, int]:
        """(inferences, model executions) of the model so far, from Triton's own metrics."""
        counts = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:  # the parser names a counter's samples NAME_total
                if family.name in counts and sample.labels.get("model") == MODEL:
                    counts[family.name] += sample.value
        return int(counts["nv_inference_count"]), int(counts["nv_inference_exec_count"])

    def fault(self, kind: str | None) -> None:
        """From now on the model answers NaN heatmaps ("nan"), maps of the wrong size ("shape"), or (None)
        correctly again."""
        if kind is None:
            self.fault_file.unlink(missing_ok=True)
        else:
            self.fault_file.write_text(kind)

    def kill(self) -> None:
        """SIGKILL the server and its children at once (a crash), and clear what they leave behind."""
        self._end(signal.SIGKILL, 0)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; safe to call twice."""
        self._end(signal.SIGTERM, 20)

    def _end(self, sig: signal.Signals, grace: float) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            mine = _shared_memory_of(proc.pid)  # before it ends: a killed server leaves its blocks behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace or 30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            # children (tritonserver, the stub) must not outlive the leader
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            for path in mine:
                path.unlink(missing_ok=True)
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
        self.fault_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> TritonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
