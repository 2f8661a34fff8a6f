"""GAN objectives: one small class each.

A loss acts on discriminator outputs (logits or critic values): `d_loss(d_real, d_fake)` and
`g_loss(d_fake)`. Gradient-penalty losses add `penalty(D, real, fake)`; WGAN clips D's weights in
`after_d_step(D)`. Each carries `n_critic`, the D steps per G step; its YAML sets the paper's values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError


class Loss:
    """Base objective. Subclasses define d_loss and g_loss; the hooks default to nothing."""

    # Whether D is a (roughly) Lipschitz critic, so that its gap E[D(x)] - E[D(G(z))] estimates W1.
    wasserstein_critic = False

    def __init__(self, n_critic: int = 1):
        if n_critic < 1:
            raise ConfigError(f"n_critic must be >= 1, got {n_critic}")
        self.n_critic = n_critic

    def d_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, d_fake: Tensor) -> Tensor:
        raise NotImplementedError

    def penalty(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor | None:
        return None

    def after_d_step(self, D: nn.Module) -> None:
        pass


class MinimaxGAN(Loss):
    """Goodfellow et al. 2014. D maximises log D(x) + log(1 - D(G(z))); G minimises log(1 - D(G(z))).

    `real_target` is D's label for real samples (1; one-sided label smoothing sets 0.9)."""

    real_target = 1.0

    def d_loss(self, d_real, d_fake):
        # -log sigmoid(l) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l)
        real = F.softplus(-d_real).mean()
        if self.real_target != 1.0:  # cross-entropy to the soft target t: t(-log D) + (1-t)(-log(1-D))
            real = self.real_target * real + (1 - self.real_target) * F.softplus(d_real).mean()
        return real + F.softplus(d_fake).mean()

    def g_loss(self, d_fake):
        # log(1 - sigmoid(l)) = -softplus(l): saturates when D confidently rejects G's samples.
        return -F.softplus(d_fake).mean()


class NonSaturatingGAN(MinimaxGAN):
    """Goodfellow et al. 2014, the practical variant: G minimises -log D(G(z))."""

    def g_loss(self, d_fake):
        return F.softplus(-d_fake).mean()


class Wasserstein(Loss):
    """The critic maximises E[D(x)] - E[D(G(z))]; subclasses keep it (roughly) 1-Lipschitz."""

    wasserstein_critic = True

    def d_loss(self, d_real, d_fake):
        return d_fake.mean() - d_real.mean()

    def g_loss(self, d_fake):
        return -d_fake.mean()


class WGAN(Wasserstein):
    """Arjovsky et al. 2017: Lipschitz by clipping every critic weight to [-clip, clip]."""

    def __init__(self, n_critic: int = 5, clip: float = 0.01):
        super().__init__(n_critic)
        if clip <= 0:
            raise ConfigError(f"clip must be > 0, got {clip}")
        self.clip = clip

    @torch.no_grad()
    def after_d_step(self, D):
        for p in D.parameters():
            p.clamp_(-self.clip, self.clip)


def has_penalty(loss: Loss) -> bool:
    """Whether the loss adds a gradient penalty (WGAN-GP, DRAGAN, any future one)."""
    return type(loss).penalty is not Loss.penalty


def batch_coupling(D: nn.Module) -> str | None:
    """What in D makes one sample's score depend on the other samples of its batch (batch norm in
    training mode, a minibatch layer) and how to avoid it, or None when D scores each sample (or
    pack) on its own."""
    for module in D.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return "batch norm (model.d.norm=batch); use model.d.norm=layer or none"
        if getattr(module, "couples_samples", None):
            return module.couples_samples
    return None


def check_penalty_fits(loss: Loss, D: nn.Module) -> None:
    """A gradient penalty is E[(||grad_x D(x)|| - 1)^2] per sample. With a batch-coupled D the
    gradient of the summed scores mixes samples (measured at init with minibatch layers: a
    cross-sample gradient norm of 0.25 against 0.16 per sample), so the penalty would constrain
    something other than the per-sample norm the method defines. Holding the coupling fixed (batch
    statistics as constants) would be a third method, neither paper's: refused, with the fix."""
    coupling = batch_coupling(D) if has_penalty(loss) else None
    if coupling is not None:
        raise ConfigError(f"the loss ({type(loss).__name__}) takes a per-sample gradient penalty, and D couples the "
                          f"samples of a batch through {coupling} (or choose a loss without a penalty)")


def samples_per_score(D) -> int:
    """How many consecutive samples D turns into one score: m for a packed D (PacGAN), else 1.
    A gradient penalty is about D's input, so it takes the norm over each score's whole input."""
    return getattr(D, "samples_per_score", 1)


def _per_score_uniform(D, like: Tensor) -> Tensor:
    """One U[0,1) draw per D input (per pack for a packed D), shaped to broadcast over samples."""
    group = samples_per_score(D)
    u = torch.rand(like.shape[0] // group, *[1] * (like.dim() - 1), device=like.device)
    return u.repeat_interleave(group, dim=0)


def _gradient_penalty(D: nn.Module, points: Tensor) -> Tensor:
    """E[(||grad_x D(x)|| - 1)^2] at the given points, differentiable w.r.t. D's parameters; the
    norm is over each score's input (a whole pack for a packed D)."""
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(points).sum(), points, create_graph=True)
    return (grad.reshape(grad.shape[0] // samples_per_score(D), -1).norm(dim=1) - 1).pow(2).mean()


class WGANGP(Wasserstein):
    """Gulrajani et al. 2017: a gradient penalty on random interpolates instead of clipping."""

    def __init__(self, n_critic: int = 5, penalty_weight: float = 10.0):
        super().__init__(n_critic)
        if penalty_weight < 0:
            raise ConfigError(f"penalty_weight must be >= 0, got {penalty_weight}")
        self.penalty_weight = penalty_weight

    def penalty(self, D, real, fake):
        eps = _per_score_uniform(D, real)  # a packed D: interpolate between a real and a fake pack
        return self.penalty_weight * _gradient_penalty(D, eps * real + (1 - eps) * fake)


class LSGAN(Loss):
    """Mao et al. 2017 with targets a=0 (fake), b=1 (real; `real_target`), c=1 (what G wants D to say)."""

    real_target = 1.0

    def d_loss(self, d_real, d_fake):
        return 0.5 * ((d_real - self.real_target).pow(2).mean() + d_fake.pow(2).mean())

    def g_loss(self, d_fake):
        return 0.5 * (d_fake - 1).pow(2).mean()


class Hinge(Loss):
    """Lim & Ye 2017; Miyato et al. 2018: D minimises E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""

    def d_loss(self, d_real, d_fake):
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()

    def g_loss(self, d_fake):
        return -d_fake.mean()


class DRAGAN(NonSaturatingGAN):
    """Kodali et al. 2017: the GAN loss plus a gradient penalty at perturbed data points."""

    def __init__(self, n_critic: int = 1, penalty_weight: float = 10.0, perturb: float = 0.5):
        super().__init__(n_critic)
        if penalty_weight < 0 or perturb <= 0:
            raise ConfigError(f"penalty_weight must be >= 0 and perturb > 0, got {penalty_weight}, {perturb}")
        self.penalty_weight = penalty_weight
        self.perturb = perturb

    def penalty(self, D, real, fake):
        # The reference code perturbs x by u * 0.5 * std(x), u ~ U[0,1] per coordinate, and
        # penalises at a random point between x and its perturbation.
        noisy = real + self.perturb * real.std() * torch.rand_like(real)
        alpha = _per_score_uniform(D, real)
        return self.penalty_weight * _gradient_penalty(D, real + alpha * (noisy - real))
