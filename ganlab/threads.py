"""How many torch threads a run trains on (`cpu_threads`).

`cpu_threads=auto` (the default) trains on the cores the job holds, less one for its evaluation worker
(W1/W2 and the pictures, a process of its own, eval.background=true): on 2 cores a single run trains on 1
thread beside its worker, on 8 on 7. The cores a job holds: this process's usable cores (its affinity: a
Slurm allocation, a taskset), or the share a local parallel sweep gives each of its jobs
(`GANLAB_JOB_CORES`, set by ganlab/sweep.py for joblib and submitit's local launcher), so 2 jobs at once on
2 cores train on one thread each. OMP_NUM_THREADS, when set, is taken as the user's (or the scheduler's:
Ray sets it to a task's num_cpus) word. `cpu_threads=0` leaves torch's own default; N > 0 is N.

Why a core of its own for the worker, and one fixed count for the whole run (docs/benchmarks.md, "Threads"):
- torch's OpenMP threads wait for each other at every parallel region: beside two other busy processes on this
  2-core machine, even at nice 19, the bare loop on 2 threads ran 24 steps/s against 194 on 1 thread.
- Training on one thread fewer only while the worker has a job was as fast (224 steps/s against 210 on one
  thread, idle), but the thread count changes the floating-point sums of convolutions and batch norm (DCGAN's
  gradients differ by ~4e-6 between 1 and 2 threads), so the same seed would give another run each time.
"""

from __future__ import annotations

import contextlib
import os

from ganlab.errors import ConfigError

AUTO = "auto"
JOB_CORES_ENV = "GANLAB_JOB_CORES"  # the cores one job of a local parallel sweep holds


def usable_cores() -> int:
    """The cores this process may use (its affinity, as joblib counts them; all of them where the
    platform has no affinity call, macOS)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_share(launcher, at_once: int, cores: int) -> int | None:
    """The cores each job of a sweep holds when `launcher` runs `at_once` jobs side by side on this machine
    (joblib, submitit's local launcher); None where jobs run one at a time here (basic) or elsewhere (Slurm,
    Ray: its launcher gives each job its num_cpus)."""
    target = str(launcher.get("_target_", ""))
    if target.endswith(("JoblibLauncher", "submitit_launcher.LocalLauncher")):
        return max(1, cores // max(1, at_once))
    return None


@contextlib.contextmanager
def job_cores_set(cores: int | None):
    """GANLAB_JOB_CORES=`cores` in this process's environment for the block (for the jobs it starts), as before
    after it; nothing for None."""
    saved = os.environ.get(JOB_CORES_ENV)
    if cores is not None:
        os.environ[JOB_CORES_ENV] = str(cores)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(JOB_CORES_ENV, None)
        else:
            os.environ[JOB_CORES_ENV] = saved


def check(value) -> None:
    """ConfigError unless `value` is a valid cpu_threads: auto, 0 (torch's default) or a positive count."""
    if value == AUTO:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"cpu_threads={value!r}: choose auto (the cores the job holds), 0 (torch's default) "
                          "or a number of threads >= 1")


def job_cores() -> int:
    """The cores this job holds: its sweep's share of the machine (GANLAB_JOB_CORES), else its usable cores."""
    given = os.environ.get(JOB_CORES_ENV, "")
    return max(1, int(given)) if given.isdigit() else usable_cores()


def count(value, cores: int | None = None, worker: bool = True) -> int:
    """The torch threads cpu_threads=`value` trains on, for a job holding `cores` (default: job_cores()) with
    (`worker`) or without a background evaluation worker beside it."""
    check(value)
    if value == AUTO:
        given = os.environ.get("OMP_NUM_THREADS", "")
        if given.isdigit() and int(given) > 0:
            return int(given)
        held = cores or job_cores()
        return max(1, held - 1) if worker else held
    if value == 0:
        import torch  # here: preflight and the sweep read this module before any run imports torch

        return torch.get_num_threads() if cores is None else cores  # torch's default: a thread per core
    return value


def of_job(config: dict, cores: int) -> int:
    """The torch threads a job's resolved config trains on, when it holds `cores`."""
    return count(config.get("cpu_threads", AUTO), cores, worker=bool(config.get("eval", {}).get("background", True)))


def apply(value, worker: bool = True) -> int:
    """Set torch's intra-op threads for cpu_threads=`value` in this process, for a run with (`worker`) or without a
    background evaluation worker; the count, fixed for the whole run."""
    import torch

    threads = count(value, worker=worker)
    if value != 0:  # 0: torch's own choice, as the process started
        torch.set_num_threads(threads)
    return threads
