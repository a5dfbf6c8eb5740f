"""The service's face recognition: one embedder process for every session and camera, started on first use (its
model costs ~100 MB and a second to load: a service nobody enrols faces on never starts it)."""

from __future__ import annotations

import logging
import threading

from .embedding import Embedder, unavailable_reason

logger = logging.getLogger(__name__)


class FaceRecognition:
    def __init__(self) -> None:
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def unavailable(self) -> str | None:
        """Why recognition cannot run here, or None."""
        return unavailable_reason()

    @property
    def started(self) -> bool:
        return self._embedder is not None

    def embedder(self) -> Embedder:
        """The embedder, started now if it was not (blocking: call it off the event loop). RuntimeError when
        recognition is unavailable or the service is stopping."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the service is stopping")
            if self._embedder is None:
                self._embedder = Embedder()
                logger.info("[server] face recognition started (its own process)")
            return self._embedder

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            embedder, self._embedder = self._embedder, None
        if embedder is not None:
            embedder.stop()
