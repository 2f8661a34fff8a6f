"""DiffAugment (Zhao, Liu, Lin, Zhu, Han 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): every image D sees in training, real and fake, in D's steps and in G's, is first augmented by
differentiable transformations, so G's gradient flows back through them. Evaluation (D in eval mode)
sees the images as they are.

The policy, a comma-separated list applied in its order (the authors' `DiffAugment(x, policy)`):
- `color`: brightness x + U(-0.5, 0.5), then saturation (x - mean over channels) * U(0, 2) + that mean,
  then contrast (x - mean over the image) * U(0.5, 1.5) + that mean (in the data's units, [-1, 1] here;
  saturation does nothing to one channel);
- `translation`: a shift by a whole number of pixels, uniform in [-r H, r H] x [-r W, r W] (r H rounded,
  r = `translation_ratio`, 1/8), the pixels shifted in being 0;
- `cutout`: a square of (c H) x (c W) pixels (c = `cutout_ratio`, 1/2; rounded) set to 0, its centre
  uniform over the image (it may stick out of the edge).
Each sample draws its own parameters, at every call: real and fake batches get independent draws, as in
the authors' code (their StyleGAN2 `run_D` augments each batch it is given; their BigGAN augments the
concatenated batch, one draw per sample). Written here from the paper's and the code's values, not copied.
Draws come from the global RNG, which a run's checkpoint saves (and replicas=N draws per replica).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ganlab.errors import ConfigError
from ganlab.remedies.base import InputTransform, Remedy

OPERATIONS = ("color", "translation", "cutout")


def brightness(x: Tensor) -> Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def saturation(x: Tensor) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (2 * torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)) + mean


def contrast(x: Tensor) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def color(x: Tensor) -> Tensor:
    return contrast(saturation(brightness(x)))


def _pixels(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def translate(x: Tensor, shift_h: Tensor, shift_w: Tensor) -> Tensor:
    """Each image n moved by (shift_h[n], shift_w[n]) whole pixels (down, right), zeros shifted in."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device) - shift_h.view(n, 1)   # output row i reads row i - shift
    cols = torch.arange(w, device=x.device) - shift_w.view(n, 1)
    inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
    x = x.gather(2, rows.clamp(0, h - 1).view(n, 1, h, 1).expand(x.shape))
    x = x.gather(3, cols.clamp(0, w - 1).view(n, 1, 1, w).expand(x.shape))
    return x * inside.to(x.dtype)


def random_translation(x: Tensor, ratio: float) -> Tensor:
    n, _, h, w = x.shape
    dh, dw = _pixels(h, ratio), _pixels(w, ratio)
    return translate(x, torch.randint(-dh, dh + 1, (n,), device=x.device),
                     torch.randint(-dw, dw + 1, (n,), device=x.device))


def cut_out(x: Tensor, top: Tensor, left: Tensor, size_h: int, size_w: int) -> Tensor:
    """Each image n with the rectangle of size_h x size_w pixels from (top[n], left[n]) set to 0 (a rectangle
    sticking out of the image is cut at its edge)."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device) - top.view(n, 1)
    cols = torch.arange(w, device=x.device) - left.view(n, 1)
    hole = ((rows >= 0) & (rows < size_h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < size_w)).view(n, 1, 1, w)
    return x * (~hole).to(x.dtype)


def random_cutout(x: Tensor, ratio: float) -> Tensor:
    n, _, h, w = x.shape
    size_h, size_w = _pixels(h, ratio), _pixels(w, ratio)
    # The centre uniform over the image: as the authors' offsets (0 .. H + (1 - size % 2) - 1) less size // 2
    centre_h = torch.randint(0, h + (1 - size_h % 2), (n,), device=x.device)
    centre_w = torch.randint(0, w + (1 - size_w % 2), (n,), device=x.device)
    return cut_out(x, centre_h - size_h // 2, centre_w - size_w // 2, size_h, size_w)


def augment(x: Tensor, policy: tuple[str, ...], translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> Tensor:
    """x (N, C, H, W) through the policy's operations in order, each sample with its own random draws."""
    for op in policy:
        if op == "color":
            x = color(x)
        elif op == "translation":
            x = random_translation(x, translation_ratio)
        elif op == "cutout":
            x = random_cutout(x, cutout_ratio)
    return x


class Augmented(InputTransform):
    """D on augmented inputs while training (D.train()); in eval mode the inputs pass unchanged."""

    def __init__(self, inner, policy: tuple[str, ...], translation_ratio: float, cutout_ratio: float):
        super().__init__(inner)
        self.policy, self.translation_ratio, self.cutout_ratio = policy, translation_ratio, cutout_ratio

    def transform(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return augment(x, self.policy, self.translation_ratio, self.cutout_ratio)


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in OPERATIONS]
    if unknown or not names:
        raise ConfigError(f"remedy.diffaugment.policy={policy!r}: a comma-separated list of {', '.join(OPERATIONS)} "
                          "(the paper's: 'color,translation,cutout')")
    return names


class DiffAugment(Remedy):
    build_order = 85  # after spectral norm (no layers of its own), inside instance noise and DRS's calibrated D

    def __init__(self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5):
        self.policy = parse_policy(policy)
        if not 0 <= translation_ratio <= 1:
            raise ConfigError(f"remedy.diffaugment.translation_ratio must be in [0, 1] (the paper's 1/8), got "
                              f"{translation_ratio}")
        if not 0 <= cutout_ratio <= 1:
            raise ConfigError(f"remedy.diffaugment.cutout_ratio must be in [0, 1] (the paper's 1/2), got {cutout_ratio}")
        self.translation_ratio, self.cutout_ratio = float(translation_ratio), float(cutout_ratio)

    def build(self, G, D, make):
        if len(make.data_shape) != 3:
            raise ConfigError(f"remedy diffaugment augments images (channels x height x width); this dataset's samples "
                              f"have shape {make.data_shape}: use an image dataset (mnist, cifar10, stacked_mnist, ...)")
        return G, Augmented(D, self.policy, self.translation_ratio, self.cutout_ratio)
