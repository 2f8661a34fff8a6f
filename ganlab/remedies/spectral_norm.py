"""Spectral normalization (Miyato et al. 2018): every linear and convolutional layer of D divides
its weight by its largest singular value (one power iteration per step), so each such layer is
~1-Lipschitz. Other modules are left as they are: layer norm (`model.d.norm=layer`) and minibatch
discrimination's tensor T are not normalized, so D as a whole is then not bounded by 1."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganlab.errors import ConfigError
from ganlab.remedies.base import Remedy

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class SpectralNorm(Remedy):
    build_order = 70  # after packing and head changes: their new layers are normalized too
    replica_refusal = ("torch's spectral-norm parametrization updates its power-iteration vectors with out= "
                       "operations, which torch.func.vmap cannot batch")

    def __init__(self, power_iterations: int = 1):
        if power_iterations < 1:
            raise ConfigError(f"power_iterations must be >= 1, got {power_iterations}")
        self.power_iterations = power_iterations

    def build(self, G, D, make):
        for module in list(D.modules()):
            if isinstance(module, _LAYERS):
                spectral_norm(module, n_power_iterations=self.power_iterations)
        return G, D
