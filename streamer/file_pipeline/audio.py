"""The input's audio, when asked for: its first track copied into the output packet for packet, never decoded or
re-encoded. Its packets travel through the pipeline between the video frames, in file order."""

from __future__ import annotations

from typing import Any


class AudioCopy:
    def __init__(self, container: Any, keep: bool) -> None:
        self.source: Any = container.streams.audio[0] if keep and container.streams.audio else None
        self._target: Any = None

    def add_to(self, output: Any) -> None:
        """Give the output a track like the input's (before anything is muxed)."""
        if self.source is not None:
            self._target = output.add_stream_from_template(self.source)

    def mux(self, output: Any, packet: Any) -> None:
        packet.stream = self._target
        output.mux(packet)
