"""Sliced Wasserstein distance between two feature sets (n x d and m x d).

For random unit directions u (seeded, so two calls with the same seed use the same directions), both sets
are projected onto u and the exact 1-D Wasserstein distance between the projections is taken: in 1-D the
optimal plan matches quantiles, W_p^p = int_0^1 |F^-1(t) - G^-1(t)|^p dt. For unequal n and m the two
quantile functions are step functions with steps at i/n and j/m, so integrating over the merged grid of
those steps is exact (no interpolation).

    SW_1 = mean_u W_1(u),    SW_2 = sqrt(mean_u W_2(u)^2)    (the usual definition of SW_p).

Float64 throughout; numpy arrays or torch tensors, computed on the tensors' device.
"""

from __future__ import annotations

import numpy as np
import torch


def random_directions(d: int, projections: int, seed: int = 0) -> torch.Tensor:
    """d x projections unit vectors, uniform on the sphere (normalized Gaussians), from a CPU generator so
    they are the same on every device."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, projections, generator=g, dtype=torch.float64)
    return u / u.norm(dim=0, keepdim=True)


def _as_tensor(x: torch.Tensor | np.ndarray, device: torch.device | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device or t.device, dtype=torch.float64)


def _quantile_grid(n: int, m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Widths of the intervals between the merged steps {i/n} U {j/m}, and the quantile indices in each."""
    steps = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                       torch.arange(1, m + 1, dtype=torch.float64) / m]).unique()  # sorted
    widths = torch.diff(steps, prepend=steps.new_zeros(1))
    mid = steps - widths / 2
    ix = (mid * n).floor().long().clamp(max=n - 1)
    iy = (mid * m).floor().long().clamp(max=m - 1)
    return widths.to(device), ix.to(device), iy.to(device)


def sliced_wasserstein(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, projections: int = 128,
                       seed: int = 0, device: str | torch.device | None = None) -> dict[str, float]:
    """{"sw1": SW_1, "sw2": SW_2} between the rows of x (n x d) and y (m x d)."""
    dev = torch.device(device) if device is not None else None
    x, y = _as_tensor(x, dev), _as_tensor(y, dev)
    y = y.to(x.device)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"x and y must be n x d and m x d with the same d, got {tuple(x.shape)}, {tuple(y.shape)}")
    u = random_directions(x.shape[1], projections, seed).to(x.device)
    px, py = (x @ u).sort(dim=0).values, (y @ u).sort(dim=0).values  # sorted projections, one column per u
    if len(x) == len(y):
        diff = px - py  # equal sizes: the i-th smallest matches the i-th smallest, weight 1/n each
        w1, w2sq = diff.abs().mean(dim=0), diff.square().mean(dim=0)
    else:
        widths, ix, iy = _quantile_grid(len(x), len(y), x.device)
        diff = px[ix] - py[iy]
        w1, w2sq = widths @ diff.abs(), widths @ diff.square()
    return {"sw1": float(w1.mean()), "sw2": float(w2sq.mean().sqrt())}
