"""drs (discriminator rejection sampling) and ebgan (energy-based GAN): shapes, one D step and one G
step, and the properties that define them."""

import itertools
import json
import math

import pytest
import torch
from conftest import TINY, built, changed, make_cfg, snapshot
from torch import nn

from ganlab.errors import ConfigError
from ganlab.gan import build
from ganlab.remedies.drs import DRS
from ganlab.remedies.ebgan import EnergyAutoencoder, EnergyMarginLoss, pull_away
from ganlab.train import run


def one_d_step_and_one_g_step(exp, n=16):
    G, D = exp.G, exp.D
    g_before, d_before = snapshot(G), snapshot(D)
    exp.d_opt.zero_grad()
    d_loss = exp.remedy.d_loss(G, D, exp.loss, exp.data.sample(n), torch.randn(n, exp.latent_dim))
    d_loss.backward()
    exp.d_opt.step()
    assert torch.isfinite(d_loss) and changed(d_before, D) and not changed(g_before, G)

    d_before = snapshot(D)
    exp.g_opt.zero_grad()
    g_loss = exp.remedy.g_loss(G, D, exp.loss, exp.data.sample(n), torch.randn(n, exp.latent_dim))
    g_loss.backward()
    exp.g_opt.step()
    assert torch.isfinite(g_loss) and changed(g_before, G) and not changed(d_before, D)


# --- drs ---------------------------------------------------------------------------------------------

def drs_sample(exp, n=200, seed=7):
    """What an evaluation does: calibrate, then draw n samples, all from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    exp.G.eval(), exp.D.eval()
    with torch.no_grad():
        exp.remedy.before_eval(exp.G, exp.D, exp.data, generator)
        z = torch.randn(n, exp.latent_dim, generator=generator)
        return exp.remedy.sample(exp.G, exp.D, z, generator)


SMALL_DRS = ["remedy=drs", "remedy.drs.burn_in=1000", "remedy.drs.calibration_samples=500"]


def test_drs_returns_exactly_n_samples_and_leaves_training_unchanged():
    exp = built(*SMALL_DRS, "batch_size=16")
    for n in (1, 37, 200):
        fake = drs_sample(exp, n)
        assert fake.shape == (n, 2) and torch.isfinite(fake).all()
        assert 0 < exp.remedy.last_acceptance <= 1
    assert set(exp.remedy.eval_metrics(exp.G, exp.D, exp.data, None, fake, None)) == {"drs_acceptance"}
    assert not any(exp.remedy.overrides(h) for h in ("d_loss", "g_loss", "d_map"))
    exp.G.train(), exp.D.train()
    one_d_step_and_one_g_step(exp)


def test_drs_fills_with_the_best_rejected_candidates_when_the_budget_runs_out():
    # gamma = 30: sigmoid(F - 30) < 1e-6 for almost every candidate; 2 candidates per sample at most.
    exp = built(*SMALL_DRS, "remedy.drs.gamma_percentile=null", "remedy.drs.gamma=30",
                "remedy.drs.candidates_per_sample=2")
    fake = drs_sample(exp, 50)
    assert fake.shape == (50, 2)
    assert exp.remedy.last_acceptance < 0.1


def test_drs_keeps_fewer_samples_when_gamma_is_stricter():
    # Same G, D and generator seed: the same candidates and uniform draws, only gamma differs.
    exp = built(*SMALL_DRS)
    drs = exp.remedy

    def acceptance(gamma=0.0, percentile=None):
        drs.gamma, drs.gamma_percentile = gamma, percentile
        drs_sample(exp, 300, seed=3)
        return drs.last_acceptance

    fixed = [acceptance(gamma) for gamma in (-2, 0, 2, 4)]
    assert all(a > b for a, b in itertools.pairwise(fixed)), fixed
    percentile = [acceptance(percentile=q) for q in (20, 50, 95)]
    assert all(a > b for a, b in itertools.pairwise(percentile)), percentile


def test_drs_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    exp = built(*SMALL_DRS)
    state = torch.get_rng_state()
    first = drs_sample(exp, 100, seed=11)
    again = drs_sample(exp, 100, seed=11)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(first, again)
    assert not torch.equal(first, drs_sample(exp, 100, seed=12))


def test_drs_calibration_never_changes_d():
    exp = built(*SMALL_DRS)
    before = snapshot(exp.D)
    drs_sample(exp, 50)
    assert not changed(before, exp.D)
    assert all(p.grad is None for p in exp.D.parameters())


@pytest.mark.parametrize("overrides, message", [
    (["remedy=[pacgan,drs]"], "drs scores single samples; pacgan"),
    (["remedy=[minibatch_std,drs]"], "drs scores single samples; minibatch_std"),
    (["remedy=[minibatch_disc,drs]"], "drs scores single samples; minibatch_disc"),
    (["remedy=[ebgan,drs]", "remedy.drs.calibration=head"], "calibration=head needs a D with `features`"),
    (["remedy=drs", "remedy.drs.gamma_percentile=120"], "gamma_percentile must be in"),
])
def test_drs_refusals(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(make_cfg(*overrides), torch.device("cpu"))


def test_drs_with_platt_scaling_scores_an_energy_d():
    exp = built("remedy=[ebgan,drs]", "remedy.drs.burn_in=1000", "remedy.drs.calibration_samples=500")
    assert drs_sample(exp, 64).shape == (64, 2)
    assert exp.remedy.remedies["drs"]._calibrated[0] == "platt"


# --- ebgan -------------------------------------------------------------------------------------------

def test_ebgan_d_is_an_autoencoder_giving_one_energy_per_point():
    exp = built("remedy=ebgan", "remedy.ebgan.code_dim=5", "batch_size=16")
    assert isinstance(exp.D, EnergyAutoencoder) and isinstance(exp.loss, EnergyMarginLoss)
    x = exp.data.sample(16)
    energy, code = exp.D.energy_and_code(x)
    assert exp.D(x).shape == (16,) and code.shape == (16, 5) and (energy >= 0).all()
    assert torch.equal(energy, exp.D(x)) and torch.equal(exp.remedy.d_map(exp.D, x), energy)
    one_d_step_and_one_g_step(exp)


def test_ebgan_energy_is_the_mean_squared_or_the_norm_of_the_reconstruction_error():
    class Zero(nn.Module):  # a decoder that reconstructs every point as the origin
        def forward(self, code):
            return torch.zeros(code.shape[0], 2)

    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert torch.allclose(EnergyAutoencoder(nn.Identity(), Zero(), (2,), "mse")(x), torch.tensor([12.5, 0.5]))
    assert torch.allclose(EnergyAutoencoder(nn.Identity(), Zero(), (2,), "norm")(x), torch.tensor([5.0, 1.0]))


def test_ebgan_margin_loss_on_hand_made_energies():
    loss = EnergyMarginLoss(margin=1.0)
    d_real, d_fake = torch.tensor([0.5, 1.5]), torch.tensor([0.2, 3.0])
    # E[D(x)] = 1; E[max(0, 1 - D(G(z)))] = (0.8 + 0) / 2: a fake above the margin costs D nothing.
    assert loss.d_loss(d_real, d_fake).item() == pytest.approx(1.4)
    assert loss.g_loss(d_fake).item() == pytest.approx(1.6)
    assert EnergyMarginLoss(margin=4.0).d_loss(d_real, d_fake).item() == pytest.approx(1 + (3.8 + 1.0) / 2)


def test_pull_away_term_by_hand():
    assert pull_away(torch.eye(4)).item() == pytest.approx(0.0)                         # orthogonal codes
    assert pull_away(torch.tensor([[1.0, 2.0, -1.0]]).repeat(5, 1)).item() == pytest.approx(1.0)  # identical
    # cos([1,0], [1,1])^2 = 1/2, for both ordered pairs: 2 * 1/2 / (2 * 1); the norms do not matter.
    assert pull_away(torch.tensor([[2.0, 0.0], [-3.0, -3.0]])).item() == pytest.approx(0.5)
    # three codes: pairs (a,b) 1/2, (a,c) 0, (b,c) 1/2 -> 2 * 1 / (3 * 2)
    assert pull_away(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])).item() == pytest.approx(1 / 3)


def test_ebgan_g_loss_adds_the_weighted_pull_away_term_of_the_fake_codes():
    losses = {}
    for weight in (0.0, 0.1):
        exp = built("remedy=ebgan", f"remedy.ebgan.pull_away_weight={weight}")
        z = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
        losses[weight] = exp.remedy.g_loss(exp.G, exp.D, exp.loss, None, z).item()
        energy, code = exp.D.energy_and_code(exp.G(z))
    assert losses[0.0] == pytest.approx(energy.mean().item(), rel=1e-6)
    assert losses[0.1] - losses[0.0] == pytest.approx(0.1 * pull_away(code).item(), rel=1e-4)


def test_ebgan_combines_with_spectral_norm_and_instance_noise():
    exp = built("remedy=[ebgan,spectral_norm,instance_noise]", "batch_size=16")
    assert isinstance(exp.D.inner, EnergyAutoencoder)
    one_d_step_and_one_g_step(exp)


@pytest.mark.parametrize("overrides, message", [
    (["remedy=ebgan", "loss=wgan_gp"], ("ebgan brings its own margin objective, which would silently replace WGANGP; "
                                        "use the default loss=nsgan")),
    (["remedy=ebgan", "loss=lsgan"], "would silently replace LSGAN"),
    (["remedy=ebgan", "loss=hinge"], "would silently replace Hinge"),
    (["remedy=ebgan", "loss=dragan"], "would silently replace DRAGAN"),
    (["remedy=[label_smoothing,ebgan]"], "label_smoothing cannot apply"),
    (["remedy=[ebgan,label_smoothing]"], "label_smoothing cannot apply"),
    (["remedy=[pacgan,ebgan]"], "cannot be combined with pacgan"),
    (["remedy=[ebgan,minibatch_std]"], "needs a discriminator with `features`"),
    (["remedy=[ebgan,unrolled]"], "both replace the G step"),
    (["remedy=ebgan", "remedy.ebgan.margin=0"], "margin must be a number > 0"),
])
def test_ebgan_refusals(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build(make_cfg(*overrides), torch.device("cpu"))


def test_ebgan_accepts_the_gan_losses():
    for loss in ("gan", "nsgan"):
        assert isinstance(built("remedy=ebgan", f"loss={loss}").loss, EnergyMarginLoss)


# --- tiny runs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("remedy", ["drs", "ebgan"])
def test_a_tiny_run_completes(remedy, tmp_path):
    extra = SMALL_DRS[1:] if remedy == "drs" else []
    summary = run(make_cfg(*TINY, f"remedy={remedy}", *extra), tmp_path)
    assert summary["status"] == "completed" and summary["step"] == 20
    saved = json.loads((tmp_path / "summary.json").read_text())
    if remedy == "drs":
        assert 0 < saved["metrics"]["drs_acceptance"] <= 1
        assert isinstance(build(make_cfg("remedy=drs"), torch.device("cpu")).remedy, DRS)
    else:
        metrics = saved["metrics"]  # no NaN metric from the energy D; reverse_kl_hq is null without an HQ sample
        assert (metrics["reverse_kl_hq"] is None) == (metrics["high_quality_pct"] == 0)
        assert all(math.isfinite(v) for k, v in metrics.items() if k != "reverse_kl_hq")


def test_drs_acceptance_is_exact_rejection_sampling_at_gamma_zero():
    from ganlab.remedies.drs import acceptance_score

    logit = torch.tensor([-3.0, -1.0, 0.0, 1.5], dtype=torch.float64)
    max_logit = torch.tensor([1.5, 1.5, 1.5, 1.5], dtype=torch.float64)
    # sigmoid(F) = exp(D* - D*_M): the density-ratio acceptance of rejection sampling (eps = 1e-6 aside).
    expected = torch.exp(logit - max_logit)
    assert torch.allclose(torch.sigmoid(acceptance_score(logit, max_logit)), expected, rtol=1e-5, atol=1e-6)
    # A shift gamma > 0 lowers every acceptance probability.
    assert (torch.sigmoid(acceptance_score(logit, max_logit) - 1.0) < expected).all()


def test_drs_leaves_training_bit_identical(tmp_path):
    runs = {}
    for remedy in ("none", "drs"):
        extra = SMALL_DRS[1:] if remedy == "drs" else []
        run(make_cfg(*TINY, f"remedy={remedy}", *extra), tmp_path / remedy)
        runs[remedy] = torch.load(tmp_path / remedy / "checkpoint.pt", weights_only=True)
    for net in ("G", "D"):
        assert runs["none"][net].keys() == runs["drs"][net].keys()
        assert all(torch.equal(runs["none"][net][k], runs["drs"][net][k]) for k in runs["none"][net])
