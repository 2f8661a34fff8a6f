"""The update of one training step, behind one interface for the loop (ganlab/train.py).

A step is, for every run an update trains, a D phase (n_critic D updates, each on a fresh real batch
and fresh codes) and then a G phase (one G update on the last real batch and fresh codes). That
order is written once, in `take_step`; what an update is differs:
- `PlainUpdate`: one run, its networks updated in place by `d_step` and `g_step`, batches and codes
  from the global RNG;
- `replicas.Replicas`: N seeds at once, every parameter stacked along a leading axis and each phase
  one vectorised update of all of them (ganlab/replicas.py).
`d_step` and `g_step` are the only code that updates a plain run's networks; the tests and the
benchmarks call them too (`one_step`: a whole step without the loop's bookkeeping).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from ganlab.ema import GeneratorAverage
from ganlab.gan import GAN
from ganlab.speed import Speed


# --- the two phases of a plain run's step ---------------------------------------------------------------

def d_step(exp: GAN, real: Tensor, z: Tensor, speed: Speed | None = None) -> Tensor:
    """One D update (D and the remedy's d-side networks) on a real batch and G's codes; the loss,
    detached (no host sync). Everything it touches comes in as arguments, so a loop over several
    seeds at once can call it on stacked parameters."""
    for opt in exp.d_opts:
        opt.zero_grad(set_to_none=True)
    with speed.autocast() if speed is not None else contextlib.nullcontext():
        d_loss = exp.remedy.d_loss(exp.G, exp.D, exp.loss, real, z)
    d_loss.backward()
    for opt in exp.d_opts:
        opt.step()
    exp.loss.after_d_step(exp.D)
    return d_loss.detach().float()  # a no-op for float32; bf16 under amp


def g_step(exp: GAN, real: Tensor, z: Tensor, speed: Speed | None = None) -> Tensor:
    """One G update (G and the remedy's g-side networks); `real` is the last D batch (remedies such
    as unrolled and feature matching use it). The loss, detached."""
    for opt in exp.g_opts:
        opt.zero_grad(set_to_none=True)
    try:
        for p in exp.fixed_in_g_step:  # D's side: its gradients here would be thrown away by the next D step
            p.requires_grad_(False)
        with speed.autocast() if speed is not None else contextlib.nullcontext():
            g_loss = exp.remedy.g_loss(exp.G, exp.D, exp.loss, real, z)
        g_loss.backward()
    finally:
        for p in exp.fixed_in_g_step:
            p.requires_grad_(True)
    for opt in exp.g_opts:
        opt.step()
    return g_loss.detach().float()


def grad_norm(module: nn.Module) -> Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


# --- the interface ----------------------------------------------------------------------------------------

class Update(Protocol):
    """What the loop needs of an update: its phases, and each run's own state when a tick reads it."""

    n_critic: int

    def real_batch(self) -> Tensor: ...              # a fresh real batch (stacked over replicas)
    def codes(self) -> Tensor: ...                   # fresh latent codes (stacked over replicas)
    def d(self, real: Tensor, z: Tensor) -> Tensor: ...  # one D update; its detached loss (per replica)
    def g(self, real: Tensor, z: Tensor) -> Tensor: ...  # one G update; its detached loss (per replica)
    def grad_norms(self, network: str) -> Tensor: ...    # "D" or "G": the gradient's norm (per replica)
    def sync(self, k: int, optimizers: bool = False) -> None: ...  # run k's GAN holds its current state
    def rng_state(self, k: int) -> dict: ...         # run k's RNG states, for its checkpoint
    def optimizers(self) -> list[torch.optim.Optimizer]: ...  # every optimizer the phases step (the lr schedule's)

    ema: GeneratorAverage | None                     # the moving average of the G it trains (ema.decay), or None


@dataclass
class StepResult:
    """One step's losses (detached, no host sync) and, on a log tick, the gradient norms. A plain
    update gives 0-d tensors; a replicas update tensors with one entry per replica."""

    d_losses: list[Tensor]  # one per D update (n_critic)
    g_loss: Tensor
    d_grad: Tensor | None   # D's, after its last update (before the G update adds to its grads)
    g_grad: Tensor | None


def take_step(update: Update, log_now: bool) -> StepResult:
    """One training step of every run `update` trains, in the order of all of them: n_critic D updates,
    each on a fresh real batch and fresh codes, then the G update on the last real batch and fresh codes,
    then (ema.decay) the moving average of G, from the G just updated."""
    d_losses = []
    for _ in range(update.n_critic):
        real = update.real_batch()
        d_losses.append(update.d(real, update.codes()))
    d_grad = update.grad_norms("D") if log_now else None
    g_loss = update.g(real, update.codes())
    if update.ema is not None:
        update.ema.update()
    return StepResult(d_losses, g_loss, d_grad, update.grad_norms("G") if log_now else None)


class PlainUpdate:
    """One run's update: `d_step` and `g_step` on its own networks, batches and codes from the global RNG
    (which its checkpoint saves)."""

    def __init__(self, exp: GAN, batch_size: int, speed: Speed | None = None):
        self.exp, self.batch, self.speed = exp, batch_size, speed
        self.n_critic = exp.loss.n_critic
        self.ema = exp.ema
        self.device = next(exp.G.parameters()).device

    def real_batch(self) -> Tensor:
        real = self.exp.remedy.real_batch(self.exp.data, self.batch)
        return self.speed.batch(real) if self.speed is not None else real

    def codes(self) -> Tensor:
        return torch.randn(self.batch, self.exp.latent_dim, device=self.device)

    def d(self, real: Tensor, z: Tensor) -> Tensor:
        return d_step(self.exp, real, z, self.speed)

    def g(self, real: Tensor, z: Tensor) -> Tensor:
        return g_step(self.exp, real, z, self.speed)

    def grad_norms(self, network: str) -> Tensor:
        return grad_norm(self.exp.D if network == "D" else self.exp.G)

    def sync(self, k: int, optimizers: bool = False) -> None:
        """Nothing to copy: the run's GAN is what trains."""

    def rng_state(self, k: int) -> dict:
        from ganlab.checkpoint import rng_state

        return rng_state()  # the global RNGs, which the run trains from

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [*self.exp.g_opts, *self.exp.d_opts]


def one_step(exp: GAN, batch_size: int, speed: Speed | None = None) -> Tensor:
    """One whole training step of a plain run, in the loop's order, without the loop's bookkeeping: what the
    benchmarks time. G's loss, detached."""
    return take_step(PlainUpdate(exp, batch_size, speed), log_now=False).g_loss
