"""The launcher class of hydra/launcher=ray. Nothing heavy is imported here: Hydra imports this module whenever it
scans its plugins (every `ganlab train`), and Ray is an optional extra."""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher

try:  # Hydra's Ray plugin registers its own `hydra/launcher/ray` (once, on this import)
    import hydra_plugins.hydra_ray_launcher._config  # noqa: F401
except ImportError:  # not installed: hydra/launcher=ray is refused in one line when a sweep starts
    pass
# ganlab's ganlab/configs/hydra/launcher/ray.yaml is the `ray` option. Beside a schema of the same name Hydra would
# validate it against the plugin's (a deprecated "automatic schema matching", with a warning on every command).
ConfigStore.instance().repo.get("hydra", {}).get("launcher", {}).pop("ray.yaml", None)


class GanlabRayLauncher(Launcher):
    """Runs a sweep's jobs as Ray tasks (ganlab/ray_launcher.py), on a local instance or a running cluster."""

    def __init__(self, ray: Any) -> None:
        self.ray_cfg = ray
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from ganlab.ray_launcher import check_installed

        check_installed()  # without Ray: one line naming the extra, before any job is composed
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides, initial_job_idx: int):
        from ganlab.ray_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
