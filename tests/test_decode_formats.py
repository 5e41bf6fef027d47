"""Every format FFmpeg decodes, through PyAV, wherever soundfile cannot read a file (crnn_jax/data/decode.py).

A small library is encoded here with PyAV from one known 1.5 s signal: AAC and ALAC .m4a, raw ADTS .aac,
Opus in .opus and .webm, .wma, AIFF, FLAC in .flac/.mka, an .mp4 (AAC) and an .mkv (FLAC) beside a video
track, MP3 without a Xing header, and bad files. Lossless files must decode to exactly the samples of the
same audio as WAV (same streaming resampler); lossy ones are compared with their source within a stated
tolerance; bad files are one DataError line naming the file.
"""

import os
import re

import av
import numpy as np
import pytest
import soundfile as sf

from crnn_jax.data import dataset as data_lib
from crnn_jax.data import decode
from crnn_jax.data import decode_av
from crnn_jax.data import folders
from crnn_jax.data import loaders
from crnn_jax.errors import DataError

RATE, SR = 44100, 22050  # the files' rate (Opus: 48 kHz), the model's
SECONDS = 1.5


def signal(rate: int) -> np.ndarray:
    """float32 [2, frames] in [-0.5, 0.5]: a chirp (left) and a decaying tone (right). Not periodic, so a
    lossy file's delay is found unambiguously by cross-correlation."""
    t = np.arange(int(SECONDS * rate)) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * (100 * t + 1600 * t ** 2)),
                     0.3 * np.sin(2 * np.pi * 330 * t) * np.exp(-t)]).astype(np.float32)


def pcm16(x: np.ndarray) -> np.ndarray:
    return np.round(x * 32767).astype(np.int16)


def encode(path, codec, x, rate, fmt, layout="stereo", video=None, options=None, bit_rate=None, then=()):
    """x [channels, frames] -> `path` in `codec` (PyAV; the container from the extension), after a small
    black video track if `video` names a video codec, and before a track for each signal in `then`. None
    if this FFmpeg build lacks an encoder."""
    if any(c and c not in av.codecs_available for c in (codec, video)):
        return None
    with av.open(str(path), "w", options=options or {}) as c:
        if video:
            v = c.add_stream(video, rate=10)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        streams = [c.add_stream(codec, rate=rate) for _ in (x, *then)]
        for s in streams:  # all set up before the first packet opens them
            s.layout = layout
            if bit_rate:
                s.bit_rate = bit_rate
        for s, y in zip(streams, (x, *then)):
            y = np.ascontiguousarray(y) if fmt.endswith("p") else y.T.reshape(1, -1).copy()  # planar, packed
            frame = av.AudioFrame.from_ndarray(y, format=fmt, layout=layout)
            frame.sample_rate, frame.pts = rate, 0
            for p in [*s.encode(frame), *s.encode(None)]:  # PyAV cuts the frame to the codec's frame size
                c.mux(p)
        if video:
            black = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for p in [q for _ in range(int(10 * SECONDS)) for q in v.encode(black)] + list(v.encode(None)):
                c.mux(p)
    return str(path)


def mp3_without_length_header(path, rate=RATE) -> str:
    """Average-bit-rate MP3 with no Xing header, loud for its first 1.5 s and near silent for 4.5 s: its
    first frame's bit rate makes libsndfile guess a length far below the real one. -> path (None if
    this FFmpeg build has no MP3 encoder)"""
    if "libmp3lame" not in av.codecs_available:
        return None
    x = np.concatenate([signal(rate), 0.001 * np.tile(signal(rate), 3)], axis=1)
    with av.open(str(path), "w", options={"write_xing": "0"}) as c:
        s = c.add_stream("libmp3lame", rate=rate, options={"abr": "1"})  # frame sizes follow the signal
        s.layout, s.bit_rate = "stereo", 160000
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, 0
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    return str(path)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """name -> path of the library's files (source WAVs included)."""
    d = tmp_path_factory.mktemp("formats")
    x, x48 = signal(RATE), signal(48000)
    i16 = pcm16(x)
    f = {}
    sf.write(str(d / "src.wav"), i16.T, RATE, subtype="PCM_16")
    sf.write(str(d / "src48.wav"), pcm16(x48).T, 48000, subtype="PCM_16")
    six = np.concatenate([i16, i16[::-1], i16 // 2])  # 6 channels, all different
    sf.write(str(d / "six.wav"), six.T, RATE, subtype="PCM_16")
    i24 = np.round(x[:1] * (2 ** 23 - 1)).astype(np.int32)
    sf.write(str(d / "mono24.wav"), i24.T << 8, RATE, subtype="PCM_24")  # soundfile writes int32's top 24 bits
    sf.write(str(d / "flac.flac"), i16.T, RATE, subtype="PCM_16")
    f["alac.m4a"] = encode(d / "alac.m4a", "alac", i16, RATE, "s16p")
    f["alac24.m4a"] = encode(d / "alac24.m4a", "alac", i24 << 8, RATE, "s32p", layout="mono")
    f["aiff.aiff"] = encode(d / "aiff.aiff", "pcm_s16be", i16, RATE, "s16")
    f["flac.mka"] = encode(d / "flac.mka", "flac", i16, RATE, "s16")
    f["six.mka"] = encode(d / "six.mka", "flac", six, RATE, "s16", layout="5.1")
    f["video.mkv"] = encode(d / "video.mkv", "flac", i16, RATE, "s16", video="mpeg4")
    f["two_tracks.mka"] = encode(d / "two_tracks.mka", "flac", i16, RATE, "s16", then=[i16 // 3])
    f["aac.m4a"] = encode(d / "aac.m4a", "aac", x, RATE, "fltp")
    f["adts.aac"] = encode(d / "adts.aac", "aac", x, RATE, "fltp")
    f["video.mp4"] = encode(d / "video.mp4", "aac", x, RATE, "fltp", video="mpeg4")
    f["wma.wma"] = encode(d / "wma.wma", "wmav2", x, RATE, "fltp", bit_rate=128000)
    f["opus.opus"] = encode(d / "opus.opus", "libopus", x48, 48000, "flt")
    f["opus.webm"] = encode(d / "opus.webm", "libopus", x48, 48000, "flt")
    f["noxing.mp3"] = mp3_without_length_header(d / "noxing.mp3")
    f.update({n: str(d / n) for n in ("src.wav", "src48.wav", "six.wav", "mono24.wav", "flac.flac")})
    return f


def need(lib, *names) -> list[str]:
    """The library's files `names`, or skip the test where this FFmpeg build could not encode one."""
    if any(lib[n] is None for n in names):
        pytest.skip(f"this FFmpeg build has no encoder for {[n for n in names if lib[n] is None][0]}")
    return [lib[n] for n in names]


def decoded(path, sample_rate=SR, block_frames=4096) -> np.ndarray:
    return np.concatenate(list(decode.blocks(path, sample_rate, block_frames=block_frames)))


# --- lossless: exactly the WAV's samples ---------------------------------------------------------------------
@pytest.mark.parametrize("name, wav, reader", [
    ("alac.m4a", "src.wav", "ffmpeg"), ("alac24.m4a", "mono24.wav", "ffmpeg"), ("flac.mka", "src.wav", "ffmpeg"),
    ("six.mka", "six.wav", "ffmpeg"), ("video.mkv", "src.wav", "ffmpeg"), ("two_tracks.mka", "src.wav", "ffmpeg"),
    ("aiff.aiff", "src.wav", "soundfile"), ("flac.flac", "src.wav", "soundfile")])
def test_lossless_files_decode_to_exactly_the_samples_of_the_same_audio_as_wav(lib, name, wav, reader):
    # Stereo, 6 channels, 24 bits in int32, FLAC beside a video track or before a second audio track (the
    # first audio track is the one read); blocks of 4096 frames vs one block.
    path, wav = need(lib, name, wav)
    assert decode.reader(path) == reader and decode.reader(wav) == "soundfile"
    want = decoded(wav, block_frames=1 << 20)
    got = decoded(path)
    np.testing.assert_array_equal(got, want)
    assert len(want) == round(SECONDS * SR) and decode.frames_out(path, SR) >= len(got)


# --- lossy: within a tolerance of the source -----------------------------------------------------------------
def aligned_snr(got: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[int, float]:
    """-> (lag, SNR in dB) of got against ref (both mono at one rate) over ref's middle (all but
    max_lag + 0.02 s at each end), got shifted by the lag in [-max_lag, max_lag] that correlates best."""
    m = slice(max_lag + SR // 50, len(ref) - max_lag - SR // 50)
    r = ref[m]
    score = [np.dot(got[m.start + lag:m.stop + lag], r) if m.stop + lag <= len(got) else -np.inf
             for lag in range(-max_lag, max_lag + 1)]
    lag = int(np.argmax(score)) - max_lag
    err = got[m.start + lag:m.stop + lag] - r
    return lag, float(10 * np.log10(np.sum(r.astype(np.float64) ** 2) / np.sum(err.astype(np.float64) ** 2)))


@pytest.mark.parametrize("name, src", [
    ("aac.m4a", "src.wav"), ("adts.aac", "src.wav"), ("video.mp4", "src.wav"), ("wma.wma", "src.wav"),
    ("opus.webm", "src48.wav"), ("opus.opus", "src48.wav")])
def test_lossy_files_are_within_tolerance_of_their_source(lib, name, src):
    """Tolerance: after shifting by the encoder delay that correlates best (|lag| <= 1500 samples at
    22.05 kHz, 68 ms: AAC priming is 1024-2112 frames at 44.1 kHz, WMA's 2048), the decoded signal is
    within 20 dB SNR of its source over the middle, and its length within 0.05 s of the source's."""
    path, src = need(lib, name, src)
    ref, got = decoded(src), decoded(path)
    lag, snr = aligned_snr(got, ref, max_lag=1500)
    assert snr >= 20, (name, lag, snr)
    assert abs(len(got) - len(ref)) <= SR // 20, (name, len(got), len(ref))
    assert decode.frames_out(path, SR) >= len(got)  # the room the cache reserves holds it all
    if name.endswith((".m4a", ".mp4", ".opus", ".webm")):  # edit lists, pre-skip: no delay left
        assert lag == 0, (name, lag)


def test_ffmpeg_files_decode_block_by_block_to_what_one_block_gives(lib):
    # The streaming resampler and the block assembly do not depend on where the blocks fall.
    for path in need(lib, "aac.m4a", "opus.webm"):
        np.testing.assert_array_equal(decoded(path, block_frames=1000), decoded(path, block_frames=1 << 20))


def test_the_room_reserved_before_decoding_is_an_upper_bound_and_close(lib):
    # upper_frames adds up the demuxed packets; counted_frames (its fallback) decodes: exact.
    for name in [n for n in ("aac.m4a", "adts.aac", "flac.mka", "opus.webm", "wma.wma", "video.mp4", "noxing.mp3")
                 if lib[n]]:
        bound, rate = decode_av.upper_frames(lib[name])
        frames, rate2 = decode_av.counted_frames(lib[name])
        assert rate == rate2 and frames <= bound <= 1.01 * frames + 2 * decode_av.SLACK + 2048, name


def test_both_readers_agree_on_an_ogg_opus_file(lib):
    # libsndfile (libopus) and FFmpeg (its own Opus decoder) on one file: same length, near-same samples.
    (path,) = need(lib, "opus.opus")
    if decode.reader(path) != "soundfile":
        pytest.skip("this libsndfile does not read Opus")
    with decode_av.Source(path) as src:
        via_ffmpeg = np.concatenate([x for x, _ in src.pieces(1 << 16)])
    via_sf = sf.read(path, dtype="float32")[0].mean(axis=1, dtype=np.float32)
    assert len(via_ffmpeg) == len(via_sf) == 48000 * SECONDS
    assert aligned_snr(via_ffmpeg, via_sf, max_lag=0)[1] >= 40


# --- MP3 that states no length ------------------------------------------------------------------------------
def test_an_mp3_without_a_length_header_decodes_whole_through_ffmpeg(lib, tmp_path):
    (path,) = need(lib, "noxing.mp3")
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile does not read MP3")
    assert not decode.mp3_length_known(path)
    assert sf.info(path).frames < 0.6 * 6 * RATE  # libsndfile's guess, and where it would stop reading
    assert decode.reader(path) == "ffmpeg"
    got = decoded(path)
    assert abs(len(got) - 6 * SR) <= SR // 20 and decode.frames_out(path, SR) >= len(got)
    # With an ID3v2 tag and a Xing header (as libsndfile and LAME write them) the length is known.
    sf.write(str(tmp_path / "xing.mp3"), signal(RATE).T, RATE)
    tagged = tmp_path / "tagged.mp3"
    tagged.write_bytes(b"ID3\x04\x00\x00\x00\x00\x08\x00" + bytes(1024) + (tmp_path / "xing.mp3").read_bytes())
    assert decode.mp3_length_known(str(tagged)) and decode.reader(str(tagged)) == "soundfile"


# --- bad files: one line each --------------------------------------------------------------------------------
def bad_file(lib, d, kind) -> tuple[str, str]:
    """-> (path, expected reason) of a bad file of `kind`, made from the library's good ones."""
    if not {"aac", "alac", "mpeg4", "pcm_f32le"} <= set(av.codecs_available):  # FFmpeg's own encoders
        pytest.skip("this FFmpeg build lacks one of FFmpeg's native encoders")

    def cut(src, keep):
        b = open(src, "rb").read()
        (d / kind).write_bytes(b[:int(len(b) * keep)])
        return str(d / kind)

    if kind == "truncated.m4a":  # the sample tables first ("faststart"), the audio cut short
        faststart = encode(d / "faststart.m4a", "aac", signal(RATE), RATE, "fltp", options={"movflags": "faststart"})
        return cut(faststart, 0.6), "truncated"
    if kind == "cut_end.m4a":  # the sample tables last: cut off with the end
        return cut(*need(lib, "aac.m4a"), 0.9), "unreadable audio"
    if kind == "truncated.webm":
        return cut(*need(lib, "opus.webm"), 0.5), "truncated"
    if kind == "no_audio.mp4":
        with av.open(str(d / kind), "w") as c:
            v = c.add_stream("mpeg4", rate=10)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            black = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for p in [q for _ in range(10) for q in v.encode(black)] + list(v.encode(None)):
                c.mux(p)
        return str(d / kind), "no audio stream (only video)"
    if kind == "drm.m4a":  # Common Encryption, no key
        key = {"encryption_scheme": "cenc-aes-ctr", "encryption_key": "00" * 16, "encryption_kid": "11" * 16}
        return encode(d / kind, "aac", signal(RATE), RATE, "fltp", options=key), "encrypted by DRM"
    if kind == "empty.m4a":
        (d / kind).write_bytes(b"")
        return str(d / kind), "unreadable audio"
    if kind == "nan.mka":
        x = signal(RATE)
        x[0, 1000] = np.nan
        return encode(d / kind, "pcm_f32le", x, RATE, "flt"), "NaN or infinite samples"
    if kind == "silent.m4a":
        return encode(d / kind, "alac", np.zeros((2, RATE), np.int16), RATE, "s16p"), "silent"
    raise AssertionError(kind)


BAD = ("truncated.m4a", "cut_end.m4a", "truncated.webm", "no_audio.mp4", "drm.m4a", "empty.m4a", "nan.mka",
       "silent.m4a")


@pytest.mark.parametrize("kind", BAD)
def test_bad_files_are_one_line_naming_the_file(lib, tmp_path, capfd, kind):
    path, why = bad_file(lib, tmp_path, kind)
    assert decode.reader(path) == "ffmpeg"
    with pytest.raises(DataError, match=re.escape(why)) as e:
        decoded(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    try:  # before decoding: a bound on its length, or the same kind of one-line error
        assert decode.frames_out(path, SR) >= 0
    except DataError as e2:
        assert str(e2).startswith(f"{path}: ") and "\n" not in str(e2)
    assert capfd.readouterr().err == ""  # FFmpeg's own log stays quiet


# --- a folder of every format --------------------------------------------------------------------------------
def test_a_folder_of_every_format_caches_exactly_the_decoded_samples(lib, tmp_path, monkeypatch, capsys):
    # Upper bounds reserve the room (AAC's end padding, ADTS's and the Xing-less MP3's estimated lengths);
    # what the cache holds is exactly what decoding gives, and the bad files are skipped, one line each.
    monkeypatch.setattr(folders, "AUDIO_EXTS", decode.AUDIO_EXTS)  # until folders takes decode's list
    root = tmp_path / "data"
    songs = {}
    for i, name in enumerate(n for n in lib if lib[n] and not n.startswith(("src", "six.wav", "mono24.wav"))):
        song = f"{'ab'[i % 2]}/{i:02d}-{name}"  # one stem per song: flac.flac and flac.mka are two songs here
        dst = root / song
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(open(lib[name], "rb").read())
        songs[song] = str(dst)
    bad = {}
    for kind in ("truncated.m4a", "no_audio.mp4"):
        path, why = bad_file(lib, tmp_path, kind)
        os.replace(path, root / "b" / kind)
        bad[f"b/{kind}"] = why
    ds = folders.load_folder(str(root), sample_rate=SR, cache=str(tmp_path / "cache"))
    assert sorted(ds.names) == sorted(songs)
    for i, name in enumerate(ds.names):
        want = data_lib.to_int16(loaders.read_audio(songs[name], SR))
        np.testing.assert_array_equal(ds.song(i), want, err_msg=name)
    assert ds.audio.shape == (ds.lengths.sum(),)  # the rooms' unused ends were closed
    err = capsys.readouterr().err
    for name, why in bad.items():
        (line,) = [l for l in err.splitlines() if l.startswith(f"data: warning: skipping {name}: ")]
        assert why in line, line
