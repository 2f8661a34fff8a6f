"""Mode-regularized GAN (Che et al. 2017, "Mode Regularized Generative Adversarial Networks").

An encoder E: x -> z, trained with G, so that every data point x has a code E(x) whose sample
G(E(x)) should be x. A mode that G misses has data points x far from G(E(x)), so the regularizers
pull G toward every mode of the data, not only toward those D currently rewards.

Regularized GAN (the default), with d the squared l2 distance per sample, averaged over the batch:

- G: the loss's usual G loss on G(z) + lambda1 * d(x, G(E(x))) + lambda2 * mode(G(E(x)));
- E: lambda1 * d(x, G(E(x))) + lambda2 * mode(G(E(x)));
- D: the plain D loss of the chosen loss.

One G-side objective gives both: the G loss on G(z) does not involve E. The mode term pushes
G(E(x)) toward what D calls real: -log D(G(E(x))) = softplus(-logit) for the logistic losses, and
the loss's own G loss on D(G(E(x))) for the others (wgan, wgan_gp, hinge, lsgan).

Manifold-diffusion GAN (`manifold_diffusion=true`, the paper's MDGAN), two discriminators trained
in the same D phase:

- manifold step: D_m (an extra network of the D side) tells x (real) from G(E(x)) (fake); G and E
  minimise lambda1 * d(x, G(E(x))) + the G loss against D_m on G(E(x));
- diffusion step: the main D tells G(E(x)) (as real) from G(z) (fake); G minimises the usual G loss
  against D on G(z).

The D phase sums both discriminators' losses (separate parameters and optimizers), the G phase both
steps' G-side losses; G(E(x)) is a fixed input of the D phase.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.losses import Loss, MinimaxGAN
from ganlab.remedies.base import Remedy, discriminator_loss, refuse_partners


def distance(x: Tensor, y: Tensor) -> Tensor:
    """Squared l2 distance per sample (images: over all pixels)."""
    return (x - y).flatten(1).pow(2).sum(dim=1)


class MRGAN(Remedy):
    def __new__(cls, lambda1: float = 0.2, lambda2: float = 0.4, manifold_diffusion: bool = False):
        # manifold_diffusion=true is its own class: it replaces the D step, the regularized GAN
        # does not (so that it combines with remedies that do).
        return super().__new__(ManifoldDiffusionGAN if cls is MRGAN and manifold_diffusion else cls)

    def __init__(self, lambda1: float = 0.2, lambda2: float = 0.4, manifold_diffusion: bool = False):
        for key, value in (("lambda1", lambda1), ("lambda2", lambda2)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"remedy.mrgan.{key} must be a finite number >= 0, got {value}")
        self.lambda1, self.lambda2, self.manifold_diffusion = lambda1, lambda2, manifold_diffusion
        self.E: nn.Module | None = None

    def build(self, G, D, make):
        self.E = make.encoder(out_dim=make.latent_dim)
        return G, D

    def extra_networks(self):
        return {} if self.E is None else {"encoder": (self.E, "g")}

    def mode_term(self, D: nn.Module, loss: Loss, reconstructed: Tensor) -> Tensor:
        """What pushes G(E(x)) toward "real" for D: -log D in the logistic losses, else the G loss."""
        scores = D(reconstructed)
        return F.softplus(-scores).mean() if isinstance(loss, MinimaxGAN) else loss.g_loss(scores)

    def g_loss(self, G, D, loss, real, z):
        reconstructed = G(self.E(real))
        return (loss.g_loss(D(G(z))) + self.lambda1 * distance(real, reconstructed).mean()
                + self.lambda2 * self.mode_term(D, loss, reconstructed))

    @torch.no_grad()
    def eval_metrics(self, G, D, data, z, fake, real):
        return {"mrgan_recon": float(distance(real, G(self.E(real))).mean())}


class ManifoldDiffusionGAN(MRGAN):
    """MRGAN with `manifold_diffusion=true` (MDGAN); see the module's docstring. lambda2 is unused."""

    def __init__(self, lambda1: float = 0.2, lambda2: float = 0.4, manifold_diffusion: bool = True):
        super().__init__(lambda1, lambda2, manifold_diffusion=True)
        self.D_m: nn.Module | None = None

    def check(self, loss, batch_size):
        if type(loss).after_d_step is not Loss.after_d_step:
            raise ConfigError(f"remedy.mrgan.manifold_diffusion: {type(loss).__name__} changes D after each step "
                              "(weight clipping), which the loop does to the main D only, not to the manifold D; "
                              "use wgan_gp or a GAN loss")

    def check_partners(self, others):
        # The manifold D is built from the model config: a partner's change of D (spectral norm,
        # noise, packing, heads) would reach the main D only, and half of the game would lack it.
        refuse_partners(others, "build", "remedy.mrgan.manifold_diffusion: {name} changes the networks, and would "
                                         "not reach the second (manifold) discriminator")

    def build(self, G, D, make):
        G, D = super().build(G, D, make)
        self.D_m = make.D()
        return G, D

    def extra_networks(self):
        extras = super().extra_networks()
        if self.D_m is not None:
            extras["manifold_d"] = (self.D_m, "d")
        return extras

    def d_loss(self, G, D, loss, real, z):
        with torch.no_grad():  # the D phase trains the discriminators only
            reconstructed, fake = G(self.E(real)), G(z)
        return (discriminator_loss(self.D_m, loss, real, reconstructed)   # manifold: x vs G(E(x))
                + discriminator_loss(D, loss, reconstructed, fake))       # diffusion: G(E(x)) vs G(z)

    def g_loss(self, G, D, loss, real, z):
        reconstructed = G(self.E(real))
        manifold = self.lambda1 * distance(real, reconstructed).mean() + loss.g_loss(self.D_m(reconstructed))
        return manifold + loss.g_loss(D(G(z)))
