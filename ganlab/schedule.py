"""`optim.schedule` and `optim.warmup`: the learning rate of every optimizer, step by step.

Before each training step the loop (ganlab/train.py, its one caller) sets every optimizer's learning rate
(G's, D's and those of the remedy's extra networks, or for replicas=N the stacked ones) to the config's
rate times `factor(t)`, t = step - 1 the updates already taken; the D updates of a step (n_critic) share it.
With W = `warmup` and T = `steps`:

    t < W:   t / W                                      (linear warm-up from 0)
    then     none: 1;  linear: (T - t) / (T - W);  cosine: (1 + cos(pi (t - W) / (T - W))) / 2

The rate is a function of the step and the config alone, both in the checkpoint (and the config checked
on resume), so a resumed run sets the very rates of the uninterrupted one: nothing else to save.
`optim.schedule=none optim.warmup=0` (the defaults) leave the rates untouched.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from ganlab.errors import ConfigError

if TYPE_CHECKING:  # config.validate imports this module: no torch at import time
    import torch

SCHEDULES = ("none", "linear", "cosine")


def settings(cfg: DictConfig) -> tuple[str, int]:
    """The config's (optim.schedule, optim.warmup), checked against `steps` (ConfigError, one line).
    An optim option of one's own without the keys has none and 0."""
    schedule = OmegaConf.select(cfg, "optim.schedule", default="none")
    warmup = OmegaConf.select(cfg, "optim.warmup", default=0)
    if schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"optim.warmup={warmup!r}: expected an integer >= 0 (steps of linear warm-up from 0)")
    if warmup and warmup >= cfg.steps:
        raise ConfigError(f"optim.warmup={warmup} must be below steps={cfg.steps}: the rate would never reach the "
                          "config's")
    return schedule, warmup


def factor(t: int, steps: int, schedule: str, warmup: int) -> float:
    """The learning-rate multiplier of the update after `t` updates (the step t + 1), as the module says."""
    if t < warmup:
        return t / warmup
    if schedule == "linear":
        return (steps - t) / (steps - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (steps - warmup)))
    return 1.0


class Schedule:
    """Sets the optimizers' rates for each step: the config's rates (theirs when built) times `factor`."""

    def __init__(self, schedule: str, warmup: int, steps: int, optimizers: list[torch.optim.Optimizer]):
        self.schedule, self.warmup, self.steps = schedule, warmup, steps
        self.active = schedule != "none" or warmup > 0
        self.groups = [(group, group["lr"]) for opt in optimizers for group in opt.param_groups]

    @classmethod
    def of(cls, cfg: DictConfig, optimizers: list[torch.optim.Optimizer]) -> Schedule:
        return cls(*settings(cfg), cfg.steps, optimizers)

    def set(self, step: int) -> None:
        """The rates of training step `step` (1-based)."""
        if not self.active:
            return
        f = factor(step - 1, self.steps, self.schedule, self.warmup)
        for group, lr in self.groups:
            group["lr"] = lr * f
