"""`ganlab <command> [overrides]`: a thin shell that pops the command and hands the rest to Hydra.

Before Hydra runs, every job's config is composed and validated once (`preflight`), so a typo or a
bad value ends with one line naming the key, exit status 2, and no traceback, even in a sweep.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import hydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ganlab.config import CONFIG_DIR, CONFIG_NAME, GROUPS, compose_checked
from ganlab.errors import ConfigError, GanlabError

log = logging.getLogger("ganlab")

COMMANDS = {
    "train": "train a GAN: ganlab train [group=option ...] [key=value ...]; -m sweeps comma-separated values",
    "eval": "evaluate a run again from its checkpoint: ganlab eval RUN_DIR [--samples N] [metrics.inception=true ...]",
    "report": "compare runs: ganlab report PATH [--metrics a,b] [--by key,...]; mean ± s.e. over seeds",
    "classifier": "train the mode classifier that image metrics use: ganlab classifier dataset=mnist|fashion_mnist",
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


def preflight(overrides: list[str], multirun: bool, training: bool = True) -> int:
    """Compose and validate the config of every job the command would run; raise ConfigError.
    Return the number of jobs."""
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
            if any(target.rglob("summary.json")) and "resume=auto" not in overrides:
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
    configs = [compose_checked(job) for job in jobs]  # config errors first: most need no torch

    import torch
    from omegaconf import OmegaConf

    from ganlab.checkpoint import find
    from ganlab.evaluation import make_evaluator
    from ganlab.train import build, restore

    for cfg in configs:
        exp = build(cfg, torch.device("cpu"))  # constructors check their own values
        # What evaluations need (a mode classifier, Inception weights) is there, or said now.
        if training:
            make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss, torch.device("cpu"), cfg.metrics)
        if cfg.resume and cfg.resume != "auto" and not multirun:  # a bad checkpoint or a changed config: say so now
            restore(find(cfg.resume), exp, cfg, OmegaConf.to_container(cfg, resolve=True))
    return len(jobs)


class SweepRecorder(Callback):
    """Notes the sweep directory of a multirun in the launching process. `train` reads the jobs'
    summary.json files there afterwards: with joblib or submitit the jobs run in other processes
    (or on other machines), so `_job_failures` of this process never hears of them."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _sweep_dirs.append(Path(str(config.hydra.sweep.dir)))  # resolved as the sweeper resolves it


# Hydra instantiates callbacks from its config; added to a multirun's overrides by `train`.
_RECORDER = "++hydra.callbacks.ganlab_sweep._target_=ganlab.cli.SweepRecorder"
_sweep_dirs: list[Path] = []


def sweep_exit_code(sweep_dir: Path, n_jobs: int) -> int:
    """The exit status of a multirun, from the summary.json of each job under `sweep_dir`: 0 when
    all `n_jobs` completed, 3 for a diverged run, a failed run's recorded code (or 1), and 1 for a
    job that left no summary.json (killed, or failed before it could write one)."""
    from ganlab.train import Diverged

    outcomes: dict[str, list[str]] = {}
    code = 0
    summaries = sorted(sweep_dir.rglob("summary.json"))
    for path in summaries:
        try:
            summary = json.loads(path.read_text())
            status = str(summary["status"])
        except (OSError, ValueError, KeyError, TypeError):
            summary, status = {}, "unreadable"
        job_code = {"completed": 0, "diverged": Diverged.exit_code}.get(status)
        if job_code is None:
            job_code = summary.get("exit_code") if isinstance(summary.get("exit_code"), int) else 1
        code = max(code, job_code)
        outcomes.setdefault(status, []).append(path.parent.name)
    missing = n_jobs - len(summaries)
    if missing > 0:
        code = max(code, 1)
        outcomes["without summary.json"] = [f"{missing} job(s)"]
    if code:
        # print, not log: after in-process jobs the logging config is the last job's (its train.log).
        parts = [f"{len(names)} {status}" + ("" if status == "completed" else f" ({', '.join(names)})")
                 for status, names in outcomes.items()]
        print(f"ganlab: sweep {sweep_dir}: {'; '.join(parts)}", file=sys.stderr)
    return code


def _runs_in_parallel(hydra_cfg: DictConfig) -> bool:
    """Whether this job may share the terminal with other jobs running at the same time: a multirun
    through any launcher but Hydra's basic one (one job after the other), unless it runs one job
    at a time (joblib's n_jobs=1)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return False
    launcher = hydra_cfg.launcher
    if str(launcher.get("_target_", "")).endswith(".BasicLauncher"):
        return False
    return launcher.get("n_jobs") != 1


class _Prefixed(logging.Formatter):
    """Puts the job's name before each console line, so parallel jobs' interleaved lines stay apart."""

    def __init__(self, prefix: str, inner: logging.Formatter | None):
        super().__init__()
        self.prefix, self.inner = prefix, inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return self.prefix + self.inner.format(record)


def _record_exit_code(run_dir: Path, code: int) -> None:
    """Add the exit code to a failed run's summary.json, for the launching process to read."""
    from ganlab.tracking import write_json_atomic

    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(summary, dict) and summary.get("status") == "failed":
        write_json_atomic(path, {**summary, "exit_code": code})


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def _train_job(cfg: DictConfig) -> dict | None:
    from ganlab.train import (  # torch is imported only when a job runs, so --help stays fast
        Interrupted,
        run,
    )

    hydra_cfg = HydraConfig.get()
    labels = {group: hydra_cfg.runtime.choices.get(group) for group in GROUPS}
    run_dir = Path(hydra_cfg.runtime.output_dir)
    parallel = _runs_in_parallel(hydra_cfg)
    consoles = [h for h in logging.getLogger().handlers if not isinstance(h, logging.FileHandler)]
    if parallel:  # no progress bars, and console lines named by job (train.log needs no name)
        for handler in consoles:
            handler.setFormatter(_Prefixed(f"[{run_dir.name}] ", handler.formatter))
    try:
        return run(cfg, run_dir, labels, progress=False if parallel else None)
    except Interrupted as exc:
        # Stop the whole sweep: the signal was meant for all of it. A re-run with resume=auto
        # resumes this job and starts the ones after it.
        log.error("%s", exc)
        sys.exit(exc.exit_code)
    except GanlabError as exc:
        # The run's summary.json already says what happened; a multirun goes on with the next job.
        log.error("%s", exc)
        _job_failures.append(exc.exit_code)
        _record_exit_code(run_dir, exc.exit_code)
        return None
    finally:
        for handler in consoles:
            if isinstance(handler.formatter, _Prefixed):
                handler.setFormatter(handler.formatter.inner)


def previous_sweep(overrides: list[str], root: Path = Path("outputs/multirun")) -> Path | None:
    """For `ganlab train -m ... resume=auto`: the newest sweep directory under `root` that the same
    command (the same overrides) wrote, so that a re-run continues it; None if there is none."""
    import yaml

    same = []
    for recorded in root.glob("*/*/multirun.yaml"):
        try:
            task = yaml.safe_load(recorded.read_text())["hydra"]["overrides"]["task"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue
        if sorted(task) == sorted(overrides):
            same.append(recorded.parent)
    return max(same, key=lambda d: d.stat().st_mtime, default=None)


def check_writable(overrides: list[str], multirun: bool) -> None:
    """Fail in one line, before any job starts, when the output directory cannot be written (no
    permission, a read-only or full file system, a file in the way)."""
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [o[len(key):] for o in overrides if o.startswith(key)]
    directory = Path(given[-1]) if given else Path("outputs")
    # Nothing is created here: the nearest existing directory on the way must take new entries.
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a directory"
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".ganlab_write_test"):
                pass
        except OSError as exc:
            problem = exc.strerror or str(exc)
    if problem:
        raise GanlabError(f"cannot write to the output directory {directory}: {problem}; choose a "
                          f"writable one with {key}PATH")


def resume_run_dir(overrides: list[str], multirun: bool) -> Path | None:
    """For `ganlab train resume=PATH`: the run directory to continue in (Hydra writes there), or
    None. Raises GanlabError for a path that holds no run."""
    from ganlab.checkpoint import find

    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [o for o in parsed if o.get_key_element() == "resume" and not o.is_sweep_override()]
    if multirun or not values or values[-1].value() in (None, "null", "auto"):
        return None
    return find(str(values[-1].value())).parent


def _insert_override(args: list[str], overrides: list[str], extra: str) -> list[str]:
    """`args` with `extra` added to its overrides, which Hydra's parser wants in one run of words."""
    n = len(overrides)
    for i in range(len(args) - n, -1, -1) if n else ():
        if args[i:i + n] == overrides:
            return [*args[:i + n], extra, *args[i + n:]]
    return [extra, *args]


def train(args: list[str]) -> None:
    parsed, _ = get_args_parser().parse_known_args(args)
    asks_for_help = parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion
    n_jobs = 1
    if not asks_for_help:
        try:
            n_jobs = preflight(parsed.overrides, parsed.multirun, training=not parsed.cfg)
            resumed = resume_run_dir(parsed.overrides, parsed.multirun)
            if not parsed.cfg:  # printing the config writes nothing
                check_writable(parsed.overrides, parsed.multirun)
        except GanlabError as exc:
            fail(str(exc), exc.exit_code)
        if parsed.multirun and "resume=auto" in parsed.overrides and not any(
                o.startswith("hydra.sweep.dir=") for o in parsed.overrides):
            sweep = previous_sweep([o for o in parsed.overrides if not o.startswith("hydra")])
            if sweep is not None:
                log.info("resume=auto: continuing the sweep in %s", sweep)
                extra = f"hydra.sweep.dir={sweep}"
                args = _insert_override(args, parsed.overrides, extra)
                parsed.overrides.append(extra)
        if resumed is not None:
            # Continue in the run's own directory; Hydra's record of this invocation goes beside
            # the original's (.hydra/), which stays as it was.
            for extra in (f"hydra.run.dir={resumed}", "hydra.output_subdir=.hydra_resume"):
                args = _insert_override(args, parsed.overrides, extra)
                parsed.overrides.append(extra)
    _job_failures.clear()
    _sweep_dirs.clear()
    if parsed.multirun and not asks_for_help:
        args = _insert_override(args, parsed.overrides, _RECORDER)
    sys.argv = ["ganlab-train", *args]
    _train_job()
    # A multirun's outcome comes from its jobs' summary.json files, wherever the jobs ran; the
    # failures of in-process jobs (a single run, the basic launcher) are known here directly.
    codes = [*_job_failures, *(sweep_exit_code(d, n_jobs) for d in _sweep_dirs)]
    if any(codes):
        sys.exit(max(codes))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        train(rest)
    elif command == "eval":
        from ganlab.reevaluate import main as reevaluate

        reevaluate(rest)
    elif command == "report":
        # Imported here: matplotlib and rich load only for a report.
        from ganlab.report import main as report

        report(rest)
    elif command == "classifier":
        from ganlab.classifier import main as classifier

        classifier(rest)
    else:
        fail(f"unknown command '{command}'; commands: {', '.join(COMMANDS)} (see `ganlab --help`)")


if __name__ == "__main__":
    main()
