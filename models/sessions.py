"""Which ONNX Runtime session runs a network input: on CUDA, one per input shape; on the CPU, one for all."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
W = TypeVar("W")

# Sessions kept per detector on CUDA. Each holds its own copy of the weights (7 MB in fp32) and an arena sized for
# its shape; the shapes a service meets (a few frame sizes, power-of-two batches, the zoom crops) stay well under it.
CAPACITY = 64


class ShapeSessions:
    """Routes each input to a session that has only ever seen that input's shape, when ``per_shape`` is set.

    On CUDA, ONNX Runtime rebuilds a Conv node's cuDNN execution plan whenever the node's input shape differs from
    its previous call, and keeps no plan per shape (``Conv::UpdateState``). On a lent H200 each change cost 0.4-1.9 s,
    and full coverage (main pass, then zoom crops) or a batch of another size changes it every frame, so the GPU ran
    slower than a 2-core CPU. A session that sees one shape builds its plans once. The CPU pays nothing for a new
    shape, so there one session serves every shape and batches are never padded.
    """

    def __init__(self, first: Any, make: Callable[[], Any], *, per_shape: bool, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.per_shape = per_shape
        self.capacity = capacity
        self.created = 1
        self.evicted = 0
        self._first: Any | None = first if per_shape else None  # the first shape's: the one built at load is kept
        self._make = make
        self._sessions: OrderedDict[Shape, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._input = first.get_inputs()[0].name
        self._shared = None if per_shape else first
        self._providers: list[str] = list(first.get_providers())

    @property
    def shapes(self) -> list[Shape]:
        """The shapes that have a session of their own, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def session_for(self, shape: Shape) -> Any:
        """The session that runs inputs of ``shape``, built on first sight (on CUDA, about a second)."""
        if self._shared is not None:
            return self._shared
        with self._lock:  # one builder at a time: a second thread on the same new shape must not build it twice
            session = self._sessions.get(shape)
            if session is not None:
                self._sessions.move_to_end(shape)
                return session
            if self._first is not None:
                session, self._first = self._first, None
            else:
                session = self._make()
                self.created += 1
            self._sessions[shape] = session
            if len(self._sessions) > self.capacity:
                gone, _ = self._sessions.popitem(last=False)
                self.evicted += 1
                logger.warning("input shape %s evicted to make room for %s (%d sessions); inputs of that shape will "
                               "rebuild it", gone, shape, self.capacity)
            logger.info("input shape %s: session %d built", shape, self.created)
            return session

    def providers(self) -> list[str]:
        """The execution providers ONNX Runtime really gave the sessions, first the one in use."""
        return list(self._providers)

    def wrap(self, wrapper: Callable[[Any], W]) -> list[W]:
        """Put ``wrapper`` around every session, those built later too, and return the wrappers made now (on the
        CPU, the one): how a fault (a GPU lost mid-run, a slow inference) is injected into a real detector."""
        made: list[W] = []

        def wrapped(session: Any) -> W:
            made.append(wrapper(session))
            return made[-1]

        with self._lock:
            if self._shared is not None:
                self._shared = wrapped(self._shared)
            if self._first is not None:
                self._first = wrapped(self._first)
            for shape, session in self._sessions.items():
                self._sessions[shape] = wrapped(session)
            make = self._make
            self._make = lambda: wrapper(make())
        return made

    def rows_for(self, rows: int, limit: int) -> int:
        """How many rows a batch of ``rows`` inputs is padded to. Per shape, batch sizes go up in powers of two
        (capped at ``limit``), so a service whose batches vary from call to call meets a handful of shapes."""
        if not self.per_shape or rows >= limit:
            return rows
        return min(1 << (rows - 1).bit_length(), limit)

    def run(self, blob: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        outputs: list[npt.NDArray[np.float32]] = self.session_for(tuple(blob.shape)).run(None, {self._input: blob})
        return outputs
