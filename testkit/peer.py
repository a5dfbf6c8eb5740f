"""Waiting for an aiortc peer connection of a live run to connect."""

from __future__ import annotations

import asyncio
import time

from aiortc import RTCPeerConnection


async def wait_connected(pc: RTCPeerConnection, limit_s: float) -> None:
    """Return once ``pc`` is connected; TimeoutError when it fails, closes or takes longer than ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise TimeoutError(f"peer connection {pc.connectionState} (ICE {pc.iceConnectionState})")
        await asyncio.sleep(0.05)
