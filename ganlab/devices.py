"""Where a run trains: the one check of a device name, and the GPUs of a local parallel sweep.

- `resolve_device(name, option)`: `auto`, `cpu`, `cuda`, `cuda:N` or `mps` as a torch.device this machine has,
  or one ConfigError line naming the option, what is present and what to use instead. `ganlab train device=`,
  `ganlab classifier device=`, `ganlab eval --device` and `ganlab sample --device` all call it.
- `gpu_plan` / `GpuPlan`: a local parallel sweep (joblib, submitit's local launcher) whose jobs train on CUDA on a
  machine with more than one visible GPU puts job i on the visible GPU i mod N. The launching process gives each
  job its GPU as `++hydra.job.env_set.GANLAB_GPU=ID`; `place_job`, in the job's process, sets CUDA_VISIBLE_DEVICES
  to it before anything asks CUDA about its devices (CUDA reads that variable once per process).
- `device_kind`: the device a resume compares (cuda:1 and cuda:0 are the same kind of device, and the same RNG
  streams, which checkpoint.set_rng_state carries from one GPU to the other).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from ganlab.errors import ConfigError

NAMES = "auto, cpu, cuda, cuda:N (the GPU of index N) or mps"
GPU_ENV = "GANLAB_GPU"  # the GPU a sweep's job trains on (its id in the launching process's CUDA_VISIBLE_DEVICES)
_CUDA_NAME = re.compile(r"cuda(?::(\d+))?")

# Whether this process has asked CUDA about its devices: after that, CUDA_VISIBLE_DEVICES is read and fixed.
_cuda_queried = False
# The GPU an earlier job of this (worker) process was placed on; CUDA stays on it for the process's life.
_placed: str | None = None


def resolve_device(name, option: str = "device=") -> "torch.device":  # noqa: F821 - torch imported inside
    """`name` (auto | cpu | cuda | cuda:N | mps) as a torch.device present here; ConfigError
    otherwise, its line starting with `option` and the name (`device=cuda:3`, `--device cuda:3`). auto is
    CUDA's current GPU when CUDA is present, else the CPU (never mps: the 2-D networks are faster on the CPU)."""
    import torch  # here, not at the top: `ganlab --help` should not wait for torch

    global _cuda_queried
    name = str(getattr(name, "value", name)).strip()
    shown = f"{option}{name}"
    if name == "auto":
        _cuda_queried = True
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{shown} but MPS (Apple's GPU) is not available here; use {option}auto or {option}cpu")
        return torch.device("mps")
    match = _CUDA_NAME.fullmatch(name)
    if match is None:
        raise ConfigError(f"{shown}: not a device ganlab trains on; choose {NAMES}")
    _cuda_queried = True
    if not torch.cuda.is_available():
        raise ConfigError(f"{shown} but CUDA is not available here; use {option}auto or {option}cpu")
    if match.group(1) is None:
        return torch.device("cuda")
    index, count = int(match.group(1)), torch.cuda.device_count()
    if index >= count:
        have = "1 GPU (cuda:0)" if count == 1 else f"{count} GPUs (cuda:0 to cuda:{count - 1})"
        raise ConfigError(f"{shown} but this machine has {have}; use one of them, or {option}auto")
    return torch.device("cuda", index)


def device_kind(name) -> str:
    """What a resume compares of `device`: cuda:1 and cuda are both `cuda` (a run moves between GPUs with its
    RNG streams); anything else as it is."""
    name = str(name)
    return "cuda" if _CUDA_NAME.fullmatch(name) else name


def device_index(name) -> int:
    """The GPU index a `device` value names: N of cuda:N, else 0 (cuda and auto train on CUDA's current GPU,
    the first visible one)."""
    match = _CUDA_NAME.fullmatch(str(name))
    return int(match.group(1)) if match and match.group(1) is not None else 0


# --- a local parallel sweep's GPUs ---------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs this process sees, by the ids a child's CUDA_VISIBLE_DEVICES takes: the entries of this process's
    own CUDA_VISIBLE_DEVICES (numbers or GPU-UUIDs) where it is set, else 0 .. count-1. Empty without CUDA."""
    import torch

    global _cuda_queried
    _cuda_queried = True
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if listed:
        # CUDA counts the listed ids up to the first it cannot use: the first `count` are the ones in use.
        return [x.strip() for x in listed.split(",") if x.strip()][:count]
    return [str(i) for i in range(count)]


def local_parallel(launcher) -> str | None:
    """"joblib" or "local" (submitit's local launcher) for a launcher that runs jobs side by side in processes of
    this machine; None for one job after the other (basic) or jobs on other machines (Slurm, Ray)."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        return "joblib"
    if target.endswith("submitit_launcher.LocalLauncher"):
        return "local"
    return None


def jobs_at_once(launcher, jobs: int, cores: int) -> int:
    """How many of `jobs` the launcher runs at the same time: joblib's n_jobs (-1: one per core, -2: all but one,
    ...), every job for submitit's local launcher and for launchers that start jobs elsewhere (at most their
    array_parallelism for Slurm), one for Hydra's basic launcher."""
    target = str(launcher.get("_target_", ""))
    if target.endswith(".BasicLauncher"):
        return 1
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or 1)
        return max(1, min(jobs, n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)))
    parallelism = launcher.get("array_parallelism")
    return max(1, min(jobs, int(parallelism))) if isinstance(parallelism, int) and parallelism > 0 else jobs


@dataclass
class GpuPlan:
    """Job i of the sweep on gpus[i mod len(gpus)] (only the jobs in `placed`: those on CUDA's default device)."""

    gpus: list[str]
    placed: list[int]   # the indices of the jobs that get a GPU
    replicas: list[int]  # each placed job's replicas (its seeds, trained together in its one process)
    at_once: int        # jobs running at the same time

    def gpu_of(self, job: int) -> str:
        return self.gpus[job % len(self.gpus)]

    def line(self) -> str:
        n, jobs = len(self.gpus), len(self.placed)
        listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        where = f"CUDA_VISIBLE_DEVICES={listed}" if listed else f"GPUs {', '.join(self.gpus)}"
        packed = ""
        if max(self.replicas) > 1:
            sizes = sorted(set(self.replicas))
            seeds = f"{sizes[0]} seeds" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]} seeds"
            packed = f"; a job's replicas ({seeds}) train together on its GPU"
        return (f"GPU placement: {jobs} job{'s' if jobs != 1 else ''} over {n} GPUs ({where}): job i on GPU i mod {n}, "
                f"by its own CUDA_VISIBLE_DEVICES{packed}; {min(self.at_once, jobs)} at once")

    def override(self, job: int) -> list[str]:
        """The words that give job `job` its GPU (Hydra sets the variable while the job runs)."""
        # ++: add the key to Hydra's env_set, or replace it
        return [f"++hydra.job.env_set.{GPU_ENV}={self.gpu_of(job)}"] if job in self.placed else []


def gpu_plan(launcher, configs: list[dict], cores: int) -> GpuPlan | None:
    """The GPUs of a sweep's jobs (`configs`: each job's resolved config), or None when there is nothing to
    place: a launcher that does not run jobs side by side on this machine, submitit's local launcher without
    `gpus_per_node` (it hides the GPUs from its jobs), fewer than two visible GPUs, or no job on CUDA's default
    device (`device=auto|cuda`; a job given `device=cuda:N` or `cpu` stays where it was put)."""
    kind = local_parallel(launcher)
    if kind is None or (kind == "local" and int(launcher.get("gpus_per_node") or 0) < 1):
        return None
    placed = [i for i, c in enumerate(configs) if str(c.get("device", "auto")) in ("auto", "cuda")]
    if not placed:
        return None
    gpus = visible_gpus()
    if len(gpus) < 2:
        return None
    return GpuPlan(gpus, placed, [int(configs[i].get("replicas", 1)) for i in placed],
                   jobs_at_once(launcher, len(configs), cores))


def _cuda_started() -> bool:
    """Whether this process has asked CUDA about its devices (then CUDA_VISIBLE_DEVICES no longer counts)."""
    torch = sys.modules.get("torch")
    return _cuda_queried or (torch is not None and torch.cuda.is_initialized())


def place_job() -> str | None:
    """In a sweep job's process, before its run: the GPU its launcher gave it ($GANLAB_GPU), made the only one
    this process sees; the line to log, or None when the job was given none. A joblib worker runs several jobs
    in one process, and CUDA reads CUDA_VISIBLE_DEVICES once: a later job keeps the worker's first GPU (so with
    n_jobs a multiple of the GPUs, each GPU runs n_jobs / GPUs jobs at a time)."""
    global _placed
    gpu = os.environ.get(GPU_ENV, "").strip()
    if not gpu:
        return None
    if _placed is None and not _cuda_started():
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        _placed = gpu
        return f"GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu}: the sweep's GPU placement)"
    if _placed == gpu:
        return f"GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu}: the sweep's GPU placement)"
    kept = f"GPU {_placed}" if _placed is not None else "the GPUs it started with"
    return (f"{kept}, not GPU {gpu}: this worker process started CUDA in an earlier job, and CUDA reads "
            "CUDA_VISIBLE_DEVICES once per process")
