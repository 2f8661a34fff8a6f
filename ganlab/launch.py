"""`ganlab train` through Hydra: the job function Hydra calls with each composed config, and what the
command does with its overrides before Hydra sees them (their syntax, a resume's own overrides, the sweep
a resume=auto continues). The command itself is ganlab/cli.py's `train`."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from ganlab.config import CONFIG_NAME, CONFIG_SOURCE, GROUPS, Role, keys_with
from ganlab.errors import ConfigError, GanlabError
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
def train_job(cfg: DictConfig) -> dict | None:
    from ganlab.train import (  # torch is imported only when a job runs, so --help stays fast
        Interrupted,
        run,
    )

    hydra_cfg = HydraConfig.get()
    labels = {group: hydra_cfg.runtime.choices.get(group) for group in GROUPS}
    run_dir = Path(hydra_cfg.runtime.output_dir)
    parallel = runs_in_parallel(hydra_cfg)
    consoles = [h for h in logging.getLogger().handlers if not isinstance(h, logging.FileHandler)]
    if parallel:  # no progress bars, and console lines named by job (train.log needs no name)
        for handler in consoles:
            handler.setFormatter(_Prefixed(f"[{run_dir.name}] ", handler.formatter))
    try:
        try:
            return run(cfg, run_dir, labels, progress=False if parallel else None)
        except OSError as exc:  # a write that failed outside ganlab's writers (>/dev/full): one line naming the file
            named = None
            if on_stdout(exc) and not isinstance(exc, BrokenPipeError) or exc.errno in FULL_DISK_ERRNOS:
                named = write_error(exc)
            if named is None:  # another error, or a closed pipe (cli._main ends quietly): as it is
                raise
            raise named from None
    except Interrupted as exc:
        # Stop the whole sweep: the signal was meant for all of it. A re-run with resume=auto
        # resumes this job and starts the ones after it.
        log.error("%s", exc)
        sys.exit(exc.exit_code)
    except GanlabError as exc:
        # The run's summary.json already says what happened; a multirun goes on with the next job, and its
        # closing line reads every job's outcome from the summaries (ganlab/sweep.py).
        _record_exit_code(run_dir, exc.exit_code)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("%s", exc)  # named by job when jobs run in parallel
            return None
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
