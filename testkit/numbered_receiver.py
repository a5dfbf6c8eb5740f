"""The receiving side of a live run's client or viewer: reads each returned frame's number (testkit.framecode, BAND) and
notes when it arrived, and when its last RTP packet arrived.

aiortc's jitter buffer hands a frame to the decoder only once the first packet of the *next* frame is in, so a
decoded frame reaches us one frame interval of the sender late; a browser decodes on the marker bit. Hence both
times.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import av
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .framecode import BAND, luma_of, read

# Last-packet times of frames that never decoded are dropped beyond this many.
MAX_PENDING_PACKETS = 300


class NumberedReceiver:
    """``consume`` a received video track; ``watch_packets`` its receiver first for the last-packet times.
    ``clock``: what arrival times are measured with (``time.monotonic`` to compare with another process's
    CLOCK_MONOTONIC, ``time.perf_counter`` within one process). Subclasses hook ``on_numbered``/``on_codeless``."""

    def __init__(self, width: int, height: int, clock: Callable[[], float]) -> None:
        self.width, self.height, self.clock = width, height, clock
        self.arrived: dict[int, float] = {}  # frame number -> arrival of its first decoded copy
        self.packet_arrived: dict[int, float] = {}  # frame number -> arrival of its last RTP packet
        self.invalid: list[float] = []  # arrivals of frames without a valid code
        self.received = 0
        self.duplicates = 0
        self.first_frame = asyncio.Event()
        self._last_packet: dict[int, float] = {}  # RTP timestamp -> arrival of the frame's marker packet
        self._rtp_origin: int | None = None

    def watch_packets(self, receiver: Any) -> None:
        """Wrap the receiver's RTP handler (one instance, this process only) to note when each frame's last
        packet (marker bit) arrived. It observes; packets go on unchanged."""
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            if self._rtp_origin is None:  # aiortc's TimestampMapper takes the first frame's timestamp as 0
                self._rtp_origin = int(packet.timestamp)
            if packet.marker:
                self._last_packet.setdefault(int(packet.timestamp), self.clock())
            await original(packet, arrival_time_ms=arrival_time_ms)

        setattr(receiver, "_handle_rtp_packet", handle)  # noqa: B010 (mypy: cannot assign to a method)

    async def consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = self.clock()
                if not isinstance(frame, av.VideoFrame):
                    continue
                self.received += 1
                self.first_frame.set()
                luma = luma_of(frame)
                number = read(luma, self.width, self.height, BAND)
                if number is None:
                    self.invalid.append(now)
                    self.on_codeless(now, frame, luma)
                    continue
                if number in self.arrived:
                    self.duplicates += 1
                    continue
                self.arrived[number] = now
                if frame.pts is not None and self._rtp_origin is not None:
                    at = self._last_packet.pop((int(frame.pts) + self._rtp_origin) & 0xFFFFFFFF, None)
                    if at is not None and at <= now:
                        self.packet_arrived[number] = at
                if len(self._last_packet) > MAX_PENDING_PACKETS:
                    for key in sorted(self._last_packet)[:-100]:
                        del self._last_packet[key]
                self.on_numbered(number, frame, now)

    def on_numbered(self, number: int, frame: av.VideoFrame, now: float) -> None:
        """A frame with a new valid code came back."""

    def on_codeless(self, now: float, frame: av.VideoFrame, luma: npt.NDArray[Any]) -> None:
        """A frame came back without a valid code."""
