"""Config schema and start-up validation.

Three layers catch a bad config before any work starts, each with a one-line message that names
the key and what it accepts:
1. Hydra composition against the typed schema below: unknown options, unknown keys, wrong types of
   the top-level keys (`explain_compose_error` turns Hydra's multi-line errors into one line).
2. `validate(cfg)`: ranges of the top-level keys, and every `_target_` node's keys and value types
   checked against the signature of the class it names. So a new loss or remedy gets its options
   validated from its own type hints, with no schema to write twice.
3. The targets' constructors, for constraints between values (ConfigError from __init__).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganlab.errors import ConfigError

log = logging.getLogger(__name__)

# The configs ship inside the package (ganlab/configs/): Hydra reads them as `pkg://ganlab.configs`,
# from a source tree and from an installed wheel alike. CONFIG_DIR is the same folder on disk.
CONFIG_PACKAGE = "ganlab.configs"
CONFIG_SOURCE = f"pkg://{CONFIG_PACKAGE}"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_NAME = "train"
GROUPS = ("dataset", "model", "optim", "loss", "remedy")


# The schema below is the one source of the top-level keys: their types, their default values, the
# ranges `validate` enforces and each key's role. configs/train.yaml only composes the groups on top of it
# (and Hydra's settings); the group options (configs/<group>/*.yaml) hold the values of their own keys.
class Role(str, enum.Enum):
    """What a key says about a run. The resume checks, resume=auto, the report's grouping and the replicas'
    records take their key lists from these roles (`keys_with`), so a new key is placed once, here."""

    experiment = "experiment"  # what is trained and measured: another value is another experiment
    seed = "seed"              # the replicate axis: the report's statistics are taken over it
    length = "length"          # how long it trains: a resume may extend it; the report keeps lengths apart
    schedule = "schedule"      # when it is measured: a resume may change it; the histories differ, so the
                               # report keeps schedules apart and resume=auto skips only a run measured alike
    cadence = "cadence"        # how often scalars are read and state is saved: the same results
    execution = "execution"    # threads, worker processes, seeds per process: the same experiment
    device = "device"          # where it runs: the same experiment, but a resume stays on its kind (RNG streams live
                               # there; another GPU is the same kind: devices.device_kind)
    command = "command"        # what the command does with the run directory (resume): not part of the run


# Roles whose keys a resume may change (resume=DIR, and resume=auto of an interrupted run) ...
RESUMABLE_ROLES = (Role.length, Role.schedule, Role.cadence, Role.execution, Role.command)
# ... and those that do not make another experiment: the report pools runs that differ only in them
# (besides the seed), and resume=auto counts a completed run as the one asked for.
REPLICATE_ROLES = (Role.cadence, Role.execution, Role.device, Role.command)


def key(default: Any, role: Role, **extra) -> Any:
    """A schema field with its (immutable) default and its role; `extra`: more metadata (a range)."""
    return field(default=default, metadata={"role": role, **extra})


def bounded(default: int, low: int, high: int | None = None, *, role: Role) -> Any:
    """An integer key with its default, its role and the range `validate` enforces: [low, high], or >= low
    when high is None."""
    return key(default, role, range=(low, high))


# A billion steps is years of GPU time for the networks here; more is a typo, not a plan.
MAX_STEPS = 10**9


E, S = Role.experiment, Role.schedule  # the two roles most keys below have


@dataclass
class EvalConfig:
    every: int = bounded(500, 1, role=S)          # steps between evaluations (metrics + pictures)
    samples: int = bounded(2500, 2, role=E)       # fresh generated samples per evaluation (VEEGAN/PacGAN protocol)
    w_samples: int = bounded(1000, 2, role=E)     # points per side for the exact empirical W1/W2 (an optimal-transport LP)
    # W1/W2 and pictures in a worker process, so training does not wait for them
    background: bool = key(True, Role.execution)
    batch: int = bounded(1000, 1, role=Role.execution)  # images: samples per forward pass in an evaluation
    grid: int = bounded(64, 1, 1024, role=E)      # images: samples in the sample-grid picture, drawn from fixed codes


class Precision(str, enum.Enum):
    none = "none"
    bf16 = "bf16"


@dataclass
class FidConfig:
    # path to pt_inception-2015-12-05-6726825d.pth; null: the cache (downloaded when online)
    weights: Optional[str] = key(None, E)  # noqa: UP045 - OmegaConf reads Optional, not `str | None`


@dataclass
class MetricsConfig:
    """Image metrics (docs/images.md); the toy protocol needs none of these."""

    inception: Any = key("auto", E)                  # true | false | auto: Inception FID and IS (auto: CIFAR-10 with the weights found)
    fid: FidConfig = field(default_factory=FidConfig)
    prdc_samples: int = bounded(5000, 6, role=E)     # precision/recall (k=3), density/coverage (k=5) on this many samples per side
    kid_subsets: int = bounded(100, 1, role=E)       # KID: mean over subsets of kid_subset_size samples
    kid_subset_size: int = bounded(1000, 2, role=E)
    swd_projections: int = bounded(128, 1, role=E)   # random directions of the sliced Wasserstein distance on features


@dataclass
class SpeedConfig:
    """Switches for CUDA (they also run on the CPU); measured by scripts/bench_images.py. Experiment keys:
    each changes the arithmetic (bf16, the kernels chosen), so runs that differ in one are not replicates."""

    amp: Precision = key(Precision.none, E)  # none | bf16: autocast the training steps to bfloat16 (no loss scaling needed)
    channels_last: bool = key(False, E)      # NHWC memory format for conv networks
    compile: bool = key(False, E)            # torch.compile G and D for the training steps
    cudnn_benchmark: bool = key(True, E)     # let cuDNN pick the fastest conv algorithms (fixed shapes)


@dataclass
class LogConfig:
    every: int = bounded(100, 1, role=Role.cadence)     # steps between scalar reads (the only host syncs in the loop)


@dataclass
class CheckpointConfig:
    every: int = bounded(1000, 1, role=Role.cadence)    # steps between periodic checkpoints


@dataclass
class EmaConfig:
    # An exponential moving average of G's parameters (ganlab/ema.py), evaluated beside G (`ema/` metrics):
    # its decay in [0, 1); null or 0: none. 0.999 is the usual value.
    decay: Optional[float] = key(None, E)  # noqa: UP045 - OmegaConf reads Optional


@dataclass
class TrainConfig:
    # Group options are free-form here; `validate` checks them against their `_target_` signatures.
    dataset: Any = key(MISSING, E)
    model: Any = key(MISSING, E)
    optim: Any = key(MISSING, E)
    loss: Any = key(MISSING, E)
    remedy: Any = key(MISSING, E)
    seed: int = bounded(0, 0, 2**32 - 1, role=Role.seed)
    # Seeds seed..seed+replicas-1 trained together in one process, one vectorised step over all of them
    # (ganlab/replicas.py); each writes its own run directory (recording replicas=1). 1: one run, the plain loop.
    replicas: int = bounded(1, 1, role=Role.execution)
    steps: int = bounded(10000, 1, MAX_STEPS, role=Role.length)
    batch_size: int = bounded(256, 1, role=E)
    # auto | cpu | cuda | cuda:N | mps: a string, checked against this machine's devices by validate
    # (ganlab/devices.py, the one check of every command's device)
    device: str = key("auto", Role.device)
    # torch intra-op threads on CPU: auto (the cores the job holds, less one for its evaluation worker; a job of a
    # local parallel sweep holds its share), 0 (torch's default) or a count; checked by validate (ganlab/threads.py)
    cpu_threads: Any = key("auto", Role.execution)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    resume: Optional[str] = key(None, Role.command)  # noqa: UP045 - OmegaConf reads Optional; a run dir or checkpoint to continue
    resume_force: bool = key(False, Role.command)     # resume even when the config differs from the checkpoint's
    # The metric a run returns to a sweeper that optimises (hydra/sweeper=optuna; ganlab/objective.py); null:
    # none. What the command hands back, not part of the run.
    objective: Optional[str] = key(None, Role.command)  # noqa: UP045 - OmegaConf reads Optional


@functools.cache
def key_roles(schema: type | None = None, prefix: str = "") -> dict[str, Role]:
    """Every key of the schema (a group, `dataset`, counts as one key: its options share its role) with its
    role. A field that is neither a section (a dataclass) nor given a role is a bug: it raises TypeError,
    so a key added without a role fails the test suite at once."""
    schema = schema or TrainConfig
    hints = typing.get_type_hints(schema)
    found: dict[str, Role] = {}
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            found |= key_roles(hints[f.name], f"{prefix}{f.name}.")
        elif isinstance(f.metadata.get("role"), Role):
            found[prefix + f.name] = f.metadata["role"]
        else:
            raise TypeError(f"schema key {prefix}{f.name} has no role: declare it with key(...) or bounded(..., role=...)")
    return found


def keys_with(*roles: Role) -> tuple[str, ...]:
    """The schema's keys with any of these roles, dotted (a group's name covers its options)."""
    return tuple(k for k, role in key_roles().items() if role in roles)


def role_of(dotted: str) -> Role:
    """The role of a dotted key of a resolved config (`remedy.unrolled.k` has its group's); a key the schema
    does not hold (one a newer or older ganlab wrote) counts as experiment: never silently pooled."""
    roles = key_roles()
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in roles:
            return roles[".".join(parts[:n])]
    return Role.experiment


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


# Config keys added after runs were made, with the value that does what those runs did: a saved config
# without such a key matches a current one that has this value (checkpoint.differing_keys, the report's
# grouping). A stacked run from before `dataset.classes` existed labelled its triples by their mode.
ADDED_KEYS = {"dataset.classes": "mode", "ema.decay": None, "optim.schedule": "none", "optim.warmup": 0,
              "loss.r1_gamma": 0.0, "loss.r2_gamma": 0.0, "objective": None,
              "optim.g.fused": None, "optim.d.fused": None}  # fused Adam: the default since 2026-12-07


def remedy_label(remedies: Any) -> str:
    """`pacgan+spectral_norm`: the chosen remedies' names (the keys of `cfg.remedy`), for run
    directories and reports."""
    return "+".join(str(name) for name in remedies)


# Run directories are named by `${remedy_label:${remedy}}`: a list choice (`remedy=[a,b]`) is not
# recorded in Hydra's runtime choices, so the name is derived from the composed config.
OmegaConf.register_new_resolver("remedy_label", remedy_label, replace=True)

def _ranges(schema: type, prefix: str = "") -> dict[str, tuple[int, int | None]]:
    """key -> (smallest, largest or None) allowed integer, from the `bounded` fields of `schema`."""
    found = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if "range" in f.metadata:
            found[prefix + f.name] = f.metadata["range"]
        elif dataclasses.is_dataclass(hints[f.name]):
            found |= _ranges(hints[f.name], f"{prefix}{f.name}.")
    return found


# Caps on the sizes the group options set, like MAX_STEPS: far above any real use (2-D MLPs have 2-4 hidden layers
# of 128-512 units, image networks 64-1024 channels, latent codes 2-512 values, mixtures 8-1000 modes), so that what
# they refuse is a typo. Without them, model.g.depth=100000 spent 110 s building its layers on the meta device for
# the memory estimate before refusing, and 10**9 never ended (RSS growing 11 MB/s: `make fuzz` reached 22 GB);
# a width or latent size of 2**62 overflowed the tensors' int64 sizes (a traceback). At these caps the estimate
# takes seconds (measured on this loaded 2-core machine: at most 6 s of CPU, spectral_norm's 10 power iterations
# on a D of 64 layers; 256 layers took 12 s with one iteration) and every size fits int64; ganlab/memory.py bounds
# the products of these (remedy.madgan.k generators of full depth); the memory check refuses the widths and modes
# a machine cannot hold (model.g.width=1000000 is 4 TB of weights) with its estimate.
MAX_DEPTH = 64             # hidden layers of an MLP (model.g.depth, model.d.depth, model.encoder.depth)
MAX_WIDTH = 10**6          # units or channels of a layer (model.*.width)
MAX_LATENT = 10**8         # model.latent_dim
MAX_MODES = 10**10         # dataset.modes; dataset.side (a grid of side**2 modes) at most 10**5
MAX_GENERATORS = 256       # remedy.madgan.k: each a copy of G's last layer (or of all of G)
# remedy.spectral_norm.power_iterations: each of D's forward passes repeats them per layer (the estimate's too: 1,000
# took 21 s there); SN-GAN and PyTorch use 1.
MAX_POWER_ITERATIONS = 10
# Keys that a group's options set (the schema leaves the groups free-form): their ranges. Every option has these ...
GROUP_RANGES = {"model.latent_dim": (1, MAX_LATENT)}
# ... and these only some options have (dcgan has no depth, ring no side): checked where the composed config has them.
OPTION_RANGES = {**{f"model.{net}.depth": (1, MAX_DEPTH) for net in ("g", "d", "encoder")},
                 **{f"model.{net}.width": (1, MAX_WIDTH) for net in ("g", "d", "encoder")},
                 "dataset.modes": (1, MAX_MODES), "dataset.side": (1, 10**5), "remedy.madgan.k": (2, MAX_GENERATORS),
                 "remedy.spectral_norm.power_iterations": (1, MAX_POWER_ITERATIONS)}
_RANGES = {**_ranges(TrainConfig), **GROUP_RANGES}
W_SAMPLES_PROTOCOL = 1000  # the exact W1 of the protocol uses n >= 1,000 points per side
_warned_w_samples: set[int] = set()


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key. Run before any work starts."""
    absent = object()
    ranges = [*_RANGES.items(), *((k, r) for k, r in OPTION_RANGES.items()
                                  if OmegaConf.select(cfg, k, default=absent) is not absent)]
    for key, (low, high) in ranges:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"{key}={value} is out of range: it must be an integer {bounds}")
    if cfg.eval.w_samples < W_SAMPLES_PROTOCOL and cfg.eval.w_samples not in _warned_w_samples:
        _warned_w_samples.add(cfg.eval.w_samples)  # once per process: validate runs for every job and check
        log.warning("eval.w_samples=%d is below the protocol's %d: W1/W2 are biased upward",
                    cfg.eval.w_samples, W_SAMPLES_PROTOCOL)
    if cfg.eval.w_samples > cfg.eval.samples:
        raise ConfigError(f"eval.w_samples={cfg.eval.w_samples} must be <= eval.samples={cfg.eval.samples}")
    _check_numbers(cfg, "")
    for net in ("g", "d"):
        lr = OmegaConf.select(cfg, f"optim.{net}.lr")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            raise ConfigError(f"optim.{net}.lr={lr!r}: expected a number > 0")
        if lr <= 0:
            raise ConfigError(f"optim.{net}.lr={lr} is out of range: it must be a number > 0")
        if lr < MIN_LR:
            raise ConfigError(f"optim.{net}.lr={lr:g} is below {MIN_LR:g}: each step would change the weights by "
                              "about the rate, far below float32's resolution of them, so the weights would never "
                              "move; give a learning rate like the configs' 5e-5 to 1e-3")
        betas = OmegaConf.select(cfg, f"optim.{net}.betas")
        # Absent (RMSprop takes none) passes; given as null it would reach Adam as None ("'NoneType' object is not
        # subscriptable", a line naming optim.g but not its betas).
        given = "betas" in (OmegaConf.select(cfg, f"optim.{net}") or {})
        if given and (not isinstance(betas, ListConfig) or len(betas) != 2 or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"optim.{net}.betas={_shown(betas)}: expected two numbers in [0, 1), "
                              "e.g. optim.{net}.betas=[0.5,0.999]".replace("{net}", net))
    if cfg.metrics.inception not in (True, False, "auto"):
        raise ConfigError(f"metrics.inception={cfg.metrics.inception!r}: choose true, false or auto")
    from ganlab import ema, schedule, threads  # the loop's averaging, learning-rate schedule and threads check their keys

    schedule.settings(cfg)
    ema.decay_of(cfg)
    resolve_device(cfg.device)
    threads.check(cfg.cpu_threads)
    for group in GROUPS:
        _check_targets(cfg[group], group)
    dataset = cfg.get("dataset")
    if isinstance(dataset, DictConfig) and "root" in dataset:  # a dataset that reads files (ring and grid: none)
        check_data_root(dataset.root)
    from ganlab import objective  # a registered metric with a better side, or null

    objective.check(OmegaConf.select(cfg, "objective"))


def check_data_root(root: Any, key: str = "dataset.root") -> None:
    """A `dataset.root` that is given is an existing directory. Else a typo would be passed over without
    a word: the files are looked up in read-only system copies too (Debian's /usr/share/datasets/...),
    so a run would train on those with the root ignored (after training a missing classifier, for
    minutes). Never created here. `ganlab classifier dataset.root=...` checks its value here too.
    Unset, the root is $GANLAB_DATA when that is set: checked the same way (a typo there was passed over too)."""
    from ganlab.data.files import data_root  # the stdlib only: no torch

    if root is None or root in ("", "null"):
        env = os.environ.get("GANLAB_DATA")
        if env and not Path(env).expanduser().is_dir():
            problem = "is a file, not a directory" if Path(env).expanduser().exists() else "does not exist"
            raise ConfigError(f"$GANLAB_DATA={env} {problem}: set it to the folder that holds the data (its files "
                              "are read from $GANLAB_DATA/<dataset>/), or unset it to use ~/.cache/ganlab/data")
        return
    if not isinstance(root, str):  # the type check says it
        return

    path = Path(root).expanduser()
    if path.is_dir():
        return
    default = (f"$GANLAB_DATA={os.environ['GANLAB_DATA']}" if os.environ.get("GANLAB_DATA")
               else str(data_root(None)))
    problem = "is a file, not a directory" if path.exists() else "does not exist"
    raise ConfigError(f"{key}={root} {problem}: give the folder that holds the data (its files are read from "
                      f"ROOT/<dataset>/), or leave {key} out to use {default}")


FLOAT32_MAX = 3.4028234663852886e38
# torch.finfo(torch.float32).tiny, the smallest normal float32 (bfloat16's too): a positive value below it
# is 0 or a subnormal (a few bits of precision) in what the networks compute in.
FLOAT32_TINY = 1.1754943508222875e-38
INT64_MAX = 2**63 - 1
# The smallest learning rate a run accepts. Adam's and RMSprop's step is about lr per weight whatever the gradient's
# scale (the update is normalized by the gradient's running RMS), and float32 drops a change below half the spacing
# of the weight (2**-24 |w| = 6e-8 |w|): only weights within lr / 6e-8 of 0 move. The networks' weights start at
# |w| ~ 1e-3 to 1 (PyTorch's init, +-1/sqrt(fan_in), fan-ins up to MAX_WIDTH), so below lr ~ 6e-11 almost none
# moves and the run "completes" unchanged (lr=1e-30 did). 1e-12 leaves a factor of 60 below that, so no run that
# learns is refused. Measured on a 20-step debug=tiny run (67,203 weights): 0 move at lr=1e-30 and 1e-15, 1 at
# 1e-13, 31 at 1.5e-12 (tests/test_bad_input.py), 1,914 at 1e-10; the shipped configs use 5e-5 to 1e-3. SGD's step
# is lr x gradient: at 1e-12 it needs |g| > 6e4 |w| to move w.
MIN_LR = 1e-12


def _shown(value: Any) -> str:
    return str(OmegaConf.to_container(value)) if isinstance(value, (DictConfig, ListConfig)) else repr(value)


def _check_numbers(node: Any, path: str) -> None:
    """Every number in the config is finite and fits what torch computes in: a non-finite value
    (inf, nan, 1e400) or one beyond float32 (a learning rate of 1e39) would only surface as a
    diverged or crashed run, after the run directory was written; a positive one below float32's
    smallest normal number (a learning rate or a noise std of 1e-50) is 0 there, and the run would
    "complete" having done nothing."""
    if isinstance(node, (DictConfig, ListConfig)):
        items = node.items() if isinstance(node, DictConfig) else enumerate(node)
        for key, value in items:
            _check_numbers(value, f"{path}.{key}" if path and isinstance(key, str) else
                           f"{path}[{key}]" if path else str(key))
        return
    if isinstance(node, bool):
        return
    if isinstance(node, float):
        if not math.isfinite(node):
            raise ConfigError(f"{path}={node}: expected a finite number")
        if abs(node) > FLOAT32_MAX:
            raise ConfigError(f"{path}={node:g} is beyond float32's range (±3.4e38), which the networks compute in")
        if 0 < node < FLOAT32_TINY:  # lr=1e-50 "completes" with weights that never moved
            if path.endswith(".lr"):
                why, fix = ("the rate is 0 (or subnormal) there, so the weights would never move",
                            "a learning rate like the configs' 5e-5 to 1e-3")
            else:
                why, fix = ("it is 0 (or subnormal) there, so it would silently do nothing",
                            f"0 (where allowed) or a value >= {FLOAT32_TINY:.3g}")
            raise ConfigError(f"{path}={node:g} is below float32's smallest normal number ({FLOAT32_TINY:.3g}), which "
                              f"the networks compute in: {why}; give {fix}")
    elif isinstance(node, int) and abs(node) > INT64_MAX:
        raise ConfigError(f"{path}={node} is too large for a 64-bit integer")


def resolve_device(name):
    """The device a run trains on: ganlab/devices.py's one check (auto, cpu, cuda, cuda:N, mps), ConfigError
    naming `device=` otherwise; device=cuda without CUDA is an error, not a fallback."""
    from ganlab.devices import resolve_device as resolve

    return resolve(name, "device=")


def _check_targets(node: Any, path: str) -> None:
    """Check every `_target_` node under `node`: known keys, values of the annotated types."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_targets(item, f"{path}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        _check_call(node, path)
    for key in node:
        _check_targets(node[key], f"{path}.{key}")


def _check_call(node: DictConfig, path: str) -> None:
    try:
        target = get_object(node._target_)
    except Exception:
        raise ConfigError(f"{path}._target_={node._target_!r} cannot be imported; check the spelling") from None
    signature = inspect.signature(target)
    params = signature.parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # third-party targets (torch.optim) may have unresolvable hints
        hints = {}
    for key in node:
        if key.startswith("_"):
            continue
        if key not in params:
            if takes_kwargs:
                continue
            allowed = ", ".join(k for k, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and k != "self")
            raise ConfigError(f"{path}.{key}: unknown key for {node._target_} (remove it with ~{path}.{key}); it takes: {allowed}")
        expected = hints.get(key)
        if expected is not None:
            problem = _type_problem(node[key], expected)
            if problem:
                raise ConfigError(f"{path}.{key}={node[key]!r}: {problem}")


def _type_problem(value: Any, expected: Any) -> str | None:
    """None if `value` fits the annotation; else what was expected. Unknown annotations pass."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):  # e.g. `int | None`: fits if it fits one member
        members = typing.get_args(expected)
        if value is None:
            return None if type(None) in members else "must not be null"
        problems = [_type_problem(value, m) for m in members if m is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        choices = typing.get_args(expected)
        return None if value in choices else "choose one of " + ", ".join(map(str, choices))
    if expected is bool:
        return None if isinstance(value, bool) else "expected true or false"
    if expected is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "expected an integer"
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "expected a number"
    if expected is str:
        return None if isinstance(value, str) else "expected a string"
    return None


_KINDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def explain_compose_error(exc: Exception, overrides: list[str], config_dir: str | Path | None = None) -> str:
    """Turn Hydra's multi-line composition error into one line naming the key and the fix."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        return _unknown_option(exc, overrides, config_dir)
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
    text = str(exc)
    if "Could not override" in text or "not in struct" in text:
        key = text.split("'")[1] if "'" in text else "?"
        if "/" in key and (choices := options(key, config_dir)):  # a group the defaults do not hold: optim/paper
            value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "NAME")
            return (f"{key} is not in the default config, so it is added, not overridden: +{key}={value} "
                    f"({', '.join(choices)})")
        parent, _, _ = key.rpartition(".")
        return f"unknown key '{key}'; {_known_keys(parent, overrides, config_dir)}"
    if cause is not None:
        key = getattr(cause, "full_key", None) or "?"
        reason = str(cause).splitlines()[0]
        kind = reason.rpartition("could not be converted to ")[2]
        if kind in _KINDS and "Value '" in reason:  # OmegaConf's "Value 'x' of type 'str' could not be ..."
            value = reason.split("Value '", 1)[1].split("' of type", 1)[0]
            hint = _integer_hint(key, value, kind)
            return f"bad value for '{key}': {_as_typed(key, value, text)} is not {_KINDS[kind]}{hint}"
        return f"bad value for '{key}': {reason}"
    return text.splitlines()[0] if text else type(exc).__name__


def _as_typed(key: str, value: str, text: str) -> str:
    """`key=value` as the user typed it: Hydra's "Error merging override steps=1e3" holds the override,
    where OmegaConf's message has the value it parsed (1e3 as '1000.0'). A word stays quoted
    (steps='abc'); a number is shown as it was written."""
    typed = value
    prefix = "Error merging override "
    if text.startswith(prefix):
        name, sep, written = text[len(prefix):].splitlines()[0].partition("=")
        if sep and name.lstrip("+~") == key:
            typed = written
    try:
        float(typed)
    except ValueError:
        return f"{key}={typed!r}"
    return f"{key}={typed}"


def _integer_hint(key: str, value: str, kind: str) -> str:
    """For an integer key given a whole number in float form (steps=1e3): the integer to write."""
    try:
        number = float(value)
    except ValueError:
        return ""
    if kind != "Integer" or not math.isfinite(number) or not number.is_integer():
        return ""
    return f"; write {key}={int(number)}"


def _unknown_option(exc: MissingConfigException, overrides: list[str], config_dir: str | Path | None) -> str:
    """"unknown option GROUP=OPTION; choose one of: ..." with the options of the folder the option was looked
    up in: `optim=paper/nope` is looked up in optim/paper/, whose options (paper/dragan, ...) are listed, as
    the user writes them; Hydra's own list is the top group's (optim's adam, rmsprop)."""
    missing = exc.missing_cfg_file
    folder, _, option = missing.rpartition("/")
    group, shown = folder, option  # as named in a defaults list: optim/paper=nope
    for line in overrides:  # as the user named it: optim=paper/nope
        key, sep, value = line.partition("=")
        name = key.lstrip("+~").split("@", 1)[0]
        if sep and f"{name}/{value}" == missing:
            group, shown = name, value
    subfolder = shown.rpartition("/")[0]
    try:
        found = options(folder, config_dir)
    except Exception:  # noqa: BLE001 - only an error message's list: never a second error
        found = []
    if found:
        choices = [f"{subfolder}/{c}" if subfolder else c for c in found]
    else:  # a folder that does not exist (optim=nope/x): the top group's options, as Hydra lists them
        choices = sorted(exc.options or [])
    return f"unknown option {group}={shown}; choose one of: {', '.join(choices)}"


def _known_keys(parent: str, overrides: list[str] = (), config_dir: str | Path | None = None) -> str:
    """The keys that exist at `parent` in the config the other overrides compose, for error messages."""
    others = [o for o in overrides if not o.lstrip("+~").startswith(f"{parent}.") and not o.startswith("hydra")]
    try:
        cfg = compose_config(others, config_dir)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            keys = [k for k in node if not k.startswith("_")]
            if not keys:
                return f"'{parent}' takes no options"
            return (f"'{parent}' has: " if parent else "the top-level keys are: ") + ", ".join(keys)
    except Exception:  # noqa: BLE001 - only an error message's hint: never a second error
        pass
    return "see `ganlab train --cfg job` for the keys"


def _search_path(config_dir: str | Path | None) -> list[str]:
    """The override that adds `config_dir` to Hydra's search path, after the package's configs:
    what `ganlab train --config-dir DIR` (Hydra's own option) does for the job itself."""
    if config_dir is None:
        return []
    path = Path(config_dir).resolve()
    if not path.is_dir():
        raise ConfigError(f"--config-dir {config_dir}: no such directory")
    quoted = str(path).replace("\\", "\\\\").replace("'", "\\'")
    return [f"hydra.searchpath=['file://{quoted}']"]


def compose_config(overrides: list[str] = (), config_dir: str | Path | None = None,
                   return_hydra_config: bool = False) -> DictConfig:
    """The train config that `ganlab train [--config-dir DIR] OVERRIDES` composes, unvalidated
    (Hydra's errors are raised as they are; `compose_checked` turns them into one line).

    `config_dir`: a folder of extra config files, searched after the package's configs: a YAML
    there adds an option to its group (e.g. DIR/remedy/mine.yaml: remedy=mine)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        return compose(CONFIG_NAME, overrides=[*overrides, *_search_path(config_dir)],
                       return_hydra_config=return_hydra_config)


def options(group: str, config_dir: str | Path | None = None) -> list[str]:
    """The options of config group `group` (`remedy` -> drs, ebgan, ...), sorted: the YAMLs Hydra
    finds for it, in the package's configs and in `config_dir`. Nothing keeps a list by hand."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return sorted(loader.get_group_options(group, ObjectType.CONFIG, config_name=CONFIG_NAME,
                                               overrides=_search_path(config_dir)))


def compose_checked(overrides: list[str], config_dir: str | Path | None = None) -> DictConfig:
    """Compose the train config for one job's overrides and validate it; raise ConfigError."""
    try:
        cfg = compose_config(overrides, config_dir)
    except (ConfigCompositionException, MissingConfigException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(explain_compose_error(exc, overrides, config_dir)) from None
    try:
        # Resolve every interpolation now: `seed=${oops}` must fail here, not inside a running job.
        OmegaConf.to_container(cfg, resolve=True)
        validate(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"bad value for '{key}': {str(exc).splitlines()[0]}") from None
    return cfg
