"""A PyTorch twin of crnn_jax's network, log-mel front end and training step: the peer in
`python -m crnn_jax.bench train`, and an oracle for the JAX forward pass (tests/test_torch_reference.py).

Same computation, layer for layer (see crnn_jax/model.py):

    audio [batch, samples] --periodic-Hann STFT (centred, zero padded) -> |X|^2 -> HTK mel filterbank
      (the numpy constant of crnn_jax.mel) -> dB, top_db per example--> [batch, frames, n_mels]
      --BatchNorm over mel bands--> 4 x (Conv 3x3 SAME -> BatchNorm -> ELU -> MaxPool (time, freq) -> Dropout)
      CRNN: fold freq into channels -> GRU -> GRU (last step) -> Dropout -> Linear
      CNN:  mean over (time, freq) -> Dropout -> Linear

Layout is NCHW with H = time and W = frequency. BatchNorm uses eps 1e-5 and momentum 1 - model.BN_MOMENTUM
(torch keeps 1 - momentum of the old average, flax keeps momentum). Two known differences, neither in the
forward pass: torch updates the running variance with the unbiased batch variance, flax with the biased
one (a factor n / (n - 1), n = batch * time * freq); torch's GRU has hidden biases for the r and z gates
that flax's GRUCell lacks, so they are held at zero (zeroed, gradient masked) and both train the same model.

`TorchTrainStep` is Algorithm 8.6 (crnn_jax/optim.py) in a few foreach ops: gradient at theta + alpha v,
r <- rho r + (1 - rho) g^2, v <- alpha v - lr g / sqrt(delta + r), theta <- theta + v.
torch is an optional dependency: `pip install torch`. `python -m crnn_jax.bench train` imports it beside JAX;
experiments/gpu/torch_worker.py runs `time_training_step` in a process of its own (no CUDA runtime shared with
JAX's). Nothing else in crnn_jax uses it.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crnn_jax import mel as mel_lib
from crnn_jax import model as model_lib
from crnn_jax.data.dataset import INT16_SCALE

BN_EPS = 1e-5  # flax's default
BN_MOMENTUM = 1.0 - model_lib.BN_MOMENTUM  # torch weights the new batch statistic, flax the old average


class LogMel(nn.Module):
    """Raw audio [batch, samples] (float32) -> log-mel in dB [batch, frames, n_mels], as mel.log_mel_spectrogram."""

    def __init__(self, config: mel_lib.MelConfig):
        super().__init__()
        self.config = config
        n = np.arange(config.n_fft)
        window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.n_fft)).astype(np.float32)  # periodic Hann
        self.register_buffer("window", torch.from_numpy(window), persistent=False)
        self.register_buffer("fbank", torch.from_numpy(np.array(config.filterbank())), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        spec = torch.stft(audio, c.n_fft, c.hop_length, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)  # [batch, n_fft // 2 + 1, frames]
        energy = spec.real.square() + spec.imag.square()
        if c.power != 2.0:
            energy = energy ** (c.power / 2.0)
        mel = energy.transpose(1, 2) @ self.fbank  # [batch, frames, n_mels]
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))  # ref 1, amin 1e-10
        if c.top_db is None:
            return db
        return torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - c.top_db)  # per example, as mel.power_to_db


class TorchCRNN(nn.Module):
    """The CRNN (or, model="cnn", the CNN) of crnn_jax.model on raw audio [batch, samples] -> logits [batch, n_classes]."""

    def __init__(self, *, n_classes: int, mel_config: mel_lib.MelConfig, time_pools: Sequence[int],
                 conv_channels: Sequence[int] = (64, 128, 128, 128), freq_pools: Sequence[int] = (2, 3, 4, 4),
                 gru_units: Sequence[int] = (32, 32), conv_dropout: float = 0.1, final_dropout: float = 0.3,
                 model: str = "crnn"):
        super().__init__()
        self.model = model
        self.logmel = LogMel(mel_config)
        self.input_norm = nn.BatchNorm1d(mel_config.n_mels, eps=BN_EPS, momentum=BN_MOMENTUM)
        blocks, cin, n_freq = [], 1, mel_config.n_mels
        for cout, tp, fp in zip(conv_channels, time_pools, freq_pools):
            blocks.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),  # 3x3 SAME; no bias before BatchNorm
                nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
                nn.ELU(),
                nn.MaxPool2d((tp, fp)),  # (time, freq), window = stride, floor like flax's VALID
                nn.Dropout(conv_dropout)))
            cin, n_freq = cout, n_freq // fp
        self.blocks = nn.Sequential(*blocks)
        features = cin
        if model == "crnn":
            grus, n_in = [], cin * n_freq
            for units in gru_units:
                gru = nn.GRU(n_in, units, batch_first=True)
                # flax's GRUCell has no hidden bias for the r and z gates: hold torch's at zero.
                with torch.no_grad():
                    gru.bias_hh_l0[: 2 * units].zero_()
                gru.bias_hh_l0.register_hook(lambda g, k=2 * units: torch.cat([torch.zeros_like(g[:k]), g[k:]]))
                grus.append(gru)
                n_in = units
            self.grus = nn.ModuleList(grus)
            features = n_in
        self.dropout = nn.Dropout(final_dropout)
        self.out = nn.Linear(features, n_classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.logmel(audio)  # [batch, frames, n_mels]
        x = self.input_norm(x.transpose(1, 2))  # [batch, n_mels, frames]: BatchNorm1d wants channels second
        x = self.blocks(x.transpose(1, 2).unsqueeze(1))  # [batch, channels, frames', mels']
        if self.model == "crnn":
            b, c, t, f = x.shape
            x = x.permute(0, 2, 3, 1).reshape(b, t, f * c)  # [batch, steps, mels' * channels], flax's order
            for gru in self.grus:
                x, _ = gru(x)  # [batch, steps, units]
            x = x[:, -1]  # [batch, units]
        else:
            x = x.mean(dim=(2, 3))  # [batch, channels]
        return self.out(self.dropout(x))


def build_torch_model(cfg, n_classes: int) -> TorchCRNN:
    """The torch twin of model.build_model(cfg, n_classes) for a crnn_jax.config.Config (fp32 only)."""
    return TorchCRNN(n_classes=n_classes, mel_config=cfg.mel,
                     time_pools=model_lib.time_pools_of(cfg), conv_channels=tuple(cfg.conv_channels),
                     freq_pools=tuple(cfg.freq_pools), gru_units=tuple(cfg.gru_units),
                     conv_dropout=cfg.conv_dropout_rate(), final_dropout=cfg.final_dropout_rate(), model=cfg.model)


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32))


def _copy_bn(bn: nn.Module, params: dict, stats: dict | None) -> None:
    bn.weight.copy_(_t(params["scale"]))
    bn.bias.copy_(_t(params["bias"]))
    if stats is not None:
        bn.running_mean.copy_(_t(stats["mean"]))
        bn.running_var.copy_(_t(stats["var"]))


def _copy_gru(gru: nn.GRU, cell: dict) -> None:
    """flax GRUCell -> torch GRU. Both: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h.
    flax has no hidden bias for r and z (its input bias covers them), so torch's b_hr, b_hz are zero."""
    gates = ("r", "z", "n")  # torch's row-block order in weight_ih / weight_hh
    gru.weight_ih_l0.copy_(torch.cat([_t(cell[f"i{g}"]["kernel"]).T for g in gates]))  # [3 units, in]
    gru.weight_hh_l0.copy_(torch.cat([_t(cell[f"h{g}"]["kernel"]).T for g in gates]))  # [3 units, units]
    gru.bias_ih_l0.copy_(torch.cat([_t(cell[f"i{g}"]["bias"]) for g in gates]))
    gru.bias_hh_l0.zero_()
    units = gru.hidden_size
    gru.bias_hh_l0[2 * units:].copy_(_t(cell["hn"]["bias"]))


@torch.no_grad()
def load_flax_variables(net: TorchCRNN, variables: dict[str, Any]) -> TorchCRNN:
    """Copy flax variables {"params", "batch_stats"?} of the matching crnn_jax model into `net` (in place).

    Conv kernels HWIO [3, 3, in, out] -> OIHW [out, in, 3, 3]; Dense kernels [in, out] -> [out, in];
    GRU gates (r, z, n) stacked in torch's order. Without batch_stats the running averages are left alone.
    """
    params, stats = variables["params"], variables.get("batch_stats")
    _copy_bn(net.input_norm, params["frontend"]["input_norm"], stats and stats["frontend"]["input_norm"])
    for i, block in enumerate(net.blocks):
        p = params["convs"][f"conv{i}"]
        block[0].weight.copy_(_t(p["Conv_0"]["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW
        _copy_bn(block[1], p["BatchNorm_0"], stats and stats["convs"][f"conv{i}"]["BatchNorm_0"])
    if net.model == "crnn":
        for i, gru in enumerate(net.grus):
            _copy_gru(gru, params[f"gru{i}"]["cell"])
    net.out.weight.copy_(_t(params["out"]["kernel"]).T)
    net.out.bias.copy_(_t(params["out"]["bias"]))
    return net


class TorchTrainStep:
    """One training step of `net` with Algorithm 8.6, like crnn_jax.training.steps' train_step on one device.

    step(crops int16 [batch, samples], gains float32 [batch], labels int64 [batch]) -> (loss, accuracy)
    as 0-d tensors (not synchronised: call .item() or torch.cuda.synchronize() to wait).
    learning_rate: the book's epsilon (constant). decay rho, momentum alpha, eps delta inside the sqrt.
    compile: torch.compile the network (forward and backward) and the optimizer update.
    autocast: e.g. torch.bfloat16 to run the network under autocast (float32 parameters and update).
    """

    def __init__(self, net: TorchCRNN, *, learning_rate: float = 1e-3, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1e-8, compile: bool = False, autocast: torch.dtype | None = None):
        self.net = net.train()
        self.autocast = autocast
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.r = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.lr, self.decay, self.momentum, self.eps = learning_rate, decay, momentum, eps
        # dynamic=False: one static-shape graph per shape (make_runner resets dynamo between shapes), so a
        # grid's later points time the kernels a fixed-shape run would use, not dynamic-shape ones.
        self.forward = torch.compile(net, dynamic=False) if compile else net
        self.update = torch.compile(self._update, dynamic=False) if compile else self._update

    @torch.no_grad()
    def _shift(self, scale: float) -> None:
        torch._foreach_add_(self.params, self.v, alpha=scale)  # theta <-> theta + alpha v, in place

    @torch.no_grad()
    def _update(self, grads: list[torch.Tensor]) -> None:
        torch._foreach_mul_(self.r, self.decay)
        torch._foreach_addcmul_(self.r, grads, grads, value=1.0 - self.decay)  # r <- rho r + (1 - rho) g^2
        denom = torch._foreach_sqrt(torch._foreach_add(self.r, self.eps))  # sqrt(delta + r)
        torch._foreach_mul_(self.v, self.momentum)
        torch._foreach_addcdiv_(self.v, grads, denom, value=-self.lr)  # v <- alpha v - lr g / sqrt(delta + r)
        torch._foreach_add_(self.params, self.v)  # theta <- theta + v

    def __call__(self, crops: torch.Tensor, gains: torch.Tensor, labels: torch.Tensor):
        audio = crops.float() * (gains[:, None] / INT16_SCALE)  # [batch, samples], as steps.to_audio
        self._shift(self.momentum)  # the gradient is taken at the interim point theta + alpha v
        with torch.autocast(audio.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            logits = self.forward(audio)
        loss = F.cross_entropy(logits.float(), labels)
        grads = torch.autograd.grad(loss, self.params)
        self._shift(-self.momentum)  # back to theta before the update
        self.update(list(grads))
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return loss.detach(), accuracy


def use_tf32() -> str:
    """Let float32 convolutions, matmuls and the GRU use TF32 tensor cores (JAX's default float32 precision on
    GPUs) -> which switch was used. torch >= 2.9 has per-backend fp32_precision settings and deprecates
    allow_tf32; older torch has only allow_tf32."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        matmul.fp32_precision = "tf32"
        cudnn.conv.fp32_precision = "tf32"
        if hasattr(getattr(cudnn, "rnn", None), "fp32_precision"):
            cudnn.rnn.fp32_precision = "tf32"
        return "fp32_precision"
    matmul.allow_tf32 = True
    cudnn.allow_tf32 = True
    return "allow_tf32"


def make_runner(cfg, n_classes: int, variables: dict[str, Any], inputs, *, gpu: bool, threads: int | None = None,
                compile: bool | None = None):
    """The training step of `cfg`'s model from flax `variables`, on fixed host inputs (crops int16 [batch,
    samples], gains float32 [batch], labels int [batch]) -> run(): one synchronised step, returns seconds.

    CPU: eager, torch.set_num_threads(threads, default all cores). GPU: TF32 convs and matmuls (JAX's default
    float32 precision there). compile (default: on a GPU): torch.compile(dynamic=False), after a reset of
    dynamo's caches, so each shape compiles afresh. cfg.precision "bf16" runs the network under bfloat16 autocast.
    """
    compile = gpu if compile is None else compile
    device = torch.device("cuda" if gpu else "cpu")
    if compile:
        # No graphs, guards or recompile counts carried over from another shape. (import_module: an
        # `import torch._dynamo` statement would make `torch` a local name of this function.)
        importlib.import_module("torch._dynamo").reset()
    if gpu:
        use_tf32()
        torch.cuda.reset_peak_memory_stats()
    else:
        torch.set_num_threads(threads or os.cpu_count() or 1)
    net = load_flax_variables(build_torch_model(cfg, n_classes), variables).to(device)
    step = TorchTrainStep(net, learning_rate=cfg.learning_rate, decay=cfg.rms_decay, momentum=cfg.momentum,
                          eps=cfg.eps, compile=compile, autocast=torch.bfloat16 if cfg.precision == "bf16" else None)
    crops, gains, labels = (torch.from_numpy(np.asarray(a)).to(device) for a in inputs)
    labels = labels.long()

    def run() -> float:
        start = time.perf_counter()
        loss, _ = step(crops, gains, labels)
        loss.item()  # waits for the step (on a GPU too: .item() synchronises)
        return time.perf_counter() - start

    return run


def time_training_step(cfg, n_classes: int, variables: dict[str, Any], inputs, *, gpu: bool, repeats: int,
                       warmup: int = 2, threads: int | None = None) -> dict:
    """Time make_runner's step: the first call (compilation on a GPU), `warmup` untimed calls, then `repeats`
    timed ones -> {"impl", "times" (s per step), "first_s" (s), "compile_error", "peak_bytes", "threads",
    "torch"}. A torch.compile failure (e.g. inductor on the padded STFT) falls back to eager, with the error
    kept in compile_error; a CUDA out-of-memory error is raised (eager would not fit either)."""
    compile_error = None
    try:
        run = make_runner(cfg, n_classes, variables, inputs, gpu=gpu, threads=threads)
        first_s = run()  # torch.compile compiles here on a GPU
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:
        if not gpu:  # eager already: nothing to fall back to
            raise
        compile_error = f"{type(e).__name__}: {e}"[:1000]
        importlib.import_module("torch._dynamo").reset()
        run = make_runner(cfg, n_classes, variables, inputs, gpu=gpu, threads=threads, compile=False)
        first_s = run()
    for _ in range(warmup):
        run()
    times = [run() for _ in range(repeats)]
    impl = "torch (eager)" if not gpu else "torch (compile)" if compile_error is None else "torch (eager; compile failed)"
    return {"impl": impl, "times": times, "first_s": first_s, "compile_error": compile_error,
            "peak_bytes": peak_cuda_bytes() if gpu else None, "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def peak_cuda_bytes() -> int:
    """Peak bytes torch has allocated on the current GPU since the last make_runner."""
    return torch.cuda.max_memory_allocated()
