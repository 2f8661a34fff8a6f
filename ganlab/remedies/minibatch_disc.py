"""Minibatch discrimination (Salimans et al. 2016, §3.2): D's head also sees how close each sample
is to the others of its batch, so a batch of near-identical fakes is easy to reject.

For features f(x_i) in R^A and a learned tensor T in R^{A x B x C}: M_i = f(x_i) T in R^{B x C};
c_b(i, j) = exp(-||M_{i,b} - M_{j,b}||_1); o(x_i)_b = sum_{j != i} c_b(i, j). The head becomes
a linear map of [f(x_i), o(x_i)].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ganlab.errors import ConfigError
from ganlab.remedies.base import Remedy, replace_head


class PairwiseL1(torch.autograd.Function):
    """torch.cdist(M, M, p=1), (k, n, c) -> (k, n, n), differentiable twice.

    cdist is ~5x faster than the broadcast |M_i - M_j| but its gradient cannot be differentiated
    again, which gradient penalties (wgan_gp, dragan) and unrolled G steps need. So the backward
    uses cdist's own gradient normally, and an explicit, differentiable formula under create_graph.
    Under torch.func.vmap (replicas=N) the `vmap` rule folds the replica axis into the kernel axis.
    """

    @staticmethod
    def forward(M):
        return torch.cdist(M, M, p=1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def vmap(info, in_dims, M):
        if in_dims[0] is None:
            return PairwiseL1.apply(M), None
        M = M.movedim(in_dims[0], 0)  # (replicas, k, n, c) -> (replicas * k, n, c) and back
        return PairwiseL1.apply(M.flatten(0, 1)).unflatten(0, M.shape[:2]), 0

    @staticmethod
    def backward(ctx, grad):
        (M,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient itself will be differentiated
            sign = torch.sign(M.unsqueeze(2) - M.unsqueeze(1))                  # (k, n, n, c)
            return torch.einsum("kij,kijc->kic", grad + grad.transpose(1, 2), sign)
        with torch.enable_grad():
            leaf = M.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(torch.cdist(leaf, leaf, p=1), leaf, grad)
        return g


class MinibatchDiscrimination(nn.Module):
    couples_samples = "minibatch discrimination; drop remedy=minibatch_disc"  # D's score of a sample depends on the batch
    def __init__(self, in_features: int, kernels: int, kernel_dim: int, eval_chunk: int):
        super().__init__()
        self.kernels, self.kernel_dim, self.eval_chunk = kernels, kernel_dim, eval_chunk
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def _closeness(self, f: Tensor) -> Tensor:
        M = (f @ self.T).view(-1, self.kernels, self.kernel_dim).transpose(0, 1)  # (kernels, n, dim)
        l1 = PairwiseL1.apply(M)                                     # (kernels, n, n)
        return (torch.exp(-l1).sum(dim=2) - 1).T                     # minus exp(0), the sample itself

    def forward(self, f: Tensor) -> Tensor:
        # The pairwise term is n^2: evaluation (thousands of points) goes in training-sized chunks.
        if self.training or f.shape[0] <= self.eval_chunk:
            o = self._closeness(f)
        else:
            o = torch.cat([self._closeness(chunk) for chunk in f.split(self.eval_chunk)])
        return torch.cat([f, o], dim=1)


class MinibatchDisc(Remedy):
    build_order = 30

    def __init__(self, kernels: int = 50, kernel_dim: int = 5, eval_chunk: int | None = None):
        if min(kernels, kernel_dim, eval_chunk or 1) < 1:
            raise ConfigError(f"kernels, kernel_dim and eval_chunk must be >= 1, got {kernels}, {kernel_dim}, {eval_chunk}")
        self.kernels, self.kernel_dim, self.eval_chunk = kernels, kernel_dim, eval_chunk
        self.batch_size = 1

    def check(self, loss, batch_size):
        self.batch_size = batch_size

    def build(self, G, D, make):
        # The closeness sum grows with the batch: by default evaluation uses D's training batch size
        # (in packs for a packed D), so its scores are on the scale D was trained at.
        chunk = self.eval_chunk or max(1, self.batch_size // getattr(D, "samples_per_score", 1))
        replace_head(D, lambda width: nn.Sequential(
            MinibatchDiscrimination(width, self.kernels, self.kernel_dim, chunk),
            nn.Linear(width + self.kernels, 1)), "minibatch_disc")
        return G, D
