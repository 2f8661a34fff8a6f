"""MAD-GAN (Ghosh, Kulharia, Namboodiri, Torr, Dokania, "Multi-Agent Diverse Generative Adversarial
Networks", CVPR 2018).

k generators and a D with k + 1 outputs: a softmax over "made by G_i" (i < k) and "real" (the last
class). D learns which generator made a sample, so two generators that land on the same mode are
easy to tell apart, and the generators are pushed to different modes.

The defaults follow the authors' synthetic-data code, github.com/vivkul/MAD-GAN_synthetic (commit
e9c892a; TensorFlow). What it does, read there:
- madgan.py:36-37: the split of z across the batch is commented out (`zs = z0`): every generator
  gets the same z, the whole batch.
- madgan.py:39-46: `former1`/`former2` are built once and reused by every generator (shared); each
  generator has its own `latter`, the last layer (`share: all_but_last`). madgan_ind.py:39-43 is
  the other variant, its own first layer and the rest shared (`share: all_but_first`); train.py:82-94
  runs both.
- madgan.py:50-66: the k outputs are concatenated (k*B fakes), D scores the B reals and the k*B
  fakes, and D's loss is one mean of the softmax cross-entropy over all B + k*B rows, labels
  real (there 0) x B, then generator i x B (madgan.py:60 keeps `n_repeat = batch_size`, with
  `// n_generators` commented out). The real class thus has prior 1/(k+1).
- madgan.py:56,67: G's loss is the mean over all k*B fakes of -log softmax(D(x))_real, the
  non-saturating form; madgan.py:71 steps every generator's variables with one optimizer.
- madgan.py:132: samples for evaluation feed n/k codes to every generator: equal shares.
- The synthetic code has no similarity term (no MAD-GAN-Sim).

Options (ganlab/configs/remedy/madgan.yaml):
- `batch: full` (the authors'): D sees k*B fakes per B reals, as above. `batch: split`, ganlab's
  earlier default: the B codes are split into k chunks, chunk i through G_i, and D's loss is the
  mean over the reals plus the mean over the fakes (real prior 1/2); G's loss is the mean over
  the B fakes. The optimum (every p_gi = p_data) is the same.
- `share`: none (k whole generators), all_but_last (the authors' madgan.py), all_but_first.
- `diversity_weight` > 0: a penalty on the mean cosine similarity between D's penultimate features
  of the samples two generators make of one code. The paper's similarity variant (MAD-GAN-Sim)
  compares D's features, not the samples themselves: on raw 2-D points, (2, 2) and (4, 4) would
  count as identical and the origin has no direction. The penalty form is ours.

Sampling (`forward`, used by evaluation) always gives every generator an equal share of the codes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.losses import MinimaxGAN
from ganlab.metrics.modes import HQ_THRESHOLD
from ganlab.models import dcgan, mlp, resnet
from ganlab.remedies.base import Remedy, refuse_partners, replace_head, unwrap

Share = Literal["none", "all_but_first", "all_but_last"]
Batch = Literal["full", "split"]


def generator_stages(g: nn.Module) -> list[nn.Module] | None:
    """G's forward as modules applied in turn, so that all layers of it but the first or the last can
    be shared; None for a generator this does not know. The last stage is the last layer with
    weights (with its output activation), the first is the layer that reads z."""
    if isinstance(g, mlp.Generator):
        return list(g.net)  # MultiGenerator reshapes to out_shape
    if isinstance(g, dcgan.Generator):
        return [g.project, nn.Unflatten(1, g.start), *g.net[:-2], nn.Sequential(*g.net[-2:])]
    if isinstance(g, resnet.Generator):
        return [g.project, nn.Unflatten(1, (g.width, 4, 4)), g.blocks, *g.out[:-2], nn.Sequential(*g.out[-2:])]
    return None


class MultiGenerator(nn.Module):
    """k generators behind one module. G_i is `generators[i]` alone, or, with `shared` layers, the
    shared layers then `generators[i]` (`shared_first`: the generators own their last layer), or
    `generators[i]` then the shared layers (they own their first layer).

    Two layouts of a batch of n codes:
    - `forward(z)`, for sampling: the i-th of k consecutive chunks of z goes through G_i (n samples,
      equal shares);
    - `full(z)`, for training as the authors' code: every G_i gets all of z (k*n samples, G_i's at
      rows i*n to (i+1)*n)."""

    def __init__(self, parts: list[nn.Module], shared: nn.Module | None = None, shared_first: bool = False,
                 latent_dim: int | None = None, out_shape: tuple[int, ...] = ()):
        super().__init__()
        self.generators = nn.ModuleList(parts)  # the whole generators, or each one's own layer
        self.shared = shared                    # the layers they share, before or after their own
        self.shared_first = shared_first
        self.latent_dim, self.out_shape = latent_dim, tuple(out_shape)
        self.k = len(parts)

    def sizes(self, n: int) -> list[int]:
        """How many of n samples each generator makes in `forward` (as equal as n allows)."""
        return [len(chunk) for chunk in torch.arange(n).tensor_split(self.k)]

    def source(self, n: int, device=None) -> Tensor:
        """The index of the generator that makes each of the n samples of `forward`."""
        return torch.repeat_interleave(torch.arange(self.k, device=device),
                                       torch.tensor(self.sizes(n), device=device))

    def full_source(self, n: int, device=None) -> Tensor:
        """The index of the generator that makes each of the k*n samples of `full` of n codes."""
        return torch.arange(self.k, device=device).repeat_interleave(n)

    def forward(self, z: Tensor) -> Tensor:
        return self._generate(z, lambda h: list(h.tensor_split(self.k)))

    def full(self, z: Tensor) -> Tensor:
        return self._generate(z, lambda h: [h] * self.k)

    def each(self, z: Tensor) -> list[Tensor]:
        """Every generator applied to all of z: k batches of len(z) samples."""
        return list(self.full(z).split(len(z)))

    def _generate(self, z: Tensor, inputs: Callable[[Tensor], list[Tensor]]) -> Tensor:
        """`inputs` gives each generator's input from what they all start from (z, or the shared
        layers' output)."""
        if self.shared is None:
            return torch.cat([g(x) for g, x in zip(self.generators, inputs(z))])
        if self.shared_first:  # one pass through the shared layers (the same codes for all), then the own last layers
            out = torch.cat([g(h) for g, h in zip(self.generators, inputs(self.shared(z)))])
        else:  # each generator's own first layer, then one pass through the shared rest
            out = self.shared(torch.cat([g(x) for g, x in zip(self.generators, inputs(z))]))
        return out.view(-1, *self.out_shape)


class SourceClassifier(nn.Module):
    """D with k + 1 outputs. `class_logits(x)` gives them; called as a plain D it gives the logit of
    "real" against all generators together, so D's heatmap and the critic gap keep their meaning."""

    def __init__(self, inner: nn.Module, k: int):
        super().__init__()
        self.inner, self.k = inner, k

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(x)

    def head(self, features: Tensor) -> Tensor:
        return self.inner.head(features)

    def class_logits(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.class_logits(x)
        return logits[:, self.k] - torch.logsumexp(logits[:, : self.k], dim=1)


def class_logits(D: nn.Module, x: Tensor) -> Tensor:
    """The k + 1 logits of a SourceClassifier under any input wrappers (instance noise)."""
    core, x = unwrap(D, x)
    return core.class_logits(x)


def logits_and_features(D: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The k + 1 logits and the penultimate features they are computed from, in one pass of D."""
    core, x = unwrap(D, x)
    features = core.features(x)
    return core.head(features), features


def d_features(D: nn.Module, x: Tensor) -> Tensor:
    """D's penultimate features (the input of its head), under any input wrappers."""
    core, x = unwrap(D, x)
    return core.features(x)


def mean_cosine_between_generators(features: Tensor, k: int) -> Tensor:
    """Mean cosine similarity between the rows of two different generators for one code; `features`
    are in `full`'s layout (k blocks of n rows)."""
    blocks = features.flatten(1).chunk(k)
    return torch.stack([F.cosine_similarity(a, b, dim=1).mean() for a, b in itertools.combinations(blocks, 2)]).mean()


class MADGAN(Remedy):
    build_order = 35  # a head change after the minibatch layers, so that combining them is refused by name

    def __init__(self, k: int = 4, share: Share = "all_but_last", batch: Batch = "full", diversity_weight: float = 0.0):
        if k < 2:
            raise ConfigError(f"remedy.madgan.k must be >= 2 generators, got {k}")
        if share not in get_args(Share):
            raise ConfigError(f"remedy.madgan.share={share!r}: choose one of {', '.join(get_args(Share))}")
        if batch not in get_args(Batch):
            raise ConfigError(f"remedy.madgan.batch={batch!r}: choose one of {', '.join(get_args(Batch))}")
        if diversity_weight < 0:
            raise ConfigError(f"remedy.madgan.diversity_weight must be >= 0, got {diversity_weight}")
        self.k, self.share, self.batch, self.diversity_weight = k, share, batch, diversity_weight

    def check(self, loss, batch_size):
        if not isinstance(loss, MinimaxGAN):
            raise ConfigError(f"madgan replaces the objective with its (k+1)-class cross-entropy, which is the "
                              f"logistic GAN's; {type(loss).__name__} is not: use loss=nsgan (or gan, dragan)")
        if self.batch == "split" and batch_size < self.k:
            raise ConfigError(f"batch_size={batch_size} is smaller than remedy.madgan.k={self.k} with "
                              "remedy.madgan.batch=split: every generator needs samples in each batch")

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
            stages = [generator_stages(g) for g in generators]
            if stages[0] is None:
                raise ConfigError(f"remedy.madgan.share={self.share} knows the layers of the mlp, dcgan and resnet "
                                  f"generators, not {type(G).__name__}'s; set remedy.madgan.share=none")
            # Each generator keeps its own first (or last) layer; the rest is generator 0's, shared.
            if self.share == "all_but_first":
                G = MultiGenerator([s[0] for s in stages], shared=nn.Sequential(*stages[0][1:]),
                                   latent_dim=latent_dim, out_shape=out_shape)
            else:
                G = MultiGenerator([s[-1] for s in stages], shared=nn.Sequential(*stages[0][:-1]), shared_first=True,
                                   latent_dim=latent_dim, out_shape=out_shape)
        replace_head(D, lambda width: nn.Linear(width, self.k + 1), "madgan")
        return G, SourceClassifier(D, self.k)

    def fakes(self, G: MultiGenerator, z: Tensor) -> tuple[Tensor, Tensor]:
        """The fakes of one step and the generator that made each: k*len(z) of them (`batch: full`,
        every generator on all of z) or len(z) (`batch: split`)."""
        if self.batch == "full":
            return G.full(z), G.full_source(len(z), z.device)
        return G(z), G.source(len(z), z.device)

    def d_loss(self, G, D, loss, real, z):
        with torch.no_grad():
            fake, source = self.fakes(G, z)
        # Reals and fakes in separate passes, as the authors' code (D1, D2) and as D's batch norm expects.
        logits_real, logits_fake = class_logits(D, real), class_logits(D, fake)
        real_class = torch.full((real.shape[0],), self.k, device=real.device)
        if self.batch == "full":  # one mean over the B + k*B rows: the real class has prior 1/(k+1)
            value = F.cross_entropy(torch.cat([logits_real, logits_fake]), torch.cat([real_class, source]))
        else:  # a mean over the reals plus one over the fakes: the real class has prior 1/2
            value = F.cross_entropy(logits_real, real_class) + F.cross_entropy(logits_fake, source)
        penalty = loss.penalty(D, real, fake)  # DRAGAN's, on the logit of "real" (it perturbs the reals only)
        return value if penalty is None else value + penalty

    def g_loss(self, G, D, loss, real, z):
        fake, _ = self.fakes(G, z)
        logits, features = logits_and_features(D, fake)
        # Non-saturating: each generator raises log D_{k+1} of its own samples.
        value = -F.log_softmax(logits, dim=1)[:, self.k].mean()
        if self.diversity_weight > 0:
            if self.batch == "full":  # the features of every generator's sample of each code are at hand
                similarity = mean_cosine_between_generators(features, self.k)
            else:  # as before: every generator on a k-th of the codes, so the term costs about one batch more
                similarity = self.similarity(G, D, z[: max(2, len(z) // self.k)])
            value = value + self.diversity_weight * similarity
        return value

    def similarity(self, G: MultiGenerator, D: nn.Module, z: Tensor) -> Tensor:
        """Mean cosine similarity between D's features of the samples two different generators make of
        one code."""
        return self.diversity(D, G.full(z))

    def diversity(self, D: nn.Module, fake: Tensor) -> Tensor:
        """The similarity term on samples in `full`'s layout (k blocks, one row per code in each)."""
        return mean_cosine_between_generators(d_features(D, fake), self.k)

    def sample_sources(self, G, z):
        return G.source(len(z), z.device)

    def eval_metrics(self, G, D, data, z, fake, real):
        """Per generator: the modes it captures, and the modes it owns (has the most high-quality
        samples of). Toy data only: it needs the mixture's centres (points without known modes have none)."""
        if getattr(data, "centers", None) is None:
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
