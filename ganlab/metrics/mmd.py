"""Kernel maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012), unbiased.

MMD²_u = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i, y_j) - 2/(mn) Σ_{i,j} k(x_i, y_j),
k(a, b) = exp(-||a - b||² / (2σ²)). The unbiased estimate can be slightly negative when the two
samples come from one distribution.

Bandwidths (the protocol, stated in summary.json): σ is the median pairwise distance of the real
samples alone (at most MEDIAN_POINTS of them), fixed for a run: the evaluator passes one σ to every
evaluation and reference row (2-D runs: that of a fixed data sample, evaluation/toy.py; image runs:
that of the cached reference features), so the kernel does not move with G and the values of two
models share one scale (a σ from the pooled fake and real samples moved with G: a collapsed G shrank
it). It gives `mmd`; `mmd_multiscale` is the mean of MMD²_u over the fixed multiples SCALES of that σ,
so one number sees both the fine structure (a mode's width) and the coarse one (which modes are
there). Scale-free: the same rule on 2-D points and on classifier or Inception features. At most
MAX_POINTS per side (the first ones): the cost is O(n²).
numpy (and scipy's pdist): the background worker computes it for 2-D runs, beside the exact W1/W2.
"""

from __future__ import annotations

import numpy as np

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
MEDIAN_POINTS = 1000
MAX_POINTS = 1000  # per side, as W1/W2 (eval.w_samples): 0.08 s at 2-D instead of 0.5 s at 2,500


# Rows of the kernel matrices per block. The background worker shares the machine with training: whole
# 1,000 x 1,000 float64 matrices (8 MB each, several live at once) streamed through memory slowed a
# training loop on the other core by half while they were computed; 64-row blocks (two 0.5 MB arrays) stay in
# the core's cache, and halved the metric's own time (docs/benchmarks.md, "Loop overhead").
BLOCK_ROWS = 64


def median_bandwidth(real: np.ndarray) -> float:
    """The median heuristic on the real side only: the median distance between distinct points of the
    first MEDIAN_POINTS real samples (flattened, float64). No fake sample enters it, so it does not
    change with G."""
    from scipy.spatial.distance import pdist  # one pass over the pairs, no n x n matrix

    y = np.asarray(real[:MEDIAN_POINTS], dtype=np.float64)
    return float(np.median(pdist(y.reshape(len(y), -1))))


def _kernel_sums(a: np.ndarray, b: np.ndarray | None, gammas: list[float]) -> np.ndarray:
    """sum_ij exp(gamma * ||a_i - b_j||^2) for each gamma, in blocks of rows. b=None: b is a, and
    only the blocks on and above the diagonal are computed (the matrix is symmetric)."""
    symmetric = b is None
    b = a if symmetric else b
    a2, b2 = (a * a).sum(1), (b * b).sum(1)
    sums = np.zeros(len(gammas))
    for start in range(0, len(a), BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, len(a))
        first = start if symmetric else 0  # columns before the block's own: the mirror image of earlier blocks
        d2 = a[start:stop] @ b[first:].T
        d2 *= -2
        d2 += a2[start:stop, None]
        d2 += b2[None, first:]
        np.maximum(d2, 0.0, out=d2)
        k = np.empty_like(d2)
        for j, gamma in enumerate(gammas):
            np.exp(np.multiply(d2, gamma, out=k), out=k)
            if symmetric:  # the diagonal block once, the blocks right of it for both triangles
                sums[j] += k[:, :stop - start].sum() + 2 * k[:, stop - start:].sum()
            else:
                sums[j] += k.sum()
    return sums


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigmas: list[float] | tuple[float, ...]) -> list[float]:
    """MMD²_u of the Gaussian kernel at each bandwidth, from one pass over the pairs."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"MMD needs at least 2 points per side, got {m} and {n}")
    gammas = [-1.0 / (2 * sigma * sigma) for sigma in sigmas]
    sxx, syy, sxy = _kernel_sums(x, None, gammas), _kernel_sums(y, None, gammas), _kernel_sums(x, y, gammas)
    # Minus the diagonal, k(a, a) = 1.
    return [float((sxx[j] - m) / (m * (m - 1)) + (syy[j] - n) / (n * (n - 1)) - 2 * sxy[j] / (m * n))
            for j in range(len(gammas))]


def mmd_metrics(fake: np.ndarray, real: np.ndarray, prefix: str = "", sigma: float | None = None) -> dict:
    """{prefix}mmd (at σ) and {prefix}mmd_multiscale (mean over SCALES x σ), on the first MAX_POINTS
    samples of each side, flattened, in float64. σ: the run's fixed bandwidth; None: median_bandwidth(real)
    (the same σ at every call only when `real` is the same set)."""
    x = np.asarray(fake[:MAX_POINTS], dtype=np.float64).reshape(min(len(fake), MAX_POINTS), -1)
    y = np.asarray(real[:MAX_POINTS], dtype=np.float64).reshape(min(len(real), MAX_POINTS), -1)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):  # a diverging G: the loop reports it
        return {f"{prefix}mmd": float("nan"), f"{prefix}mmd_multiscale": float("nan")}
    if sigma is None:
        sigma = median_bandwidth(y)
    if sigma == 0:  # every point equal: no scale to measure at
        sigma = 1.0
    values = mmd2_unbiased(x, y, [sigma * s for s in SCALES])
    return {f"{prefix}mmd": values[SCALES.index(1.0)], f"{prefix}mmd_multiscale": sum(values) / len(values)}


PROTOCOL = (f"unbiased MMD² with a Gaussian kernel on the first {MAX_POINTS} samples per side: mmd at the median "
            f"heuristic's σ on the real samples alone (median pairwise distance of up to {MEDIAN_POINTS} real points, "
            "no generated ones), fixed for the run: every evaluation and reference row uses the same σ, so values of "
            f"two models share one kernel; mmd_multiscale the mean over σ x {SCALES}")
