"""The 2-D protocol (VEEGAN / PacGAN; docs/cli.md, Metrics): one evaluation on the training device, fresh
samples from G and the data, and the metrics that need the networks. Exact W1/W2 and the pictures
are completed in the background (jobs.py, worker.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ganlab.data.toy import GaussianMixture
from ganlab.evaluation.base import (
    Evaluation,
    ModeHistory,
    critic_gap_protocol,
    eval_mode,
    scalars,
)
from ganlab.evaluation.jobs import EvalJob, ReferenceJob, offline_toy_metrics
from ganlab.losses import batch_coupling
from ganlab.metrics import protocol_metrics, sample_metrics
from ganlab.metrics.jacobian import smallest_singular_value
from ganlab.metrics.mmd import MEDIAN_POINTS
from ganlab.metrics.mmd import PROTOCOL as MMD_PROTOCOL
from ganlab.metrics.critic import critic_gap
from ganlab.metrics.modes import HQ_THRESHOLD
from ganlab.remedies import Remedy

GRID_RESOLUTION = 120  # D heatmap: points per side
JACOBIAN_SAMPLES = 256  # z points for the smallest singular value of dG/dz
GRID_BLOCK = 2048  # heatmap points per call of D
BANDWIDTH_SEED = 20_170_101  # the data sample the MMD's bandwidth comes from: the same in every run on a dataset


def fixed_bandwidth(data: GaussianMixture) -> float:
    """The MMD's σ for every evaluation and reference row of a run (metrics/mmd.py): the median pairwise
    distance of MEDIAN_POINTS data points drawn from a generator of their own, so the training and
    evaluation RNGs are untouched. Not each evaluation's real set: that is fresh every time, and its
    median would move between evaluations. mmd.median_bandwidth's rule by torch.pdist (the same
    distances): its scipy, which the training process does not import otherwise (the worker does),
    would add about 0.3 s to every run's start."""
    rng = torch.Generator(data.device).manual_seed(BANDWIDTH_SEED)
    real = data.sample(MEDIAN_POINTS, generator=rng).double().cpu()
    return float(np.median(torch.pdist(real).numpy()))


def protocol(n: int, w_n: int, wasserstein_critic: bool, mmd_sigma: float) -> dict:
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
        "mmd": f"{MMD_PROTOCOL}. Its real samples: {MEDIAN_POINTS} data points drawn with seed {BANDWIDTH_SEED}, "
               f"the same in every run on this dataset and device; σ = {mmd_sigma:.6g}",
        "wasserstein_samples": w_n,
        "wasserstein": "exact empirical W1 and W2 between the first w_samples generated and data points "
                       "(exact optimal transport, Euclidean ground metric)",
        "jacobian_sigma_min": f"mean over {JACOBIAN_SAMPLES} z of the smallest singular value of dG/dz "
                              "(full Jacobian by forward-mode products; near 0: G squeezes z locally)",
        "critic_gap": critic_gap_protocol(wasserstein_critic),
    }


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
        metrics = {"critic_gap": critic_gap(D(real), D(fake))}
        metrics.update(sample_metrics("toy", fake, real, data))  # mode coverage, and any registered metric of samples
        metrics["jacobian_sigma_min"] = float(smallest_singular_value(G, z[:JACOBIAN_SAMPLES]).mean())
        metrics.update(remedy.eval_metrics(G, D, data, z, fake, real))
        source = remedy.sample_sources(G, z)
        d_grid = None
        if tuple(data.shape) == (2,):  # D's map over the plane: 2-D data only (a mixture may have any dimension)
            ticks = torch.linspace(limits[0], limits[1], GRID_RESOLUTION, device=data.device)
            ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
            d_grid = d_map_in_blocks(remedy, D, torch.stack([xs.flatten(), ys.flatten()], dim=1))
            d_grid = d_grid.view(GRID_RESOLUTION, GRID_RESOLUTION).float().cpu().numpy()
    return Evaluation(metrics, fake.float().cpu().numpy(), real.float().cpu().numpy(), d_grid,
                      None if source is None else source.cpu().numpy())


def d_map_in_blocks(remedy: Remedy, D: nn.Module, points: Tensor) -> Tensor:
    """D's map over the heatmap's points, GRID_BLOCK points per call: the 14,400 at once took 25 ms
    of each evaluation against 10 ms in blocks (CPU, default MLP: the whole batch's activations,
    7 MB a layer, are fresh memory every call). A batch-coupled D (minibatch layers) scores a point
    among the others of its batch, so it gets them all at once, as before."""
    if batch_coupling(D) is not None:
        return remedy.d_map(D, points)
    return torch.cat([remedy.d_map(D, block) for block in points.split(GRID_BLOCK)])


class ToyEvaluator:
    """The 2-D protocol (docs/cli.md, Metrics): mode coverage against the known centres, the D gap, the
    Jacobian's smallest singular value; exact W1/W2 and the pictures in the background worker."""


    def __init__(self, data: GaussianMixture, latent_dim: int, eval_cfg, wasserstein_critic: bool,
                 device: torch.device | None = None, metrics_cfg=None):
        self.data, self.latent_dim, self.cfg = data, latent_dim, eval_cfg
        self.wasserstein_critic = wasserstein_critic
        self.n_modes = data.n_modes
        self.history = ModeHistory()
        self.metric_keys = protocol_metrics("toy")  # the registry's, read now: a metric registered since counts
        self.limits = data.plot_limits()
        # No known modes (dataset=points without labels or centres): no mode metrics, no crosses in the pictures.
        self.centers = (np.zeros((0, *data.shape), np.float32) if data.centers is None
                        else data.centers.float().cpu().numpy())
        self.mmd_sigma = fixed_bandwidth(data)  # one kernel for the run: its evaluations, its reference rows

    def protocol(self) -> dict:
        return protocol(self.cfg.samples, min(self.cfg.w_samples, self.cfg.samples), self.wasserstein_critic,
                        self.mmd_sigma)

    def evaluate(self, G: nn.Module, D: nn.Module, remedy: Remedy, generator: torch.Generator,
                 n: int | None = None, step: int | None = None) -> Evaluation:
        ev = evaluate(G, D, remedy, self.data, self.latent_dim, n or self.cfg.samples, generator, self.limits)
        if step is not None:
            self.history.record(step, ev)
        return ev

    @torch.no_grad()
    def evaluate_samples(self, fake: Tensor, generator: torch.Generator) -> Evaluation:
        """The metrics of points made elsewhere (`ganlab eval --samples FILE`), (n, 2) on this device: all
        that needs no G or D (mode coverage and the registered sample metrics; `offline_metrics` adds
        W1/W2 and the MMD)."""
        real = self.data.sample(len(fake), generator=generator)
        metrics = sample_metrics("toy", fake, real, self.data)
        return Evaluation(metrics, fake.float().cpu().numpy(), real.float().cpu().numpy(), None)

    def job(self, step: int, ev: Evaluation, last: bool = False) -> EvalJob:
        return EvalJob(step, ev.fake, ev.real, ev.d_grid, self.centers, self.limits, scalars(ev),
                       list(self.history.steps), list(self.history.counts), self.cfg.w_samples, self.mmd_sigma,
                       ev.source, last)

    def references(self, G: nn.Module, D: nn.Module, remedy: Remedy, generator: torch.Generator,
                   offloader=None) -> dict:
        """The reference rows: {name: metrics} for the untrained G (call before the first step), a
        Gaussian fit to the data and fresh data, each measured like the run's own evaluations. With an
        `offloader` (the loop's), their offline metrics (W1/W2, MMD) go to it as one ReferenceJob and
        arrive with its result; without, they are computed here."""
        untrained = self.evaluate(G, D, remedy, generator)
        n = self.cfg.samples
        out, rows = {"untrained": scalars(untrained)}, {"untrained": (untrained.fake, untrained.real)}
        real = torch.from_numpy(untrained.real).to(self.data.device)
        for name, x in (("gaussian", self.data.gaussian_fit(n, generator)), ("data", self.data.sample(n, generator))):
            metrics = sample_metrics("toy", x, real, self.data)
            metrics.pop("mode_counts", None)
            out[name], rows[name] = metrics, (x.cpu().numpy(), untrained.real)  # the same real set as `untrained`
        job = ReferenceJob(rows, self.cfg.w_samples, self.mmd_sigma)
        if offloader is not None:
            offloader.submit(job)
            return out
        return {name: {**metrics, **job.complete().references[name]} for name, metrics in out.items()}

    def headline(self, metrics: dict) -> str:
        if "modes_captured" not in metrics:  # data without known modes: W1/W2 and the MMD come from the worker
            return f"  D gap {metrics['critic_gap']:.3g}" if "critic_gap" in metrics else ""
        return f"  modes {metrics['modes_captured']}/{self.n_modes}  HQ {metrics['high_quality_pct']:.0f}%"

    @torch.no_grad()
    def data_references(self, generator: torch.Generator, n: int | None = None) -> dict:
        """The reference rows that need no G (`ganlab eval --samples FILE`): `gaussian` and `data`, n samples each
        (default: eval.samples), measured against one fresh real set of n, offline metrics included."""
        n = n or self.cfg.samples
        real = self.data.sample(n, generator=generator)
        rows = {}
        for name, x in (("gaussian", self.data.gaussian_fit(n, generator)), ("data", self.data.sample(n, generator))):
            metrics = sample_metrics("toy", x, real, self.data)
            metrics.pop("mode_counts", None)
            fake_np, real_np = x.float().cpu().numpy(), real.float().cpu().numpy()
            rows[name] = {**metrics, **offline_toy_metrics(fake_np, real_np, self.cfg.w_samples, self.mmd_sigma)}
        return rows

    def offline_metrics(self, ev: Evaluation) -> dict:
        """The metrics the background worker adds (exact W1/W2, MMD), computed here, for `ganlab eval`
        and the reference rows."""
        return offline_toy_metrics(ev.fake, ev.real, self.cfg.w_samples, self.mmd_sigma)

    def saved_samples(self, ev: Evaluation) -> dict:
        """What samples.npz keeps: exactly the samples the final metrics were computed on."""
        return {"x": ev.fake, "real": ev.real}

    def state_dict(self) -> dict:
        return self.history.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.history.load_state_dict(state)

