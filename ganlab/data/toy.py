"""Gaussian mixtures: the ring and the grid (2-D, PacGAN's geometry up to scale), and `mixture`, one's own
in any dimension (centres, standard deviations and weights in the config or a YAML file)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ganlab.errors import ConfigError


class GaussianMixture:
    """Isotropic Gaussians at `centers` ((k, d), any d), sampled on `device`: equal weights and one `std` (the
    ring and the grid), or `weights` (k,) and a std per mode (`mixture`).

    `centers`, `std` and `weights` are also what the mode-coverage metrics measure against: `std` is a float when
    every mode has the same, else a (k,) tensor (a sample's standardized distance to mode k is ||x - mu_k|| / std_k);
    `weights` is None for equal weights (the reverse KL is then against the uniform distribution, else against them).
    """

    evaluator = "toy"  # the protocol that measures it (ganlab.evaluation.make_evaluator)

    def __init__(self, centers: Tensor, std: float | Tensor, device: str | torch.device = "cpu",
                 weights: Tensor | None = None):
        self.device = torch.device(device)
        self.centers = centers.to(self.device, torch.float32)
        stds = torch.as_tensor(std, dtype=torch.float64, device="cpu").flatten()  # not meta (memory.py builds there)
        if stds.numel() not in (1, self.centers.shape[0]):
            raise ConfigError(f"std: one number, or one per mode ({self.centers.shape[0]}), got {stds.numel()}")
        if not bool((stds > 0).all()):
            raise ConfigError(f"std must be > 0, got {std if stds.numel() == 1 else stds.tolist()}")
        # One number where every mode has the same (the ring and the grid, and their exact arithmetic as before).
        self.std = float(stds[0]) if bool((stds == stds[0]).all()) else stds.to(self.device, torch.float32)
        self.weights = None if weights is None else weights.to(self.device, torch.float32)
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
        if self.weights is None:
            idx = torch.randint(0, self.n_modes, (n,), device=self.device, generator=generator)
        else:
            idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, *self.shape, device=self.device, generator=generator)
        std = self.std if isinstance(self.std, float) else self.std[idx, None]
        return self.centers[idx] + std * noise, idx

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_with_classes(n, generator)[0]

    def moments(self) -> tuple[Tensor, Tensor]:
        """The mixture's exact mean and covariance: the centres' (weighted) mean, and their spread plus the
        modes' (weighted) std^2 I."""
        if self.weights is None and isinstance(self.std, float):  # the ring and the grid, as they always were
            mean = self.centers.double().mean(dim=0)
            spread = self.centers.double() - mean
            cov = spread.T @ spread / self.n_modes + self.std**2 * torch.eye(self.shape[0], dtype=torch.float64,
                                                                             device=self.device)
            return mean, cov
        w = (torch.full((self.n_modes,), 1.0 / self.n_modes, dtype=torch.float64, device=self.device)
             if self.weights is None else self.weights.double() / self.weights.double().sum())
        mean = w @ self.centers.double()
        spread = self.centers.double() - mean
        var = w @ (torch.as_tensor(self.std, dtype=torch.float64, device=self.device) ** 2).expand(self.n_modes)
        cov = spread.T @ (w[:, None] * spread) + var * torch.eye(self.shape[0], dtype=torch.float64, device=self.device)
        return mean, cov

    def gaussian_fit(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples of the Gaussian with the mixture's mean and covariance: a blob that knows where the
        data is but nothing of its modes (the reference a remedy must beat)."""
        mean, cov = self.moments()
        noise = torch.randn(n, *self.shape, device=self.device, generator=generator, dtype=torch.float64)
        return (mean + noise @ torch.linalg.cholesky(cov).T).float()

    def plot_limits(self, margin: float = 0.5) -> tuple[float, float]:
        """Fixed axes for pictures: the centres' extent plus a margin, the same for x and y."""
        widest = self.std if isinstance(self.std, float) else float(self.std.max())
        extent = self.centers[:, :2].abs().max().item() + max(margin, 6 * widest)  # the pictures: the first 2 axes
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


# --- dataset=mixture: a Gaussian mixture of one's own ---------------------------------------------------------

MIXTURE_KEYS = ("centers", "std", "weights")  # what a dataset.file may give


def _plain(value):
    """A config value (OmegaConf's ListConfig) as plain Python lists and numbers."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _numbers(value, what: str, ndim: int) -> Tensor:
    """`value` as a float64 tensor of `ndim` dimensions (a list of lists of numbers for ndim 2); ConfigError naming
    `what` otherwise."""
    shape = "a list of points, each a list of numbers ([[0, 0], [1, 1]])" if ndim == 2 else "a list of numbers"
    try:
        x = torch.tensor(_plain(value), dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{what}: expected {shape}, got {value!r}") from None
    if x.ndim == 0 and ndim == 1:
        x = x[None]
    if x.ndim != ndim or 0 in x.shape:
        raise ConfigError(f"{what}: expected {shape}, got {value!r}")
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{what}: every number must be finite, got {value!r}")
    return x


def read_mixture_file(path: str) -> dict:
    """`dataset.file`: a YAML mapping with `centers` (required), and `std` and `weights` (optional)."""
    import yaml

    file = Path(path).expanduser()
    try:
        loaded = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError(f"file={path}: cannot read it ({exc.strerror or exc}); give a YAML file with centers "
                          "(and std, weights)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"file={path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(loaded, dict) or "centers" not in loaded:
        raise ConfigError(f"file={path}: expected a YAML mapping with centers: [[x, y, ...], ...] (and optionally "
                          "std and weights)")
    unknown = sorted(set(loaded) - set(MIXTURE_KEYS))
    if unknown:
        raise ConfigError(f"file={path}: unknown key {unknown[0]!r}; a mixture file gives {', '.join(MIXTURE_KEYS)}")
    return loaded


def mixture(centers: list | None = None, std: float | list = 0.05, weights: list | None = None,
            file: str | None = None, device="cpu") -> GaussianMixture:
    """Isotropic Gaussians at `centers` (a list of k points of any one dimension d), with one `std` or one per
    mode, and `weights` (one per mode, normalised; null: equal). `file`: a YAML file with `centers` and optionally
    `std` and `weights`, which replace the config's. The 2-D protocol measures it unchanged: the nearest mode
    by ||x - mu_k|| / std_k, high quality within 3 std_k, the reverse KL against the weights, W1/W2, MMD."""
    given = {"centers": centers, "std": std, "weights": weights}
    if file not in (None, ""):
        given.update(read_mixture_file(str(file)))
    if given["centers"] is None:
        raise ConfigError("mixture needs centers: dataset.centers=[[x,y],...] or dataset.file=PATH.yaml")
    c = _numbers(given["centers"], "centers", 2)
    k = c.shape[0]
    s = _numbers(given["std"], "std", 1)
    if s.numel() not in (1, k):
        raise ConfigError(f"std: one number, or one per mode ({k}), got {s.numel()}")
    w = None
    if given["weights"] is not None:
        w = _numbers(given["weights"], "weights", 1)
        if w.numel() != k:
            raise ConfigError(f"weights: one per mode ({k}), got {w.numel()}")
        if bool((w <= 0).any()):
            raise ConfigError(f"weights must be > 0 (a mode of weight 0 is no mode), got {w.tolist()}")
        w = w / w.sum()
        if bool((w == w[0]).all()):
            w = None  # equal weights: the uniform case, sampled as the ring and the grid are
    return GaussianMixture(c, s if s.numel() > 1 else float(s), device, w)
