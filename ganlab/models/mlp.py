"""Fully connected G and D for 2-D data."""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from ganlab.errors import ConfigError

Activation = Literal["relu", "leaky_relu", "tanh", "elu"]
_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh, "elu": nn.ELU}


def _check(depth: int, width: int) -> None:
    if depth < 1 or width < 1:
        raise ConfigError(f"depth and width must be >= 1, got depth={depth}, width={width}")


class Generator(nn.Module):
    """z -> `depth` hidden layers of `width` units (optionally batch-normed) -> a point of `out_shape`."""

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], depth: int = 3, width: int = 128,
                 activation: Activation = "relu", batch_norm: bool = False):
        super().__init__()
        _check(depth, width)
        self.latent_dim = latent_dim
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        fan_in = latent_dim
        for _ in range(depth):
            layers.append(nn.Linear(fan_in, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(_ACTIVATIONS[activation]())
            fan_in = width
        layers.append(nn.Linear(fan_in, math.prod(self.out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.out_shape)


class Discriminator(nn.Module):
    """A point -> `depth` hidden layers -> one score (a logit, or a critic value for WGANs).

    Normalization is layer norm or none: batch norm would couple the samples of a batch and
    break the per-sample gradient penalties of WGAN-GP and DRAGAN.
    """

    def __init__(self, in_shape: tuple[int, ...], depth: int = 3, width: int = 128,
                 activation: Activation = "relu", norm: Literal["none", "layer"] = "none"):
        super().__init__()
        _check(depth, width)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(in_shape)
        for _ in range(depth):
            layers.append(nn.Linear(fan_in, width))
            if norm == "layer":
                layers.append(nn.LayerNorm(width))
            layers.append(_ACTIVATIONS[activation]())
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)

