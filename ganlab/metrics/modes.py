"""Mode coverage on mixtures of Gaussians, the VEEGAN / PacGAN protocol (docs/cli.md, Metrics)."""

from __future__ import annotations

import torch
from torch import Tensor

HQ_THRESHOLD = 3.0  # a sample is high quality within 3 standard deviations of its nearest mode


def mode_coverage(samples: Tensor, centers: Tensor, std: float | Tensor, threshold: float = HQ_THRESHOLD,
                  weights: Tensor | None = None) -> dict:
    """Modes captured, high-quality %, and reverse KL(p_gen(mode) || uniform).

    - each sample's nearest mode k* by standardized distance d_k(x) = ||x - mu_k|| / std (std: one number, or
      one per mode, std_k);
    - high quality: d_{k*}(x) <= threshold;
    - modes captured: modes that are the nearest mode of at least one high-quality sample;
    - reverse KL: sum_k p_k log(K p_k), p_k the fraction of *all* samples nearest to k, 0 log 0 = 0; with the
      mixture's `weights` w (dataset=mixture), KL(p_gen || w) = sum_k p_k log(p_k / w_k) instead;
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
    if weights is None:
        kl, kl_hq = torch.xlogy(p, k * p).sum(), torch.xlogy(p_hq, k * p_hq).sum()
    else:
        w = weights.double().to(p.device)
        kl, kl_hq = torch.xlogy(p, p / w).sum(), torch.xlogy(p_hq, p_hq / w).sum()
    return {
        "modes_captured": int((hq_counts > 0).sum()),
        "high_quality_pct": 100.0 * float(high_quality.double().mean()),
        "reverse_kl": float(kl),
        "reverse_kl_hq": float(kl_hq) if n_hq > 0 else float("nan"),
        "mode_counts": counts.tolist(),
    }



def coverage_of_samples(fake: Tensor, real: Tensor, data) -> dict:
    """`mode_coverage` against the dataset's own modes (ganlab.data.protocol.ToyData): the registry's
    on-samples function of the 2-D protocol (the real samples are not needed). Nothing for data without known
    modes (`centers` None: dataset=points without labels or centres)."""
    if getattr(data, "centers", None) is None:
        return {}
    return mode_coverage(fake, data.centers, data.std, weights=getattr(data, "weights", None))
