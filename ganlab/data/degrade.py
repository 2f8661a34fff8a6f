"""Real images degraded the way generated ones are: the blur of an upsampling G, and pixel noise.

Two uses: the Stacked reference rows (what a blurry or noisy generator that covers every mode scores,
ganlab/evaluation/image.py) and the validation of the mode counts on real sets with known modes
(scripts/validate_stacked_counts.py, issue 26's table)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NOISE_STD = 0.5
CONTRAST = 0.7
DEGRADATIONS = {"clean": "the images as they are",
                "blur1": "a 3x3 binomial blur, once",
                "blur2": "a 3x3 binomial blur, twice",
                "noise": f"Gaussian noise, std {NOISE_STD} (pixels in [-1, 1]), clipped",
                # Two that the matched confusion's grid of blurs and noises (metrics/matched_confusion.py) does not
                # hold, so the validation sees how the match does on a look it was not built from.
                "downup": "averaged 2x2 down, then bilinear up (the softness of a G's upsampling path)",
                "contrast": f"contrast x {CONTRAST} (pixels towards the middle grey)"}


def degrade(x: Tensor, how: str, generator: torch.Generator | None = None) -> Tensor:
    """Images (n, C, H, W) in [-1, 1], degraded by `how` (a key of DEGRADATIONS); a new tensor but for clean."""
    if how == "clean":
        return x
    if how in ("blur1", "blur2"):
        taps = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
        channels = x.shape[1]
        kernel = (taps[:, None] * taps[None, :] / 16).expand(channels, 1, 3, 3)
        for _ in range(1 if how == "blur1" else 2):
            # Edge pixels repeat (replicate padding): a zero border would darken every digit's edge.
            x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
        return x
    if how == "noise":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + NOISE_STD * noise).clamp_(-1.0, 1.0)
    if how == "downup":
        return F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)
    if how == "contrast":
        return x * CONTRAST
    raise ValueError(f"unknown degradation {how!r}; choose from {', '.join(DEGRADATIONS)}")


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur of standard deviation `sigma` pixels (7 taps, replicate padding)."""
    t = torch.arange(-3, 4, device=x.device, dtype=x.dtype)
    taps = torch.exp(-t**2 / (2 * sigma**2))
    taps = taps / taps.sum()
    channels = x.shape[1]
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), taps.view(1, 1, 1, 7).expand(channels, 1, 1, 7),
                 groups=channels)
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), taps.view(1, 1, 7, 1).expand(channels, 1, 7, 1),
                    groups=channels)


AUGMENTATION = ("each batch in four random quarters: clean; Gaussian blur, sigma ~ U(0.4, 1.8) px; Gaussian noise, "
                "std ~ U(0, 0.6), clipped; blur, contrast x U(0.5, 1) and noise std ~ U(0, 0.3)")


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """A training batch (n, C, H, W) in [-1, 1] degraded as AUGMENTATION says, drawn from `generator` (on the
    CPU): the mode classifier learns to label blurry and noisy images as generated ones are, so its confusion
    on them moves less from the test split's (issue 26)."""
    out = x.clone()
    quarters = torch.randperm(len(x), generator=generator).chunk(4)
    for part, idx in enumerate(quarters):
        if part == 0 or not len(idx):
            continue
        idx = idx.to(x.device)
        y = out[idx]
        if part in (1, 3):
            y = gaussian_blur(y, float(torch.empty(1).uniform_(0.4, 1.8, generator=generator)))
        if part == 3:
            y = y * torch.empty(len(y), 1, 1, 1).uniform_(0.5, 1.0, generator=generator).to(x.device)
        if part in (2, 3):
            std = torch.empty(len(y), 1, 1, 1).uniform_(0.0, 0.6 if part == 2 else 0.3, generator=generator)
            y = (y + std.to(x.device) * torch.randn(y.shape, generator=generator).to(x.device)).clamp(-1, 1)
        out[idx] = y
    return out
