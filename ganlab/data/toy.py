"""2-D Gaussian mixtures: the ring and the grid (PacGAN's geometry up to scale)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ganlab.errors import ConfigError


class GaussianMixture:
    """Equal-weight isotropic Gaussians at `centers`, sampled on `device`.

    `centers` and `std` are also what the mode-coverage metrics measure against.
    """

    evaluator = "toy"  # the protocol that measures it (ganlab.evaluation.make_evaluator)

    def __init__(self, centers: Tensor, std: float, device: str | torch.device = "cpu"):
        if std <= 0:
            raise ConfigError(f"std must be > 0, got {std}")
        self.device = torch.device(device)
        self.centers = centers.to(self.device, torch.float32)
        self.std = float(std)
        self.shape = (self.centers.shape[1],)

    @property
    def n_modes(self) -> int:
        return self.centers.shape[0]

    @property
    def n_classes(self) -> int:
        """Labels for conditional remedies: the mode a sample was drawn from (its mode index)."""
        return self.n_modes

    def sample_with_classes(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n points and the index of the mode each was drawn from."""
        idx = torch.randint(0, self.n_modes, (n,), device=self.device, generator=generator)
        noise = torch.randn(n, *self.shape, device=self.device, generator=generator)
        return self.centers[idx] + self.std * noise, idx

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_with_classes(n, generator)[0]

    def moments(self) -> tuple[Tensor, Tensor]:
        """The mixture's exact mean and covariance: the centres' mean, and their spread plus std^2 I."""
        mean = self.centers.double().mean(dim=0)
        spread = self.centers.double() - mean
        cov = spread.T @ spread / self.n_modes + self.std**2 * torch.eye(self.shape[0], dtype=torch.float64,
                                                                         device=self.device)
        return mean, cov

    def gaussian_fit(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples of the Gaussian with the mixture's mean and covariance: a blob that knows where the
        data is but nothing of its modes (the reference a remedy must beat)."""
        mean, cov = self.moments()
        noise = torch.randn(n, *self.shape, device=self.device, generator=generator, dtype=torch.float64)
        return (mean + noise @ torch.linalg.cholesky(cov).T).float()

    def plot_limits(self, margin: float = 0.5) -> tuple[float, float]:
        """Fixed axes for pictures: the centres' extent plus a margin, the same for x and y."""
        extent = self.centers.abs().max().item() + max(margin, 6 * self.std)
        return -extent, extent


def ring(modes: int = 8, radius: float = 2.0, std: float = 0.02, device="cpu") -> GaussianMixture:
    """`modes` Gaussians at angles 2*pi*k/modes on a circle. (Not linspace(0, 2pi, modes): that
    repeats the first centre, a bug in two public implementations.)"""
    if modes < 1 or radius <= 0:
        raise ConfigError(f"ring needs modes >= 1 and radius > 0, got {modes}, {radius}")
    angles = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes
    centers = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(centers, std, device)


def grid(side: int = 5, spacing: float = 2.0, std: float = 0.05, device="cpu") -> GaussianMixture:
    """side x side Gaussians on a grid centred at the origin: {-4,-2,0,2,4}^2 by default."""
    if side < 1 or spacing <= 0:
        raise ConfigError(f"grid needs side >= 1 and spacing > 0, got {side}, {spacing}")
    ticks = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
    return GaussianMixture(torch.stack([xs.flatten(), ys.flatten()], dim=1), std, device)
