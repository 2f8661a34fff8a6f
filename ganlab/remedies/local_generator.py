"""The local generator of the Localized GAN (Qi, Zhang, Hu, Edraki, Wang, Hua, "Global versus Localized
Generative Adversarial Nets", CVPR 2018): mode collapse defined, and prevented, around each data point.

A local generator G(x, z) makes data near a data point x from local coordinates z in R^N
(N = model.latent_dim). The paper asks two things of it:
- locality, G(x, 0) = x: the origin of x's chart is x itself;
- orthonormal tangents, J_x^T J_x = I_N with J_x = dG(x, z)/dz at z = 0 (D x N): the N tangent
  vectors at x are orthonormal, so no direction of z is lost; a J_x with a small singular value is
  the local collapse of the paper, G(x, .) squeezing a neighbourhood of x onto fewer dimensions.
Both are penalties in G's loss, the paper's Omega_G(x) = mu ||G(x, 0) - x||^2 + eta ||J_x^T J_x - I_N||^2,
averaged over the anchors x. ortho_jacobian is the global relative: a learned-scale form on G(z).

- Architecture (the authors' code, github.com/z331565360/Localized-GAN): G(x, z) = dec(enc(x) + z),
  enc from model.encoder (x -> R^N), dec from model.g (R^N -> data). Locality then says dec inverts
  enc at the data, and J_x is dec's Jacobian at enc(x).
- Anchors in training: the loop's real batch (in the G step, the last batch D trained on). The paper's
  expectation is over x ~ data; the batch is such a draw, the authors' code uses D's batch too, and
  the step hooks see no other data.
- J_x is never formed in training: `directions` random coordinate tangents T^j = J_x e_j (one
  forward-mode product each) give the principal slice of J^T J / c - I on those coordinates; the
  whole penalty when directions >= N (always on 2-D data). c = `scale` (the paper's 1).
- Evaluation samples: G(x, z) at fresh anchors drawn from the data with the evaluation's own RNG, per
  `sample` call (image evaluations call it per chunk), so evaluations are reproducible and never touch
  the global RNG.
- A plain call G(z) (dG/dz's sigma_min, the image sample grid, shape checks) anchors row i at
  anchors[i mod len(anchors)]: ANCHORS data points drawn in the last `before_eval`. The evaluators
  call it before every plain call; until then (a freshly built G) the one anchor is the origin of data
  space, so G(z) always runs. The anchors are not saved in checkpoints (each evaluation redraws them).
- Metrics: local_tangent_sigma_min (mean smallest singular value of the full J_x over anchors),
  local_ortho_penalty (mean ||J_x^T J_x / c - I||_F^2), local_origin_error (mean ||G(x, 0) - x||).
  While locality holds, every sample sits near a data anchor, so the mode counts of the evaluation
  largely inherit the anchors' (the data's) coverage; HQ and these three tell how G behaves.
- Partners: remedies that change D only (pacgan, spectral_norm, instance_noise, minibatch layers,
  label smoothing) compose; those that replace the D or G step or the sampling are refused by the
  combination itself (remedies/stack.py), so no check_partners is needed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.metrics.jacobian import jacobian_products
from ganlab.remedies.base import Remedy, discriminator_loss

ANCHORS = 256          # anchors kept for plain G(z) calls: the 2-D evaluator's dG/dz points, the image grid's 64
VECTOR_TANGENT_ANCHORS = 256  # anchors for the tangent metrics: 2-D data (N passes of G each) ...
IMAGE_TANGENT_ANCHORS = 16    # ... and images (as the image evaluator's dG/dz points)


class LocalGenerator(nn.Module):
    """G(x, z) = dec(enc(x) + z) (`local`); called with codes only, G(z) anchors them at `anchors`."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.out_shape = latent_dim, tuple(out_shape)
        # Not persistent: the anchors are data, redrawn at each evaluation, not a parameter of G.
        self.register_buffer("anchors", torch.zeros(1, *self.out_shape), persistent=False)

    def local(self, x: Tensor, z: Tensor) -> Tensor:
        return self.decoder(self.encoder(x) + z)

    def forward(self, z: Tensor) -> Tensor:
        index = torch.arange(len(z), device=self.anchors.device) % len(self.anchors)
        return self.local(self.anchors[index], z)


def tangents(G: LocalGenerator, x: Tensor, coordinates: Tensor) -> Tensor:
    """J_x e_j at z = 0 for each anchor x and each coordinate j in `coordinates`: (n, out, P)."""
    basis = torch.eye(G.latent_dim, device=x.device, dtype=x.dtype)[coordinates]
    return jacobian_products(lambda z: G.local(x, z), x.new_zeros(len(x), G.latent_dim), basis)


def ortho_penalty(J: Tensor, scale: float) -> Tensor:
    """Per anchor, ||J^T J / c - I||_F^2 for tangents J (n, out, P)."""
    gram = J.transpose(1, 2) @ J / scale
    return (gram - torch.eye(gram.shape[-1], device=J.device, dtype=J.dtype)).pow(2).sum(dim=(1, 2))


def origin_error(G: LocalGenerator, x: Tensor) -> Tensor:
    """Per anchor, ||G(x, 0) - x||^2 (the locality term)."""
    return (G.local(x, x.new_zeros(len(x), G.latent_dim)) - x).flatten(1).pow(2).sum(dim=1)


def _local(G: nn.Module) -> LocalGenerator:
    if not isinstance(G, LocalGenerator):
        raise TypeError(f"remedy local_generator needs the LocalGenerator its build made, got {type(G).__name__}")
    return G


class LocalizedGAN(Remedy):
    build_order = 5  # G is replaced before any remedy changes D (it never touches D)
    uses = ("real anchors at sampling",)  # G(x, z) samples around real points drawn at evaluation

    def __init__(self, locality_weight: float = 1.0, ortho_weight: float = 1.0, directions: int = 8,
                 scale: float = 1.0):
        values = (locality_weight, ortho_weight, scale)
        if not all(math.isfinite(v) for v in values) or locality_weight < 0 or ortho_weight < 0 or not scale > 0:
            raise ConfigError("remedy.local_generator: locality_weight and ortho_weight must be >= 0 and scale > 0; "
                              f"got locality_weight={locality_weight}, ortho_weight={ortho_weight}, scale={scale}")
        if directions < 1:
            raise ConfigError(f"remedy.local_generator.directions must be >= 1, got {directions}")
        self.locality_weight, self.ortho_weight = locality_weight, ortho_weight
        self.directions, self.scale = directions, scale
        self._data = None

    def build(self, G, D, make):
        data_dim = math.prod(make.data_shape)
        if make.latent_dim > data_dim:
            raise ConfigError(f"remedy local_generator: J_x^T J_x has rank <= {data_dim} (the data's size), so it "
                              f"cannot be the identity of the local coordinates' model.latent_dim={make.latent_dim}; "
                              f"use model.latent_dim <= {data_dim}")
        decoder, encoder = make.G(), make.encoder(out_dim=make.latent_dim)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in (*decoder.modules(), *encoder.modules())):
            raise ConfigError("remedy local_generator takes dG(x, z)/dz per anchor; batch norm in G ties the samples "
                              "of a batch together (and cannot run under forward-mode jvp): set model.g.batch_norm=false")
        return LocalGenerator(encoder, decoder, make.latent_dim, make.data_shape), D

    # --- training -----------------------------------------------------------------------------------

    def d_loss(self, G, D, loss, real, z):
        fake = _local(G).local(real, z).detach()  # D's step must not push gradients into G
        return discriminator_loss(D, loss, real, fake)

    def g_loss(self, G, D, loss, real, z):
        G = _local(G)
        value = loss.g_loss(D(G.local(real, z)))
        if self.locality_weight > 0:
            value = value + self.locality_weight * origin_error(G, real).mean()
        if self.ortho_weight > 0:
            # A random subset of the coordinates each step (the authors' code's jcbSize subset).
            coordinates = torch.randperm(G.latent_dim)[: self.directions].to(real.device)
            value = value + self.ortho_weight * ortho_penalty(tangents(G, real, coordinates), self.scale).mean()
        return value

    # --- evaluation ---------------------------------------------------------------------------------

    def before_eval(self, G, D, data, generator):
        self._data = data
        _local(G).anchors = data.sample(ANCHORS, generator=generator)

    def sample(self, G, D, z, generator):
        if self._data is None:
            raise RuntimeError("LocalizedGAN.before_eval must run before LocalizedGAN.sample")
        return _local(G).local(self._data.sample(len(z), generator=generator), z)

    def eval_metrics(self, G, D, data, z, fake, real):
        G = _local(G)
        n = VECTOR_TANGENT_ANCHORS if len(G.out_shape) == 1 else IMAGE_TANGENT_ANCHORS
        x = G.anchors[:n]
        J = tangents(G, x, torch.arange(G.latent_dim, device=x.device))  # the full J_x: N products
        return {"local_tangent_sigma_min": float(torch.linalg.svdvals(J).amin(dim=1).mean()),
                "local_ortho_penalty": float(ortho_penalty(J, self.scale).mean()),
                "local_origin_error": float(origin_error(G, x).sqrt().mean())}
