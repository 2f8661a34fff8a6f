"""GAN objectives: one small class each.

A loss acts on discriminator outputs (logits or critic values): `d_loss(d_real, d_fake)` and
`g_loss(d_fake)`. Gradient-penalty losses add `penalty(D, real, fake)`, which sees the samples
(so does the Loss-Sensitive GAN's margin hinge, `penalty_kind = "pairs"`); WGAN clips D's weights in
`after_d_step(D)`. Each carries `n_critic`, the D steps per G step; its YAML sets the paper's values.
The logistic losses (`gan`, `nsgan`) take the zero-centred penalties R1 (on real samples) and R2 (on
fakes) of Mescheder et al. 2018, off by default (`r1_gamma`, `r2_gamma`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError


class Loss:
    """Base objective. Subclasses define d_loss and g_loss; the hooks default to nothing."""

    # Whether D is a (roughly) Lipschitz critic, so that its gap E[D(x)] - E[D(G(z))] estimates W1.
    wasserstein_critic = False
    # What `penalty`, where a subclass defines it, adds: "gradient", a per-sample gradient penalty
    # (refused with a batch-coupled D: check_penalty_fits), or "pairs", terms on D's scores of paired
    # real and fake inputs, each batch scored apart as in d_loss, which any D takes.
    penalty_kind = "gradient"

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

    `real_target` is D's label for real samples (1; one-sided label smoothing sets 0.9).
    `r1_gamma`, `r2_gamma`: Mescheder et al. 2018's zero-centred gradient penalties on D's logit,
    R1 = r1_gamma / 2 * E_real ||grad_x D(x)||^2 and R2 = r2_gamma / 2 * E_fake ||grad_x D(x)||^2
    (the norm over each score's input: a whole pack for a packed D), added to D's loss; 0 (the default)
    is off, and then nothing is computed."""

    real_target = 1.0

    def __init__(self, n_critic: int = 1, r1_gamma: float = 0.0, r2_gamma: float = 0.0):
        super().__init__(n_critic)
        for name, gamma in (("r1_gamma", r1_gamma), ("r2_gamma", r2_gamma)):
            if not (math.isfinite(gamma) and gamma >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0 (0 is off; 10 is the usual R1), got {gamma}")
        self.r1_gamma, self.r2_gamma = float(r1_gamma), float(r2_gamma)

    @property
    def penalty_kind(self) -> str | None:
        """A per-sample gradient penalty when R1 or R2 is on (check_penalty_fits then applies), else none."""
        return "gradient" if self.r1_gamma or self.r2_gamma else None

    def penalty(self, D, real, fake):
        if not (self.r1_gamma or self.r2_gamma):
            return None
        total = None
        for gamma, points in ((self.r1_gamma, real), (self.r2_gamma, fake)):
            if gamma:
                term = 0.5 * gamma * _squared_gradient_norm(D, points)
                total = term if total is None else total + term
        return total

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
    """Whether the loss adds a gradient penalty (WGAN-GP, DRAGAN, R1/R2 when on, any future one). A
    `penalty` of kind "pairs" (LossSensitive's hinge) is none: it scores the real and the fake batch as
    d_loss does."""
    return type(loss).penalty is not Loss.penalty and loss.penalty_kind == "gradient"


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


def _squared_gradient_norm(D: nn.Module, points: Tensor) -> Tensor:
    """E ||grad_x D(x)||^2 over the points (the squared norm over each score's input: a whole pack for a
    packed D), differentiable w.r.t. D's parameters: R1 and R2 (Mescheder et al. 2018) without their
    gamma / 2. torch.func.grad, as `_gradient_penalty` (it runs under vmap too)."""
    grad = torch.func.grad(lambda x: D(x).sum())(points.detach())
    return grad.reshape(grad.shape[0] // samples_per_score(D), -1).pow(2).sum(dim=1).mean()


def _gradient_penalty(D: nn.Module, points: Tensor) -> Tensor:
    """E[(||grad_x D(x)|| - 1)^2] at the given points, differentiable w.r.t. D's parameters; the
    norm is over each score's input (a whole pack for a packed D)."""
    # torch.func.grad rather than autograd.grad on a leaf: the same gradient (bit for bit here, and still
    # differentiable w.r.t. D's parameters), and it also runs under torch.func.vmap (replicas=N), where
    # requires_grad_ is not allowed.
    grad = torch.func.grad(lambda x: D(x).sum())(points.detach())
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
    """Mao et al. 2017, the least-squares GAN (`loss=lsgan`; not Qi's Loss-Sensitive GAN, which the
    literature also calls LS-GAN: `LossSensitive`, `loss=loss_sensitive`), with targets a=0 (fake),
    b=1 (real; `real_target`), c=1 (what G wants D to say)."""

    real_target = 1.0

    def d_loss(self, d_real, d_fake):
        return 0.5 * ((d_real - self.real_target).pow(2).mean() + d_fake.pow(2).mean())

    def g_loss(self, d_fake):
        return 0.5 * (d_fake - 1).pow(2).mean()


class LossSensitive(Loss):
    """Qi 2017/2019, the Loss-Sensitive GAN (LS-GAN; not Mao et al.'s least-squares GAN, `LSGAN`).
    D is the loss function L(x), low on real data. It is trained by

        min  real_weight * E[L(x)] + E[(Delta(x, G(z)) + L(x) - L(G(z)))_+],
        Delta(x, G(z)) = margin_scale * ||x - G(z)||_p   (p = margin_norm, over each score's input),

    real x and fake G(z) paired by their index in the batch (a pack with a packed D), and G by
    min E[L(G(z))]. This is the paper's E[L(x)] + lambda E[(...)_+] divided by lambda
    (real_weight = 1 / lambda), as the author's code writes it (lsgan.lua `gamma`); its default
    real_weight 0 drops the first term. `nonnegative` takes L = relu(D's output), the ReLU that ends
    the code's D; off by default (ours): where D's first scores are all negative, relu zeroes every
    gradient of D and G and the run never starts (seen with a minibatch_disc D on the ring). The
    hinge does not change when L shifts, so real_weight > 0 needs the ReLU, or E[L(x)] falls without
    bound. The margin is a constant for D (no gradient flows through it).

    The hinge needs the samples, so `penalty` holds it (D scores the real and the fake batch again,
    each batch on its own as in d_loss) and d_loss only the real_weight term. The penalty is of kind
    "pairs", not a gradient penalty: any D takes it, batch norm included (the code's D has it). The
    code's Lipschitz regulariser, weight decay (`decay_rate`: 0 by default, 5e-5 in its comment; ours
    5e-5), is the optimizer's `weight_decay` (optim/paper/loss_sensitive.yaml). A D step moves D only
    through pairs that miss their margin, and through the weight decay."""

    penalty_kind = "pairs"

    def __init__(self, n_critic: int = 1, real_weight: float = 0.0, margin_scale: float = 2e-4,
                 margin_norm: int = 1, nonnegative: bool = False):
        super().__init__(n_critic)
        if not real_weight >= 0 or not margin_scale >= 0:
            raise ConfigError(f"real_weight and margin_scale must be >= 0, got {real_weight}, {margin_scale}")
        if margin_norm not in (1, 2):
            raise ConfigError(f"margin_norm must be 1 (the L1 distance, the code's) or 2, got {margin_norm}")
        if real_weight > 0 and not nonnegative:
            raise ConfigError(f"real_weight={real_weight} needs nonnegative=true: the hinge does not change when L "
                              "shifts, so E[L(x)] would fall without bound (or set real_weight=0, the code's default)")
        self.real_weight, self.margin_scale = float(real_weight), float(margin_scale)
        self.margin_norm, self.nonnegative = int(margin_norm), bool(nonnegative)

    def loss_value(self, d_out: Tensor) -> Tensor:
        """L(x) from D's output: relu of it when `nonnegative`."""
        return F.relu(d_out) if self.nonnegative else d_out

    def margin(self, D, real: Tensor, fake: Tensor) -> Tensor:
        """Delta for each pair of D inputs: margin_scale * ||x - G(z)||_p over each score's input
        (a whole pack for a packed D), detached."""
        diff = (real - fake).detach()
        return self.margin_scale * diff.reshape(diff.shape[0] // samples_per_score(D), -1).norm(p=self.margin_norm, dim=1)

    def d_loss(self, d_real, d_fake):
        return self.real_weight * self.loss_value(d_real).mean()

    def penalty(self, D, real, fake):
        if real.shape[0] != fake.shape[0]:
            raise ConfigError(f"loss_sensitive pairs real and fake samples by index; got batches of "
                              f"{real.shape[0]} and {fake.shape[0]}")
        cost = self.margin(D, real, fake) + self.loss_value(D(real)) - self.loss_value(D(fake))
        return F.relu(cost).mean()

    def g_loss(self, d_fake):
        return self.loss_value(d_fake).mean()


class Hinge(Loss):
    """Lim & Ye 2017; Miyato et al. 2018: D minimises E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""

    def d_loss(self, d_real, d_fake):
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()

    def g_loss(self, d_fake):
        return -d_fake.mean()


class DRAGAN(NonSaturatingGAN):
    """Kodali et al. 2017: the GAN loss plus a gradient penalty at perturbed data points (its own:
    it takes no R1/R2)."""

    penalty_kind = "gradient"

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
