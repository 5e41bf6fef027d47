"""The networks: a log-mel front end, four conv blocks, then GRUs (CRNN) or global pooling (CNN).

Everything runs inside the jitted step from raw audio, so random crops and gains cost nothing on the host:

    audio [batch, samples] --mel.log_mel_spectrogram--> [batch, frames, n_mels]
      --BatchNorm over frequency (Choi et al. 2017)--> [batch, frames, n_mels, 1]
      --4 x (Conv 3x3 -> BatchNorm -> ELU -> MaxPool -> Dropout)--> [batch, frames', mels', channels]
      CRNN: fold mels' into channels -> GRU -> GRU (last step) -> Dropout -> Dense -> [batch, n_classes]
      CNN:  mean over (frames', mels') -> Dropout -> Dense -> [batch, n_classes]

Layout is NHWC with H = time and W = frequency, so pools are written (time, freq). Defaults follow Choi,
Fazekas, Sandler & Cho, "Convolutional recurrent neural networks for music classification" (ICASSP 2017):
channels 64/128/128/128, GRU 32/32, about 0.39 M parameters. Choi pooled (freq, time) by (2,2), (3,3),
(4,4), (4,4) on 29 s inputs: 96 mels fold to 1 and ~1300 frames to ~13 GRU steps. On a 3 s crop (130
frames) that would leave a single step and nothing for a recurrent layer to do, so `auto_time_pools`
keeps Choi's time pools while the GRU still sees at least `min_steps` steps, and otherwise lowers the
largest pool first: 3 s crops get (2, 2, 2, 2), i.e. 8 steps of ~0.37 s each.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from crnn_jax import mel, ops
from crnn_jax import pcen as pcen_lib
from crnn_jax.config_checks import CHOI_TIME_POOLS  # declared once, where configs are checked
# Running averages of BatchNorm statistics: 0.9, not flax's 0.99. Runs here are a few hundred steps, and
# at 0.99 the averages still carried ~26% of their initial values after 135 steps, so evaluation (which
# uses them) lagged training badly on some seeds (a CRNN scored 0.475 by song where others scored ~0.9).
BN_MOMENTUM = 0.9


def auto_time_pools(n_frames: int, min_steps: int = 8, base: Sequence[int] = CHOI_TIME_POOLS) -> tuple[int, ...]:
    """Time pools for a crop of `n_frames` frames: Choi's, relaxed until >= min_steps GRU steps remain.

    Lowers the largest pool (the last one among ties) by one at a time; never below 1.
    -> one pool size per conv block.
    """
    pools = list(base)
    while n_frames // math.prod(pools) < min_steps and max(pools) > 1:
        i = max(range(len(pools)), key=lambda j: (pools[j], j))
        pools[i] -= 1
    return tuple(pools)


class ConvBlock(nn.Module):
    """Conv 3x3 -> BatchNorm -> ELU -> MaxPool -> Dropout on [batch, time, freq, channels]."""

    features: int
    pool: tuple[int, int]  # (time, freq)
    dropout: float
    axis_name: str | None = None  # BatchNorm statistics are averaged over this pmap axis in training
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = ops.conv_general_dilated_for()  # the backend's convolution kernels, chosen in ops.py
        # No bias: the BatchNorm right after subtracts the mean, so a bias is dead weight that RMSprop still moves.
        x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype, conv_general_dilated=conv)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, axis_name=self.axis_name if train else None,
                         dtype=self.dtype)(x)
        x = nn.elu(x)
        x = ops.max_pool(x, self.pool)
        return nn.Dropout(self.dropout, deterministic=not train)(x)


def compressed_mel(audio: jax.Array, c: mel.MelConfig) -> jax.Array:
    """Audio in [-1, 1] at c.sample_rate Hz [..., samples] -> the front end's features [..., frames, n_mels]:
    log-mel in dB (compression "db") or PCEN ("pcen") of the mel spectrogram of the audio scaled to the 32-bit
    integer range, as librosa's docs scale PCEN's input (2**31 per unit of amplitude, to the power c.power)."""
    if c.compression == "db":
        return mel.log_mel_spectrogram(audio, c)
    S = mel.mel_spectrogram(audio, sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length,
                            n_mels=c.n_mels, f_min=c.f_min, f_max=c.f_max, power=c.power)
    return pcen_lib.pcen(S * pcen_lib.INPUT_SCALE ** c.power, sample_rate=c.sample_rate, hop_length=c.hop_length)


class Frontend(nn.Module):
    """Raw audio [batch, samples] -> normalised log-mel (or PCEN) [batch, frames, n_mels, 1], float32 throughout.

    The normalisation is a BatchNorm over the frequency axis (one mean/variance per mel band, taken over
    batch and time), as in Choi et al.; it also absorbs the dB offset of the random gain augmentation.
    """

    mel_config: mel.MelConfig
    axis_name: str | None = None

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool, spec_mask: jax.Array | None = None,
                 band_db: jax.Array | None = None) -> jax.Array:
        """spec_mask: bool [batch, frames, n_mels], cells set to 0 (each band's mean) after the
        normalisation; band_db: [batch, n_mels] dB added to the log-mel before it (augment.py draws both;
        None = not applied)."""
        x = compressed_mel(audio.astype(jnp.float32), self.mel_config)  # [batch, frames, n_mels]
        if band_db is not None:
            x = x + band_db[:, None, :]  # a gain per mel band: a random EQ
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                         axis_name=self.axis_name if train else None, name="input_norm")(x)
        if spec_mask is not None:
            x = jnp.where(spec_mask, 0.0, x)  # 0 = the band's mean after normalisation (augment.py says why)
        return x[..., None]  # [batch, frames, n_mels, 1]: one input channel for the 2-D convs


class _ConvStack(nn.Module):
    conv_channels: Sequence[int]
    time_pools: Sequence[int]
    freq_pools: Sequence[int]
    conv_dropout: float
    axis_name: str | None
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        for i, (c, tp, fp) in enumerate(zip(self.conv_channels, self.time_pools, self.freq_pools)):
            x = ConvBlock(c, (tp, fp), self.conv_dropout, self.axis_name, self.dtype, name=f"conv{i}")(x, train=train)
        return x  # [batch, frames', mels', channels]


class _Classifier(nn.Module):
    """What the CRNN and the CNN share: their attributes and the front end + conv blocks."""

    n_classes: int
    mel_config: mel.MelConfig
    time_pools: Sequence[int]
    conv_channels: Sequence[int] = (64, 128, 128, 128)
    freq_pools: Sequence[int] = (2, 3, 4, 4)
    conv_dropout: float = 0.1
    final_dropout: float = 0.3
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32

    def _conv_features(self, audio: jax.Array, train: bool, augment: dict) -> jax.Array:
        """audio [batch, samples] -> [batch, frames', mels', channels]; called from the compact __call__."""
        x = Frontend(self.mel_config, self.axis_name, name="frontend")(audio, train=train, **augment)
        return _ConvStack(self.conv_channels, self.time_pools, self.freq_pools, self.conv_dropout,
                          self.axis_name, self.dtype, name="convs")(x, train=train)

    def _output(self, x: jax.Array, train: bool) -> jax.Array:
        """[batch, features] -> Dropout -> Dense -> logits [batch, n_classes], float32."""
        x = nn.Dropout(self.final_dropout, deterministic=not train)(x)
        return nn.Dense(self.n_classes, dtype=self.dtype, name="out")(x).astype(jnp.float32)


class CRNN(_Classifier):
    """Convolutional-recurrent network: log-mel -> 4 conv blocks -> 2 GRUs -> logits [batch, n_classes].

    Attributes: n_classes; mel_config (front-end settings); conv_channels, time_pools, freq_pools (one per
    block; pools are window = stride); gru_units (one GRU layer each); conv_dropout after every conv
    block; final_dropout before the output; axis_name for cross-device BatchNorm; dtype of the convs,
    GRUs and output layer (parameters stay float32).
    """

    gru_units: Sequence[int] = (32, 32)

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool, **augment: jax.Array) -> jax.Array:
        """augment: Frontend's spec_mask / band_db (training augmentations), if any."""
        x = self._conv_features(audio, train, augment)
        b, t, f, c = x.shape
        x = x.reshape(b, t, f * c)  # [batch, steps, mels' * channels]: frequency folded into features
        for i, units in enumerate(self.gru_units):
            x = nn.RNN(nn.GRUCell(units, dtype=self.dtype, parent=None), name=f"gru{i}")(x)  # [batch, steps, units]
        return self._output(x[:, -1], train)  # the last GRU step has read the whole window


class CNN(_Classifier):
    """The report's plain-CNN baseline: the same front end and conv blocks, global mean pooling, Dense.
    Attributes as CRNN's, without gru_units."""

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool, **augment: jax.Array) -> jax.Array:
        """augment: Frontend's spec_mask / band_db (training augmentations), if any."""
        return self._output(self._conv_features(audio, train, augment).mean(axis=(1, 2)), train)  # [batch, channels]


def time_pools_of(cfg) -> tuple[int, ...]:
    """The time pools a `config.Config` asks for, chosen from its crop length when not given."""
    if cfg.time_pools:
        return tuple(cfg.time_pools)
    n_frames = cfg.mel.n_frames(cfg.crop_samples)
    return auto_time_pools(n_frames, cfg.min_gru_steps, CHOI_TIME_POOLS[: len(cfg.conv_channels)])


def build_model(cfg, n_classes: int, *, axis_name: str | None = None) -> nn.Module:
    """The CRNN or CNN a `config.Config` describes; axis_name is the pmap axis for BatchNorm."""
    common = dict(n_classes=n_classes, mel_config=cfg.mel, time_pools=time_pools_of(cfg),
                  conv_channels=tuple(cfg.conv_channels), freq_pools=tuple(cfg.freq_pools),
                  conv_dropout=cfg.conv_dropout_rate(), final_dropout=cfg.final_dropout_rate(),
                  axis_name=axis_name, dtype=jnp.bfloat16 if cfg.precision == "bf16" else jnp.float32)
    if cfg.model == "crnn":
        return CRNN(gru_units=tuple(cfg.gru_units), **common)
    return CNN(**common)


def log_probs(logits: jax.Array, head: str) -> jax.Array:
    """Per-class log-probabilities [batch, n_classes] of a head's logits.

    softmax: log-softmax (sums to one). sigmoid: log-sigmoid of each output (the report's ten independent
    probabilities); song-level aggregation averages these over windows either way.
    """
    return jax.nn.log_softmax(logits) if head == "softmax" else jax.nn.log_sigmoid(logits)


def loss_fn(logits: jax.Array, labels: jax.Array, head: str) -> jax.Array:
    """Per-example loss [batch]: softmax cross-entropy, or binary cross-entropy on one-hot labels (sigmoid).

    The sigmoid head's loss is the mean over classes of the ten binary cross-entropies.
    """
    if head == "softmax":
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return optax.sigmoid_binary_cross_entropy(logits, one_hot).mean(axis=-1)


def soft_loss_fn(logits: jax.Array, targets: jax.Array, head: str) -> jax.Array:
    """Per-example loss [batch] against soft targets [batch, n_classes] (label smoothing, mixup):
    softmax cross-entropy with a target distribution, or the mean over classes of the binary
    cross-entropies with targets in [0, 1] (sigmoid)."""
    if head == "softmax":
        return optax.softmax_cross_entropy(logits, targets)
    return optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype)).mean(axis=-1)
