"""Training batches onto the devices, K steps per call: the data set resident on the devices, or streamed.

Both feeds take their examples from `data.sample_batch(seed, step)`, so they give the same batches and the
same metrics (a test checks); they differ only in what crosses to the device per step:
- ResidentFeed: the whole int16 data set is put on every device once (GTZAN: ~1.3 GB); each call ships
  only indices (song, offset, gain, label: 16 bytes an example) and the step slices crops on the device.
- StreamFeed: the host slices crops (2 bytes a sample) and prepares the next call's batch in a
  background thread while the device runs the current one (double buffering).
With several processes, each feed builds only its own devices' rows of every global batch (and the
streamed one slices only those crops), so the global batch is the one a single process would build.
"""

from __future__ import annotations

import concurrent.futures
from typing import Iterator

import jax.numpy as jnp
import numpy as np

from crnn_jax.data import dataset as data_lib
from crnn_jax.training import steps as steps_lib

PLACEMENTS = ("auto", "device", "host")


def plan(start: int, total: int, steps_per_call: int, boundaries: list[int]) -> list[tuple[int, int]]:
    """Chunks (first_step, k) covering [start, total): at most steps_per_call steps each, and never across
    a multiple of any boundary (log, eval, checkpoint), so those happen exactly where a K=1 run does them."""
    out, step = [], start
    while step < total:
        nxt = min([total] + [(step // b + 1) * b for b in boundaries if b > 0])
        k = min(steps_per_call, nxt - step)
        out.append((step, k))
        step += k
    return out


class _Feed:
    """n_devices: devices of the whole run (all processes); local: (first, count), this process's block
    of them (default: all), whose rows of each global batch are the only ones this feed builds."""

    def __init__(self, ds: data_lib.Dataset, cfg, train_songs: np.ndarray, n_devices: int,
                 local: tuple[int, int] | None = None):
        self.ds, self.cfg, self.train_songs, self.n_devices = ds, cfg, train_songs, n_devices
        first, self.n_local = local or (0, n_devices)
        per_device = cfg.batch_size // n_devices
        self.rows = slice(first * per_device, (first + self.n_local) * per_device)  # of the global batch

    def _indices(self, step: int, k: int) -> list[data_lib.Batch]:
        """This process's rows of the global batches of steps step .. step + k - 1."""
        c = self.cfg
        return [data_lib.Batch(*(x[self.rows] for x in data_lib.sample_batch(
                    c.train_seed, s, train_songs=self.train_songs, lengths=self.ds.lengths, batch_size=c.batch_size,
                    crop=c.read_samples, gain_db=c.gain_db)))
                for s in range(step, step + k)]

    def _device_major(self, x: np.ndarray) -> np.ndarray:
        """[k, local_rows, ...] -> [n_local, k, per_device, ...] (pmap splits the leading axis)."""
        k, b = x.shape[:2]
        x = x.reshape(k, self.n_local, b // self.n_local, *x.shape[2:])  # [k, local devices, per_device, ...]
        return np.swapaxes(x, 0, 1)  # [local devices, k, per_device, ...]

    def _common(self, bs: list[data_lib.Batch]) -> dict:
        return {"gains": self._device_major(np.stack([b.gains for b in bs])),
                "labels": self._device_major(np.stack([self.ds.labels[b.songs] for b in bs]))}

    def calls(self, chunks: list[tuple[int, int]]) -> Iterator[tuple[int, int, dict]]:
        raise NotImplementedError


class ResidentFeed(_Feed):
    """The data set on every device; batches are indices (see module docstring)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.audio = steps_lib.place_state(device_audio(self.ds, self.cfg.read_samples))  # on each device

    def calls(self, chunks):
        for step, k in chunks:
            bs = self._indices(step, k)
            batch = self._common(bs)
            batch["songs"] = self._device_major(np.stack([b.songs for b in bs]).astype(np.int32))
            batch["offsets"] = self._device_major(np.stack([b.offsets for b in bs]).astype(np.int32))
            yield step, k, batch


class StreamFeed(_Feed):
    """Crops sliced on the host, one call ahead of the device in a background thread."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.audio = steps_lib.place_state(jnp.zeros((1,), jnp.int16))  # unused by the step; keeps one signature

    def _make(self, step: int, k: int) -> dict:
        bs = self._indices(step, k)
        batch = self._common(bs)
        crops = np.stack([self.ds.crops(b.songs, b.offsets, self.cfg.read_samples)
                          for b in bs])  # [k, local_rows, read] int16: only this process's crops
        batch["crops"] = self._device_major(crops)
        return batch

    def calls(self, chunks):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(self._make, *chunks[0]) if chunks else None
            for i, (step, k) in enumerate(chunks):
                batch = ahead.result()
                if i + 1 < len(chunks):
                    ahead = pool.submit(self._make, *chunks[i + 1])
                yield step, k, batch


MAX_DEVICE_SAMPLES = 2**31 - 1  # device indices are int32


def device_audio(ds: data_lib.Dataset, crop: int) -> steps_lib.DeviceAudio:
    """The host arrays of ds on a device (see steps.DeviceAudio): the samples as they are (a memory map is
    read straight into the device buffer, never copied on the host), and a small tail that makes a crop
    running off the end safe. Songs not back to back (gaps) are fine: starts are ds.offsets."""
    samples = ds.audio
    if len(samples) + 2 * crop > MAX_DEVICE_SAMPLES:
        raise data_lib.DataError(f"{len(samples):,} samples of audio are too many to index on a device "
                                 f"(at most {MAX_DEVICE_SAMPLES - 2 * crop:,}); use --data-placement host")
    if len(samples) < crop:  # the whole set is shorter than one crop: tiny, pad it
        samples = np.concatenate([samples, np.zeros(crop - len(samples), np.int16)])
    tail = np.concatenate([samples[len(samples) - crop:], np.zeros(crop, np.int16)])  # [2 * crop]
    return steps_lib.DeviceAudio(samples, tail, ds.offsets.astype(np.int32), ds.lengths.astype(np.int32))


def make_feed(ds: data_lib.Dataset, cfg, train_songs: np.ndarray, n_devices: int, *,
              local: tuple[int, int] | None = None, log=print) -> _Feed:
    """The feed cfg.data_placement asks for; "auto" keeps the data on the devices when it fits
    cfg.device_data_gb (per device), else streams. n_devices, local: as for _Feed."""
    gb = ds.audio.nbytes / 2**30  # the songs end to end: the real byte count, no padding
    fits = len(ds.audio) + 2 * cfg.read_samples <= MAX_DEVICE_SAMPLES
    resident = cfg.data_placement == "device" or (cfg.data_placement == "auto" and gb <= cfg.device_data_gb
                                                  and fits)
    log(f"data placement: {'on every device' if resident else 'streamed from host memory'} "
        f"({gb:.2f} GiB of int16 audio; budget {cfg.device_data_gb} GiB per device)")
    return (ResidentFeed if resident else StreamFeed)(ds, cfg, train_songs, n_devices, local)
