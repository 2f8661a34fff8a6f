"""Energy-based GAN (Zhao et al. 2017, "Energy-based Generative Adversarial Network", ICLR).

D is an autoencoder and its output is an energy, the reconstruction error: low on the data, high
elsewhere. With the margin m, D minimises E[D(x)] + E[max(0, m - D(G(z)))] (fakes are pushed up
until their energy reaches m, no further) and G minimises E[D(G(z))]. The pull-away term (EBGAN-PT)
adds to G's loss the mean squared cosine similarity between the encoder codes of its samples,
1/(N(N-1)) sum_{i != j} (S_i . S_j / (|S_i| |S_j|))^2, which is large when G's samples look alike to D.

A remedy rather than a loss: it replaces D by an autoencoder (`build`), and the pull-away term needs
the encoder's codes of G's samples (`g_loss`), which a Loss object, seeing only D's outputs, cannot
reach. The margin objective itself is a Loss (`EnergyMarginLoss`), swapped in by `adapt_loss`, so
that the default D step uses it.

The energy is the per-sample mean squared reconstruction error (energy=mse, as the public
implementations of the paper's image experiments compute it) or its Euclidean norm
||Dec(Enc(x)) - x|| (energy=norm, the paper's definition in §2.3). The heatmap shows D's output,
the energy: low where D thinks the data is. critic_gap = E[energy(real)] - E[energy(fake)] is
negative when D separates them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.losses import Loss, MinimaxGAN, NonSaturatingGAN, has_penalty
from ganlab.remedies.base import Remedy, refuse_partners, unwrap


class EnergyMarginLoss(Loss):
    """EBGAN's objective on energies (D's outputs): D minimises E[D(x)] + E[max(0, m - D(G(z)))],
    G minimises E[D(G(z))]."""

    def __init__(self, margin: float, n_critic: int = 1):
        super().__init__(n_critic)
        self.margin = margin

    def d_loss(self, d_real, d_fake):
        return d_real.mean() + F.relu(self.margin - d_fake).mean()

    def g_loss(self, d_fake):
        return d_fake.mean()


class EnergyAutoencoder(nn.Module):
    """D(x) = the reconstruction error of x through encoder -> code -> decoder, one energy per sample."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, in_shape: tuple[int, ...],
                 energy: Literal["mse", "norm"] = "mse"):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.in_shape = tuple(in_shape)
        self.energy = energy

    def energy_and_code(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(energy, code) of each sample: the energy and the encoder's code, from one pass."""
        code = self.encoder(x)
        error = (self.decoder(code).reshape(x.shape) - x).flatten(1)
        if self.energy == "mse":
            return error.pow(2).mean(dim=1), code
        return error.norm(dim=1), code

    def forward(self, x: Tensor) -> Tensor:
        return self.energy_and_code(x)[0]


def pull_away(codes: Tensor) -> Tensor:
    """1/(N(N-1)) sum_{i != j} cos(S_i, S_j)^2 over the N codes of a batch (0 for N < 2)."""
    n = codes.shape[0]
    if n < 2:
        return codes.sum() * 0
    unit = codes.flatten(1)
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos2 = (unit @ unit.T).pow(2)
    return (cos2.sum() - cos2.diagonal().sum()) / (n * (n - 1))


def energy_and_code(D: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The autoencoder's (energy, code) of x, through any input transforms wrapped around it
    (instance noise), applied as D's forward would."""
    core, x = unwrap(D, x)
    return core.energy_and_code(x)


class EBGAN(Remedy):
    # After pacgan (10), so that a packed D is seen and refused; before the head changes (30+), which
    # then find no `head` and refuse; spectral norm (70) and instance noise (90) apply to the autoencoder.
    build_order = 20

    def __init__(self, margin: float = 0.25, code_dim: int = 8, pull_away_weight: float = 0.1,
                 energy: Literal["mse", "norm"] = "mse"):
        if not (math.isfinite(margin) and margin > 0):
            raise ConfigError(f"remedy.ebgan.margin must be a number > 0, got {margin}")
        if code_dim < 1:
            raise ConfigError(f"remedy.ebgan.code_dim must be >= 1, got {code_dim}")
        if not (math.isfinite(pull_away_weight) and pull_away_weight >= 0):
            raise ConfigError(f"remedy.ebgan.pull_away_weight must be >= 0 (0 turns the term off), got {pull_away_weight}")
        if pull_away_weight > 0 and code_dim < 2:
            raise ConfigError("remedy.ebgan.pull_away_weight > 0 needs code_dim >= 2 (one-dimensional codes all have "
                              "cosine +-1, so the pull-away term is constant)")
        self.margin, self.code_dim = float(margin), code_dim
        self.pull_away_weight, self.energy = float(pull_away_weight), energy

    def check(self, loss, batch_size):
        if type(loss) not in (MinimaxGAN, NonSaturatingGAN):
            raise ConfigError(f"ebgan brings its own margin objective, which would silently replace "
                              f"{type(loss).__name__}; use the default loss=nsgan")
        if has_penalty(loss):
            raise ConfigError("ebgan brings its own margin objective on energies, which would silently drop the loss's "
                              "R1/R2 penalty; set loss.r1_gamma=0 loss.r2_gamma=0")

    def check_partners(self, others):
        # A partner's change of the loss (label smoothing's real target) would be dropped by adapt_loss.
        refuse_partners(others, "adapt_loss", "ebgan brings its own margin objective, which has no real-sample "
                                              "target: {name} cannot apply to it")

    def adapt_loss(self, loss):
        return EnergyMarginLoss(self.margin, loss.n_critic)

    def build(self, G, D, make):
        if getattr(D, "samples_per_score", 1) > 1:
            raise ConfigError("remedy ebgan replaces D by an autoencoder that scores single samples; "
                              "it cannot be combined with pacgan")
        encoder = make.encoder(out_dim=self.code_dim)
        decoder = make.G(latent_dim=self.code_dim, out_shape=make.data_shape)
        return G, EnergyAutoencoder(encoder, decoder, make.data_shape, self.energy)

    def g_loss(self, G, D, loss, real, z):
        energy, code = energy_and_code(D, G(z))
        value = loss.g_loss(energy)
        if self.pull_away_weight > 0:
            value = value + self.pull_away_weight * pull_away(code)
        return value
