"""Training-time augmentations, run inside the jitted train step; each a pure function of (seed, step, example).

Every augmentation draws from its own key stream, apart from dropout's (dropout uses
fold_in(fold_in(PRNGKey(seed), step), device)): example i of the global batch of step `step` gets

    example_keys(seed, step, first, n)[j] = fold_in(fold_in(fold_in(PRNGKey(seed), STREAM), step), first + j)

and each augmentation folds in its own constant (TIME, FREQ, MIX, EQ), so turning one on never changes
another's draws nor a dropout mask. Keys follow the example's index in the *global* batch, so a run on one
device and one on several draw the same masks for the same example, and the shards of different devices
draw different ones. Turning every field off skips all of this (steps.py then runs the plain step).

The augmentations (Config fields; all off by default, presets turn them on):
- SpecAugment masks (Park et al. 2019), `spec_time_masks` x [0, `spec_time_mask_frames`] frames and
  `spec_freq_masks` x [0, `spec_freq_mask_bins`] mel bands: a boolean mask [batch, frames, n_mels] that
  model.Frontend applies AFTER its per-band BatchNorm by setting the masked cells to 0, i.e. to each band's
  running mean. Filling after normalisation keeps the BatchNorm statistics those of unmasked spectrograms,
  so the running averages used at evaluation (which never masks) match what training normalised; a fill
  before the BatchNorm (e.g. the per-example mean) would shrink the batch variance and the running
  averages with it.
- mixup (Zhang et al. 2018), `mixup_alpha`: on the WAVEFORM, before the log-mel. lambda x_a + (1 - lambda) x_b
  of two waveforms is a real recording of both pieces playing at once, and its log-mel is what the front
  end would compute for such a mix; a mix of two log-mels is the geometric mean of their spectra, which no
  recording produces. Partners are pairs of neighbouring examples of a device's shard (0<->1, 2<->3, ...;
  batches are already shuffled by data.sample_batch), so no data crosses devices; lambda ~ Beta(alpha, alpha)
  per example; the targets are mixed with the same lambda (soft targets: model.soft_loss_fn).
- label smoothing, `label_smoothing` s: softmax head (1 - s) one-hot + s / n_classes; sigmoid head, each
  of the independent binary targets (1 - s) y + s / 2.
- random EQ, `eq_db`: a gain curve over the mel bands in dB, piecewise linear through EQ_KNOTS points
  equally spaced on the mel axis, each uniform in +-eq_db, added to the log-mel (dB) before the BatchNorm.
  Adding dB per band is multiplying each band's power by a gain: a random smooth filter (shelves, tilts,
  broad peaks and notches) at the cost of [batch, n_mels] additions, instead of filtering the waveform.
- speed change by resampling, `speed_change` d: each crop is played at a rate r, log-uniform in
  [1/(1+d), 1+d], i.e. resampled by linear interpolation, y[n] = x(n r) for n < crop: pitch and tempo move
  together by the factor r (a record played faster or slower; "speed perturbation", Ko et al. 2015), the
  one pitch/time change a resampler makes exactly, with no phase-vocoder artefacts. The step reads
  cfg.read_samples = ceil(crop (1 + d)) + 1 samples per crop so that r = 1 + d stays inside the song.
  Linear interpolation is a low-pass that depends on where a sample falls (none on whole samples; halfway
  between two, -3 dB at a quarter of the sample rate and full cancellation at Nyquist); at
  r > 1 content above sample_rate / (2 r) folds back (at d = 0.1, 22,050 Hz: 10.0-11.0 kHz into the top
  mel bands), where music carries little energy. It runs first, so mixup mixes two resampled crops.
- random low-pass, `lowpass_prob` p: with probability p an example's crop loses everything above a cutoff
  log-uniform in [`lowpass_min_hz`, the Nyquist frequency] (a brick wall on the crop's FFT: rfft, zero the bins
  above, irfft), what a 16 kHz file (cutoff 8 kHz), a low-bitrate codec or a phone does to music; so the
  network cannot lean on a band a user's recording chain may not carry. It runs after the speed change and
  before mixup, on the waveform, so the log-mel sees a real band-limited signal (its top bands at the floor).
Random gain (`gain_db`) is drawn by data.sample_batch, as before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crnn_jax.config import AugmentConfig

STREAM = 1_000_003  # folded into PRNGKey(seed): the augmentation key stream, distinct from dropout's
TIME, FREQ, MIX, EQ, SPEED, LOWPASS = 0, 1, 2, 3, 4, 5  # one sub-stream per augmentation
EQ_KNOTS = 5  # control points of the random EQ curve over the mel axis


def example_keys(seed: int, step: jax.Array, first: jax.Array, n: int) -> jax.Array:
    """Keys of examples first .. first + n - 1 of the global batch of step `step` -> [n] keys."""
    base = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), STREAM), step)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(first + jnp.arange(n))


def _sub(keys: jax.Array, stream: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, stream))(keys)


def _bands(key: jax.Array, count: int, width: int, size: int) -> jax.Array:
    """Union of `count` intervals of width uniform in [0, min(width, size)] at uniform valid starts -> bool [size]."""
    kw, ks = jax.random.split(key)
    w = jnp.minimum(jax.random.randint(kw, (count,), 0, width + 1), size)  # [count]
    s = jax.random.randint(ks, (count,), 0, size - w + 1)  # [count]: the interval fits
    idx = jnp.arange(size)[None, :]  # [1, size]
    return jnp.any((idx >= s[:, None]) & (idx < (s + w)[:, None]), axis=0)


def spec_mask(keys: jax.Array, n_frames: int, n_mels: int, s: AugmentConfig) -> jax.Array:
    """SpecAugment masks: keys [batch] -> bool [batch, n_frames, n_mels], True where the log-mel is masked
    (all False when both mask counts are 0)."""

    def one(k_time, k_freq):
        t = (_bands(k_time, s.spec_time_masks, s.spec_time_mask_frames, n_frames) if s.spec_time_masks
             else jnp.zeros(n_frames, bool))  # [frames]
        f = (_bands(k_freq, s.spec_freq_masks, s.spec_freq_mask_bins, n_mels) if s.spec_freq_masks
             else jnp.zeros(n_mels, bool))  # [mels]
        return t[:, None] | f[None, :]  # [frames, mels]

    return jax.vmap(one)(_sub(keys, TIME), _sub(keys, FREQ))


def eq_curve(keys: jax.Array, n_mels: int, eq_db: float) -> jax.Array:
    """Random EQ: keys [batch] -> dB offsets [batch, n_mels], piecewise linear through EQ_KNOTS points
    uniform in +-eq_db placed evenly over the mel bands (zeros when eq_db is 0)."""
    knots_x = jnp.linspace(0.0, n_mels - 1.0, EQ_KNOTS)
    bands = jnp.arange(n_mels, dtype=jnp.float32)

    def one(k):
        knots_db = jax.random.uniform(k, (EQ_KNOTS,), minval=-eq_db, maxval=eq_db)
        return jnp.interp(bands, knots_x, knots_db)  # [mels]

    return jax.vmap(one)(_sub(keys, EQ))


def speed_rates(keys: jax.Array, speed_change: float) -> jax.Array:
    """Playback rates: keys [batch] -> [batch] float32, log-uniform in [1/(1+d), 1+d] (all 1 when d is 0)."""
    span = jnp.log1p(jnp.float32(speed_change))
    return jax.vmap(lambda k: jnp.exp(jax.random.uniform(k, (), minval=-span, maxval=span)))(_sub(keys, SPEED))


def resample(audio: jax.Array, rates: jax.Array, n_out: int) -> jax.Array:
    """Each row played at its rate by linear interpolation: audio [batch, read], rates [batch] ->
    [batch, n_out], out[i, n] = audio[i] at position n * rates[i]. Needs read >= (n_out - 1) max(rates) + 2
    (config.Config.read_samples); shorter, positions past the last sample would extrapolate from the last two."""
    pos = jnp.arange(n_out, dtype=jnp.float32)[None, :] * rates[:, None]  # [batch, n_out]
    i0 = jnp.minimum(jnp.floor(pos).astype(jnp.int32), audio.shape[-1] - 2)
    frac = (pos - i0).astype(audio.dtype)
    x0 = jnp.take_along_axis(audio, i0, axis=-1)
    x1 = jnp.take_along_axis(audio, i0 + 1, axis=-1)
    return x0 + frac * (x1 - x0)


def lowpass_cutoffs(keys: jax.Array, prob: float, min_hz: float, sample_rate: int) -> jax.Array:
    """Cutoffs: keys [batch] -> Hz [batch] float32: log-uniform in [min_hz, sample_rate / 2] with probability
    `prob`, else the Nyquist frequency itself (no low-pass)."""
    nyquist = sample_rate / 2.0

    def one(k):
        k_on, k_hz = jax.random.split(k)
        hz = jnp.exp(jax.random.uniform(k_hz, (), minval=jnp.log(min_hz), maxval=jnp.log(nyquist)))
        return jnp.where(jax.random.uniform(k_on, ()) < prob, hz, nyquist).astype(jnp.float32)

    return jax.vmap(one)(_sub(keys, LOWPASS))


def lowpass(audio: jax.Array, cutoffs: jax.Array, sample_rate: int) -> jax.Array:
    """audio [batch, n] with every frequency above its row's cutoff (Hz, [batch]) removed: a brick wall on the
    crop's FFT -> [batch, n]. A cutoff at the Nyquist frequency returns the crop (to rounding)."""
    n = audio.shape[-1]
    spectrum = jnp.fft.rfft(audio, axis=-1)  # [batch, n // 2 + 1]
    keep = jnp.fft.rfftfreq(n, 1.0 / sample_rate)[None, :] <= cutoffs[:, None]
    return jnp.fft.irfft(spectrum * keep, n=n, axis=-1).astype(audio.dtype)


def partners(n: int) -> jax.Array:
    """Mixup partner of each of n examples: neighbours swapped (0<->1, 2<->3, ...); an odd last one is its
    own partner (it stays unmixed). -> int32 [n]."""
    i = jnp.arange(n)
    p = i ^ 1
    return jnp.where(p < n, p, i)


def mixup(keys: jax.Array, audio: jax.Array, alpha: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Waveform mixup: keys [batch], audio [batch, samples] -> (mixed audio [batch, samples], partner
    [batch] int32, lam [batch] float32); mixed[i] = lam[i] audio[i] + (1 - lam[i]) audio[partner[i]]."""
    p = partners(audio.shape[0])
    lam = jax.vmap(lambda k: jax.random.beta(k, alpha, alpha))(_sub(keys, MIX)).astype(audio.dtype)  # [batch]
    return lam[:, None] * audio + (1.0 - lam[:, None]) * audio[p], p, lam


def soft_targets(labels: jax.Array, n_classes: int, head: str, smoothing: float,
                 partner: jax.Array | None = None, lam: jax.Array | None = None) -> jax.Array:
    """Targets [batch, n_classes] float32: smoothed one-hot labels (see the module docstring), mixed with
    the partner's as lam t + (1 - lam) t[partner] when mixup is given. Rows sum to 1 for the softmax head."""
    t = jax.nn.one_hot(labels, n_classes, dtype=jnp.float32)  # [batch, classes]
    if smoothing:
        t = (1.0 - smoothing) * t + smoothing / (n_classes if head == "softmax" else 2.0)
    if partner is not None:
        t = lam[:, None] * t + (1.0 - lam[:, None]) * t[partner]
    return t


def apply(s: AugmentConfig, keys: jax.Array, audio: jax.Array, labels: jax.Array, *, n_classes: int, head: str,
          n_frames: int, n_mels: int, crop_samples: int, sample_rate: int = 22050
          ) -> tuple[jax.Array, jax.Array | None, dict]:
    """Everything `s` turns on, for one device's shard: keys [b] (example_keys), audio [b, samples] (with a
    speed change: [b, read] -> [b, crop_samples], the crop the network sees), labels [b] -> (audio [b, samples], targets [b, n_classes] or None when the integer labels are the
    targets, model keyword arguments: "spec_mask" bool [b, n_frames, n_mels], "band_db" [b, n_mels])."""
    targets, extra = None, {}
    partner = lam = None
    if s.speed_change > 0:
        audio = resample(audio, speed_rates(keys, s.speed_change), crop_samples)
    if s.lowpass_prob > 0:
        audio = lowpass(audio, lowpass_cutoffs(keys, s.lowpass_prob, s.lowpass_min_hz, sample_rate), sample_rate)
    if s.mixup_alpha > 0:
        audio, partner, lam = mixup(keys, audio, s.mixup_alpha)
    if s.soft_targets:
        targets = soft_targets(labels, n_classes, head, s.label_smoothing, partner, lam)
    if s.spec_masks:
        extra["spec_mask"] = spec_mask(keys, n_frames, n_mels, s)
    if s.eq_db > 0:
        extra["band_db"] = eq_curve(keys, n_mels, s.eq_db)
    return audio, targets, extra
