"""`ganlab train -m`: a sweep's jobs, each composed once, all checked before the first starts, then run.

`run_sweep` is the work of ganlab's sweeper (hydra/sweeper=ganlab, the default;
hydra_plugins/ganlab_sweeper):
1. the overrides split into jobs: the product of every comma list, range and choice (Hydra's basic
   sweeper does the same); interval() needs a sweeper that samples (hydra/sweeper=optuna);
2. Hydra's config loader composes each job's config, once (an error is one line naming the key);
3. every job is checked (ganlab/preflight.py), and a parallel sweep that oversubscribes the cores is
   warned about;
4. the jobs run: in this process, each on the config composed for it (the basic launcher), or through
   the configured launcher (joblib, SLURM) by their overrides, which its workers compose again
   (Hydra's launcher interface passes overrides, not configs);
5. one closing line with every job's outcome, read from its summary.json wherever it ran, and the
   worst exit status (preflight.sweep_exit_code, which also closes a sweep that another sweeper ran).
"""

from __future__ import annotations

import copy
import itertools
import logging
from pathlib import Path

from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ganlab.config import explain_compose_error
from ganlab.errors import ConfigError
from ganlab.preflight import check_jobs, oversubscription_warning, sweep_exit_code, usable_cores

log = logging.getLogger("hydra.ganlab")  # beside Hydra's own lines ("[HYDRA] Launching 3 jobs locally")


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


def compose_jobs(sweeper, jobs: list[list[str]]) -> list[DictConfig]:
    """Each job's config, composed by Hydra's config loader as its launcher would (one line on an error)."""
    configs = []
    for job in jobs:
        try:
            configs.append(sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, list(job)))
        except (ConfigCompositionException, MissingConfigException, OmegaConfBaseException, ValueError) as exc:
            raise ConfigError(explain_compose_error(exc, job)) from None
    return configs


def run_sweep(sweeper, arguments: list[str]) -> list:
    """A multirun, as module docstring says. Raises SystemExit with the worst job's status when one failed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = sweeper.config
    # Resolved first: `${now:...}` is cached in the sweep's config, and each job's composition copies that
    # cache, so every job names the same sweep directory.
    sweep_dir = Path(str(config.hydra.sweep.dir))
    jobs = split_jobs(OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
                      .parse_overrides(arguments))
    configs = compose_jobs(sweeper, jobs)
    resolved = check_jobs(configs, "hydra.sweep.dir")
    warning = oversubscription_warning(config.hydra.launcher, len(resolved),
                                       [int(c.get("cpu_threads", 1)) for c in resolved], usable_cores())
    if warning:
        logging.getLogger("ganlab").warning("%s", warning)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")  # what a re-run with resume=auto finds (launch.previous_sweep)
    if str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"):
        returns = run_here(sweeper, jobs, configs)
    else:
        returns = sweeper.launcher.launch(jobs, initial_job_idx=0)
    code = sweep_exit_code(sweep_dir.absolute(), sum(int(c.get("replicas", 1)) for c in resolved))
    if code:
        raise SystemExit(code)
    return returns


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
