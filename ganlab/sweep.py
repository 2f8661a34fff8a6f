"""`ganlab train -m`: a sweep's jobs, each composed once, all checked before the first starts, then run.

`run_sweep` is the work of ganlab's sweeper (hydra/sweeper=ganlab, the default;
hydra_plugins/ganlab_sweeper):
1. the overrides split into jobs: the product of every comma list, range and choice (Hydra's basic
   sweeper does the same); interval() needs a sweeper that samples (hydra/sweeper=optuna). A sweep of no
   job (`seed=range(0,0)`) or of more than MAX_JOBS is refused first, in one line (`check_job_count`);
2. Hydra's config loader composes each job's config, once (an error is one line naming the key);
3. every job is checked (ganlab/preflight.py), and a parallel sweep that oversubscribes the cores is
   warned about. Steps 2 and 3 show their progress once they have taken a second (`CheckProgress`); then the
   sweep's cost at the measured speeds (ganlab/costs.py) and, with several GPUs and jobs side by side on this
   machine, each job's GPU (ganlab/devices.py) are said in one line each;
4. the jobs run: in this process, each on the config composed for it (the basic launcher), or through
   the configured launcher (joblib, SLURM) by their overrides, which its workers compose again
   (Hydra's launcher interface passes overrides, not configs);
5. one closing line with every job's outcome, read from its summary.json wherever it ran, and the
   worst exit status (preflight.sweep_exit_code, which also closes a sweep that another sweeper ran).

Another sweeper (hydra/sweeper=basic, optuna) composes its jobs as it goes: before its first job,
`OtherSweeperCheck` (a Hydra callback) checks the syntax it reads and every value it can give a key
(`check_other_sweep`), and Optuna's objective and direction (`check_optuna`).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import sys
import time
from pathlib import Path

from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ganlab.config import explain_compose_error
from ganlab.devices import gpu_plan, jobs_at_once
from ganlab.errors import ConfigError
from ganlab.launch import split_jobs
from ganlab.preflight import Refused, check_jobs, oversubscription_warning, sweep_exit_code
from ganlab.threads import job_cores_set, local_share, usable_cores
from ganlab.threads import of_job as threads_of_job

log = logging.getLogger("hydra.ganlab")  # beside Hydra's own lines ("[HYDRA] Launching 3 jobs locally")

# The most jobs one sweep may start. Each is composed and checked before the first starts (about 0.17 s a job
# on 2 busy cores), so 10,000 is already half an hour of checks before any training; more is a typo
# (range(0,100000)) rather than a plan, and is refused before anything is composed.
MAX_JOBS = 10_000
PROGRESS_AFTER = 1.0   # seconds the pre-run check runs before its progress shows
PROGRESS_EVERY = 5.0   # seconds between its progress lines where no terminal shows a bar


def check_job_count(overrides: list) -> int:
    """The number of jobs `split_jobs` would make of Hydra's parsed overrides, counted without making them;
    ConfigError for none (an empty range) or more than MAX_JOBS."""
    from hydra.core.override_parser.types import RangeSweep

    counts: dict[str, tuple[int, str]] = {}
    for o in overrides:
        n = 1  # one value; a sampled sweep (interval) is split_jobs's to refuse
        if o.is_sweep_override() and o.is_discrete_sweep():
            value = o.value()
            if isinstance(value, RangeSweep) and isinstance(value.range(), range):
                n = len(value.range())  # range(0,10**12): counted, not listed
            else:
                n = sum(1 for _ in itertools.islice(o.sweep_string_iterator(), MAX_JOBS + 1))
        counts[o.get_key_element()] = (n, o.input_line)  # a later override of a key replaces an earlier one
    empty = [line for n, line in counts.values() if n == 0]
    if empty:
        raise ConfigError(f"{empty[0]} sweeps over no value, so the sweep would run no job; give it at least one "
                          "value")
    total = math.prod(n for n, _ in counts.values())
    if total > MAX_JOBS:
        swept = " x ".join(f"{'over ' if n > MAX_JOBS else ''}{min(n, MAX_JOBS):,} values of {key}"
                           for key, (n, _) in counts.items() if n > 1)
        shown = f"over {MAX_JOBS:,}" if any(n > MAX_JOBS for n, _ in counts.values()) else f"{total:,}"
        raise ConfigError(f"this sweep has {shown} jobs ({swept}), more than the {MAX_JOBS:,} one sweep may start "
                          f"(each is checked before the first starts); sweep fewer values, or split it into sweeps "
                          f"of at most {MAX_JOBS:,} jobs")
    return total


class CheckProgress:
    """The progress of a sweep's pre-run check (every job composed, its values validated, then built and
    checked: PHASES), shown once it has taken PROGRESS_AFTER seconds: on a terminal, a bar on stderr that goes
    away when the check ends; otherwise a line beside Hydra's (stdout) every PROGRESS_EVERY seconds, so that
    stderr keeps a refusal's one line."""

    PHASES = ("composed", "validated", "checked")

    def __init__(self, jobs: int):
        self.jobs, self.done = jobs, dict.fromkeys(self.PHASES, 0)
        self.start = time.monotonic()
        self.shown: float | None = None  # when the last line was written
        self.bar = self.task = None

    def __call__(self, phase: str) -> None:
        """One more job through `phase` (one of PHASES)."""
        self.done[phase] += 1
        now = time.monotonic()
        if now - self.start < PROGRESS_AFTER:
            return
        text = f"pre-run check: {self.done[phase]:,} of {self.jobs:,} jobs {phase}"
        if sys.stderr.isatty():
            if self.bar is None:
                from rich.console import Console
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                    console=Console(stderr=True), transient=True)
                self.task = self.bar.add_task(text, total=len(self.PHASES) * self.jobs)
                self.bar.start()
            self.bar.update(self.task, completed=sum(self.done.values()), description=text)
        elif self.shown is None or now - self.shown >= PROGRESS_EVERY or self.done[phase] == self.jobs:
            self.shown = now
            log.info("%s (%.0f s)", text, now - self.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def compose_jobs(sweeper, jobs: list[list[str]], progress=None) -> list[DictConfig]:
    """Each job's config, composed by Hydra's config loader as its launcher would (one line on an error).
    `progress`: called with "composed" after each job (a CheckProgress)."""
    return _compose(sweeper.hydra_context.config_loader, sweeper.config, jobs, progress)


def _compose(loader, config: DictConfig, jobs: list[list[str]], progress=None) -> list[DictConfig]:
    configs = []
    for job in jobs:
        try:
            configs.append(loader.load_sweep_config(config, list(job)))
        except (ConfigCompositionException, MissingConfigException, OmegaConfBaseException, ValueError) as exc:
            raise ConfigError(explain_compose_error(exc, job)) from None
        if progress is not None:
            progress("composed")
    return configs


def run_sweep(sweeper, arguments: list[str]) -> list:
    """A multirun, as module docstring says. Raises SystemExit with the worst job's status when one failed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = sweeper.config
    # Resolved first: `${now:...}` is cached in the sweep's config, and each job's composition copies that
    # cache, so every job names the same sweep directory.
    sweep_dir = Path(str(config.hydra.sweep.dir))
    overrides = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader).parse_overrides(arguments)
    progress = CheckProgress(check_job_count(overrides))  # none, or too many: refused before any is made
    try:
        jobs = split_jobs(overrides)
        configs = compose_jobs(sweeper, jobs, progress)
        resolved = check_jobs(configs, "hydra.sweep.dir", progress)
    finally:
        progress.close()
    cores = usable_cores()
    # Jobs side by side on this machine share its cores: cpu_threads=auto trains each on its share (ganlab/threads.py)
    share = local_share(config.hydra.launcher, jobs_at_once(config.hydra.launcher, len(resolved), cores), cores)
    warning = oversubscription_warning(config.hydra.launcher, len(resolved),
                                       [threads_of_job(c, share or cores) for c in resolved], cores)
    if warning:
        logging.getLogger("ganlab").warning("%s", warning)
    log.info("%s", sweep_cost(sweeper, resolved))  # what it will take, before it starts (ganlab/costs.py)
    # More than one GPU and jobs side by side here: job i on GPU i mod N (ganlab/devices.py), said in one line
    plan = gpu_plan(config.hydra.launcher, resolved, usable_cores())
    if plan is not None:
        log.info("%s", plan.line())
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")  # what a re-run with resume=auto finds (launch.previous_sweep)
    if str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"):
        returns = run_here(sweeper, jobs, configs)
    else:
        launched = jobs if plan is None else [[*job, *plan.override(i)] for i, job in enumerate(jobs)]
        with job_cores_set(share):  # the jobs' processes start inside: they inherit it
            returns = sweeper.launcher.launch(launched, initial_job_idx=0)
    code = sweep_exit_code(sweep_dir.absolute(), sum(int(c.get("replicas", 1)) for c in resolved))
    if code:
        raise SystemExit(code)
    return returns


def sweep_cost(sweeper, resolved: list[dict]) -> str:
    """The sweep's cost line (costs.estimate): its jobs' resolved configs against the measured setups, each
    composed as a job of this sweep would be (the command's own --config-dir included)."""
    from ganlab.costs import estimate
    from ganlab.preflight import job_config

    config = sweeper.config

    def compose(overrides: list[str]) -> dict:
        (composed,) = _compose(sweeper.hydra_context.config_loader, config, [overrides])
        return OmegaConf.to_container(job_config(composed), resolve=True)

    at_once = jobs_at_once(config.hydra.launcher, len(resolved), usable_cores())
    return estimate(resolved, at_once, usable_cores(), compose)


def run_here(sweeper, jobs: list[list[str]], configs: list[DictConfig]) -> list:
    """The jobs one after another in this process, each on the config composed for it (what Hydra's
    basic launcher does after composing each job again). Each job's directory is claimed before Hydra
    writes into it (launch.claim_run_dir), as a single run's is."""
    from hydra.core.utils import configure_log, filter_overrides, run_job, setup_globals

    from ganlab import runlock
    from ganlab.launch import claim_run_dir

    setup_globals()
    config = sweeper.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    log.info("Launching %d jobs locally", len(jobs))
    returns = []
    for idx, (job, cfg) in enumerate(zip(jobs, configs)):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(job)))
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = idx
        job_dir = job_directory(cfg)
        claim_run_dir(cfg, job_dir, "hydra.sweep.dir")
        try:
            returns.append(run_job(hydra_context=sweeper.hydra_context, task_function=sweeper.task_function,
                                   config=cfg, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        finally:
            runlock.release(job_dir)
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns


def job_directory(cfg: DictConfig) -> Path:
    """The directory Hydra's run_job will make for a sweep job of config `cfg` (the sweep's directory and
    the job's subdirectory, whose name reads Hydra's choices for the job)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    try:
        hydra_config.set_config(cfg)
        return Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    finally:
        hydra_config.cfg = before


# --- a multirun through another sweeper (hydra/sweeper=basic, hydra/sweeper=optuna) --------------------------

class OtherSweeperCheck(Callback):
    """A Hydra callback (configs/train.yaml): before the first job of a sweep that another sweeper than ganlab's
    runs, `check_other_sweep`. ganlab's sweeper checks every job itself."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if str(config.hydra.sweeper.get("_target_", "")).endswith(".GanlabSweeper"):
            return
        try:
            check_other_sweep(config)
        except Exception as exc:  # noqa: BLE001 - every error must stop the sweep (preflight.Refused)
            raise Refused(exc) from exc


def check_other_sweep(config: DictConfig) -> None:
    """Before the first job of a multirun that another sweeper than ganlab's runs (`OtherSweeperCheck`, with
    the sweep's config): the sweep syntax that sweeper reads (Hydra's basic sweeper:
    lists, ranges, choice and glob; Optuna: those but glob, and interval), then every value the sweep can
    give a key, as far as it can be listed (`value_jobs`: each choice, a range's ends, an interval's bounds),
    composed and checked as a job (preflight.check_jobs), in one line on an error. Optuna optimises what
    each run returns: it needs objective=METRIC, whose better side sets its direction (`check_optuna`)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    kind = str(sweeper.get("_target_", "")).rsplit(".", 1)[-1]
    loader = GlobalHydra.instance().config_loader()
    params = sweeper.get("params") or {}  # the search space given in the sweeper's config (Hydra >= 1.2)
    arguments = [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    if kind == "BasicSweeper":
        sampled = [o.input_line for o in overrides if o.is_sweep_override() and not o.is_discrete_sweep()]
        if sampled:
            raise ConfigError(f"{sampled[0]}: Hydra's basic sweeper runs lists, ranges and choices; a sampled sweep "
                              "(interval) needs a sweeper that samples, e.g. hydra/sweeper=optuna")
        check_job_count(overrides)  # no job, or more than MAX_JOBS: as ganlab's sweeper refuses them
    elif kind == "OptunaSweeper":
        check_optuna(config, overrides)
    jobs = value_jobs(overrides)
    progress = CheckProgress(len(jobs))
    try:
        check_jobs(_compose(loader, config, jobs, progress), "hydra.sweep.dir", progress)
    finally:
        progress.close()


def check_optuna(config: DictConfig, overrides: list) -> None:
    """hydra/sweeper=optuna: an objective to optimise, set the sweeper's direction from it (unless
    hydra.sweeper.direction is given, which must then agree), and a search space Optuna can sample."""
    from hydra.core.override_parser.types import Glob
    from omegaconf import read_write

    from ganlab import objective

    swept = [o.input_line for o in overrides if o.is_sweep_override() and o.get_key_element().lstrip("+~") == "objective"]
    if swept:
        raise ConfigError(f"{swept[0]}: the objective is what the search optimises; give one metric")
    target = config.get("objective")
    if target is None:
        raise ConfigError("hydra/sweeper=optuna optimises the number each run returns: add objective=METRIC, one of "
                          f"{', '.join(objective.choices())}")
    for o in overrides:
        if not o.is_sweep_override():
            continue
        if isinstance(o.value(), Glob) or not (o.is_choice_sweep() or o.is_range_sweep() or o.is_interval_sweep()):
            raise ConfigError(f"{o.input_line}: Optuna samples lists, choice(...), range(...) and interval(...), not "
                              "glob(...); list the options instead")
        if o.is_choice_sweep():
            odd = [v for v in o.sweep_iterator() if not isinstance(v, (str, int, float, bool, type(None)))]
            if odd:
                raise ConfigError(f"{o.input_line}: Optuna chooses among single values (numbers, strings, true/false), "
                                  f"not {odd[0]}")
    wanted = objective.direction(target)
    given = [o.split("=", 1)[1] for o in config.hydra.overrides.hydra if o.startswith("hydra.sweeper.direction=")]
    if given:
        if given[-1] != wanted:
            raise ConfigError(f"hydra.sweeper.direction={given[-1]}, but objective={target} is better "
                              f"{'higher' if wanted == 'maximize' else 'lower'}: drop hydra.sweeper.direction (it "
                              f"follows the objective) or set it to {wanted}")
        return
    with read_write(config.hydra.sweeper):  # read by Hydra when it makes the sweeper, after this callback
        config.hydra.sweeper.direction = wanted


def value_jobs(overrides: list) -> list[list[str]]:
    """Jobs whose configs, between them, hold every value a sweep can give each key, as far as it can be
    listed: each value of a list, choice(...) or glob(...), a range's first and last value, an interval's
    two bounds (the values between are of the same type and inside them). The first job has every key at
    its first value; each other job one key at another value. ConfigError for a key with no value, or more
    than MAX_JOBS jobs."""
    values: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            picks = [o.input_line]
        elif o.is_interval_sweep():
            picks = [f"{key}={o.value().start!r}", f"{key}={o.value().end!r}"]
        elif o.is_range_sweep() and isinstance(o.value().range(), range):
            numbers = o.value().range()  # range(0,10**12): its ends, never listed
            picks = [f"{key}={numbers[0]}", f"{key}={numbers[-1]}"] if len(numbers) else []
        else:
            listed = [f"{key}={v}" for v in itertools.islice(o.sweep_string_iterator(), MAX_JOBS + 1)]
            picks = [listed[0], listed[-1]] if o.is_range_sweep() and listed else listed
        if not picks:
            raise ConfigError(f"{o.input_line} sweeps over no value, so the sweep would run no job; give it at least "
                              "one value")
        values[key] = list(dict.fromkeys(picks))  # a later override of a key replaces an earlier one
    first = {key: picks[0] for key, picks in values.items()}
    jobs = [list(first.values())]
    for key, picks in values.items():
        jobs += [[pick if k == key else word for k, word in first.items()] for pick in picks[1:]]
    if len(jobs) > MAX_JOBS:
        raise ConfigError(f"this sweep lists over {MAX_JOBS:,} values, more than can be checked before it starts; "
                          "sweep fewer values")
    return jobs
