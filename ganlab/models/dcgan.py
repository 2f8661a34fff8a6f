"""DCGAN (Radford et al. 2016) G, D and encoder for 28x28 and 32x32 images of any channel count.

G and D mirror each other, with `width` = w channels at the finest conv layer and twice as many at
each halving of the resolution:

- 28x28: G z -> Linear -> 2w@7x7 -> w@14x14 -> C@28x28;      D C@28 -> w@14 -> 2w@7 -> flatten.
- 32x32: G z -> Linear -> 4w@4x4 -> 2w@8 -> w@16 -> C@32x32;  D C@32 -> w@16 -> 2w@8 -> 4w@4 -> flatten.
- D alone also takes those images halved once or twice (remedy=multiscale's coarser scales) and keeps the
  full-size D's convs, as pix2pixHD's multi-scale Ds share one architecture: C@14 -> w@7 -> 2w@3, C@7 -> w@3
  -> 2w@1; C@16 -> ... -> 4w@2, C@8 -> ... -> 4w@1. Its head is as wide as the last map.

Every resolution step is a 4x4 convolution of stride 2, padding 1 (transposed in G). The smaller
discriminators of the Unrolled GAN's Stacked MNIST experiment (D 1/2 and 1/4 "the size" of G) are
D widths of G's width / 2 and / 4: ganlab/configs/model/dcgan_d_half.yaml, dcgan_d_quarter.yaml.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from ganlab.errors import ConfigError

SIZES = {28: 2, 32: 3}  # image side -> number of stride-2 steps between it and G's first feature map


def _steps(shape: tuple[int, ...], width: int, role: str) -> int:
    if width < 1:
        raise ConfigError(f"model.{role}.width must be >= 1, got {width}")
    if len(shape) != 3:
        raise ConfigError(f"model dcgan is for images (C, H, W), got data of shape {tuple(shape)}; use model=mlp")
    c, h, w = shape
    full = h
    if role == "d":  # D also takes a 28 or 32 image halved once or twice (remedy=multiscale's coarser scales),
        while full < max(SIZES) and full not in SIZES:  # with the full-size D's convs: pix2pixHD's Ds are alike
            full *= 2
    # A side the convs would halve to nothing (4 = 32 / 8) is refused too.
    if h != w or full not in SIZES or c < 1 or h >> SIZES[full] < 1:
        also = " (D: also 14x14, 7x7, 16x16 and 8x8)" if role == "d" else ""
        raise ConfigError(f"model dcgan supports 28x28 and 32x32 images{also}, got {c}x{h}x{w}")
    return SIZES[full]


def _init(module: nn.Module) -> None:
    """DCGAN's initialisation: weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z -> Linear -> (2^(k-1) w, s/2^k, s/2^k) -> k transposed-conv steps -> tanh image of `out_shape`."""

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], width: int = 64, batch_norm: bool = True):
        super().__init__()
        steps = _steps(out_shape, width, "g")
        self.latent_dim, self.out_shape = latent_dim, tuple(out_shape)
        channels, side = self.out_shape[0], self.out_shape[1]
        ch = width * 2 ** (steps - 1)
        self.start = (ch, side >> steps, side >> steps)

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if batch_norm else nn.Identity()

        self.project = nn.Linear(latent_dim, math.prod(self.start))
        layers: list[nn.Module] = [norm(ch), nn.ReLU()]  # DCGAN's "project and reshape" is a normed layer too
        for _ in range(steps - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), norm(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]  # no norm on G's output
        self.net = nn.Sequential(*layers)
        _init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(-1, *self.start))


def _trunk(in_shape: tuple[int, ...], width: int, norm: str, role: str) -> tuple[nn.Sequential, int]:
    """The strided-conv stack of D and the encoder, flattened; returns it and its output width."""
    steps = _steps(in_shape, width, role)
    layers: list[nn.Module] = []
    ch_in, ch = in_shape[0], width  # any channel count: 1, 3, or m*C when pacgan packs m samples
    for i in range(steps):
        layers.append(nn.Conv2d(ch_in, ch, 4, 2, 1))
        if norm == "layer" and i > 0:  # as DCGAN: no normalization on D's first layer
            layers.append(nn.GroupNorm(1, ch))  # layer norm over (C, H, W): per sample, unlike batch norm
        elif norm == "batch" and i > 0:  # DCGAN's D (Radford et al. 2016, §3): batch norm in every layer but the input
            layers.append(nn.BatchNorm2d(ch))
        layers.append(nn.LeakyReLU(0.2))
        ch_in, ch = ch, ch * 2
    layers.append(nn.Flatten())
    side = in_shape[1] >> steps
    return nn.Sequential(*layers), ch_in * side * side


class Discriminator(nn.Module):
    """An image -> strided convs with leaky ReLU (`features`, flattened) -> `head` -> one score.

    Normalization: batch norm (`batch`, DCGAN's and PacGAN's Stacked-MNIST D), layer norm or none.
    Batch norm couples the samples of a batch, so it cannot go with the per-sample gradient
    penalties of WGAN-GP and DRAGAN: that combination is refused at start-up (train.build).
    """

    def __init__(self, in_shape: tuple[int, ...], width: int = 64, norm: Literal["none", "layer", "batch"] = "batch"):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.body, self.feature_dim = _trunk(self.in_shape, width, norm, "d")
        self.head: nn.Module = nn.Linear(self.feature_dim, 1)
        _init(self)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x)).squeeze(1)


class Encoder(nn.Module):
    """An image -> D's conv trunk -> Linear -> a vector of `out_dim` (MRGAN's E, VEEGAN's F, EBGAN's code)."""

    def __init__(self, in_shape: tuple[int, ...], out_dim: int, width: int = 64,
                 norm: Literal["none", "layer"] = "none"):
        super().__init__()
        self.in_shape, self.out_dim = tuple(in_shape), out_dim
        body, fan_in = _trunk(self.in_shape, width, norm, "encoder")
        self.net = nn.Sequential(body, nn.Linear(fan_in, out_dim))
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
