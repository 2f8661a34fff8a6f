"""The ResNet G and D of SNGAN's CIFAR-10 experiments (Miyato et al. 2018, Appendix B.4, Table 4;
the `sngan_cifar10` networks of the public implementations), for 32x32 images of any channel count.

- G: z -> Linear -> 4x4 x w -> 3 up-blocks (w channels) -> BN, ReLU, conv3x3 -> C, tanh.
- D: optimized down-block (w) -> down-block (w) -> 2 blocks (w, no resampling) -> ReLU ->
  sum over the 8x8 positions (`features`, w wide) -> `head` Linear(w, 1).

No spectral norm here: SNGAN is model=resnet remedy=spectral_norm loss=hinge (the remedy normalizes
every linear and conv layer of D). Initialisation as the public implementations: Xavier-uniform,
gain sqrt(2) in the residual branches, 1 in shortcuts and linear layers.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError


def _check(shape: tuple[int, ...], width: int, role: str) -> None:
    if width < 1:
        raise ConfigError(f"model.{role}.width must be >= 1, got {width}")
    shape = tuple(shape)
    if len(shape) != 3 or shape[1:] != (32, 32) or shape[0] < 1:
        raise ConfigError(f"model resnet is for 32x32 images, got data of shape {shape}; "
                          "use dataset.pad_to_32=true for 28x28 data, or model=dcgan")


def _conv(c_in: int, c_out: int, k: int, gain: float) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, k, 1, k // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return conv


def _linear(fan_in: int, fan_out: int) -> nn.Linear:
    linear = nn.Linear(fan_in, fan_out)
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class UpBlock(nn.Module):
    """BN, ReLU, upsample x2, conv3x3, BN, ReLU, conv3x3; shortcut: upsample x2, conv1x1."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), _conv(c_in, c_out, 3, math.sqrt(2))
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), _conv(c_out, c_out, 3, math.sqrt(2))
        self.shortcut = _conv(c_in, c_out, 1, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """D's residual block: (ReLU,) conv3x3, ReLU, conv3x3 (, avgpool 2). The shortcut is learned
    (conv1x1) where the block resamples or changes width, else identity.

    The first block (`first=True`, SNGAN's "optimized block") sees the image itself: no ReLU before
    its first conv, and its shortcut pools before the 1x1 conv (cheaper, the same map)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool, first: bool = False):
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1, self.conv2 = _conv(c_in, c_out, 3, math.sqrt(2)), _conv(c_out, c_out, 3, math.sqrt(2))
        self.shortcut = _conv(c_in, c_out, 1, 1.0) if downsample or c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = self.shortcut(F.avg_pool2d(x, 2))
        elif self.shortcut is not None:
            s = self.shortcut(x)
            s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


class Generator(nn.Module):
    """z -> Linear -> (width, 4, 4) -> 3 up-blocks -> BN, ReLU, conv3x3 -> tanh image of `out_shape`."""

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], width: int = 256):
        super().__init__()
        _check(out_shape, width, "g")
        self.latent_dim, self.out_shape, self.width = latent_dim, tuple(out_shape), width
        self.project = _linear(latent_dim, width * 4 * 4)
        self.blocks = nn.Sequential(*(UpBlock(width, width) for _ in range(3)))  # 4 -> 8 -> 16 -> 32
        self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), _conv(width, self.out_shape[0], 3, 1.0), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.blocks(self.project(z).view(-1, self.width, 4, 4)))


class _Trunk(nn.Module):
    """D's residual stack, ReLU, global sum pooling: (n, C, 32, 32) -> (n, width)."""

    def __init__(self, in_shape: tuple[int, ...], width: int, role: str):
        super().__init__()
        _check(in_shape, width, role)
        self.blocks = nn.Sequential(
            DownBlock(in_shape[0], width, downsample=True, first=True),  # 32 -> 16; any channel count (packing)
            DownBlock(width, width, downsample=True),                   # 16 -> 8
            DownBlock(width, width, downsample=False),
            DownBlock(width, width, downsample=False))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.blocks(x)).sum(dim=(2, 3))  # a sum, not a mean, as SNGAN


class Discriminator(nn.Module):
    """An image -> residual blocks -> summed features (`features`, `feature_dim` = width) -> `head`.
    No batch norm (SNGAN's D has none), so gradient penalties stay per sample."""

    def __init__(self, in_shape: tuple[int, ...], width: int = 128):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.body = _Trunk(self.in_shape, width, "d")
        self.feature_dim = width
        self.head: nn.Module = _linear(width, 1)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x)).squeeze(1)


class Encoder(nn.Module):
    """An image -> D's residual trunk -> Linear -> a vector of `out_dim`."""

    def __init__(self, in_shape: tuple[int, ...], out_dim: int, width: int = 128):
        super().__init__()
        self.in_shape, self.out_dim = tuple(in_shape), out_dim
        self.net = nn.Sequential(_Trunk(self.in_shape, width, "encoder"), _linear(width, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
