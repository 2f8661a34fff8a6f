"""The orthonormal tangent constraint (the seeds' "orthonormal constraint on the tangent vectors of
the manifold"): a penalty that drives G's Jacobian J = dG/dz toward orthonormal columns up to a
scale c, ||J^T J / c - I||_F^2, at the codes of each G step.

A G that collapses a neighbourhood of z onto one point has a J with a small singular value; a J
with orthonormal columns (times sqrt(c)) maps every latent direction to an equally long, distinct
direction in data space. J is never formed: the penalty uses J v for `directions` random
orthonormal latent directions V (one forward-mode product each, `torch.func.jvp`), and penalises
||V^T (J^T J / c - I) V||_F^2, which is the full penalty when directions >= latent_dim and a random
slice of it otherwise, so it scales to image generators.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.metrics.jacobian import jacobian_products
from ganlab.remedies.base import Remedy


class JacobianScale(nn.Module):
    """c, the squared scale of J's columns, kept as log c so it stays positive when learned."""

    def __init__(self, scale: float, learn: bool):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log(), requires_grad=learn)

    def forward(self) -> Tensor:
        return self.log_scale.exp()


def orthonormality_penalty(G, z: Tensor, directions: Tensor, scale: Tensor) -> Tensor:
    """Mean over z of ||V^T J^T J V / c - I||_F^2 for orthonormal columns V (latent x P)."""
    jv = jacobian_products(G, z, directions.T)  # (n, out, P)
    gram = jv.transpose(1, 2) @ jv / scale
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return (gram - eye).pow(2).sum(dim=(1, 2)).mean()


class OrthoJacobian(Remedy):
    def __init__(self, weight: float = 1.0, directions: int = 4, samples: int = 64,
                 learn_scale: bool = True, scale: float = 1.0):
        if weight < 0 or directions < 1 or samples < 1 or not scale > 0:
            raise ConfigError("remedy.ortho_jacobian: weight must be >= 0, directions and samples >= 1 and "
                              f"scale > 0; got weight={weight}, directions={directions}, samples={samples}, scale={scale}")
        self.weight, self.directions, self.samples = weight, directions, samples
        self.scale = JacobianScale(scale, learn_scale)

    def build(self, G, D, make):
        out_dim = math.prod(make.data_shape)
        if make.latent_dim > out_dim:
            raise ConfigError(f"ortho_jacobian: J^T J has rank <= {out_dim} (the data's size), so it cannot approach "
                              f"the identity of latent_dim={make.latent_dim}; use model.latent_dim <= {out_dim}")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in G.modules()):
            raise ConfigError("ortho_jacobian takes dG/dz per sample; batch norm in G (model.g.batch_norm) ties the "
                              "samples of a batch together (and cannot run under forward-mode jvp): set "
                              "model.g.batch_norm=false")
        return G, D

    def extra_networks(self):
        # The learned scale is trained with G (it only enters G's loss), with G's optimizer settings.
        return {"scale": (self.scale, "g")} if self.scale.log_scale.requires_grad else {}

    def random_directions(self, like: Tensor) -> Tensor:
        """`directions` orthonormal latent vectors (at most latent_dim) for codes `like`, as columns."""
        latent_dim = like.shape[1]
        q, _ = torch.linalg.qr(torch.randn(latent_dim, min(self.directions, latent_dim), device=like.device,
                                           dtype=like.dtype))
        return q

    def penalty(self, G, z: Tensor) -> Tensor:
        z = z[: self.samples]
        return orthonormality_penalty(G, z, self.random_directions(z), self.scale())

    def g_loss(self, G, D, loss, real, z):
        return super().g_loss(G, D, loss, real, z) + self.weight * self.penalty(G, z)

    def eval_metrics(self, G, D, data, z, fake, real):
        return {"ortho_scale": float(self.scale())}
