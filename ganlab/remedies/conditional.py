"""What the conditional remedies share (`cgan_projection`, `acgan`): a class-conditional G(z, y), the
classes of each real batch, and the classes the fakes are made at.

Labels: on the 2-D mixtures the index of the mode a point was drawn from, on images the class (a
stacked triple's mode id, 1,000 classes): `data.sample_with_classes`. Data without labels is refused
at start-up.

- G(z, y) is the model's own G, built one-hot wider: it reads [z, one_hot(y)] (Mirza & Osindero's
  conditioning by concatenation; the projection paper's ResNet G uses conditional batch norm
  instead, which our MLP and DCGAN generators do not have).
- The fakes of both phases are made at the classes of the step's real batch (the last D batch in the
  G phase). Their frequencies are then the data's, and a gradient penalty, which interpolates real
  row i with fake row i, stays within one class. The projection paper's code draws the fake classes
  uniformly: for our class-balanced datasets the same distribution.
- Evaluation samples draw their classes uniformly from the evaluation's own RNG (`sample`), so their
  class frequencies scatter as a real sample's do. A plain call G(z) (the sample grid, dG/dz) gives
  the classes 0, 1, 2, ... in turn: a fixed, balanced assignment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.metrics.modes import HQ_THRESHOLD
from ganlab.remedies.base import Remedy, unwrap


def balanced_classes(n: int, n_classes: int, device=None) -> Tensor:
    """0, 1, ..., n_classes - 1, 0, 1, ...: n classes in turn."""
    return torch.arange(n, device=device) % n_classes


class ConditionalGenerator(nn.Module):
    """G(z, y) = inner([z, one_hot(y)]). `latent_dim` is z's size, as for an unconditional G."""

    def __init__(self, inner: nn.Module, n_classes: int, latent_dim: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.inner, self.n_classes = inner, n_classes
        self.latent_dim, self.out_shape = latent_dim, tuple(out_shape)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            y = balanced_classes(len(z), self.n_classes, z.device)
        return self.inner(torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1))


class AtClasses:
    """D scoring its inputs at fixed classes, as a one-argument D: for a loss's penalty, which calls
    D(x) on points derived row by row from the real batch (interpolates, perturbed reals)."""

    def __init__(self, D: nn.Module, classes: Tensor):
        self.D, self.classes = D, classes

    def __call__(self, x: Tensor) -> Tensor:
        core, x = unwrap(self.D, x)  # under instance noise: noise first, then the conditional D
        return core(x, self.classes)


class Conditional(Remedy):
    """The shared part. A subclass builds its D in `conditional_d` and writes `d_loss` and `g_loss`
    with `self.fakes` and `self.real_classes`."""

    build_order = 36  # after head changes (minibatch layers): the conditional D reads the final features
    key = "conditional"  # the remedy's config name, for messages
    uses = ("class labels",)  # G draws at a given class: the mode histogram is the labels' (uniform) one
    replica_refusal = ("it keeps each real batch's classes on the remedy object between its hooks, and one "
                       "remedy object serves every replica of the vectorised step")

    def __init__(self):
        self.n_classes = 0
        self.real_classes: Tensor | None = None  # the classes of the last real batch (`real_batch`)

    def build(self, G, D, make):
        if make.n_classes is None:
            raise ConfigError(f"remedy {self.key} needs labelled data (a dataset with `n_classes` and "
                              "`sample_with_classes`, as ring, grid and the image datasets have); this dataset has none")
        if getattr(D, "samples_per_score", 1) > 1:
            raise ConfigError(f"remedy {self.key} scores each sample at its own class; a packed D (pacgan) "
                              "scores several samples at once: drop one of them")
        self.n_classes = make.n_classes
        inner = make.G(latent_dim=make.latent_dim + self.n_classes)
        return (ConditionalGenerator(inner, self.n_classes, make.latent_dim, make.data_shape),
                self.conditional_d(D, make))

    def conditional_d(self, D: nn.Module, make) -> nn.Module:
        raise NotImplementedError

    def real_batch(self, data, n, generator=None):
        x, self.real_classes = data.sample_with_classes(n, generator)
        return x

    def classes_for(self, real: Tensor) -> Tensor:
        """The classes of `real`, the batch `real_batch` drew (a programming error otherwise)."""
        if self.real_classes is None or len(self.real_classes) != len(real):
            raise RuntimeError(f"remedy {self.key}: the real batch was not drawn by its real_batch hook; "
                               "draw it with remedy.real_batch(data, n)")
        return self.real_classes

    def fakes(self, G: nn.Module, z: Tensor, classes: Tensor) -> Tensor:
        return G(z, classes)

    def sample(self, G, D, z, generator):
        y = torch.randint(0, self.n_classes, (len(z),), device=z.device, generator=generator)
        return G(z, y)

    def eval_metrics(self, G, D, data, z, fake, real):
        """On the 2-D mixtures: the share of samples that land, high quality, on the mode of their class
        (class_fidelity_pct). Images would need the classifier, which the evaluator holds: not here."""
        if not hasattr(data, "centers"):
            return {}
        y = balanced_classes(len(z), self.n_classes, z.device)
        dist = torch.cdist(G(z, y).flatten(1).float(), data.centers.float()) / data.std
        nearest_dist, nearest = dist.min(dim=1)
        on_class = (nearest == y) & (nearest_dist <= HQ_THRESHOLD)
        return {"class_fidelity_pct": 100.0 * float(on_class.float().mean())}


def scores_at(D: nn.Module, x: Tensor, classes: Tensor) -> Tensor:
    """A conditional D's scores of x at `classes`, under any input wrappers (instance noise)."""
    return AtClasses(D, classes)(x)
