"""Audio that libsndfile cannot read, through FFmpeg (PyAV): the first audio stream -> mono float32 pieces.

decode.py comes here for what soundfile does not open: .m4a/.mp4/.aac (AAC, ALAC), .opus/.webm, .wma,
.mka/.mkv, the first audio track of a video file, and MP3 whose length libsndfile can only guess. The
rate is not converted here: decode.py feeds these pieces to the same streaming Resampler as soundfile's
blocks, so a lossless file gives exactly what the same audio as WAV gives. Samples are scaled as libsndfile
scales them (int16 / 2^15, int32 / 2^31, (u8 - 128) / 2^7) and folded to mono by the same channel mean.

Lengths. A container's header does not give the decoded length: MP4 AAC decodes its end padding (the edit
list trims only the priming), Matroska stores times in ms, raw ADTS AAC and MP3 without a Xing header have
a bit-rate estimate. upper_frames() bounds it from the packets themselves: it demuxes the stream (reads
the packets, decodes only the first) and takes their total duration, each rounded up a tick of the time
base, plus 1% and SLACK frames; where a packet has no duration it counts by decoding the whole stream.
"""

from __future__ import annotations

import math
import re
from typing import Iterator

import av
import numpy as np

from crnn_jax.errors import DataError

# Frames a decoder may give beyond the packets' durations, or drop short of a header's length: AAC priming
# (<= 2112) and padding (< 1024), Opus pre-skip (<= 3840 at 48 kHz), WMA's last partial frame (< 2048).
SLACK = 4096
# FFmpeg demuxers whose header holds a stream's real length (sample tables, a data size, a last granule,
# a DURATION tag): a stream that decodes short of it is truncated. Raw ADTS, MP3, AC-3, MPEG-TS... only
# estimate theirs from the bit rate, so they are never called truncated on that ground.
_TIMED = {"mov", "mp4", "m4a", "matroska", "webm", "asf", "ogg", "wav", "aiff", "caf", "w64", "flac", "au"}
_HMS = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d*)?)$")  # Matroska's per-track DURATION tag


def upper_frames(path: str, why_not_sf: str = "") -> tuple[int, int]:
    """-> (frames, rate): at most how many frames at `rate` Hz (the decoded frames' rate) the first audio
    stream of `path` decodes to (see the module notes). DataError naming the file if it does not open, has
    no audio stream, or its first packet does not decode (e.g. encrypted)."""
    c, s = _open(path, why_not_sf)
    with c:
        rate, ticks, timed = 0, 0, True
        try:
            for p in c.demux(s):
                if not p.size:  # the empty packet demux() ends with, to flush the decoder
                    continue
                timed = timed and bool(p.duration)
                ticks += (p.duration or 0) + 1  # + 1: a duration rounded to the time base is off by < 1 tick
                if not rate:  # the decoded rate can differ from the header's (HE-AAC doubles it)
                    rate = next((f.sample_rate for f in s.decode(p)), 0)
        except Exception as e:  # FFmpeg: a damaged container, an encrypted stream...
            raise DataError(f"{path}: " + (f"truncated or corrupt ({_reason(e)})" if rate else
                                           f"undecodable audio (corrupt, or encrypted by DRM: {_reason(e)})")) from None
        rate = rate or s.sample_rate or 1
        if not timed:  # no packet durations to add up
            return counted_frames(path)
        seconds = max(float(ticks * s.time_base), _declared_seconds(c, s))
        frames = math.ceil(seconds * rate)
        return frames + frames // 100 + SLACK, rate


def counted_frames(path: str) -> tuple[int, int]:
    """-> (frames, rate): the frames at `rate` Hz the first audio stream of `path` decodes to, counted by
    decoding it (exact, at decoding's cost). DataError naming the file where blocks() would raise one."""
    with Source(path) as src:
        return sum(len(x) for x, _ in src.pieces(1 << 16)), src.rate


class Source:
    """The first audio stream of `path`, being decoded. rate: Hz of the decoded frames (the header's if none);
    pieces(n) -> (float32 [about n] mono, last); short(frames) -> why it is truncated ('' if not). Close it
    (a context manager)."""

    def __init__(self, path: str, why_not_sf: str = ""):
        self.path = path
        self.c, self.s = _open(path, why_not_sf)
        self._frames = self.c.decode(self.s)
        try:
            self._first = next(self._frames, None)  # its rate is the one to resample from
        except Exception as e:
            self.c.close()
            raise DataError(f"{path}: undecodable audio (corrupt, or encrypted by DRM: {_reason(e)})") from None
        self.rate = self._first.sample_rate if self._first is not None else (self.s.sample_rate or 1)
        self.declared = round(_declared_seconds(self.c, self.s) * self.rate)  # frames; 0: unknown

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.c.close()

    def pieces(self, block_frames: int) -> Iterator[tuple[np.ndarray, bool]]:
        """-> (x, last): x float32 [>= block_frames, or fewer when last] the channel mean of the next
        decoded frames, in [-1, 1] for integer formats. Holds about two blocks. DataError when a frame
        does not decode (a truncated or corrupt file) or the rate changes mid-stream."""
        ready, pending, n, frames = None, [], 0, 0
        frame = self._first
        while frame is not None:
            if frame.sample_rate != self.rate:
                raise DataError(f"{self.path}: the sample rate changes mid-stream ({self.rate} Hz, then "
                                f"{frame.sample_rate} Hz)")
            if frame.samples:
                pending.append(mono(frame))
                n += frame.samples
                frames += frame.samples
            if n >= block_frames:  # a block is full; it goes once we know whether more follow
                if ready is not None:
                    yield ready, False
                ready, pending, n = np.concatenate(pending), [], 0
            try:
                frame = next(self._frames, None)
            except Exception as e:  # FFmpeg: a partial packet at a cut, corrupt data...
                raise DataError(f"{self.path}: truncated or corrupt after {frames / self.rate:.2f} s of audio "
                                f"({_reason(e)})") from None
        rest = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        if ready is not None and len(rest):
            yield ready, False
            yield rest, True
        else:
            yield (ready if ready is not None else rest), True

    def short(self, frames: int) -> str:
        """Why a stream that decoded `frames` frames is truncated ('' if it is not): over 1% + SLACK
        frames short of the length its container's header states (where the header states one)."""
        if self.declared and frames < 0.99 * self.declared - SLACK:
            return f"the header declares {self.declared} samples, only {frames} decode"
        return ""


def mono(frame: av.AudioFrame) -> np.ndarray:
    """An audio frame -> float32 [frame.samples]: the channel mean, samples scaled as libsndfile does
    (integers to [-1, 1): int16 / 2^15, int32 / 2^31, (u8 - 128) / 2^7; floats as they are)."""
    x = frame.to_ndarray()  # planar formats: [channels, samples]; packed: [1, samples * channels]
    x = x.T if frame.format.is_planar else x.reshape(frame.samples, -1)
    x = np.ascontiguousarray(x)  # [samples, channels]: soundfile's layout, so the mean sums in its order
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128) * np.float32(2.0 ** -7)
    elif x.dtype.kind == "i":
        x = x.astype(np.float32) * np.float32(2.0 ** (1 - 8 * x.dtype.itemsize))
    else:
        x = x.astype(np.float32, copy=False)
    return x.mean(axis=1, dtype=np.float32)


def _open(path: str, why_not_sf: str):
    """-> (container, its first audio stream), or DataError naming the file."""
    try:
        c = av.open(path)
    except Exception as e:  # FFmpeg: unknown format, no such file, damaged header, end of file...
        raise DataError(f"{path}: unreadable audio ({why_not_sf}{'; FFmpeg: ' if why_not_sf else ''}"
                        f"{_reason(e)})") from None
    if not c.streams.audio:
        kinds = sorted({s.type for s in c.streams})
        c.close()
        raise DataError(f"{path}: no audio stream" + (f" (only {', '.join(kinds)})" if kinds else " (no streams)"))
    s = c.streams.audio[0]
    if getattr(s, "codec_context", None) is None:  # a codec this FFmpeg build cannot decode
        c.close()
        raise DataError(f"{path}: no decoder for its audio")
    return c, s


def _declared_seconds(c, s) -> float:
    """The stream's length as its container's header states it, in seconds (0.0 if it states none, or
    only estimates it from the bit rate)."""
    if not set(c.format.name.split(",")) & _TIMED:
        return 0.0
    if s.duration and s.time_base:
        return float(s.duration * s.time_base)
    m = _HMS.match(str(s.metadata.get("DURATION", "")))
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    if len(c.streams) == 1 and c.duration:  # the container's length is the longest stream's
        return c.duration / 1e6
    return 0.0


def _reason(e: BaseException) -> str:
    """An FFmpeg error in one line, without the file name that FFmpeg appends."""
    return " ".join(str(getattr(e, "strerror", None) or e).split()) or type(e).__name__
