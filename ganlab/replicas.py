"""`replicas=N`: the seeds seed..seed+N-1 of one config trained together, in one process.

Each replica is first built exactly as a separate run of its seed builds (ganlab/train.py `set_up`:
`seed_everything(seed + k)`, the experiment, the reference rows), so its initial weights are that
run's. `Replicas` then trains them as one:
- every parameter and buffer of G and of D is stacked along a new leading axis (replica k's at
  index k), and one optimizer of the config's class steps the stacked tensors. The optimizers
  allowed (ELEMENTWISE) update each element from its own gradient and state and a step count that
  all replicas share, so this is N separate optimizers (tests/test_replicas.py checks each);
- the remedy's own `d_loss`/`g_loss` hooks run on replica 0's G and D, reparametrised with each
  replica's slice by `torch.func.functional_call`, for all replicas at once under `torch.func.vmap`.
  Replica k's loss depends on its slice alone, so the gradient of the sum is each replica's own.
  One remedy object (replica 0's) serves every replica in the step, hence the refusal of remedies
  that keep state between hooks; evaluations use each replica's own remedy object;
- replica k draws its real batches and codes from a `torch.Generator` of its own, holding the state
  the global RNG has in the separate run at its first step, and in the same order, so it sees that
  run's batches. Randomness inside a step (WGAN-GP's interpolation, instance noise) comes from the
  global RNG, different for every replica (vmap's randomness="different"), seeded apart from every
  replica's stream: such runs agree with separate ones in distribution, not bit for bit.

Before an evaluation or a checkpoint, replica k's slice (and its optimizer state) is copied back into
its own plain GAN, and the loop's own evaluation, summary and checkpoint code takes over. Its
checkpoint holds its own stream as the training RNG (so it also resumes as a run of its own) and,
under "vmap", the in-step stream, so that the group resumes bit-identically.
What cannot train this way is refused at start-up in one line (`check`): a remedy's
`replica_refusal`, extra networks, optimizers outside ELEMENTWISE, compile and channels_last.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ganlab import checkpoint
from ganlab.config import Role, keys_with, remedy_label
from ganlab.ema import GeneratorAverage
from ganlab.errors import ConfigError
from ganlab.remedies.stack import RemedyStack
from ganlab.speed import Speed

# Optimizers whose update of a parameter element reads only that element's gradient and state, the
# hyperparameters and the step count: one of them over the stacked tensors equals N separate ones.
# (Not so: LBFGS's line search, and optimizers that factor or orthogonalise whole matrices.)
ELEMENTWISE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD, torch.optim.Adagrad,
               torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)
SEED_MAX = 2**32 - 1


# --- configs and directories --------------------------------------------------------------------------

def replica_configs(cfg: DictConfig) -> list[DictConfig]:
    """The config of each replica: the run's, with seed + k and replicas=1 (a replica is one run)."""
    if cfg.seed + cfg.replicas - 1 > SEED_MAX:
        raise ConfigError(f"seed={cfg.seed} with replicas={cfg.replicas} reaches seed {cfg.seed + cfg.replicas - 1}, "
                          f"beyond {SEED_MAX}; lower seed or replicas")
    configs = []
    for k in range(cfg.replicas):
        one = copy.deepcopy(cfg)
        one.seed, one.replicas = cfg.seed + k, 1
        configs.append(one)
    return configs


def replica_dir(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / f"seed_{seed}"


def is_replica_parent(path: Path) -> bool:
    """Whether `path` is the directory of a replicas=N run (replica runs below it, none of its own)."""
    path = Path(path)
    return (path.is_dir() and not (path / checkpoint.NAME).exists()
            and any(p.is_file() for p in path.glob(f"seed_*/{checkpoint.NAME}")))


def write_record(parent: Path, run_dir: Path, seed: int) -> None:
    """The overrides that start this replica as a run of its own (`.hydra/overrides.yaml`, what
    `ganlab train resume=REPLICA_DIR` reads), from the parent's record; nothing without one (a run
    started from Python), and an existing record is kept."""
    import yaml

    target = run_dir / ".hydra" / "overrides.yaml"
    for source in (parent / ".hydra_resume" / "overrides.yaml", parent / ".hydra" / "overrides.yaml"):
        if target.exists() or not source.is_file():
            continue
        recorded = yaml.safe_load(source.read_text()) or []
        replaced = (*keys_with(Role.seed), "replicas")  # this replica's seed, as a run of its own
        keep = [str(o) for o in recorded if str(o).split("=", 1)[0].lstrip("+~") not in replaced]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump([*keep, f"seed={seed}", "replicas=1"]))
        return


# --- what can be vectorised ------------------------------------------------------------------------------

def check(cfg: DictConfig, exp) -> None:
    """Refuse, in one line, what the vectorised step cannot train (ConfigError). `exp` is any one
    replica's GAN (they differ only in their weights)."""
    n = cfg.replicas
    remedies = exp.remedy.remedies if isinstance(exp.remedy, RemedyStack) else {remedy_label(cfg.remedy): exp.remedy}
    for name, remedy in remedies.items():
        if remedy.replica_refusal:
            raise ConfigError(f"replicas={n}: remedy {name} cannot train vectorised: {remedy.replica_refusal}; "
                              "train its seeds as separate runs (-m seed=...)")
        extras = list(remedy.extra_networks())
        if extras:
            raise ConfigError(f"replicas={n}: remedy {name} trains networks besides G and D ({', '.join(extras)}), "
                              "which the vectorised step does not stack; train its seeds as separate runs (-m seed=...)")
    for side, opt in (("g", exp.g_opt), ("d", exp.d_opt)):
        if type(opt) not in ELEMENTWISE:
            allowed = ", ".join(o.__name__ for o in ELEMENTWISE)
            raise ConfigError(f"replicas={n}: optim.{side} is {type(opt).__name__}, not known to update each parameter "
                              f"element on its own (so one optimizer over stacked replicas could differ from {n} "
                              f"separate ones); use one of {allowed}")
        if len(opt.param_groups) != 1:
            raise ConfigError(f"replicas={n}: optim.{side} has {len(opt.param_groups)} parameter groups; the vectorised "
                              "step stacks one")
    for net, module in (("G", exp.G), ("D", exp.D)):
        scalar = next((name for name, p in module.named_parameters() if p.dim() == 0), None)
        if scalar is not None:
            raise ConfigError(f"replicas={n}: {net}'s parameter {scalar} is a scalar, whose optimizer state cannot be "
                              "told from its step count when stacking; train the seeds as separate runs")
    if cfg.speed.compile or cfg.speed.channels_last:
        raise ConfigError(f"replicas={n} runs the step under torch.func.vmap, which speed.compile and "
                          "speed.channels_last do not reach; set them to false")
    if str(cfg.device).startswith("mps"):  # each replica's stream is a generator of its own: CPU or CUDA ones only
        raise ConfigError(f"replicas={n} keeps one RNG stream per replica on the CPU or CUDA, not on mps; use "
                          "device=cpu or device=cuda, or train the seeds as separate runs (-m seed=...)")


# --- RNG streams --------------------------------------------------------------------------------------------

def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def training_stream(device: torch.device) -> torch.Generator:
    """A generator holding the global RNG's present state on `device`: what a separate run draws its
    batches and codes from next."""
    stream = torch.Generator(device)
    stream.set_state(_default_generator(device).get_state())
    return stream


def seed_shared(seed: int, n: int) -> None:
    """Seed the global RNG, which the randomness inside a vectorised step draws from, apart from
    every replica's stream (they start from seeds seed..seed+n-1)."""
    torch.manual_seed(int(np.random.SeedSequence([seed, n, 0x5EED]).generate_state(1)[0]))


# --- stacking ---------------------------------------------------------------------------------------------

def stack_modules(modules: list[nn.Module]) -> nn.Module:
    """A copy of modules[0] whose parameters and buffers are the N modules' stacked (replica k's at
    index k): the optimizer's leaves, and a D that a loss's `after_d_step` (WGAN's clipping) changes
    in place like a plain one. Tied parameters stay tied."""
    stacked = copy.deepcopy(modules[0])
    fresh: dict[int, Tensor] = {}
    for kind in ("parameters", "buffers"):
        named = getattr(modules[0], f"named_{kind}")
        for name, original in named(remove_duplicate=False):
            if id(original) not in fresh:
                values = torch.stack([m.get_parameter(name) if kind == "parameters" else m.get_buffer(name)
                                      for m in modules]).detach()
                fresh[id(original)] = nn.Parameter(values) if kind == "parameters" else values
            path, _, attr = name.rpartition(".")
            setattr(stacked.get_submodule(path), attr, fresh[id(original)])  # a buffer keeps its persistence
    return stacked


def stacked_optimizer(optimizers: list[torch.optim.Optimizer], stacked: nn.Module) -> torch.optim.Optimizer:
    """One optimizer of the replicas' class and settings over the stacked parameters, with their
    states stacked (empty for a fresh run, the checkpoints' for a resumed one)."""
    cls, first = type(optimizers[0]), optimizers[0]
    accepted = inspect.signature(cls).parameters  # `defaults` may hold more (AdamW's decoupled_weight_decay)
    opt = cls(stacked.parameters(), **{k: v for k, v in first.defaults.items() if k in accepted})
    opt.param_groups[0].update({k: v for k, v in first.param_groups[0].items() if k != "params"})  # exactly its settings
    states = [o.state_dict()["state"] for o in optimizers]
    params = list(stacked.parameters())
    merged = {}
    for index in states[0]:  # copies: state_dict() hands out the optimizers' own tensors (a step count is updated in place)
        merged[index] = {key: (torch.stack([s[index][key] for s in states])
                               if torch.is_tensor(value) and value.shape == params[index].shape[1:] and value.dim() > 0
                               else value.clone() if torch.is_tensor(value) else value)
                         for key, value in states[0][index].items()}
    opt.load_state_dict({"state": merged, "param_groups": opt.state_dict()["param_groups"]})
    return opt


def _slice_state(opt: torch.optim.Optimizer, k: int) -> dict:
    """Replica k's part of a stacked optimizer's state, in the layout of a replica's own optimizer."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state = opt.state_dict()["state"]
    return {index: {key: (value[k].clone() if torch.is_tensor(value) and value.dim() > 0 and value.shape == params[index].shape
                          else value.clone() if torch.is_tensor(value) else value)
                    for key, value in entry.items()}
            for index, entry in state.items()}


def _replica_norms(module: nn.Module) -> Tensor:
    """Each replica's gradient norm over the stacked module's parameters, shape (N,)."""
    norms = [p.grad.flatten(1).norm(dim=1) for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms, dim=1), dim=1)


class Objective(nn.Module):
    """The remedy's step hook as a module of G and D, so that functional_call can swap in one
    replica's parameters for both networks at once."""

    def __init__(self, remedy, loss, G: nn.Module, D: nn.Module):
        super().__init__()
        self.G, self.D = G, D
        self.remedy, self.loss = remedy, loss  # plain attributes: neither is a module

    def forward(self, side: str, real: Tensor, z: Tensor) -> Tensor:
        hook = self.remedy.d_loss if side == "d" else self.remedy.g_loss
        return hook(self.G, self.D, self.loss, real, z)


class Replicas:
    """The experiments of N seeds, trained as one (see the module's docstring): the loop's update
    (ganlab/step.py `Update`) for replicas=N, each phase one vectorised update of every replica."""

    def __init__(self, exps: list, streams: list[torch.Generator], batch_size: int, device: torch.device,
                 speed: Speed):
        self.exps, self.streams = exps, streams
        self.batch, self.device, self.speed = batch_size, device, speed
        first = exps[0]
        self.loss, self.latent_dim, self.n_critic = first.loss, first.latent_dim, first.loss.n_critic
        self.G, self.D = stack_modules([e.G for e in exps]), stack_modules([e.D for e in exps])
        self.g_opt = stacked_optimizer([e.g_opt for e in exps], self.G)
        self.d_opt = stacked_optimizer([e.d_opt for e in exps], self.D)
        # G's moving average (ema.decay) of every replica at once: elementwise, as the optimizers
        self.ema = (None if first.ema is None else
                    GeneratorAverage(self.G, first.ema.decay, average=stack_modules([e.ema.G for e in exps])))
        # Replica 0's own modules: schedules its remedy sets on them (instance noise's std) apply to
        # every replica (all are at the same step).
        self.objective = Objective(first.remedy, first.loss, first.G, first.D)

    # --- the phases (ganlab/step.py take_step puts them in order) ------------------------------------

    def real_batch(self) -> Tensor:
        return torch.stack([e.remedy.real_batch(e.data, self.batch, generator=s) for e, s in zip(self.exps, self.streams)])

    def codes(self) -> Tensor:
        return torch.stack([torch.randn(self.batch, self.latent_dim, device=self.device, generator=s)
                            for s in self.streams])

    def d(self, real: Tensor, z: Tensor) -> Tensor:
        return self.update("d", real, z)

    def g(self, real: Tensor, z: Tensor) -> Tensor:
        return self.update("g", real, z)

    def grad_norms(self, network: str) -> Tensor:
        return _replica_norms(self.D if network == "D" else self.G)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.g_opt, self.d_opt]

    def update(self, side: str, real: Tensor, z: Tensor) -> Tensor:
        """One update of G ("g") or D ("d") in every replica; the losses, detached, shape (N,)."""
        opt, trained = (self.d_opt, "D") if side == "d" else (self.g_opt, "G")
        opt.zero_grad(set_to_none=True)
        nets = {"G": self.G, "D": self.D}
        # The other network is held fixed (no gradient is computed for it): a separate run's step
        # updates only this side too.
        params = {f"{net}.{k}": p if net == trained else p.detach()
                  for net, module in nets.items() for k, p in module.named_parameters()}
        # The stacked buffers themselves: batch norm's running statistics update in place, per replica.
        buffers = {f"{net}.{k}": b for net, module in nets.items() for k, b in module.named_buffers()}

        def one(params, buffers, real, z):
            return functional_call(self.objective, (params, buffers), (side, real, z))

        with self.speed.autocast():  # bf16 when speed.amp says so, as a separate run's step
            losses = vmap(one, randomness="different")(params, buffers, real, z)
        losses.sum().backward()
        opt.step()
        if side == "d":
            self.loss.after_d_step(self.D)
        return losses.detach().float()

    # --- back to the replicas' own experiments ----------------------------------------------------

    @torch.no_grad()
    def sync(self, k: int, optimizers: bool = False) -> None:
        """Copy replica k's slice of the stacked parameters and buffers (G's moving average's too, and, for a
        checkpoint, the optimizers' state) into its own GAN, which evaluations and checkpoints read."""
        exp = self.exps[k]
        pairs = [(self.G, exp.G), (self.D, exp.D)] + ([] if self.ema is None else [(self.ema.G, exp.ema.G)])
        for stacked, own in pairs:
            for (_, mine), (_, theirs) in zip(own.named_parameters(), stacked.named_parameters()):
                mine.copy_(theirs[k])
            for (_, mine), (_, theirs) in zip(own.named_buffers(), stacked.named_buffers()):
                mine.copy_(theirs[k])
        if optimizers:
            for stacked_opt, own_opt in ((self.g_opt, exp.g_opt), (self.d_opt, exp.d_opt)):
                own_opt.load_state_dict({"state": _slice_state(stacked_opt, k),
                                         "param_groups": own_opt.state_dict()["param_groups"]})

    def rng_state(self, k: int) -> dict:
        """Replica k's RNG states for its checkpoint: the global ones, with the training stream of its
        device replaced by the replica's own (so a resume, also as a run of its own, continues it),
        and under "vmap" the global stream the in-step randomness draws from."""
        state = checkpoint.rng_state()
        shared = {"torch": state["torch"]}
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            shared["cuda"] = state["cuda"][index]
            state["cuda"] = list(state["cuda"])
            state["cuda"][index] = self.streams[k].get_state()
        else:
            state["torch"] = self.streams[k].get_state()
        return {**state, "vmap": shared}


def restore_shared(rng: dict, device: torch.device) -> None:
    """Put back the global stream of the in-step randomness from a replica checkpoint's RNG states."""
    shared = rng.get("vmap")
    if shared is None:
        return
    torch.set_rng_state(shared["torch"])
    if "cuda" in shared and device.type == "cuda":
        _default_generator(device).set_state(shared["cuda"])


def same_step(steps: dict[str, int]) -> int:
    """The step every replica resumes from; they checkpoint together, so one step (else ConfigError)."""
    found = sorted(set(steps.values()))
    if len(found) > 1:
        shown = ", ".join(f"{name} at {step}" for name, step in steps.items())
        raise ConfigError(f"replicas resume together from one step, and their checkpoints differ ({shown}); "
                          "resume each alone with resume=REPLICA_DIR")
    return found[0] if found else 0



def expand(config: dict) -> list[dict]:
    """The runs a resolved config (a dict, as the pre-flight checks give it) makes: itself, or its
    replicas' (seed + k)."""
    n = int(config.get("replicas", 1))
    return [{**config, "seed": config["seed"] + k, "replicas": 1} for k in range(n)] if n > 1 else [config]
