"""Run configuration as code: one frozen dataclass, presets in `experiments/<name>.py`, flags on top.

A preset file defines `config = Config(...)` (or `get_config() -> Config`). Command-line flags override
the preset field by field; the resolved config is printed at the start of a run and saved as
`<workdir>/config.json`, so every run can be reproduced from its workdir alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
from typing import Any

from crnn_jax.errors import ConfigError
from crnn_jax.mel import MelConfig

MODELS = ("crnn", "cnn")
HEADS = ("softmax", "sigmoid")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("constant", "cosine")
AUTO_TIME_POOLS = (2, 3, 4, 4)  # = model.CHOI_TIME_POOLS: automatic time pools exist for this many blocks
TEST_CHECKPOINTS = ("best", "last")
GROUPINGS = ("", "artist", "album", "folder")




def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the songs come from and how they are split (crnn_jax.data)."""

    data: str = "synthetic"  # "synthetic", a folder of genre sub-folders, or "tfds:gtzan"
    split: str = "random"  # random | fault-filtered | kfold:K | a folder with train/valid/test.txt
    fold: int = 0  # which fold is the test fold with split="kfold:K"
    group_by: str = ""  # "" (songs) | artist | album | folder: random/kfold splits keep each group on one side
    test_fraction: float = 0.2  # random split: share of songs per class held out for test
    valid_fraction: float = 0.1  # random split: share of songs per class for validation (0: none)
    cache_dir: str = ""  # decoded-audio cache; "" = ~/.cache/crnn_jax
    workers: int = 0  # processes decoding a folder into the cache; 0 = one per CPU core
    synth_clips_per_class: int = 100  # built-in data: clips per class
    synth_seconds: float = 8.0  # built-in data: clip length, s


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network (crnn_jax.model)."""

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


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Algorithm 8.6 and its schedule (crnn_jax.optim, training.steps.make_optimizer)."""

    learning_rate: float = 1e-3  # the book's global learning rate epsilon
    lr_schedule: str = "constant"  # constant | cosine (cosine decay to 0 over the run)
    rms_decay: float = 0.9  # rho
    momentum: float = 0.9  # alpha
    eps: float = 1e-8  # inside the square root, as delta in the book's Algorithm 8.5
    weight_decay: float = 0.0  # decoupled: theta <- theta + v - lr_t * weight_decay * theta, kernels only; 0 = off
    warmup_steps: int = 0  # linear warm-up of the learning rate over this many steps (times the schedule); 0 = off
    batch_size: int = 32  # global, over all devices and processes
    epochs: int = 10  # an epoch = every training song once, one random crop each
    max_steps: int | None = None  # overrides epochs when set


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentations inside the jitted step, functions of (seed, step) (training.augment); all off by default."""

    gain_db: float = 6.0  # random gain, uniform in +-gain_db dB
    spec_time_masks: int = 0  # SpecAugment time masks per example (0 = off)
    spec_time_mask_frames: int = 8  # each time mask's width, uniform in [0, this] frames
    spec_freq_masks: int = 0  # SpecAugment frequency masks per example (0 = off)
    spec_freq_mask_bins: int = 8  # each frequency mask's width, uniform in [0, this] mel bands
    mixup_alpha: float = 0.0  # waveform mixup with lambda ~ Beta(alpha, alpha) and soft targets (0 = off)
    label_smoothing: float = 0.0  # targets (1 - s) one-hot + s / n_classes (sigmoid head: + s / 2) (0 = off)
    eq_db: float = 0.0  # random EQ: a smooth per-mel-band gain curve within +-eq_db dB (0 = off)
    speed_change: float = 0.0  # pitch + tempo by resampling: playback rate in [1/(1+d), 1+d], log-uniform (0 = off)

    @property
    def spec_masks(self) -> bool:
        return ((self.spec_time_masks > 0 and self.spec_time_mask_frames > 0)
                or (self.spec_freq_masks > 0 and self.spec_freq_mask_bins > 0))

    @property
    def soft_targets(self) -> bool:
        return self.mixup_alpha > 0 or self.label_smoothing > 0

    @property
    def active(self) -> bool:
        """Anything beyond the random gain is on (else the step is the plain one)."""
        return self.spec_masks or self.soft_targets or self.eq_db > 0 or self.speed_change > 0


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Seeds, windows and bookkeeping of one run (training.loop)."""

    seed: int = 0
    # Ensemble member: 0 trains with `seed` itself; m > 0 with another initialisation, crop, dropout and
    # augmentation stream (train_seed) on the very same split (the split stays a function of `seed`).
    member: int = 0
    ensemble: int = 1  # crnn_jax.cv: members 0..ensemble-1 per fold, scored by their mean song log-probability
    crop_seconds: float = 3.0  # training/eval window, s
    eval_hop_seconds: float | None = None  # hop between eval windows, s; None = crop_seconds
    workdir: str = ""  # "" = runs/<model>-<data>-seed<seed> (+ -m<member> for member > 0)
    log_every: int = 20  # steps between train-metric lines
    eval_every: int = 0  # steps between validation passes; 0 = once per epoch
    checkpoint_every: int = 200  # steps between checkpoints (and always at the end)
    steps_per_call: int = 1  # training steps fused into one device call (lax.scan)
    data_placement: str = "auto"  # auto | device (data set resident on every device) | host (streamed)
    device_data_gb: float = 4.0  # auto: keep the data on the devices when its int16 audio fits this, GiB
    test_checkpoint: str = "best"  # best (by validation song accuracy; "last" when there is no validation split) | last
    early_stop_patience: int = 0  # stop after this many validation passes without a new best; 0 = off


SECTIONS = (DataConfig, MelConfig, ModelConfig, OptimConfig, AugmentConfig, RunConfig)


@dataclasses.dataclass(frozen=True)
class Config(RunConfig, AugmentConfig, OptimConfig, ModelConfig, MelConfig, DataConfig):
    """The whole run: every field declared once, in its section (DataConfig, mel.MelConfig for the front end,
    ModelConfig, OptimConfig, AugmentConfig, RunConfig), all reachable by name (`cfg.n_mels`, `Config(n_mels=64)`,
    `--set n_mels=64`); a module takes its own section (`cfg.mel`, `cfg.augment`). Validated when built."""

    # ------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.model in MODELS, f"--model must be one of {MODELS}, got {self.model!r}")
        need(self.group_by in GROUPINGS, f"--group-by must be one of {', '.join(g or '(none)' for g in GROUPINGS)}, "
             f"got {self.group_by!r}")
        need(isinstance(self.workers, int) and self.workers >= 0, f"--workers must be an integer >= 0 (0 = one per "
             f"CPU core), got {self.workers!r}")
        need(self.top_db is None or self.top_db >= 0, f"top_db must be >= 0 dB or None, got {self.top_db!r}")
        need(self.power > 0, f"power must be > 0, got {self.power!r}")
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
        self._check_network()
        need(self.synth_clips_per_class >= 3, f"synth_clips_per_class must be >= 3, got {self.synth_clips_per_class}")
        need(self.synth_seconds > 0, f"synth_seconds must be > 0, got {self.synth_seconds}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be >= 0, got {self.weight_decay}")
        need(isinstance(self.member, int) and self.member >= 0, f"member must be an integer >= 0, got {self.member!r}")
        need(isinstance(self.ensemble, int) and self.ensemble >= 1,
             f"ensemble must be an integer >= 1, got {self.ensemble!r}")
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
        need(math.isfinite(self.speed_change) and 0.0 <= self.speed_change <= 0.5,
             f"speed_change must be in [0, 0.5] (0.1 = up to 10% faster or slower), got {self.speed_change}")
        need(self.test_checkpoint in TEST_CHECKPOINTS,
             f"test_checkpoint must be one of {TEST_CHECKPOINTS}, got {self.test_checkpoint!r}")
        need(self.early_stop_patience >= 0, f"early_stop_patience must be >= 0, got {self.early_stop_patience}")

    def _check_network(self) -> None:
        """The front end and the pools fit together (checked here, before any audio is decoded): every
        filter of the mel filterbank covers an FFT bin, every conv block sees >= 1 mel band and >= 1 frame."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        def positive_ints(name: str, xs: tuple) -> None:
            need(all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in xs),
                 f"{name} must hold positive integers, got {xs}")

        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "min_gru_steps"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                 f"{name} must be a positive integer, got {v!r}")
        need(self.hop_length <= self.n_fft, f"hop_length {self.hop_length} is longer than the FFT window "
             f"n_fft {self.n_fft}: audio between frames would be skipped; use hop_length <= n_fft")
        nyquist = self.sample_rate / 2
        need(self.f_max is not None, "f_max must be a frequency in Hz (e.g. the Nyquist frequency), not None")
        need(0.0 <= self.f_min, f"f_min must be >= 0 Hz, got {self.f_min}")
        need(self.f_max <= nyquist, f"f_max {self.f_max} Hz is above the Nyquist frequency of sample_rate "
             f"{self.sample_rate} Hz; set f_max <= {nyquist:g}")
        need(self.f_min < self.f_max, f"f_min {self.f_min} Hz must be below f_max {self.f_max} Hz")
        empty = _empty_mel_filters(self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max)
        need(not empty, f"n_mels {self.n_mels} leaves {empty} empty mel filters at n_fft {self.n_fft} between "
             f"{self.f_min:g} and {self.f_max:g} Hz; lower n_mels or raise n_fft")
        need(len(self.conv_channels) >= 1, "conv_channels needs at least one conv block")
        positive_ints("conv_channels", self.conv_channels)
        positive_ints("freq_pools", self.freq_pools)
        positive_ints("time_pools", self.time_pools)
        positive_ints("gru_units", self.gru_units)
        need(bool(self.time_pools) or len(self.conv_channels) <= len(AUTO_TIME_POOLS),
             f"{len(self.conv_channels)} conv blocks but automatic time pools exist for at most "
             f"{len(AUTO_TIME_POOLS)}; give time_pools, one per block")
        need(math.prod(self.freq_pools) <= self.n_mels,
             f"freq_pools {self.freq_pools} pool {math.prod(self.freq_pools)} mel bands into one but n_mels is "
             f"{self.n_mels}: the last conv block would see no band; raise n_mels or lower the pools")
        # Frames of one crop, as mel.MelConfig.n_frames counts them (centred STFT).
        frames = 1 + (self.crop_samples + 2 * (self.n_fft // 2) - self.n_fft) // self.hop_length
        need(not self.time_pools or math.prod(self.time_pools) <= frames,
             f"a {self.crop_seconds} s crop is {frames} frames, fewer than the {math.prod(self.time_pools)} "
             f"the time_pools {self.time_pools} reduce to one step; use a longer --crop-seconds or smaller pools")
        need(self.eval_hop_seconds is None or self.eval_hop_seconds > 0,
             f"eval_hop_seconds must be > 0, got {self.eval_hop_seconds}")

    # ------------------------------------------------------------------------------------------------
    @property
    def crop_samples(self) -> int:
        """Training/eval window length in samples."""
        return int(round(self.crop_seconds * self.sample_rate))

    @property
    def read_samples(self) -> int:
        """Samples read for one training crop: the crop itself, or with speed_change the longest stretch
        that a crop played at rate 1 + speed_change consumes (augment.resample), plus the interpolation's
        right neighbour."""
        if not self.speed_change:
            return self.crop_samples
        return math.ceil(self.crop_samples * (1.0 + self.speed_change)) + 1

    @property
    def eval_hop_samples(self) -> int:
        """Hop between evaluation windows in samples."""
        hop = self.crop_seconds if self.eval_hop_seconds is None else self.eval_hop_seconds
        return max(1, int(round(hop * self.sample_rate)))

    @property
    def train_seed(self) -> int:
        """The seed of a run's training randomness (initialisation, crops, gains, dropout, augmentation):
        `seed` for member 0, so a single run is what it always was; another 31-bit seed for each member > 0."""
        if self.member == 0:
            return self.seed
        digest = hashlib.sha256(f"crnn_jax member {self.seed} {self.member}".encode()).digest()
        return int.from_bytes(digest[:4], "little") >> 1

    def section(self, cls: type) -> Any:
        """This config's fields of one section (a SECTIONS class) as an instance of that section."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    @property
    def mel(self) -> MelConfig:
        """The front-end section: what mel.log_mel_spectrogram and the model's front end take."""
        return self.section(MelConfig)

    @property
    def augment(self) -> AugmentConfig:
        """The augmentation section: what training.augment applies."""
        return self.section(AugmentConfig)

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (config.json's content)."""
        return json.loads(self.to_json())

    def conv_dropout_rate(self) -> float:
        return self.conv_dropout if self.dropout is None else self.dropout

    def final_dropout_rate(self) -> float:
        return self.final_dropout if self.dropout is None else self.dropout

    def resolved_workdir(self) -> str:
        if self.workdir:
            return self.workdir
        data = "synthetic" if self.data == "synthetic" else os.path.basename(os.path.normpath(self.data)) or "data"
        data = data.replace(":", "-")
        return os.path.join("runs", f"{self.model}-{data}-seed{self.seed}" + (f"-m{self.member}" if self.member else ""))

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


def _empty_mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> int:
    """How many triangles of mel.mel_filterbank would cover no FFT bin (computed here, without numpy or mel,
    with the same HTK scale: m = 2595 log10(1 + f / 700), n_mels + 2 edges equally spaced in mel). A filter
    is non-empty when some bin k * sample_rate / n_fft, k <= n_fft // 2, lies strictly between its edges."""
    to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    lo, hi = to_mel(f_min), to_mel(f_max)
    edges = [700.0 * (10.0 ** ((lo + i * (hi - lo) / (n_mels + 1)) / 2595.0) - 1.0) for i in range(n_mels + 2)]
    df = sample_rate / n_fft  # Hz between FFT bins
    empty = 0
    for lower, upper in zip(edges[:-2], edges[2:]):
        k = math.floor(lower / df) + 1  # the first bin above the lower edge
        empty += not (k <= n_fft // 2 and k * df < upper)
    return empty


def load_preset(path: str) -> Config:
    """Load `config` (or `get_config()`) from a preset file such as experiments/seed_report.py."""
    if os.path.isdir(path):
        raise ConfigError(f"--config {path} is a folder; pass a preset file such as experiments/smoke.py")
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


def parse_override(text: str) -> tuple[str, Any]:
    """One `--set field=value` -> (field, value), the value parsed by the Config field's type: int, float,
    str, bool (true/false/1/0/yes/no), tuples as comma lists ("" = empty), "None" where the field allows it.
    Works for every field of Config, whoever added it. ConfigError (one line) for an unknown field or a bad value."""
    import difflib
    import typing

    name, eq, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    hints = typing.get_type_hints(Config)
    if not eq or not name:
        raise ConfigError(f"--set {text!r}: write field=value, e.g. --set n_mels=64")
    if name not in hints:
        close = difflib.get_close_matches(name, list(hints), n=1)
        raise ConfigError(f"--set {text!r}: Config has no field {name!r}"
                          + (f" (did you mean {close[0]}?)" if close else f"; fields: {', '.join(hints)}"))
    try:
        return name, _parse_typed(raw.strip(), hints[name])
    except (TypeError, ValueError):
        raise ConfigError(f"--set {text!r}: {raw.strip()!r} is not a valid {_type_name(hints[name])} "
                          f"for {name}") from None


def _parse_typed(raw: str, typ: Any) -> Any:
    import types
    import typing

    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType):  # X | None
        if type(None) in args and raw.lower() in ("none", "null"):
            return None
        (typ,) = [a for a in args if a is not type(None)]
        args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple:
        return tuple(_parse_typed(v.strip(), args[0]) for v in raw.strip("()[]").split(",") if v.strip())
    if typ is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if raw.lower() not in words:
            raise ValueError(raw)
        return words[raw.lower()]
    if typ is float:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(raw)
        return value
    return typ(raw)  # int, str


def _type_name(typ: Any) -> str:
    return str(typ).replace("typing.", "").replace("<class '", "").replace("'>", "")


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
