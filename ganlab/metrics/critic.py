"""The D gap: E[D(real)] - E[D(fake)], the one number of D that every evaluation reports."""

from __future__ import annotations

from torch import Tensor


def critic_gap(d_real: Tensor, d_fake: Tensor) -> float:
    """The mean of D on real minus on generated samples, in float32 (a bf16 D's outputs too). For a
    Lipschitz critic (wgan, wgan_gp) it estimates W1 from below; for the other losses it is only the gap."""
    return float(d_real.float().mean() - d_fake.float().mean())
