"""VEEGAN (Srivastava et al. 2017, "VEEGAN: Reducing mode collapse in GANs using implicit
variational learning").

A reconstructor F: x -> z maps data back to codes, and D judges (z, x) pairs instead of points: it
tells the generator's pairs (z, G(z)), z ~ N(0, I), from the reconstructor's pairs (F(x), x),
x ~ data. The reconstructor's pairs cover every mode of the data; a G that collapses several codes
onto one mode cannot make F(G(z)) = z for all of them, and its pairs stop looking like F's.

The paper's Algorithm 1, in this project's sign convention (D's logit is high for "real", and the
reconstructor's pairs are the real ones; the paper's D_omega is minus this logit):

- D: the logistic loss, the loss object's `d_loss` (so label smoothing composes), with
  (F(x), x) labelled real and (z, G(z)) fake.
- G: E[-logit(z, G(z))] + recon_weight * E||z - F(G(z))||^2 (the paper's
  E[D_omega(z, G(z))] + E[d(z, F(G(z)))], d the squared l2 distance).
- F: recon_weight * E||z - F(G(z))||^2 only.

The pair term does not involve F, so the one G-side objective above gives G both gradients and F
the reconstruction gradient alone; F is an extra network of the G side.

The D the run sees scores a single point x as the reconstructor's pair (F(x), x): that is what
the critic gap and the heatmap show. F is held by that D without being its submodule, so D's
optimizer and checkpoint entry do not include it (F has its own).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.losses import MinimaxGAN, NonSaturatingGAN, has_penalty
from ganlab.remedies.base import Remedy, unwrap


class PairDiscriminator(nn.Module):
    """D on (z, x) pairs: `score(z, x)` is `joint(cat(z, x))`; called on points, `D(x)` scores the
    reconstructor's pair (F(x), x)."""

    def __init__(self, joint: nn.Module, reconstructor: nn.Module):
        super().__init__()
        self.joint = joint
        # In a tuple, not registered: D's parameters (its optimizer, spectral norm, its state dict)
        # must not include F, which trains with G.
        self._reconstructor = (reconstructor,)

    @property
    def reconstructor(self) -> nn.Module:
        return self._reconstructor[0]

    def score(self, z: Tensor, x: Tensor) -> Tensor:
        return self.joint(torch.cat([z, x.flatten(1)], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.reconstructor(x), x)


def pair_scores(D: nn.Module, z: Tensor, x: Tensor) -> Tensor:
    """D's score of the pairs (z, x), through any input wrappers around the PairDiscriminator
    (instance noise changes x, not z)."""
    core, x = unwrap(D, x)
    return core.score(z, x)


def latent_error(z: Tensor, z_hat: Tensor) -> Tensor:
    """Squared l2 distance per code."""
    return (z - z_hat).pow(2).sum(dim=1)


class VEEGAN(Remedy):
    # First: D is replaced by the pair discriminator, so that later builds (spectral norm, instance
    # noise) apply to it, and those that need a point D (pacgan's in_shape, the minibatch heads'
    # features) refuse it at start-up.
    build_order = 5

    def __init__(self, recon_weight: float = 1.0):
        if not (math.isfinite(recon_weight) and recon_weight >= 0):
            raise ConfigError(f"remedy.veegan.recon_weight must be a finite number >= 0 (the paper's 1), got {recon_weight}")
        self.recon_weight = recon_weight
        self.F: nn.Module | None = None

    def check(self, loss, batch_size):
        # DRAGAN is logistic too, but adds a gradient penalty at perturbed data points, which the
        # paper's pair discriminator does not have (nor R1/R2: loss.r1_gamma, loss.r2_gamma).
        if not isinstance(loss, MinimaxGAN) or has_penalty(loss):
            what = ("R1/R2 (loss.r1_gamma, loss.r2_gamma) is not part of it: set them to 0"
                    if type(loss) in (MinimaxGAN, NonSaturatingGAN)
                    else f"{type(loss).__name__} is not it: use loss=nsgan or loss=gan")
            raise ConfigError(f"veegan follows the paper's logistic objective (a logistic D on (z, x) pairs); {what}")

    def build(self, G, D, make):
        if len(make.data_shape) != 1:
            raise ConfigError(f"veegan pairs codes with flat data points; data of shape {make.data_shape} "
                              "(images) is not supported yet: use a vector dataset (ring, grid)")
        self.F = make.encoder(out_dim=make.latent_dim)
        joint = make.D((make.latent_dim + make.data_shape[0],))
        return G, PairDiscriminator(joint, self.F)

    def extra_networks(self):
        return {} if self.F is None else {"reconstructor": (self.F, "g")}

    def d_loss(self, G, D, loss, real, z):
        with torch.no_grad():  # D's step trains D only
            fake, z_real = G(z), self.F(real)
        return loss.d_loss(pair_scores(D, z_real, real), pair_scores(D, z, fake))

    def g_loss(self, G, D, loss, real, z):
        fake = G(z)
        pair_term = -pair_scores(D, z, fake).mean()  # G makes its pairs look like the reconstructor's
        return pair_term + self.recon_weight * self.reconstruction(G, z).mean()

    def reconstruction(self, G: nn.Module, z: Tensor) -> Tensor:
        """||z - F(G(z))||^2 per code."""
        return latent_error(z, self.F(G(z)))

    @torch.no_grad()
    def eval_metrics(self, G, D, data, z, fake, real):
        # G(z) again rather than `fake`: a sampler combined with veegan may not draw fake from z.
        return {"veegan_latent_recon": float(self.reconstruction(G, z).mean())}
