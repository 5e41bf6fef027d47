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

from crnn_jax import mel

CHOI_TIME_POOLS = (2, 3, 4, 4)
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


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 SAME convolution: x [batch, t, f, c_in], kernel [kh, kw, c_in, c_out] -> [batch, t, f, c_out]."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """The im2col matrix: the SAME-padded kh x kw neighbourhood of every pixel, [batch, t, f, c] ->
    [batch * t * f, kh * kw * c], each row ordered (dt, df, c) like an HWIO kernel reshaped to
    [kh * kw * c_in, c_out]."""
    b, t, f, c = x.shape
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))  # [batch, t + kh - 1, f + kw - 1, c]
    cols = jnp.concatenate([xp[:, i:i + t, j:j + f] for i in range(kh) for j in range(kw)], axis=-1)
    return cols.reshape(b * t * f, kh * kw * c)  # [pixels, kh * kw * c]


@jax.custom_vjp
def _conv_same_cpu(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """_conv_same with a gradient XLA's CPU backend runs fast (same values up to summation order).

    XLA computes a convolution's kernel gradient as a convolution whose window is the whole feature map
    (65 x 48 for the second block of a 3 s crop), and depending on the surrounding program its layout
    assignment leaves that convolution, and the input gradient's, in dimension orders (f01b_i01o,
    01oi) that its CPU runtime executes several times slower: the same CPU-preset training step (batch 16)
    took 0.26 s on its own and 2.7 s inside a length-1 lax.scan, as train.py runs it; the Choi-size step
    at batch 32 there took 9.8 s, and 1.4 s with this function. Here the kernel gradient is one matrix
    product of the im2col patches [pixels, kh * kw * c_in] with the output gradient [pixels, c_out], and
    the input gradient a plain convolution with a materialised flipped kernel: the fast form every time.
    """
    return _conv_same(x, kernel)


def _conv_same_cpu_fwd(x, kernel):
    return _conv_same(x, kernel), (x, kernel)


def _conv_same_cpu_bwd(residuals, g):
    x, kernel = residuals
    kh, kw, c_in, c_out = kernel.shape
    # The input gradient of a stride-1 SAME convolution with an odd kernel is the same convolution of g
    # with the kernel flipped in space and its channel axes swapped. The barrier keeps that small
    # [kh, kw, c_out, c_in] kernel materialised: folded into the convolution's dimension labels instead,
    # XLA:CPU sometimes picks the slow kernel layout (01oi).
    flipped = jax.lax.optimization_barrier(jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))  # [kh, kw, c_out, c_in]
    dx = _conv_same(g, flipped)  # [batch, t, f, c_in]
    patches = _patches(x, kh, kw)  # [pixels, kh * kw * c_in]
    dk = jnp.matmul(patches.T, g.reshape(-1, c_out), preferred_element_type=jnp.float32)  # [kh * kw * c_in, c_out]
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)  # [kh, kw, c_in, c_out]


_conv_same_cpu.defvjp(_conv_same_cpu_fwd, _conv_same_cpu_bwd)


def _conv_same_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """_conv_same as one matrix product of the im2col patches, differentiated by XLA: the fast form on
    XLA:CPU for few input channels (the first block's one), whose patches are small and whose direct
    convolution runs at ~6 GFLOP/s there (Choi size, batch 32: 0.13 s instead of 0.23 s forward and
    backward). x [batch, t, f, c_in], kernel [kh, kw, c_in, c_out] -> [batch, t, f, c_out]."""
    b, t, f, _ = x.shape
    kh, kw, c_in, c_out = kernel.shape
    y = jnp.matmul(_patches(x, kh, kw), kernel.reshape(kh * kw * c_in, c_out), preferred_element_type=jnp.float32)
    return y.astype(x.dtype).reshape(b, t, f, c_out)  # [batch, t, f, c_out]


def _conv_for_flax(lhs, rhs, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None,
                   feature_group_count=1, **unused):
    """ConvBlock's convolution on XLA's CPU backend, with lax.conv_general_dilated's signature for
    nn.Conv(conv_general_dilated=...): lhs [batch, t, f, c_in], rhs [kh, kw, c_in, c_out] -> [batch, t, f, c_out].
    _conv_same_im2col for at most 4 input channels, _conv_same_cpu otherwise (timings in their docstrings)."""
    kh, kw = rhs.shape[:2]
    if tuple(window_strides) != (1, 1) or padding != "SAME" or feature_group_count != 1 or any(
            d not in (None, (1, 1)) for d in (lhs_dilation, rhs_dilation)) or not (kh % 2 and kw % 2):
        raise ValueError("ConvBlock's CPU convolution supports odd kernels, stride 1, SAME padding, "
                         "no dilation, no groups only")
    if rhs.shape[2] <= 4:
        return _conv_same_im2col(lhs, rhs)
    return _conv_same_cpu(lhs, rhs)


def _max_pool(x: jax.Array, pool: tuple[int, int]) -> jax.Array:
    """Max over non-overlapping (time, freq) windows: [batch, t, f, c] -> [batch, t // tp, f // fp, c].

    The same values as nn.max_pool(x, pool, strides=pool) (VALID: ragged edges dropped), as a reshape and
    a max. The gradient of a reduce_window max makes XLA track the argmax with four int32 index arrays the
    size of the input (about half of a CPU training step, measured); this one is elementwise (ties share it).
    """
    b, t, f, c = x.shape
    tp, fp = pool
    x = x[:, : t - t % tp, : f - f % fp]  # drop the ragged edges, as VALID pooling does
    x = x.reshape(b, t // tp, tp, f // fp, fp, c)  # [batch, t', tp, f', fp, channels]: windows made axes
    return x.max(axis=(2, 4))


class ConvBlock(nn.Module):
    """Conv 3x3 -> BatchNorm -> ELU -> MaxPool -> Dropout on [batch, time, freq, channels]."""

    features: int
    pool: tuple[int, int]  # (time, freq)
    dropout: float
    axis_name: str | None = None  # BatchNorm statistics are averaged over this pmap axis in training
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # On CPU, _conv_for_flax takes gradients XLA:CPU runs fast; accelerators keep XLA's own.
        conv = _conv_for_flax if jax.default_backend() == "cpu" else None
        x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype, conv_general_dilated=conv)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, axis_name=self.axis_name if train else None,
                         dtype=self.dtype)(x)
        x = nn.elu(x)
        x = _max_pool(x, self.pool)
        return nn.Dropout(self.dropout, deterministic=not train)(x)


class Frontend(nn.Module):
    """Raw audio [batch, samples] -> normalised log-mel [batch, frames, n_mels, 1] (float32 throughout).

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
        x = mel.log_mel_spectrogram(audio.astype(jnp.float32), self.mel_config)  # [batch, frames, n_mels]
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


class CRNN(nn.Module):
    """Convolutional-recurrent network: log-mel -> 4 conv blocks -> 2 GRUs -> logits [batch, n_classes].

    Attributes: n_classes; mel_config (front-end settings); conv_channels, time_pools, freq_pools (one per
    block; pools are window = stride); gru_units (one GRU layer each); conv_dropout after every conv
    block; final_dropout before the output; axis_name for cross-device BatchNorm; dtype of the convs,
    GRUs and output layer (parameters stay float32).
    """

    n_classes: int
    mel_config: mel.MelConfig
    time_pools: Sequence[int]
    conv_channels: Sequence[int] = (64, 128, 128, 128)
    freq_pools: Sequence[int] = (2, 3, 4, 4)
    gru_units: Sequence[int] = (32, 32)
    conv_dropout: float = 0.1
    final_dropout: float = 0.3
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool, **augment: jax.Array) -> jax.Array:
        """augment: Frontend's spec_mask / band_db (training augmentations), if any."""
        x = Frontend(self.mel_config, self.axis_name, name="frontend")(audio, train=train, **augment)
        x = _ConvStack(self.conv_channels, self.time_pools, self.freq_pools, self.conv_dropout,
                       self.axis_name, self.dtype, name="convs")(x, train=train)
        b, t, f, c = x.shape
        x = x.reshape(b, t, f * c)  # [batch, steps, mels' * channels]: frequency folded into features
        for i, units in enumerate(self.gru_units):
            x = nn.RNN(nn.GRUCell(units, dtype=self.dtype, parent=None), name=f"gru{i}")(x)  # [batch, steps, units]
        x = x[:, -1]  # [batch, units]: the last GRU step has read the whole window
        x = nn.Dropout(self.final_dropout, deterministic=not train)(x)
        return nn.Dense(self.n_classes, dtype=self.dtype, name="out")(x).astype(jnp.float32)


class CNN(nn.Module):
    """The report's plain-CNN baseline: the same front end and conv blocks, global mean pooling, Dense."""

    n_classes: int
    mel_config: mel.MelConfig
    time_pools: Sequence[int]
    conv_channels: Sequence[int] = (64, 128, 128, 128)
    freq_pools: Sequence[int] = (2, 3, 4, 4)
    conv_dropout: float = 0.1
    final_dropout: float = 0.3
    axis_name: str | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool, **augment: jax.Array) -> jax.Array:
        """augment: Frontend's spec_mask / band_db (training augmentations), if any."""
        x = Frontend(self.mel_config, self.axis_name, name="frontend")(audio, train=train, **augment)
        x = _ConvStack(self.conv_channels, self.time_pools, self.freq_pools, self.conv_dropout,
                       self.axis_name, self.dtype, name="convs")(x, train=train)
        x = x.mean(axis=(1, 2))  # [batch, channels]
        x = nn.Dropout(self.final_dropout, deterministic=not train)(x)
        return nn.Dense(self.n_classes, dtype=self.dtype, name="out")(x).astype(jnp.float32)


def mel_config_of(cfg) -> mel.MelConfig:
    """The front-end settings of a `config.Config`."""
    return mel.MelConfig(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                         n_mels=cfg.n_mels, f_min=cfg.f_min, f_max=cfg.f_max)


def time_pools_of(cfg) -> tuple[int, ...]:
    """The time pools a `config.Config` asks for, chosen from its crop length when not given."""
    if cfg.time_pools:
        return tuple(cfg.time_pools)
    n_frames = mel_config_of(cfg).n_frames(cfg.crop_samples)
    return auto_time_pools(n_frames, cfg.min_gru_steps, CHOI_TIME_POOLS[: len(cfg.conv_channels)])


def build_model(cfg, n_classes: int, *, axis_name: str | None = None) -> nn.Module:
    """The CRNN or CNN a `config.Config` describes; axis_name is the pmap axis for BatchNorm."""
    common = dict(n_classes=n_classes, mel_config=mel_config_of(cfg), time_pools=time_pools_of(cfg),
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
