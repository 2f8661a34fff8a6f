"""One evaluation on the training device: fresh samples from G and the data, and the metrics that
need the networks. The rest (exact Wasserstein, pictures) is completed by ganlab.offload.

The loop talks to an *evaluator* chosen by the dataset (`make_evaluator`): `ToyEvaluator` here for
the 2-D mixtures, `ImageEvaluator` (ganlab/image_evaluation.py) for images. Both give the loop the
same four things: metrics on fresh samples, a job for the background worker, a headline for the
progress bar, and the protocol their numbers follow.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ganlab.data.toy import GaussianMixture
from ganlab.losses import Wasserstein
from ganlab.metrics import TOY_METRICS
from ganlab.metrics.jacobian import smallest_singular_value
from ganlab.metrics.modes import HQ_THRESHOLD, mode_coverage
from ganlab.remedies import Remedy

GRID_RESOLUTION = 120  # D heatmap: points per side
# What every evaluation reports (the offloaded ones included): the final metrics of every run, so
# the runs of a sweep share one set of HParams columns.
METRIC_KEYS = TOY_METRICS
JACOBIAN_SAMPLES = 256  # z points for the smallest singular value of dG/dz


@dataclass
class Evaluation:
    metrics: dict          # flat numbers, plus "mode_counts" (a list) for the mode history
    fake: np.ndarray       # the generated samples the metrics were computed on
    real: np.ndarray       # the data samples they were compared with
    d_grid: np.ndarray | None  # 2-D: D's output on a GRID_RESOLUTION^2 grid over `limits`
    source: np.ndarray | None = None  # which generator made each sample (several generators), else None
    grid: np.ndarray | None = None    # images: G at the fixed grid codes, uint8, for the sample-grid picture


def protocol(n: int, w_n: int, loss: Wasserstein | object) -> dict:
    """How the numbers of an evaluation were measured; stored in summary.json next to them."""
    return {
        "samples": n,
        "mode_metrics": "nearest mode by ||x - mu_k|| / std over all samples (VEEGAN/PacGAN protocol)",
        "high_quality_threshold_std": HQ_THRESHOLD,
        "reverse_kl": "KL(p_gen(mode) || uniform), p over all samples (nearest mode), 0 log 0 = 0",
        "reverse_kl_hq": "the same KL with p over the high-quality samples only (PacGAN's logger); "
                         "undefined (null) when no sample is high quality",
        "references": "untrained: this run's G before its first step (every metric); gaussian: n samples of "
                      "N(mean, covariance) of the data, exact moments of the mixture; data: n fresh data samples "
                      "(the ceiling). The same evaluator, sample count and real set; critic_gap and "
                      "jacobian_sigma_min need a G and D, so only `untrained` has them",
        "wasserstein_samples": w_n,
        "wasserstein": "exact empirical W1 and W2 between the first w_samples generated and data points "
                       "(exact optimal transport, Euclidean ground metric)",
        "jacobian_sigma_min": f"mean over {JACOBIAN_SAMPLES} z of the smallest singular value of dG/dz "
                              "(full Jacobian by forward-mode products; near 0: G squeezes z locally)",
        "critic_gap": "E[D(real)] - E[D(fake)] on the evaluation samples: "
                      + ("a Wasserstein estimate (Lipschitz critic)" if isinstance(loss, Wasserstein)
                         else f"the D gap of {type(loss).__name__}, not a Wasserstein estimate"),
    }


@contextmanager
def eval_mode(networks: list[nn.Module]):
    """Every network in evaluation mode (batch norm on running statistics) for the block, then back."""
    was_training = [net.training for net in networks]
    for net in networks:
        net.eval()
    try:
        yield
    finally:
        for net, mode in zip(networks, was_training):
            net.train(mode)


@torch.no_grad()
def evaluate(G: nn.Module, D: nn.Module, remedy: Remedy, data: GaussianMixture, latent_dim: int,
             n: int, generator: torch.Generator, limits: tuple[float, float]) -> Evaluation:
    """Metrics on n fresh samples. `generator` is the evaluation's own RNG, so evaluating more or
    less often never changes the training trajectory."""
    # Every network in evaluation mode (batch norm on running statistics), the remedy's extra ones too.
    with eval_mode([G, D, *(module for module, _ in remedy.extra_networks().values())]):
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
    return Evaluation(metrics, fake.float().cpu().numpy(), real.float().cpu().numpy(),
                      d_grid.float().cpu().numpy(), None if source is None else source.cpu().numpy())


class ToyEvaluator:
    """The 2-D protocol (DESIGN 3): mode coverage against the known centres, the D gap, the
    Jacobian's smallest singular value; exact W1/W2 and the pictures in the background worker."""

    metric_keys = METRIC_KEYS

    def __init__(self, data: GaussianMixture, latent_dim: int, eval_cfg, loss):
        self.data, self.latent_dim, self.cfg, self.loss = data, latent_dim, eval_cfg, loss
        self.n_modes = data.n_modes
        self.limits = data.plot_limits()
        self.centers = data.centers.cpu().numpy()

    def protocol(self) -> dict:
        return protocol(self.cfg.samples, min(self.cfg.w_samples, self.cfg.samples), self.loss)

    def evaluate(self, G: nn.Module, D: nn.Module, remedy: Remedy, generator: torch.Generator,
                 n: int | None = None) -> Evaluation:
        return evaluate(G, D, remedy, self.data, self.latent_dim, n or self.cfg.samples, generator, self.limits)

    def job(self, step: int, ev: Evaluation, history_steps: list[int], history_counts: list[list[int]]):
        from ganlab.offload import EvalJob

        return EvalJob(step, ev.fake, ev.real, ev.d_grid, self.centers, self.limits, scalars(ev),
                       list(history_steps), list(history_counts), self.cfg.w_samples, ev.source)

    def references(self, G: nn.Module, D: nn.Module, remedy: Remedy, generator: torch.Generator) -> dict:
        """The reference rows: {name: metrics} for the untrained G (call before the first step), a
        Gaussian fit to the data and fresh data, each measured like the run's own evaluations."""
        untrained = self.evaluate(G, D, remedy, generator)
        out = {"untrained": {**scalars(untrained), **self.offline_metrics(untrained)}}
        n = self.cfg.samples
        for name, x in (("gaussian", self.data.gaussian_fit(n, generator)), ("data", self.data.sample(n, generator))):
            metrics = mode_coverage(x, self.data.centers, self.data.std)
            del metrics["mode_counts"]
            ev = Evaluation(metrics, x.cpu().numpy(), untrained.real, None)  # the same real set as `untrained`
            out[name] = {**metrics, **self.offline_metrics(ev)}
        return out

    def headline(self, metrics: dict) -> str:
        return f"  modes {metrics['modes_captured']}/{self.n_modes}  HQ {metrics['high_quality_pct']:.0f}%"

    def offline_metrics(self, ev: Evaluation) -> dict:
        """The metrics the background worker adds (exact W1/W2), computed here, for `ganlab eval`."""
        from ganlab.metrics.wasserstein import empirical_wasserstein

        n = min(self.cfg.w_samples, len(ev.fake))
        return empirical_wasserstein(ev.fake[:n], ev.real[:n])

    def saved_samples(self, ev: Evaluation) -> dict:
        """What samples.npz keeps: exactly the samples the final metrics were computed on."""
        return {"x": ev.fake, "real": ev.real}


def scalars(ev: Evaluation) -> dict:
    """The evaluation's flat numbers (the per-mode counts go to the mode history instead)."""
    return {k: v for k, v in ev.metrics.items() if k != "mode_counts"}


def make_evaluator(data, latent_dim: int, eval_cfg, loss, device: torch.device, metrics_cfg=None):
    """The evaluator for the run's dataset: the toy protocol for mixtures, the image protocol else."""
    if isinstance(data, GaussianMixture):
        return ToyEvaluator(data, latent_dim, eval_cfg, loss)
    from ganlab.image_evaluation import (
        ImageEvaluator,  # classifiers, features: only image runs pay for them
    )

    return ImageEvaluator(data, latent_dim, eval_cfg, loss, device, metrics_cfg)
