"""One-sided label smoothing (Salimans et al. 2016, §3.4): D's target for real samples is 0.9
instead of 1; fake targets stay 0 (smoothing them too would reward G's bad samples)."""

from __future__ import annotations

import copy
import struct

from ganlab.errors import ConfigError
from ganlab.remedies.base import Remedy


class LabelSmoothing(Remedy):
    def __init__(self, real_target: float = 0.9):
        if not 0.5 < real_target <= 1.0:
            raise ConfigError(f"real_target must be in (0.5, 1], got {real_target}")
        if real_target < 1.0 and struct.unpack("f", struct.pack("f", real_target))[0] == 1.0:
            # The losses compute in float32, where 1 - 2**-25 and above round to 1: no smoothing, silently.
            raise ConfigError(f"real_target={real_target} is 1 in float32, which the losses compute in: a smoothing "
                              f"amount of {1 - real_target:.2g} rounds away there (up to 3e-08 does), so nothing would be "
                              "smoothed; give real_target <= 0.99999994 (0.9 is the paper's), or 1 for none")
        self.real_target = real_target

    def check(self, loss, batch_size):
        if not hasattr(loss, "real_target"):
            raise ConfigError(f"label_smoothing needs a loss with a target for real samples (gan, nsgan, "
                              f"lsgan, dragan); {type(loss).__name__} has none")

    def adapt_loss(self, loss):
        smoothed = copy.copy(loss)
        smoothed.real_target = self.real_target
        return smoothed
