"""Live video anonymizer: every face in every frame found by a neural detector and hidden before it leaves."""

import os

__version__ = "0.1.0"

# The most pixels a photo may have (checked from its header in streamer.offline before decoding).
MAX_IMAGE_PIXELS = 100_000_000
# OpenCV's own limit, a second wall behind that check: OpenCV reads it once, when cv2 is first imported (later
# changes do nothing), and allows 2^30 pixels (3 GB as BGR) without it. An operator's own value is kept.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
