"""`ganlab train -m hydra/launcher=ray ...`: a sweep's jobs as Ray tasks (hydra_plugins/ganlab_ray_launcher holds
the class Hydra instantiates; ganlab/configs/hydra/launcher/ray.yaml its settings). Optional extra:
pip install -e ".[ray]" (Ray, and Hydra's Ray launcher plugin, whose job runner it uses).

- Where: a local Ray instance on 127.0.0.1 that the command starts and stops (hydra.launcher.ray.init.address=null,
  the default), or a running cluster (address=ray://HOST:10001, HOST:6379 or auto). The jobs write into the sweep
  directory by its absolute path, so a cluster's nodes must see it at that path (a shared file system), as Slurm's
  must; they also need ganlab installed, since each job runs ganlab's code there.
- Each job: one task (`run_job`), holding hydra.launcher.ray.remote.num_cpus cores, in a fresh worker process
  (remote.max_calls=1: Ray workers otherwise live on and take the next job). It runs with the launching command's
  argv and GANLAB_* environment (a cluster's workers do not inherit them): its run records that command, and a
  job stopped by a signal prints the command that continues the sweep. What a job changes of its process (torch's
  thread count, logging handlers, sys.argv, the environment, a run directory's lock) is put back when it ends, for
  workers that take several jobs (max_calls=0).
- The end: every job is awaited, whatever the others do (a worker that died is one line, and its job counts as
  one that left no summary.json in the sweep's closing line, which ganlab's sweeper prints afterwards). Ctrl-C or
  SIGTERM to the command cancels the jobs as Ctrl-C stops one: a running job gets SIGINT, ends its step and saves
  its checkpoint; then one line gives the command that continues the whole sweep (its own plus resume=auto), and
  the exit status is 128 + the signal's number. A second Ctrl-C stops them at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from ganlab.errors import ConfigError, GanlabError
from ganlab.threads import AUTO

log = logging.getLogger("hydra.ganlab")  # beside Hydra's own lines, as ganlab's sweeper's (ganlab/sweep.py)

INSTALL = 'pip install -e ".[ray]"'
# ray.init arguments that only a new local instance takes: Ray refuses them when it joins a running cluster.
LOCAL_ONLY = ("num_cpus", "num_gpus", "object_store_memory", "include_dashboard", "resources", "_node_ip_address")
LOCAL_IP = "127.0.0.1"  # the local instance's node address, whatever the machine's network address is (or lacks)
WAIT_S = 1.0  # how long each wait for the jobs lasts, so that a signal reaches the waiting (main) thread
# After the last job: Ray's log monitor reads the workers' output every 0.1 s and passes it on asynchronously, so
# the jobs' last console lines may still be on their way. Waited for until none has come for QUIET_S (at most
# DRAIN_S): without it the sweep's closing line came before them, and ray.shutdown dropped one job's last line.
QUIET_S, DRAIN_S = 1.0, 5.0


def check_installed() -> None:
    """ConfigError naming the extra when Ray or Hydra's Ray launcher plugin is missing."""
    for module in ("ray", "hydra_plugins.hydra_ray_launcher"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing; a module left half-imported
            found = False
        if not found:
            raise ConfigError(f"hydra/launcher=ray needs Ray and Hydra's Ray launcher plugin, which are not installed "
                              f"here: {INSTALL}")


def first_line(exc: BaseException) -> str:
    """An exception's message in one line: its first, or its last where the first only introduces the rest (Ray
    Client's "Initialization failure from server:" and the server's traceback)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    return lines[-1] if lines[0].endswith(":") else lines[0]


def cluster_address(kwargs: dict) -> str | None:
    """The running cluster that ray.init's arguments join (theirs, or $RAY_ADDRESS, which Ray reads when they give
    none), or None for a new local instance."""
    address = kwargs.get("address") or os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else str(address)


def init_kwargs(init: DictConfig | dict) -> dict:
    """ray.init's arguments from hydra.launcher.ray.init: those set (not null); to join a running cluster without
    the local instance's, which Ray refuses there; a new local instance on 127.0.0.1."""
    kwargs = OmegaConf.to_container(init, resolve=True) if isinstance(init, DictConfig) else dict(init)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if cluster_address(kwargs):
        for key in LOCAL_ONLY:
            kwargs.pop(key, None)
    else:
        # "local": a new instance. Without an address Ray would join any cluster it finds on this machine (one that
        # `ray start` left in /tmp/ray, even a stopped one), with its own resources and its own lifetime.
        kwargs["address"] = "local"
        kwargs.setdefault("_node_ip_address", LOCAL_IP)
    return kwargs


def connect(ray, init: DictConfig | dict) -> bool:
    """Start the local instance or join the cluster; True when this call did (the command then ends it: a local
    instance stops, a cluster is left). An address that does not answer, or a setting Ray refuses, is one line."""
    if ray.is_initialized():  # the caller's (a notebook's): it ends it
        return False
    kwargs = init_kwargs(init)
    address = cluster_address(kwargs)
    log.info("Ray: %s", f"joining the cluster at {address}" if address else "starting a local instance on "
             f"{LOCAL_IP}" + (f" with {kwargs['num_cpus']} CPUs" if "num_cpus" in kwargs else ""))
    if address and address.startswith("ray://"):
        client_token()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with warnings.catch_warnings():  # Ray Client's own warning of a timeout: the line below says it
            warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.util\.client")
            ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, TimeoutError, ValueError, RuntimeError...
        reason = first_line(exc)
        if address:
            raise GanlabError(f"hydra/launcher=ray: cannot join the Ray cluster at {address}: {reason}; check the "
                              "address (the head node's `ray start --head` prints it; Ray Client: "
                              "ray://HOST:10001) and, for a cluster with token authentication (Ray's default), that "
                              "its token is here (`ray get-auth-token` on the head node, into ~/.ray/auth_token or "
                              "$RAY_AUTH_TOKEN)") from None
        raise GanlabError(f"hydra/launcher=ray: cannot start a local Ray instance: {reason}; check "
                          "hydra.launcher.ray.init (`ganlab train --cfg hydra hydra/launcher=ray`)") from None
    finally:
        # ray.init leaves SIGTERM to Ray's C++ handler, which aborts the command (a stack dump, exit -6): the
        # command's own handlers back (cli.main's: a signal while the jobs run stops them at their checkpoints).
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
    return True


def client_token() -> None:
    """Ray Client (ray://) sends the cluster's token only when token authentication is on in this process, which
    ray.init turns on by itself for a local instance or a GCS address but not for ray:// (Ray 2.60: the connection
    then times out after 30 s). On here when a token is at hand (~/.ray/auth_token, $RAY_AUTH_TOKEN) and
    $RAY_AUTH_MODE does not say otherwise."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def remote_options(remote: DictConfig | dict) -> dict:
    options = OmegaConf.to_container(remote, resolve=True) if isinstance(remote, DictConfig) else dict(remote)
    return {k: v for k, v in options.items() if v is not None}


def thread_warning(remote: dict, configs: list[DictConfig]) -> str | None:
    """A job that trains on more torch threads than the cores its task holds shares them with the jobs beside it:
    oversubscribed threads wait for each other (2 jobs x 2 threads on 2 cores ran 9x slower than 2 x 1). cpu_threads=0
    (torch's default) and auto (ganlab/threads.py, which takes OMP_NUM_THREADS as given) are the task's cores in a Ray
    worker (Ray sets OMP_NUM_THREADS to them), so they never are."""
    cores = remote.get("num_cpus", 1)
    threads = max(int(t) if (t := c.get("cpu_threads", AUTO)) != AUTO else 0 for c in configs)
    if cores and threads > cores:
        return (f"cpu_threads={threads}, but each Ray job holds hydra.launcher.ray.remote.num_cpus={cores:g} "
                f"core(s): its threads would wait for those of the jobs beside it; set "
                f"hydra.launcher.ray.remote.num_cpus={threads}, or cpu_threads={cores:g}")
    return None


def launch(launcher, job_overrides, initial_job_idx: int) -> list:
    """The jobs of `job_overrides` as Ray tasks, awaited; their JobReturns (Hydra's launcher interface)."""
    # Before Ray is imported, which reads it: Ray folds lines that look alike from different jobs into one
    # ("[repeated 3x across cluster]"), which would hide one job's step lines behind another's.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, filter_overrides, setup_globals

    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    configs = []
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        cfg = launcher.hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id, cfg.hydra.job.num = f"ray_{idx}", idx
            cfg.hydra.sweep.dir = str(sweep_dir)  # a cluster's worker starts in another directory
        configs.append(cfg)
    options = remote_options(launcher.ray_cfg.remote)
    warning = thread_warning(options, configs)
    if warning:
        logging.getLogger("ganlab").warning("%s", warning)
    started = connect(ray, launcher.ray_cfg.init)
    try:
        log.info("Ray: launching %d jobs, sweep output dir %s", len(configs), sweep_dir)
        task = ray.remote(**options)(run_job)
        state, env = Singleton.get_state(), ganlab_environment()
        refs = []
        for idx, (overrides, cfg) in enumerate(zip(job_overrides, configs), initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            refs.append(task.remote(launcher.hydra_context, cfg, launcher.task_function, state, list(sys.argv), env))
        return collect(ray, refs, configs)
    finally:
        if started:
            drain_logs()
            ray.shutdown()


def drain_logs() -> None:
    """Wait for the jobs' last console lines (QUIET_S, DRAIN_S). Where Ray's private dispatcher of forwarded lines
    is not found (another Ray version, Ray Client), QUIET_S."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        dispatcher = None
    last = [time.monotonic()]
    start = last[0]
    if dispatcher is not None:
        dispatcher.add_handler("ganlab_drain", lambda data: last.__setitem__(0, time.monotonic()))
    try:
        while time.monotonic() - last[0] < QUIET_S and time.monotonic() - start < DRAIN_S:
            time.sleep(0.1)
    finally:
        if dispatcher is not None:
            dispatcher.remove_handler("ganlab_drain")


def ganlab_environment() -> dict[str, str]:
    """What a job reads of the launching command's environment (the command line its run records, data and
    cache folders): a cluster's worker does not inherit it."""
    return {k: v for k, v in os.environ.items() if k.startswith("GANLAB_")}


def collect(ray, refs: list, configs: list[DictConfig]) -> list:
    """Each job's JobReturn, once all have ended. A job whose worker died (killed, out of memory) or that raised
    past Hydra's job runner is one line and a failed JobReturn; the closing line counts its missing summary."""
    from hydra.core.utils import JobReturn, JobStatus

    from ganlab.sweep import job_directory

    received: list[int] = []
    try:
        with signals_noted(received):
            wait_all(ray, refs)
    except KeyboardInterrupt:
        stop(ray, refs, received[-1] if received else signal.SIGINT)
    returns = []
    for ref, cfg in zip(refs, configs):
        try:
            returns.append(ray.get(ref))
        except ray.exceptions.RayError as exc:
            reason = first_line(exc)
            log.error("%s ended without a result: %s", job_directory(cfg).name, reason)
            returns.append(JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=cfg, status=JobStatus.FAILED,
                                     _return_value=exc))
    return returns


@contextlib.contextmanager
def signals_noted(received: list[int]):
    """While the jobs run, SIGINT and SIGTERM are noted in `received` and raise KeyboardInterrupt: Ray's wait turns
    whatever a handler raises into a bare KeyboardInterrupt, which would lose which signal it was."""
    def note(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_all(ray, refs: list) -> None:
    pending = list(refs)
    while pending:  # in short waits: a signal's KeyboardInterrupt is raised between them
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)


def stop(ray, refs: list, signum: int) -> None:
    """Ctrl-C or SIGTERM to the command: each job cancelled as Ctrl-C stops a run (a running one gets SIGINT, ends
    its step and saves its checkpoint; one not started never starts), then one line with the command that continues
    the whole sweep, and SystemExit(128 + signum), as a sweep of the basic launcher ends."""
    from ganlab.preflight import again_command

    name = signal.Signals(signum).name
    log.warning("%s: stopping the sweep's Ray jobs; each running one saves its checkpoint first", name)
    for ref in refs:
        ray.cancel(ref)  # force=False: SIGINT in the job's process, which ganlab's loop takes as Ctrl-C
    saved = "the sweep's running jobs saved their checkpoints"
    try:
        wait_all(ray, refs)
    except KeyboardInterrupt:  # a second Ctrl-C: at once, without the checkpoints still being written
        for ref in refs:
            ray.cancel(ref, force=True)
        saved = "the sweep's jobs were stopped at once, each at its last checkpoint"
    drain_logs()  # the jobs' own lines first: this one is the command's last
    log.error("interrupted by %s: %s; continue the whole sweep with `%s` (its completed jobs are skipped, the "
              "interrupted ones resume, the rest start)", name, saved,
              again_command(*[] if "resume=auto" in sys.argv[1:] else ["resume=auto"]))
    raise SystemExit(128 + signum)


def run_job(hydra_context, sweep_config: DictConfig, task_function, singleton_state: dict, argv: list[str],
            env: dict[str, str]):
    """One job in a Ray worker: Hydra's Ray plugin runs it (Hydra's singletons, its run_job: the job's directory,
    logging, callbacks), with the launching command's argv and GANLAB_* environment; afterwards the process is put
    back as it was (a worker may take another job: remote.max_calls=0)."""
    import torch
    from hydra.core.utils import JobReturn, JobStatus
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    from ganlab import runlock
    from ganlab.launch import logging_restored

    saved_argv = sys.argv
    saved_env = {k: v for k, v in os.environ.items() if k.startswith("GANLAB_") or k in env}
    threads = torch.get_num_threads()  # a job with cpu_threads=N sets N for the process
    sys.argv = list(argv)
    os.environ.update(env)
    try:
        with logging_restored():  # Hydra's handlers of this job (its train.log) closed after it
            return _run_job(hydra_context=hydra_context, sweep_config=sweep_config, task_function=task_function,
                            singleton_state=singleton_state)
    except SystemExit as exc:
        # A job stopped by a signal ends as its command would (launch.train_job: sys.exit(130) after its line and
        # checkpoint); raised out of a Ray task it would end the worker as a crash, with Ray's lines about it.
        return JobReturn(overrides=list(sweep_config.hydra.overrides.task), cfg=sweep_config,
                         status=JobStatus.FAILED, _return_value=exc)
    finally:
        runlock.release()
        torch.set_num_threads(threads)
        sys.argv = saved_argv
        for key in [k for k in os.environ if k.startswith("GANLAB_") or k in env]:
            if key not in saved_env:
                del os.environ[key]
        os.environ.update(saved_env)
