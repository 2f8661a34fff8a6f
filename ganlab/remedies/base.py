"""The remedy interface: the places where a remedy may change training.

The loop calls these hooks and nothing else, so a remedy is one subclass that overrides the hooks
it needs; the defaults are the plain GAN step of the chosen loss. In the order the run uses them:

- `check(loss, batch_size)`: refuse, at start-up, what the remedy cannot work with (ConfigError).
- `check_partners(others)`: in a combination, refuse the other remedies it cannot work with (a
  remedy that ignores the loss object refuses remedies that adapt the loss, ...).
- `adapt_loss(loss)`: change the objective itself (label smoothing's real target). Every step that
  uses the loss sees the change, unrolled D updates included.
- `build(G, D, make)`: wrap or replace the networks (packing, extra layers, spectral norm, k
  generators). `make` (a `NetworkFactory`) builds fresh networks from the model config: a D for
  another input shape, more generators, an encoder.
- `extra_networks()`: networks the remedy trains besides G and D (an encoder, a second D), each
  with its side, "g" or "d". The run gives each its own optimizer from `optim.<side>`, steps it in
  that side's phase, moves it to the device and saves it in checkpoints.
- `prepare(g_opt, d_opt, steps)`: keep what the step hooks need once the optimizers exist (the
  unrolled G step replays D's optimizer; instance noise anneals over the run's length).
- `begin_step(step)`: called before every training step, for schedules.
- `real_batch(data, n, generator)`: how the loop draws each real batch (`data.sample(n, generator)`;
  a single run passes no generator: the global RNG); conditional remedies draw the classes with it
  (`data.sample_with_classes`) and keep them for the step's objective.
- `d_loss(G, D, loss, real, z)` / `g_loss(G, D, loss, real, z)`: the objective of one D or G step
  (unrolled G steps, extra terms). `real` in the G step is the last real batch D trained on.
  The G step holds D's parameters fixed (no gradients) unless the remedy sets
  `g_loss_needs_d_gradients` (its G objective differentiates through them, as unrolled's look-ahead).
- `before_eval(G, D, data, generator)`: called before each evaluation draws its samples
  (rejection sampling calibrates D on held-out data here).
- `sample(G, D, z, generator)`: how n = len(z) samples are drawn for evaluation. A rejection sampler
  may draw further codes, from `generator` only (the evaluation's own RNG).
- `eval_metrics(G, D, data, z, fake, real)`: extra scalars for the evaluation (per-generator coverage,
  acceptance rate), logged as `metrics/<name>`.
- `sample_sources(G, z)`: which of several generators made each sample of G(z), or None; when given,
  the evaluation adds a picture of the samples coloured by generator (MAD-GAN).
- `d_map(D, points)`: D's score for each single point, for the heatmap picture.

Remedies combine (`remedy=[pacgan,spectral_norm]`, see `remedies/stack.py`): builds chain in
`build_order`; at most one remedy may replace each step hook.

Hooks are written as functions of the networks and the batch, with no state hidden in the loop, so
that the vectorised multi-seed loop (`replicas=N`, ganlab/replicas.py) calls them unchanged, under
torch.func.vmap. A remedy that cannot run there (it keeps state between hooks or steps, or uses an
operation vmap cannot batch) says why in `replica_refusal`; the run refuses it in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from ganlab.losses import Loss

Side = Literal["g", "d"]


class NetworkFactory:
    """Fresh networks from the model config, for `build`: remedies that add or replace networks
    build them from the user's model choice, so they scale with it (and images get conv nets)."""

    def __init__(self, make_g: Callable[..., nn.Module], make_d: Callable[..., nn.Module],
                 make_encoder: Callable[..., nn.Module], latent_dim: int, data_shape: tuple[int, ...],
                 n_classes: int | None = None):
        self._make_g, self._make_d, self._make_encoder = make_g, make_d, make_encoder
        self.latent_dim, self.data_shape = latent_dim, tuple(data_shape)
        self.n_classes = n_classes  # the data's number of classes, None for unlabelled data

    def D(self, in_shape: tuple[int, ...] | None = None) -> nn.Module:
        """A discriminator (one score per input) for inputs of `in_shape` (default: the data's)."""
        return self._make_d(in_shape=tuple(in_shape or self.data_shape))

    def G(self, latent_dim: int | None = None, out_shape: tuple[int, ...] | None = None) -> nn.Module:
        """A generator from `latent_dim` codes to `out_shape` outputs (defaults: the run's)."""
        return self._make_g(latent_dim=latent_dim or self.latent_dim, out_shape=tuple(out_shape or self.data_shape))

    def encoder(self, out_dim: int, in_shape: tuple[int, ...] | None = None) -> nn.Module:
        """An encoder from data of `in_shape` (default: the data's) to vectors of `out_dim`."""
        return self._make_encoder(in_shape=tuple(in_shape or self.data_shape), out_dim=out_dim)

# Hooks of which a combination may use one implementation only: two remedies replacing the G step
# (unrolled + feature matching) have no defined meaning together.
EXCLUSIVE_HOOKS = ("real_batch", "d_loss", "g_loss", "sample", "d_map", "sample_sources")


class Remedy:
    # Order of `build` in a combination: input changes (packing) first, then head changes
    # (minibatch layers), then rewraps of every layer (spectral norm), then input noise outermost.
    build_order: int = 50
    # Why this remedy cannot train under replicas=N (one vectorised step over N seeds), or None when it
    # can: the run refuses it at start-up in one line naming the remedy and this reason.
    replica_refusal: str | None = None
    # Whether `g_loss` differentiates with respect to D's parameters (unrolled's look-ahead D). When
    # not, the G step holds the D side's parameters fixed, so its backward skips their gradients,
    # which nothing reads (the next D step zeroes them): 8 % of the default step's time.
    g_loss_needs_d_gradients: bool = False
    # What the remedy uses beyond samples from G (and real batches for D): e.g. "class labels" (G is told
    # which mode to draw from) or "real anchors at sampling" (samples are made around real points).
    # Rows of such remedies answer another question than "does G cover the modes by itself", so the report
    # and the results scripts put them in a table of their own, never in a verdict against the plain GAN.
    uses: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    def check(self, loss: Loss, batch_size: int) -> None:
        pass

    def check_partners(self, others: dict[str, Remedy]) -> None:
        pass

    def adapt_loss(self, loss: Loss) -> Loss:
        return loss

    def build(self, G: nn.Module, D: nn.Module, make: NetworkFactory) -> tuple[nn.Module, nn.Module]:
        return G, D

    def extra_networks(self) -> dict[str, tuple[nn.Module, Side]]:
        return {}

    def prepare(self, g_opt: torch.optim.Optimizer, d_opt: torch.optim.Optimizer, steps: int) -> None:
        pass

    def begin_step(self, step: int) -> None:
        pass

    def real_batch(self, data, n: int, generator: torch.Generator | None = None) -> Tensor:
        # replicas=N passes each replica's own generator; a single run draws from the global RNG.
        return data.sample(n) if generator is None else data.sample(n, generator)

    def d_loss(self, G: nn.Module, D: nn.Module, loss: Loss, real: Tensor, z: Tensor) -> Tensor:
        fake = G(z).detach()  # D's step must not push gradients into G
        return discriminator_loss(D, loss, real, fake)

    def g_loss(self, G: nn.Module, D: nn.Module, loss: Loss, real: Tensor, z: Tensor) -> Tensor:
        return loss.g_loss(D(G(z)))

    def before_eval(self, G: nn.Module, D: nn.Module, data, generator: torch.Generator) -> None:
        pass

    def sample(self, G: nn.Module, D: nn.Module, z: Tensor, generator: torch.Generator) -> Tensor:
        return G(z)

    def eval_metrics(self, G: nn.Module, D: nn.Module, data, z: Tensor, fake: Tensor,
                     real: Tensor) -> dict[str, float]:
        return {}

    def sample_sources(self, G: nn.Module, z: Tensor) -> Tensor | None:
        return None

    def d_map(self, D: nn.Module, points: Tensor) -> Tensor:
        return D(points)

    def overrides(self, hook: str) -> bool:
        """Whether this remedy replaces `hook` (one of EXCLUSIVE_HOOKS) rather than inheriting it."""
        return getattr(type(self), hook) is not getattr(Remedy, hook)


class InputTransform(nn.Module):
    """A D that changes its input before the wrapped D sees it (packing, instance noise).

    It keeps D's `features` split, so feature matching works through it; remedies that change D's
    head reach the innermost D through `innermost(D)`.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def samples_per_score(self) -> int:
        return getattr(self.inner, "samples_per_score", 1)

    def features(self, x: Tensor) -> Tensor:
        return self.inner.features(self.transform(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(self.transform(x))


def discriminator_loss(D: nn.Module, loss: Loss, real: Tensor, fake: Tensor) -> Tensor:
    """The loss's D objective on fixed real and fake batches, with its penalty if it has one."""
    value = loss.d_loss(D(real), D(fake))
    penalty = loss.penalty(D, real, fake)
    return value if penalty is None else value + penalty


def refuse_partners(others: dict[str, Remedy], hook: str, why: str) -> None:
    """For `check_partners`: refuse, in one line, a partner remedy that replaces `hook`. `why` may
    name the partner as {name}."""
    for name, other in others.items():
        if other.overrides(hook):
            from ganlab.errors import ConfigError

            raise ConfigError(f"{why.format(name=name)}; drop one of them")


def unwrap(D: nn.Module, x: Tensor) -> tuple[nn.Module, Tensor]:
    """The model's own D under any InputTransform wrappers, and x transformed as D's forward would:
    for remedies that call a method of their D other than forward (class logits, pair scores)."""
    while isinstance(D, InputTransform):
        x, D = D.transform(x), D.inner
    return D, x


def innermost(D: nn.Module) -> nn.Module:
    """The model's own D under any InputTransform wrappers."""
    while isinstance(D, InputTransform):
        D = D.inner
    return D


def require_feature_split(D: nn.Module, remedy: str) -> nn.Module:
    """The innermost D, checked to expose `features`, `head` and `feature_dim` (models/mlp.py)."""
    core = innermost(D)
    if not all(hasattr(core, a) for a in ("features", "head", "feature_dim")):
        from ganlab.errors import ConfigError

        raise ConfigError(f"remedy {remedy} needs a discriminator with `features`, `head` and `feature_dim` "
                          f"(as models/mlp.py has); {type(core).__name__} has not")
    return core


def replace_head(D: nn.Module, make_head: Callable[[int], nn.Module], remedy: str) -> None:
    """Give the innermost D a new head built from its feature width; refuse a second replacement
    (minibatch_disc and minibatch_std together would silently drop one of them)."""
    core = require_feature_split(D, remedy)
    previous = getattr(core, "head_replaced_by", None)
    if previous:
        from ganlab.errors import ConfigError

        raise ConfigError(f"remedies {previous} and {remedy} both replace D's last layer; combine at most one of them")
    core.head = make_head(core.feature_dim)
    core.head_replaced_by = remedy
