"""A plain aiortc echo server: the floor a live benchmark compares the service with, and a check of the plumbing.

``POST /offer`` answers with the client's own video (decoded, newest frame only, re-encoded: testkit.relay);
``GET /sessions/{id}`` gives that session's frame counters, ``GET /healthz`` ``{"status": "ok", "ready": true,
"sessions": N}`` (N: peers not yet closed). In a process: ``start()``/``stop()`` on a loop inside the network
namespace (testkit.netns); as a process of its own: ``python -m testkit.echo --host H --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Sequence

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from .netns import SERVER_ADDR
from .relay import LatestFrameRelay


class EchoServer:
    def __init__(self, host: str = SERVER_ADDR, port: int = 0) -> None:
        self.host, self.port = host, port
        self.peers: dict[str, tuple[RTCPeerConnection, list[LatestFrameRelay]]] = {}
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/offer", self._offer)
        app.router.add_get("/sessions/{session}", self._session)
        app.router.add_get("/healthz", self._healthz)
        app.on_shutdown.append(self._close_all)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = int(s.getsockname()[1])
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # runs _close_all

    async def _close_all(self, app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc, _ in self.peers.values()), return_exceptions=True)

    async def _healthz(self, request: web.Request) -> web.Response:
        live = sum(1 for pc, _ in self.peers.values() if pc.connectionState not in ("failed", "closed"))
        return web.json_response({"status": "ok", "ready": True, "sessions": live})

    async def _session(self, request: web.Request) -> web.Response:
        found = self.peers.get(request.match_info["session"])
        if found is None:
            return web.json_response({"error": "no such session"}, status=404)
        pc, relays = found
        return web.json_response({"session": request.match_info["session"], "state": pc.connectionState,
                                  "frames_in": sum(r.frames_in for r in relays),
                                  "frames_out": sum(r.frames_out for r in relays),
                                  "frames_dropped": sum(r.frames_dropped for r in relays)})

    async def _offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        # iceServers=[] always: with no configuration aiortc falls back to a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = f"echo-{len(self.peers) + 1}"
        relays: list[LatestFrameRelay] = []
        self.peers[session] = (pc, relays)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                relays.append(LatestFrameRelay(track))
                pc.addTrack(relays[-1])

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await pc.close()  # the entry stays: its counters answer GET /sessions/{id}

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "session": session})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.echo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=SERVER_ADDR)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(EchoServer(args.host, args.port).app(), host=args.host, port=args.port, print=None,
                shutdown_timeout=3.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
