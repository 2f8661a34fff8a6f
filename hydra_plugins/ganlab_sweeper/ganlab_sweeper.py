"""ganlab's sweeper for `ganlab train -m` (hydra/sweeper=ganlab, the default). Hydra finds plugins only in
the hydra_plugins package, so the class lives here; what it does is ganlab/sweep.py's."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class GanlabSweeper(Sweeper):
    """Composes each job's config once, checks every job before the first starts, then runs them."""

    def __init__(self, max_batch_size: int | None = None):
        self.max_batch_size = max_batch_size  # kept for Hydra's sweeper config; all jobs are checked first
        self.config = self.hydra_context = self.task_function = self.launcher = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from ganlab.sweep import run_sweep

        return run_sweep(self, arguments)
