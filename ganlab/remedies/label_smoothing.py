"""One-sided label smoothing (Salimans et al. 2016, §3.4): D's target for real samples is 0.9
instead of 1; fake targets stay 0 (smoothing them too would reward G's bad samples)."""

from __future__ import annotations

import copy

from ganlab.errors import ConfigError
from ganlab.remedies.base import Remedy


class LabelSmoothing(Remedy):
    def __init__(self, real_target: float = 0.9):
        if not 0.5 < real_target <= 1.0:
            raise ConfigError(f"real_target must be in (0.5, 1], got {real_target}")
        self.real_target = real_target

    def check(self, loss, batch_size):
        if not hasattr(loss, "real_target"):
            raise ConfigError(f"label_smoothing needs a loss with a target for real samples (gan, nsgan, "
                              f"lsgan, dragan); {type(loss).__name__} has none")

    def adapt_loss(self, loss):
        smoothed = copy.copy(loss)
        smoothed.real_target = self.real_target
        return smoothed
