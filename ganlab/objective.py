"""`objective=METRIC`: the number a run returns to a sweeper that optimises (hydra/sweeper=optuna).

The metric is any registered one with a better side (ganlab/metrics/__init__.py `REGISTRY`); that side
gives the direction (higher: maximize, lower: minimize). A run returns the metric's value at its end, as
summary.json holds it; a run that diverged or failed, or ended without a finite value, returns the worst
value (-inf when higher is better, +inf when lower is), which Optuna records as a completed trial that
loses to every other (it refuses NaN, not infinities). `objective=null` (the default): the job returns
its summary, as before. Imports no torch: the CLI and the sweepers read it before any job.
"""

from __future__ import annotations

import math
from typing import Any

from ganlab.errors import ConfigError
from ganlab.metrics import REGISTRY

DIRECTIONS = {"higher": "maximize", "lower": "minimize"}


def choices() -> list[str]:
    """The metrics an objective may name: every registered one with a better side."""
    return [name for name, metric in REGISTRY.items() if metric.better in DIRECTIONS]


def check(name: Any, reported: tuple[str, ...] | None = None) -> None:
    """ConfigError in one line unless `name` is None or a registered metric with a better side (and, with
    `reported`, one the run's evaluator reports: its protocol's metrics)."""
    if name is None:
        return
    if not isinstance(name, str) or name not in REGISTRY:
        raise ConfigError(f"objective={name}: not a registered metric; choose one of {', '.join(choices())}")
    if REGISTRY[name].better not in DIRECTIONS:
        raise ConfigError(f"objective={name} has no better side (higher or lower) to optimise; choose one of "
                          f"{', '.join(choices())}")
    if reported is not None and name not in reported:
        usable = [m for m in reported if m in choices()]
        raise ConfigError(f"objective={name}: this run's evaluation does not report {name}; choose one of "
                          f"{', '.join(usable)}")


def direction(name: str | None) -> str:
    """Optuna's direction for the metric: maximize or minimize (minimize, Optuna's default, for None)."""
    if name is None or name not in REGISTRY or REGISTRY[name].better not in DIRECTIONS:
        return "minimize"
    return DIRECTIONS[REGISTRY[name].better]


def worst(name: str) -> float:
    """The value a diverged or failed run returns: the worst there is on the metric's better side."""
    return -math.inf if direction(name) == "maximize" else math.inf


def value(name: str, result: Any) -> float:
    """The objective of a run's result (`train.run`'s return: a summary, or {"replicas": [summaries]}): the
    metric at the run's end; for replicas=N the mean over the replicas. The worst value when a run did not
    complete or its value is missing or not finite."""
    summaries = result.get("replicas") if isinstance(result, dict) and "replicas" in result else [result]
    values = []
    for summary in summaries:
        if not isinstance(summary, dict) or summary.get("status") != "completed":
            return worst(name)
        number = (summary.get("metrics") or {}).get(name)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            return worst(name)
        values.append(float(number))
    return sum(values) / len(values) if values else worst(name)
