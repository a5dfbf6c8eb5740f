"""A test RTSP camera: GStreamer's RTSP server on loopback, serving real clips (run with Debian's /usr/bin/python3,
the interpreter that sees the `gi` bindings).

    /usr/bin/python3 tests/rtsp_server.py --port 8554 lobby=/path/clip.mp4 [door=/path/other.mp4]

Each mount plays its H.264 MP4 (or MPEG-TS) in real time without re-encoding; every client gets its own pipeline
from the start, and the stream ends at the end of the clip (the service under test then reconnects, like a real camera
that restarted). Prints "READY <port>" once it listens; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("mounts", nargs="+", help="NAME=FILE.mp4 or NAME=FILE.ts (H.264)")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mounts:
        name, _, path = spec.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        # MPEG-TS carries its parameter sets in-band, so a clip whose resolution changes mid-stream (a camera
        # reconfigured) plays as one stream; MP4 keeps one set per track.
        demux = "tsdemux" if path.endswith(".ts") else "qtdemux"
        factory.set_launch(f'( filesrc location="{path}" ! {demux} ! h264parse ! '
                           "rtph264pay name=pay0 pt=96 config-interval=1 )")
        factory.set_shared(False)
        mounts.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
