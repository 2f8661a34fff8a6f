"""One evaluation on the training device: fresh samples from G and the data, and the metrics that
need the networks. The rest (exact Wasserstein, pictures) is completed by ganlab.offload."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ganlab.data.toy import GaussianMixture
from ganlab.losses import Wasserstein
from ganlab.metrics.jacobian import smallest_singular_value
from ganlab.metrics.modes import HQ_THRESHOLD, mode_coverage
from ganlab.remedies import Remedy

GRID_RESOLUTION = 120  # D heatmap: points per side
# What every evaluation reports (the offloaded ones included): the final metrics of every run, so
# the runs of a sweep share one set of HParams columns.
METRIC_KEYS = ("modes_captured", "high_quality_pct", "reverse_kl", "critic_gap", "wasserstein1", "wasserstein2",
               "jacobian_sigma_min")
JACOBIAN_SAMPLES = 256  # z points for the smallest singular value of dG/dz


@dataclass
class Evaluation:
    metrics: dict          # flat numbers, plus "mode_counts" (a list) for the mode history
    fake: np.ndarray       # the generated samples the metrics were computed on
    real: np.ndarray       # the data samples they were compared with
    d_grid: np.ndarray     # D's output on a GRID_RESOLUTION^2 grid over `limits`
    source: np.ndarray | None = None  # which generator made each sample (several generators), else None


def protocol(n: int, w_n: int, loss: Wasserstein | object) -> dict:
    """How the numbers of an evaluation were measured; stored in summary.json next to them."""
    return {
        "samples": n,
        "mode_metrics": "nearest mode by ||x - mu_k|| / std over all samples (VEEGAN/PacGAN protocol)",
        "high_quality_threshold_std": HQ_THRESHOLD,
        "reverse_kl": "KL(p_gen(mode) || uniform), p over all samples, 0 log 0 = 0",
        "wasserstein_samples": w_n,
        "wasserstein": "exact empirical W1 and W2 between the first w_samples generated and data points "
                       "(exact optimal transport, Euclidean ground metric)",
        "jacobian_sigma_min": f"mean over {JACOBIAN_SAMPLES} z of the smallest singular value of dG/dz "
                              "(full Jacobian by forward-mode products; near 0: G squeezes z locally)",
        "critic_gap": "E[D(real)] - E[D(fake)] on the evaluation samples: "
                      + ("a Wasserstein estimate (Lipschitz critic)" if isinstance(loss, Wasserstein)
                         else f"the D gap of {type(loss).__name__}, not a Wasserstein estimate"),
    }


@torch.no_grad()
def evaluate(G: nn.Module, D: nn.Module, remedy: Remedy, data: GaussianMixture, latent_dim: int,
             n: int, generator: torch.Generator, limits: tuple[float, float]) -> Evaluation:
    """Metrics on n fresh samples. `generator` is the evaluation's own RNG, so evaluating more or
    less often never changes the training trajectory."""
    # Every network in evaluation mode (batch norm on running statistics), the remedy's extra ones too.
    networks = [G, D, *(module for module, _ in remedy.extra_networks().values())]
    was_training = [net.training for net in networks]
    for net in networks:
        net.eval()
    try:
        remedy.before_eval(G, D, data, generator)
        z = torch.randn(n, latent_dim, device=data.device, generator=generator)
        fake = remedy.sample(G, D, z, generator)
        real = data.sample(n, generator=generator)
        metrics = {"critic_gap": float(D(real).mean() - D(fake).mean())}
        metrics.update(mode_coverage(fake, data.centers, data.std))
        metrics["jacobian_sigma_min"] = float(smallest_singular_value(G, z[:JACOBIAN_SAMPLES]).mean())
        metrics.update(remedy.eval_metrics(G, D, data, z, fake, real))
        source = remedy.sample_sources(G, z)
        ticks = torch.linspace(limits[0], limits[1], GRID_RESOLUTION, device=data.device)
        ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
        d_grid = remedy.d_map(D, torch.stack([xs.flatten(), ys.flatten()], dim=1)).view(GRID_RESOLUTION, GRID_RESOLUTION)
    finally:
        for net, mode in zip(networks, was_training):
            net.train(mode)
    return Evaluation(metrics, fake.float().cpu().numpy(), real.float().cpu().numpy(),
                      d_grid.float().cpu().numpy(), None if source is None else source.cpu().numpy())
