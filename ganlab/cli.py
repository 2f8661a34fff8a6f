"""`ganlab <command> [overrides]`: a thin shell that pops the command and hands the rest to Hydra.

Before Hydra runs, every job's config is composed and validated once (`preflight`), so a typo or a
bad value ends with one line naming the key, exit status 2, and no traceback, even in a sweep.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from ganlab.config import CONFIG_DIR, CONFIG_NAME, GROUPS, compose_checked
from ganlab.errors import ConfigError, GanlabError

log = logging.getLogger("ganlab")

COMMANDS = {
    "train": "train a GAN: ganlab train [group=option ...] [key=value ...]; -m sweeps comma-separated values",
}

# Exit codes of the jobs of this process that ended badly (a multirun runs on past them).
_job_failures: list[int] = []


def usage() -> str:
    lines = ["usage: ganlab <command> [overrides]", "", "commands:"]
    lines += [f"  {name:<8}{text}" for name, text in COMMANDS.items()]
    lines += ["", "`ganlab train --help` lists the config groups and their options;",
              "`ganlab train --cfg job` prints the composed config."]
    return "\n".join(lines)


def fail(message: str, code: int = 2) -> None:
    print(f"ganlab: error: {message}", file=sys.stderr)
    sys.exit(code)


def preflight(overrides: list[str], multirun: bool) -> None:
    """Compose and validate the config of every job the command would run; raise ConfigError."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(f"cannot parse the overrides: {str(exc).splitlines()[0]}") from None
    # Hydra's own keys (hydra.*, hydra/launcher=...) are checked by Hydra itself, except an
    # explicit output directory: the default names are unique (microseconds), a given one may not be.
    dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for o in parsed:
        if o.get_key_element().lstrip("+") == dir_key and not o.is_sweep_override():
            target = Path(str(o.value()))
            if any(target.rglob("summary.json")):
                raise ConfigError(f"{dir_key}={target} already holds a run; pick a new directory "
                                  "(nothing there was touched)")
    ours = [o for o in parsed if not o.get_key_element().lstrip("+~").startswith("hydra")]
    if multirun:
        jobs = [job for batch in BasicSweeper.split_arguments(ours, None) for job in batch]
    else:
        sweeps = [o.input_line for o in ours if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(f"{sweeps[0]} is a sweep; add -m (multirun) to run one job per value")
        jobs = [[o.input_line for o in ours]]
    import torch

    from ganlab.train import build

    for job in jobs:
        build(compose_checked(job), torch.device("cpu"))  # constructors check their own values


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def _train_job(cfg: DictConfig) -> dict | None:
    from ganlab.train import run  # torch is imported only when a job runs, so --help stays fast

    hydra_cfg = HydraConfig.get()
    labels = {group: hydra_cfg.runtime.choices.get(group) for group in GROUPS}
    try:
        return run(cfg, hydra_cfg.runtime.output_dir, labels)
    except GanlabError as exc:
        # The run's summary.json already says what happened; a multirun goes on with the next job.
        log.error("%s", exc)
        _job_failures.append(exc.exit_code)
        return None


def train(args: list[str]) -> None:
    parsed, _ = get_args_parser().parse_known_args(args)
    asks_for_help = parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion
    if not asks_for_help:
        try:
            preflight(parsed.overrides, parsed.multirun)
        except ConfigError as exc:
            fail(str(exc))
    _job_failures.clear()
    sys.argv = ["ganlab-train", *args]
    _train_job()
    if _job_failures:
        sys.exit(max(_job_failures))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        train(rest)
    else:
        fail(f"unknown command '{command}'; commands: {', '.join(COMMANDS)} (see `ganlab --help`)")


if __name__ == "__main__":
    main()
