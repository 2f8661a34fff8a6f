"""What every evaluator shares: the `Evaluation` it returns, the `Evaluator` protocol the loop
relies on, the mode history it keeps, and small helpers. Torch-free (the worker imports the package)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# The fewest images an image evaluation takes: density and coverage (PRDC) compare each sample with its 5 nearest
# neighbours, which a set of 5 does not have (`eval.samples`, `ganlab eval --samples N` and a samples file alike).
MIN_IMAGE_SAMPLES = 6


@dataclass
class Evaluation:
    metrics: dict          # flat numbers, plus "mode_counts" (a list) for the mode history
    fake: np.ndarray       # the generated samples the metrics were computed on
    real: np.ndarray       # the data samples they were compared with
    d_grid: np.ndarray | None  # 2-D: D's output on a square grid over the plot limits
    source: np.ndarray | None = None  # which generator made each sample (several generators), else None
    grid: np.ndarray | None = None    # images: G at the fixed grid codes, uint8, for the sample-grid picture


def eval_seed(seed: int, step: int) -> int:
    """The seed of the evaluation RNG at `step`: an evaluation of a step always draws the same samples."""
    return seed * 1_000_003 + step


def scalars(ev: Evaluation) -> dict:
    """The evaluation's flat numbers (the per-mode counts go to the mode history instead)."""
    return {k: v for k, v in ev.metrics.items() if k != "mode_counts"}


@contextmanager
def eval_mode(networks: list):
    """Every network in evaluation mode (batch norm on running statistics) for the block, then back."""
    was_training = [net.training for net in networks]
    for net in networks:
        net.eval()
    try:
        yield
    finally:
        for net, mode in zip(networks, was_training):
            net.train(mode)


class ModeHistory:
    """The samples per mode at each of the run's evaluations: the mode-histogram picture and
    summary.json's `mode_history`. Part of an evaluator's state, saved with the checkpoint."""

    def __init__(self):
        self.steps: list[int] = []
        self.counts: list[list[int]] = []

    def record(self, step: int, ev: Evaluation) -> None:
        if "mode_counts" in ev.metrics:
            self.steps.append(step)
            self.counts.append(list(ev.metrics["mode_counts"]))

    def state_dict(self) -> dict:
        # The checkpoint's keys since format 1: a resume of an older run reads them as they are.
        return {"history_steps": list(self.steps), "history_counts": [list(c) for c in self.counts]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = [int(s) for s in state.get("history_steps", [])]
        self.counts = [[int(c) for c in counts] for counts in state.get("history_counts", [])]

    def summary(self) -> dict | None:
        return {"steps": self.steps, "counts": self.counts} if self.steps else None


class Evaluator(Protocol):
    """What the training loop, `ganlab eval` and the reference rows ask of an evaluator."""

    n_modes: int | None
    metric_keys: tuple[str, ...]   # what every evaluation reports: the runs of a sweep share these columns
    history: ModeHistory

    def evaluate(self, G: Any, D: Any, remedy: Any, generator: Any, n: int | None = None,
                 step: int | None = None) -> Evaluation:
        """Metrics on fresh samples (n, or the protocol's count); a `step` records it in the history."""

    def evaluate_samples(self, fake: Any, generator: Any) -> Evaluation:
        """Metrics of samples made elsewhere (`ganlab eval --samples FILE`): all that needs no G or D."""

    def references(self, G: Any, D: Any, remedy: Any, generator: Any, offloader: Any = None) -> dict:
        """{name: metrics} of the reference rows (untrained G, Gaussian fit, real data). An evaluator may
        hand their offline part to `offloader` (the loop's); its result (EvalResult.references) then
        completes the rows."""

    def job(self, step: int, ev: Evaluation, last: bool = False) -> Any:
        """The background part of `ev` (jobs.py), for the worker. `last`: the run's last evaluation,
        which its training process only waits for, so its job may use a second core."""

    def headline(self, metrics: dict) -> str:
        """A few numbers for the progress bar and train.log."""

    def offline_metrics(self, ev: Evaluation) -> dict:
        """What the worker would add (exact W1/W2), computed here."""

    def saved_samples(self, ev: Evaluation) -> dict:
        """What samples.npz keeps: the samples the final metrics were computed on."""

    def protocol(self) -> dict:
        """How the numbers were measured, for summary.json."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def critic_gap_protocol(wasserstein_critic: bool) -> str:
    return ("E[D(real)] - E[D(fake)] on the evaluation samples: "
            + ("a Wasserstein estimate (Lipschitz critic)" if wasserstein_critic
               else "the D gap of a loss whose D is no Lipschitz critic, not a Wasserstein estimate"))
