"""The Loss-Sensitive GAN (Qi 2017; `loss=loss_sensitive`, not Mao's `lsgan`): its objective on a case
computed by hand, one D and one G step through the loop's own phases, a tiny run, and what it refuses."""

import pytest
import torch
from conftest import TINY, built, changed, make_cfg, snapshot
from torch import nn

from ganlab.errors import ConfigError
from ganlab.gan import build
from ganlab.losses import LSGAN, LossSensitive, check_penalty_fits, has_penalty
from ganlab.step import d_step, g_step
from ganlab.train import run


class FirstCoordinate(nn.Module):
    """D(x) = w . x with w = (1, 0): the score is x's first coordinate."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x):
        return x @ self.w


# Four pairs (real[i], fake[i]); with D = x[0] and L = relu(D):
#   L(real) = 1, 0, 2, 0        L(fake) = 0, 3, 1, 0
#   ||x - G(z)||_1 = 1, 3, 3, 1   -> margin (scale 0.5) 0.5, 1.5, 1.5, 0.5
#   hinge = (0.5 + 1 - 0)+, (1.5 + 0 - 3)+, (1.5 + 2 - 1)+, (0.5 + 0 - 0)+ = 1.5, 0, 2.5, 0.5
REAL = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 1.0], [-1.0, 0.0]])
FAKE = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, -1.0], [-2.0, 0.0]])


def test_objective_on_a_hand_computed_case():
    loss = LossSensitive(real_weight=0.5, margin_scale=0.5, nonnegative=True)
    D = FirstCoordinate()
    assert loss.margin(D, REAL, FAKE).tolist() == [0.5, 1.5, 1.5, 0.5]
    hinge = loss.penalty(D, REAL, FAKE)
    assert hinge.item() == pytest.approx((1.5 + 0 + 2.5 + 0.5) / 4)  # pair 1 inactive, pairs 0, 2, 3 active
    assert loss.d_loss(D(REAL), D(FAKE)).item() == pytest.approx(0.5 * (1 + 0 + 2 + 0) / 4)
    assert loss.g_loss(D(FAKE)).item() == pytest.approx((0 + 3 + 1 + 0) / 4)
    # dhinge/dw: pairs 0 and 2 give x - G(z) where both L are positive ((1, 0) - 0 and (2, 1) - (1, -1));
    # pair 3 is active but relu is flat at both of its (negative) scores; pair 1 is inactive.
    hinge.backward()
    assert D.w.grad.tolist() == pytest.approx([(1 + 1) / 4, (0 + 2) / 4])
    # Without the ReLU, L = D: hinge 1.5, 0, 2.5, 0.5 - 1 + 2 = 1.5.
    signed = LossSensitive(margin_scale=0.5, nonnegative=False)
    assert signed.penalty(D, REAL, FAKE).item() == pytest.approx((1.5 + 0 + 2.5 + 1.5) / 4)
    # The L2 margin: ||(1, 2)||_2 = sqrt(5) for pair 2.
    l2 = LossSensitive(margin_scale=0.5, margin_norm=2, nonnegative=True)
    assert l2.margin(D, REAL, FAKE).tolist() == pytest.approx([0.5, 1.5, 0.5 * 5 ** 0.5, 0.5])


def test_margin_is_a_constant_for_d_and_taken_over_each_pack():
    loss = LossSensitive(margin_scale=0.5)
    fake = FAKE.clone().requires_grad_(True)
    assert not loss.margin(FirstCoordinate(), REAL, fake).requires_grad

    class Packed(FirstCoordinate):
        samples_per_score = 2

        def forward(self, x):
            return super().forward(x).reshape(-1, 2).sum(1)

    # Packs (pairs 0, 1) and (2, 3): L1 over the whole pack, 1 + 3 and 3 + 1.
    assert loss.margin(Packed(), REAL, FAKE).tolist() == [2.0, 2.0]
    with pytest.raises(ConfigError, match="pairs real and fake samples by index"):
        loss.penalty(FirstCoordinate(), REAL, FAKE[:3])


def test_defaults_are_the_authors_code():
    cfg = make_cfg("loss=loss_sensitive")
    assert cfg.loss._target_ == "ganlab.losses.LossSensitive"
    assert (cfg.loss.n_critic, cfg.loss.real_weight, cfg.loss.margin_scale, cfg.loss.margin_norm,
            cfg.loss.nonnegative) == (1, 0.0, 2e-4, 1, False)
    for net in ("g", "d"):
        opt = cfg.optim[net]
        assert opt._target_ == "torch.optim.Adam" and opt.lr == 1e-4 and list(opt.betas) == [0.5, 0.999]
        assert opt.weight_decay == 5e-5  # ours: the code's comment; its default decay_rate is 0
    assert not LossSensitive.wasserstein_critic and LSGAN is not LossSensitive


# One D step and one G step on the ring and the grid: tests/test_steps.py, which runs every loss.


def test_d_step_lowers_real_losses_and_raises_fake_ones():
    """Repeated D steps on one fixed pair of batches make L(x) + margin <= L(G(z)) hold for more pairs."""
    exp = built("loss=loss_sensitive", "optim.d.lr=1e-2")
    real, z = exp.data.sample(64), torch.randn(64, exp.latent_dim)
    fake = exp.G(z).detach()
    before = exp.loss.penalty(exp.D, real, fake).item()
    for _ in range(50):
        d_step(exp, real, z)
    assert exp.loss.penalty(exp.D, real, fake).item() < 0.5 * before


def test_hinge_is_zero_when_every_pair_meets_its_margin():
    exp = built("loss=loss_sensitive", "optim.d.weight_decay=0.0")
    real, z = exp.data.sample(16), torch.randn(16, exp.latent_dim)
    # L(x) = D(x) - 100 on the real batch only: every pair meets its margin, the hinge is 0.
    shifted = lambda x, D=exp.D: D(x) - 100.0 * (x is real)
    assert exp.loss.penalty(shifted, real, exp.G(z).detach()).item() == 0.0
    assert LossSensitive().d_loss(torch.zeros(3), torch.zeros(3)).item() == 0.0  # real_weight 0: no first term


def test_batch_norm_d_is_accepted_its_hinge_is_no_gradient_penalty():
    loss = built("loss=loss_sensitive").loss
    assert not has_penalty(loss)
    D = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    check_penalty_fits(loss, D)  # no refusal
    torch.manual_seed(0)  # and its objective trains the batch-norm D: the hinge is active for some pairs
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    total = loss.d_loss(D(real), D(fake)) + loss.penalty(D, real, fake)
    total.backward()
    assert torch.isfinite(total) and total > 0 and D[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("remedy", [["remedy=pacgan", "batch_size=16"],
                                    ["remedy=unrolled", "remedy.unrolled.g_objective=loss", "batch_size=16"],
                                    ["remedy=minibatch_disc", "batch_size=16"],
                                    ["remedy=spectral_norm", "batch_size=16"]])
def test_combines_with_remedies_that_keep_the_objective(remedy):
    exp = built("loss=loss_sensitive", *remedy)
    g_before, d_before = snapshot(exp.G), snapshot(exp.D)
    real, z = exp.data.sample(16), torch.randn(16, exp.latent_dim)
    assert torch.isfinite(d_step(exp, real, z)) and changed(d_before, exp.D)
    assert torch.isfinite(g_step(exp, real, torch.randn(16, exp.latent_dim))) and changed(g_before, exp.G)


@pytest.mark.parametrize("overrides, message", [
    (["remedy=unrolled"], "g_objective=value is the zero-sum game's value .*LossSensitive's G loss is not minus"),
    (["remedy=label_smoothing"], "label_smoothing needs a loss with a target for real samples .*LossSensitive has none"),
    (["remedy=madgan"], "madgan replaces the objective .*LossSensitive is not"),
    (["remedy=veegan"], "veegan follows the paper's logistic objective"),
    (["remedy=ebgan"], "ebgan brings its own margin objective, which would silently replace LossSensitive"),
    (["loss.margin_norm=3"], "margin_norm must be 1"),
    (["loss.margin_scale=-1"], "real_weight and margin_scale must be >= 0"),
    (["loss.real_weight=0.1"], "real_weight=0.1 needs nonnegative=true"),
])
def test_refused_combinations(overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build(make_cfg("loss=loss_sensitive", "batch_size=16", *overrides), torch.device("cpu"))
    assert "\n" not in str(caught.value)


def test_the_codes_relu_form_trains_where_d_starts_positive():
    """nonnegative=true with real_weight > 0, the code's conditional form: both terms get gradients."""
    exp = built("loss=loss_sensitive", "loss.nonnegative=true", "loss.real_weight=1.0")
    with torch.no_grad():
        exp.D.head.bias.fill_(5.0)  # every score positive: the ReLU passes gradients
    g_before, d_before = snapshot(exp.G), snapshot(exp.D)
    real, z = exp.data.sample(16), torch.randn(16, exp.latent_dim)
    assert torch.isfinite(d_step(exp, real, z)) and changed(d_before, exp.D)
    assert torch.isfinite(g_step(exp, real, torch.randn(16, exp.latent_dim))) and changed(g_before, exp.G)


def test_tiny_run_completes(tmp_path):
    summary = run(make_cfg(*TINY, "loss=loss_sensitive"), tmp_path)
    assert summary["status"] == "completed"
