"""Run configuration as code: one frozen dataclass, presets in `experiments/<name>.py`, flags on top.

A preset file defines `config = Config(...)` (or `get_config() -> Config`). Command-line flags override
the preset field by field; the resolved config is printed at the start of a run and saved as
`<workdir>/config.json`, so every run can be reproduced from its workdir alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from typing import Any

MODELS = ("crnn", "cnn")
HEADS = ("softmax", "sigmoid")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("constant", "cosine")
TEST_CHECKPOINTS = ("best", "last")


class ConfigError(ValueError):
    """A config value (from a preset, a flag or a saved config.json) that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Config:
    # --- data --------------------------------------------------------------------------------------
    data: str = "synthetic"  # "synthetic", a folder of genre sub-folders, or "tfds:gtzan"
    split: str = "random"  # random | fault-filtered | kfold:K | a folder with train/valid/test.txt
    fold: int = 0  # which fold is the test fold with split="kfold:K"
    test_fraction: float = 0.2  # random split: share of songs per class held out for test
    valid_fraction: float = 0.1  # random split: share of songs per class for validation (0: none)
    cache_dir: str = ""  # decoded-audio cache; "" = ~/.cache/crnn_jax
    synth_clips_per_class: int = 100  # built-in data: clips per class
    synth_seconds: float = 8.0  # built-in data: clip length, s
    # --- front end (mel.MelConfig) -------------------------------------------------------------------
    sample_rate: int = 22050  # Hz; every file is resampled to this
    n_fft: int = 1024  # samples
    hop_length: int = 512  # samples
    n_mels: int = 96
    f_min: float = 0.0  # Hz
    f_max: float = 11025.0  # Hz
    # --- model ---------------------------------------------------------------------------------------
    model: str = "crnn"  # crnn | cnn
    head: str = "softmax"  # softmax (cross-entropy) | sigmoid (the report's: 10 sigmoids, binary CE)
    conv_channels: tuple[int, ...] = (64, 128, 128, 128)  # Choi et al. 2017
    freq_pools: tuple[int, ...] = (2, 3, 4, 4)  # 96 mels -> 1
    time_pools: tuple[int, ...] = ()  # () = chosen from the crop so the GRU sees >= min_gru_steps
    min_gru_steps: int = 8
    gru_units: tuple[int, ...] = (32, 32)
    conv_dropout: float = 0.1
    final_dropout: float = 0.3
    dropout: float | None = None  # overrides every dropout rate when set (0 disables)
    precision: str = "fp32"  # fp32 | bf16 (bf16 convs/matmuls; fp32 params, optimizer, mel)
    # --- optimisation (Algorithm 8.6) ----------------------------------------------------------------
    learning_rate: float = 1e-3  # the book's global learning rate epsilon
    lr_schedule: str = "constant"  # constant | cosine (cosine decay to 0 over the run)
    rms_decay: float = 0.9  # rho
    momentum: float = 0.9  # alpha
    eps: float = 1e-8  # inside the square root, as delta in the book's Algorithm 8.5
    batch_size: int = 32  # global, over all devices and processes
    epochs: int = 10  # an epoch = every training song once, one random crop each
    max_steps: int | None = None  # overrides epochs when set
    crop_seconds: float = 3.0  # training/eval window, s
    eval_hop_seconds: float | None = None  # hop between eval windows, s; None = crop_seconds
    gain_db: float = 6.0  # random gain augmentation, uniform in +-gain_db dB
    seed: int = 0
    weight_decay: float = 0.0  # decoupled: theta <- theta + v - lr_t * weight_decay * theta, kernels only; 0 = off
    warmup_steps: int = 0  # linear warm-up of the learning rate over this many steps (times the schedule); 0 = off
    # --- augmentation (augment.py; inside the jitted step, a function of (seed, step); all off by default) ----
    spec_time_masks: int = 0  # SpecAugment time masks per example (0 = off)
    spec_time_mask_frames: int = 8  # each time mask's width, uniform in [0, this] frames
    spec_freq_masks: int = 0  # SpecAugment frequency masks per example (0 = off)
    spec_freq_mask_bins: int = 8  # each frequency mask's width, uniform in [0, this] mel bands
    mixup_alpha: float = 0.0  # waveform mixup with lambda ~ Beta(alpha, alpha) and soft targets (0 = off)
    label_smoothing: float = 0.0  # targets (1 - s) one-hot + s / n_classes (sigmoid head: + s / 2) (0 = off)
    eq_db: float = 0.0  # random EQ: a smooth per-mel-band gain curve within +-eq_db dB (0 = off)
    # --- bookkeeping ---------------------------------------------------------------------------------
    workdir: str = ""  # "" = runs/<model>-<data>-seed<seed>
    log_every: int = 20  # steps between train-metric lines
    eval_every: int = 0  # steps between validation passes; 0 = once per epoch
    checkpoint_every: int = 200  # steps between checkpoints (and always at the end)
    steps_per_call: int = 1  # training steps fused into one device call (lax.scan)
    data_placement: str = "auto"  # auto | device (data set resident on every device) | host (streamed)
    device_data_gb: float = 4.0  # auto: keep the data on the devices when its int16 audio fits this, GiB
    test_checkpoint: str = "best"  # best (by validation song accuracy; "last" when there is no validation split) | last
    early_stop_patience: int = 0  # stop after this many validation passes without a new best; 0 = off

    # ------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.model in MODELS, f"--model must be one of {MODELS}, got {self.model!r}")
        need(self.head in HEADS, f"--head must be one of {HEADS}, got {self.head!r}")
        need(self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.lr_schedule in SCHEDULES, f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}")
        need(self.crop_seconds > 0, f"--crop-seconds must be > 0, got {self.crop_seconds}")
        need(math.isfinite(self.learning_rate) and self.learning_rate > 0,
             f"--learning-rate must be a positive number, got {self.learning_rate}")
        need(self.dropout is None or 0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        need(0.0 <= self.rms_decay < 1.0, f"rms_decay must be in [0, 1), got {self.rms_decay}")
        need(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}")
        need(self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        need(self.steps_per_call >= 1, f"--steps-per-call must be >= 1, got {self.steps_per_call}")
        need(self.data_placement in ("auto", "device", "host"),
             f"--data-placement must be one of auto, device, host, got {self.data_placement!r}")
        need(0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction}")
        need(0.0 <= self.valid_fraction < 1.0 - self.test_fraction,
             f"valid_fraction must be in [0, 1 - test_fraction), got {self.valid_fraction}")
        need(len(self.conv_channels) == len(self.freq_pools),
             f"conv_channels {self.conv_channels} and freq_pools {self.freq_pools} need the same length")
        need(not self.time_pools or len(self.time_pools) == len(self.conv_channels),
             f"time_pools {self.time_pools} needs one entry per conv block ({len(self.conv_channels)})")
        need(self.synth_clips_per_class >= 3, f"synth_clips_per_class must be >= 3, got {self.synth_clips_per_class}")
        need(self.synth_seconds > 0, f"synth_seconds must be > 0, got {self.synth_seconds}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("spec_time_masks", "spec_time_mask_frames", "spec_freq_masks", "spec_freq_mask_bins"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 0,
                 f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        need(self.spec_freq_mask_bins <= self.n_mels,
             f"spec_freq_mask_bins ({self.spec_freq_mask_bins}) must be <= n_mels ({self.n_mels})")
        need(math.isfinite(self.mixup_alpha) and self.mixup_alpha >= 0,
             f"mixup_alpha must be >= 0, got {self.mixup_alpha}")
        need(0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(math.isfinite(self.eq_db) and 0.0 <= self.eq_db <= 40.0, f"eq_db must be in [0, 40] dB, got {self.eq_db}")
        need(self.test_checkpoint in TEST_CHECKPOINTS,
             f"test_checkpoint must be one of {TEST_CHECKPOINTS}, got {self.test_checkpoint!r}")
        need(self.early_stop_patience >= 0, f"early_stop_patience must be >= 0, got {self.early_stop_patience}")

    # ------------------------------------------------------------------------------------------------
    @property
    def crop_samples(self) -> int:
        """Training/eval window length in samples."""
        return int(round(self.crop_seconds * self.sample_rate))

    @property
    def eval_hop_samples(self) -> int:
        """Hop between evaluation windows in samples."""
        hop = self.crop_seconds if self.eval_hop_seconds is None else self.eval_hop_seconds
        return max(1, int(round(hop * self.sample_rate)))

    def conv_dropout_rate(self) -> float:
        return self.conv_dropout if self.dropout is None else self.dropout

    def final_dropout_rate(self) -> float:
        return self.final_dropout if self.dropout is None else self.dropout

    def resolved_workdir(self) -> str:
        if self.workdir:
            return self.workdir
        data = "synthetic" if self.data == "synthetic" else os.path.basename(os.path.normpath(self.data)) or "data"
        data = data.replace(":", "-")
        return os.path.join("runs", f"{self.model}-{data}-seed{self.seed}")

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        # JSON has no tuples: restore them so configs compare equal after a round trip.
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**clean)


def load_preset(path: str) -> Config:
    """Load `config` (or `get_config()`) from a preset file such as experiments/seed_report.py."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no such preset file: {path}")
    spec = importlib.util.spec_from_file_location(f"crnn_jax_preset_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except ConfigError:
        raise
    except Exception as e:  # a broken preset is user input: one line, not a traceback
        raise ConfigError(f"--config: {path} failed to load: {type(e).__name__}: {e}") from None
    if hasattr(module, "get_config"):
        cfg = module.get_config()
    elif hasattr(module, "config"):
        cfg = module.config
    else:
        raise ConfigError(f"--config: {path} defines neither `config` nor `get_config()`")
    if not isinstance(cfg, Config):
        raise ConfigError(f"--config: {path} must define a crnn_jax.config.Config, got {type(cfg).__name__}")
    return cfg


def default_config(backend: str) -> Config:
    """What `python -m crnn_jax.train` runs with no --config: the built-in synthetic set.

    On a GPU/TPU: Choi-size CRNN. On a CPU the same CRNN family, lighter (fewer channels, shorter clips)
    so that the run finishes in a few minutes on a laptop; the choice is printed with the config. The CPU
    run takes 9 steps per device call (a third of its 27-step epoch, logging at the same interval so every
    call has the same length and compiles once): one step per call lost 20-60 ms a call to per-call
    overhead there (experiments/BENCHMARKS.md); the metrics are the same either way. The GPU run takes 11
    (half its 22-step epoch) for the same reason, where launch latency costs more (not yet measured: no
    GPU has been available to this project).
    """
    if backend in ("gpu", "cuda", "rocm", "tpu"):
        return Config(synth_clips_per_class=100, synth_seconds=10.0, epochs=20, steps_per_call=11, log_every=11)
    return Config(conv_channels=(32, 64, 64, 64), synth_clips_per_class=60, synth_seconds=6.0, epochs=8,
                  batch_size=16, steps_per_call=9, log_every=9)
