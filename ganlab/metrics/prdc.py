"""Precision and recall (Kynkäänniemi et al. 2019, k = 3) and density and coverage (Naeem et al.
2020, k = 5) of generated features against real ones, from k-nearest-neighbour balls.

A sample's ball has the radius of its distance to its k-th nearest neighbour in its own set (itself
excluded). Precision: the fraction of fakes inside some real ball. Recall: the fraction of reals
inside some fake ball. Density: how many real balls hold each fake, / k, averaged. Coverage: the
fraction of real balls that hold at least one fake.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def knn_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour among the others."""
    if len(points) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} points, got {len(points)}")
    distances = cdist(points, points)
    return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself (distance 0)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    between = cdist(real, fake)  # real i x fake j
    in_real_ball = between <= knn_radii(real, k)[:, None]
    in_fake_ball = between <= knn_radii(fake, k)[None, :]
    return {"precision": float(in_real_ball.any(axis=0).mean()), "recall": float(in_fake_ball.any(axis=1).mean())}


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    in_real_ball = cdist(real, fake) <= knn_radii(real, k)[:, None]
    return {"density": float(in_real_ball.sum() / (k * len(fake))), "coverage": float(in_real_ball.any(axis=1).mean())}
