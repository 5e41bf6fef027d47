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

from crnn_jax import config_checks
from crnn_jax.config_checks import GROUPINGS, MODELS  # noqa: F401  (named by callers)
from crnn_jax.errors import ConfigError
from crnn_jax.mel import MelConfig





@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the songs come from and how they are split (crnn_jax.data)."""

    data: str = "synthetic"  # "synthetic", a folder of genre sub-folders, or "tfds:gtzan"
    split: str = "random"  # random | fault-filtered | kfold:K | all (with test_data) | a folder with train/valid/test.txt
    fold: int = 0  # which fold is the test fold with split="kfold:K"
    group_by: str = ""  # "" (songs) | artist | album | folder: random/kfold splits keep each group on one side
    test_data: str = ""  # a folder (or tfds:gtzan) whose every song is the test set, e.g. other artists; "" = none
    test_fraction: float = 0.2  # random split: share of songs per class held out for test
    valid_fraction: float = 0.1  # random split: share of songs per class for validation (0: none)
    cache_dir: str = ""  # decoded-audio cache; "" = $CRNN_JAX_CACHE or ~/.cache/crnn_jax
    workers: int = 0  # processes decoding a folder into the cache; 0 = one per core (fewer for small folders)
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
    """Augmentations inside the jitted step, functions of (seed, step) (training.augment); all off by default
    but the random gain (gain_db)."""

    gain_db: float = 6.0  # random gain, uniform in +-gain_db dB
    spec_time_masks: int = 0  # SpecAugment time masks per example (0 = off)
    spec_time_mask_frames: int = 8  # each time mask's width, uniform in [0, this] frames
    spec_freq_masks: int = 0  # SpecAugment frequency masks per example (0 = off)
    spec_freq_mask_bins: int = 8  # each frequency mask's width, uniform in [0, this] mel bands
    mixup_alpha: float = 0.0  # waveform mixup with lambda ~ Beta(alpha, alpha) and soft targets (0 = off)
    label_smoothing: float = 0.0  # targets (1 - s) one-hot + s / n_classes (sigmoid head: + s / 2) (0 = off)
    eq_db: float = 0.0  # random EQ: a smooth per-mel-band gain curve within +-eq_db dB (0 = off)
    speed_change: float = 0.0  # pitch + tempo by resampling: playback rate in [1/(1+d), 1+d], log-uniform (0 = off)
    lowpass_prob: float = 0.0  # share of crops low-passed at a cutoff log-uniform in [lowpass_min_hz, Nyquist] (0 = off)
    lowpass_min_hz: float = 3000.0  # Hz, the lowest cutoff of the random low-pass

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
        return self.spec_masks or self.soft_targets or self.eq_db > 0 or self.speed_change > 0 or self.lowpass_prob > 0


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Seeds, windows and bookkeeping of one run (training.loop)."""

    seed: int = 0
    # Ensemble member: 0 trains with `seed` itself; m > 0 with another initialisation, crop, dropout and
    # augmentation stream (train_seed) on the very same split (the split stays a function of `seed`).
    member: int = 0
    # Networks of an ensemble: members 0..ensemble-1 (Config.members), each song scored by their mean song
    # log-probability; crnn-jax train trains WORKDIR, WORKDIR-m1, ...; crnn_jax.cv does so per fold.
    ensemble: int = 1
    crop_seconds: float = 3.0  # training/eval window, s
    eval_hop_seconds: float | None = None  # hop between eval windows, s; None = crop_seconds
    workdir: str = ""  # "" = runs/<model>-<data>-seed<seed> (+ -m<member> for member > 0); ensemble: WORKDIR-m<m>
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
    # ------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        config_checks.check(self)  # every field, alone and together: one-line ConfigErrors

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

    def data_name(self) -> str:
        """The data's short name for default folder names: the folder's own name, 'tfds-gtzan', 'synthetic'."""
        data = "synthetic" if self.data == "synthetic" else os.path.basename(os.path.normpath(self.data)) or "data"
        return data.replace(":", "-")

    def resolved_workdir(self) -> str:
        if self.workdir:
            return self.workdir
        name = f"{self.model}-{self.data_name()}-seed{self.seed}"
        return member_workdir(os.path.join("runs", name), self.member)

    def members(self) -> list["Config"]:
        """The runs of an ensemble: `ensemble` configs of one network each (ensemble=1), member m with its own
        train_seed and workdir WORKDIR-m<m> (member 0: this config's workdir); [self] for a single network."""
        if self.ensemble == 1:
            return [self]
        first = self.replace(ensemble=1)
        base = os.path.normpath(first.resolved_workdir())  # "runs/x/" -> "runs/x": members beside it, not inside
        if os.path.basename(base) in ("", ".", ".."):
            raise ConfigError(f"--workdir {first.workdir} names no folder of its own for member 0; an ensemble "
                              f"puts member m beside it as WORKDIR-m<m>: give a named folder, e.g. runs/ensemble")
        return [first] + [first.replace(member=m, workdir=member_workdir(base, m)) for m in range(1, self.ensemble)]

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


def member_workdir(base: str, member: int) -> str:
    """Member m's workdir of an ensemble whose member 0 trains in `base`: base itself for m=0, else base-m<m>."""
    return f"{base}-m{member}" if member else base


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
        if not hasattr(module, "get_config") and not hasattr(module, "config"):
            raise ConfigError(f"--config: {path} defines neither `config` nor `get_config()`")
        cfg = module.get_config() if hasattr(module, "get_config") else module.config
    except ConfigError:
        raise
    except Exception as e:  # a broken preset is user input: one line, not a traceback
        raise ConfigError(f"--config: {path} failed to load: {type(e).__name__}: {e}") from None
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
