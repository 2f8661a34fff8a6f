"""The GAN a run trains: its data, objective, remedy, networks and optimizers, built from the config
(`build`), seeded, and restored from a checkpoint for a resume (`restore`) or an evaluation
(`load_checkpoint`). (The configs' `experiment/` presets only choose a config; they are not this.)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ganlab import checkpoint, ema
from ganlab.config import Role, role_of
from ganlab.data.protocol import LabelledData, check, missing
from ganlab.ema import GeneratorAverage
from ganlab.errors import ConfigError, GanlabError
from ganlab.losses import Loss, check_penalty_fits
from ganlab.remedies import Remedy
from ganlab.remedies.base import NetworkFactory
from ganlab.remedies.stack import combine


@dataclass
class GAN:
    """Everything built from the config, before any step is taken (a run's code calls it `exp`)."""

    data: object
    loss: Loss
    remedy: Remedy
    G: nn.Module
    D: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    latent_dim: int
    # The remedy's extra networks (an encoder, a second D): name -> module, its optimizer, its side.
    extras: dict[str, nn.Module] = field(default_factory=dict)
    extra_opts: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    extra_sides: dict[str, str] = field(default_factory=dict)
    # The optimizers each phase steps (main first), fixed once build() has added the extras.
    d_opts: list[torch.optim.Optimizer] = field(default_factory=list)
    g_opts: list[torch.optim.Optimizer] = field(default_factory=list)
    # The D side's parameters that the G step holds fixed (no gradient), unless the remedy's G
    # objective differentiates through them (Remedy.g_loss_needs_d_gradients).
    fixed_in_g_step: list[nn.Parameter] = field(default_factory=list)
    # The moving average of G (`ema.decay`, ganlab/ema.py), or None: evaluated beside G, never trained.
    ema: GeneratorAverage | None = None

    def optimizers(self, side: str) -> list[torch.optim.Optimizer]:
        """The optimizers stepped in the D phase ("d") or the G phase ("g")."""
        main = self.d_opt if side == "d" else self.g_opt
        return [main, *(self.extra_opts[name] for name, s in self.extra_sides.items() if s == side)]

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, **self.extras}


def _instantiate(node: DictConfig, key: str, *args, **kwargs):
    """instantiate() (then, for a `_partial_` node, the call with `args`), with a bad value
    surfaced as one line naming the config key. Our targets raise ConfigError; third-party ones
    (torch.optim, nn layers) raise ValueError or TypeError, e.g. Adam with betas=[2, 0.9]."""
    try:
        made = instantiate(node, **kwargs)
        return made(*args) if args else made
    except InstantiationException as exc:
        if isinstance(exc.__cause__, GanlabError) and not isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None  # a missing or corrupt data file: its own one-line message
        if isinstance(exc.__cause__, (ConfigError, ValueError, TypeError)):
            raise ConfigError(f"{key}: {str(exc.__cause__).splitlines()[0]}") from None
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None


def _optimizer(node: DictConfig, key: str, params, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer of config node `key` over `params`. The meta device (ganlab/memory.py's estimate builds
    there) has no fused kernels: there a `fused: true` optimizer is built unfused, with the same state shapes."""
    if device.type == "meta" and OmegaConf.select(node, "fused"):
        node = OmegaConf.merge(node, {"fused": None})
    return _instantiate(node, key, params)


def build(cfg: DictConfig, device: torch.device) -> GAN:
    """Everything a run needs, from the config. The CLI also calls it on the CPU for every job of a
    sweep before the first starts, so bad values fail at once; keep construction cheap (datasets
    that read files should read them lazily)."""
    data = build_data(cfg, device)
    # cfg.remedy maps each chosen remedy's name to its config (`remedy=[pacgan,spectral_norm]`).
    remedy = combine({name: _instantiate(node, f"remedy.{name}") for name, node in cfg.remedy.items()})
    loss = _instantiate(cfg.loss, "loss")
    remedy.check(loss, cfg.batch_size)
    loss = remedy.adapt_loss(loss)
    latent_dim = cfg.model.latent_dim
    make = NetworkFactory(lambda **kw: _instantiate(cfg.model.g, "model.g", **kw),
                          lambda **kw: _instantiate(cfg.model.d, "model.d", **kw),
                          lambda **kw: _make_encoder(cfg, **kw), latent_dim, data.shape,
                          None if missing(data, LabelledData) else data.n_classes)
    G, D = remedy.build(make.G(), make.D(), make)
    check_penalty_fits(loss, D)
    G, D = G.to(device), D.to(device)
    g_opt = _optimizer(cfg.optim.g, "optim.g", G.parameters(), device)
    d_opt = _optimizer(cfg.optim.d, "optim.d", D.parameters(), device)
    exp = GAN(data, loss, remedy, G, D, g_opt, d_opt, latent_dim)
    for name, (module, side) in remedy.extra_networks().items():
        if side not in ("g", "d"):  # a programming error in a remedy, not a user's: say which
            raise ValueError(f"remedy network {name!r}: side must be 'g' or 'd', got {side!r}")
        exp.extras[name] = module.to(device)
        exp.extra_sides[name] = side
        exp.extra_opts[name] = _optimizer(cfg.optim[side], f"optim.{side}", module.parameters(), device)
    exp.d_opts, exp.g_opts = exp.optimizers("d"), exp.optimizers("g")
    if not remedy.g_loss_needs_d_gradients:
        g_side = {id(p) for opt in exp.g_opts for group in opt.param_groups for p in group["params"]}
        exp.fixed_in_g_step = [p for opt in exp.d_opts for group in opt.param_groups for p in group["params"]
                               if p.requires_grad and id(p) not in g_side]
    remedy.prepare(g_opt, d_opt, cfg.steps)
    exp.ema = ema.build(G, cfg)  # a copy of the G just built (after the remedy's build)
    return exp


def build_data(cfg: DictConfig, device: torch.device):
    """The config's dataset alone (`ganlab eval --samples FILE` scores samples against it), checked against
    the protocol its evaluator reads (ganlab/data/protocol.py): a member missing is one line, now."""
    data = _instantiate(cfg.dataset, "dataset", device=device)
    check(data)
    return data


def _make_encoder(cfg: DictConfig, **kwargs) -> nn.Module:
    node = OmegaConf.select(cfg, "model.encoder")
    if node is None:
        raise ConfigError("the chosen remedy adds an encoder, and the model config has no `encoder` entry; "
                          "add one (see ganlab/configs/model/mlp.yaml)")
    return _instantiate(node, "model.encoder", **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def auto_checkpoint(run_dir: Path) -> Path | None:
    """resume=auto: the run directory's own checkpoint, if it has one (else the run starts afresh)."""
    path = run_dir / checkpoint.NAME
    return path if path.is_file() else None


def restore(path: Path, exp: GAN, cfg: DictConfig, config: dict) -> tuple[int, dict]:
    """Load a checkpoint into a freshly built experiment for a resume: networks, optimizers and
    RNG states; return its step and the loop's bookkeeping. Refuse a checkpoint whose config differs
    in more than the resumable keys (checkpoint.RESUMABLE_KEYS), unless resume_force=true."""
    state = checkpoint.read(path)
    if "config" not in state or "rng" not in state:
        raise GanlabError(f"checkpoint {path} holds no RNG state or config (written before full-state checkpoints); "
                          "it can be evaluated (`ganlab eval`) but not resumed")
    saved_config = json.loads(state["config"])
    differ = checkpoint.differing_keys(saved_config, config)
    if differ and not cfg.resume_force:
        shown = checkpoint.shown_differences(saved_config, config, differ)
        allowed = ", ".join(k for k in checkpoint.RESUMABLE_KEYS if role_of(k) is not Role.command)
        raise ConfigError(f"resume: the config differs from the checkpoint's in {shown}; a resumed run keeps the "
                          f"config it was started with (only {allowed} may change): repeat its settings, or add "
                          "resume_force=true")
    checkpoint.load_into(state, exp, path)
    step = int(state["step"])
    if step >= cfg.steps:
        raise ConfigError(f"resume: {path} is at step {step}, and steps={cfg.steps}: nothing left to train "
                          "(raise steps to train on)")
    # trained on cuda:1, resumed on cuda:0: its GPU's RNG stream goes along (the checkpoint's tensors were read
    # onto the CPU, map_location, and load_into copied them onto the networks' device)
    checkpoint.set_rng_state(state["rng"], saved_config.get("device") if isinstance(saved_config, dict) else None,
                             next(exp.G.parameters()).device)
    return step, state["loop"]


def load_checkpoint(path: Path, exp: GAN) -> int:
    """Load a checkpoint's networks and optimizers into a freshly built experiment; return its step."""
    state = checkpoint.read(path)
    checkpoint.load_into(state, exp, path)
    return int(state["step"])
