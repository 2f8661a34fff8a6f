"""The speed switches of `cfg.speed` (docs/benchmarks.md), in one place: the loop asks this object for an
autocast context and for batches in the networks' memory format, and knows no switch by name.

- `amp=bf16`: the G and D steps run under bfloat16 autocast. bf16 has float32's exponent range,
  so no gradient scaler is needed (and so there is no scaler state to checkpoint).
- `channels_last`: conv weights and image batches in NHWC, which tensor cores prefer.
- `compile`: `nn.Module.compile()` compiles G's and D's forward in place, so the modules keep their
  identity, attributes and state-dict keys (remedies and checkpoints see the same objects).
- `cudnn_benchmark`: cuDNN times its conv algorithms once per shape and keeps the fastest.

They are meant for CUDA; on the CPU they run too (bench_images.py measures them there as well).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


class Speed:
    def __init__(self, cfg, device: torch.device):
        self.device = device
        self.amp = str(getattr(cfg.amp, "value", cfg.amp)) == "bf16"
        self.channels_last = bool(cfg.channels_last)
        self.compile = bool(cfg.compile)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)

    def prepare(self, *networks: nn.Module) -> None:
        """Apply the memory format and compilation to the networks, in place."""
        for net in networks:
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
            if self.compile:
                net.compile()

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def batch(self, x: Tensor) -> Tensor:
        """A data batch in the networks' memory format (image batches only)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x
