"""G's Jacobian J = dG/dz through forward-mode products J v (`torch.func.jvp`): one G pass per
direction, never the full J of an image generator unless asked for.

Used by the `ortho_jacobian` remedy (a penalty on J^T J) and by every evaluation (the smallest
singular value of J: near 0 where G squeezes a neighbourhood of z onto a lower-dimensional set,
the local form of mode collapse).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def jacobian_products(G: Callable[[Tensor], Tensor], z: Tensor, directions: Tensor) -> Tensor:
    """J(z_i) v for each direction: `directions` is (P, latent) (shared by every z) or (P, n, latent);
    the result is (n, out, P), out the flattened output size. Differentiable w.r.t. G's parameters.
    G must treat the samples of a batch independently (batch norm in eval mode, or none)."""
    columns = []
    for v in directions:
        _, jv = torch.func.jvp(G, (z,), (v.expand_as(z),))
        columns.append(jv.reshape(z.shape[0], -1))
    return torch.stack(columns, dim=2)


def smallest_singular_value(G: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Per z, the smallest singular value of the full J (out x latent), as a (n,) tensor."""
    basis = torch.eye(z.shape[1], device=z.device, dtype=z.dtype)
    return torch.linalg.svdvals(jacobian_products(G, z, basis)).amin(dim=1)
