"""The input's audio, when asked for: its first track into the output. Copied packet for packet where the output's
container takes the codec as it is; otherwise (PCM or Vorbis into MP4) decoded and re-encoded as AAC, so keeping
the sound never fails a file that would have worked without it. Its packets travel through the pipeline between the
video frames, in file order."""

from __future__ import annotations

import logging
from typing import Any

import av

logger = logging.getLogger(__name__)

# What the MP4 and MOV muxers accept as copied packets; anything else is re-encoded. Matroska and AVI take the rest
# (and if a muxer still refuses the track when its header is written, encode.py leaves the sound out).
COPYABLE = {"mp4": frozenset({"aac", "mp3", "mp3float", "opus", "flac", "alac", "ac3", "eac3"}),
            "mov": frozenset({"aac", "mp3", "mp3float", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be",
                              "pcm_s24le", "pcm_f32le"})}
AAC_BITRATE = 128_000
AAC_RATES = frozenset({7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})


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

    @property
    def kept(self) -> bool:
        return self.source is not None

    def drop(self) -> None:
        """Leave the sound out (set before ``add_to`` of a new output)."""
        self.source = None
        self._target = self._decoder = self._resampler = None

    def add_to(self, output: Any) -> None:
        """Give the output a track like the input's (before anything is muxed)."""
        if self.source is None:
            return
        codec = self.source.codec_context.name
        muxer = output.format.name
        if muxer in COPYABLE and codec not in COPYABLE[muxer]:
            rate = self.source.codec_context.sample_rate or 48_000
            rate = rate if rate in AAC_RATES else 48_000  # the resampler converts to a rate AAC takes
            self._target = output.add_stream("aac", rate=rate)
            self._target.bit_rate = AAC_BITRATE
            # A PCM track's layout is often only "2 channels", which AAC refuses: mono stays mono, the rest is
            # mixed to stereo by the resampler.
            layout = "mono" if self.source.codec_context.channels == 1 else "stereo"
            self._target.layout = layout
            self._decoder = av.CodecContext.create(self.source.codec_context.name, "r")
            self._decoder.extradata = self.source.codec_context.extradata
            self._decoder.sample_rate = self.source.codec_context.sample_rate or rate
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
