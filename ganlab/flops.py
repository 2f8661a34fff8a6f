"""The compute and capacity of a config: the matrix-product FLOPs of one training step and the trainable
parameters of each side, measured on the experiment that `build` makes from the config.

    from ganlab.flops import step_cost, flops_for_run_dir
    cost = step_cost(compose_config(["experiment=stacked_setup", "remedy=multiscale"]))
    cost.flops, cost.gflop, cost.d_params, cost.networks
    flops_for_run_dir("outputs/.../0_ring_nsgan_none_s0").gflop  # a results table's "GFLOP per step"

What is counted: one step of the training loop, as `ganlab.step.one_step` takes it: n_critic D steps,
then the G step (`d_step`, `g_step`), on the CPU, under torch's FlopCounterMode. It counts matrix
products and convolutions, forward and backward, higher-order gradients included (a gradient penalty,
unrolled's replays): Linear layers (addmm/mm), conv and transposed conv, bmm/baddbmm (einsum),
attention. One multiply-add is 2 FLOPs: a Linear layer of `i` inputs and `o` outputs on a batch of `b`
does 2*b*i*o forward, and as much again for each gradient its backward computes (the input's, unless
nothing upstream needs it: a D step's data and G's codes; the weights', unless they are held fixed: D's
in the G step). Not counted: elementwise work (activations, norms, losses, the optimizer's update),
reductions, pooling, cdist (minibatch_disc's n^2 L1 term), sampling. The evaluation is not part of a
step. Nothing depends on the data's values, so the real batches are random tensors of the dataset's
shape: the dataset object is constructed as `build` does (an image dataset locates its files, as
`ganlab train` would) but never read.

Parameters: `g_params` / `d_params` are the trainable parameters the G phase / the D phase updates (the
parameters of their optimizers: G or D with the remedy's extra networks of that side, e.g. every D of
multiscale, mrgan's encoder); `networks` gives each network's own count.

Nothing outside is changed: the step runs on freshly built networks on the CPU, seeded inside a fork
of torch's RNG (and with Python's and NumPy's RNG states restored), so a caller's random streams
continue as before; no run directory is read or written but the one `flops_for_run_dir` reads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from ganlab.errors import GanlabError

# The keys that change what a step computes (everything `build` and `one_step` read): the cache key.
# seed, evaluation, logging, checkpoints, device and speed switches do not change the count.
_STEP_KEYS = ("dataset", "model", "optim", "loss", "remedy", "batch_size", "steps")


@dataclass(frozen=True)
class StepCost:
    """One training step's matrix-product FLOPs and the trainable parameters of its networks."""

    flops: int            # one step: the D phase and the G phase
    d_flops: int          # the D phase: n_critic D steps
    g_flops: int          # the G phase: one G step
    n_critic: int         # D steps per step (the loss's)
    batch_size: int
    g_params: int         # trainable parameters the G phase updates (G and the remedy's g-side networks)
    d_params: int         # trainable parameters the D phase updates (D, every D of multiscale, d-side networks)
    networks: dict[str, int] = field(default_factory=dict)  # network name (G, D, a remedy's) -> trainable parameters

    @property
    def gflop(self) -> float:
        """GFLOP per step (1e9 FLOPs)."""
        return self.flops / 1e9

    @property
    def mflop(self) -> float:
        return self.flops / 1e6

    def to_dict(self) -> dict:
        return {"flops": self.flops, "d_flops": self.d_flops, "g_flops": self.g_flops, "n_critic": self.n_critic,
                "batch_size": self.batch_size, "g_params": self.g_params, "d_params": self.d_params,
                "networks": dict(self.networks)}


class _RandomBatches:
    """The dataset as the step sees it, with random batches of its shape (and classes) instead of its
    samples: FLOPs depend on shapes only, and the files are never read. Everything else (shape,
    n_classes, centers) is the dataset's own."""

    def __init__(self, data):
        self._data = data

    def __getattr__(self, name):
        return getattr(self._data, name)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, *self._data.shape, generator=generator)

    def sample_with_classes(self, n: int, generator: torch.Generator | None = None):
        classes = torch.randint(0, int(self._data.n_classes), (n,), generator=generator)
        return self.sample(n, generator), classes

    def sample_with_labels(self, n: int, generator: torch.Generator | None = None):
        return self.sample_with_classes(n, generator)


def as_config(cfg: DictConfig | Mapping | str | Path) -> DictConfig:
    """A config from a DictConfig (as a run gets it), a plain mapping (a summary.json's `config`) or a
    YAML file (a run's `.hydra/config.yaml`)."""
    if isinstance(cfg, DictConfig):
        return cfg
    if isinstance(cfg, Mapping):
        return OmegaConf.create(dict(cfg))
    path = Path(cfg)
    try:
        loaded = OmegaConf.load(path)
    except (OSError, ValueError) as exc:
        raise GanlabError(f"cannot read a config from {path}: {exc}") from None
    if not isinstance(loaded, DictConfig):
        raise GanlabError(f"{path} holds no config mapping")
    return loaded


def step_cost(cfg: DictConfig | Mapping | str | Path) -> StepCost:
    """The FLOPs of one training step of `cfg` and its networks' trainable parameters (see the module's
    docstring for what is counted). Builds the experiment on the CPU and takes one step; a few seconds
    for the Stacked DCGAN setup, well under one for the 2-D ones. Raises ConfigError as `build` does."""
    cfg = as_config(cfg)
    missing = [k for k in _STEP_KEYS if k not in cfg]
    if missing:  # a summary written before summaries carried the whole config, a partial mapping
        raise GanlabError(f"the config has no {', '.join(missing)}: not a whole training config")
    return _cached(_key(cfg), cfg)


def step_flops(cfg: DictConfig | Mapping | str | Path) -> int:
    """The matrix-product FLOPs of one training step of `cfg` (`step_cost(cfg).flops`)."""
    return step_cost(cfg).flops


def run_config(run_dir: str | Path) -> DictConfig:
    """The config a run directory's run trained with: Hydra's record (`.hydra_resume/config.yaml` of a
    resumed run, else `.hydra/config.yaml`), else the resolved config in its summary.json (a run started
    from Python, a replica of replicas=N)."""
    run_dir = Path(run_dir)
    for record in (run_dir / ".hydra_resume" / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if record.is_file():
            return as_config(record)
    summary = run_dir / "summary.json"
    try:
        config = json.loads(summary.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        config = None
    if not isinstance(config, dict):
        raise GanlabError(f"{run_dir}: no .hydra/config.yaml and no config in summary.json: is it a ganlab run?")
    return as_config(config)


def flops_for_run_dir(run_dir: str | Path) -> StepCost:
    """`step_cost` of a run directory's config (`run_config`): the run directory is only read. Runs that
    differ in their seed alone share one measurement (cached in this process)."""
    return step_cost(run_config(run_dir))


# --- measuring -----------------------------------------------------------------------------------------------

_CACHE: dict[str, StepCost] = {}


def _key(cfg: DictConfig) -> str:
    node = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in _STEP_KEYS if k in cfg}
    return json.dumps(node, sort_keys=True, default=str)


def _cached(key: str, cfg: DictConfig) -> StepCost:
    if key not in _CACHE:
        _CACHE[key] = _measure(cfg)
    return _CACHE[key]


def _trainable(params) -> int:
    seen: dict[int, torch.nn.Parameter] = {}
    for p in params:
        if p.requires_grad:
            seen[id(p)] = p
    return sum(p.numel() for p in seen.values())


def _side_params(optimizers) -> int:
    return _trainable(p for opt in optimizers for group in opt.param_groups for p in group["params"])


class _GlobalOnly:
    """FlopCounterMode's module tracker, tracking nothing: its backward hooks break torch.func.grad
    (wgan_gp's and dragan's gradient penalties: "A leaf node was passed to _will_engine_execute_node"),
    and the per-module breakdown is not wanted here: every count goes to the total ("Global")."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def counter() -> FlopCounterMode:
    """A FlopCounterMode that counts the total only (`get_total_flops()`), and works with torch.func."""
    mode = FlopCounterMode(display=False)
    mode.mod_tracker = _GlobalOnly()
    return mode


def _measure(cfg: DictConfig) -> StepCost:
    from ganlab.gan import build
    from ganlab.step import d_step, g_step

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's torch stream continues as if nothing ran
            torch.manual_seed(0)
            exp = build(cfg, torch.device("cpu"))
            exp.data = _RandomBatches(exp.data)
            exp.remedy.begin_step(1)
            n = int(cfg.batch_size)
            # ganlab.step.one_step's order, with the D phase and the G phase counted apart
            # (tests/test_flops.py checks the sum against one_step's count).
            with counter() as d_counter:
                for _ in range(exp.loss.n_critic):
                    real = exp.remedy.real_batch(exp.data, n)
                    d_step(exp, real, torch.randn(n, exp.latent_dim))
            with counter() as g_counter:
                g_step(exp, real, torch.randn(n, exp.latent_dim))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    d_flops, g_flops = int(d_counter.get_total_flops()), int(g_counter.get_total_flops())
    return StepCost(flops=d_flops + g_flops, d_flops=d_flops, g_flops=g_flops, n_critic=int(exp.loss.n_critic),
                    batch_size=n, g_params=_side_params(exp.g_opts), d_params=_side_params(exp.d_opts),
                    networks={name: _trainable(net.parameters()) for name, net in exp.networks().items()})
