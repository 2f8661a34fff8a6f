"""MAD-GAN (Ghosh et al. 2018, "Multi-Agent Diverse Generative Adversarial Networks").

k generators and a D with k + 1 outputs: a softmax over "made by G_i" (i < k) and "real" (the last
class). D learns which generator made a sample, so two generators that land on the same mode are
easy to tell apart, and the generators are pushed to different modes.

- D's objective: cross-entropy to each sample's source, as the mean over the real batch plus the
  mean over the fake batch (each generator makes 1/k of it). The real class thus has prior 1/2, as
  in a plain GAN; summing a full expectation per generator, as the paper's objective is written,
  would give it 1/(k+1). The optimum (every p_gi = p_data) is the same.
- Generator i's objective: log(1 - D_{k+1}(G_i(z))), in its non-saturating form -log D_{k+1}(G_i(z)).
- Samples come from every generator in equal shares: a batch of codes is split into k consecutive
  chunks, chunk i through G_i (so evaluation is uniform over the generators, exactly).
- `share`: the generators share every layer but the first (`all_but_first`, as the issue reads
  the paper, and as MGAN, Hoang et al. 2018, does) or every layer but the last (`all_but_last`);
  the paper's text was not at hand to settle which it uses.
- `diversity_weight` > 0: the seeds' variant, a penalty on the mean cosine similarity between the
  generators' samples of the same code.
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.losses import MinimaxGAN
from ganlab.metrics.modes import HQ_THRESHOLD
from ganlab.remedies.base import Remedy, refuse_partners, replace_head, unwrap


class MultiGenerator(nn.Module):
    """k generators behind one module: the i-th of k consecutive chunks of a batch of codes goes
    through G_i. With `shared` layers, each G_i is its own first layer followed by the shared ones,
    or (`shared_first`) the shared layers followed by its own last layer."""

    def __init__(self, parts: list[nn.Module], shared: nn.Module | None = None, shared_first: bool = False,
                 latent_dim: int | None = None, out_shape: tuple[int, ...] = ()):
        super().__init__()
        self.generators = nn.ModuleList(parts)  # the whole generators, or each one's own layer
        self.shared = shared                    # the layers they share, before or after their own
        self.shared_first = shared_first
        self.latent_dim, self.out_shape = latent_dim, tuple(out_shape)
        self.k = len(parts)

    def sizes(self, n: int) -> list[int]:
        """How many of n samples each generator makes (as equal as n allows)."""
        return [len(chunk) for chunk in torch.arange(n).tensor_split(self.k)]

    def source(self, n: int, device=None) -> Tensor:
        """The index of the generator that makes each of n samples."""
        return torch.repeat_interleave(torch.arange(self.k, device=device),
                                       torch.tensor(self.sizes(n), device=device))

    def each(self, z: Tensor) -> list[Tensor]:
        """Every generator applied to all of z: k batches of len(z) samples."""
        return [self._through(i, z) for i in range(self.k)]

    def _through(self, i: int, z: Tensor) -> Tensor:
        return self._finish([self.generators[i]], [z])

    def _finish(self, parts: list[nn.Module], inputs: list[Tensor]) -> Tensor:
        if self.shared is None:
            return torch.cat([g(x) for g, x in zip(parts, inputs)])
        if self.shared_first:  # one pass through the shared layers, then each generator's last layer
            hidden = self.shared(torch.cat(inputs)).split([len(x) for x in inputs])
            return torch.cat([g(h) for g, h in zip(parts, hidden)]).view(-1, *self.out_shape)
        # each generator's first layer, then one pass through the shared rest
        return self.shared(torch.cat([g(x) for g, x in zip(parts, inputs)])).view(-1, *self.out_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self._finish(list(self.generators), list(z.tensor_split(self.k)))


class SourceClassifier(nn.Module):
    """D with k + 1 outputs. `class_logits(x)` gives them; called as a plain D it gives the logit of
    "real" against all generators together, so D's heatmap and the critic gap keep their meaning."""

    def __init__(self, inner: nn.Module, k: int):
        super().__init__()
        self.inner, self.k = inner, k

    def class_logits(self, x: Tensor) -> Tensor:
        return self.inner(x)

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(x)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.inner(x)
        return logits[:, self.k] - torch.logsumexp(logits[:, : self.k], dim=1)


def class_logits(D: nn.Module, x: Tensor) -> Tensor:
    """The k + 1 logits of a SourceClassifier under any input wrappers (instance noise)."""
    core, x = unwrap(D, x)
    return core.class_logits(x)


class MADGAN(Remedy):
    build_order = 35  # a head change after the minibatch layers, so that combining them is refused by name

    def __init__(self, k: int = 4, share: Literal["none", "all_but_first", "all_but_last"] = "none",
                 diversity_weight: float = 0.0):
        if k < 2:
            raise ConfigError(f"remedy.madgan.k must be >= 2 generators, got {k}")
        if diversity_weight < 0:
            raise ConfigError(f"remedy.madgan.diversity_weight must be >= 0, got {diversity_weight}")
        self.k, self.share, self.diversity_weight = k, share, diversity_weight

    def check(self, loss, batch_size):
        if not isinstance(loss, MinimaxGAN):
            raise ConfigError(f"madgan replaces the objective with its (k+1)-class cross-entropy, which is the "
                              f"logistic GAN's; {type(loss).__name__} is not: use loss=nsgan (or gan, dragan)")
        if batch_size < self.k:
            raise ConfigError(f"batch_size={batch_size} is smaller than remedy.madgan.k={self.k}: "
                              "every generator needs samples in each batch")

    def check_partners(self, others):
        refuse_partners(others, "adapt_loss", "madgan replaces the loss's objective with its own cross-entropy, "
                                              "so {name}'s change of the loss would have no effect")
        refuse_partners(others, "sample", "madgan labels each sample with the generator that made it; {name} "
                                          "redraws the samples, so the labels would be wrong")

    def build(self, G, D, make):
        if getattr(D, "samples_per_score", 1) > 1:
            raise ConfigError("madgan's D classifies single samples by their generator; it cannot be packed (pacgan)")
        generators = [G, *(make.G() for _ in range(self.k - 1))]
        latent_dim, out_shape = make.latent_dim, make.data_shape
        if self.share == "none":
            G = MultiGenerator(generators, latent_dim=latent_dim, out_shape=out_shape)
        else:
            if not all(isinstance(getattr(g, "net", None), nn.Sequential) for g in generators):
                raise ConfigError(f"remedy.madgan.share={self.share} needs generators built as `net` = nn.Sequential "
                                  "(models/mlp.py); set share=none for this model")
            # Each generator keeps its own first (or last) layer; the rest is generator 0's, shared.
            if self.share == "all_but_first":
                G = MultiGenerator([g.net[0] for g in generators], shared=generators[0].net[1:],
                                   latent_dim=latent_dim, out_shape=out_shape)
            else:
                G = MultiGenerator([g.net[-1] for g in generators], shared=generators[0].net[:-1], shared_first=True,
                                   latent_dim=latent_dim, out_shape=out_shape)
        replace_head(D, lambda width: nn.Linear(width, self.k + 1), "madgan")
        return G, SourceClassifier(D, self.k)

    def d_loss(self, G, D, loss, real, z):
        with torch.no_grad():
            fake = G(z)
        logits_real, logits_fake = class_logits(D, real), class_logits(D, fake)
        real_class = torch.full((real.shape[0],), self.k, device=real.device)
        value = F.cross_entropy(logits_real, real_class) + F.cross_entropy(logits_fake, G.source(len(z), z.device))
        penalty = loss.penalty(D, real, fake)  # DRAGAN's, on the logit of "real"
        return value if penalty is None else value + penalty

    def g_loss(self, G, D, loss, real, z):
        # Non-saturating: each generator raises log D_{k+1} of its own samples.
        value = -F.log_softmax(class_logits(D, G(z)), dim=1)[:, self.k].mean()
        if self.diversity_weight > 0:
            value = value + self.diversity_weight * self.similarity(G, z[: max(2, len(z) // self.k)])
        return value

    def similarity(self, G: MultiGenerator, z: Tensor) -> Tensor:
        """Mean cosine similarity between the samples that two different generators make of one code."""
        outputs = [x.flatten(1) for x in G.each(z)]
        pairs = [F.cosine_similarity(a, b, dim=1).mean() for a, b in itertools.combinations(outputs, 2)]
        return torch.stack(pairs).mean()

    def sample_sources(self, G, z):
        return G.source(len(z), z.device)

    def eval_metrics(self, G, D, data, z, fake, real):
        """Per generator: the modes it captures, and the modes it owns (has the most high-quality
        samples of). Toy data only: it needs the mixture's centres."""
        if not hasattr(data, "centers"):
            return {}
        samples, source = G(z), self.sample_sources(G, z)
        dist = torch.cdist(samples.flatten(1).float(), data.centers.float()) / data.std
        nearest_dist, nearest = dist.min(dim=1)
        hq = nearest_dist <= HQ_THRESHOLD
        n_modes = data.centers.shape[0]
        counts = torch.stack([torch.bincount(nearest[hq & (source == i)], minlength=n_modes) for i in range(self.k)])
        owner = torch.where(counts.sum(0) > 0, counts.argmax(0), -1)
        metrics = {}
        for i in range(self.k):
            metrics[f"madgan_g{i}_modes"] = int((counts[i] > 0).sum())
            metrics[f"madgan_g{i}_owned"] = int((owner == i).sum())
        return metrics
