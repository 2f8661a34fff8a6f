"""`ganlab <command> [overrides]`: a thin shell that pops the command and hands the rest to Hydra.

Before Hydra runs, every job's config is composed and validated once (`preflight`), so a typo or a
bad value ends with one line naming the key, exit status 2, and no traceback, even in a sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import hydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ganlab.config import (
    CONFIG_NAME,
    CONFIG_SOURCE,
    GROUPS,
    compose_checked,
    compose_config,
)
from ganlab.errors import ConfigError, GanlabError, UsageError, WriteError
from ganlab.summary import NAME as SUMMARY
from ganlab.summary import RunSummary

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
    width = max(map(len, COMMANDS)) + 2  # the longest name and two spaces: "classifier" is 10 long
    lines += [f"  {name:<{width}}{text}" for name, text in COMMANDS.items()]
    lines += ["", "`ganlab train --help` lists the config groups and their options;",
              "`ganlab train --cfg job` prints the composed config."]
    return "\n".join(lines)


def fail(message: str, code: int = 2) -> None:
    print(f"ganlab: error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of the overrides; a malformed one is named in one line, with the syntax."""
    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(overrides)
    except HydraException:
        pass
    for line in overrides:  # find the culprit: Hydra's message names the parser state, not the override
        try:
            parser.parse_overrides([line])
        except HydraException:
            odd = sorted({c for c in line if not c.isascii() or not c.isprintable()})
            if odd:
                reason = f"{', '.join(map(repr, odd))} is not allowed in an unquoted value"
            elif any(line.count(a) != line.count(b) for a, b in ("[]", "{}", "()")):
                reason = "its brackets do not pair up"
            elif special := sorted({c for c in line.partition("=")[2] if c in "'\"#;~$:@!\\ ="}):
                reason = f"{' '.join(special)} must stand inside a quoted value"
            else:
                reason = "it does not follow the override syntax"
            raise ConfigError(f"cannot read the override {line!r}: {reason}; write key=value, group=option, "
                              "key=[a,b], or quote the value: key='...'") from None
    raise ConfigError(f"cannot parse the overrides {' '.join(overrides)!r}")


def check_override_values(parsed: list) -> None:
    """What Hydra accepts but cannot mean what the user wants: an empty output directory (the run
    would land in the current directory), an empty or repeating remedy list."""
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if not key:
            raise ConfigError(f"the override {o.input_line!r} names no key; write key=value or group=option")
        empty = str(o.value() if o.value() is not None else "").strip() == ""
        if key in ("hydra.run.dir", "hydra.sweep.dir") and not o.is_sweep_override() and empty:
            raise ConfigError(f"{key} is empty; give a directory, e.g. {key}=outputs/my_run")
        if key == "remedy" and not o.is_sweep_override() and isinstance(o.value(), list):
            names = [str(v) for v in o.value()]
            if not names:
                raise ConfigError("remedy=[] chooses no remedy; use remedy=none for the plain GAN")
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"{o.input_line} lists {', '.join(twice)} more than once; list each remedy once")


def check_run_dir_free(directory: Path, key: str, resuming: bool) -> None:
    """An explicit output directory must not be in use by a running ganlab, and must hold no run
    unless this command continues it (resume)."""
    from ganlab.runlock import holder, in_use_message

    for candidate in [directory, *(p for p in directory.glob("*") if p.is_dir())] if directory.is_dir() else []:
        pid = holder(candidate)
        if pid is not None:
            raise ConfigError(in_use_message(candidate, pid))
    if resuming or not directory.is_dir():
        return
    markers = (SUMMARY, "checkpoint.pt", ".hydra")
    if any(next(directory.rglob(m), None) is not None for m in markers):
        raise ConfigError(f"{key}={directory} already holds a run; pick a new directory (nothing there was touched)")


def preflight(overrides: list[str], multirun: bool, training: bool = True, config_dir: str | None = None) -> list[dict]:
    """Compose and validate the config of every job the command would run; raise ConfigError.
    Return the jobs' resolved configs. `config_dir`: `--config-dir`'s extra configs, as Hydra adds them."""
    parsed = parse_overrides(overrides)
    check_override_values(parsed)
    dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    resuming = any(o.get_key_element() == "resume" and o.value() not in (None, "null") for o in parsed)
    for o in parsed:
        if o.get_key_element().lstrip("+") == dir_key and not o.is_sweep_override():
            check_run_dir_free(Path(str(o.value())), dir_key, resuming)
    ours = [o for o in parsed if not o.get_key_element().lstrip("+~").startswith("hydra")]
    if multirun:
        if any(o.get_key_element() == "resume" and not o.is_sweep_override()
               and o.value() not in (None, "null", "auto") for o in ours):
            raise ConfigError("resume=PATH continues one run: drop -m, or continue a sweep with resume=auto")
        # Hydra composes the overrides as given once before it splits them into jobs: a bad value
        # that a later override of the same key replaces in every job still stops it there.
        compose_checked([o.input_line for o in ours if not o.is_sweep_override()], config_dir)
        jobs = [job for batch in BasicSweeper.split_arguments(ours, None) for job in batch]
    else:
        sweeps = [o.input_line for o in ours if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(f"{sweeps[0]} is a sweep; add -m (multirun) to run one job per value")
        jobs = [[o.input_line for o in ours]]
    configs = [compose_checked(job, config_dir) for job in jobs]  # config errors first: most need no torch

    import torch
    from omegaconf import OmegaConf

    from ganlab.checkpoint import find
    from ganlab.config import resolve_device
    from ganlab.evaluation import make_evaluator
    from ganlab.experiment import build, restore
    from ganlab.memory import check_fits
    from ganlab.replicas import check as check_replicas

    for cfg in configs:
        exp = build(cfg, torch.device("cpu"))  # constructors check their own values
        if cfg.replicas > 1:  # what the vectorised step cannot train is refused before any job starts
            check_replicas(cfg, exp)
        if training:
            # Sizes that cannot fit (batch_size=1e8) fail now, not minutes into the run.
            check_fits(exp, cfg, resolve_device(cfg.device))
            # What evaluations need (a mode classifier, Inception weights) is there, or said now.
            make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss.wasserstein_critic, torch.device("cpu"), cfg.metrics)
        if cfg.resume and cfg.resume != "auto" and cfg.replicas == 1:  # a bad checkpoint or a changed config: say so now
            restore(find(cfg.resume), exp, cfg, OmegaConf.to_container(cfg, resolve=True))
    return [OmegaConf.to_container(cfg, resolve=True) for cfg in configs]


def check_auto_resume(directory: Path, configs: list[dict]) -> None:
    """resume=auto into `directory`: every run already there must be one of the jobs asked for now
    (a completed run may have fewer steps: it trains on). Otherwise the sweep would skip it as
    'already completed' and report numbers of another config."""
    from ganlab.checkpoint import RUN_LENGTH_KEYS, differing_keys
    from ganlab.replicas import expand
    from ganlab.train import AUTO_RESUME_IGNORED, differs_from_completed

    configs = [run for c in configs for run in expand(c)]  # replicas=N: the runs of its N seeds
    for path in sweep_summaries(directory):
        summary = RunSummary.read_or_none(path.parent)
        if summary is None or not isinstance(summary.config, dict):
            continue
        if summary.status == "completed":
            differences = [differs_from_completed(summary.to_dict(), c) for c in configs]
        else:  # an interrupted run resumes: run-length keys may change, as for resume=PATH
            ignored = (*AUTO_RESUME_IGNORED, *RUN_LENGTH_KEYS)
            differences = [differing_keys(summary.config, c, ignore=ignored) for c in configs]
        closest = min(differences, key=len)
        if closest:
            shown = ", ".join(closest[:5]) + (f" and {len(closest) - 5} more" if len(closest) > 5 else "")
            raise ConfigError(f"resume=auto: {path.parent} holds a {summary.status} run whose config "
                              f"differs from every job of this command in {shown}; choose a new directory, or "
                              "repeat the settings it was run with")


def started_overrides(run_dir: Path) -> list[str] | None:
    """The overrides a run directory's run was last started (or resumed) with, from Hydra's record;
    None for a run started without the CLI (ganlab.train.run from Python)."""
    import yaml

    for record in (run_dir / ".hydra_resume" / "overrides.yaml", run_dir / ".hydra" / "overrides.yaml"):
        try:
            recorded = yaml.safe_load(record.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(recorded, list):
            keys = ("resume", "resume_force")
            return [str(o) for o in recorded
                    if str(o).split("=", 1)[0].lstrip("+~") not in keys and not str(o).startswith("hydra")]
    return None


def resume_overrides(run_dir: Path, overrides: list[str], config_dir: str | None = None) -> list[str]:
    """`ganlab train resume=DIR [steps=N ...]`: the run's own overrides, then the user's, which may
    only change how long and how often (steps, eval/log/checkpoint cadence) unless resume_force=true.
    Repeating the run's own settings is fine: only a change of the config is refused."""
    from omegaconf import OmegaConf

    from ganlab.checkpoint import RUN_LENGTH_KEYS, differing_keys

    original = started_overrides(run_dir)
    if original is None:  # no record: the user's overrides must give the same config (restore checks)
        return overrides
    merged = [*original, *overrides]
    if any(o.get_key_element() == "resume_force" and o.value() is True for o in parse_overrides(overrides)):
        return merged
    ours = [o for o in merged if not o.lstrip("+~").startswith("hydra")]
    before = OmegaConf.to_container(compose_checked(original, config_dir), resolve=True)
    after = OmegaConf.to_container(compose_checked(ours, config_dir), resolve=True)
    differ = differing_keys(before, after)
    if differ:
        allowed = ", ".join(k for k in RUN_LENGTH_KEYS if not k.startswith("resume"))
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise ConfigError(f"resume: the overrides would change the run's config in {shown}; a resumed run keeps "
                          f"the config it was started with (only {allowed} may change), or add resume_force=true")
    return merged


class SweepRecorder(Callback):
    """Notes the sweep directory of a multirun in the launching process. `train` reads the jobs'
    summary.json files there afterwards: with joblib or submitit the jobs run in other processes
    (or on other machines), so `_job_failures` of this process never hears of them."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _sweep_dirs.append(Path(str(config.hydra.sweep.dir)).absolute())  # absolute: the closing line is for copying


# Hydra instantiates callbacks from its config; added to a multirun's overrides by `train`.
_RECORDER = "++hydra.callbacks.ganlab_sweep._target_=ganlab.cli.SweepRecorder"
_sweep_dirs: list[Path] = []


def sweep_summaries(directory: Path) -> list[Path]:
    """The summary.json files of the runs in a sweep directory, leaving out the runs of another sweep
    kept inside it (a subdirectory with its own multirun.yaml)."""
    return [path for path in sorted(directory.rglob(SUMMARY))
            if not any((d / "multirun.yaml").exists() for d in path.parents if directory in d.parents)]


def sweep_exit_code(sweep_dir: Path, n_jobs: int) -> int:
    """The exit status of a multirun, from the summary.json of each job under `sweep_dir`: 0 when
    all `n_jobs` completed, 3 for a diverged run, a failed run's recorded code (or 1), and 1 for a
    job that left no summary.json (killed, or failed before it could write one)."""
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
    missing = n_jobs - len(summaries)
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


def missing_option_line(message: str) -> str:
    """Hydra's several-line "Could not find 'hydra/launcher/x'" (an unknown hydra/... option, which
    preflight leaves to Hydra) as one line with the group's options."""
    lines = message.splitlines()
    first = lines[0].split(": ", 1)[-1] if lines else message  # drop "In 'hydra/config': "
    listed = False
    options = []
    for line in lines[1:]:
        if line.startswith("Available options"):
            listed = True
        elif listed and line.startswith(("\t", " ")):
            options.append(line.strip())
        elif listed:
            break
    return first + (f"; choose one of: {', '.join(options)}" if options else "")


def _usable_cores() -> int:
    """The cores this process may use (its affinity, as joblib counts them; all of them where the
    platform has no affinity call, macOS)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _launcher_config(overrides: list[str], config_dir: str | None) -> DictConfig | None:
    """The sweep's launcher config, or None when Hydra cannot compose it (an unknown launcher):
    Hydra itself then reports that, as the sweep starts."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    plain = [o.input_line for o in parse_overrides(overrides) if not o.is_sweep_override()]
    try:
        return compose_config(plain, config_dir, return_hydra_config=True).hydra.launcher
    except (HydraException, OmegaConfBaseException):
        return None


class _Prefixed(logging.Formatter):
    """Puts the job's name before each console line, so parallel jobs' interleaved lines stay apart."""

    def __init__(self, prefix: str, inner: logging.Formatter | None):
        super().__init__()
        self.prefix, self.inner = prefix, inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return self.prefix + self.inner.format(record)


def _record_exit_code(run_dir: Path, code: int) -> None:
    """Add the exit code to a failed run's summary.json, for the launching process to read."""
    summary = RunSummary.read_or_none(run_dir)
    if summary is not None and summary.status == "failed":
        summary.exit_code = code
        with contextlib.suppress(GanlabError):  # a full disk: the exit status still says it
            summary.write(run_dir)


# The package's configs; `ganlab train --config-dir DIR` (Hydra's option) adds DIR's after them, and
# preflight composes with the same (ganlab.config.compose_config).
@hydra.main(config_path=CONFIG_SOURCE, config_name=CONFIG_NAME, version_base="1.3")
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
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("%s", exc)  # named by job when jobs run in parallel
        else:  # a single run ends as every user error does: one line on stderr (and in train.log)
            with contextlib.suppress(OSError), open(run_dir / "train.log", "a") as f:
                f.write(f"ganlab: error: {exc}\n")
            print(f"ganlab: error: {exc}", file=sys.stderr, flush=True)
        _job_failures.append(exc.exit_code)
        _record_exit_code(run_dir, exc.exit_code)
        return None
    except Exception as exc:  # noqa: BLE001 - a bug or a resource error: this job failed, a sweep goes on
        with contextlib.suppress(OSError), open(run_dir / "train.log", "a") as f:
            traceback.print_exc(file=f)
        log.error("%s failed: %s: %s (the traceback is in %s)", run_dir.name, type(exc).__name__,
                  str(exc).splitlines()[0] if str(exc) else "", run_dir / "train.log")
        _job_failures.append(1)
        _record_exit_code(run_dir, 1)
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
    from ganlab.replicas import is_replica_parent

    parsed = parse_overrides(overrides)
    values = [o for o in parsed if o.get_key_element() == "resume" and not o.is_sweep_override()]
    if multirun or not values or values[-1].value() in (None, "null", "auto"):
        return None
    path = Path(str(values[-1].value())).expanduser()
    return path if is_replica_parent(path) else find(path).parent  # replicas=N: all of them resume


def _replace_overrides(args: list[str], old: list[str], new: list[str]) -> list[str]:
    """`args` with its run of overrides `old` replaced by `new` (Hydra wants them as one run of words)."""
    n = len(old)
    for i in range(len(args) - n, -1, -1) if n else ():
        if args[i:i + n] == old:
            return [*args[:i], *new, *args[i + n:]]
    return [*new, *args]


def train(args: list[str]) -> None:
    parsed, _ = get_args_parser().parse_known_args(args)
    asks_for_help = parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion
    n_jobs = 1
    overrides = list(parsed.overrides)
    if not asks_for_help:
        resumed = resume_run_dir(overrides, parsed.multirun)
        if resumed is not None:
            # The run's own overrides, then the user's run-length ones; continue in the run's
            # directory, with Hydra's record of this invocation beside the original's (.hydra/).
            overrides = [*resume_overrides(resumed, overrides, parsed.config_dir), f"hydra.run.dir={resumed}",
                         "hydra.output_subdir=.hydra_resume"]
        auto = "resume=auto" in overrides
        if parsed.multirun and auto and not any(o.startswith("hydra.sweep.dir=") for o in overrides):
            sweep = previous_sweep([o for o in overrides if not o.startswith("hydra")])
            if sweep is not None:
                log.info("resume=auto: continuing the sweep in %s", sweep)
                overrides.append(f"hydra.sweep.dir={sweep}")
        configs = preflight(overrides, parsed.multirun, training=not parsed.cfg, config_dir=parsed.config_dir)
        n_jobs = sum(c.get("replicas", 1) for c in configs)  # the runs that write a summary.json: replicas=N makes N
        if parsed.multirun:
            launcher = _launcher_config(overrides, parsed.config_dir)
            warning = launcher and oversubscription_warning(
                launcher, len(configs), [int(c.get("cpu_threads", 1)) for c in configs],
                _usable_cores())
            if warning:
                log.warning("%s", warning)
        if auto:
            key = "hydra.sweep.dir=" if parsed.multirun else "hydra.run.dir="
            given = [o[len(key):] for o in overrides if o.startswith(key)]
            if given and Path(given[-1]).is_dir():
                check_auto_resume(Path(given[-1]), configs)
        if not parsed.cfg:  # printing the config writes nothing
            check_writable(overrides, parsed.multirun)
    _job_failures.clear()
    _sweep_dirs.clear()
    if parsed.multirun and not asks_for_help:
        overrides.append(_RECORDER)
    sys.argv = ["ganlab-train", *_replace_overrides(args, parsed.overrides, overrides)]
    # Errors outside our job function (Hydra writing .hydra/ onto a full disk) come back to us raw,
    # instead of as Hydra's trimmed traceback: a file-system error is the user's to fix, in one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _train_job()
    except MissingConfigException as exc:  # an IOError as well, but an unknown option of Hydra's own groups
        raise ConfigError(missing_option_line(str(exc))) from None
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise WriteError(f"cannot write{where}: {exc.strerror or exc}; free some space or choose a writable "
                         "directory (hydra.run.dir=PATH)") from None
    # A multirun's outcome comes from its jobs' summary.json files, wherever the jobs ran; the
    # failures of in-process jobs (a single run, the basic launcher) are known here directly.
    codes = [*_job_failures, *(sweep_exit_code(d, n_jobs) for d in _sweep_dirs)]
    if any(codes):
        sys.exit(max(codes))


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a run's loop (start-up, a report): stops like Ctrl-C, exit status 143."""

    signum = signal.SIGTERM


def _inside_an_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _stop(signum) -> None:
    print(f"ganlab: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: every file is already whole (atomic writes), and the interpreter's own shutdown
    # after a KeyboardInterrupt can end the process by the signal instead of this exit status.
    os._exit(128 + signum)


def _on_signal(signum, frame) -> None:
    """Ctrl-C or SIGTERM outside a run's loop (start-up, a report). Inside an import an exception
    raised here can cross C++ extension code (torch's pybind11 module set-up), which aborts the
    process with a C++ stack on the terminal (exit -6); nothing of ours is written during an import,
    so there it stops at once. Elsewhere it raises, so that open `finally` blocks tidy up."""
    if _inside_an_import(frame):
        _stop(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


_START_UP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _quiet_thread_errors(args) -> None:
    """A library's writer thread that hits a full disk (TensorBoard's) must not print a traceback:
    the main thread meets the same error at its next write and says it in one line."""
    if not issubclass(args.exc_type, OSError):
        threading.__excepthook__(args)


def main(argv: list[str] | None = None) -> None:
    # A log handler that cannot write (a full disk under train.log) drops the line, without a traceback.
    saved = logging.raiseExceptions, threading.excepthook
    logging.raiseExceptions = False
    threading.excepthook = _quiet_thread_errors
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _on_signal) for sig in _START_UP_SIGNALS} if on_main_thread else {}
    try:
        _main(argv)
    except KeyboardInterrupt as exc:
        # Ctrl-C or SIGTERM before a run's loop took over the signal (start-up, a report): nothing
        # half-written stays behind (every file is written atomically), so one line says it all.
        signum = getattr(exc, "signum", signal.SIGINT)
        if on_main_thread:  # a second Ctrl-C while we leave must not print a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(signum)
    finally:  # as they were: main() is also called in-process (tests, notebooks)
        logging.raiseExceptions, threading.excepthook = saved
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    try:
        _command(command, rest)
    except GanlabError as exc:  # the one place an error becomes its line and exit status
        fail(str(exc), exc.exit_code)


def _command(command: str, rest: list[str]) -> None:
    if command == "train":
        train(rest)
    elif command == "eval":
        from ganlab.evaluation.command import main as reevaluate

        reevaluate(rest)
    elif command == "report":
        # Imported here: matplotlib and rich load only for a report.
        from ganlab.report_output import main as report

        report(rest)
    elif command == "classifier":
        from ganlab.metrics.classifier_training import main as classifier

        classifier(rest)
    else:
        raise UsageError(f"unknown command '{command}'; commands: {', '.join(COMMANDS)} (see `ganlab --help`)")


if __name__ == "__main__":
    main()
