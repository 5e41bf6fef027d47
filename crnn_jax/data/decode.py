"""One audio file -> mono float32 at the model's rate, block by block: memory is a block, not the file.

    AUDIO_EXTS -> the file extensions crnn_jax reads (lower case, with the dot)
    reader(path) -> "soundfile" or "ffmpeg": which library decodes it
    frames_out(path, sample_rate) -> samples the file decodes to at most (known before decoding)
    blocks(path, sample_rate) -> iterator of float32 [n] mono blocks at sample_rate Hz, validated

Readers. soundfile (libsndfile) reads what it can open: WAV, AU, AIFF, FLAC, Ogg Vorbis/Opus, MP3 whose
length a Xing/Info header states. Everything else goes through FFmpeg (PyAV, decode_av.py): AAC and ALAC
in .m4a/.mp4, raw .aac, .opus/.webm, .wma, .mka/.mkv, the first audio track of a video file, and MP3
without that header (libsndfile only estimates such a file's length from its first frame's bit rate,
and then stops reading at the estimate, or calls a whole file truncated).

Either reader's blocks are folded to mono (the channel mean) and resampled with a streaming form of
scipy.signal.resample_poly that gives exactly the samples one call on the whole file gives (each output
sample is the same FIR sum over the same inputs: a block is resampled with CONTEXT input samples of the
next block and only outputs whose filter support lies inside it are kept; tested bit for bit). So a
lossless file decodes to the same samples through either reader. Bad files (unreadable, truncated, no
audio stream, encrypted, empty, silent, NaN/inf) raise one DataError naming the file.

Lengths. frames_out() is what a file's room in the cache is sized by (ingest.decode_files clips a song
to it), so it must never be below what blocks() yields. soundfile's header count is what blocks() stops
at. For FFmpeg files it is an upper bound from the demuxed packets (decode_av.upper_frames); the room
left over is closed after decoding, so the cache holds exactly the decoded samples.
"""

from __future__ import annotations

import math
import os
import re
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from crnn_jax.data import decode_av
from crnn_jax.errors import DataError, one_line

# The first five are libsndfile's (and were the only ones before FFmpeg), so messages listing them still start so.
AUDIO_EXTS = (".wav", ".au", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".aifc", ".opus", ".m4a", ".mp4", ".aac",
              ".webm", ".wma", ".mka", ".mkv", ".mov")
# Extensions libsndfile claims: when it cannot open one, its reason is kept beside FFmpeg's.
_SF_EXTS = (".wav", ".au", ".snd", ".aiff", ".aif", ".aifc", ".flac", ".ogg", ".oga", ".opus", ".mp3")
_SYNC = re.compile(rb"\xff(?=[\xe0-\xff][\x00-\xff]{2})", re.DOTALL)  # 11 sync bits, room for a 4-byte frame header
BLOCK_FRAMES = 1 << 18  # frames per read: ~6 s at 44.1 kHz, 2 MiB of float32 stereo
# libsndfile's header log says "data : 88200 (should be 44078)" (WAV; "SSND : ..." in AIFF) when the file ends early.
_SHORT_DATA = re.compile(r"^\s*(?:data|SSND)(?: size)?\s*:\s*(\d+)\s*\(should be (\d+)\)", re.IGNORECASE | re.MULTILINE)


def ratio(rate: int, sample_rate: int) -> tuple[int, int]:
    """Hz in, Hz out -> (up, down), the polyphase factors reduced by their gcd."""
    g = math.gcd(int(rate), int(sample_rate))
    return int(sample_rate) // g, int(rate) // g


def out_length(frames: int, rate: int, sample_rate: int) -> int:
    """Samples at sample_rate that `frames` frames at `rate` Hz resample to (resample_poly's length)."""
    up, down = ratio(rate, sample_rate)
    return -(-int(frames) * up // down)


def frames_out(path: str, sample_rate: int) -> int:
    """The samples at `sample_rate` Hz that `path` decodes to at most, before decoding it: soundfile's
    header count, or for FFmpeg files an upper bound from the demuxed packets (see the module notes).
    DataError naming the file if it is unreadable."""
    f, why = _soundfile(path)
    if f is not None:
        with f:
            return out_length(max(int(f.frames), 0), f.samplerate, sample_rate)
    frames, rate = decode_av.upper_frames(path, why)
    return out_length(frames, rate, sample_rate)


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
    """Decode `path` -> float32 [n] blocks of mono audio at `sample_rate` Hz, in [-1, 1] for PCM files,
    read `block_frames` frames at a time.

    Their concatenation is what resample_poly gives on the whole file's channel mean. Raises DataError
    naming the file when it does not decode, is truncated, has no (audio) samples, holds NaN or infinite
    samples, or is silent (every sample 0); a NaN or a decoding error can come after earlier blocks were
    yielded.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    f, why = _soundfile(path)
    if f is not None:
        with f:
            log, declared = f.extra_info, f.frames
            yield from _checked(path, _sf_pieces(path, f, block_frames), f.samplerate, sample_rate,
                                lambda frames: truncated(log, declared, frames))
        return
    with decode_av.Source(path, why) as src:
        yield from _checked(path, src.pieces(block_frames), src.rate, sample_rate, src.short)


def reader(path: str) -> str:
    """Which library decodes `path`: "soundfile" or "ffmpeg" (PyAV), by the rule in the module notes."""
    f, _ = _soundfile(path)
    if f is None:
        return "ffmpeg"
    f.close()
    return "soundfile"


def _soundfile(path: str) -> tuple[sf.SoundFile | None, str]:
    """-> (the file open in soundfile, "") if soundfile reads it, else (None, why not, for a file whose
    extension libsndfile claims; else "")."""
    try:
        f = sf.SoundFile(path)
    except Exception as e:  # libsndfile: unknown format, malformed header, unreadable, ...
        return None, (one_line(e) if os.path.splitext(path)[1].lower() in _SF_EXTS else "")
    if f.format == "MP3" and not mp3_length_known(path):
        f.close()
        return None, ""
    return f, ""


def _sf_pieces(path: str, f: sf.SoundFile, block_frames: int) -> Iterator[tuple[np.ndarray, bool]]:
    """soundfile blocks -> (float32 [<= block_frames] channel mean, last)."""
    while True:
        try:
            x = f.read(block_frames, dtype="float32", always_2d=True)  # [<= block_frames, channels]
        except Exception as e:  # lost sync, unreadable, ...
            raise DataError(f"{path}: unreadable audio ({one_line(e)})") from None
        last = len(x) < block_frames or f.tell() >= f.frames
        yield x.mean(axis=1, dtype=np.float32), last  # [frames] channels folded to mono
        if last:
            return


def _checked(path: str, pieces: Iterator[tuple[np.ndarray, bool]], rate: int, sample_rate: int,
             short: Callable[[int], str]) -> Iterator[np.ndarray]:
    """(mono float32 [n] at `rate` Hz, last) pieces -> validated float32 blocks at `sample_rate` Hz.
    short(frames) says why a file that decoded `frames` frames is truncated ('' if it is not)."""
    rs = Resampler(*ratio(rate, sample_rate))
    frames, heard = 0, False
    for x, last in pieces:
        frames += len(x)
        if frames and last:
            why = short(frames)
            if why:
                raise DataError(f"{path}: truncated ({why})")
        if not np.all(np.isfinite(x)):  # a NaN or inf in any channel is one in the mean
            raise DataError(f"{path}: NaN or infinite samples")
        heard = heard or bool(np.any(x))
        if last and not frames:
            raise DataError(f"{path}: no audio (0 samples)")
        if last and not heard:
            raise DataError(f"{path}: silent (every sample is 0)")
        y = rs.push(x, last)  # [about len(x) * sample_rate / rate]
        if len(y):
            yield np.asarray(y, np.float32)
        if last:
            return


def mp3_length_known(path: str) -> bool:
    """Whether the MPEG audio file `path` states its frame count (a Xing/Info header in its first
    frame, after any ID3v2 tags), i.e. whether libsndfile knows its length rather than guessing it."""
    with open(path, "rb") as f:
        off, head = 0, f.read(10)
        while head[:3] == b"ID3" and len(head) == 10:
            size = sum((b & 0x7F) << (7 * (3 - k)) for k, b in enumerate(head[6:10]))  # 4 x 7 bits ("syncsafe")
            off += 10 + size + (10 if head[5] & 0x10 else 0)  # header, tag, footer
            f.seek(off)
            head = f.read(10)
        f.seek(off)
        buf = f.read(1 << 16)
    for m in _SYNC.finditer(buf):
        i = m.start()
        b1, b2, b3 = buf[i + 1], buf[i + 2], buf[i + 3]
        # The first frame header: 11 sync bits, a version (not 01), a layer (not 00), a bit rate (not
        # 1111) and a sample rate (not 11).
        if b1 & 0x18 != 0x08 and b1 & 0x06 and b2 >> 4 != 15 and b2 & 0x0C != 0x0C:
            mpeg1, mono = b1 & 0x18 == 0x18, b3 >> 6 == 3
            side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)  # Layer III side information
            tag = buf[i + 4 + side:i + 12 + side]
            return tag[:4] in (b"Xing", b"Info") and len(tag) == 8 and bool(tag[7] & 1)  # flag 1: frame count
    return False


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
