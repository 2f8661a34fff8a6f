"""The conditional remedies (cgan_projection, acgan): labels from the data, G(z, y), the projection
score and AC-GAN's objective written out by hand, evaluation sampling, refusals, a tiny run.
(tests/test_remedies.py and tests/test_image_training.py step them on 2-D data and images.)"""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, TINY_DCGAN, built, changed, make_cfg, snapshot

from ganlab.data.toy import grid
from ganlab.errors import ConfigError
from ganlab.gan import build
from ganlab.remedies.acgan import ACGAN
from ganlab.remedies.base import NetworkFactory
from ganlab.remedies.cgan_projection import ProjectionCGAN
from ganlab.step import d_step, g_step
from ganlab.train import run

CONDITIONAL = ("cgan_projection", "acgan")


def test_toy_classes_are_the_mode_each_point_was_drawn_from():
    data = grid()
    x, y = data.sample_with_classes(500, torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, data.centers).argmin(dim=1)
    assert torch.equal(nearest, y) and data.n_classes == 25
    # The same RNG draws as the unconditional sample: a plain run's batches are unchanged.
    assert torch.equal(data.sample(500, torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("remedy", CONDITIONAL)
def test_g_reads_its_class_and_a_plain_call_takes_the_classes_in_turn(remedy):
    exp = built(f"remedy={remedy}")
    z = torch.randn(30, exp.latent_dim)
    a, b = exp.G(z, torch.zeros(30, dtype=torch.long)), exp.G(z, torch.ones(30, dtype=torch.long))
    assert not torch.allclose(a, b)  # the class changes the sample
    k = exp.data.n_classes  # the ring's 8 modes
    assert exp.G.n_classes == k and torch.equal(exp.G(z), exp.G(z, torch.arange(30) % k))
    assert exp.G.inner.net[0].in_features == exp.latent_dim + k  # [z, one_hot(y)]


def test_projection_score_is_head_plus_the_class_embedding_dotted_with_the_features():
    exp = built("remedy=cgan_projection")
    x, y = exp.remedy.real_batch(exp.data, 16)[:16], exp.remedy.real_classes
    D = exp.D
    phi = D.inner.features(x)
    by_hand = D.inner.head(phi).flatten() + (D.embed.weight[y] * phi).sum(dim=1)
    assert torch.allclose(D(x, y), by_hand, atol=1e-6)
    # Without a class: the score at the class that suits x best.
    every = torch.stack([D(x, torch.full((16,), c)) for c in range(exp.data.n_classes)], dim=1)
    assert torch.allclose(D(x), every.amax(dim=1), atol=1e-6)


def test_projection_d_loss_pairs_each_fake_with_its_real_rows_class():
    exp = built("remedy=cgan_projection", "loss=wgan_gp", "batch_size=16")
    torch.manual_seed(3)
    real = exp.remedy.real_batch(exp.data, 16)
    y, z = exp.remedy.real_classes, torch.randn(16, exp.latent_dim)
    fake = exp.G(z, y).detach()
    value = exp.D(fake, y).mean() - exp.D(real, y).mean()
    # WGAN-GP's penalty at interpolates of same-class rows, scored at that class.
    torch.manual_seed(7)
    eps = torch.rand(16, 1)
    points = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(exp.D(points, y).sum(), points)
    expected = value + 10.0 * (grad.norm(dim=1) - 1).pow(2).mean()
    torch.manual_seed(7)
    assert torch.allclose(exp.remedy.d_loss(exp.G, exp.D, exp.loss, real, z), expected, atol=1e-5)


def test_acgan_objectives_are_the_loss_plus_the_class_cross_entropies():
    exp = built("remedy=acgan", "remedy.acgan.class_weight=0.5", "batch_size=16")
    real = exp.remedy.real_batch(exp.data, 16)
    y, z = exp.remedy.real_classes, torch.randn(16, exp.latent_dim)
    D, fake = exp.D, exp.G(z, y)
    s_real, l_real = D.scores_and_logits(real)
    s_fake, l_fake = D.scores_and_logits(fake)
    d_expected = F.softplus(-s_real).mean() + F.softplus(s_fake).mean() + 0.5 * (
        F.cross_entropy(l_real, y) + F.cross_entropy(l_fake, y))
    g_expected = F.softplus(-s_fake).mean() + 0.5 * F.cross_entropy(l_fake, y)
    assert torch.allclose(exp.remedy.d_loss(exp.G, D, exp.loss, real, z), d_expected, atol=1e-6)
    assert torch.allclose(exp.remedy.g_loss(exp.G, D, exp.loss, real, z), g_expected, atol=1e-6)
    assert torch.equal(D(real), s_real)  # as a plain D: the real/fake score


def test_acgan_g_step_makes_its_samples_more_recognisable_as_their_class():
    """With only the class term (the adversarial one outweighed), G steps lower the cross-entropy of
    D's classifier on G's samples at their classes: the gradient points where the paper's L_C says."""
    exp = built("remedy=acgan", "remedy.acgan.class_weight=100", "batch_size=64", "optim.g.lr=1e-3")
    real = exp.remedy.real_batch(exp.data, 64)
    y, z = exp.remedy.real_classes, torch.randn(64, exp.latent_dim)

    def class_ce():
        with torch.no_grad():
            return F.cross_entropy(exp.D.scores_and_logits(exp.G(z, y))[1], y).item()

    before, d_before = class_ce(), snapshot(exp.D)
    for _ in range(5):
        g_step(exp, real, z)
    assert class_ce() < before and not changed(d_before, exp.D)


@pytest.mark.parametrize("remedy", CONDITIONAL)
def test_a_step_needs_the_batch_its_real_batch_hook_drew(remedy):
    exp = built(f"remedy={remedy}", "batch_size=16")
    exp.remedy.real_batch(exp.data, 16)
    with pytest.raises(RuntimeError, match="real_batch"):
        d_step(exp, exp.data.sample(8), torch.randn(8, exp.latent_dim))


@pytest.mark.parametrize("remedy", CONDITIONAL)
def test_evaluation_samples_are_reproducible_and_leave_the_global_rng_alone(remedy):
    exp = built(f"remedy={remedy}")
    z = torch.randn(200, exp.latent_dim)
    state = torch.random.get_rng_state()
    a = exp.remedy.sample(exp.G, exp.D, z, torch.Generator().manual_seed(5))
    b = exp.remedy.sample(exp.G, exp.D, z, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(torch.random.get_rng_state(), state)


def test_unlabelled_data_is_refused_in_one_line():
    exp = built("remedy=none")
    make = NetworkFactory(lambda **kw: exp.G, lambda **kw: exp.D, lambda **kw: None, 2, (2,), n_classes=None)
    for remedy in (ProjectionCGAN(), ACGAN()):
        with pytest.raises(ConfigError, match=rf"remedy {remedy.key} needs labelled data") as info:
            remedy.build(exp.G, exp.D, make)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("remedy", CONDITIONAL)
@pytest.mark.parametrize("partner, message", [("pacgan", "packed D"), ("unrolled", "both replace the D step|both replace the G step"),
                                              ("madgan", "both replace")])
def test_combinations_without_a_meaning_are_refused(remedy, partner, message):
    with pytest.raises(ConfigError, match=message):
        build(make_cfg(f"remedy=[{remedy},{partner}]", "batch_size=16"), torch.device("cpu"))


@pytest.mark.parametrize("remedy", CONDITIONAL)
def test_combines_with_spectral_norm_and_instance_noise(remedy):
    exp = built(f"remedy=[{remedy},spectral_norm,instance_noise]", "batch_size=16")
    real = exp.remedy.real_batch(exp.data, 16)
    g_before, d_before = snapshot(exp.G), snapshot(exp.D)
    assert torch.isfinite(d_step(exp, real, torch.randn(16, exp.latent_dim)))
    assert changed(d_before, exp.D) and not changed(g_before, exp.G)


@pytest.mark.parametrize("remedy", CONDITIONAL)
def test_a_tiny_run_logs_class_fidelity(remedy, tmp_path):
    summary = run(make_cfg(*TINY, f"remedy={remedy}", "eval.every=20"), tmp_path)
    assert summary["status"] == "completed"
    assert 0.0 <= summary["metrics"]["class_fidelity_pct"] <= 100.0
    if remedy == "acgan":
        assert 0.0 <= summary["metrics"]["aux_accuracy_real_pct"] <= 100.0


# --- image labels: a stacked triple's mode id, or its first digit ------------------------------------------




@pytest.mark.parametrize("classes, n_classes", [("mode", 1000), ("first", 10)])
def test_stacked_classes_are_the_triple_or_its_first_digit(image_root, classes, n_classes):
    exp = built("dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.n=100",
                f"dataset.classes={classes}", "remedy=acgan", *TINY_DCGAN)
    assert exp.data.n_classes == n_classes and exp.D.classifier.out_features == n_classes
    x, y = exp.data.sample_with_classes(64, torch.Generator().manual_seed(0))
    _, labels = exp.data.sample_with_labels(64, torch.Generator().manual_seed(0))  # the same draws: (64, 3) digits
    expected = labels[:, 0] if classes == "first" else labels[:, 0] * 100 + labels[:, 1] * 10 + labels[:, 2]
    assert torch.equal(y, expected) and x.shape == (64, 3, 28, 28)
    real = exp.remedy.real_batch(exp.data, 8)
    assert torch.isfinite(d_step(exp, real, torch.randn(8, exp.latent_dim)))


def test_first_digit_classes_need_a_stacked_dataset(image_root):
    with pytest.raises(ConfigError, match="not stacked"):
        from ganlab.data.images import ImageDataset

        ImageDataset("fashion_mnist", root=str(image_root), classes="first")
    with pytest.raises(ConfigError, match="classes"):
        build(make_cfg("dataset=stacked_fashion_mnist", f"dataset.root={image_root}", "dataset.classes=digits"),
              torch.device("cpu"))
