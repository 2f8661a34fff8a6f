"""Mode coverage on mixtures of Gaussians, the VEEGAN / PacGAN protocol (docs/cli.md, Metrics)."""

from __future__ import annotations

import torch
from torch import Tensor

HQ_THRESHOLD = 3.0  # a sample is high quality within 3 standard deviations of its nearest mode


def mode_coverage(samples: Tensor, centers: Tensor, std: float, threshold: float = HQ_THRESHOLD) -> dict:
    """Modes captured, high-quality %, and reverse KL(p_gen(mode) || uniform).

    - each sample's nearest mode k* by standardized distance d_k(x) = ||x - mu_k|| / std;
    - high quality: d_{k*}(x) <= threshold;
    - modes captured: modes that are the nearest mode of at least one high-quality sample;
    - reverse KL: sum_k p_k log(K p_k), p_k the fraction of *all* samples nearest to k, 0 log 0 = 0;
    - reverse KL (HQ): the same over the high-quality samples only, as PacGAN's 2-D logger builds
      its histogram; NaN when no sample is high quality (the histogram is empty, the KL undefined).
    """
    n, k = samples.shape[0], centers.shape[0]
    dist = torch.cdist(samples.float(), centers.float()) / std
    nearest_dist, nearest = dist.min(dim=1)
    high_quality = nearest_dist <= threshold
    counts = torch.bincount(nearest, minlength=k)
    p = counts.double() / n
    hq_counts = torch.bincount(nearest[high_quality], minlength=k).double()
    n_hq = float(hq_counts.sum())
    p_hq = hq_counts / max(n_hq, 1.0)
    return {
        "modes_captured": int((hq_counts > 0).sum()),
        "high_quality_pct": 100.0 * float(high_quality.double().mean()),
        "reverse_kl": float(torch.xlogy(p, k * p).sum()),
        "reverse_kl_hq": float(torch.xlogy(p_hq, k * p_hq).sum()) if n_hq > 0 else float("nan"),
        "mode_counts": counts.tolist(),
    }



def coverage_of_samples(fake: Tensor, real: Tensor, data) -> dict:
    """`mode_coverage` against the dataset's own modes (ganlab.data.protocol.ToyData): the registry's
    on-samples function of the 2-D protocol (the real samples are not needed)."""
    return mode_coverage(fake, data.centers, data.std)
