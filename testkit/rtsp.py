"""GStreamer's RTSP server as a test camera: testkit/rtsp_server.py run by Debian's Python, as a process that a test
can kill, hang (SIGSTOP) and restart on the same port, inside a network namespace when given one (always on its
127.0.0.1 there).

- :func:`rtsp_unavailable_reason` says why GStreamer's RTSP server cannot run here (Debian packages missing).
- :class:`RtspServer` starts it and waits for its "READY <port>" line; ``times`` makes it write each frame's
  scheduled send time (see testkit/rtsp_server.py).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

from .netns import NetNamespace

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's: the interpreter that sees the `gi` bindings
RTSP_SERVER = Path(__file__).resolve().with_name("rtsp_server.py")
DEBIAN_PACKAGES = ("gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
                   "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav python3-gi "
                   "python3-gst-1.0")
_PROBE = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
          "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
          "missing = [e for e in ('filesrc', 'qtdemux', 'tsdemux', 'h264parse', 'rtph264pay') "
          "if not Gst.ElementFactory.find(e)]; "
          "print(' '.join(missing))")


def rtsp_unavailable_reason() -> str | None:
    """Why GStreamer's RTSP test server cannot run on this machine, or None when it can."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found (GStreamer's RTSP test server runs under Debian's Python)"
    try:
        probe = subprocess.run([str(SYSTEM_PYTHON), "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot probe GStreamer: {exc}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer's RTSP server is not usable ({last}); install the Debian packages {DEBIAN_PACKAGES}"
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()}; install {DEBIAN_PACKAGES}"
    return None


class RtspServer:
    """testkit/rtsp_server.py as a process on 127.0.0.1:``port`` (of the namespace, when given one); with
    ``times``, it appends each frame's scheduled send time there."""

    def __init__(self, mounts: dict[str, Path], port: int, ns: NetNamespace | None = None,
                 log_path: Path | None = None, times: Path | None = None) -> None:
        self.mounts, self.port, self.ns, self.times = mounts, port, ns, times
        self.log_path = log_path or Path(f"/tmp/fs-rtsp-{os.getpid()}-{id(self)}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid  # `ip netns exec` execs the command: this is the server itself

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30) -> RtspServer:
        """Start it and wait for its "READY <port>" line."""
        prefix = self.ns.exec_prefix() if self.ns is not None else []
        cmd = [*prefix, str(SYSTEM_PYTHON), str(RTSP_SERVER), "--port", str(self.port),
               *(["--times", str(self.times)] if self.times is not None else []),
               *(f"{name}={path}" for name, path in self.mounts.items())]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log)
        self.paused = False
        assert self.proc.stdout is not None
        line = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline and self.proc.poll() is None:
                if sel.select(max(0.0, deadline - time.monotonic())):
                    chunk = os.read(self.proc.stdout.fileno(), 1)
                    if not chunk:
                        break
                    line += chunk
        if line.strip() != f"READY {self.port}".encode():
            self.kill()
            raise RuntimeError(f"RTSP server did not start ({line!r}): {' '.join(cmd)}\n{self.log_tail()}")
        return self

    def kill(self) -> None:
        """SIGKILL: the camera dies without a word (its TCP connections are reset by the kernel)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipe()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the camera hangs; connections stay open and nothing more arrives."""
        assert self.alive(), "not running"
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.alive() and self.paused:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_pipe()

    def ensure_running(self) -> None:
        """Resume a paused server, restart a dead one (for tests that come after one that broke it)."""
        if self.alive():
            self.resume()
        else:
            self.start()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
