"""The remedies with an encoder: VEEGAN (a reconstructor F: x -> z and a D on (z, x) pairs) and MRGAN
(an encoder E: x -> z; with manifold_diffusion, a second D). Shapes, one D and one G step as the
loop takes them, the property that defines each, checkpoints, refused combinations."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, built, changed, make_cfg, snapshot

from ganlab.errors import ConfigError
from ganlab.gan import build, load_checkpoint, seed_everything
from ganlab.remedies.base import NetworkFactory
from ganlab.remedies.mrgan import MRGAN, ManifoldDiffusionGAN
from ganlab.remedies.veegan import VEEGAN, PairDiscriminator
from ganlab.train import run

VARIANTS = {"veegan": ["remedy=veegan"], "mrgan": ["remedy=mrgan"],
            "mdgan": ["remedy=mrgan", "remedy.mrgan.manifold_diffusion=true"]}
EXTRAS = {"veegan": {"reconstructor": "g"}, "mrgan": {"encoder": "g"},
          "mdgan": {"encoder": "g", "manifold_d": "d"}}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as runs use (cpu_threads=1): these networks are tiny, and extra threads
    only contend with whatever else the machine runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def step(exp, side, real, z):
    """One phase as the loop takes it: zero every optimizer of the side, the remedy's loss, step them all."""
    opts = exp.optimizers(side)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    hook = exp.remedy.d_loss if side == "d" else exp.remedy.g_loss
    value = hook(exp.G, exp.D, exp.loss, real, z)
    value.backward()
    for opt in opts:
        opt.step()
    return value


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_extra_networks(variant):
    exp = built(*VARIANTS[variant], "batch_size=16")
    z, real = torch.randn(16, exp.latent_dim), exp.data.sample(16)
    assert exp.G(z).shape == (16, 2) and exp.D(real).shape == (16,)
    assert exp.remedy.d_map(exp.D, real[:1]).shape == (1,)  # the heatmap scores single points
    assert exp.extra_sides == EXTRAS[variant]
    d_params = {id(p) for p in exp.D.parameters()}
    for name, module in exp.extras.items():
        out = module(real)
        assert out.shape == ((16, exp.latent_dim) if exp.extra_sides[name] == "g" else (16,))
        assert d_params.isdisjoint(id(p) for p in module.parameters())  # each network has one optimizer
    if variant == "veegan":
        assert isinstance(exp.D, PairDiscriminator)
        assert exp.D.score(z, real).shape == (16,)
        first = next(m for m in exp.D.joint.modules() if isinstance(m, torch.nn.Linear))
        assert first.in_features == exp.latent_dim + 2
        # A single point is scored as the reconstructor's pair (F(x), x).
        assert torch.equal(exp.D(real), exp.D.score(exp.extras["reconstructor"](real), real))
        assert "reconstructor" not in str(list(exp.D.state_dict()))
    if variant == "mdgan":
        assert isinstance(exp.remedy, ManifoldDiffusionGAN)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_d_step_and_one_g_step_change_only_their_side(variant):
    exp = built(*VARIANTS[variant], "batch_size=16")
    nets = exp.networks()
    side = {"G": "g", "D": "d", **exp.extra_sides}
    real = exp.data.sample(16)

    before = {name: snapshot(m) for name, m in nets.items()}
    assert torch.isfinite(step(exp, "d", real, torch.randn(16, exp.latent_dim)))
    for name, module in nets.items():
        assert changed(before[name], module) == (side[name] == "d"), name

    before = {name: snapshot(m) for name, m in nets.items()}
    assert torch.isfinite(step(exp, "g", real, torch.randn(16, exp.latent_dim)))
    for name, module in nets.items():
        assert changed(before[name], module) == (side[name] == "g"), name


# --- VEEGAN -------------------------------------------------------------------------------------------

def test_veegan_d_labels_reconstructor_pairs_real_and_g_minimises_minus_the_pair_logit():
    exp = built("remedy=veegan", "batch_size=16")
    G, D, Fr = exp.G, exp.D, exp.extras["reconstructor"]
    real, z = exp.data.sample(16), torch.randn(16, 2)
    data_pairs, gen_pairs = D.score(Fr(real), real), D.score(z, G(z))
    expected = (F.binary_cross_entropy_with_logits(data_pairs, torch.ones(16))
                + F.binary_cross_entropy_with_logits(gen_pairs, torch.zeros(16)))
    assert torch.allclose(exp.remedy.d_loss(G, D, exp.loss, real, z), expected)
    recon = (z - Fr(G(z))).pow(2).sum(1).mean()
    assert torch.allclose(exp.remedy.g_loss(G, D, exp.loss, real, z), -gen_pairs.mean() + recon)


def test_veegan_reconstructor_gradient_is_the_reconstruction_terms_alone():
    exp = built("remedy=veegan", "remedy.veegan.recon_weight=0.5", "batch_size=32")
    G, D, Fr = exp.G, exp.D, exp.extras["reconstructor"]
    real, z = exp.data.sample(32), torch.randn(32, 2)

    def grads(objective):
        for m in (G, Fr):
            m.zero_grad(set_to_none=True)
        objective().backward()
        return ([p.grad.clone() for p in Fr.parameters()],
                [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in G.parameters()])

    f_full, g_full = grads(lambda: exp.remedy.g_loss(G, D, exp.loss, real, z))
    f_recon, g_recon = grads(lambda: 0.5 * (z - Fr(G(z))).pow(2).sum(1).mean())
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(f_full, f_recon))
    assert any(not torch.allclose(a, b) for a, b in zip(g_full, g_recon))  # G also gets the pair term


def test_veegan_latent_reconstruction_error_goes_down_on_a_fixed_batch():
    exp = built("remedy=veegan", "batch_size=64")
    real, z = exp.data.sample(64), torch.randn(64, 2)
    error = lambda: exp.remedy.reconstruction(exp.G, z).mean().item()
    start = error()
    for _ in range(60):
        step(exp, "g", real, z)
    assert error() < 0.1 * start, (start, error())
    metrics = exp.remedy.eval_metrics(exp.G, exp.D, exp.data, z, exp.G(z), real)
    assert metrics["veegan_latent_recon"] == pytest.approx(error())


def test_veegan_composes_with_label_smoothing_spectral_norm_and_instance_noise():
    exp = built("remedy=[veegan,label_smoothing,spectral_norm,instance_noise]", "batch_size=16")
    assert exp.loss.real_target == 0.9
    assert all(hasattr(m, "parametrizations") for m in exp.D.modules() if isinstance(m, torch.nn.Linear))
    assert not any(hasattr(m, "parametrizations") for m in exp.extras["veegan.reconstructor"].modules())
    real = exp.data.sample(16)
    assert torch.isfinite(step(exp, "d", real, torch.randn(16, 2)))
    assert torch.isfinite(step(exp, "g", real, torch.randn(16, 2)))


# --- MRGAN ---------------------------------------------------------------------------------------------

def test_mrgan_objective_and_the_sign_of_its_mode_term():
    exp = built("remedy=mrgan", "remedy.mrgan.lambda1=0.3", "remedy.mrgan.lambda2=0.7", "batch_size=16")
    G, D, E = exp.G, exp.D, exp.extras["encoder"]
    real, z = exp.data.sample(16), torch.randn(16, 2)
    rec = G(E(real))
    # -log D(G(E(x))): the mode term pushes G(E(x)) toward "real".
    expected = (F.softplus(-D(G(z))).mean() + 0.3 * (real - rec).pow(2).sum(1).mean()
                + 0.7 * F.binary_cross_entropy_with_logits(D(rec), torch.ones(16)))
    assert torch.allclose(exp.remedy.g_loss(G, D, exp.loss, real, z), expected)
    # Non-logistic losses: the loss's own G loss on D(G(E(x))).
    wgan = built("remedy=mrgan", "loss=wgan_gp", "batch_size=16")
    rec = wgan.G(wgan.extras["encoder"](real))
    expected = (-wgan.D(wgan.G(z)).mean() + 0.2 * (real - rec).pow(2).sum(1).mean() - 0.4 * wgan.D(rec).mean())
    assert torch.allclose(wgan.remedy.g_loss(wgan.G, wgan.D, wgan.loss, real, z), expected)
    assert not exp.remedy.overrides("d_loss")  # D's step is the plain one


def test_mdgan_sums_the_manifold_and_the_diffusion_discriminators_losses():
    exp = built(*VARIANTS["mdgan"], "batch_size=16")
    G, D, E, Dm = exp.G, exp.D, exp.extras["encoder"], exp.extras["manifold_d"]
    real, z = exp.data.sample(16), torch.randn(16, 2)
    rec, fake = G(E(real)), G(z)
    ones, zeros = torch.ones(16), torch.zeros(16)
    bce = F.binary_cross_entropy_with_logits
    expected_d = bce(Dm(real), ones) + bce(Dm(rec), zeros) + bce(D(rec), ones) + bce(D(fake), zeros)
    assert torch.allclose(exp.remedy.d_loss(G, D, exp.loss, real, z), expected_d)
    expected_g = 0.2 * (real - rec).pow(2).sum(1).mean() + bce(Dm(rec), ones) + bce(D(fake), ones)
    assert torch.allclose(exp.remedy.g_loss(G, D, exp.loss, real, z), expected_g)


@pytest.mark.parametrize("variant", ["mrgan", "mdgan"])
def test_mrgan_reconstruction_goes_down_on_a_fixed_batch(variant):
    exp = built(*VARIANTS[variant], "batch_size=64")
    real = exp.data.sample(64)
    error = lambda: (real - exp.G(exp.extras["encoder"](real))).pow(2).sum(1).mean().item()
    start = error()
    for _ in range(60):  # the full G-side objective, G and E stepped together
        step(exp, "g", real, torch.randn(64, 2))
    assert error() < 0.1 * start, (start, error())


def test_mrgan_eval_metric_is_the_reconstruction_of_the_evaluation_real_batch():
    exp = built("remedy=mrgan")
    real, z = exp.data.sample(500), torch.randn(500, 2)
    with torch.no_grad():
        value = exp.remedy.eval_metrics(exp.G, exp.D, exp.data, z, exp.G(z), real)["mrgan_recon"]
        expected = (real - exp.G(exp.remedy.E(real))).pow(2).sum(dim=1).mean()
    assert value == pytest.approx(float(expected)) and value > 0


# --- runs and checkpoints ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["veegan", "mdgan"])
def test_tiny_run_checkpoints_the_extra_networks(variant, tmp_path):
    cfg = make_cfg(*TINY, *VARIANTS[variant], "eval.every=20")
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed"
    metric = "veegan_latent_recon" if variant == "veegan" else "mrgan_recon"
    assert summary["metrics"][metric] >= 0
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(state["extras"]) == set(EXTRAS[variant]) == set(state["extra_opts"])

    seed_everything(1)  # a fresh experiment, with other initial weights
    fresh = build(cfg, torch.device("cpu"))
    assert load_checkpoint(tmp_path / "checkpoint.pt", fresh) == 20
    for name, module in fresh.extras.items():
        saved = state["extras"][name]
        assert all(torch.equal(saved[k], v) for k, v in module.state_dict().items()), name
    if variant == "veegan":  # the loaded D scores points through the loaded reconstructor
        assert fresh.D.reconstructor is fresh.extras["reconstructor"]


# --- refused -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["remedy=veegan", "loss=wgan_gp"], "veegan follows the paper's logistic objective .*WGANGP .*loss=nsgan"),
    (["remedy=veegan", "loss=wgan"], "veegan follows the paper's logistic objective"),
    (["remedy=veegan", "loss=hinge"], "veegan follows the paper's logistic objective"),
    (["remedy=veegan", "loss=lsgan"], "veegan follows the paper's logistic objective"),
    (["remedy=veegan", "loss=dragan"], "veegan follows the paper's logistic objective"),
    (["remedy=veegan", "remedy.veegan.recon_weight=-1"], "remedy.veegan.recon_weight must be"),
    (["remedy=[veegan,pacgan]"], "pacgan needs the discriminator's `in_shape`"),
    (["remedy=[veegan,unrolled]"], "veegan and unrolled both replace the G step"),
    (["remedy=mrgan", "remedy.mrgan.manifold_diffusion=true", "loss=wgan"], "weight clipping"),
    (["remedy=mrgan", "remedy.mrgan.lambda1=-0.1"], "remedy.mrgan.lambda1 must be"),
    (["remedy=[mrgan,feature_matching]"], "mrgan and feature_matching both replace the G step"),
])
def test_refused_combinations(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(make_cfg(*overrides), torch.device("cpu"))


def test_veegan_refuses_image_data():
    from ganlab.models.mlp import Discriminator, Encoder, Generator

    make = NetworkFactory(Generator, Discriminator, Encoder, latent_dim=8, data_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="images"):
        VEEGAN().build(make.G(), make.D(), make)


def test_mrgan_picks_its_class_by_the_option():
    assert type(MRGAN()) is MRGAN and type(MRGAN(manifold_diffusion=True)) is ManifoldDiffusionGAN
    assert MRGAN(0.1, 0.2, True).lambda1 == 0.1 and MRGAN(manifold_diffusion=True).manifold_diffusion
