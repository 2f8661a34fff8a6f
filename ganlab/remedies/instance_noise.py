"""Instance noise (Sønderby et al. 2017; Arjovsky & Bottou 2017): Gaussian noise on every input D
sees, real and fake, in D's and G's steps, with a standard deviation annealed linearly to 0. Early
on the noisy distributions overlap, so D's gradients stay informative; by the end D sees clean data.
Evaluation (D in eval mode) sees no noise."""

from __future__ import annotations

import math

import torch

from ganlab.errors import ConfigError
from ganlab.remedies.base import InputTransform, Remedy


class NoisyInput(InputTransform):
    def __init__(self, inner):
        super().__init__(inner)
        self.std = 0.0

    def transform(self, x):
        if not self.training or self.std == 0.0:
            return x
        return x + self.std * torch.randn_like(x)


class InstanceNoise(Remedy):
    build_order = 90  # outermost: the noise is added to the samples before packing

    def __init__(self, std: float = 0.1, anneal_steps: int | None = None):
        if not (math.isfinite(std) and std >= 0):
            raise ConfigError(f"std must be a finite number >= 0, got {std}")
        if anneal_steps is not None and anneal_steps < 1:
            raise ConfigError(f"anneal_steps must be >= 1 (or null for the whole run), got {anneal_steps}")
        self.std, self.anneal_steps = std, anneal_steps
        self.D: NoisyInput | None = None

    def build(self, G, D, make):
        self.D = NoisyInput(D)
        return G, self.D

    def prepare(self, g_opt, d_opt, steps):
        if self.anneal_steps is None:
            self.anneal_steps = steps

    def std_at(self, step: int) -> float:
        """std * (1 - step / anneal_steps), floored at 0: the last step of the horizon has none."""
        return self.std * max(0.0, 1.0 - step / self.anneal_steps)

    def begin_step(self, step):
        self.D.std = self.std_at(step)
