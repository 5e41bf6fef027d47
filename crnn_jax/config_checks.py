"""Config's validation: every check a Config makes when it is built, each a one-line ConfigError naming the
field and what to change, before any audio is decoded or any JAX work starts (config.Config.__post_init__)."""

from __future__ import annotations

import dataclasses
import math

from crnn_jax import mel
from crnn_jax.errors import ConfigError

MODELS = ("crnn", "cnn")
HEADS = ("softmax", "sigmoid")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("constant", "cosine")
CHOI_TIME_POOLS = (2, 3, 4, 4)  # Choi et al.'s time pools: automatic time pools exist for this many blocks
TEST_CHECKPOINTS = ("best", "last")
GROUPINGS = ("", "artist", "album", "folder")


def need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def check(c) -> None:
    """All of a config.Config's fields, alone and together."""
    for f in dataclasses.fields(c):  # nan and inf pass every comparison below the wrong way, or overflow later
        v = getattr(c, f.name)
        need(not isinstance(v, float) or math.isfinite(v), f"{f.name} must be a finite number, got {v}")
    need(c.model in MODELS, f"--model must be one of {MODELS}, got {c.model!r}")
    need(c.group_by in GROUPINGS, f"--group-by must be one of {', '.join(g or '(none)' for g in GROUPINGS)}, "
         f"got {c.group_by!r}")
    need(c.split.strip() != "all" or bool(c.test_data),
         "--split all trains on every song of --data; give --test-data FOLDER to test on")
    need(not c.test_data or c.split.strip() == "all", f"--test-data {c.test_data} tests on other data: "
         f"use it with --split all (every song of --data trains), not --split {c.split}")
    need(isinstance(c.workers, int) and c.workers >= 0, f"--workers must be an integer >= 0 (0 = one per "
         f"CPU core), got {c.workers!r}")
    need(c.top_db is None or c.top_db >= 0, f"top_db must be >= 0 dB or None, got {c.top_db!r}")
    need(c.power > 0, f"power must be > 0, got {c.power!r}")
    need(c.compression in mel.COMPRESSIONS, f"compression must be one of {', '.join(mel.COMPRESSIONS)}, "
         f"got {c.compression!r}")
    need(c.head in HEADS, f"--head must be one of {HEADS}, got {c.head!r}")
    need(c.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {c.precision!r}")
    need(c.lr_schedule in SCHEDULES, f"lr_schedule must be one of {SCHEDULES}, got {c.lr_schedule!r}")
    need(c.batch_size >= 1, f"--batch-size must be >= 1, got {c.batch_size}")
    need(c.epochs >= 1, f"--epochs must be >= 1, got {c.epochs}")
    need(c.max_steps is None or c.max_steps >= 1, f"--max-steps must be >= 1, got {c.max_steps}")
    need(c.crop_seconds > 0, f"--crop-seconds must be > 0, got {c.crop_seconds}")
    need(math.isfinite(c.learning_rate) and c.learning_rate > 0,
         f"--learning-rate must be a positive number, got {c.learning_rate}")
    need(c.dropout is None or 0.0 <= c.dropout < 1.0, f"--dropout must be in [0, 1), got {c.dropout}")
    for name in ("conv_dropout", "final_dropout"):
        need(0.0 <= getattr(c, name) < 1.0, f"{name} must be in [0, 1), got {getattr(c, name)}")
    need(c.eps >= 0, f"eps must be >= 0 (delta inside the square root of Algorithm 8.6), got {c.eps}")
    need(c.gain_db >= 0, f"--gain-db must be >= 0 dB, got {c.gain_db}")
    need(c.device_data_gb >= 0, f"device_data_gb must be >= 0 GiB, got {c.device_data_gb}")
    need(0.0 <= c.rms_decay < 1.0, f"rms_decay must be in [0, 1), got {c.rms_decay}")
    need(0.0 <= c.momentum < 1.0, f"momentum must be in [0, 1), got {c.momentum}")
    need(c.log_every >= 1, f"--log-every must be >= 1, got {c.log_every}")
    need(c.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {c.checkpoint_every}")
    need(c.steps_per_call >= 1, f"--steps-per-call must be >= 1, got {c.steps_per_call}")
    need(c.data_placement in ("auto", "device", "host"),
         f"--data-placement must be one of auto, device, host, got {c.data_placement!r}")
    need(0.0 < c.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {c.test_fraction}")
    need(0.0 <= c.valid_fraction < 1.0 - c.test_fraction,
         f"valid_fraction must be in [0, 1 - test_fraction), got {c.valid_fraction}")
    need(len(c.conv_channels) == len(c.freq_pools),
         f"conv_channels {c.conv_channels} and freq_pools {c.freq_pools} need the same length")
    need(not c.time_pools or len(c.time_pools) == len(c.conv_channels),
         f"time_pools {c.time_pools} needs one entry per conv block ({len(c.conv_channels)})")
    check_network(c)
    need(c.synth_clips_per_class >= 3, f"synth_clips_per_class must be >= 3, got {c.synth_clips_per_class}")
    need(c.synth_seconds > 0, f"synth_seconds must be > 0, got {c.synth_seconds}")
    need(math.isfinite(c.weight_decay) and c.weight_decay >= 0,
         f"weight_decay must be >= 0, got {c.weight_decay}")
    need(isinstance(c.member, int) and c.member >= 0, f"member must be an integer >= 0, got {c.member!r}")
    need(isinstance(c.ensemble, int) and c.ensemble >= 1,
         f"ensemble must be an integer >= 1, got {c.ensemble!r}")
    need(c.ensemble == 1 or c.member == 0, f"ensemble={c.ensemble} trains members 0..{c.ensemble - 1} itself; "
         f"leave member={c.member} out (or give member alone, with ensemble=1, for one member's run)")
    need(c.warmup_steps >= 0, f"warmup_steps must be >= 0, got {c.warmup_steps}")
    for name in ("spec_time_masks", "spec_time_mask_frames", "spec_freq_masks", "spec_freq_mask_bins"):
        need(isinstance(getattr(c, name), int) and getattr(c, name) >= 0,
             f"{name} must be an integer >= 0, got {getattr(c, name)!r}")
    need(math.isfinite(c.lowpass_prob) and 0.0 <= c.lowpass_prob <= 1.0,
         f"lowpass_prob must be in [0, 1], got {c.lowpass_prob}")
    need(math.isfinite(c.lowpass_min_hz) and c.lowpass_min_hz > 0
         and (c.lowpass_prob == 0 or c.lowpass_min_hz <= c.sample_rate / 2),
         f"lowpass_min_hz must be in (0, {c.sample_rate / 2:g}] Hz (the Nyquist frequency), got {c.lowpass_min_hz}")
    need(c.spec_freq_mask_bins <= c.n_mels,
         f"spec_freq_mask_bins ({c.spec_freq_mask_bins}) must be <= n_mels ({c.n_mels})")
    need(math.isfinite(c.mixup_alpha) and c.mixup_alpha >= 0,
         f"mixup_alpha must be >= 0, got {c.mixup_alpha}")
    need(0.0 <= c.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {c.label_smoothing}")
    need(math.isfinite(c.eq_db) and 0.0 <= c.eq_db <= 40.0, f"eq_db must be in [0, 40] dB, got {c.eq_db}")
    need(c.eq_db == 0 or c.compression == "db", f"eq_db={c.eq_db} adds dB to a log-mel; with compression="
         f"{c.compression} use eq_db=0")
    need(math.isfinite(c.speed_change) and 0.0 <= c.speed_change <= 0.5,
         f"speed_change must be in [0, 0.5] (0.1 = up to 10% faster or slower), got {c.speed_change}")
    need(c.test_checkpoint in TEST_CHECKPOINTS,
         f"test_checkpoint must be one of {TEST_CHECKPOINTS}, got {c.test_checkpoint!r}")
    need(c.early_stop_patience >= 0, f"early_stop_patience must be >= 0, got {c.early_stop_patience}")


def check_network(c) -> None:
    """The front end and the pools fit together: every filter of the mel filterbank covers an FFT bin, every
    conv block sees >= 1 mel band and >= 1 frame."""

    def positive_ints(name: str, xs: tuple) -> None:
        need(all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in xs),
             f"{name} must hold positive integers, got {xs}")

    for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "min_gru_steps"):
        v = getattr(c, name)
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
             f"{name} must be a positive integer, got {v!r}")
    need(c.crop_samples >= 1, f"a {c.crop_seconds} s crop is {c.crop_samples} samples at {c.sample_rate} Hz; "
         f"use a longer --crop-seconds")
    need(c.hop_length <= c.n_fft, f"hop_length {c.hop_length} is longer than the FFT window "
         f"n_fft {c.n_fft}: audio between frames would be skipped; use hop_length <= n_fft")
    nyquist = c.sample_rate / 2
    need(c.f_max is not None, "f_max must be a frequency in Hz (e.g. the Nyquist frequency), not None")
    need(0.0 <= c.f_min, f"f_min must be >= 0 Hz, got {c.f_min}")
    need(c.f_max <= nyquist, f"f_max {c.f_max} Hz is above the Nyquist frequency of sample_rate "
         f"{c.sample_rate} Hz; add --set f_max={nyquist:g} (the mel front end's top edge, Hz) or less")
    need(c.f_min < c.f_max, f"f_min {c.f_min} Hz must be below f_max {c.f_max} Hz")
    empty = _empty_mel_filters(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
    need(not empty, f"n_mels {c.n_mels} leaves {empty} empty mel filters at n_fft {c.n_fft} between "
         f"{c.f_min:g} and {c.f_max:g} Hz; lower n_mels or raise n_fft")
    need(len(c.conv_channels) >= 1, "conv_channels needs at least one conv block")
    positive_ints("conv_channels", c.conv_channels)
    positive_ints("freq_pools", c.freq_pools)
    positive_ints("time_pools", c.time_pools)
    positive_ints("gru_units", c.gru_units)
    need(bool(c.time_pools) or len(c.conv_channels) <= len(CHOI_TIME_POOLS),
         f"{len(c.conv_channels)} conv blocks but automatic time pools exist for at most "
         f"{len(CHOI_TIME_POOLS)}; give time_pools, one per block")
    need(math.prod(c.freq_pools) <= c.n_mels,
         f"freq_pools {c.freq_pools} pool {math.prod(c.freq_pools)} mel bands into one but n_mels is "
         f"{c.n_mels}: the last conv block would see no band; raise n_mels or lower the pools")
    # Frames of one crop, as mel.MelConfig.n_frames counts them (centred STFT).
    frames = 1 + (c.crop_samples + 2 * (c.n_fft // 2) - c.n_fft) // c.hop_length
    need(not c.time_pools or math.prod(c.time_pools) <= frames,
         f"a {c.crop_seconds} s crop is {frames} frames, fewer than the {math.prod(c.time_pools)} "
         f"the time_pools {c.time_pools} reduce to one step; use a longer --crop-seconds or smaller pools")
    need(c.eval_hop_seconds is None or c.eval_hop_seconds > 0,
         f"eval_hop_seconds must be > 0, got {c.eval_hop_seconds}")


def _empty_mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> int:
    """How many triangles of the mel filterbank (mel.py's own, float64) cover no FFT bin."""
    return int((mel._filterbank_f64(float(sample_rate), n_fft, n_mels, f_min, f_max).max(0) <= 0).sum())
