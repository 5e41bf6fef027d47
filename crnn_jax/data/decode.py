"""One audio file -> mono float32 at the model's rate, block by block: memory is a block, not the file.

    frames_out(path, sample_rate) -> samples the file will decode to (from its header, before decoding)
    blocks(path, sample_rate) -> iterator of float32 [n] mono blocks at sample_rate Hz, validated

A file is read in soundfile blocks of BLOCK_FRAMES frames, each block folded to mono (the channel mean)
and resampled with a streaming form of scipy.signal.resample_poly that gives exactly the samples one call
on the whole file gives (each output sample is the same FIR sum over the same inputs: a block is
resampled with CONTEXT input samples of the next block and only outputs whose filter support lies inside
it are kept; tested bit for bit). Bad files (unreadable, truncated, empty, silent, NaN/inf) raise one
DataError naming the file.
"""

from __future__ import annotations

import math
import os
import re
from typing import Iterator

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from crnn_jax.data.dataset import DataError

BLOCK_FRAMES = 1 << 18  # frames per soundfile read: ~6 s at 44.1 kHz, 2 MiB of float32 stereo
# libsndfile's header log says "data : 88200 (should be 44078)" when the file ends early.
_SHORT_DATA = re.compile(r"^\s*data(?: size)?\s*:\s*(\d+)\s*\(should be (\d+)\)", re.IGNORECASE | re.MULTILINE)


def ratio(rate: int, sample_rate: int) -> tuple[int, int]:
    """Hz in, Hz out -> (up, down), the polyphase factors reduced by their gcd."""
    g = math.gcd(int(rate), int(sample_rate))
    return int(sample_rate) // g, int(rate) // g


def out_length(frames: int, rate: int, sample_rate: int) -> int:
    """Samples at sample_rate that `frames` frames at `rate` Hz resample to (resample_poly's length)."""
    up, down = ratio(rate, sample_rate)
    return -(-int(frames) * up // down)


def frames_out(path: str, sample_rate: int) -> int:
    """The samples `path` decodes to at most, from its header (no decoding). DataError if unreadable."""
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile: unknown format, malformed header, unreadable, ...
        raise DataError(f"{path}: unreadable audio ({one_line(e)})") from None
    return out_length(max(int(info.frames), 0), info.samplerate, sample_rate)


class Resampler:
    """resample_poly(x, up, down) of a signal given in pieces: push(piece) -> the outputs now final.

    Keeps the last CONTEXT-or-so inputs between pushes; the concatenated outputs equal one resample_poly
    call on the concatenated inputs (same filter, same zero padding at the true ends)."""

    def __init__(self, up: int, down: int):
        self.up, self.down = up, down
        half = 10 * max(up, down)  # resample_poly's filter half-length, in upsampled samples
        # Input samples of context each side of a kept output, a multiple of `down` so that block starts
        # stay on the output grid (input index s maps to output s * up / down exactly).
        self.context = down * (-(-(half // up + 2) // down) + 1)
        self.buf = np.zeros(0, np.float32)
        self.start = 0  # input index of buf[0] (a multiple of down)
        self.done = 0  # outputs emitted so far

    def push(self, x: np.ndarray, last: bool) -> np.ndarray:
        """x: float32 [n] the next inputs; last: no more follow. -> float32 [m] outputs now final."""
        if self.up == self.down:
            return x
        self.buf = np.concatenate([self.buf, x]) if len(self.buf) else x
        end = self.start + len(self.buf)
        upto = -(-end * self.up // self.down) if last else max(self.done, (end - self.context) * self.up // self.down)
        out = np.zeros(0, np.float32)
        if upto > self.done and len(self.buf):
            z = resample_poly(self.buf, self.up, self.down)  # outputs from self.start * up / down on
            base = self.start * self.up // self.down
            out = z[self.done - base:upto - base]
            self.done = upto
        keep = max(self.start, (self.done * self.down // self.up - self.context) // self.down * self.down)
        self.buf, self.start = self.buf[keep - self.start:], keep
        return out


def blocks(path: str, sample_rate: int, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Decode `path` -> float32 [n] blocks of mono audio at `sample_rate` Hz, in [-1, 1] for PCM files.

    Their concatenation is what resample_poly gives on the whole file's channel mean. Raises DataError
    naming the file when it does not decode, is truncated, has no samples, holds NaN or infinite samples,
    or is silent (every sample 0); a NaN or a decoding error can come after earlier blocks were yielded.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        f = sf.SoundFile(path)
    except Exception as e:  # libsndfile: unknown format, malformed header, unreadable, ...
        raise DataError(f"{path}: unreadable audio ({one_line(e)})") from None
    with f:
        rate, declared, log = f.samplerate, f.frames, f.extra_info
        rs = Resampler(*ratio(rate, sample_rate))
        frames, heard = 0, False
        while True:
            try:
                x = f.read(block_frames, dtype="float32", always_2d=True)  # [<= block_frames, channels]
            except Exception as e:  # lost sync, unreadable, ...
                raise DataError(f"{path}: unreadable audio ({one_line(e)})") from None
            frames += len(x)
            last = len(x) < block_frames or f.tell() >= declared
            if frames and last:
                why = truncated(log, declared, frames)
                if why:
                    raise DataError(f"{path}: truncated ({why})")
            if not np.all(np.isfinite(x)):
                raise DataError(f"{path}: NaN or infinite samples")
            heard = heard or bool(np.any(x))
            if last and not frames:
                raise DataError(f"{path}: no audio (0 samples)")
            if last and not heard:
                raise DataError(f"{path}: silent (every sample is 0)")
            y = rs.push(x.mean(axis=1, dtype=np.float32), last)  # [frames] stereo folded to mono, resampled
            if len(y):
                yield np.asarray(y, np.float32)
            if last:
                return


def to_mono_rate(x: np.ndarray, rate: int, sample_rate: int, what: str) -> np.ndarray:
    """x [frames, channels] float at `rate` Hz (already in memory) -> validated float32 [samples] mono at
    `sample_rate` Hz, as blocks() gives for a file."""
    if x.shape[0] == 0:
        raise DataError(f"{what}: no audio (0 samples)")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what}: NaN or infinite samples")
    if not np.any(x):
        raise DataError(f"{what}: silent (every sample is 0)")
    x = x.mean(axis=1, dtype=np.float32)  # [frames]: stereo folded to mono
    if rate != sample_rate:
        x = resample_poly(x, *ratio(rate, sample_rate))  # [frames * sample_rate / rate]
    return np.asarray(x, np.float32)


def truncated(log: str, declared_frames: int, frames: int) -> str:
    """Why a file that decoded `frames` frames is truncated ('' if it is not), from libsndfile's header
    log and the frame count its header declares: over 1% missing; stray end bytes are common in valid files."""
    for m in _SHORT_DATA.finditer(log):
        said, real = int(m.group(1)), int(m.group(2))
        if 0 < said < 0x7FFFFFFF and real < 0.99 * said:  # 0 and 0xFFFFFFFF: streamed, size unknown
            return f"the header declares {said} bytes of audio, the file holds {real}"
    if 0 < declared_frames and frames < 0.99 * declared_frames:
        return f"the header declares {declared_frames} samples, only {frames} decode"
    return ""


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
