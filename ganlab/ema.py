"""`ema.decay`: an exponential moving average of G's parameters, evaluated beside G.

After every G update (ganlab/step.py `take_step`, the one caller of `update`), each parameter of the
average moves towards G's: avg <- decay * avg + (1 - decay) * p; buffers (batch norm's running
statistics) are copied from G, not averaged. The average starts as a copy of G when the run is built
(as the authors' code of Mescheder et al. 2018, GAN_stability `update_average` from a copy of G,
`model_average_beta` 0.999). Training never reads it: the run's trajectory is the same with it or
without. Each evaluation measures it on the same codes as G and logs it under `ema/` (TensorBoard: the
metrics and its samples' picture `ema/samples`; summary.json's `metrics_ema`, the history); the checkpoint
holds it (`G_ema`), so a resume continues it bit-identically, `ganlab eval RUN` evaluates it beside G and
`ganlab sample RUN` draws from it (ganlab/evaluation/saved.py).

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
        # The parameters paired once: a Parameter object stays G's for the whole run (the optimizers hold the
        # same ones; a resume's load_state_dict and channels_last's .to() change their data, not the objects).
        self._averaged, self._trained = _paired(self.G.parameters(), source.parameters())

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, after a G update: avg + (1 - decay) (p - avg); buffers copied. One foreach
        kernel over all the parameters, not one small kernel per tensor (on CUDA each is a launch)."""
        torch._foreach_lerp_(self._averaged, self._trained, 1.0 - self.decay)
        self._copy_buffers()

    @torch.no_grad()
    def reset(self) -> None:
        """The average set to G itself (what a fresh run starts from)."""
        torch._foreach_copy_(self._averaged, self._trained)
        self._copy_buffers()

    def _copy_buffers(self) -> None:
        # Listed at each call: unlike parameters, a module may replace a buffer's tensor (Module.to does).
        averaged, source = _paired(self.G.buffers(), self.source.buffers())
        if averaged:  # an MLP G has none, and a foreach op refuses an empty list
            torch._foreach_copy_(averaged, source)


def _paired(averaged, source) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The average's tensors and G's, in the same order (the same architecture: a mismatch is a bug)."""
    pairs = list(zip(averaged, source, strict=True))
    return [a for a, _ in pairs], [s for _, s in pairs]


def build(G: nn.Module, cfg: DictConfig) -> GeneratorAverage | None:
    """The average of G the config asks for (`ema.decay`), or None."""
    decay = decay_of(cfg)
    return None if decay is None else GeneratorAverage(G, decay)
