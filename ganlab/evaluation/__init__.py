"""Evaluation: what a run measures, and how.

- `base.py`: the `Evaluation` an evaluator returns, the `Evaluator` protocol, the mode history;
- `toy.py`: the 2-D protocol (mode coverage against the known centres, the D gap, dG/dz);
- `image.py`: the image protocol (classifier modes, FID / KID / PRDC / SWD);
- `jobs.py`: the part that needs no device (exact W1/W2, the pictures), torch-free;
- `worker.py`: the background process that completes those jobs while training goes on;
- `saved.py`: what `ganlab eval` does: a finished run evaluated again from its checkpoint, or a samples file.

The loop talks to an *evaluator* (the `Evaluator` protocol below), chosen by the dataset's
`evaluator` attribute. This module imports no torch: the worker imports the package too.
"""

from __future__ import annotations

from ganlab.errors import ConfigError
from ganlab.evaluation.base import (
    Evaluation,
    Evaluator,
    ModeHistory,
    critic_gap_protocol,
    eval_mode,
    eval_seed,
    scalars,
)

__all__ = ["Evaluation", "Evaluator", "ModeHistory", "critic_gap_protocol", "eval_mode", "eval_seed", "make_evaluator",
           "scalars"]


def make_evaluator(data, latent_dim: int, eval_cfg, wasserstein_critic: bool, device, metrics_cfg=None) -> Evaluator:
    """The evaluator the dataset names (`data.evaluator`: "toy" or "image"; ganlab.data.protocol says what
    each reads). `wasserstein_critic`: whether D is a Lipschitz critic, so that its gap estimates W1."""
    kind = getattr(data, "evaluator", None)
    if kind == "toy":
        from ganlab.evaluation.toy import ToyEvaluator

        return ToyEvaluator(data, latent_dim, eval_cfg, wasserstein_critic, device, metrics_cfg)
    if kind == "image":  # classifiers, features: only image runs import them
        from ganlab.evaluation.image import ImageEvaluator

        return ImageEvaluator(data, latent_dim, eval_cfg, wasserstein_critic, device, metrics_cfg)
    from ganlab.data.protocol import check

    check(data)  # the dataset's build checked it already: here for data built some other way
    raise ConfigError(f"dataset: no evaluator {kind!r}")  # unreachable while check knows the same kinds
