"""Mode coverage on mixtures of Gaussians, the VEEGAN / PacGAN protocol (DESIGN 3)."""

from __future__ import annotations

import torch
from torch import Tensor

HQ_THRESHOLD = 3.0  # a sample is high quality within 3 standard deviations of its nearest mode


def mode_coverage(samples: Tensor, centers: Tensor, std: float, threshold: float = HQ_THRESHOLD) -> dict:
    """Modes captured, high-quality %, and reverse KL(p_gen(mode) || uniform).

    - each sample's nearest mode k* by standardized distance d_k(x) = ||x - mu_k|| / std;
    - high quality: d_{k*}(x) <= threshold;
    - modes captured: modes that are the nearest mode of at least one high-quality sample;
    - reverse KL: sum_k p_k log(K p_k), p_k the fraction of *all* samples nearest to k, 0 log 0 = 0.
    """
    n, k = samples.shape[0], centers.shape[0]
    dist = torch.cdist(samples.float(), centers.float()) / std
    nearest_dist, nearest = dist.min(dim=1)
    high_quality = nearest_dist <= threshold
    counts = torch.bincount(nearest, minlength=k)
    captured = torch.bincount(nearest[high_quality], minlength=k) > 0
    p = counts.double() / n
    return {
        "modes_captured": int(captured.sum()),
        "high_quality_pct": 100.0 * float(high_quality.double().mean()),
        "reverse_kl": float(torch.xlogy(p, k * p).sum()),
        "mode_counts": counts.tolist(),
    }

