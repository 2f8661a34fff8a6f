"""Fully connected G and D for 2-D data."""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from ganlab.errors import ConfigError

Activation = Literal["relu", "leaky_relu", "tanh", "elu"]
DActivation = Literal["relu", "leaky_relu", "tanh", "elu", "maxout"]
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


class Maxout(nn.Module):
    """Goodfellow et al. 2013: `pieces` linear maps per unit, keep the largest (PacGAN's 2-D D)."""

    def __init__(self, fan_in: int, width: int, pieces: int):
        super().__init__()
        self.width, self.pieces = width, pieces
        self.linear = nn.Linear(fan_in, width * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(-1, self.width, self.pieces).amax(dim=2)


class Discriminator(nn.Module):
    """A point -> `depth` hidden layers (`features`) -> `head` -> one score (a logit, or a critic
    value for WGANs). Remedies use the split: feature matching reads `features`, minibatch layers
    replace `head` (its input width is `feature_dim`).

    Normalization is layer norm or none: batch norm would couple the samples of a batch and
    break the per-sample gradient penalties of WGAN-GP and DRAGAN.
    """

    def __init__(self, in_shape: tuple[int, ...], depth: int = 3, width: int = 128,
                 activation: DActivation = "relu", norm: Literal["none", "layer"] = "none",
                 pieces: int = 5):
        super().__init__()
        _check(depth, width)
        if activation == "maxout" and pieces < 2:
            raise ConfigError(f"maxout needs pieces >= 2, got {pieces}")
        self.in_shape = tuple(in_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(in_shape)
        for _ in range(depth):
            layers.append(Maxout(fan_in, width, pieces) if activation == "maxout" else nn.Linear(fan_in, width))
            if norm == "layer":
                layers.append(nn.LayerNorm(width))
            if activation != "maxout":
                layers.append(_ACTIVATIONS[activation]())
            fan_in = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.head: nn.Module = nn.Linear(width, 1)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x)).squeeze(1)


class Encoder(nn.Module):
    """A point of `in_shape` -> `depth` hidden layers -> a vector of `out_dim`: the encoders and
    reconstructors that remedies add (MRGAN's E: x -> z, VEEGAN's F: x -> z, EBGAN's code)."""

    def __init__(self, in_shape: tuple[int, ...], out_dim: int, depth: int = 3, width: int = 128,
                 activation: Activation = "relu"):
        super().__init__()
        _check(depth, width)
        self.in_shape, self.out_dim = tuple(in_shape), out_dim
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(in_shape)
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), _ACTIVATIONS[activation]()]
            fan_in = width
        layers.append(nn.Linear(fan_in, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
