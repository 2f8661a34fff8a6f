"""The remedy interface: the places where a remedy may change training.

The loop calls these hooks and nothing else, so a remedy is one subclass that overrides the hooks
it needs; the defaults are the plain GAN step of the chosen loss.

- `check(loss)`: refuse, at start-up, a loss the remedy cannot work with (raise ConfigError).
- `build(G, D)`: wrap or replace the networks (packing, extra layers, spectral norm, k generators).
- `d_loss(G, D, loss, real, z)` / `g_loss(G, D, loss, z)`: the objective of one D or G step
  (unrolled G steps, extra terms, label smoothing).
- `sample(G, z)`: how samples are drawn for evaluation (mixtures of generators, rejection sampling).

Hooks are written as functions of the networks and the batch, with no state hidden in the loop, so
that a later vectorised multi-seed loop can call them unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from ganlab.losses import Loss


class Remedy:
    def check(self, loss: Loss) -> None:
        pass

    def build(self, G: nn.Module, D: nn.Module) -> tuple[nn.Module, nn.Module]:
        return G, D

    def d_loss(self, G: nn.Module, D: nn.Module, loss: Loss, real: Tensor, z: Tensor) -> Tensor:
        fake = G(z).detach()  # D's step must not push gradients into G
        value = loss.d_loss(D(real), D(fake))
        penalty = loss.penalty(D, real, fake)
        return value if penalty is None else value + penalty

    def g_loss(self, G: nn.Module, D: nn.Module, loss: Loss, z: Tensor) -> Tensor:
        return loss.g_loss(D(G(z)))

    def sample(self, G: nn.Module, z: Tensor) -> Tensor:
        return G(z)
