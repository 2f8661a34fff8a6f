"""Every loss against values computed by hand on fixed logits, and its hooks."""

import math

import pytest
import torch
from torch import nn

from ganlab import losses

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x):
    return math.log1p(math.exp(x))


def mean(*xs):
    return sum(xs) / len(xs)


def test_minimax_gan():
    loss = losses.MinimaxGAN()
    # D: -log sigmoid(r) - log(1 - sigmoid(f)) = softplus(-r) + softplus(f)
    expected_d = mean(softplus(-2.0), softplus(1.0)) + mean(softplus(0.5), softplus(-3.0))
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    # G minimises log(1 - sigmoid(f))
    expected_g = mean(math.log(1 - 1 / (1 + math.exp(-0.5))), math.log(1 - 1 / (1 + math.exp(3.0))))
    assert loss.g_loss(FAKE).item() == pytest.approx(expected_g, rel=1e-6)


def test_nonsaturating_gan():
    loss = losses.NonSaturatingGAN()
    expected_g = mean(-math.log(1 / (1 + math.exp(-0.5))), -math.log(1 / (1 + math.exp(3.0))))
    assert loss.g_loss(FAKE).item() == pytest.approx(expected_g, rel=1e-6)
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(losses.MinimaxGAN().d_loss(REAL, FAKE).item())


def test_wasserstein_losses():
    for loss in (losses.WGAN(), losses.WGANGP()):
        assert loss.d_loss(REAL, FAKE).item() == pytest.approx(mean(0.5, -3.0) - mean(2.0, -1.0))
        assert loss.g_loss(FAKE).item() == pytest.approx(-mean(0.5, -3.0))
    assert losses.WGAN().n_critic == 5 and losses.WGANGP().penalty_weight == 10.0


def test_lsgan():
    loss = losses.LSGAN()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (mean(1.0, 4.0) + mean(0.25, 9.0)))
    assert loss.g_loss(FAKE).item() == pytest.approx(0.5 * mean(0.25, 16.0))


def test_hinge():
    loss = losses.Hinge()
    # relu(1 - r): [0, 2]; relu(1 + f): [1.5, 0]
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(mean(0.0, 2.0) + mean(1.5, 0.0))
    assert loss.g_loss(FAKE).item() == pytest.approx(-mean(0.5, -3.0))


class Linear2D(nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so the gradient penalty is (|w| - 1)^2."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return x @ self.w


@pytest.mark.parametrize("loss", [losses.WGANGP(penalty_weight=10.0), losses.DRAGAN(penalty_weight=10.0)])
def test_gradient_penalty_on_a_linear_critic(loss):
    D = Linear2D([3.0, 4.0])  # |w| = 5
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    penalty = loss.penalty(D, real, fake)
    assert penalty.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2, rel=1e-5)
    penalty.backward()  # differentiable w.r.t. D's parameters: d/dw 10 (|w| - 1)^2 = 20 (|w| - 1) w / |w|
    assert torch.allclose(D.w.grad, torch.tensor([48.0, 64.0]), rtol=1e-4)


def test_unit_gradient_critic_has_no_penalty():
    D = Linear2D([0.6, 0.8])
    assert losses.WGANGP().penalty(D, torch.randn(8, 2), torch.randn(8, 2)).item() == pytest.approx(0.0, abs=1e-10)


def test_wgan_clips_critic_weights():
    D = nn.Linear(2, 1)
    with torch.no_grad():
        D.weight.fill_(3.0)
        D.bias.fill_(-0.5)
    losses.WGAN(clip=0.01).after_d_step(D)
    assert D.weight.abs().max().item() == pytest.approx(0.01) and D.bias.item() == pytest.approx(-0.01)


def test_bad_loss_values_are_refused():
    from ganlab.errors import ConfigError

    with pytest.raises(ConfigError, match="n_critic"):
        losses.NonSaturatingGAN(n_critic=0)
    with pytest.raises(ConfigError, match="clip"):
        losses.WGAN(clip=0)


class HalfSquaredNorm(nn.Module):
    """D(x) = |x|^2 / 2: its input gradient at x is x, so the penalty reveals where it was taken."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.scale * 0.5 * x.pow(2).sum(dim=1)


def test_wgan_gp_penalises_at_random_interpolates():
    # real at (3, 0), fake at (1, 0): the interpolate eps*real + (1-eps)*fake has norm 1 + 2 eps,
    # so the penalty is E[(2 eps)^2] = 4/3 for eps ~ U[0,1] (4 at real, 0 at fake).
    torch.manual_seed(0)
    n = 20000
    real, fake = torch.tensor([[3.0, 0.0]]).repeat(n, 1), torch.tensor([[1.0, 0.0]]).repeat(n, 1)
    penalty = losses.WGANGP(penalty_weight=1.0).penalty(HalfSquaredNorm(), real, fake)
    assert penalty.item() == pytest.approx(4 / 3, rel=0.02)


def test_dragan_penalises_around_perturbed_data():
    # DRAGAN's points: x + alpha * (0.5 * std(x) * u), alpha ~ U[0,1] per sample, u ~ U[0,1] per
    # coordinate. With D = |x|^2 / 2 the penalty is E[(|x_hat| - 1)^2]; we estimate it independently.
    torch.manual_seed(0)
    n = 20000
    real = torch.tensor([[3.0, 0.0], [-3.0, 0.0]]).repeat(n // 2, 1)
    penalty = losses.DRAGAN(penalty_weight=1.0).penalty(HalfSquaredNorm(), real, real).item()
    gen = torch.Generator().manual_seed(1)
    delta = 0.5 * real.std() * torch.rand(real.shape, generator=gen)
    x_hat = real + torch.rand(n, 1, generator=gen) * delta
    expected = (x_hat.norm(dim=1) - 1).pow(2).mean().item()
    assert penalty == pytest.approx(expected, rel=0.02)
    assert abs(penalty - 4.0) > 0.1  # not taken at the data points themselves ((3 - 1)^2 = 4)


def test_dragan_objective_is_the_gan_objective():
    loss, ns = losses.DRAGAN(), losses.NonSaturatingGAN()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(ns.d_loss(REAL, FAKE).item())
    assert loss.g_loss(FAKE).item() == pytest.approx(ns.g_loss(FAKE).item())
