"""Unrolled GAN (Metz et al. 2016): G's loss is taken against D after k more D updates, and G's
gradient flows back through those updates, so G is penalised for moves that D would punish next.

The k updates replay D's own optimizer (its hyper-parameters and current state, e.g. Adam's
moments) as differentiable functions of D's parameters, which are run through
`torch.func.functional_call`; D itself is then updated normally by the loop. The updates use the
G step's real batch and G(z), kept in the graph: the unrolled D parameters depend on G.

G's objective at the unrolled D: by default (`g_objective=value`) the game's value f, as Metz et
al. define the surrogate f_K(θ_G, θ_D) = f(θ_G, unroll_K(θ_D)) and as their 2-D notebook minimises
it (minus D's loss): the real-data term counts, since the unrolled D depends on G. With k = 0 this
is the minimax G step. `g_objective=loss` takes the chosen loss's own G loss on the fakes only (the
non-saturating one for nsgan), as many reimplementations do: ganlab's behaviour before 2026-11-29.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ganlab.errors import ConfigError
from ganlab.losses import Loss, MinimaxGAN, Wasserstein
from ganlab.remedies.base import Remedy

Params = dict[str, Tensor]


class OptimizerReplay:
    """The update rule of D's torch optimizer (Adam, AdamW, RMSprop or SGD) as a pure function:
    `params, state = replay.step(params, grads, state)`, starting from `replay.start()`, a detached
    copy of the optimizer's current state. Nothing of the real optimizer is changed."""

    SUPPORTED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD)

    def __init__(self, opt: torch.optim.Optimizer):
        if type(opt) not in self.SUPPORTED:
            raise ConfigError(f"unrolled replays D's optimizer; {type(opt).__name__} is not supported "
                              f"(use {', '.join(c.__name__ for c in self.SUPPORTED)})")
        self.opt = opt
        self.group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
        self.hyper: dict[str, dict] = {}
        for h in opt.param_groups:
            unsupported = [k for k in ("amsgrad", "centered", "nesterov", "maximize") if h.get(k)]
            if isinstance(opt, torch.optim.RMSprop) and h.get("momentum"):
                unsupported.append("momentum")
            if unsupported:
                raise ConfigError(f"unrolled cannot replay {type(opt).__name__} with {', '.join(unsupported)}")

    def start(self, named: dict[str, nn.Parameter]) -> dict[str, dict]:
        """The optimizer's state for D's parameters, by the names the unrolled steps use."""
        self.hyper = {name: self.group_of[id(p)] for name, p in named.items()}
        state = {}
        for name, p in named.items():
            s = self.opt.state.get(p, {})
            state[name] = {"step": float(s.get("step", 0.0))}
            for key in ("exp_avg", "exp_avg_sq", "square_avg", "momentum_buffer"):
                if s.get(key) is not None:
                    state[name][key] = s[key].detach()
        return state

    def step(self, params: Params, grads: Params, state: dict[str, dict]) -> tuple[Params, dict[str, dict]]:
        new_params, new_state = {}, {}
        for name, p in params.items():
            new_params[name], new_state[name] = self._update(p, grads[name], self.hyper[name], dict(state[name]))
        return new_params, new_state

    def _update(self, p: Tensor, g: Tensor, h: dict, s: dict) -> tuple[Tensor, dict]:
        lr, s["step"] = h["lr"], s["step"] + 1
        if isinstance(self.opt, torch.optim.AdamW) or h.get("decoupled_weight_decay"):
            p = p * (1 - lr * h["weight_decay"])  # decoupled weight decay (AdamW)
        elif h.get("weight_decay"):
            g = g + h["weight_decay"] * p
        if isinstance(self.opt, (torch.optim.Adam, torch.optim.AdamW)):
            b1, b2 = h["betas"]
            s["exp_avg"] = b1 * s.get("exp_avg", torch.zeros_like(p)) + (1 - b1) * g
            s["exp_avg_sq"] = b2 * s.get("exp_avg_sq", torch.zeros_like(p)) + (1 - b2) * g * g
            m_hat = s["exp_avg"] / (1 - b1 ** s["step"])
            v_hat = s["exp_avg_sq"] / (1 - b2 ** s["step"])
            # clamp: sqrt has an infinite derivative at 0 (a dead unit's zero gradient), clamp's is 0
            return p - lr * m_hat / (v_hat.clamp_min(1e-30).sqrt() + h["eps"]), s
        if isinstance(self.opt, torch.optim.RMSprop):
            s["square_avg"] = h["alpha"] * s.get("square_avg", torch.zeros_like(p)) + (1 - h["alpha"]) * g * g
            return p - lr * g / (s["square_avg"].clamp_min(1e-30).sqrt() + h["eps"]), s
        if h["momentum"]:  # SGD with heavy-ball momentum
            buf = s.get("momentum_buffer")
            g = s["momentum_buffer"] = g if buf is None else h["momentum"] * buf + (1 - h["dampening"]) * g
        return p - lr * g, s


def unrolled_d_loss(D: nn.Module, loss: Loss, params: Params, buffers: Params, real: Tensor, fake: Tensor) -> Tensor:
    """D's loss (with its penalty) for D with the given parameters, as a function of them."""
    def D_at(x: Tensor) -> Tensor:
        return functional_call(D, (params, buffers), (x,))

    D_at.samples_per_score = getattr(D, "samples_per_score", 1)  # for gradient penalties on packs

    value = loss.d_loss(D_at(real), D_at(fake))
    penalty = loss.penalty(D_at, real, fake)
    return value if penalty is None else value + penalty


def check_unrollable(loss: Loss, name: str) -> None:
    if type(loss).after_d_step is not Loss.after_d_step:
        raise ConfigError(f"{name}: {type(loss).__name__} changes D after each step (weight clipping), which "
                          "the unrolled steps do not replay; use wgan_gp or a GAN loss")


G_OBJECTIVES = ("value", "loss")


class Unrolled(Remedy):
    replica_refusal = "its G step replays D's optimizer (its state kept on the remedy), which is not stacked per replica"
    g_loss_needs_d_gradients = True  # the look-ahead D is a function of D's parameters

    def __init__(self, k: int = 5, g_objective: str = "value"):
        if k < 0:
            raise ConfigError(f"unrolling steps k must be >= 0 (k=0 is the plain G step), got {k}")
        if g_objective not in G_OBJECTIVES:
            raise ConfigError(f"remedy.unrolled.g_objective={g_objective}: choose value (Metz et al.: the game's "
                              "value at the unrolled D) or loss (the loss's own G loss on the fakes)")
        self.k = k
        self.g_objective = g_objective
        self.replay: OptimizerReplay | None = None

    def check(self, loss, batch_size):
        check_unrollable(loss, "unrolled")
        # The value is minus D's loss only for a zero-sum game: the minimax GAN (whatever G loss the
        # loss picks) and the Wasserstein critic. LSGAN's and the hinge loss's G is not D's opponent.
        if self.g_objective == "value" and not isinstance(loss, (MinimaxGAN, Wasserstein)):
            raise ConfigError(f"remedy.unrolled.g_objective=value is the zero-sum game's value (Metz et al.); "
                              f"{type(loss).__name__}'s G loss is not minus its D loss: add "
                              "remedy.unrolled.g_objective=loss, or use loss=nsgan, gan, dragan or wgan_gp")

    def prepare(self, g_opt, d_opt, steps):
        self.replay = OptimizerReplay(d_opt)

    def g_loss(self, G, D, loss, real, z):
        fake = G(z)
        params = dict(D.named_parameters())
        # Copies: a spectral-norm power iteration inside the unrolled passes must not touch D's own.
        buffers = {name: b.clone() for name, b in D.named_buffers()}
        state = self.replay.start(params)
        for _ in range(self.k):
            d_loss = unrolled_d_loss(D, loss, params, buffers, real, fake)
            # create_graph: the next parameters stay functions of this step's, and of G through fake.
            grads = torch.autograd.grad(d_loss, list(params.values()), create_graph=True)
            params, state = self.replay.step(params, dict(zip(params, grads)), state)
        def D_unrolled(x: Tensor) -> Tensor:
            return functional_call(D, (params, buffers), (x,))

        if self.g_objective == "value":  # f at the unrolled D: minus its loss, without its penalty
            return -loss.d_loss(D_unrolled(real), D_unrolled(fake))
        return loss.g_loss(D_unrolled(fake))
