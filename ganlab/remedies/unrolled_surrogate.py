"""The cheap "unrolled" that many public implementations ship: copy D, take k ordinary steps on the
copy, and take G's loss against the copy, without differentiating through the steps.

This is NOT Metz et al.'s unrolled GAN (`remedy=unrolled`): G sees a D that is k steps ahead, but
not how its own move would change those steps. It exists, under this name only, to compare the two.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from ganlab.remedies.unrolled import Unrolled, unrolled_d_loss


class UnrolledSurrogate(Unrolled):
    g_loss_needs_d_gradients = False  # its steps run on detached copies of D's parameters

    def g_loss(self, G, D, loss, real, z):
        fake = G(z)
        params = {name: p.detach().requires_grad_(True) for name, p in D.named_parameters()}
        buffers = {name: b.clone() for name, b in D.named_buffers()}
        state = self.replay.start(dict(D.named_parameters()))
        for _ in range(self.k):
            d_loss = unrolled_d_loss(D, loss, params, buffers, real, fake.detach())
            grads = torch.autograd.grad(d_loss, list(params.values()))
            params, state = self.replay.step(params, dict(zip(params, grads)), state)
            params = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        return loss.g_loss(functional_call(D, (params, buffers), (fake,)))

