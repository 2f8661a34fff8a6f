"""Real images degraded the way generated ones are: the blur of an upsampling G, and pixel noise.

Two uses: the Stacked reference rows (what a blurry or noisy generator that covers every mode scores,
ganlab/evaluation/image.py) and the validation of the mode counts on real sets with known modes
(scripts/validate_stacked_counts.py, issue 26's table)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NOISE_STD = 0.5
DEGRADATIONS = {"clean": "the images as they are",
                "blur1": "a 3x3 binomial blur, once",
                "blur2": "a 3x3 binomial blur, twice",
                "noise": f"Gaussian noise, std {NOISE_STD} (pixels in [-1, 1]), clipped"}


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
    raise ValueError(f"unknown degradation {how!r}; choose from {', '.join(DEGRADATIONS)}")
