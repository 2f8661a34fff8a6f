"""Exact empirical Wasserstein distances between two point sets.

Between two uniform empirical measures, W_p is an exact linear program (an optimal transport
problem). POT's network simplex (`ot.emd2`) solves it exactly; at n = 1,000 it takes 0.4-0.6 s here
where SciPy's assignment solver took 2.3-2.6 s on the same collapsed-G samples, with the same values.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def empirical_wasserstein(x: np.ndarray, y: np.ndarray) -> dict:
    """W1 and W2 (Euclidean ground metric) between the empirical measures of x (n x d) and y (m x d)."""
    import ot  # POT pulls in scipy.stats and more (~1.3 s): only when a distance is computed

    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a = np.full(len(x64), 1.0 / len(x64))
    b = np.full(len(y64), 1.0 / len(y64))
    dist = cdist(x64, y64)
    w1 = ot.emd2(a, b, dist, numItermax=10_000_000)
    w2 = np.sqrt(ot.emd2(a, b, dist**2, numItermax=10_000_000))
    return {"wasserstein1": float(w1), "wasserstein2": float(w2)}
