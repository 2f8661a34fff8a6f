"""Exact empirical Wasserstein distances between two point sets.

Between two uniform empirical measures, W_p is an exact linear program (an optimal transport
problem). POT's network simplex (`ot.emd2`) solves it exactly; at n = 1,000 it takes 0.4-0.6 s here
where SciPy's assignment solver took 2.3-2.6 s on the same collapsed-G samples, with the same values.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial.distance import cdist


def empirical_wasserstein(x: np.ndarray, y: np.ndarray, parallel: bool = False) -> dict:
    """W1 and W2 (Euclidean ground metric) between the empirical measures of x (n x d) and y (m x d).
    parallel=True solves the two problems at once, in two threads (POT's solver releases the GIL):
    for when nothing else needs the second core."""
    import ot  # POT pulls in scipy.stats and more (~1.3 s): only when a distance is computed

    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a = np.full(len(x64), 1.0 / len(x64))
    b = np.full(len(y64), 1.0 / len(y64))
    dist = cdist(x64, y64)

    def solve(cost: np.ndarray) -> float:
        return float(ot.emd2(a, b, cost, numItermax=10_000_000))

    if parallel:
        with ThreadPoolExecutor(2) as pool:
            w1, w2_squared = pool.map(solve, (dist, dist**2))
    else:
        w1, w2_squared = solve(dist), solve(dist**2)
    return {"wasserstein1": w1, "wasserstein2": float(np.sqrt(w2_squared))}
