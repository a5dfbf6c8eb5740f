"""Limits hold under concurrency: offers or WHEP requests that arrive together cannot all take the last slot
(--max-sessions, --max-viewers). A real server in the test namespace, real aiortc offers."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp import web
from webrtc_support import free_port, http, make_offer_sdp

from streamer.camera_config import CameraSettings
from streamer.server.app import create_app
from streamer.server.config import ServerConfig
from streamer.server.sessions import LiveSession
from streamer.server.state import SESSIONS
from testkit.netns import SERVER_ADDR, NamespaceLoop

CONCURRENT = 6
_apps: list[web.Application] = []


async def _serve(config: ServerConfig, detector: Any) -> tuple[web.AppRunner, str]:
    app = create_app(config, detector=detector)
    _apps.append(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    return runner, f"http://{config.host}:{config.port}"


async def test_concurrent_offers_never_pass_max_sessions(ns_loop: NamespaceLoop, detector: Any) -> None:
    async def scenario() -> tuple[list[int], int]:
        config = ServerConfig(host=SERVER_ADDR, port=await free_port(), device="cpu", max_sessions=2,
                              max_detector_load=0)
        runner, base = await _serve(config, detector)
        try:
            offers = [await make_offer_sdp() for _ in range(CONCURRENT)]
            answers = await asyncio.gather(*(http("POST", base + "/offer", json_body={"sdp": sdp, "type": "offer"})
                                             for sdp in offers))
            sessions = (await http("GET", base + "/healthz")).json()["sessions"]
            # what each admitted webcam asks the detector for: the fast path, whatever the service's default
            coverages = {s.processor.detect_request(np.zeros((1080, 1920, 3), np.uint8)).detect_size
                         for s in _apps[-1][SESSIONS].values() if isinstance(s, LiveSession)}
            assert coverages == {"fast"}, coverages
            return [a.status for a in answers], sessions
        finally:
            await runner.cleanup()

    statuses, sessions = await ns_loop.call(scenario())
    assert sorted(statuses) == [200, 200] + [503] * (CONCURRENT - 2), statuses
    assert sessions == 2


async def test_concurrent_viewers_never_pass_max_viewers(ns_loop: NamespaceLoop, detector: Any) -> None:
    async def scenario() -> tuple[list[int], int]:
        camera = CameraSettings("door", "rtsp://127.0.0.1:1/nothing")  # never answers: viewers still attach
        config = ServerConfig(host=SERVER_ADDR, port=await free_port(), device="cpu", max_viewers=1,
                              max_detector_load=0, cameras=(camera,))
        runner, base = await _serve(config, detector)
        try:
            offers = [await make_offer_sdp(video="recvonly") for _ in range(CONCURRENT)]
            answers = await asyncio.gather(*(http("POST", base + "/whep/door", data=sdp,
                                                  headers={"Content-Type": "application/sdp"})
                                             for sdp in offers))
            viewers = (await http("GET", base + "/healthz")).json()["viewers"]
            return [a.status for a in answers], viewers
        finally:
            await runner.cleanup()

    statuses, viewers = await ns_loop.call(scenario())
    assert sorted(statuses) == [201] + [503] * (CONCURRENT - 1), statuses
    assert viewers == 1
