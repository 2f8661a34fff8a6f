"""`ganlab train` through Hydra: the job function Hydra calls with each composed config, and what the
command does with its overrides before Hydra sees them (their syntax, a resume's own overrides, the sweep
a resume=auto continues). The command itself is ganlab/cli.py's `train`."""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ganlab import runlock
from ganlab.config import CONFIG_NAME, CONFIG_SOURCE, GROUPS, Role, keys_with
from ganlab.devices import place_job
from ganlab.errors import ConfigError, GanlabError
from ganlab.preflight import Refused, again_command, check_run_dir_free, job_config, stopped_before_first_checkpoint
from ganlab.streams import FULL_DISK_ERRNOS, on_stdout, write_error
from ganlab.summary import RunSummary

log = logging.getLogger("ganlab")


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
            keys = keys_with(Role.command)  # resume=...: how that command treated the directory, not the run
            return [str(o) for o in recorded
                    if str(o).split("=", 1)[0].lstrip("+~") not in keys and not str(o).startswith("hydra")]
    return None


def restarts(run_dir: Path) -> bool:
    """Whether `resume=DIR` starts DIR's run again from step 0: its run stopped before its first checkpoint
    (kill -9, a full disk or a data error at start-up), and DIR holds the record of the command that started
    it (.hydra/config.yaml and its overrides). It then starts again there as that command plus resume=auto."""
    run_dir = Path(run_dir)
    return ((run_dir / ".hydra" / "config.yaml").is_file() and started_overrides(run_dir) is not None
            and stopped_before_first_checkpoint(run_dir))


def resume_overrides(run_dir: Path, overrides: list[str]) -> list[str]:
    """`ganlab train resume=DIR [steps=N ...]`: the run's own overrides, then the user's. The resumed
    config is checked against the checkpoint's before any work (gan.restore, from the pre-flight
    checks): only the keys a resume may change (checkpoint.RESUMABLE_KEYS) may differ, unless
    resume_force=true; repeating the run's own settings is no change."""
    original = started_overrides(run_dir)
    return overrides if original is None else [*original, *overrides]


def runs_in_parallel(hydra_cfg: DictConfig) -> bool:
    """Whether this job may share the terminal with other jobs running at the same time: a multirun
    through any launcher but Hydra's basic one (one job after the other), unless it runs one job
    at a time (joblib's n_jobs=1)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return False
    launcher = hydra_cfg.launcher
    if str(launcher.get("_target_", "")).endswith(".BasicLauncher"):
        return False
    return launcher.get("n_jobs") != 1


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
def train_job(cfg: DictConfig) -> dict | float | None:
    from ganlab.train import (  # torch is imported only when a job runs, so --help stays fast
        Interrupted,
        run,
    )

    from ganlab import objective
    from ganlab.tracking import command_line

    hydra_cfg = HydraConfig.get()
    labels = {group: hydra_cfg.runtime.choices.get(group) for group in GROUPS}
    # objective=METRIC: the number a sweeper optimises (ganlab/objective.py); a diverged or failed job of a
    # sweep returns the metric's worst value rather than raising, so the search goes on. None: the summary.
    target = cfg.get("objective")
    failed = None if target is None else objective.worst(target)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    parallel = runs_in_parallel(hydra_cfg)
    placed = place_job()  # the GPU a parallel sweep gave this job, before anything asks CUDA (ganlab/devices.py)
    consoles = [h for h in logging.getLogger().handlers if not isinstance(h, logging.FileHandler)]
    if parallel:  # no progress bars, and console lines named by job (train.log needs no name)
        for handler in consoles:
            handler.setFormatter(_Prefixed(f"[{run_dir.name}] ", handler.formatter))
    if placed:
        log.info("%s", placed)
    try:
        try:
            with command_line(hydra_cfg.overrides.task, hydra_cfg.runtime.choices):  # for the runs' HParams
                result = run(cfg, run_dir, labels, progress=False if parallel else None)
            return result if target is None else objective.value(target, result)
        except OSError as exc:  # a write that failed outside ganlab's writers (>/dev/full): one line naming the file
            named = None
            if on_stdout(exc) and not isinstance(exc, BrokenPipeError) or exc.errno in FULL_DISK_ERRNOS:
                named = write_error(exc)
            if named is None:  # another error, or a closed pipe (cli._main ends quietly): as it is
                raise
            raise named from None
    except Interrupted as exc:
        # Stop the whole sweep: the signal was meant for all of it. One command continues all of it: the
        # sweep's own plus resume=auto, which skips the completed jobs, resumes this one, starts the rest.
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("%s", exc.in_sweep(again_command(*[] if "resume=auto" in sys.argv[1:] else ["resume=auto"])))
        else:
            log.error("%s", exc)
        sys.exit(exc.exit_code)
    except GanlabError as exc:
        # The run's summary.json already says what happened; a multirun goes on with the next job, and its
        # closing line reads every job's outcome from the summaries (ganlab/sweep.py).
        _record_exit_code(run_dir, exc.exit_code)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("%s", exc)  # named by job when jobs run in parallel
            return failed
        # A single run ends as every user error does: one line on stderr (and in train.log), its exit status.
        with contextlib.suppress(OSError), open(run_dir / "train.log", "a") as f:
            f.write(f"ganlab: error: {exc}\n")
        print(f"ganlab: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - a bug or a resource error: this job failed, a sweep goes on
        if isinstance(exc, BrokenPipeError) and on_stdout(exc):
            raise  # the reader of our output went away: `ganlab` ends quietly (cli._main)
        with contextlib.suppress(OSError), open(run_dir / "train.log", "a") as f:
            traceback.print_exc(file=f)
        log.error("%s failed: %s: %s (the traceback is in %s)", run_dir.name, type(exc).__name__,
                  str(exc).splitlines()[0] if str(exc) else "", run_dir / "train.log")
        _record_exit_code(run_dir, 1)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(1)
        return failed
    finally:
        for handler in consoles:
            if isinstance(handler.formatter, _Prefixed):
                handler.setFormatter(handler.formatter.inner)


def split_jobs(overrides: list) -> list[list[str]]:
    """Each job's overrides: one value of every sweep override (Hydra's parsed `Override`s), in their
    product's order. A later override of a key replaces an earlier one, as in Hydra's basic sweeper."""
    values: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            values[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            values[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise ConfigError(f"{o.input_line}: ganlab's sweeper runs lists, ranges and choices; a sampled sweep "
                              "(interval) needs a sweeper that samples, e.g. hydra/sweeper=optuna")
    return [list(job) for job in itertools.product(*values.values())]


# Keys in which a sweep's jobs may differ from the command that continues it (resume=auto): what the command
# does with the run directories (resume), how often scalars are read and checkpoints written, threads and the
# evaluation worker (config.Role: command, cadence, execution but replicas, which lays out the directories).
SWEEP_NEUTRAL = tuple(k for k in keys_with(Role.command, Role.cadence, Role.execution) if k != "replicas")


def previous_sweep(overrides: list[str], root: Path = Path("outputs/multirun"),
                   config_dir: str | None = None) -> Path | None:
    """For `ganlab train -m ... resume=auto`: the newest sweep directory under `root` whose jobs are this
    command's jobs, one for one and in order (job N's directory is N_...): the same configs once composed,
    the keys of SWEEP_NEUTRAL aside. Compared by config, not by the words of the command: the continuing
    command has resume=auto (the interrupted one may not have had it), and a list may come back as a range,
    a default spelled out or the keys in another order. None if no sweep there is this command's."""
    import yaml


    def jobs_of(words: list[str]) -> list[list[str]]:
        return split_jobs(parse_overrides([w for w in words if not w.lstrip("+~").startswith("hydra")]))

    try:
        jobs = jobs_of(overrides)
    except GanlabError:  # Hydra says what is wrong with them, in one line, when the sweep starts
        return None
    composed: dict[tuple[str, ...], dict | None] = {}
    same = []
    for recorded in root.glob("*/*/multirun.yaml"):
        try:
            theirs = jobs_of([str(o) for o in yaml.safe_load(recorded.read_text())["hydra"]["overrides"]["task"]])
        except (OSError, yaml.YAMLError, KeyError, TypeError, GanlabError, HydraException):
            continue
        if len(theirs) == len(jobs) and all(_same_job(a, b, composed, config_dir) for a, b in zip(jobs, theirs)):
            same.append(recorded.parent)
    return max(same, key=lambda d: d.stat().st_mtime, default=None)


def _same_job(a: list[str], b: list[str], composed: dict, config_dir: str | None) -> bool:
    """Whether two jobs' overrides compose the same config, SWEEP_NEUTRAL's keys aside: the same words,
    or else the same composed config (each composed once, in `composed`)."""
    from ganlab.checkpoint import differing_keys
    from ganlab.config import compose_config

    def words(job: list[str]) -> list[str]:
        return sorted(w for w in job if w.split("=", 1)[0].lstrip("+~") not in SWEEP_NEUTRAL)

    if words(a) == words(b):
        return True
    for job in (a, b):
        if tuple(job) not in composed:
            try:
                composed[tuple(job)] = OmegaConf.to_container(compose_config(job, config_dir), resolve=True)
            except Exception:  # noqa: BLE001 - an option since removed, a bad value: not this command's job
                composed[tuple(job)] = None
    configs = composed[tuple(a)], composed[tuple(b)]
    return None not in configs and not differing_keys(*configs, ignore=SWEEP_NEUTRAL)


def resume_run_dir(overrides: list[str], multirun: bool) -> Path | None:
    """For `ganlab train resume=PATH`: the run directory to continue in (Hydra writes there), or
    None. Raises GanlabError for a path that holds no run."""
    from ganlab.checkpoint import NAME, find
    from ganlab.replicas import is_replica_parent

    parsed = parse_overrides(overrides)
    values = [o for o in parsed if o.get_key_element() == "resume" and not o.is_sweep_override()]
    if multirun or not values or values[-1].value() in (None, "null", "auto"):
        return None
    path = Path(str(values[-1].value())).expanduser()
    if path.is_dir() and restarts(path):  # stopped before its first checkpoint: it starts again there
        return path
    if (path.is_dir() and (path / ".hydra").is_dir() and not (path / NAME).exists() and not is_replica_parent(path)
            and started_overrides(path) is None):
        raise GanlabError(f"resume: {path} holds no {NAME} (its run stopped before the first) and no record of the "
                          "command that started it (.hydra/overrides.yaml); start it again with that command plus "
                          "resume=auto")
    return path if is_replica_parent(path) else find(path).parent  # replicas=N: all of them resume


class Claim(Callback):
    """A single run's directory claimed for this command (ganlab/runlock.py `claim`) after the pre-flight
    checks (the callback before this one, configs/train.yaml) and before Hydra writes anything into it
    (.hydra/, train.log): of two commands started into one directory at the same instant, the second is
    refused in one line having changed nothing of the first's. `ganlab train` gives the claim up when
    the run ends (or the process's end does)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            claim_run_dir(config, Path(str(OmegaConf.select(config, "hydra.run.dir"))), "hydra.run.dir")
        except Exception as exc:  # noqa: BLE001 - every error must stop the run (preflight.Refused)
            raise Refused(exc) from exc


def claim_run_dir(config: DictConfig, directory: Path, key: str) -> None:
    """Claim `directory` for the job of `config`, then check again, now that no other command can write
    there, what the pre-flight checks saw before the claim: that it holds no run unless this command
    resumes one (another command's run may have started there in between), and that a run restarted from
    step 0 (it stopped before its first checkpoint) is started with the config its record holds."""
    runlock.claim(directory)
    try:
        resuming = OmegaConf.select(config, "resume") is not None
        check_run_dir_free(directory, key, resuming=resuming)
        if resuming:
            check_restart_record(directory, config)
    except BaseException:
        runlock.release(directory)
        raise


def check_restart_record(directory: Path, config: DictConfig) -> None:
    """A run that stopped before its first checkpoint starts again (resume=DIR, resume=auto) with the config
    of its record (.hydra/config.yaml): the keys a resume may change aside (checkpoint.RESUMABLE_KEYS),
    another config is refused in one line, as a checkpoint's would be, unless resume_force=true. A record
    Hydra did not finish (no overrides.yaml after it: a full disk) says nothing."""
    from ganlab.checkpoint import RESUMABLE_KEYS, differing_keys

    record = directory / ".hydra" / "config.yaml"
    if (next(directory.rglob("checkpoint.pt"), None) is not None or not record.is_file()
            or not (directory / ".hydra" / "overrides.yaml").is_file() or OmegaConf.select(config, "resume_force")):
        return
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(record), resolve=True)
        current = OmegaConf.to_container(job_config(config), resolve=True)
    except Exception:  # noqa: BLE001 - a record this version cannot read: nothing to compare with
        return
    differ = differing_keys(recorded, current, ignore=RESUMABLE_KEYS)
    if differ:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ConfigError(f"resume: {directory} holds a run that stopped before its first checkpoint, started with "
                          f"another config (its record {record} differs in {shown}); start it again with the "
                          "settings it was started with, or add resume_force=true")


def replace_overrides(args: list[str], old: list[str], new: list[str]) -> list[str]:
    """`args` with its run of overrides `old` replaced by `new` (Hydra wants them as one run of words)."""
    n = len(old)
    for i in range(len(args) - n, -1, -1) if n else ():
        if args[i:i + n] == old:
            return [*args[:i], *new, *args[i + n:]]
    return [*new, *args]


@contextlib.contextmanager
def logging_restored():
    """The root logger's handlers and level as they were before Hydra configured logging for the jobs:
    `train` is also called in-process (tests, notebooks), where Hydra's handlers would go on writing to
    streams that are closed by then."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()  # a job's train.log
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
