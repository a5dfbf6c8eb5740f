"""Hide: every decoded frame through the FrameProcessor. Detection of the next frames runs ahead on ``workers``
threads; tracking and hiding then take the results strictly in frame order, which the hold needs. Audio packets
pass through in their place."""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..processor import FrameProcessor
from .stages import END, get, put


class HideStage:
    def __init__(self, processor: FrameProcessor, workers: int) -> None:
        self._processor = processor
        self._workers = workers
        self.faces = 0
        self.hidden_whole = 0  # frames hidden whole because detection failed and no held face covered them

    def run(self, decoded: queue.Queue[Any], hidden: queue.Queue[Any], stop: threading.Event) -> None:
        pending: deque[tuple[Any, Future[tuple[Any, float]] | None]] = deque()

        def finish_oldest() -> bool:
            item, future = pending.popleft()
            if future is not None:
                image, _, t = item[1]
                detections, detect_ms = future.result()
                outcome = self._processor.apply(image, t, detections, detect_ms)
                self.faces += outcome.faces
                self.hidden_whole += outcome.failed_closed and outcome.held == 0
            return put(hidden, item, stop)

        try:
            with ThreadPoolExecutor(self._workers, thread_name_prefix="detect") as pool:
                while True:
                    item = get(decoded, stop)
                    if item is END:
                        break
                    future = pool.submit(self._processor.detect, item[1][0], item[1][2]) if item[0] == "video" \
                        else None
                    pending.append((item, future))
                    if len(pending) > 2 * self._workers and not finish_oldest():
                        return
                while pending:
                    if not finish_oldest():
                        return
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()
            put(hidden, END, stop)
