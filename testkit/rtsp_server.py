"""A test RTSP camera: GStreamer's RTSP server on loopback, serving real clips (run with Debian's /usr/bin/python3,
the interpreter that sees the `gi` bindings; testkit.rtsp starts it).

    /usr/bin/python3 testkit/rtsp_server.py --port 8554 [--times PATH] lobby=/path/clip.mp4 [door=/path/other.ts]

Each mount plays its H.264 MP4 (or MPEG-TS) in real time without re-encoding; every client gets its own pipeline
from the start, and the stream ends at the end of the clip (the service under test then reconnects, like a real camera
that restarted). Prints "READY <port>" once it listens; stops on SIGTERM/SIGINT.

``--times PATH``: a probe on each session's payloader appends, per frame,
    F <mount> <session> <pts ns> <scheduled send time ns>
(scheduled = the element's base time + the frame's running time: the sink sends it at that clock time), and once
per session
    C <mount> <session> <GStreamer clock ns> <time.monotonic_ns()>
so that a benchmark can check both clocks are CLOCK_MONOTONIC and measure latency from the source. Frames before
PLAYING (preroll, base time 0) are not written.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any, TextIO

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def send_time_probe(out: TextIO) -> Any:
    """A "media-configure" handler that writes the F and C lines of each session of a mount to ``out``."""
    sessions: dict[str, int] = {}

    def on_configure(factory: Any, media: Any, name: str) -> None:
        sessions[name] = sessions.get(name, 0) + 1
        session = sessions[name]
        state: dict[str, Any] = {"pts": None, "checked": False}

        def probe(pad: Any, info: Any) -> Any:
            if info.type & Gst.PadProbeType.BUFFER_LIST:
                blist = info.get_buffer_list()
                if blist is None or blist.length() == 0:
                    return Gst.PadProbeReturn.OK
                buf = blist.get(0)
            else:
                buf = info.get_buffer()
            if buf is None or buf.pts == Gst.CLOCK_TIME_NONE or buf.pts == state["pts"]:
                return Gst.PadProbeReturn.OK
            element = pad.get_parent_element()
            base = element.get_base_time()
            event = pad.get_sticky_event(Gst.EventType.SEGMENT, 0)
            if base == 0 or event is None:
                return Gst.PadProbeReturn.OK
            state["pts"] = buf.pts
            running = event.parse_segment().to_running_time(Gst.Format.TIME, buf.pts)
            if not state["checked"]:
                clock = element.get_clock()
                if clock is not None:
                    out.write(f"C {name} {session} {clock.get_time()} {time.monotonic_ns()}\n")
                    state["checked"] = True
            out.write(f"F {name} {session} {buf.pts} {base + running}\n")
            return Gst.PadProbeReturn.OK

        pay = media.get_element().get_by_name("pay0")
        pay.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, probe)

    return on_configure


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--times", default=None, help="append each frame's scheduled send time here")
    parser.add_argument("mounts", nargs="+", help="NAME=FILE.mp4 or NAME=FILE.ts (H.264)")
    args = parser.parse_args()
    Gst.init(None)
    on_configure = send_time_probe(open(args.times, "a", buffering=1)) if args.times else None  # noqa: SIM115
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
        if on_configure is not None:
            factory.connect("media-configure", on_configure, name)
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
