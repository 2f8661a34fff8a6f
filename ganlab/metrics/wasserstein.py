"""Exact empirical Wasserstein distances between two equal-size point sets.

Between two uniform empirical measures of the same size n, an optimal transport plan is a
permutation (Birkhoff), so the optimal assignment gives W_p exactly. The Hungarian-type solver is
O(n^3): about 0.15 s for n = 1,000 on one core here, which is why eval.w_samples is separate.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


def empirical_wasserstein(x: np.ndarray, y: np.ndarray) -> dict:
    """W1 and W2 (Euclidean ground metric) between the empirical measures of x and y, both n x d."""
    if x.shape != y.shape:
        raise ValueError(f"need equal-size point sets, got {x.shape} and {y.shape}")
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dist = cdist(x64, y64)
    rows, cols = linear_sum_assignment(dist)
    w1 = dist[rows, cols].mean()
    squared = dist**2
    rows, cols = linear_sum_assignment(squared)
    w2 = np.sqrt(squared[rows, cols].mean())
    return {"wasserstein1": float(w1), "wasserstein2": float(w2)}
