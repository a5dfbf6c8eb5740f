"""A private network namespace for live WebRTC runs, and an event loop whose sockets live inside it.

Why: aioice never offers 127.0.0.1 as a host candidate, so two peers on one machine only connect over a real
interface, and tests and benchmarks may send nothing beyond loopback. So a run creates its own network namespace
with ``lo`` and one veth pair, ``v0`` (10.77.0.1) and ``v1`` (10.77.0.2), both ends inside it; the namespace has no
other interface and no route out, so nothing sent from inside it can leave the machine.

- :class:`NetNamespace` creates and deletes the namespace (root and ``ip netns`` needed, else a reason from
  :func:`netns_unavailable_reason`); ``exec_prefix()`` runs a command line inside it.
- :class:`NamespaceLoop` is a thread that calls ``setns`` (which moves only the calling thread) and then runs its
  own asyncio loop: every socket its coroutines open lives inside the namespace. Code on another loop awaits
  ``ns_loop.call(coro)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SERVER_ADDR = "10.77.0.1"
CLIENT_ADDR = "10.77.0.2"
SUBNET_PREFIX = "10.77.0."
CLONE_NEWNET = 0x40000000


class NamespaceError(RuntimeError):
    """The network namespace could not be created or entered."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def netns_unavailable_reason() -> str | None:
    """Why this process cannot create a network namespace, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating a network namespace needs root (WebRTC tests run inside one: aioice never uses 127.0.0.1)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not found: it creates the network namespace the WebRTC tests run in"
    try:
        _ip("netns", "list")
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` is unavailable: {exc}"
    return None


class NetNamespace:
    """A named network namespace with ``lo`` and a veth pair, both ends inside it (see the module doc)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = Path("/run/netns") / name

    @classmethod
    def create(cls, name: str | None = None) -> NetNamespace:
        ns = cls(name or f"fs-{os.getpid()}")
        if ns.path.exists():  # left behind by a crashed run with the same pid
            ns.delete()
        steps = [
            ("netns", "add", ns.name),
            ("-n", ns.name, "link", "set", "lo", "up"),
            ("-n", ns.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"),
            ("-n", ns.name, "addr", "add", f"{SERVER_ADDR}/24", "dev", "v0"),
            ("-n", ns.name, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "v1"),
            ("-n", ns.name, "link", "set", "v0", "up"),
            ("-n", ns.name, "link", "set", "v1", "up"),
        ]
        try:
            for step in steps:
                _ip(*step)
            # IPv6 off: no link-local or other v6 candidates; only 10.77.0.x addresses exist in there.
            subprocess.run(["ip", "netns", "exec", ns.name, "sh", "-c",
                            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"],
                           capture_output=True, text=True, check=False, timeout=20)
        except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
            detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            ns.delete()
            raise NamespaceError(f"cannot set up network namespace {ns.name}: {detail}") from exc
        return ns

    def delete(self) -> None:
        _ip("netns", "del", self.name, check=False)

    def exec_prefix(self) -> list[str]:
        """Prefix a command line with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def addresses(self) -> dict[str, list[str]]:
        """Interface name -> its addresses (all families), as seen inside the namespace."""
        out = _ip("-n", self.name, "-j", "addr", "show").stdout
        result: dict[str, list[str]] = {}
        for link in json.loads(out):
            result[str(link["ifname"])] = [str(a["local"]) for a in link.get("addr_info", [])]
        return result

    def routes(self) -> list[str]:
        """Every route of every table in the namespace, one line each (v4 and v6)."""
        lines: list[str] = []
        for family in ("-4", "-6"):
            out = _ip("-n", self.name, family, "route", "show", "table", "all", check=False).stdout
            lines += [line for line in out.splitlines() if line.strip()]
        return lines


class NamespaceLoop:
    """A thread inside the namespace that runs its own asyncio event loop.

    ``setns(CLONE_NEWNET)`` moves only the calling thread (and the threads it starts later, e.g. the loop's
    default executor), so every socket made by coroutines on this loop is inside the namespace.
    """

    def __init__(self, ns: NetNamespace) -> None:
        self.ns = ns
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"netns-{ns.name}", daemon=True)

    def start(self) -> NamespaceLoop:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise NamespaceError(f"cannot enter network namespace {self.ns.name}: {self._error}")
        if self.loop is None:
            raise NamespaceError(f"the thread for network namespace {self.ns.name} did not start")
        return self

    def _main(self) -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            fd = os.open(self.ns.path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self.loop is not None, "NamespaceLoop.start() first"
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run ``coro`` inside the namespace and wait for its result (blocking)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    async def call(self, coro: Coroutine[Any, Any, T], limit_s: float = 120) -> T:
        """Await ``coro`` run inside the namespace, from another event loop (e.g. pytest-asyncio's)."""
        future = self.submit(coro)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limit_s)
        except (TimeoutError, asyncio.CancelledError):
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
