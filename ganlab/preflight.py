"""The checks of `ganlab train`'s jobs before any work starts, on the configs Hydra composed for them.

Hydra composes each job's config once; these checks read that config, and the job trains on it:
- a single run: `Preflight.on_run_start`, a Hydra callback (configs/train.yaml), before Hydra creates
  the run directory;
- a multirun: ganlab's sweeper (hydra/sweeper=ganlab, the default; hydra_plugins/ganlab_sweeper) has
  Hydra compose every job, checks them all (`check_jobs`), and only then starts the first.
So a typo or a bad value in any job ends the command with one line naming the key, exit status 2, and
nothing written. What is checked: every value (config.validate), the targets' constructors (a build on
the CPU), what replicas=N cannot train, sizes that cannot fit, what the evaluations need (a mode
classifier, Inception weights), a resume's checkpoint and config, the output directory (free of a
running ganlab, holding no other run, writable) and resume=auto's runs already there.
A sweep's outcome afterwards (`sweep_exit_code`: the closing line and the exit status) is read from the
summaries its runs wrote, whichever sweeper ran it.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ganlab import objective
from ganlab.config import validate
from ganlab.errors import ConfigError, WriteError
from ganlab.summary import NAME as SUMMARY
from ganlab.summary import RunSummary

log = logging.getLogger("ganlab")


class Refused(BaseException):
    """A check's error on its way out of Hydra: Hydra turns an Exception raised in a callback into a
    warning and goes on, so a refusal travels as a BaseException; `ganlab train` raises `error` again
    (a GanlabError is then its one line; anything else, a bug, keeps its traceback)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class Preflight(Callback):
    """Checks a single run's config, as Hydra composed it, before Hydra creates the run directory; ends a
    sweep that another sweeper ran with ganlab's closing line."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        try:
            HydraConfig.instance().set_config(config)  # the run directory's name reads Hydra's choices
            check_jobs([config], "hydra.run.dir")
        except Exception as exc:  # noqa: BLE001 - every error must stop the run (see Refused)
            raise Refused(exc) from exc

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """A sweep through another sweeper (hydra/sweeper=basic, a sampler): its outcome, read from the
        summaries its runs wrote, as the closing line and the exit status (ganlab's sweeper says its own)."""
        if str(config.hydra.sweeper.get("_target_", "")).endswith(".GanlabSweeper"):
            return
        directory = Path(str(config.hydra.sweep.dir)).absolute()
        # Each job's directory holds Hydra's record (.hydra/); one with no summary.json below it failed
        # before it could write one (a replicas=N job's summaries are in its seed_K/ folders).
        silent = [d for d in directory.glob("*/.hydra") if next(d.parent.rglob(SUMMARY), None) is None]
        code = sweep_exit_code(directory, len(sweep_summaries(directory)) + len(silent))
        if code:
            raise SystemExit(code)  # a BaseException: Hydra would turn an Exception into a warning


def job_config(cfg: DictConfig) -> DictConfig:
    """The config a job's function receives: Hydra's composition without its own `hydra` node."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return job


def check_jobs(configs: list[DictConfig], dir_key: str, progress=None) -> list[dict]:
    """Check the jobs' configs as Hydra composed them, for a command whose runs go to the directory
    `dir_key` names (hydra.run.dir or hydra.sweep.dir); raise ConfigError or GanlabError. Returns the
    jobs' resolved configs (without Hydra's node). `progress`: called with "validated" after each job's
    values, "checked" after its build and the rest (a sweep's CheckProgress, ganlab/sweep.py)."""
    import torch

    from ganlab.checkpoint import find
    from ganlab.config import resolve_device
    from ganlab.evaluation import make_evaluator
    from ganlab.gan import build, restore
    from ganlab.memory import check_fits
    from ganlab.replicas import check as check_replicas

    jobs = []
    for cfg in configs:  # values first: most mistakes need no torch
        job = job_config(cfg)
        try:
            OmegaConf.to_container(job, resolve=True)  # `seed=${oops}` fails here, not inside a running job
            validate(job)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            raise ConfigError(f"bad value for '{key}': {str(exc).splitlines()[0]}") from None
        jobs.append(job)
        if progress is not None:
            progress("validated")
    for cfg in jobs:
        # Sizes that cannot fit (batch_size=1e8, model.latent_dim=1e8, replicas=1e5) fail now, not minutes into
        # the run, and before the build below would allocate them: estimated on the meta device (ganlab/memory.py).
        check_fits(cfg, resolve_device(cfg.device))
        exp = build(cfg, torch.device("cpu"))  # constructors check their own values
        if cfg.replicas > 1:  # what the vectorised step cannot train is refused before any job starts
            check_replicas(cfg, exp)
        # What evaluations need (a mode classifier, Inception weights) is there, or said now.
        evaluator = make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss.wasserstein_critic, torch.device("cpu"),
                                   cfg.metrics)
        objective.check(cfg.get("objective"), evaluator.metric_keys)  # a metric this run's evaluation reports
        if cfg.resume and cfg.resume != "auto" and cfg.replicas == 1:  # a bad checkpoint or a changed config: now
            restore(find(cfg.resume), exp, cfg, OmegaConf.to_container(cfg, resolve=True))
        if progress is not None:
            progress("checked")
    resolved = [OmegaConf.to_container(cfg, resolve=True) for cfg in jobs]
    directory = Path(str(OmegaConf.select(configs[0], dir_key)))  # named from the values checked above
    # resume=PATH continues its run there, and resume=auto the runs already there (checked below)
    check_run_dir_free(directory, dir_key, resuming=any(c.get("resume") is not None for c in resolved))
    if any(c.get("resume") == "auto" for c in resolved) and directory.is_dir():
        check_auto_resume(directory, resolved)
    check_writable(directory, dir_key)
    return resolved


def check_run_dir_free(directory: Path, key: str, resuming: bool) -> None:
    """The output directory must not be in use by a running ganlab, and must hold no run unless this
    command continues it (resume)."""
    from ganlab.runlock import holder, in_use_message

    for candidate in [directory, *(p for p in directory.glob("*") if p.is_dir())] if directory.is_dir() else []:
        pid = holder(candidate)
        if pid is not None:
            raise ConfigError(in_use_message(candidate, pid))
    if resuming or not directory.is_dir():
        return
    markers = (SUMMARY, "checkpoint.pt", ".hydra")
    if not any(next(directory.rglob(m), None) is not None for m in markers):
        return
    if stopped_before_first_checkpoint(directory):
        # A full disk or a data error at start-up (or a kill) left it: nothing to resume, and resume=auto
        # starts it afresh there (a completed or diverged run, or another config, it would refuse).
        raise ConfigError(f"{key}={directory} holds a run that stopped before its first checkpoint (nothing to "
                          f"resume); start it again there with `{again_command('resume=auto')}`, or pick a new "
                          "directory (nothing there was touched)")
    raise ConfigError(f"{key}={directory} already holds a run; pick a new directory (nothing there was touched)")


def stopped_before_first_checkpoint(directory: Path) -> bool:
    """Whether the runs in `directory` all stopped before their first checkpoint: no checkpoint.pt, and no
    summary.json other than a failed run's (a run that failed at start-up, on a full disk, or was killed)."""
    if next(directory.rglob("checkpoint.pt"), None) is not None:
        return False
    for path in directory.rglob(SUMMARY):
        summary = RunSummary.read_or_none(path.parent)
        if summary is None or summary.status != "failed":
            return False
    return True


def again_command(*extra: str) -> str:
    """This `ganlab train` command as the user typed it (cli.train sets sys.argv to it), with `extra` added."""
    import shlex

    if sys.argv[:1] != ["ganlab-train"]:  # checked from Python, not the CLI
        return " ".join(["ganlab train ...", *extra])
    return shlex.join(["ganlab", "train", *sys.argv[1:], *extra])


def check_auto_resume(directory: Path, configs: list[dict]) -> None:
    """resume=auto into `directory`: every run already there must be one of the jobs asked for now
    (a completed run may have fewer steps: it trains on). Otherwise the sweep would skip it as
    'already completed' and report numbers of another config."""
    from ganlab.checkpoint import RESUMABLE_KEYS, differing_keys
    from ganlab.replicas import expand
    from ganlab.train import differs_from_completed

    configs = [run for c in configs for run in expand(c)]  # replicas=N: the runs of its N seeds
    for path in sweep_summaries(directory):
        summary = RunSummary.read_or_none(path.parent)
        if summary is None or not isinstance(summary.config, dict):
            continue
        if summary.status == "completed":
            differences = [differs_from_completed(summary.to_dict(), c) for c in configs]
        else:  # an interrupted run resumes: the resumable keys may change, as for resume=PATH
            differences = [differing_keys(summary.config, c, ignore=RESUMABLE_KEYS) for c in configs]
        closest = min(differences, key=len)
        if closest:
            shown = ", ".join(closest[:5]) + (f" and {len(closest) - 5} more" if len(closest) > 5 else "")
            raise ConfigError(f"resume=auto: {path.parent} holds a {summary.status} run whose config "
                              f"differs from every job of this command in {shown}; choose a new directory, or "
                              "repeat the settings it was run with")


def check_writable(directory: Path, key: str) -> None:
    """Fail in one line, before any job starts, when the output directory cannot be written (no
    permission, a read-only or full file system, a file in the way). Nothing is created here: the
    nearest existing directory on the way must take new entries."""
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
        raise WriteError(f"cannot write to the output directory {directory}: {problem}; choose a "
                         f"writable one with {key}=PATH")


def sweep_summaries(directory: Path) -> list[Path]:
    """The summary.json files of the runs in a sweep directory, leaving out the runs of another sweep
    kept inside it (a subdirectory with its own multirun.yaml)."""
    return [path for path in sorted(directory.rglob(SUMMARY))
            if not any((d / "multirun.yaml").exists() for d in path.parents if directory in d.parents)]


def oversubscription_warning(launcher: DictConfig, jobs: int, cpu_threads: list[int], cores: int) -> str | None:
    """The warning for a local parallel sweep whose jobs together start more torch threads than the
    machine has cores, or None. Oversubscribed threads spin waiting for each other: 2 jobs of 2
    threads on 2 cores ran a sweep 9x slower than 2 jobs of 1 thread (docs/benchmarks.md)."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or 1)
        at_once = min(jobs, n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1))  # joblib: -1 is every core
    elif target.endswith("submitit_launcher.LocalLauncher"):
        at_once = jobs  # every job at once
    else:  # one job after the other (basic), or on cluster nodes of their own (Slurm)
        return None
    threads = max(t if t > 0 else cores for t in cpu_threads)  # 0: torch's default, a thread per core
    if at_once < 2 or at_once * threads <= cores:
        return None
    return (f"{at_once} jobs at once x {threads} torch threads = {at_once * threads} threads on {cores} cores: "
            "oversubscribed threads wait for each other (2 x 2 on 2 cores ran 9x slower than 2 x 1); "
            "use cpu_threads=1, or fewer jobs at once (hydra.launcher.n_jobs)")


def sweep_exit_code(sweep_dir: Path, n_runs: int) -> int:
    """The exit status of a multirun, from the summary.json of each run under `sweep_dir`: 0 when
    all `n_runs` completed, 3 for a diverged run, a failed run's recorded code (or 1), and 1 for a
    run that left no summary.json (killed, or failed before it could write one). Prints the closing line."""
    from ganlab.train import Diverged

    outcomes: dict[str, list[str]] = {}
    code = 0
    summaries = sweep_summaries(sweep_dir)
    for path in summaries:
        summary = RunSummary.read_or_none(path.parent)
        status = "unreadable" if summary is None else str(summary.status)
        job_code = {"completed": 0, "diverged": Diverged.exit_code}.get(status)
        if job_code is None:
            job_code = summary.exit_code if summary is not None and isinstance(summary.exit_code, int) else 1
        code = max(code, job_code)
        outcomes.setdefault(status, []).append(path.parent.name)
    missing = n_runs - len(summaries)
    if missing > 0:
        code = max(code, 1)
        outcomes["without summary.json"] = [f"{missing} job(s)"]
    # print, not log: after in-process jobs the logging config is the last job's (its train.log).
    # Unwrapped, on one line: the directory is for copying.
    parts = [f"{len(names)} {status}" + ("" if status == "completed" else f" ({', '.join(names)})")
             for status, names in outcomes.items()]
    line = f"ganlab: sweep {sweep_dir}: {'; '.join(parts) or 'no runs'}; compare them with `ganlab report {sweep_dir}`"
    print(line, file=sys.stderr if code else sys.stdout, flush=True)
    return code
