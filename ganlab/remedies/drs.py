"""Discriminator rejection sampling (Azadi et al. 2019, "Discriminator Rejection Sampling", ICLR).

Training is unchanged. When an evaluation draws its samples, G's samples are filtered by D:

1. Calibration (`before_eval`): D is not trained to output a calibrated logit (a hinge or WGAN
   critic never is, and a GAN D drifts), so a logistic-regression head is fitted on held-out real
   samples and fresh fakes: a copy of D's last linear layer on D's features ("head", D keeps its
   own layer), or Platt scaling a * D(x) + b of D's score ("platt"). Full-batch L-BFGS under
   enable_grad (the evaluation runs under no_grad). D itself is never changed.
2. Burn-in: D*_M, the largest calibrated logit over `burn_in` fresh fakes.
3. Sampling (`sample`): candidates x = G(z) are accepted with probability sigmoid(F(x)),
       F(x) = D*(x) - D*_M - log(1 - exp(D*(x) - D*_M - eps)) - gamma,   eps = 1e-6,
   where D*_M is raised whenever a candidate's logit exceeds it (in candidate order). With gamma = 0
   this is exact rejection sampling against the calibrated density ratio: sigmoid(F) = exp(D* - D*_M).
   gamma > 0 keeps fewer, better-scored samples. By default gamma is set per candidate batch to the
   `gamma_percentile` (95) of F, as public reimplementations do (the 95th; the 80th for CelebA); with
   gamma_percentile null the fixed `gamma` applies. The fixed gamma = 0 fails where the calibrated D
   separates real from fake (the logits and D*_M grow large, almost nothing is accepted), which the
   percentile does not: on the grid after 5000 NS-GAN steps, gamma = 0 accepted 32 of 250,000
   candidates, the 95th percentile 9.5 %.

Candidates come in batches until len(z) are accepted: the evaluation's own codes first, then codes
drawn from the evaluation's generator only (the global RNG is never touched). At most
`candidates_per_sample` * n are scored; if fewer than n were accepted by then, the rest is filled
with the rejected candidates of highest acceptance probability (a warning is logged), so that an
evaluation always gets its n samples (those may crowd where D* is highest).
`drs_acceptance` = accepted / candidates scored.

DRS scores single samples, so a D whose score depends on the rest of the batch (pacgan's packs, a
minibatch_disc or minibatch_std head) is refused.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.remedies.base import Remedy, innermost

log = logging.getLogger(__name__)

EPS = 1e-6      # the paper's epsilon in F(x): keeps log(1 - exp(.)) finite at the running maximum
CHUNK = 8192    # samples per forward pass when scoring many (burn-in, candidates)

Calibration = Literal["auto", "head", "platt", "none"]


def acceptance_score(logit: Tensor, max_logit: Tensor) -> Tensor:
    """The paper's F(x) before the shift gamma: D* - D*_M - log(1 - exp(D* - D*_M - eps)). With
    gamma = 0, sigmoid(F) = exp(D* - D*_M) up to eps: the exact rejection-sampling probability."""
    delta = logit - max_logit
    return delta - torch.log1p(-torch.exp(delta - EPS))


class DRS(Remedy):
    build_order = 95  # after every change of D (packing, heads, spectral norm, noise): it scores the final D

    def __init__(self, gamma: float = 0.0, gamma_percentile: float | None = 95.0,
                 calibration: Calibration = "auto", calibration_samples: int = 2000,
                 calibration_steps: int = 50, burn_in: int = 10000, candidates_per_sample: int = 100):
        if not math.isfinite(gamma):
            raise ConfigError(f"remedy.drs.gamma must be a finite number, got {gamma}")
        if gamma_percentile is not None and not 0 <= gamma_percentile <= 100:
            raise ConfigError(f"remedy.drs.gamma_percentile must be in [0, 100] (or null for the fixed gamma), "
                              f"got {gamma_percentile}")
        if calibration_samples < 1 or calibration_steps < 0 or burn_in < 1 or candidates_per_sample < 1:
            raise ConfigError("remedy.drs: calibration_samples, burn_in and candidates_per_sample must be >= 1 and "
                              f"calibration_steps >= 0, got {calibration_samples}, {burn_in}, {candidates_per_sample}, "
                              f"{calibration_steps}")
        self.gamma, self.gamma_percentile = float(gamma), gamma_percentile
        self.calibration = calibration
        self.calibration_samples, self.calibration_steps = calibration_samples, calibration_steps
        self.burn_in, self.candidates_per_sample = burn_in, candidates_per_sample
        self._calibrated: tuple[str, Tensor, Tensor] | None = None  # (mode, weight, bias) of the logit
        self.max_logit: float | None = None   # D*_M
        self.last_acceptance: float | None = None

    # --- build: refuse a D that scores batches, not single samples ---------------------------------

    def build(self, G, D, make):
        if getattr(D, "samples_per_score", 1) > 1:
            raise ConfigError("remedy drs scores single samples; pacgan's D scores packs of samples, so they "
                              "cannot be combined")
        replaced = getattr(innermost(D), "head_replaced_by", None)
        if replaced:
            raise ConfigError(f"remedy drs scores single samples; {replaced} makes D's score depend on the rest "
                              "of the batch, so they cannot be combined")
        if self.calibration == "head" and not _has_linear_head(D):
            raise ConfigError("remedy.drs.calibration=head needs a D with `features` and a linear `head` "
                              f"(models/mlp.py); {type(innermost(D)).__name__} has not: use calibration=platt")
        return G, D

    # --- evaluation ------------------------------------------------------------------------------

    def before_eval(self, G, D, data, generator):
        device = next(G.parameters()).device
        n = self.calibration_samples
        real = data.sample(n, generator=generator)
        fake = G(_codes(G, n, device, generator))
        mode = "head" if self.calibration == "auto" and _has_linear_head(D) else self.calibration
        mode = "platt" if mode == "auto" else mode
        self._calibrated = _fit(D, mode, real, fake, self.calibration_steps)
        burn = torch.cat([self.logits(D, G(z)) for z in _code_chunks(G, self.burn_in, device, generator)])
        self.max_logit = float(burn.max())

    @torch.no_grad()
    def logits(self, D: nn.Module, x: Tensor) -> Tensor:
        """D*(x): the calibrated logit of each sample (float64)."""
        if self._calibrated is None:
            raise RuntimeError("DRS.before_eval must calibrate D before samples are scored")
        mode, w, b = self._calibrated
        out = []
        for chunk in x.split(CHUNK):
            if mode == "head":
                score = F.linear(D.features(chunk), w, b).squeeze(1)
            else:
                score = D(chunk) * w + b  # platt: a * D(x) + b; none: a = 1, b = 0
            out.append(score.double())
        return torch.cat(out)

    @torch.no_grad()
    def sample(self, G, D, z, generator):
        if self.max_logit is None:
            raise RuntimeError("DRS.before_eval must run before DRS.sample")
        n, device = len(z), z.device
        budget = self.candidates_per_sample * n
        batch = min(max(n, 1024), budget)
        accepted: list[Tensor] = []
        n_accepted = scored = 0
        spare_x = spare_p = None  # the best rejected candidates so far, for the fill
        max_logit = torch.tensor(self.max_logit, dtype=torch.float64, device=device)
        codes = z
        while n_accepted < n and scored < budget:
            x = G(codes)
            d = self.logits(D, x)
            # D*_M rises as soon as a higher logit is seen: a running maximum in candidate order.
            running = torch.maximum(torch.cummax(d, dim=0).values, max_logit)
            max_logit = running[-1]
            f = acceptance_score(d, running)
            gamma = (torch.quantile(f, self.gamma_percentile / 100) if self.gamma_percentile is not None
                     else self.gamma)
            p = torch.sigmoid(f - gamma)
            u = torch.rand(len(p), generator=generator, device=device, dtype=torch.float64)
            keep = u < p
            # Stop at the candidate that completes the n: later ones are not scored in sequence.
            count = torch.cumsum(keep, dim=0)
            need = n - n_accepted
            last = int(torch.searchsorted(count, torch.tensor(need, device=device))) if int(count[-1]) >= need \
                else len(p) - 1
            keep, x, p = keep[:last + 1], x[:last + 1], p[:last + 1]
            scored += last + 1
            accepted.append(x[keep])
            n_accepted += int(keep.sum())
            if n_accepted < n:
                spare_x = x[~keep] if spare_x is None else torch.cat([spare_x, x[~keep]])
                spare_p = p[~keep] if spare_p is None else torch.cat([spare_p, p[~keep]])
                top = spare_p.topk(min(n, len(spare_p))).indices
                spare_x, spare_p = spare_x[top], spare_p[top]
                size = min(batch, budget - scored)
                if size > 0:
                    codes = _codes(G, size, device, generator)
        self.max_logit = float(max_logit)
        self.last_acceptance = n_accepted / scored
        out = torch.cat(accepted)
        if n_accepted < n:
            log.warning("drs: %d of %d samples accepted from %d candidates (remedy.drs.candidates_per_sample=%d); "
                        "the rest are the rejected candidates of highest acceptance probability",
                        n_accepted, n, scored, self.candidates_per_sample)
            out = torch.cat([out, spare_x[:n - n_accepted]])
        return out

    def eval_metrics(self, G, D, data, z, fake, real):
        return {} if self.last_acceptance is None else {"drs_acceptance": self.last_acceptance}


def _has_linear_head(D: nn.Module) -> bool:
    core = innermost(D)
    head = getattr(core, "head", None)
    return hasattr(D, "features") and isinstance(head, nn.Linear) and head.out_features == 1


def _latent_dim(G: nn.Module) -> int:
    dim = getattr(G, "latent_dim", None)
    if dim is None:
        raise ConfigError(f"remedy drs draws further codes and needs G's `latent_dim`; {type(G).__name__} has none")
    return dim


def _codes(G: nn.Module, n: int, device, generator: torch.Generator) -> Tensor:
    return torch.randn(n, _latent_dim(G), device=device, generator=generator)


def _code_chunks(G: nn.Module, n: int, device, generator: torch.Generator):
    for start in range(0, n, CHUNK):
        yield _codes(G, min(CHUNK, n - start), device, generator)


def _fit(D: nn.Module, mode: str, real: Tensor, fake: Tensor, steps: int) -> tuple[str, Tensor, Tensor]:
    """A logistic regression of real (1) vs fake (0), balanced, started from D's own output:
    on D's features with D's last layer as the start ("head"), or on D's score ("platt")."""
    with torch.no_grad():
        if mode == "head":
            head = innermost(D).head
            inputs = torch.cat([D.features(real), D.features(fake)]).detach()
            w, b = head.weight.detach().clone(), head.bias.detach().clone()  # (1, F), (1,)
        else:
            inputs = torch.cat([D(real), D(fake)]).detach()
            w, b = torch.ones((), device=inputs.device), torch.zeros((), device=inputs.device)
    if mode == "none" or steps == 0:
        return mode, w, b
    target = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(inputs)
    weight = torch.cat([torch.full((len(real),), 0.5 / len(real)),
                        torch.full((len(fake),), 0.5 / len(fake))]).to(inputs)  # each side counts half
    w.requires_grad_(True)
    b.requires_grad_(True)

    def logit() -> Tensor:
        return F.linear(inputs, w, b).squeeze(1) if mode == "head" else inputs * w + b

    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        value = (F.binary_cross_entropy_with_logits(logit(), target, reduction="none") * weight).sum()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    return mode, w.detach(), b.detach()
