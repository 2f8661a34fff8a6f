"""`ema.decay`: an exponential moving average of G's parameters, evaluated beside G.

After every G update (ganlab/step.py `take_step`, the one caller of `update`), each parameter of the
average moves towards G's: avg <- decay * avg + (1 - decay) * p; buffers (batch norm's running
statistics) are copied from G, not averaged. The average starts as a copy of G when the run is built
(as the authors' code of Mescheder et al. 2018, GAN_stability `update_average` from a copy of G,
`model_average_beta` 0.999). Training never reads it: the run's trajectory is the same with it or
without. Each evaluation measures it on the same codes as G and logs it under `ema/` (TensorBoard,
summary.json's `metrics_ema`, the history); the checkpoint holds it (`G_ema`), so a resume continues it
bit-identically.

The update is elementwise, so the same object averages a plain run's G and, for replicas=N, the stacked
G of every replica at once (ganlab/replicas.py copies replica k's slice into its run's own average
before an evaluation or a checkpoint).
"""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ganlab.errors import ConfigError

USUAL_DECAY = 0.999  # Karras et al. 2018 (ProGAN), and GAN_stability's configs (`model_average_beta`)


def decay_of(cfg: DictConfig) -> float | None:
    """The config's `ema.decay` (None or 0: no average), checked: in [0, 1)."""
    decay = OmegaConf.select(cfg, "ema.decay", default=None)
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ConfigError(f"ema.decay={decay!r}: expected a number in [0, 1) (null or 0: off; {USUAL_DECAY} is usual)")
    return float(decay) or None


class GeneratorAverage:
    """The moving average `average` of `source` (a G, or replicas' stacked G): the same architecture,
    its parameters updated by `update()`, never trained."""

    def __init__(self, source: nn.Module, decay: float, average: nn.Module | None = None):
        if not 0 < decay < 1:
            raise ConfigError(f"ema.decay={decay}: expected a number in (0, 1)")
        self.source, self.decay = source, float(decay)
        self.G = (copy.deepcopy(source) if average is None else average).requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, after a G update: avg + (1 - decay) (p - avg); buffers copied."""
        for avg, p in zip(self.G.parameters(), self.source.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - self.decay)
        for avg, b in zip(self.G.buffers(), self.source.buffers(), strict=True):
            avg.copy_(b)

    @torch.no_grad()
    def reset(self) -> None:
        """The average set to G itself (what a fresh run starts from)."""
        for avg, p in zip(self.G.parameters(), self.source.parameters(), strict=True):
            avg.copy_(p)
        for avg, b in zip(self.G.buffers(), self.source.buffers(), strict=True):
            avg.copy_(b)


def build(G: nn.Module, cfg: DictConfig) -> GeneratorAverage | None:
    """The average of G the config asks for (`ema.decay`), or None."""
    decay = decay_of(cfg)
    return None if decay is None else GeneratorAverage(G, decay)
