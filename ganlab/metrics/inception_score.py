"""Inception Score (Salimans et al. 2016): IS = exp(E_x KL(p(y|x) || p(y))), from Inception logits.

Follows the reference code (openai/improved-gan, inception_score/model.py):

- all 1008 classes of the TF graph, not 1000: its softmax is over `pool3 @ W` with W the matrix of
  `softmax/logits/MatMul`, i.e. the logits WITHOUT the final bias (torch-fidelity's `logits_unbiased`,
  which FIDInceptionV3.forward returns);
- `splits` contiguous chunks of the samples in their given order (no shuffle; torch-fidelity shuffles
  first), p(y) the mean of p(y|x) over the chunk, and the mean and the (population) standard deviation of
  the per-chunk scores.

Computed in float64 with log-softmax, so it is testable without the network.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, xlogy


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score over `splits` chunks of the n x C `logits`."""
    x = np.asarray(logits, np.float64)
    if x.ndim != 2 or len(x) < splits or splits < 1:
        raise ValueError(f"logits must be n x C with n >= splits={splits}, got shape {x.shape}")
    log_p = log_softmax(x, axis=1)
    p = np.exp(log_p)
    n, scores = len(x), []
    for i in range(splits):
        part, log_part = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(axis=0)
        # KL(p(y|x) || p(y)) per sample; xlogy gives 0 log 0 = 0 where a class has no mass at all.
        kl = (part * log_part).sum(axis=1) - xlogy(part, marginal[None, :]).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
