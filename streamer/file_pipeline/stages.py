"""The threads of the file pipeline and the bounded queues between them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

QUEUE_DEPTH = 8
END = object()  # the last item a stage puts: nothing follows


class Stage(threading.Thread):
    """A pipeline thread that keeps its exception for the caller instead of dying silently."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._run = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc


def put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping; a bounded queue is what keeps memory flat."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    """The next item, or END once the pipeline is stopping."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return END
