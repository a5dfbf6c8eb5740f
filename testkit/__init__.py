"""Test kit: what tests/ and bench/ share, never imported by the product.

truth.py              clips with a face box on every frame, rendered on demand from the annotated photos and the
                      otb_girl sequence in ../shared/testdata
judges.py             did a face come out of the anonymizer? Pixels, identity (dlib) and the product's own detector
judging.py            truth clips above a code band, and judging returned frames within a time budget
framecode.py          a frame's number as a barcode: in a strip above the picture (tests' clips, browsers) or in
                      a band below it (live benchmarks, the soak)
wire.py               truth clips sent live and matched back (framecode)
frames.py             frames of real clips fitted to a size
netns.py              the private network namespace live runs happen in, and an event loop inside it
readiness.py, peer.py waiting for a server's /healthz, for a peer connection
echo.py               a plain aiortc echo server (relay.py: its newest-frame track)
camera_clip.py        a camera playing a clip, each frame numbered (framecode)
numbered_receiver.py  reading returned frames' numbers and arrival times
camera_client.py      a live session's client that measures fps, latency and CPU over a window
soak.py               sessions joining and leaving for minutes, the server's resources sampled
rtsp.py               GStreamer's RTSP server (rtsp_server.py) as a test camera
metrics.py            the service's /metrics, parsed by prometheus_client
cpu_time.py           CPU seconds of a process, of this one, of the machine
smallfaces.py         the annotated small-face set
"""
