"""The echo baseline's track: a remote video sent straight back, newest frame only, with no detection or hiding,
so an echo differs from the service only by the anonymizing (aiortc's receive queue is unbounded: without the
latest-frame rule an echo slower than its sender would build a backlog)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError


class LatestFrameRelay(MediaStreamTrack):
    """Relays ``source``; a frame not asked for before the next one arrived is dropped and counted."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source
        self._latest: Any = None
        self._event = asyncio.Event()
        self._ended = False
        self.frames_in = self.frames_out = self.frames_dropped = 0
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                self.frames_in += 1
                if self._latest is not None:
                    self.frames_dropped += 1
                self._latest = frame
                self._event.set()
        except MediaStreamError:
            pass
        finally:
            self._ended = True
            self._event.set()

    async def recv(self) -> Any:
        while self._latest is None:
            if self._ended or self.readyState != "live":
                self.stop()
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        frame, self._latest = self._latest, None
        self.frames_out += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._task.cancel()
