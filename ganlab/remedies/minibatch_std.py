"""Minibatch standard deviation (Karras et al. 2018, §3): D's head gets one more feature, the
standard deviation of the features across a small group of samples, averaged over the features.
A collapsed G gives groups with near-zero spread, which D learns to reject.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.remedies.base import Remedy, replace_head


class MinibatchStdDev(nn.Module):
    couples_samples = "the minibatch standard deviation; drop remedy=minibatch_std"  # a score depends on its group
    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    @staticmethod
    def _spread(y: Tensor) -> Tensor:
        """(group, k, features) -> (k,): the feature std across each group, averaged over features."""
        return (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=1)

    def forward(self, f: Tensor) -> Tensor:
        n = f.shape[0]
        group = min(self.group_size, n)
        main = n - n % group
        # Sample i of the first `main` is in group i mod main/group (Karras' strided groups).
        spread = self._spread(f[:main].reshape(group, main // group, -1)).repeat(group)
        if main < n:  # a batch that group_size does not divide: the rest share the last group's spread
            tail = self._spread(f[n - group:].unsqueeze(1)).expand(n - main)
            spread = torch.cat([spread, tail])
        return torch.cat([f, spread.unsqueeze(1)], dim=1)


class MinibatchStd(Remedy):
    build_order = 30

    def __init__(self, group_size: int = 4):
        if group_size < 2:
            raise ConfigError(f"group_size must be >= 2, got {group_size}")
        self.group_size = group_size

    def build(self, G, D, make):
        replace_head(D, lambda width: nn.Sequential(MinibatchStdDev(self.group_size), nn.Linear(width + 1, 1)),
                     "minibatch_std")
        return G, D
