"""Multi-scale discriminators (Wang, Liu, Zhu, Tao, Kautz, Catanzaro, "High-Resolution Image Synthesis
and Semantic Manipulation with Conditional GANs", CVPR 2018: pix2pixHD, §3.2).

`scales` Ds, each on one level of an image pyramid: D_0 on the image, D_k on the image average-pooled
k times (3x3 window, stride 2, padding 1, padding not counted: pix2pixHD's MultiscaleDiscriminator,
models/networks.py). A coarse D sees the whole image at once and a fine one its details, so G must be
right at every scale. Each D is built from the model config for its input size (model.d): the DCGAN
D keeps the full-size D's convolutions at every scale, as pix2pixHD's Ds share one architecture.

- D's objective: the sum over scales of the loss's D objective, each D with the loss's gradient
  penalty (if any) on its own inputs, as if it were alone on images of its size.
- G's objective: the sum over scales of the loss's G objective (pix2pixHD's GANLoss sums the Ds'
  losses). pix2pixHD's feature-matching and VGG terms are not part of this remedy.
- Called as a plain D (critic_gap, DRS's calibration), the mean of the scales' scores.

Images only. Refused with pacgan (its packed D is one D for the full image), the minibatch heads
(they replace one D's last layer; the stack stops at `require_feature_split`) and every remedy that
replaces the D or G step (the stack refuses two owners of one step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.remedies.base import Remedy, discriminator_loss, unwrap


def downsample(x: Tensor) -> Tensor:
    """One level down the pyramid: pix2pixHD's AvgPool2d(3, stride=2, padding=1, count_include_pad=False)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


def pyramid_shapes(shape: tuple[int, ...], scales: int) -> list[tuple[int, ...]]:
    """The input shape of each scale's D: each pooling takes a side s to ceil(s / 2) (28, 14, 7, 4)."""
    c, h, w = shape
    shapes = [(c, h, w)]
    for _ in range(scales - 1):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        shapes.append((c, h, w))
    return shapes


class MultiScaleDiscriminator(nn.Module):
    """`discriminators[k]` scores the image pooled k times. No `features`/`head` split: there is one
    per scale, so remedies that need D's single head refuse it."""

    def __init__(self, discriminators: list[nn.Module], in_shape: tuple[int, ...]):
        super().__init__()
        self.discriminators = nn.ModuleList(discriminators)
        self.in_shape = tuple(in_shape)

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """x and its poolings, one per D (each pools the previous level, as pix2pixHD)."""
        levels = [x]
        for _ in range(len(self.discriminators) - 1):
            levels.append(downsample(levels[-1]))
        return levels

    def scores(self, x: Tensor) -> list[Tensor]:
        return [D(level) for D, level in zip(self.discriminators, self.pyramid(x))]

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack(self.scores(x)).mean(dim=0)


def _multiscale(D: nn.Module, x: Tensor) -> tuple[MultiScaleDiscriminator, Tensor]:
    """The MultiScaleDiscriminator under any input wrappers (instance noise), and x as they change it."""
    core, x = unwrap(D, x)
    if not isinstance(core, MultiScaleDiscriminator):  # a later remedy replaced D: a programming error
        raise TypeError(f"remedy multiscale: D is {type(core).__name__}, not its MultiScaleDiscriminator")
    return core, x


class MultiScale(Remedy):
    build_order = 15  # after packing (refused), before head changes (refused), spectral norm and noise (applied to all Ds)

    def __init__(self, scales: int = 3):
        if scales < 1:
            raise ConfigError(f"remedy.multiscale.scales must be >= 1 (1 = the plain D; pix2pixHD uses 3), got {scales}")
        self.scales = scales

    def build(self, G, D, make):
        shape = make.data_shape
        if len(shape) != 3:
            raise ConfigError(f"multiscale needs images (C, H, W), which it average-pools to coarser scales; the data "
                              f"has shape {shape}: use an image dataset (e.g. dataset=mnist model=dcgan)")
        if getattr(D, "samples_per_score", 1) > 1:
            raise ConfigError("multiscale builds one D per scale for single images; pacgan packs several images into "
                              "one D input, so they cannot be combined: drop one of them")
        discriminators = []
        for k, in_shape in enumerate(pyramid_shapes(shape, self.scales)):
            try:
                discriminators.append(make.D(in_shape))
            except ConfigError as exc:  # the architecture's smallest input: say which key to lower
                raise ConfigError(f"remedy.multiscale.scales={self.scales}: scale {k} gives {in_shape[1]}x{in_shape[2]} "
                                  f"images, which the model's D does not take ({exc}); use remedy.multiscale.scales<={k} "
                                  "or another model") from None
        return G, MultiScaleDiscriminator(discriminators, shape)

    def d_loss(self, G, D, loss, real, z):
        fake = G(z).detach()  # D's step must not push gradients into G
        core, real = _multiscale(D, real)
        _, fake = _multiscale(D, fake)
        # Real and fake pyramids scored apart, as discriminator_loss scores the batches (batch norm).
        return sum(discriminator_loss(d, loss, r, f)
                   for d, r, f in zip(core.discriminators, core.pyramid(real), core.pyramid(fake)))

    def g_loss(self, G, D, loss, real, z):
        core, fake = _multiscale(D, G(z))
        return sum(loss.g_loss(score) for score in core.scores(fake))
