"""The input's audio, when asked for: its first track into the output. Copied packet for packet where the output's
container takes the codec as it is; otherwise (PCM or Vorbis into MP4) decoded and re-encoded as AAC, so keeping
the sound never fails a file that would have worked without it. Its packets travel through the pipeline between the
video frames, in file order."""

from __future__ import annotations

import logging
from typing import Any

import av

logger = logging.getLogger(__name__)

# What the MP4/MOV muxers accept as copied packets; anything else is re-encoded. Matroska and AVI take the rest.
MP4_COPYABLE = frozenset({"aac", "mp3", "mp3float", "opus", "flac", "alac", "ac3", "eac3"})
AAC_BITRATE = 128_000


class AudioCopy:
    def __init__(self, container: Any, keep: bool) -> None:
        self.source: Any = container.streams.audio[0] if keep and container.streams.audio else None
        self._target: Any = None
        self._decoder: Any = None
        self._resampler: Any = None
        self._samples = 0

    @property
    def reencoded(self) -> bool:
        return self._decoder is not None

    def add_to(self, output: Any) -> None:
        """Give the output a track like the input's (before anything is muxed)."""
        if self.source is None:
            return
        codec = self.source.codec_context.name
        if output.format.name in ("mp4", "mov") and codec not in MP4_COPYABLE:
            rate = self.source.codec_context.sample_rate or 48_000
            self._target = output.add_stream("aac", rate=rate)
            self._target.bit_rate = AAC_BITRATE
            # A PCM track's layout is often only "2 channels", which AAC refuses: mono stays mono, the rest is
            # mixed to stereo by the resampler.
            layout = "mono" if self.source.codec_context.channels == 1 else "stereo"
            self._target.layout = layout
            self._decoder = av.CodecContext.create(self.source.codec_context.name, "r")
            self._decoder.extradata = self.source.codec_context.extradata
            self._decoder.sample_rate = rate
            self._decoder.layout = self.source.codec_context.layout
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            logger.info("audio %s cannot be copied into %s: re-encoded as AAC", codec, output.format.name)
        else:
            self._target = output.add_stream_from_template(self.source)

    def mux(self, output: Any, packet: Any) -> None:
        if self._decoder is None:
            packet.stream = self._target
            output.mux(packet)
            return
        for frame in self._decoder.decode(packet):
            self._encode(output, frame)

    def _encode(self, output: Any, frame: Any) -> None:
        for resampled in self._resampler.resample(frame):
            # Numbered by samples from 0: the decoded input's gaps and offsets are not worth carrying over.
            resampled.pts = self._samples
            self._samples += resampled.samples
            output.mux(self._target.encode(resampled))

    def finish(self, output: Any) -> None:
        """Flush a re-encoding: the samples the decoder, resampler and encoder still hold go into the file."""
        if self._decoder is None:
            return
        for frame in self._decoder.decode(None):
            self._encode(output, frame)
        for resampled in self._resampler.resample(None):
            output.mux(self._target.encode(resampled))
        output.mux(self._target.encode(None))
