"""A camera's fan-out: the newest hidden frame, handed over on the scheduler's thread and taken by every viewer and
snapshot on the event loop, and by the restream on its own thread. Nobody queues: each viewer takes the newest frame
newer than the last one it got."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import replace

from .scheduler import HiddenFrame


class FrameFanOut:
    def __init__(self) -> None:
        self.latest: HiddenFrame | None = None
        self._published = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: asyncio.Event | None = None
        self._changed = threading.Condition()  # for sinks on threads of their own (the restream)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters = asyncio.Event()

    def put(self, hidden: HiddenFrame) -> None:
        """Make ``hidden`` the frame every viewer and snapshot gets next; ``wake`` tells the waiting ones."""
        # Sequence numbers run on across restarts: a viewer that stays through a stop and start must still see the
        # new frames as newer than the last one it got.
        self._published += 1
        self.latest = replace(hidden, seq=self._published)
        self.notify()

    def notify(self) -> None:
        """Wake the threads waiting in ``wait_newer`` (a new frame, or a sink stopping)."""
        with self._changed:
            self._changed.notify_all()

    def wait_newer(self, after_seq: int, timeout: float) -> HiddenFrame | None:
        """From a thread: the newest hidden frame newer than ``after_seq``, waiting up to ``timeout`` s for it."""
        with self._changed:
            latest = self.latest
            if latest is None or latest.seq <= after_seq:
                self._changed.wait(timeout)
                latest = self.latest
        return latest if latest is not None and latest.seq > after_seq else None

    def clear(self) -> None:
        self.latest = None

    def wake(self) -> None:
        """From any thread: the viewers waiting in ``next_frame`` look again."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is watching
                self._loop.call_soon_threadsafe(self._wake_waiters)

    def _wake_waiters(self) -> None:
        if self._waiters is not None:
            waiters, self._waiters = self._waiters, asyncio.Event()
            waiters.set()

    async def next_frame(self, after_seq: int) -> HiddenFrame:
        """The newest hidden frame newer than ``after_seq`` (waits for it)."""
        while True:
            latest = self.latest
            if latest is not None and latest.seq > after_seq:
                return latest
            assert self._waiters is not None, "camera not bound to the event loop"
            await self._waiters.wait()
